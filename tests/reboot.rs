//! Issue 14, "back within 3 s every time": how long a session start takes, and a camera
//! that reboots again and again.
//!
//! - The cause of the 3.1 s session starts, reproduced: rtspsrc with the settings the
//!   appliance had (`protocols=tcp+udp+udp-mcast`, `timeout` 3 s) in front of a camera
//!   whose RTP over UDP does not get through waits out its whole UDP timeout before it
//!   re-opens over TCP. The camera is `camera-sim` behind [`Relay`], which passes RTSP
//!   but points SETUP's `client_port` at sockets that swallow the packets (what a host
//!   firewall, NAT or a Docker bridge does to RTP/UDP).
//! - The fix: `auto` starts over TCP (first packet in well under 0.5 s through the same
//!   relay); `udp` that brings nothing ends at its first-RTP bound with a reason that
//!   names the step, and so does a camera that never answers DESCRIBE; `auto` in front
//!   of a camera that refuses TCP moves to UDP at once and keeps it for the next
//!   reconnect.
//! - 20 reboots with random outages of 1–10 s (seeded), over TCP and over UDP: pictures
//!   again within 2 s of the simulator accepting connections, every time; p50 and the
//!   maximum are printed (`--nocapture`).
//!
//! Real processes over 127.0.0.1, bounded waits. The reboot tests take about two
//! minutes each and take [`heavy`], so they never run beside each other.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::{json, Value};

const CAM: &str = "cam";
/// Reboots per transport (issue 14).
const REBOOTS: usize = 20;
/// Pictures must be back within this of the simulator accepting connections.
const BACK_WITHIN: Duration = Duration::from_secs(2);
/// Fixed, so a failing run can be replayed with the same outages.
const SEED: u64 = 14;

/// Tests that measure timings take this, so on a 2-core CI they never run beside each
/// other (each starts simulators and an appliance that decodes).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// An RTSP relay that lets RTSP through but not RTP over UDP (or refuses TCP transport)

/// What [`Relay`] does to SETUP requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RelayMode {
    /// Rewrites `client_port=A-B` to two UDP sockets of the relay that nobody reads: the
    /// camera sends its RTP there and the client's UDP ports get nothing (and no ICMP
    /// comes back, as behind a firewall that drops).
    SwallowUdp,
    /// Answers a SETUP that asks for `RTP/AVP/TCP` with `461 Unsupported Transport`
    /// itself (a camera that only streams over UDP).
    RefuseTcp,
}

/// The relayed connections: their sockets (to shut down) and copy threads (to join).
#[derive(Default)]
struct Conns {
    sockets: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

/// A TCP relay on 127.0.0.1 in front of an RTSP server; stops (closing every relayed
/// connection and joining its threads) on drop.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Conns>>,
    /// The black hole for [`RelayMode::SwallowUdp`]: bound for the relay's lifetime.
    _swallow: (UdpSocket, UdpSocket),
}

impl Relay {
    fn start(upstream_port: u16, mode: RelayMode) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let swallow = (
            UdpSocket::bind("127.0.0.1:0").expect("bind a swallowing UDP socket"),
            UdpSocket::bind("127.0.0.1:0").expect("bind a swallowing UDP socket"),
        );
        let ports = (
            swallow.0.local_addr().expect("udp addr").port(),
            swallow.1.local_addr().expect("udp addr").port(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Conns::default()));
        let accept = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name("relay-accept".into())
                .spawn(move || {
                    for client in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(client) = client else { continue };
                        // A camera that is down: the client sees its connection closed.
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                            continue;
                        };
                        relay_pair(client, server, mode, ports, &conns);
                    }
                })
                .expect("spawn relay-accept")
        };
        Relay {
            port,
            stop,
            accept: Some(accept),
            conns,
            _swallow: swallow,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept(); the loop then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Ends the copy threads: their reads and writes fail once the sockets are shut
        // down.
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for c in &conns.sockets {
            let _ = c.shutdown(Shutdown::Both);
        }
        for t in conns.threads {
            let _ = t.join();
        }
    }
}

/// Relays one client connection: the server's bytes as they are, the client's through
/// [`rewrite_requests`].
fn relay_pair(
    client: TcpStream,
    server: TcpStream,
    mode: RelayMode,
    ports: (u16, u16),
    conns: &Arc<Mutex<Conns>>,
) {
    let (Ok(c_held), Ok(s_held), Ok(mut c_read), Ok(mut s_write)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let mut c_write = client;
    let mut s_read = server;
    let down = std::thread::Builder::new()
        .name("relay-down".into())
        .spawn(move || {
            let _ = std::io::copy(&mut s_read, &mut c_write);
            let _ = c_write.shutdown(Shutdown::Both);
        });
    let up = std::thread::Builder::new()
        .name("relay-up".into())
        .spawn(move || {
            let replies = c_read.try_clone();
            if let Ok(mut replies) = replies {
                rewrite_requests(&mut c_read, &mut s_write, &mut replies, mode, ports);
            }
            let _ = s_write.shutdown(Shutdown::Both);
        });
    let mut held = conns.lock().unwrap_or_else(|e| e.into_inner());
    held.sockets.extend([c_held, s_held]);
    held.threads.extend([down, up].into_iter().flatten());
}

/// Copies RTSP requests (and interleaved `$` frames) from `from` to `to`, rewriting SETUP
/// per `mode`; a refused SETUP is answered on `reply`.
fn rewrite_requests(
    from: &mut TcpStream,
    to: &mut TcpStream,
    reply: &mut TcpStream,
    mode: RelayMode,
    ports: (u16, u16),
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Forward every complete message in the buffer.
        loop {
            if buf.first() == Some(&b'$') {
                if buf.len() < 4 {
                    break;
                }
                let n = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                if buf.len() < n {
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                buf.drain(..n);
                continue;
            }
            let Some(end) = find(&buf, b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let n = end + 4 + body_len;
            if buf.len() < n {
                break;
            }
            let body = buf[end + 4..n].to_vec();
            buf.drain(..n);
            let is_setup = head.starts_with("SETUP ");
            if is_setup && mode == RelayMode::RefuseTcp && head.contains("RTP/AVP/TCP") {
                let cseq = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("cseq:"))
                    .unwrap_or("CSeq: 0");
                let answer = format!("RTSP/1.0 461 Unsupported Transport\r\n{cseq}\r\n\r\n");
                if reply.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            let head = if is_setup && mode == RelayMode::SwallowUdp {
                replace_client_port(&head, ports)
            } else {
                head
            };
            if to.write_all(head.as_bytes()).is_err() || to.write_all(&body).is_err() {
                return;
            }
        }
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `client_port=A-B` → `client_port=P-Q`.
fn replace_client_port(head: &str, (p, q): (u16, u16)) -> String {
    const KEY: &str = "client_port=";
    let Some(at) = head.find(KEY) else {
        return head.to_owned();
    };
    let rest = &head[at + KEY.len()..];
    let len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    format!("{}{KEY}{p}-{q}{}", &head[..at], &rest[len..])
}

// ---------------------------------------------------------------------------------------
// The cause

/// How long rtspsrc with `protocols` and a 3 s `timeout` (the appliance's settings
/// before issue 14) takes to its first buffer from `url`, and its warnings.
fn rtspsrc_first_buffer(url: &str, protocols: &str) -> (Duration, Vec<String>) {
    gst::init().expect("GStreamer init");
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc name=src location={url} protocols={protocols} timeout=3000000 \
         tcp-timeout=3000000 latency=0 drop-on-latency=true do-retransmission=false \
         src. ! fakesink name=sink signal-handoffs=true sync=false"
    ))
    .expect("parse the rtspsrc pipeline");
    let pipeline = pipeline
        .downcast::<gst::Pipeline>()
        .expect("launch gives a pipeline");
    let sink = pipeline.by_name("sink").expect("the fakesink");
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    sink.connect("handoff", false, move |_| {
        let _ = tx.try_send(());
        None
    });
    let started = Instant::now();
    pipeline
        .set_state(gst::State::Playing)
        .expect("pipeline to PLAYING");
    let bus = pipeline.bus().expect("bus");
    let mut warnings = Vec::new();
    let deadline = started + Duration::from_secs(15);
    let took = loop {
        if rx.try_recv().is_ok() {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no buffer from {url} over {protocols} within 15 s; warnings {warnings:?}"
        );
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(10)) {
            match msg.view() {
                gst::MessageView::Warning(w) => warnings.push(format!(
                    "{} {}",
                    w.error(),
                    w.debug().map(|d| d.to_string()).unwrap_or_default()
                )),
                gst::MessageView::Error(e) => panic!("rtspsrc failed: {}", e.error()),
                _ => {}
            }
        }
    };
    pipeline
        .set_state(gst::State::Null)
        .expect("pipeline to NULL");
    (took, warnings)
}

/// The cause of the 3.1 s session starts: rtspsrc's own `tcp+udp+udp-mcast` order tries
/// UDP first; when UDP brings nothing it waits out its whole `timeout` (3 s), posts a
/// warning (which the appliance's bus handler dropped) and re-opens over TCP. 3 s plus a
/// normal session start is the 3.1 s of the issue. The same rtspsrc straight to the
/// camera (UDP gets through) or over TCP alone starts in a fraction of a second.
#[test]
fn rtspsrc_auto_waits_out_its_udp_timeout_when_udp_brings_nothing() {
    let _h = heavy();
    let sim = Sim::simple("640x360", 30);
    let relay = Relay::start(sim.rtsp_port, RelayMode::SwallowUdp);
    let via_relay = format!("rtsp://127.0.0.1:{}/1", relay.port);

    let (direct, _) = rtspsrc_first_buffer(&sim.urls[0], "tcp+udp+udp-mcast");
    let (tcp, _) = rtspsrc_first_buffer(&via_relay, "tcp");
    let (stalled, warnings) = rtspsrc_first_buffer(&via_relay, "tcp+udp+udp-mcast");
    eprintln!(
        "rtspsrc first buffer: auto, UDP gets through {direct:?}; TCP through the relay \
         {tcp:?}; auto, UDP swallowed {stalled:?} (warnings {warnings:?})"
    );
    assert!(
        direct < Duration::from_secs(1) && tcp < Duration::from_secs(1),
        "a normal session start takes {direct:?} (auto, UDP gets through) and {tcp:?} (TCP)"
    );
    assert!(
        stalled >= Duration::from_secs(3),
        "rtspsrc started in {stalled:?} although UDP brought nothing: not the 3 s UDP timeout"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("Could not receive any UDP packets")),
        "no UDP-timeout warning from rtspsrc: {warnings:?}"
    );
}

/// Waits for the appliance's "streaming over X (N ms to first packet: ...)" line number
/// `nth` (1-based) and returns X and N.
fn streaming_line(app: &Appliance, nth: usize) -> (String, u64) {
    wait_for(
        Duration::from_secs(15),
        "a 'streaming over' log line",
        || {
            let log = app.proc.log_text();
            let line = log
                .lines()
                .filter(|l| l.contains(": streaming over "))
                .nth(nth - 1)
                .ok_or_else(|| format!("{} such lines", log.matches(": streaming over ").count()))?
                .to_owned();
            let after = line
                .split(": streaming over ")
                .nth(1)
                .ok_or("no transport")?;
            let transport = after.split_whitespace().next().unwrap_or("").to_owned();
            let ms = after
                .split('(')
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("no figure in {line:?}"))?;
            Ok((transport, ms))
        },
    )
}

fn connect_via(app: &Appliance, port: u16, transport: &str) -> (u16, String) {
    let r = app.connect(&json!({
        "cameraId": CAM,
        "ip": "127.0.0.1",
        "port": port,
        "streamPath": "/1",
        "username": "",
        "password": "",
        "transport": transport,
    }));
    (r.status, r.text())
}

/// The fix, in front of the same camera whose UDP gets nowhere: `auto` streams over TCP
/// with its first packet well within 0.5 s (no UDP attempt at all); `udp` gives up at
/// the first-RTP bound, and `lastError` says which step did not finish.
#[test]
fn auto_starts_over_tcp_and_udp_that_brings_nothing_ends_at_its_bound() {
    let _h = heavy();
    let sim = Sim::simple("640x360", 30);
    let relay = Relay::start(sim.rtsp_port, RelayMode::SwallowUdp);
    let app = Appliance::start(&[]);

    let started = Instant::now();
    let (status, text) = connect_via(&app, relay.port, "auto");
    let took = started.elapsed();
    assert_eq!(status, 200, "connect (auto): {text}");
    let (transport, ms) = streaming_line(&app, 1);
    eprintln!("auto through the UDP-swallowing relay: {transport}, first packet {ms} ms, connect {took:?}");
    assert_eq!(transport, "TCP");
    assert!(
        ms < 1500,
        "first packet after {ms} ms over TCP (limit 1.5 s; the bug took 3.1 s)"
    );
    assert!(
        !app.proc.log_text().contains("over UDP"),
        "auto tried UDP although TCP streamed:\n{}",
        app.proc.log_text()
    );
    assert_eq!(app.disconnect(CAM).status, 200);

    // A camera that fails its first session is reported by connect at once (502) with
    // the reason, here the step that did not finish.
    let started = Instant::now();
    let (status, text) = connect_via(&app, relay.port, "udp");
    let failed_after = started.elapsed();
    eprintln!("udp through the relay: connect {status} after {failed_after:?}: {text}");
    assert_eq!(status, 502, "connect over UDP that brings nothing: {text}");
    assert!(
        text.contains("no RTP over UDP within 2.0 s of PLAY"),
        "the reason does not name the step: {text}"
    );
    assert!(
        failed_after < Duration::from_secs(4),
        "the failed UDP session took {failed_after:?} to end (bound 2 s after PLAY)"
    );
}

/// A camera that accepts the connection and never answers (hung firmware): the session
/// ends at the DESCRIBE bound, and connect says so, instead of waiting behind the stale
/// handshake.
#[test]
fn a_camera_that_never_answers_ends_at_the_describe_bound() {
    let (port, accepted) = silent_server();
    let app = Appliance::start(&[]);
    let started = Instant::now();
    let (status, text) = connect_via(&app, port, "auto");
    let took = started.elapsed();
    eprintln!("silent camera: connect {status} after {took:?}: {text}");
    assert!(
        accepted.recv_timeout(Duration::from_secs(1)).is_ok(),
        "the appliance never connected"
    );
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("the camera did not answer DESCRIBE within 2.0 s"),
        "the reason does not name the step: {text}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "connect answered after {took:?} (DESCRIBE bound 2 s)"
    );
}

/// `auto` in front of a camera that refuses TCP transport (461 to SETUP): the first
/// session fails at SETUP, the next one goes over UDP at once and streams, and after the
/// camera reboots the appliance goes straight to UDP (it remembered what worked).
#[test]
fn auto_moves_to_udp_when_the_camera_refuses_tcp_and_keeps_it() {
    let _h = heavy();
    let mut sim = Sim::simple("640x360", 30);
    let port = sim.rtsp_port.to_string();
    let relay = Relay::start(sim.rtsp_port, RelayMode::RefuseTcp);
    let app = Appliance::start(&[]);
    let started = Instant::now();
    let (status, text) = connect_via(&app, relay.port, "auto");
    assert_eq!(status, 200, "connect (auto, TCP refused): {text}");
    let (transport, ms) = streaming_line(&app, 1);
    eprintln!(
        "auto, TCP refused: streaming over {transport} (first packet {ms} ms), connect took {:?}",
        started.elapsed()
    );
    assert_eq!(transport, "UDP");
    let log = app.proc.log_text();
    assert_eq!(
        log.matches("next over UDP").count(),
        1,
        "one switch to UDP expected:\n{log}"
    );

    sim.proc.signal(libc::SIGKILL);
    assert!(sim.proc.wait_exit(Duration::from_secs(5)).is_some());
    wait_until(Duration::from_secs(10), "the camera to reconnect", || {
        app.status(CAM)["state"] == "reconnecting"
    });
    let _back = Sim::start(&[
        "--port", &port, "--path", "/1", "--size", "640x360", "--fps", "30",
    ]);
    let (transport, ms) = streaming_line(&app, 2);
    eprintln!("after the reboot: streaming over {transport} (first packet {ms} ms)");
    assert_eq!(transport, "UDP", "the reconnect did not remember UDP");
    let log = app.proc.log_text();
    assert_eq!(
        log.matches("next over").count(),
        1,
        "the reconnect tried TCP again:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Reboots

/// xorshift64*: a seeded sequence, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration in `lo..=hi`, in whole milliseconds.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64 + 1;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// The next frame that the appliance captured at or after `since_unix`, skipping older
/// frames and status pushes.
fn fresh_frame(ws: &mut Ws, since_unix: f64, timeout: Duration) -> Result<WsFrame, String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| format!("no fresh frame within {timeout:?}; seen {seen:?}"))?;
        match ws.recv(left) {
            Some(WsIn::Closed(c)) => return Err(format!("the subscriber was closed: {c:?}")),
            Some(m) => match as_frame(&m) {
                Some(f) if f.timestamp >= since_unix => return Ok(f),
                Some(_) => {}
                None => {
                    if let WsIn::Json(v) = &m {
                        seen.push(format!("{} {}", v["type"], v["state"]));
                    }
                }
            },
            None => {}
        }
    }
}

/// Reads (and drops) whatever the subscriber gets for `d`, so it never looks like a
/// viewer that stopped reading.
fn drain(ws: &mut Ws, d: Duration) {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(WsIn::Closed(c)) = ws.recv(left) {
            panic!("the subscriber was closed during an outage: {c:?}");
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// `REBOOTS` kill -9 / restart cycles of the simulator on the same port with outages of
/// 1–10 s; returns how long after each restart (the new simulator listening) a fresh
/// picture reached a subscriber.
fn reboots(transport: &str) -> Vec<Duration> {
    let mut rng = Rng(SEED);
    let mut sim = Sim::simple("640x360", 30);
    let port = sim.rtsp_port.to_string();
    let app = Appliance::start(&[]);
    let mut body = connect_body(CAM, &sim, "/1");
    body["transport"] = Value::from(transport);
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect over {transport}: {}", r.text());
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 15}));
    fresh_frame(&mut ws, 0.0, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));

    let mut back = Vec::with_capacity(REBOOTS);
    for run in 1..=REBOOTS {
        let outage = rng.between(Duration::from_secs(1), Duration::from_secs(10));
        sim.proc.signal(libc::SIGKILL);
        assert!(
            sim.proc.wait_exit(Duration::from_secs(5)).is_some(),
            "camera-sim survived SIGKILL"
        );
        drain(&mut ws, outage);
        sim = Sim::start(&[
            "--port", &port, "--path", "/1", "--size", "640x360", "--fps", "30",
        ]);
        let listening = Instant::now();
        let listening_unix = unix_now();
        let frame = fresh_frame(&mut ws, listening_unix, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("run {run} over {transport} (outage {outage:?}): {e}"));
        let took = frame.received.duration_since(listening);
        let (w, h, code) = jpeg_code(&frame.jpeg);
        assert_eq!((w, h), (640, 360), "run {run}");
        let age = code_age_ms(&code);
        assert!(age < 1000, "run {run}: the first picture is {age} ms old");
        eprintln!(
            "{transport} run {run:2}: outage {:5} ms, pictures again after {:4} ms",
            outage.as_millis(),
            took.as_millis()
        );
        back.push(took);
    }
    let log = app.proc.log_text();
    let over = format!("streaming over {}", transport.to_ascii_uppercase());
    let sessions = log.matches(": streaming over ").count();
    assert_eq!(
        log.matches(&over).count(),
        sessions,
        "a session used another transport than {transport}"
    );
    assert!(
        sessions > REBOOTS,
        "{sessions} sessions for {REBOOTS} reboots"
    );
    back
}

fn report(transport: &str, back: &[Duration]) {
    let mut sorted = back.to_vec();
    sorted.sort();
    let p50 = percentile(&sorted, 0.5);
    let max = *sorted.last().expect("runs");
    eprintln!(
        "reboots over {transport}: {} runs, pictures again p50 {} ms, max {} ms (limit {} ms)",
        back.len(),
        p50.as_millis(),
        max.as_millis(),
        BACK_WITHIN.as_millis()
    );
    let slow: Vec<(usize, u128)> = back
        .iter()
        .enumerate()
        .filter(|(_, d)| **d > BACK_WITHIN)
        .map(|(i, d)| (i + 1, d.as_millis()))
        .collect();
    assert!(
        slow.is_empty(),
        "over {transport}, runs (number, ms) past {BACK_WITHIN:?}: {slow:?}"
    );
}

/// Issue 14: 20 reboots over TCP, pictures again within 2 s of the simulator accepting
/// connections in every run.
#[test]
fn reboots_20_times_over_tcp() {
    let _h = heavy();
    let back = reboots("tcp");
    report("tcp", &back);
}

/// Issue 14: 20 reboots over UDP, pictures again within 2 s of the simulator accepting
/// connections in every run.
#[test]
fn reboots_20_times_over_udp() {
    let _h = heavy();
    let back = reboots("udp");
    report("udp", &back);
}
