//! Child processes behind Drop guards: the camera simulator, the appliance and VLC's RTSP
//! server, on 127.0.0.1 with ports chosen at run time.
//!
//! A process writes its stderr to a log file; its first stdout line is its ready line
//! (JSON). On drop it gets SIGTERM, then SIGKILL if it has not exited within a few
//! seconds. With [`Launch::temp`] (the tests) the log lives in the process's own
//! temporary directory: when the dropping thread panics (a failing test) the log is
//! printed, otherwise the directory is removed. With [`Launch::in_dir`] (the benchmark)
//! logs stay in a shared directory and children die with the thread that started them.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::http::{http, try_http, Resp};
use super::ws::Ws;

/// How long a process may take to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

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

/// PIDs of every live child, so a watchdog or a signal handler can kill them when the
/// Drop guards cannot run (the process is about to `exit`).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs and reaps every child still registered (watchdog / signal path; the Drop
/// guards are the normal path).
pub fn kill_all_children() {
    let pids = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for &pid in &pids {
        // SAFETY: plain kill(2) on a PID we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    for pid in pids {
        // SAFETY: waitpid on our own child (ECHILD if another thread reaped it first); a
        // null status pointer is allowed.
        unsafe {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
}

fn unregister(pid: u32) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|&p| p != pid);
    }
}

/// Where a process's log goes and how it is started.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The directory of the log (and of anything else the caller puts there).
    pub dir: PathBuf,
    /// The log's file name in `dir` (`<name>.log` when `None`).
    pub log_name: Option<String>,
    /// The directory is the process's own: removed on a clean drop.
    pub owns_dir: bool,
    /// How long the process may take to print its ready line.
    pub ready_timeout: Duration,
    /// The kernel SIGKILLs the child when the thread that started it dies, even if this
    /// process is SIGKILLed itself (PR_SET_PDEATHSIG).
    pub die_with_parent: bool,
}

impl Launch {
    /// A fresh temporary directory of its own (the tests).
    pub fn temp(label: &str) -> Launch {
        Launch {
            dir: temp_dir(label),
            log_name: None,
            owns_dir: true,
            ready_timeout: Duration::from_secs(20),
            die_with_parent: false,
        }
    }

    /// The log `log_name` in the shared directory `dir`, kept (the benchmark).
    pub fn in_dir(dir: &Path, log_name: &str) -> Launch {
        Launch {
            dir: dir.to_owned(),
            log_name: Some(log_name.to_owned()),
            owns_dir: false,
            ready_timeout: Duration::from_secs(15),
            die_with_parent: true,
        }
    }
}

/// Where a child's stdout goes.
enum Output {
    /// A pipe: its first line is the ready line, the rest is drained.
    ReadyLine,
    /// The log, beside stderr.
    Log,
}

/// A child process with its stderr log; SIGTERM (then SIGKILL) on drop.
pub struct Proc {
    name: String,
    child: Child,
    launch: Launch,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// How a process ended when it was stopped.
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub took: Duration,
    pub killed: bool,
}

impl Proc {
    /// Spawns `cmd` with stdout piped and stderr to the log, and waits for its first
    /// stdout line, which must be a JSON object; an `Err` (with the log's tail) if none
    /// comes in time.
    pub fn spawn(name: &str, cmd: Command, launch: Launch) -> Result<(Proc, Value), String> {
        let mut proc = Proc::start(name, cmd, launch, Output::ReadyLine)?;
        let stdout = proc.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let ready_timeout = proc.launch.ready_timeout;
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let first = lines.next();
                let _ = tx.send(first);
                // Keep draining so the child never blocks or gets EPIPE on stdout.
                for _ in lines {}
            })
            .map_err(|e| format!("spawn the stdout reader of {name}: {e}"))?;
        let line = match rx.recv_timeout(ready_timeout) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => {
                let status = proc.child.wait().ok();
                // Reaped: Drop must not signal the PID, which may be reused by now.
                proc.exited = status;
                unregister(proc.pid());
                return Err(format!(
                    "{name} closed stdout without a ready line ({other:?}, exit {status:?}); \
                     log {}:\n{}",
                    proc.log.display(),
                    tail(&proc.log_text(), 200)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{name} printed no ready line within {ready_timeout:?}; log {}:\n{}",
                    proc.log.display(),
                    tail(&proc.log_text(), 200)
                ))
            }
        };
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| format!("{name}: ready line {line:?} is not JSON: {e}"))?;
        Ok((proc, ready))
    }

    /// Spawns `cmd` with stdout and stderr both to the log, for a program that prints no
    /// ready line (the caller decides when it is ready, e.g. [`Vlc::launch`]).
    pub fn spawn_unready(name: &str, cmd: Command, launch: Launch) -> Result<Proc, String> {
        Proc::start(name, cmd, launch, Output::Log)
    }

    fn start(name: &str, mut cmd: Command, launch: Launch, out: Output) -> Result<Proc, String> {
        let log = launch.dir.join(
            launch
                .log_name
                .clone()
                .unwrap_or_else(|| format!("{name}.log")),
        );
        let stderr =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let stdout = match out {
            Output::ReadyLine => Stdio::piped(),
            Output::Log => Stdio::from(
                stderr
                    .try_clone()
                    .map_err(|e| format!("cannot share {}: {e}", log.display()))?,
            ),
        };
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(stderr));
        if launch.die_with_parent {
            // SAFETY: prctl is async-signal-safe; it makes the kernel SIGKILL the child
            // when the spawning thread dies.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        if let Ok(mut v) = LIVE.lock() {
            v.push(child.id());
        }
        Ok(Proc {
            name: name.to_owned(),
            child,
            launch,
            log,
            exited: None,
        })
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

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.launch.dir
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory effects; the pid is our own child, not yet reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        self.exited = Some(status);
        unregister(self.child.id());
        status
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(self.reaped(s)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(e) => panic!("{}: wait failed: {e}", self.name),
            }
        }
    }

    /// `Err` with the exit status and the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped(status);
            }
        }
        match self.exited {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} (pid {}) died: {status}; log {}:\n{}",
                self.name,
                self.child.id(),
                self.log.display(),
                tail(&self.log_text(), 15)
            )),
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

    /// SIGTERM, waits up to `grace`, then SIGKILL. Idempotent.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        let started = Instant::now();
        if let Some((status, took)) = self.terminate(grace) {
            return Stopped {
                status: Some(status),
                took,
                killed: false,
            };
        }
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        if let Some(s) = status {
            self.reaped(s);
        }
        Stopped {
            status,
            took: started.elapsed(),
            killed: true,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let stopped = self.stop(TERM_GRACE);
        if stopped.killed {
            eprintln!(
                "{} (pid {}) ignored SIGTERM for {TERM_GRACE:?}: killed it",
                self.name,
                self.child.id()
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr ({}) -----\n{}\n----- end of {} stderr -----",
                self.name,
                self.log.display(),
                tail(&self.log_text(), 200),
                self.name
            );
        } else if self.launch.owns_dir {
            let _ = fs::remove_dir_all(&self.launch.dir);
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

// ---------------------------------------------------------------------------------------
// The simulator

/// A running `camera-sim`.
pub struct Sim {
    pub proc: Proc,
    pub rtsp_port: u16,
    pub urls: Vec<String>,
    /// The whole ready line (e.g. the `ptz` ports with `--ptz`).
    pub ready: Value,
}

impl Sim {
    /// `BIN --bind 127.0.0.1 --port 0 ARGS...` (`RUST_LOG=info` unless set); returns
    /// once it listens.
    pub fn launch(bin: &Path, args: &[&str], launch: Launch) -> Result<Sim, String> {
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", "0"]).args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let (proc, ready) = Proc::spawn("camera-sim", cmd, launch)?;
        let rtsp_port = ready["rtsp_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("camera-sim ready line has no rtsp_port: {ready}"))?;
        let urls = ready["urls"]
            .as_array()
            .ok_or_else(|| format!("camera-sim ready line has no urls: {ready}"))?
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        Ok(Sim {
            proc,
            rtsp_port,
            urls,
            ready,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The appliance

/// A running `ptz-edge`.
pub struct Appliance {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub state_file: PathBuf,
}

impl Appliance {
    /// `BIN` with `PORT=0`, `BIND=127.0.0.1`, `PTZ_EDGE_STATE=state_file` (a path or
    /// `off`), no token and the default decoder settings, `RUST_LOG=info` unless set;
    /// then `env` (which may override any of those).
    pub fn launch(
        bin: &Path,
        state_file: &Path,
        env: &[(&str, &str)],
        launch: Launch,
    ) -> Result<Appliance, String> {
        let mut cmd = Command::new(bin);
        cmd.env("PORT", "0")
            .env("BIND", "127.0.0.1")
            .env("PTZ_EDGE_STATE", state_file)
            .env_remove("PTZ_EDGE_TOKEN")
            .env_remove("PTZ_EDGE_DECODE")
            .env_remove("PTZ_EDGE_DECODER");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, ready) = Proc::spawn("ptz-edge", cmd, launch)?;
        let addr: SocketAddr = ready["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("ptz-edge ready line has no listening address: {ready}"))?;
        if addr.port() == 0 {
            return Err(format!("ptz-edge reported port 0: {ready}"));
        }
        Ok(Appliance {
            proc,
            addr,
            state_file: state_file.to_owned(),
        })
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

    /// Connects `id` to `sim`'s `path`; how long the answer took, or an `Err` unless it
    /// is 200 with `"success": true`.
    pub fn try_connect_sim(&self, id: &str, sim_port: u16, path: &str) -> Result<Duration, String> {
        let started = Instant::now();
        let body = camera_body(id, sim_port, path);
        let r = try_http(
            self.addr,
            "POST",
            "/api/cameras/connect",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )?;
        let took = started.elapsed();
        if r.status != 200 || r.try_json().map(|v| v["success"] == true) != Ok(true) {
            return Err(format!("connect {id}: HTTP {}: {}", r.status, r.text()));
        }
        Ok(took)
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

    /// `GET /api/cameras/{id}/status` as JSON within `timeout`; an `Err` unless 200.
    pub fn try_status(&self, id: &str, timeout: Duration) -> Result<Value, String> {
        super::http::get_json(self.addr, &format!("/api/cameras/{id}/status"), timeout)
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
    camera_body(id, sim.rtsp_port, path)
}

/// A connect body for the simulator on `port`, `path` (no credentials, TCP).
pub fn camera_body(id: &str, port: u16, path: &str) -> Value {
    json!({
        "cameraId": id,
        "ip": "127.0.0.1",
        "port": port,
        "streamPath": path,
        "username": "",
        "password": "",
        "transport": "tcp",
    })
}

// ---------------------------------------------------------------------------------------
// VLC

/// The path VLC's RTSP server serves (`sdp=rtsp://127.0.0.1:PORT/stream`).
pub const VLC_PATH: &str = "/stream";

/// VLC's RTSP server (`cvlc`, VLC 3's `rtp` stream output with `sdp=rtsp://`) streaming a
/// file in a loop on 127.0.0.1. VLC refuses to run as root: when this process is root,
/// the child runs as `nobody`, so the file and its directory must be readable by all.
pub struct Vlc {
    pub proc: Proc,
    pub port: u16,
    /// The SDP of the DESCRIBE that found the server ready.
    pub sdp: String,
}

impl Vlc {
    /// `BIN FILE --loop --sout '#gather:rtp{sdp=rtsp://127.0.0.1:PORT/stream}' --sout-keep`;
    /// returns once a DESCRIBE lists a video track (VLC adds the tracks only once it has
    /// opened the file). `gather` keeps the RTP outputs across the loop's restarts of
    /// the input: without it every loop removes the tracks (sessions get an RTCP BYE and
    /// end) and adds new ones under new `trackID`s.
    pub fn launch(bin: &Path, file: &Path, port: u16, launch: Launch) -> Result<Vlc, String> {
        let mut cmd = Command::new(bin);
        cmd.arg(file)
            .arg("--loop")
            .arg("--sout")
            .arg(format!(
                "#gather:rtp{{sdp=rtsp://127.0.0.1:{port}{VLC_PATH}}}"
            ))
            .arg("--sout-keep")
            // Nothing of the caller's home: VLC only reads its (absent) configuration.
            .env("HOME", &launch.dir);
        // SAFETY: geteuid(2) has no side effects.
        if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = user_ids("nobody")?;
            // std drops the supplementary groups too (setgroups) before setuid.
            cmd.uid(uid).gid(gid);
        }
        let ready_timeout = launch.ready_timeout;
        let mut proc = Proc::spawn_unready("cvlc", cmd, launch)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + ready_timeout;
        loop {
            proc.check_alive()?;
            let seen = match super::net::rtsp_describe(addr, VLC_PATH, Duration::from_secs(2)) {
                Ok((200, sdp)) if sdp.contains("m=video") => {
                    return Ok(Vlc { proc, port, sdp });
                }
                Ok((status, sdp)) => format!("DESCRIBE {status}: {sdp:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "VLC served no video at rtsp://{addr}{VLC_PATH} within {ready_timeout:?} \
                     (last: {seen}); log {}:\n{}",
                    proc.log_path().display(),
                    tail(&proc.log_text(), 50)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The user and group ids of `name` (getpwnam_r).
fn user_ids(name: &str) -> Result<(u32, u32), String> {
    let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(format!("no user {name:?} to run VLC as (getpwnam_r: {rc})"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}
