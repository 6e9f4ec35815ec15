//! WebSocket viewers (`/ws`, RFC 6455 via tungstenite).
//!
//! Each socket has a reader thread (`ws-{n}`), which owns tungstenite's protocol state
//! (control frames, fragmentation, close handshake, limits) and parses the app's
//! actions, and a writer thread (`wstx-{n}`), which paces and sends frames and replies.
//! Both write through one mutex that writes whole frames, so their bytes never
//! interleave; neither waits for the other. A viewer that cannot keep up only skips its
//! own frames: the writer always takes the newest picture when it is ready to send.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use crossbeam_channel::{never, select, Receiver, Sender};
use parking_lot::Mutex;
use serde_json::json;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::error::ApiError;
use super::messages::{self, ClientMessage, SubscribeRequest};
use super::pace::Pacer;
use super::request::{error, Reply, Request};
use super::sessions::Kind;
use super::status;
use super::Ctx;
use crate::camera::feed::Via;
use crate::camera::{CameraState, CameraStatus, JpegParams, Viewer};
use crate::clock::unix_now;
use crate::fleet::FleetError;

/// Sent when the socket has been quiet this long, to keep NATs and proxies open.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A client silent this long (no message, no pong) is gone.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How often blocked reads and waits look at the shutdown flag.
const POLL: Duration = Duration::from_millis(250);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Answers the upgrade request (RFC 6455 §4.2) and hands the socket to a session.
pub fn upgrade(req: &Request, ctx: &Arc<Ctx>) -> Reply {
    if !req.header_has_token("Upgrade", "websocket")
        || !req.header_has_token("Connection", "upgrade")
    {
        return error(426, "WebSocket upgrade expected on /ws");
    }
    if req.header("Sec-WebSocket-Version") != Some("13") {
        return match error(426, "WebSocket version 13 is required") {
            Reply::Response(r) => Reply::Response(
                r.with_header(super::request::header("Sec-WebSocket-Version", "13"))
                    .boxed(),
            ),
            other => other,
        };
    }
    let key = req.header("Sec-WebSocket-Key").unwrap_or("").to_owned();
    let nonce_ok = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|k| k.len() == 16);
    if !nonce_ok {
        return error(400, "Sec-WebSocket-Key must be 16 bytes in base64");
    }
    let Some(place) = ctx.sessions.reserve(Kind::WebSocket) else {
        return error(503, "Too many WebSocket connections");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let ctx = Arc::clone(ctx);
    let peer = req.peer;
    Reply::Takeover(Box::new(move |mut stream: TcpStream, leftover: Vec<u8>| {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let sctx = Arc::clone(&ctx);
        let socket = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        let spawned = ctx
            .sessions
            .spawn(place, format!("ws-{n}"), &socket, move || {
                run(stream, leftover, sctx, peer, n)
            });
        if let Err(e) = spawned {
            log::warn!("{peer}: cannot start a WebSocket session: {e}");
        }
    }))
}

/// The writing half shared by both threads: whole frames under one lock.
struct Wire {
    stream: Mutex<TcpStream>,
    /// When the client was last heard from (any frame, pongs included).
    heard: Mutex<Instant>,
    /// Set once a Close frame was received or sent: no data frame may follow.
    closing: AtomicBool,
    /// The longest one frame may take to go out.
    write_timeout: Duration,
}

/// `write_all` that fails with `TimedOut` once `deadline` has passed.
fn write_all_by(s: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "viewer too slow"));
        }
        s.set_write_timeout(Some(left))?;
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Wire {
    /// Writes one whole frame; returns the bytes written (header and payload).
    fn send(&self, opcode: OpCode, payload: &[&[u8]]) -> io::Result<usize> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let mut head = Vec::with_capacity(14);
        header
            .format(len as u64, &mut head)
            .map_err(io::Error::other)?;
        let mut s = self.stream.lock();
        if self.closing.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "closing"));
        }
        // One deadline for the whole frame: the socket's write timeout alone restarts
        // with every partial write, so a viewer draining a trickle could hold us forever.
        let deadline = Instant::now() + self.write_timeout;
        write_all_by(&mut s, &head, deadline)?;
        for p in payload {
            write_all_by(&mut s, p, deadline)?;
        }
        Ok(head.len() + len)
    }

    fn send_text(&self, text: &str) -> io::Result<usize> {
        self.send(OpCode::Data(Data::Text), &[text.as_bytes()])
    }
}

/// The stream tungstenite's reader uses: reads from its own handle, writes (pongs, close
/// replies) whole under the shared lock.
struct ReaderStream {
    read: TcpStream,
    wire: Arc<Wire>,
}

impl Read for ReaderStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl Write for ReaderStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wire.stream.lock().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.wire.stream.lock().flush()
    }
}

/// What the reader asks the writer to do.
enum Out {
    Text(String),
    Subscribe(Box<Subscription>),
    Unsubscribe,
    /// Change events of these cameras (none: stop).
    Watch(Vec<String>),
    Close(CloseCode, &'static str),
}

struct Subscription {
    camera_id: String,
    viewer: Viewer,
    pacer: Pacer,
    binary: bool,
    params: JpegParams,
}

fn run(stream: TcpStream, leftover: Vec<u8>, ctx: Arc<Ctx>, peer: SocketAddr, n: u64) {
    let limits = &ctx.config.limits;
    super::sessions::tune_viewer_socket(&stream);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let wire = Arc::new(Wire {
        stream: Mutex::new(write_half),
        heard: Mutex::new(Instant::now()),
        closing: AtomicBool::new(false),
        write_timeout: limits.write_timeout,
    });
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_ws_message_bytes))
        .max_frame_size(Some(limits.max_ws_message_bytes));
    let mut ws = WebSocket::from_partially_read(
        ReaderStream {
            read: stream,
            wire: Arc::clone(&wire),
        },
        leftover,
        Role::Server,
        Some(config),
    );
    log::debug!("{peer}: WebSocket open");
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Out>(64);
    let wctx = Arc::clone(&ctx);
    let wwire = Arc::clone(&wire);
    let writer = match std::thread::Builder::new()
        .name(format!("wstx-{n}"))
        .spawn(move || writer(out_rx, wwire, wctx))
    {
        Ok(h) => h,
        Err(e) => {
            log::warn!("{peer}: cannot start a WebSocket writer: {e}");
            return;
        }
    };

    let last_heard = || wire.heard.lock().elapsed();
    loop {
        if ctx.shutdown.load(Ordering::SeqCst) && wire.closing.load(Ordering::SeqCst) {
            // The writer sent our Close; give the peer a moment to answer, then go.
            if last_heard() > Duration::from_secs(1) {
                break;
            }
        }
        match ws.read() {
            Ok(msg) => {
                *wire.heard.lock() = Instant::now();
                match msg {
                    Message::Text(t) => {
                        if !handle_text(t.as_str(), &ctx, &out_tx) {
                            break;
                        }
                    }
                    Message::Binary(_) => {
                        let _ = out_tx.try_send(Out::Text(error_msg(
                            "binary messages are not understood; send JSON text",
                        )));
                    }
                    Message::Close(_) => {
                        // tungstenite queues the reply; the next read() sends it.
                        wire.closing.store(true, Ordering::SeqCst);
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            Err(tungstenite::Error::Io(e)) if super::request::is_timeout(&e) => {
                // The writer gave up (a write timed out): nothing can be sent any more.
                if writer.is_finished() {
                    break;
                }
                if last_heard() > IDLE_LIMIT {
                    log::debug!("{peer}: WebSocket idle for too long");
                    let _ = out_tx
                        .send_timeout(Out::Close(CloseCode::Away, "idle"), Duration::from_secs(1));
                    break;
                }
            }
            Err(tungstenite::Error::Capacity(e)) => {
                log::debug!("{peer}: WebSocket message too large: {e}");
                let _ = out_tx.send_timeout(
                    Out::Close(CloseCode::Size, "message too large"),
                    Duration::from_secs(1),
                );
                break;
            }
            Err(tungstenite::Error::Utf8(_)) => {
                let _ = out_tx.send_timeout(
                    Out::Close(CloseCode::Invalid, "invalid UTF-8"),
                    Duration::from_secs(1),
                );
                break;
            }
            Err(tungstenite::Error::Protocol(e)) => {
                log::debug!("{peer}: WebSocket protocol error: {e}");
                let _ = out_tx.send_timeout(
                    Out::Close(CloseCode::Protocol, "protocol error"),
                    Duration::from_secs(1),
                );
                break;
            }
            Err(_) => break, // closed, reset, or a close handshake completed
        }
    }
    drop(out_tx);
    if writer.join().is_err() {
        log::error!("{peer}: WebSocket writer panicked");
    }
    let _ = wire.stream.lock().shutdown(std::net::Shutdown::Both);
    log::debug!("{peer}: WebSocket closed");
}

fn error_msg(message: &str) -> String {
    json!({"type": "error", "message": message}).to_string()
}

/// Acts on one client message; false when the socket should close.
fn handle_text(text: &str, ctx: &Arc<Ctx>, out: &Sender<Out>) -> bool {
    let reply = |o: Out| out.send_timeout(o, Duration::from_secs(1)).is_ok();
    match messages::parse(text) {
        Err(e) => reply(Out::Text(error_msg(&e.to_string()))),
        Ok(ClientMessage::Ping) => reply(Out::Text(json!({"type": "pong"}).to_string())),
        Ok(ClientMessage::Unsubscribe) => reply(Out::Unsubscribe),
        Ok(ClientMessage::Watch { camera_ids }) => {
            let missing: Vec<&String> = camera_ids
                .iter()
                .filter(|id| ctx.fleet.camera(id).is_none())
                .collect();
            if let Some(id) = missing.first() {
                return reply(Out::Text(error_msg(&format!(
                    "watch: Camera {id} not found"
                ))));
            }
            // Cameras whose watching is off send no events until it is turned on.
            let off: Vec<&String> = camera_ids
                .iter()
                .filter(|id| {
                    ctx.fleet
                        .camera(id)
                        .is_some_and(|c| c.watch_config().is_none())
                })
                .collect();
            let ack = json!({"type": "watching", "cameraIds": camera_ids, "watchOff": off});
            reply(Out::Text(ack.to_string())) && reply(Out::Watch(camera_ids))
        }
        Ok(ClientMessage::Unwatch) => {
            let ack = json!({"type": "watching", "cameraIds": [], "watchOff": []});
            reply(Out::Watch(Vec::new())) && reply(Out::Text(ack.to_string()))
        }
        Ok(ClientMessage::Subscribe(req)) => match subscription(req, ctx) {
            Ok(sub) => reply(Out::Subscribe(Box::new(sub))),
            Err(e) => reply(Out::Text(error_msg(&e.to_string()))),
        },
        Ok(ClientMessage::Ptz { camera_id, command }) => reply(Out::Text(
            super::ptz::ws_command(&ctx.fleet, &camera_id, &command).to_string(),
        )),
    }
}

fn subscription(req: SubscribeRequest, ctx: &Ctx) -> Result<Subscription, ApiError> {
    let camera = ctx
        .fleet
        .camera(&req.camera_id)
        .ok_or_else(|| FleetError::NotFound(req.camera_id.clone()))?;
    let viewer = camera.watch();
    Ok(Subscription {
        camera_id: req.camera_id,
        viewer,
        pacer: Pacer::new(req.fps),
        binary: req.binary,
        params: req.params,
    })
}

fn writer(out_rx: Receiver<Out>, wire: Arc<Wire>, ctx: Arc<Ctx>) {
    let events = ctx.fleet.events().subscribe();
    let changes = ctx.fleet.events().subscribe_changes();
    let mut watching: Vec<String> = Vec::new();
    let mut sub: Option<Subscription> = None;
    let mut last_ping = Instant::now();
    loop {
        let wake = sub
            .as_ref()
            .map(|s| s.viewer.wakeups().clone())
            .unwrap_or_else(never);
        let result: io::Result<bool> = select! {
            recv(out_rx) -> m => match m {
                Ok(Out::Text(t)) => wire.send_text(&t).map(|_| true),
                Ok(Out::Subscribe(s)) => {
                    sub = Some(*s);
                    Ok(true)
                }
                Ok(Out::Unsubscribe) => {
                    sub = None;
                    Ok(true)
                }
                Ok(Out::Watch(ids)) => {
                    watching = ids;
                    Ok(true)
                }
                Ok(Out::Close(code, reason)) => {
                    close(&wire, code, reason);
                    Ok(false)
                }
                Err(_) => Ok(false),
            },
            recv(wake) -> _ => Ok(true),
            recv(events) -> ev => match ev {
                Ok(status) => on_status(&wire, &mut sub, &status, &ctx),
                Err(_) => Ok(true),
            },
            recv(changes) -> ev => match ev {
                Ok(ev) if sub.as_ref().is_some_and(|s| s.camera_id == ev.camera_id)
                    || watching.contains(&ev.camera_id) =>
                {
                    wire.send_text(&super::status::change(&ev).to_string()).map(|_| true)
                }
                _ => Ok(true),
            },
            default(POLL) => Ok(true),
        };
        match result {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
        if ctx.shutdown.load(Ordering::SeqCst) {
            close(&wire, CloseCode::Away, "server shutting down");
            break;
        }
        if let Some(s) = &mut sub {
            if send_frame_if_due(&wire, s).is_err() {
                break;
            }
        }
        // Ping a client that has been quiet (a passive viewer sends nothing), so a dead
        // one is noticed and a live one is never closed for idling.
        if wire.heard.lock().elapsed() > PING_EVERY && last_ping.elapsed() > PING_EVERY {
            if wire
                .send(
                    OpCode::Control(tungstenite::protocol::frame::coding::Control::Ping),
                    &[b"ka"],
                )
                .is_err()
            {
                break;
            }
            last_ping = Instant::now();
        }
    }
    // However the writer ended (client gone, write timeout of a stalled viewer, close
    // sent), the reader must not wait for more: end its blocked read now.
    wire.closing.store(true, Ordering::SeqCst);
    let _ = wire.stream.lock().shutdown(std::net::Shutdown::Both);
}

fn close(wire: &Wire, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let mut payload = u16::from(frame.code).to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    let _ = wire.send(
        OpCode::Control(tungstenite::protocol::frame::coding::Control::Close),
        &[&payload],
    );
    wire.closing.store(true, Ordering::SeqCst);
}

/// A state change of some camera: tell the client if it is the one it watches, and
/// follow the id to its new feed if it was connected anew.
fn on_status(
    wire: &Wire,
    sub: &mut Option<Subscription>,
    status: &CameraStatus,
    ctx: &Ctx,
) -> io::Result<bool> {
    let Some(s) = sub else {
        return Ok(true);
    };
    if s.camera_id != status.id {
        return Ok(true);
    }
    if status.state != CameraState::Stopped {
        if let Some(cam) = ctx.fleet.camera(&s.camera_id) {
            if !s.viewer.watches(&cam.feed) {
                s.viewer = cam.watch();
                s.pacer.reset();
            }
        }
    }
    let v = super::status::push(&ctx.fleet.view_of(status.clone()));
    wire.send_text(&v.to_string()).map(|_| true)
}

/// Sends the newest picture if it is new to this viewer and the pace allows.
fn send_frame_if_due(wire: &Wire, s: &mut Subscription) -> io::Result<bool> {
    let Some(frame) = s.viewer.feed().latest() else {
        return Ok(false);
    };
    if !s.pacer.offer(frame.seq, Instant::now()) {
        return Ok(false);
    }
    let jpeg = match s.viewer.feed().jpeg.get(&frame, s.params) {
        Ok(j) => j,
        Err(e) => {
            log::warn!("{}: JPEG encoding failed: {e}", s.camera_id);
            return Ok(false);
        }
    };
    // How old the picture is (seconds since its packet arrived) as it goes out.
    let age = ((unix_now() - jpeg.captured).max(0.0) * 1000.0).round() / 1000.0;
    let sent = if s.binary {
        let mut header = json!({
            "cameraId": s.camera_id,
            "timestamp": jpeg.captured,
            "seq": jpeg.seq,
            "width": jpeg.width,
            "height": jpeg.height,
            "age": age,
        });
        if let Some(c) = s.params.crop {
            header["crop"] = status::crop_field(c);
        }
        let header = header.to_string();
        let len = (header.len() as u16).to_be_bytes();
        wire.send(
            OpCode::Data(Data::Binary),
            &[&len, header.as_bytes(), &jpeg.data],
        )?
    } else {
        let id = serde_json::to_string(&s.camera_id).expect("strings serialise");
        // Only a subscription with a crop gets the field: without one, the contract's
        // frame message exactly.
        let crop = s
            .params
            .crop
            .map(|c| format!(r#","crop":{}"#, status::crop_field(c)))
            .unwrap_or_default();
        let text = format!(
            r#"{{"type":"frame","cameraId":{id},"data":"{}","timestamp":{},"seq":{},"width":{},"height":{},"age":{}{crop}}}"#,
            jpeg.base64(),
            json!(jpeg.captured),
            jpeg.seq,
            jpeg.width,
            jpeg.height,
            json!(age)
        );
        wire.send_text(&text)?
    };
    s.viewer
        .feed()
        .sent
        .record(Via::WebSocket, sent, jpeg.captured);
    Ok(true)
}
