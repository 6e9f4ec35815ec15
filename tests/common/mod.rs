//! Shared harness of the integration tests: real `camera-sim` and `ptz-edge` processes on
//! 127.0.0.1 with ports chosen at run time, a tiny HTTP/1.1 client, a WebSocket client,
//! JPEG decoding with the simulator's frame code, and bounded polling.
//!
//! Every process writes its stderr to a log file in its own temporary directory; when a
//! test fails (the process handle is dropped while the thread panics) the log is printed,
//! otherwise the directory is removed. Processes get SIGTERM on drop, then SIGKILL if
//! they have not exited within a few seconds.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ptz_edge::sim::barcode::{self, FrameCode};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long a process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process may take to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Read timeout of the HTTP client: longer than the 5 s a connect may wait.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Processes

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "ptz-edge-it-{label}-{}-{}-{nanos}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A child process with its stderr log; SIGTERM (then SIGKILL) on drop.
pub struct Proc {
    name: String,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout piped and stderr to `<dir>/<name>.log`, and waits for its
    /// first stdout line, which must be a JSON object.
    fn spawn(name: &str, mut cmd: Command, dir: PathBuf) -> (Proc, Value) {
        let log = dir.join(format!("{name}.log"));
        let stderr = fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let first = lines.next();
                let _ = tx.send(first);
                // Keep draining so the child never blocks or gets EPIPE on stdout.
                for _ in lines {}
            })
            .expect("spawn stdout reader");
        let mut proc = Proc {
            name: name.to_owned(),
            child,
            dir,
            log,
            exited: None,
        };
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => {
                let status = proc.child.wait().ok();
                // Reaped: Drop must not signal the PID, which may be reused by now.
                proc.exited = status;
                panic!(
                    "{name} closed stdout without a ready line ({other:?}, exit {status:?})\n{}",
                    proc.log_text()
                )
            }
            Err(_) => panic!(
                "{name} printed no ready line within {READY_TIMEOUT:?}\n{}",
                proc.log_text()
            ),
        };
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{name}: ready line {line:?} is not JSON: {e}"));
        (proc, ready)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory effects; the pid is our own child, not yet reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exited = Some(s);
                    return Some(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(e) => panic!("{}: wait failed: {e}", self.name),
            }
        }
    }

    /// SIGTERM, then waits up to `timeout`; returns the exit status and how long it took,
    /// or `None` if the process did not exit in time (it is left running for Drop).
    pub fn terminate(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        if let Some(s) = self.exited {
            return Some((s, Duration::ZERO));
        }
        let started = Instant::now();
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout).map(|s| (s, started.elapsed()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.terminate(TERM_GRACE);
        }
        if self.exited.is_none() {
            eprintln!(
                "{} (pid {}) ignored SIGTERM for {TERM_GRACE:?}: killing it",
                self.name,
                self.child.id()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr ({}) -----\n{}\n----- end of {} stderr -----",
                self.name,
                self.log.display(),
                tail(&self.log_text(), 200),
                self.name
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

/// A running `camera-sim`.
pub struct Sim {
    pub proc: Proc,
    pub rtsp_port: u16,
    pub urls: Vec<String>,
    /// The whole ready line (e.g. the `ptz` ports with `--ptz`).
    pub ready: Value,
}

impl Sim {
    /// `camera-sim --bind 127.0.0.1 --port 0 ARGS...`; returns once it listens.
    pub fn start(args: &[&str]) -> Sim {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_camera-sim"));
        cmd.args(["--bind", "127.0.0.1", "--port", "0"]).args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let (proc, ready) = Proc::spawn("camera-sim", cmd, temp_dir("sim"));
        let rtsp_port = ready["rtsp_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or_else(|| panic!("camera-sim ready line has no rtsp_port: {ready}"));
        let urls = ready["urls"]
            .as_array()
            .unwrap_or_else(|| panic!("camera-sim ready line has no urls: {ready}"))
            .iter()
            .map(|u| u.as_str().expect("urls are strings").to_owned())
            .collect();
        Sim {
            proc,
            rtsp_port,
            urls,
            ready,
        }
    }

    /// A `WxH` simulator at `fps` serving `/1`.
    pub fn simple(size: &str, fps: u32) -> Sim {
        Sim::start(&["--path", "/1", "--size", size, "--fps", &fps.to_string()])
    }
}

/// A running `ptz-edge`.
pub struct Appliance {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub state_file: PathBuf,
}

impl Appliance {
    /// `ptz-edge` on 127.0.0.1, port 0, its own state file, plus `env` (which may
    /// override any of those, e.g. `PTZ_EDGE_STATE`).
    pub fn start(env: &[(&str, &str)]) -> Appliance {
        let dir = temp_dir("app");
        let state_file = dir.join("cameras.json");
        Appliance::start_in(dir, state_file, env)
    }

    /// Like [`Appliance::start`] but with a given state file (for restarts that read it
    /// again); the caller owns that file and its directory.
    pub fn start_with_state(state_file: &Path, env: &[(&str, &str)]) -> Appliance {
        Appliance::start_in(temp_dir("app"), state_file.to_owned(), env)
    }

    fn start_in(dir: PathBuf, state_file: PathBuf, env: &[(&str, &str)]) -> Appliance {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ptz-edge"));
        cmd.env("PORT", "0")
            .env("BIND", "127.0.0.1")
            .env("PTZ_EDGE_STATE", &state_file)
            .env("RUST_LOG", "info")
            // No multicast announcements from the many appliances tests start.
            .env("PTZ_EDGE_MDNS", "off")
            .env_remove("PTZ_EDGE_TOKEN")
            .env_remove("PTZ_EDGE_DECODE")
            .env_remove("PTZ_EDGE_DECODER");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, ready) = Proc::spawn("ptz-edge", cmd, dir);
        let addr: SocketAddr = ready["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("ptz-edge ready line has no listening address: {ready}"));
        assert_ne!(addr.port(), 0, "ptz-edge reported port 0");
        Appliance {
            proc,
            addr,
            state_file,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        http(
            self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.post(path, &body.to_string())
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(self.addr, method, path, headers, body)
    }

    /// `POST /api/cameras/connect` with `body`.
    pub fn connect(&self, body: &Value) -> Resp {
        self.post_json("/api/cameras/connect", body)
    }

    /// Connects `id` to `sim`'s `path`; panics unless the reply is 200.
    #[track_caller]
    pub fn connect_sim(&self, id: &str, sim: &Sim, path: &str) -> Duration {
        let started = Instant::now();
        let r = self.connect(&connect_body(id, sim, path));
        let took = started.elapsed();
        assert_eq!(
            r.status,
            200,
            "connect {id} to port {} path {path}: {}",
            sim.rtsp_port,
            r.text()
        );
        took
    }

    pub fn disconnect(&self, id: &str) -> Resp {
        self.post_json("/api/cameras/disconnect", &json!({ "cameraId": id }))
    }

    /// `GET /api/cameras/{id}/status` as JSON; panics unless 200.
    #[track_caller]
    pub fn status(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/cameras/{id}/status"));
        assert_eq!(r.status, 200, "status of {id}: {}", r.text());
        r.json()
    }

    /// `GET /api/cameras/{id}/frame{query}`; panics unless a 200 JPEG.
    #[track_caller]
    pub fn frame(&self, id: &str, query: &str) -> Resp {
        let r = self.get(&format!("/api/cameras/{id}/frame{query}"));
        assert_eq!(r.status, 200, "frame of {id}{query}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("image/jpeg"),
            "frame content type"
        );
        r
    }

    pub fn ws(&self) -> Ws {
        Ws::connect(self.addr, "/ws")
    }

    /// SIGTERM; asserts a clean exit (status 0) within `timeout`, returns how long it took.
    #[track_caller]
    pub fn terminate_ok(&mut self, timeout: Duration) -> Duration {
        match self.proc.terminate(timeout) {
            Some((status, took)) => {
                assert!(
                    status.success(),
                    "ptz-edge exited with {status} after SIGTERM"
                );
                took
            }
            None => panic!("ptz-edge did not exit within {timeout:?} of SIGTERM"),
        }
    }
}

/// A connect body for `sim`'s `path` (no credentials, TCP).
pub fn connect_body(id: &str, sim: &Sim, path: &str) -> Value {
    json!({
        "cameraId": id,
        "ip": "127.0.0.1",
        "port": sim.rtsp_port,
        "streamPath": path,
        "username": "",
        "password": "",
        "transport": "tcp",
    })
}

// ---------------------------------------------------------------------------------------
// HTTP

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts `status`, a JSON content type and a `{"detail": string}` body.
    #[track_caller]
    pub fn assert_detail(&self, status: u16, what: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}: content type"
        );
        let v = self.json();
        let detail = v["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no string \"detail\" in {v}"));
        assert!(!detail.is_empty(), "{what}: empty detail");
        detail.to_owned()
    }

    /// Asserts the CORS header every response must carry.
    #[track_caller]
    pub fn assert_cors(&self, what: &str) {
        assert_eq!(
            self.header("access-control-allow-origin"),
            Some("*"),
            "{what}: Access-Control-Allow-Origin in {:?}",
            self.headers
        );
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`http`], but an I/O failure (e.g. the server was killed) is an `Err`.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let raw = {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        raw
    };
    http_raw(addr, &raw)
}

/// Sends `raw` bytes and parses the one response that comes back.
pub fn http_raw(addr: SocketAddr, raw: &[u8]) -> Result<Resp, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut data = Vec::new();
    s.read_to_end(&mut data)
        .map_err(|e| format!("read ({} bytes so far): {e}", data.len()))?;
    parse_response(&data)
}

fn parse_response(data: &[u8]) -> Result<Resp, String> {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete head in {:?}", String::from_utf8_lossy(data)))?;
    let head = std::str::from_utf8(&data[..head_end]).map_err(|e| format!("head: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let rest = &data[head_end + 4..];
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line missing")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket

/// What the server sent.
#[derive(Debug)]
pub enum WsIn {
    Json(Value),
    Binary(Vec<u8>),
    /// A Close frame (code, reason) or the end of the connection (`None`).
    Closed(Option<(u16, String)>),
}

/// A WebSocket client of `/ws`.
pub struct Ws {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub fn connect(addr: SocketAddr, path_and_query: &str) -> Ws {
        Ws::try_connect(addr, path_and_query)
            .unwrap_or_else(|e| panic!("WebSocket {path_and_query}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr, path_and_query: &str) -> Result<Ws, tungstenite::Error> {
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _resp) = tungstenite::connect(url.as_str())?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("set read timeout");
            s.set_write_timeout(Some(Duration::from_secs(5)))
                .expect("set write timeout");
        }
        Ok(Ws { ws })
    }

    /// Like [`Ws::connect`], over a socket whose receive buffer is set to `rcvbuf` bytes
    /// before connecting (so the TCP window stays that small: a client that stops
    /// reading fills it, and then the server's send buffer, quickly).
    pub fn connect_with_rcvbuf(addr: SocketAddr, path_and_query: &str, rcvbuf: usize) -> Ws {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("set SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("set write timeout");
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _resp) = tungstenite::client(url.as_str(), MaybeTlsStream::Plain(stream))
            .unwrap_or_else(|e| panic!("WebSocket {path_and_query} (SO_RCVBUF {rcvbuf}): {e}"));
        Ws { ws }
    }

    /// The client's end of the connection (for `/proc/net/tcp` look-ups).
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp().local_addr().expect("local addr")
    }

    /// A second handle on the socket, to write raw bytes (hand-made frames) that
    /// tungstenite would refuse to send. Do not interleave with [`Ws::send`].
    pub fn raw_stream(&self) -> TcpStream {
        self.tcp().try_clone().expect("clone the socket")
    }

    fn tcp(&self) -> &TcpStream {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s,
            _ => unreachable!("the tests use plain ws:// only"),
        }
    }

    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("WebSocket send {text:?}: {e}"));
    }

    pub fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .unwrap_or_else(|e| panic!("WebSocket send of {} binary bytes: {e}", data.len()));
    }

    /// The next data message or close, waiting at most `timeout`; `None` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<WsIn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server text is not JSON ({e}): {t:?}"));
                    return Some(WsIn::Json(v));
                }
                Ok(Message::Binary(b)) => return Some(WsIn::Binary(b.to_vec())),
                Ok(Message::Close(c)) => {
                    return Some(WsIn::Closed(
                        c.map(|c| (u16::from(c.code), c.reason.to_string())),
                    ))
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Io(_)
                    | tungstenite::Error::Protocol(_),
                ) => return Some(WsIn::Closed(None)),
                Err(e) => panic!("WebSocket read: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next JSON message whose `"type"` is `ty`, skipping frames and status pushes
    /// (and binary frames); panics on timeout or close.
    #[track_caller]
    pub fn expect_type(&mut self, ty: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(WsIn::Json(v)) if v["type"] == ty => return v,
                Some(WsIn::Json(v)) => skipped.push(v["type"].to_string()),
                Some(WsIn::Binary(_)) => skipped.push("binary".into()),
                Some(WsIn::Closed(c)) => {
                    panic!("socket closed ({c:?}) while waiting for {ty:?}; skipped {skipped:?}")
                }
                None => panic!("no {ty:?} message within {timeout:?}; skipped {skipped:?}"),
            }
        }
    }

    /// Sends a ping action and waits for the pong; returns what came before it.
    #[track_caller]
    pub fn ping_pong(&mut self, timeout: Duration) -> Vec<WsIn> {
        self.send(&json!({"action": "ping"}));
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(WsIn::Json(v)) if v["type"] == "pong" => return before,
                Some(WsIn::Closed(c)) => panic!("socket closed ({c:?}) while waiting for pong"),
                Some(other) => before.push(other),
                None => panic!("no pong within {timeout:?}"),
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }
}

/// A frame received over the WebSocket, in either mode.
#[derive(Debug, Clone)]
pub struct WsFrame {
    pub camera_id: String,
    pub timestamp: f64,
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
    /// When the client read it.
    pub received: Instant,
    /// The same, in unix seconds.
    pub received_unix: f64,
}

impl WsFrame {
    /// From a text `{"type":"frame",...}` message; panics on a missing or mistyped field.
    pub fn from_json(v: &Value) -> WsFrame {
        use base64::Engine as _;
        assert_eq!(v["type"], "frame", "not a frame: {}", short(v));
        assert!(
            v["timestamp"].is_f64(),
            "frame timestamp must be a float: {}",
            short(v)
        );
        let data = v["data"]
            .as_str()
            .unwrap_or_else(|| panic!("frame without string data: {}", short(v)));
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("frame data is not base64: {e}"));
        WsFrame {
            camera_id: field_str(v, "cameraId"),
            timestamp: field_f64(v, "timestamp"),
            seq: field_u64(v, "seq"),
            width: field_u64(v, "width") as u32,
            height: field_u64(v, "height") as u32,
            jpeg,
            received: Instant::now(),
            received_unix: unix_now(),
        }
    }

    /// From a binary message: 2-byte big-endian length N, N bytes of JSON, then JPEG.
    pub fn from_binary(b: &[u8]) -> WsFrame {
        assert!(b.len() > 2, "binary message of {} bytes", b.len());
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        assert!(
            b.len() > 2 + n,
            "binary message of {} bytes cannot hold a {n}-byte header and a JPEG",
            b.len()
        );
        let header = std::str::from_utf8(&b[2..2 + n])
            .unwrap_or_else(|e| panic!("binary header is not UTF-8: {e}"));
        let v: Value = serde_json::from_str(header)
            .unwrap_or_else(|e| panic!("binary header is not JSON ({e}): {header:?}"));
        WsFrame {
            camera_id: field_str(&v, "cameraId"),
            timestamp: field_f64(&v, "timestamp"),
            seq: field_u64(&v, "seq"),
            width: field_u64(&v, "width") as u32,
            height: field_u64(&v, "height") as u32,
            jpeg: b[2 + n..].to_vec(),
            received: Instant::now(),
            received_unix: unix_now(),
        }
    }
}

/// A JSON value shortened for messages (frames carry long base64 strings).
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}...", &s[..300])
    } else {
        s
    }
}

pub fn field_str(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k:?} is not a string in {}", short(v)))
        .to_owned()
}

pub fn field_u64(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k:?} is not an unsigned integer in {}", short(v)))
}

pub fn field_f64(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k:?} is not a number in {}", short(v)))
}

/// Subscribes `ws` (text mode unless `extra` says otherwise) and collects the frames that
/// arrive during `window`, counted from the first frame. Status pushes are skipped.
#[track_caller]
pub fn collect_frames(ws: &mut Ws, window: Duration) -> Vec<WsFrame> {
    let first_timeout = Duration::from_secs(10);
    let mut frames = Vec::new();
    let first = loop {
        match ws.recv(first_timeout) {
            Some(m) => {
                if let Some(f) = as_frame(&m) {
                    break f;
                }
                if let WsIn::Closed(c) = m {
                    panic!("socket closed ({c:?}) before the first frame");
                }
            }
            None => panic!("no frame within {first_timeout:?} of subscribing"),
        }
    };
    let start = first.received;
    frames.push(first);
    let end = start + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match ws.recv(left) {
            Some(WsIn::Closed(c)) => panic!("socket closed ({c:?}) while collecting frames"),
            Some(m) => {
                if let Some(f) = as_frame(&m) {
                    if f.received <= end {
                        frames.push(f);
                    }
                }
            }
            None => break,
        }
    }
    frames
}

/// The frame in `m`, if it is one (text `type: frame` or binary).
pub fn as_frame(m: &WsIn) -> Option<WsFrame> {
    match m {
        WsIn::Json(v) if v["type"] == "frame" => Some(WsFrame::from_json(v)),
        WsIn::Binary(b) => Some(WsFrame::from_binary(b)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Pictures

/// Decodes a JPEG to (width, height, luma plane with stride = width).
#[track_caller]
pub fn decode_jpeg(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    assert!(
        bytes.starts_with(&[0xFF, 0xD8]),
        "not a JPEG: starts with {:02X?}",
        &bytes[..bytes.len().min(4)]
    );
    let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
    let pixels = dec
        .decode()
        .unwrap_or_else(|e| panic!("JPEG of {} bytes does not decode: {e}", bytes.len()));
    let info = dec.info().expect("info after decode");
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let luma = to_luma(pixels, info.pixel_format);
    assert_eq!(luma.len(), (w * h) as usize, "luma plane size");
    (w, h, luma)
}

/// Decodes a JPEG and reads the simulator's frame code; panics if there is none.
/// Returns the JPEG's full size. The code is read from a picture decoded at 1/2, 1/4 or
/// 1/8 scale (DCT scaling, aspect kept, at least 320 px wide): an unoptimised full
/// decode costs over 100 ms at 640x360, too slow to check every frame of a stream.
#[track_caller]
pub fn jpeg_code(bytes: &[u8]) -> (u32, u32, FrameCode) {
    assert!(
        bytes.starts_with(&[0xFF, 0xD8]),
        "not a JPEG: starts with {:02X?}",
        &bytes[..bytes.len().min(4)]
    );
    let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
    dec.read_info()
        .unwrap_or_else(|e| panic!("JPEG of {} bytes has no readable header: {e}", bytes.len()));
    let info = dec.info().expect("info after read_info");
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let min_w = info.width.min(320);
    let min_h = (u32::from(min_w) * h / w) as u16;
    let (sw, sh) = dec
        .scale(min_w, min_h)
        .unwrap_or_else(|e| panic!("cannot scale a {w}x{h} JPEG: {e}"));
    let pixels = dec
        .decode()
        .unwrap_or_else(|e| panic!("JPEG of {} bytes does not decode: {e}", bytes.len()));
    let format = dec.info().expect("info after decode").pixel_format;
    let luma = to_luma(pixels, format);
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    assert_eq!(luma.len(), (sw * sh) as usize, "scaled luma plane size");
    let code = barcode::read(&luma, sw as usize, sw, sh)
        .unwrap_or_else(|| panic!("no frame code readable in a {w}x{h} JPEG (read at {sw}x{sh})"));
    (w, h, code)
}

fn to_luma(pixels: Vec<u8>, format: jpeg_decoder::PixelFormat) -> Vec<u8> {
    match format {
        jpeg_decoder::PixelFormat::L8 => pixels,
        jpeg_decoder::PixelFormat::RGB24 => pixels
            .chunks_exact(3)
            .map(|p| {
                let y = 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]);
                (y / 1000) as u8
            })
            .collect(),
        other => panic!("unexpected JPEG pixel format {other:?}"),
    }
}

/// Milliseconds from when the simulator drew `code` until now.
pub fn code_age_ms(code: &FrameCode) -> u32 {
    barcode::latency_ms(code, barcode::now_ms32())
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// Processes' resources and waiting

/// Threads of process `pid` (entries of `/proc/PID/task`).
pub fn thread_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"))
        .count()
}

/// Open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// Names of the threads of `pid` (for failure messages).
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it gives `Ok`; after `timeout` panics with `what` and
/// the last `Err` (what was seen instead).
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = l.local_addr().expect("local addr").port();
    drop(l);
    port
}

/// An open `GET {path}` MJPEG stream (`multipart/x-mixed-replace`), head already read.
pub struct Mjpeg {
    /// The response's headers.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    boundary: String,
}

/// One part of an MJPEG stream.
pub struct MjpegPart {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl MjpegPart {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Mjpeg {
    /// Opens the stream; panics unless it answers 200 with a multipart content type.
    pub fn open(addr: SocketAddr, path: &str) -> Mjpeg {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line:?}");
        let headers = read_headers(&mut reader);
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("multipart/x-mixed-replace"),
            "{path}: content type {content_type:?}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .map(|b| b.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{path}: no boundary in {content_type:?}"));
        Mjpeg {
            headers,
            reader,
            boundary: format!("--{boundary}"),
        }
    }

    /// The next part; `None` when the server ended the stream. Panics on a broken one.
    pub fn next_part(&mut self) -> Option<MjpegPart> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).expect("boundary line") == 0 {
                return None;
            }
            if !line.trim_end().is_empty() {
                break;
            }
        }
        assert_eq!(line.trim_end(), self.boundary, "part boundary");
        let headers = read_headers(&mut self.reader);
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .expect("part Content-Length");
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("part body");
        Some(MjpegPart { headers, body })
    }
}

/// Header lines up to the blank line.
fn read_headers(reader: &mut BufReader<TcpStream>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            return headers;
        }
        let (k, v) = l
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {l:?}"));
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers (a camera that
/// hangs mid-handshake). Returns its port and a channel that gets one message per
/// accepted connection. The accept thread lives until the test process ends.
pub fn silent_server() -> (u16, mpsc::Receiver<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = l.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("silent-server".into())
        .spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
                let _ = tx.send(());
            }
        })
        .expect("spawn silent server");
    (port, rx)
}

// ---------------------------------------------------------------------------------------
// Raw bytes on the wire, resources over time

/// Sends `raw` on a fresh connection and returns what came back: `Ok(None)` when the
/// server closed without a byte, `Ok(Some(reply))` for one parsed response. Unlike
/// [`http_raw`], a failed write (the server may close on a bad request before reading
/// all of it) is not an error: the reply it sent is still read. With `half_close`, the
/// write side is shut down after `raw` (the client has nothing more to say).
pub fn http_raw_reply(
    addr: SocketAddr,
    raw: &[u8],
    half_close: bool,
    read_timeout: Duration,
) -> Result<Option<Resp>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let _ = s.write_all(raw);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            // A reset after the reply (unread request bytes at the server's close).
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("read ({} bytes so far): {e}", data.len())),
        }
    }
    if data.is_empty() {
        Ok(None)
    } else {
        parse_response(&data).map(Some)
    }
}

/// One client-to-server WebSocket frame (RFC 6455 §5.2) with `opcode` and `payload`,
/// masked with `mask` when given (clients must mask; leave it out to break the rule).
pub fn ws_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (opcode & 0x0F)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The value of `f` once it has not changed for `quiet` (e.g. a thread count while
/// threads of finished work wind down); panics with `what` after `timeout`.
#[track_caller]
pub fn settled<T: PartialEq + Copy + std::fmt::Debug>(
    timeout: Duration,
    quiet: Duration,
    what: &str,
    mut f: impl FnMut() -> T,
) -> T {
    let mut last = f();
    let mut since = Instant::now();
    wait_for(timeout, what, || {
        let v = f();
        if v != last {
            last = v;
            since = Instant::now();
        }
        if since.elapsed() >= quiet {
            Ok(v)
        } else {
            Err(format!("{v:?}, still changing"))
        }
    })
}

/// Send and receive queue (bytes) of the IPv4 TCP socket from `local` to `peer`, from
/// `/proc/net/tcp`; `None` when there is no such socket (any more).
pub fn tcp_queues(local: SocketAddr, peer: SocketAddr) -> Option<(u64, u64)> {
    fn hex(a: SocketAddr) -> Option<String> {
        match a {
            SocketAddr::V4(a) => Some(format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            )),
            SocketAddr::V6(_) => None,
        }
    }
    let (l, p) = (hex(local)?, hex(peer)?);
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 || cols[1] != l || cols[2] != p {
            return None;
        }
        let (tx, rx) = cols[4].split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}
