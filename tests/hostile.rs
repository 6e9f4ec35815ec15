//! Hostile and greedy clients against a real appliance over loopback: many idle, silent
//! and half-head connections (a file descriptor each, no thread, `/health` still quick),
//! the per-peer and overall connection caps, the head deadline, and a property test that
//! puts arbitrary bytes into every part of a request the API reads and never gets a 500,
//! a hang or a panic.
//!
//! Clients that must count as different peers bind their sockets to distinct loopback
//! addresses (127.0.1.x, 127.0.2.x, ...) before connecting.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use common::{fd_count, thread_count, thread_names, wait_for, wait_until, Appliance, Sim};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

/// Raises this test process's soft limit on open files to the hard one (the test holds
/// well over a thousand sockets).
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A connection to `to` from the loopback address `from` (so the server sees `from` as
/// the peer).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())
        .unwrap_or_else(|e| panic!("bind to {from}: {e}"));
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    s
}

/// A response as read by [`read_response`].
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one final response (skipping `100 Continue`) from `s`: the head, then a body of
/// `Content-Length` bytes, or to the end when there is none. `101` and `multipart`
/// streams end at their head. Fails on a timeout (a hang) or a malformed answer.
fn read_response(s: &mut TcpStream) -> Result<Answer, String> {
    read_response_after(s, &mut Vec::new())
}

/// [`read_response`] for a `HEAD` request: the head only (a `Content-Length` says how
/// long the `GET` body would be; no body follows).
fn read_head_response(s: &mut TcpStream) -> Result<Answer, String> {
    read_answer(s, &mut Vec::new(), true)
}

/// [`read_response`] for a connection with several answers: `data` holds bytes read
/// before and keeps what follows this answer.
fn read_response_after(s: &mut TcpStream, data: &mut Vec<u8>) -> Result<Answer, String> {
    read_answer(s, data, false)
}

fn read_answer(s: &mut TcpStream, data: &mut Vec<u8>, head: bool) -> Result<Answer, String> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(data) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let hs: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                if status == 100 {
                    data.drain(..n);
                    continue;
                }
                let mut a = Answer {
                    status,
                    headers: hs,
                    body: Vec::new(),
                };
                let streaming = status == 101
                    || a.header("Content-Type")
                        .is_some_and(|t| t.starts_with("multipart/"));
                if streaming || head {
                    data.drain(..n);
                    return Ok(a);
                }
                let len = a
                    .header("Content-Length")
                    .map(|l| {
                        l.parse::<usize>()
                            .map_err(|e| format!("Content-Length: {e}"))
                    })
                    .transpose()?;
                let mut body: Vec<u8> = data.drain(..).skip(n).collect();
                loop {
                    if let Some(l) = len.filter(|l| body.len() >= *l) {
                        // What follows belongs to the next answer.
                        data.extend_from_slice(&body[l..]);
                        body.truncate(l);
                        break;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) if len.is_none() => break,
                        Ok(0) => return Err(format!("body cut short at {} bytes", body.len())),
                        Ok(k) => body.extend_from_slice(&chunk[..k]),
                        Err(e) => return Err(format!("reading the body: {e}")),
                    }
                }
                a.body = body;
                return Ok(a);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(format!(
                    "malformed answer ({e}): {:?}",
                    String::from_utf8_lossy(data)
                ))
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "closed without an answer after {} bytes",
                    data.len()
                ))
            }
            Ok(k) => data.extend_from_slice(&chunk[..k]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
}

/// `GET /health` on a fresh connection from `from`; the answer and how long it took.
fn health_from(from: Ipv4Addr, addr: SocketAddr) -> (Answer, Duration) {
    let t = Instant::now();
    let mut s = connect_from(from, addr);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write /health");
    let a = read_response(&mut s).unwrap_or_else(|e| panic!("/health from {from}: {e}"));
    (a, t.elapsed())
}

/// Asserts a `{"detail": ...}` JSON error with `status`; returns the detail.
#[track_caller]
fn assert_detail(a: &Answer, status: u16, what: &str) -> String {
    assert_eq!(a.status, status, "{what}: {a:?}");
    let v: Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {a:?}"));
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no detail in {v}"))
        .to_owned()
}

/// Reads from `s` until the server closes it; fails if it stays open past the socket's
/// read timeout. Returns what came.
fn read_to_close(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    match s.read_to_end(&mut data) {
        Ok(_) => Ok(data),
        // A reset also means closed.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(data),
        Err(e) => Err(format!("still open ({e}) after {} bytes", data.len())),
    }
}

/// Resident memory of `pid` (VmRSS), in kB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// 1,000 idle keep-alive connections (each served one request, now between requests),
/// 300 silent ones (connected, nothing sent) and 50 with half a head: all are held by the
/// poll thread, at a file descriptor each and no thread, while `/health` answers quickly.
/// Closing them gives the descriptors back.
#[test]
fn idle_silent_and_half_head_connections_hold_no_worker() {
    let limit = raise_nofile();
    assert!(
        limit >= 3000,
        "this test needs ~1,400 sockets; fd limit {limit}"
    );
    let app = Appliance::start(&[
        // Long enough that none is closed while the test holds them.
        ("PTZ_EDGE_IDLE_KEEP_ALIVE_MS", "120000"),
        ("PTZ_EDGE_HEAD_TIMEOUT_MS", "120000"),
    ]);
    let pid = app.pid();
    let (a, _) = health_from(Ipv4Addr::LOCALHOST, app.addr);
    assert_eq!(a.status, 200);
    let threads_before = thread_count(pid);
    let names_before = thread_names(pid);
    let fds_before = fd_count(pid);
    let rss_before = rss_kb(pid);

    // 200 connections per source address: under the default per-peer cap of 256.
    let peer = |n: usize| Ipv4Addr::new(127, 0, 1 + (n / 200) as u8, 1);
    let started = Instant::now();
    let mut idle = Vec::new();
    for n in 0..1000 {
        let mut s = connect_from(peer(n), app.addr);
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let a = read_response(&mut s).unwrap_or_else(|e| panic!("idle #{n}: {e}"));
        assert_eq!(a.status, 200, "idle #{n}");
        assert_ne!(
            a.header("Connection"),
            Some("close"),
            "idle #{n} kept alive"
        );
        idle.push(s);
    }
    let mut silent = Vec::new();
    for n in 1000..1300 {
        silent.push(connect_from(peer(n), app.addr));
    }
    let mut half = Vec::new();
    for n in 1300..1350 {
        let mut s = connect_from(peer(n), app.addr);
        s.write_all(b"GET /api/cameras HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .expect("write half a head");
        half.push(s);
    }
    eprintln!("1,350 connections opened in {:?}", started.elapsed());
    // All of them are open on the server's side (accepted and held); the baseline may
    // have counted the closing /health connection.
    wait_for(
        Duration::from_secs(20),
        "the appliance to hold the 1,350 connections",
        || {
            let n = fd_count(pid);
            (n + 2 >= fds_before + 1350)
                .then_some(())
                .ok_or(format!("{n} fds (baseline {fds_before})"))
        },
    );
    let fds_during = fd_count(pid);

    let mut times = Vec::new();
    for _ in 0..30 {
        let (a, took) = health_from(Ipv4Addr::LOCALHOST, app.addr);
        assert_eq!(a.status, 200, "/health with 1,350 connections open: {a:?}");
        times.push(took);
    }
    times.sort();
    let (p50, max) = (percentile(&times, 0.5), times[times.len() - 1]);
    let threads_during = thread_count(pid);
    eprintln!(
        "RSS {rss_before} kB -> {} kB with the connections open",
        rss_kb(pid)
    );
    eprintln!(
        "/health with 1,000 idle + 300 silent + 50 half-head connections: p50 {:.2} ms, max {:.2} ms \
         ({} requests); threads {threads_before} -> {threads_during}; fds {fds_before} -> {fds_during}",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        times.len()
    );
    assert!(
        max < Duration::from_secs(2),
        "/health took {max:?} with idle connections open"
    );
    assert_eq!(
        threads_during,
        threads_before,
        "threads grew with idle connections: {names_before:?} -> {:?}",
        thread_names(pid)
    );
    // The idle ones are still usable: a second request on a few of them.
    for (n, s) in idle.iter_mut().enumerate().step_by(97) {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let a = read_response(s).unwrap_or_else(|e| panic!("idle #{n} again: {e}"));
        assert_eq!(a.status, 200, "idle #{n} again");
    }

    drop(idle);
    drop(silent);
    drop(half);
    wait_until(
        Duration::from_secs(20),
        "the appliance to close the connections the clients closed",
        || fd_count(pid) <= fds_before,
    );
    let fds_after = fd_count(pid);
    eprintln!("after the clients closed: fds {fds_after}");
    // Exact now that no request is in flight: one descriptor per connection held.
    assert!(
        fds_during >= fds_after + 1350,
        "the appliance held {} connections, not 1,350",
        fds_during - fds_after
    );
    assert!(!app.proc.log_text().contains("panicked"));
}

/// A peer at its cap gets 503 `{"detail":"too many connections from your address"}` and
/// a close, while another peer is served; a freed slot can be taken again. The overall
/// cap refuses everyone alike.
#[test]
fn connection_caps_per_peer_and_overall() {
    raise_nofile();
    let app = Appliance::start(&[
        ("PTZ_EDGE_MAX_CONN_PER_PEER", "20"),
        ("PTZ_EDGE_MAX_CONNECTIONS", "30"),
    ]);
    let greedy = Ipv4Addr::new(127, 0, 0, 2);
    let other = Ipv4Addr::new(127, 0, 0, 3);
    let third = Ipv4Addr::new(127, 0, 0, 4);
    let mut held: Vec<TcpStream> = (0..20).map(|_| connect_from(greedy, app.addr)).collect();
    // Accepted in order: the 21st from the same address is over the cap.
    let mut over = connect_from(greedy, app.addr);
    let a = read_response(&mut over).expect("an answer to the 21st connection");
    let detail = assert_detail(&a, 503, "the 21st connection from one address");
    assert_eq!(detail, "too many connections from your address");
    assert_eq!(a.header("Connection"), Some("close"));
    read_to_close(&mut over).expect("closed after the refusal");
    eprintln!("21st connection from {greedy}: 503 {detail}");

    // Another peer is not affected.
    let (a, took) = health_from(other, app.addr);
    assert_eq!(a.status, 200, "{other} while {greedy} is at its cap: {a:?}");
    eprintln!("/health from {other} meanwhile: {took:?}");

    // A slot freed by a close is taken again.
    drop(held.pop());
    let a = wait_for(Duration::from_secs(10), "a freed slot to be usable", || {
        let mut s = connect_from(greedy, app.addr);
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let a = read_response(&mut s)?;
        (a.status == 200)
            .then_some(a)
            .ok_or("still refused".to_owned())
    });
    assert_eq!(a.status, 200);

    // Overall: 19 held from one peer + 11 from another = 30; a third peer is refused.
    let mut more: Vec<TcpStream> = (0..11).map(|_| connect_from(other, app.addr)).collect();
    let mut s = connect_from(third, app.addr);
    let a = read_response(&mut s).expect("an answer over the overall cap");
    let detail = assert_detail(&a, 503, "a connection over the overall cap");
    assert_eq!(detail, "too many connections");
    eprintln!("31st connection in all (from {third}): 503 {detail}");
    more.clear();
    held.clear();
    let (a, _) = wait_for(Duration::from_secs(10), "the caps to clear", || {
        let r = health_from(third, app.addr);
        (r.0.status == 200).then_some(r).ok_or("refused".to_owned())
    });
    assert_eq!(a.status, 200);
    assert!(!app.proc.log_text().contains("panicked"));
}

/// A head must arrive within the head deadline (1 s here), counted from the connection
/// and not per byte: half a head and a head that trickles in a byte at a time get 408
/// `{"detail"}` and a close; a connection that sent nothing is closed quietly.
#[test]
fn head_deadline_closes_slow_connections() {
    let app = Appliance::start(&[("PTZ_EDGE_HEAD_TIMEOUT_MS", "1000")]);
    let pid = app.pid();
    let fds_before = fd_count(pid);
    let t = Instant::now();
    let mut half = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut silent = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    let mut trickle = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut sent = 0;
    // One byte every 50 ms: the whole head would take ~4 s, past the deadline.
    while sent < head.len() {
        if trickle.write_all(&head[sent..sent + 1]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
        if t.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let a = read_response(&mut trickle).expect("an answer to the trickling head");
    let detail = assert_detail(&a, 408, "a head trickling in");
    assert!(
        sent < head.len(),
        "the whole head went out ({sent} bytes) before the deadline"
    );
    eprintln!(
        "trickling head: 408 {detail} after {sent} bytes, {:?}",
        t.elapsed()
    );

    let a = read_response(&mut half).expect("an answer to half a head");
    let detail = assert_detail(&a, 408, "half a head");
    read_to_close(&mut half).expect("half a head closed");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the deadline: {waited:?}"
    );
    eprintln!("half a head: 408 {detail} after {waited:?}");
    let rest = read_to_close(&mut silent).expect("a silent connection closed");
    assert!(rest.is_empty(), "a silent connection got {rest:?}");
    wait_until(Duration::from_secs(10), "fds back to the baseline", || {
        fd_count(pid) <= fds_before
    });
    assert!(!app.proc.log_text().contains("panicked"));
}

/// An idle kept-alive connection is closed quietly (no bytes) after the idle timeout,
/// not before.
#[test]
fn idle_keep_alive_is_closed_quietly() {
    let app = Appliance::start(&[("PTZ_EDGE_IDLE_KEEP_ALIVE_MS", "500")]);
    let mut s = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut s).expect("an answer").status, 200);
    let t = Instant::now();
    let rest = read_to_close(&mut s).expect("closed when idle");
    let idle = t.elapsed();
    eprintln!("idle keep-alive closed after {idle:?}");
    assert!(rest.is_empty(), "an idle close sent {rest:?}");
    assert!(idle >= Duration::from_millis(400), "closed early: {idle:?}");
}

/// When every worker is busy and the queue of complete heads is full, a further request
/// gets 503 `{"detail":"Server is busy"}` at once, and the server recovers when the
/// workers are free. One worker here, held by a body that never comes (until the body
/// deadline of 3 s).
#[test]
fn full_worker_queue_is_503_and_recovers() {
    let app = Appliance::start(&[
        ("PTZ_EDGE_HTTP_WORKERS", "1"),
        // Long enough that the queue is still full when /health comes on a loaded box.
        ("PTZ_EDGE_HEAD_TIMEOUT_MS", "3000"),
    ]);
    let (a, _) = health_from(Ipv4Addr::LOCALHOST, app.addr);
    assert_eq!(a.status, 200);
    // 1 in the worker + 64 queued; each waits for a body that never comes.
    let mut waiting = Vec::new();
    for _ in 0..70 {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 3, 1), app.addr);
        s.write_all(
            b"POST /api/cameras/disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        )
        .expect("write");
        waiting.push(s);
    }
    let t = Instant::now();
    let (a, took) = health_from(Ipv4Addr::LOCALHOST, app.addr);
    let detail = assert_detail(&a, 503, "/health with the queue full");
    assert_eq!(detail, "Server is busy");
    eprintln!("queue full: 503 {detail} in {took:?}");
    // The waiting ones get 408 (or 503 when they came after the queue filled).
    let mut answers = std::collections::BTreeMap::new();
    for s in waiting.iter_mut() {
        let a = read_response(s).expect("an answer to a request without its body");
        assert!(matches!(a.status, 408 | 503), "{a:?}");
        assert_detail(&a, a.status, "a request without its body");
        *answers.entry(a.status).or_insert(0) += 1;
    }
    eprintln!(
        "bodies that never came: {answers:?} after {:?}",
        t.elapsed()
    );
    assert!(answers.get(&503).copied().unwrap_or(0) >= 1, "{answers:?}");
    let (a, _) = wait_for(
        Duration::from_secs(10),
        "/health once workers are free",
        || {
            let r = health_from(Ipv4Addr::LOCALHOST, app.addr);
            (r.0.status == 200)
                .then_some(r)
                .ok_or("still busy".to_owned())
        },
    );
    assert_eq!(a.status, 200);
}

/// Bytes that are no HTTP at all (a TLS hello to the plain port) get 400 `{"detail"}`
/// at once, without a line end and without waiting for the head deadline.
#[test]
fn garbage_without_a_line_end_is_refused_at_once() {
    let app = Appliance::start(&[]);
    let mut s = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    let t = Instant::now();
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .expect("write");
    let a = read_response(&mut s).expect("an answer to a TLS hello");
    let detail = assert_detail(&a, 400, "a TLS hello");
    eprintln!("TLS hello: 400 {detail} in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// Requests pipelined in one write are all answered, in order, on one connection: the
/// worker gives the connection back with the next head already buffered.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let app = Appliance::start(&[]);
    let mut s = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    let body = br#"{"cameraId":"nope"}"#;
    let mut raw = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    raw.extend_from_slice(
        format!(
            "POST /api/cameras/disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    raw.extend_from_slice(body);
    raw.extend_from_slice(b"GET /api/cameras/nope/status HTTP/1.1\r\nHost: x\r\n\r\n");
    raw.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&raw).expect("write");
    let mut data = Vec::new();
    let statuses: Vec<u16> = (0..4)
        .map(|n| {
            read_response_after(&mut s, &mut data)
                .unwrap_or_else(|e| panic!("pipelined answer #{n}: {e}"))
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 404, 200]);
    read_to_close(&mut s).expect("closed after Connection: close");
}

/// Idle and silent connections do not delay shutdown: SIGTERM closes them at once and
/// the appliance exits cleanly.
#[test]
fn shutdown_closes_waiting_connections_at_once() {
    let mut app = Appliance::start(&[
        ("PTZ_EDGE_IDLE_KEEP_ALIVE_MS", "120000"),
        ("PTZ_EDGE_HEAD_TIMEOUT_MS", "120000"),
    ]);
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, app.addr);
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        assert_eq!(read_response(&mut s).expect("an answer").status, 200);
        held.push(s);
    }
    for _ in 0..50 {
        held.push(connect_from(Ipv4Addr::LOCALHOST, app.addr));
    }
    let mut half = connect_from(Ipv4Addr::LOCALHOST, app.addr);
    half.write_all(b"GET /health HTTP/1.1\r\n").expect("write");
    held.push(half);
    let took = app.terminate_ok(Duration::from_secs(10));
    eprintln!("SIGTERM with 101 waiting connections: exited in {took:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    for (n, s) in held.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        read_to_close(s).unwrap_or_else(|e| panic!("connection #{n} after shutdown: {e}"));
    }
}

/// Running out of file descriptors (EMFILE) does not end accepting: once descriptors are
/// free again the appliance answers. The limit is lowered from outside (prlimit) after
/// start, below what the connection cap allows.
#[test]
fn accept_survives_running_out_of_descriptors() {
    let app = Appliance::start(&[("PTZ_EDGE_HEAD_TIMEOUT_MS", "120000")]);
    let pid = app.pid();
    let (a, _) = health_from(Ipv4Addr::LOCALHOST, app.addr);
    assert_eq!(a.status, 200);
    let base = fd_count(pid) as u64;
    let lim = libc::rlimit {
        rlim_cur: base + 8,
        rlim_max: base + 8,
    };
    // SAFETY: prlimit reads `lim`; no old value is asked for.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    // The kernel completes these handshakes (backlog); the appliance can take only ~8.
    let held: Vec<TcpStream> = (0..30)
        .map(|_| connect_from(Ipv4Addr::LOCALHOST, app.addr))
        .collect();
    wait_until(
        Duration::from_secs(10),
        "an accept error in the log",
        || app.proc.log_text().contains("accept failed"),
    );
    drop(held);
    let (a, took) = wait_for(
        Duration::from_secs(15),
        "/health once descriptors are free",
        || {
            let mut s = TcpStream::connect(app.addr).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let a = read_response(&mut s)?;
            (a.status == 200)
                .then_some((a, t.elapsed()))
                .ok_or("not 200".to_owned())
        },
    );
    assert_eq!(a.status, 200);
    eprintln!("after EMFILE: /health answered in {took:?}");
    assert!(!app.proc.log_text().contains("panicked"));
}

/// A preflight echoes a plain list of header names and answers anything else (non-ASCII,
/// control bytes) with the headers the API reads, never a 500.
#[test]
fn preflight_answers_hostile_request_headers() {
    let app = Appliance::start(&[]);
    let ask = |value: &[u8]| {
        let mut s = connect_from(Ipv4Addr::LOCALHOST, app.addr);
        let mut raw = b"OPTIONS /api/cameras HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                        Origin: http://app\r\nAccess-Control-Request-Headers: "
            .to_vec();
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n\r\n");
        s.write_all(&raw).expect("write");
        read_response(&mut s).expect("an answer")
    };
    let a = ask(b"content-type, x-custom");
    assert_eq!(a.status, 204);
    assert_eq!(
        a.header("Access-Control-Allow-Headers"),
        Some("content-type, x-custom")
    );
    for hostile in [&b"x-\xc3\xa9t\xc3\xa9"[..], b"\xff\xfe", b"a b", b"x(y)"] {
        let a = ask(hostile);
        assert_eq!(a.status, 204, "{hostile:?}: {a:?}");
        assert_eq!(
            a.header("Access-Control-Allow-Headers"),
            Some("Content-Type, Authorization"),
            "{hostile:?}"
        );
    }
    assert!(!app.proc.log_text().contains("panicked"));
}

// ---------------------------------------------------------------------------------------
// Property test: arbitrary bytes in every part of a request

/// A deterministic generator (xorshift64), so a failing case reproduces from its index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Hostile bytes for a header value, a path segment, a query value or a JSON string.
    /// Shaped by `mode` so that most reach the routes.
    fn nasty(&mut self, mode: Mode) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "",
            " ",
            "é",
            "日本語",
            "\u{202e}evil",
            "\u{feff}",
            "💥",
            "%",
            "%ff",
            "%zz",
            "%00",
            "%C3%A9",
            "-1",
            "0",
            "16",
            "640",
            "7680",
            "7681",
            "99999999999999999999999",
            "1e3",
            "NaN",
            "inf",
            "-0",
            "0x10",
            " 5",
            "5 ",
            "100",
            "101",
            "0.1",
            "60",
            "61",
            "null",
            "true",
            "{}",
            "[]",
            "\"",
            "\\",
            "'",
            ",",
            ";",
            "&",
            "=",
            "?",
            "#",
            "/",
            "..",
            "../../etc/passwd",
            "Bearer ",
            "secret",
            "cam",
            "127.0.0.1",
        ];
        let mut out = Vec::new();
        for _ in 0..=self.below(4) {
            match self.below(6) {
                0 | 1 => out.extend_from_slice(self.pick(WORDS).as_bytes()),
                2 => {
                    // Raw bytes, any value.
                    for _ in 0..self.below(24) {
                        out.push(self.next() as u8);
                    }
                }
                3 => {
                    // Control characters and DEL.
                    for _ in 0..=self.below(6) {
                        let c = *self.pick(&[0u8, 1, 7, 8, 9, 11, 12, 27, 31, 127]);
                        out.push(c);
                    }
                }
                4 => {
                    // Non-ASCII bytes that are not UTF-8.
                    for _ in 0..=self.below(6) {
                        out.push(0x80 | self.next() as u8);
                    }
                }
                _ => {
                    // Long.
                    let n = *self.pick(&[300usize, 4000, 12_000]);
                    let b = *self.pick(b"aZ9%\xff\x01");
                    out.extend(std::iter::repeat_n(b, n));
                }
            }
        }
        match mode {
            Mode::Raw => {}
            Mode::Header => {
                if !self.chance(3) {
                    out.retain(|b| *b != b'\r' && *b != b'\n');
                }
                // Mostly bytes a head may carry (obs-text included), so they reach the
                // routes; sometimes control bytes the parser must refuse.
                if self.chance(70) {
                    out.retain(|b| *b == b'\t' || *b >= 0x20 && *b != 0x7f);
                }
            }
            Mode::Url => {
                if self.chance(70) {
                    out = percent_encode(&out);
                } else if !self.chance(3) {
                    out.retain(|b| *b != b'\r' && *b != b'\n');
                }
            }
        }
        out
    }
}

/// Where hostile bytes go.
#[derive(Clone, Copy)]
enum Mode {
    /// A body: anything.
    Raw,
    /// A header value.
    Header,
    /// A path segment or a query value: mostly percent-encoded.
    Url,
}

fn percent_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    out
}

/// What a fuzz case sends and which answers are normal for it.
struct Case {
    raw: Vec<u8>,
    /// `GET /ws` may be upgraded and MJPEG may stream: both are fine when valid.
    label: &'static str,
    head_only: bool,
}

fn request(
    method: &[u8],
    target: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    body: &[u8],
    rng: &mut Rng,
) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend_from_slice(method);
    raw.push(b' ');
    raw.extend_from_slice(target);
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: ptz-edge\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.extend_from_slice(k);
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(v);
        raw.extend_from_slice(b"\r\n");
    }
    // Mostly a true length; sometimes a hostile one (too big is answered 408 at the
    // short body deadline, or 413).
    if rng.chance(5) {
        raw.extend_from_slice(b"Content-Length: ");
        let v = rng.nasty(Mode::Header);
        raw.extend_from_slice(&v);
        raw.extend_from_slice(b"\r\n");
    } else if !body.is_empty() || method == b"POST" {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One hostile request for the API (`cam` is a connected camera, `token` the API token).
fn case(rng: &mut Rng, cam: &str, token: &str, closed_port: u16) -> Case {
    let bearer = format!("Bearer {token}").into_bytes();
    // Most cases carry the right token so that they get past authorisation.
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if rng.chance(85) {
        headers.push((b"Authorization".to_vec(), bearer.clone()));
    }
    let id: Vec<u8> = if rng.chance(60) {
        cam.as_bytes().to_vec()
    } else {
        rng.nasty(Mode::Url)
    };
    let mut head_only = false;
    let (label, method, target, body): (&str, Vec<u8>, Vec<u8>, Vec<u8>) = match rng.below(12) {
        0 | 1 => {
            let mut q = Vec::new();
            for name in ["width", "quality", "fps", "token"] {
                if rng.chance(60) {
                    let v = match name {
                        "width" if rng.chance(40) => {
                            rng.pick(&["160", "320", "640"]).as_bytes().to_vec()
                        }
                        "quality" if rng.chance(40) => rng.pick(&["50", "80"]).as_bytes().to_vec(),
                        _ => rng.nasty(Mode::Url),
                    };
                    q.push(cat(&[name.as_bytes(), b"=", &v]));
                }
            }
            let target = cat(&[b"/api/cameras/", &id, b"/frame?", &q.join(&b'&')]);
            ("frame", b"GET".to_vec(), target, Vec::new())
        }
        2 => {
            let q = cat(&[
                b"fps=",
                &rng.nasty(Mode::Url),
                b"&width=",
                &rng.nasty(Mode::Url),
            ]);
            let target = cat(&[b"/api/cameras/", &id, b"/mjpeg?", &q]);
            ("mjpeg", b"GET".to_vec(), target, Vec::new())
        }
        3 | 4 => {
            // A connect body: a JSON object whose fields hold hostile strings or values.
            let s = |rng: &mut Rng| -> Value {
                match rng.below(5) {
                    0 => Value::from(rng.below(70_000) as u64),
                    1 => json!(null),
                    2 => json!([1, "x"]),
                    _ => Value::from(String::from_utf8_lossy(&rng.nasty(Mode::Raw)).into_owned()),
                }
            };
            let mut m = serde_json::Map::new();
            for f in [
                "cameraId",
                "ip",
                "username",
                "password",
                "streamPath",
                "port",
            ] {
                if rng.chance(80) {
                    m.insert(f.into(), s(rng));
                }
            }
            // Never the camera the other cases use.
            if m.get("cameraId").and_then(Value::as_str) == Some(cam) {
                m.insert("cameraId".into(), json!("xcam"));
            }
            // Never a reachable camera: only a closed loopback port.
            if m.get("ip").is_some_and(|v| v.as_str().is_some()) && rng.chance(50) {
                m.insert("ip".into(), json!("127.0.0.1"));
                m.insert("port".into(), json!(closed_port));
            }
            let body = if rng.chance(20) {
                rng.nasty(Mode::Raw)
            } else {
                serde_json::to_vec(&Value::Object(m)).expect("json")
            };
            (
                "connect",
                b"POST".to_vec(),
                b"/api/cameras/connect".to_vec(),
                body,
            )
        }
        5 => {
            let body = if rng.chance(50) {
                // Never the camera the other cases use ("x" first).
                let id = String::from_utf8_lossy(&rng.nasty(Mode::Raw)).into_owned();
                serde_json::to_vec(&json!({ "cameraId": format!("x{id}") })).expect("json")
            } else {
                rng.nasty(Mode::Raw)
            };
            (
                "disconnect",
                b"POST".to_vec(),
                b"/api/cameras/disconnect".to_vec(),
                body,
            )
        }
        6 => {
            // WebSocket upgrade headers.
            let mut h = vec![
                (b"Upgrade".to_vec(), b"websocket".to_vec()),
                (
                    b"Sec-WebSocket-Key".to_vec(),
                    b"dGhlIHNhbXBsZSBub25jZQ==".to_vec(),
                ),
                (b"Sec-WebSocket-Version".to_vec(), b"13".to_vec()),
            ];
            for (_, v) in h.iter_mut() {
                if rng.chance(50) {
                    *v = rng.nasty(Mode::Header);
                }
            }
            headers.push((
                b"Connection".to_vec(),
                if rng.chance(60) {
                    b"Upgrade".to_vec()
                } else {
                    rng.nasty(Mode::Header)
                },
            ));
            headers.extend(h);
            let target = if rng.chance(50) {
                cat(&[b"/ws?token=", &rng.nasty(Mode::Url)])
            } else {
                b"/ws".to_vec()
            };
            ("ws", b"GET".to_vec(), target, Vec::new())
        }
        7 => {
            // CORS preflight.
            headers.push((
                b"Access-Control-Request-Headers".to_vec(),
                rng.nasty(Mode::Header),
            ));
            headers.push((b"Origin".to_vec(), rng.nasty(Mode::Header)));
            headers.push((
                b"Access-Control-Request-Method".to_vec(),
                rng.nasty(Mode::Header),
            ));
            let target = cat(&[b"/api/cameras/", &id, b"/frame"]);
            ("preflight", b"OPTIONS".to_vec(), target, Vec::new())
        }
        8 => {
            // Authorization and the token query.
            headers.retain(|(k, _)| k != b"Authorization");
            let v = if rng.chance(50) {
                cat(&[b"Bearer ", &rng.nasty(Mode::Header)])
            } else {
                rng.nasty(Mode::Header)
            };
            headers.push((b"Authorization".to_vec(), v));
            let target = if rng.chance(50) {
                cat(&[b"/api/cameras?token=", &rng.nasty(Mode::Url)])
            } else {
                b"/api/cameras".to_vec()
            };
            ("auth", b"GET".to_vec(), target, Vec::new())
        }
        9 => {
            // PTZ command bodies and status of hostile ids.
            if rng.chance(50) {
                let body = if rng.chance(50) {
                    serde_json::to_vec(&json!({
                        "action": String::from_utf8_lossy(&rng.nasty(Mode::Raw)),
                        "speed": String::from_utf8_lossy(&rng.nasty(Mode::Raw)),
                    }))
                    .expect("json")
                } else {
                    rng.nasty(Mode::Raw)
                };
                (
                    "ptz",
                    b"POST".to_vec(),
                    cat(&[b"/api/cameras/", &id, b"/ptz"]),
                    body,
                )
            } else {
                (
                    "status",
                    b"GET".to_vec(),
                    cat(&[b"/api/cameras/", &id, b"/status"]),
                    Vec::new(),
                )
            }
        }
        11 => {
            // Snapshot, tour and watch bodies: hostile values in every field they read,
            // always one that cannot be valid (a string timeout or threshold), so no
            // snapshot waits on the camera; or raw bytes.
            let text = |rng: &mut Rng| Value::from(String::from_utf8_lossy(&rng.nasty(Mode::Raw)));
            let (route, fields): (&[u8], &[&str]) = match rng.below(3) {
                0 => (
                    b"/snapshot",
                    &["timeout", "preset", "crop", "width", "quality", "format"],
                ),
                1 => (b"/tour", &["timeout", "stops", "crop", "width", "quality"]),
                _ => (b"/watch", &["threshold", "cooldown", "enabled"]),
            };
            let body = if rng.chance(70) {
                let mut m = serde_json::Map::new();
                for (i, f) in fields.iter().enumerate() {
                    if i == 0 || rng.chance(60) {
                        let v = match rng.below(4) {
                            _ if i == 0 => text(rng),
                            0 => Value::from(rng.below(70_000) as u64),
                            1 => json!([text(rng), -1, 2.5]),
                            _ => text(rng),
                        };
                        m.insert((*f).to_owned(), v);
                    }
                }
                serde_json::to_vec(&Value::Object(m)).expect("json")
            } else {
                rng.nasty(Mode::Raw)
            };
            (
                "pictures",
                b"POST".to_vec(),
                cat(&[b"/api/cameras/", &id, route]),
                body,
            )
        }
        _ => {
            // Anything: method, raw path, an extra header with a hostile name or value.
            let method = if rng.chance(50) {
                rng.pick(&[&b"GET"[..], b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH"])
                    .to_vec()
            } else {
                rng.nasty(Mode::Header)
            };
            head_only = method == b"HEAD";
            let target = cat(&[b"/", &rng.nasty(Mode::Url)]);
            headers.push((rng.nasty(Mode::Header), rng.nasty(Mode::Header)));
            for k in ["Connection", "Expect", "Transfer-Encoding", "Content-Type"] {
                if rng.chance(15) {
                    headers.push((k.as_bytes().to_vec(), rng.nasty(Mode::Header)));
                }
            }
            ("any", method, target, rng.nasty(Mode::Raw))
        }
    };
    // Any header may carry hostile bytes too.
    if rng.chance(20) {
        headers.push((b"X-Anything".to_vec(), rng.nasty(Mode::Header)));
    }
    let raw = request(&method, &target, &headers, &body, rng);
    Case {
        raw,
        label,
        head_only,
    }
}

/// Arbitrary bytes (non-ASCII, control characters, very long) in every header, path,
/// query and body the API reads, over real TCP to a real appliance with a camera: every
/// answer is a 2xx (valid by chance), a 101/stream (a valid upgrade), or a 4xx with a
/// JSON `{"detail"}`; never a 500, never a hang, and no "panicked" in the log.
#[test]
fn arbitrary_bytes_in_requests_never_reach_a_panic() {
    let sim = Sim::simple("320x180", 10);
    let token = "s3cret-token";
    let mut app = Appliance::start(&[
        ("PTZ_EDGE_TOKEN", token),
        // A short body deadline: hostile Content-Lengths are answered 408 quickly.
        ("PTZ_EDGE_HEAD_TIMEOUT_MS", "1500"),
        ("PTZ_EDGE_MAX_CONN_PER_PEER", "4096"),
    ]);
    let cam = "cam";
    let r = app.request(
        "POST",
        "/api/cameras/connect",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        common::connect_body(cam, &sim, "/1").to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "connect the simulator: {}", r.text());
    let closed = common::closed_port();
    let cases: usize = std::env::var("PTZ_EDGE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut statuses: std::collections::BTreeMap<(u16, &str), usize> = Default::default();
    let started = Instant::now();
    for n in 0..cases {
        let c = case(&mut rng, cam, token, closed);
        let t = Instant::now();
        let mut s = connect_from(Ipv4Addr::LOCALHOST, app.addr);
        let sent = s.write_all(&c.raw);
        let shown = || {
            let text = String::from_utf8_lossy(&c.raw);
            let cut: String = text.chars().take(400).collect();
            format!("case #{n} ({}): {cut:?}", c.label)
        };
        let answer = if c.head_only {
            read_head_response(&mut s)
        } else {
            read_response(&mut s)
        };
        let a = match answer {
            Ok(a) => a,
            // The server may answer (431) and close before it has read all we sent.
            Err(e) => panic!("{}: {e} (write: {sent:?})", shown()),
        };
        let took = t.elapsed();
        assert!(took < Duration::from_secs(8), "{}: took {took:?}", shown());
        *statuses.entry((a.status, c.label)).or_default() += 1;
        match a.status {
            101 | 200..=299 => {}
            400..=499 => {
                if !c.head_only {
                    let v: Value = serde_json::from_slice(&a.body).unwrap_or_else(|e| {
                        panic!("{}: {} body is not JSON ({e}): {a:?}", shown(), a.status)
                    });
                    assert!(
                        v["detail"].is_string(),
                        "{}: {} without a detail: {v}",
                        shown(),
                        a.status
                    );
                }
            }
            // A connect to the closed port: the camera is unreachable (the contract's
            // answer for that), not a server fault; a session cap (too many MJPEG
            // streams or WebSockets while closed ones wind down) is a clear refusal.
            502 | 504 if c.label == "connect" => {}
            503 if matches!(c.label, "connect" | "mjpeg" | "ws") => {
                let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                assert!(v["detail"].is_string(), "{}: 503 without a detail", shown());
            }
            other => panic!("{}: status {other}: {a:?}", shown()),
        }
    }
    eprintln!(
        "{cases} hostile requests in {:?}; (status, route) -> count: {statuses:?}",
        started.elapsed()
    );
    let log = app.proc.log_text();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "panics in the log: {panics:#?}");
    let r = app.request(
        "GET",
        "/health",
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(r.status, 200, "still healthy");
    app.terminate_ok(Duration::from_secs(10));
}
