//! Viewers: one receiving thread each (WebSocket text / binary, MJPEG, or a direct
//! GStreamer client of the simulator), which only stamps the arrival time and hands the
//! message on; a second, low-priority (nice 19) thread per viewer decodes the JPEG and
//! reads the barcode, off the receive path's timing.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use ptz_edge::sim::barcode::{self, FrameCode};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::kit::http::Mjpeg;
use crate::kit::pictures::read_code;
use crate::kit::ws::{Ws, WsFrame};

/// Frames waiting for the decoder beyond this are not decoded (counted as backlog).
const BACKLOG: usize = 240;
/// A viewer that receives nothing for this long gives up.
const STALL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    WsText,
    WsBinary,
    Mjpeg,
    /// rtspsrc → depay → avdec_h264 → appsink straight from the simulator.
    Direct,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::WsText => "ws-text",
            Kind::WsBinary => "ws-binary",
            Kind::Mjpeg => "mjpeg",
            Kind::Direct => "gst-direct",
        }
    }
}

/// What a viewer asks for.
#[derive(Clone, Debug)]
pub struct Spec {
    pub kind: Kind,
    pub camera_id: String,
    pub fps: f64,
    /// `width` parameter (None: the appliance's default size).
    pub width: Option<u32>,
    /// For [`Kind::Direct`]: the RTSP URL.
    pub url: String,
}

/// One received picture, after decoding.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub at_ms32: u32,
    /// Bytes of the message on the wire (payload of the WS message, or MJPEG part).
    pub bytes: usize,
    pub code: Option<FrameCode>,
    /// The appliance's `seq`, where the message carries one.
    pub seq: Option<u64>,
    /// Why there is no code (malformed message, JPEG error, no barcode, backlog).
    pub problem: Option<String>,
}

enum Payload {
    Text(tungstenite::Utf8Bytes),
    Binary(tungstenite::Bytes),
    Jpeg(Vec<u8>, Option<u64>),
    Decoded(Option<FrameCode>, Option<String>),
}

struct Arrival {
    at: Instant,
    at_ms32: u32,
    bytes: usize,
    payload: Payload,
}

/// The decoder's answer for arrival number `.0`: (code, seq, problem).
type Decoded = (usize, Option<FrameCode>, Option<u64>, Option<String>);

/// What the receiving thread logs for every message: (arrival, arrival ms32, bytes).
type Log = Vec<(Instant, u32, usize)>;

/// What a stopped viewer hands back.
pub struct Outcome {
    pub label: String,
    pub samples: Vec<Sample>,
    /// Set when the receiving thread ended before it was asked to (connection lost...).
    pub error: Option<String>,
    /// Other messages (status, pong, errors) received.
    pub other_messages: u64,
    /// Arrivals the decoder had not got to when we stopped waiting for it.
    pub undecoded: usize,
}

pub struct Viewer {
    pub label: String,
    stop: Arc<AtomicBool>,
    /// Set once receiving has stopped: the decoder drops its nice-19 priority.
    boost: Arc<AtomicBool>,
    socket: Option<TcpStream>,
    received: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    rx_thread: Option<JoinHandle<(Log, Result<(), String>)>>,
    results: Receiver<Vec<Decoded>>,
    log: Log,
    error: Option<String>,
}

impl Viewer {
    /// Connects and subscribes (errors here are returned at once), then receives on its
    /// own thread until [`Viewer::halt`]; [`Viewer::collect`] gathers the results.
    pub fn start(n: usize, spec: &Spec, addr: Option<SocketAddr>) -> Result<Viewer, String> {
        let label = format!("{}#{n}:{}", spec.kind.label(), spec.camera_id);
        let stop = Arc::new(AtomicBool::new(false));
        let boost = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let other = Arc::new(AtomicU64::new(0));
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Payload)>(BACKLOG);
        let (res_tx, results) = crossbeam_channel::bounded(1);
        let dec_boost = Arc::clone(&boost);
        thread::Builder::new()
            .name(format!("bench-dec-{n}"))
            .spawn(move || decoder(rx, res_tx, dec_boost))
            .map_err(|e| e.to_string())?;

        let mut ctx = RxCtx {
            tx,
            log: Vec::with_capacity(4096),
            stop: Arc::clone(&stop),
            received: Arc::clone(&received),
            other: Arc::clone(&other),
        };
        type Body = Box<dyn FnOnce(&mut RxCtx) -> Result<(), String> + Send>;
        let (socket, body): (Option<TcpStream>, Body) = match spec.kind {
            Kind::WsText | Kind::WsBinary => {
                let addr = addr.ok_or("no appliance address")?;
                let ws = ws_connect(addr, spec)?;
                (Some(ws.raw_stream()), Box::new(move |ctx| ws_loop(ws, ctx)))
            }
            Kind::Mjpeg => {
                let addr = addr.ok_or("no appliance address")?;
                let mut path = format!("/api/cameras/{}/mjpeg?fps={}", spec.camera_id, spec.fps);
                if let Some(w) = spec.width {
                    path.push_str(&format!("&width={w}"));
                }
                let m = Mjpeg::try_open(addr, &path, STALL)?;
                let clone = m.stream().map_err(|e| e.to_string())?;
                (Some(clone), Box::new(move |ctx| mjpeg_loop(m, ctx)))
            }
            Kind::Direct => {
                let client = direct::Client::play(&spec.url)?;
                (None, Box::new(move |ctx| client.run(ctx)))
            }
        };
        let rx_thread = thread::Builder::new()
            .name(format!("bench-rx-{n}"))
            .spawn(move || {
                let r = body(&mut ctx);
                (std::mem::take(&mut ctx.log), r)
            })
            .map_err(|e| e.to_string())?;
        Ok(Viewer {
            label,
            stop,
            boost,
            socket,
            received,
            other,
            rx_thread: Some(rx_thread),
            results,
            log: Vec::new(),
            error: None,
        })
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whether the receiving thread has ended on its own.
    pub fn ended(&self) -> bool {
        self.rx_thread.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops receiving (idempotent); the decoder goes on with its backlog.
    pub fn halt(&mut self) {
        let Some(h) = self.rx_thread.take() else {
            return;
        };
        let ended_early = h.is_finished();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = &self.socket {
            let _ = s.shutdown(Shutdown::Both);
        }
        match h.join() {
            Ok((log, r)) => {
                self.log = log;
                if ended_early {
                    self.error = r.err();
                }
            }
            Err(_) => self.error = Some("receiving thread panicked".to_owned()),
        }
        self.boost.store(true, Ordering::SeqCst);
    }

    /// Halts, then waits until `deadline` for the decoder to finish its backlog.
    pub fn collect(mut self, deadline: Instant) -> Outcome {
        self.halt();
        let left = deadline.saturating_duration_since(Instant::now());
        let decoded = self.results.recv_timeout(left).unwrap_or_default();
        let mut samples: Vec<Sample> = self
            .log
            .iter()
            .map(|&(at, at_ms32, bytes)| Sample {
                at,
                at_ms32,
                bytes,
                code: None,
                seq: None,
                problem: Some("not decoded (decoder behind)".into()),
            })
            .collect();
        let mut undecoded = samples.len();
        for (i, code, seq, problem) in decoded {
            if let Some(s) = samples.get_mut(i) {
                undecoded -=
                    usize::from(s.problem.as_deref() == Some("not decoded (decoder behind)"));
                (s.code, s.seq, s.problem) = (code, seq, problem);
            }
        }
        Outcome {
            label: self.label.clone(),
            samples,
            error: self.error.take(),
            other_messages: self.other.load(Ordering::Relaxed),
            undecoded,
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the receiving thread needs.
struct RxCtx {
    tx: Sender<(usize, Payload)>,
    log: Log,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
}

impl RxCtx {
    /// Logs an arrival and hands it to the decoder; never blocks the receive path (a
    /// full backlog leaves the arrival undecoded).
    fn push(&mut self, a: Arrival) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let i = self.log.len();
        self.log.push((a.at, a.at_ms32, a.bytes));
        // Full: the arrival stays "not decoded" (it still counts for fps and bytes).
        let _ = self.tx.try_send((i, a.payload));
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

fn stamp() -> (Instant, u32) {
    (Instant::now(), barcode::now_ms32())
}

// ---------------------------------------------------------------- WebSocket

/// Connects with the kit's client and subscribes; reads then wait up to [`STALL`].
fn ws_connect(addr: SocketAddr, spec: &Spec) -> Result<Ws, String> {
    let mut ws = Ws::try_connect(addr, "/ws").map_err(|e| format!("WS connect {addr}: {e}"))?;
    let mut sub = serde_json::json!({
        "action": "subscribe",
        "cameraId": spec.camera_id,
        "fps": spec.fps,
        "binary": spec.kind == Kind::WsBinary,
    });
    if let Some(w) = spec.width {
        sub["width"] = w.into();
    }
    ws.try_send(&sub)
        .map_err(|e| format!("WS subscribe: {e}"))?;
    // The stall guard: the appliance streams continuously once subscribed.
    ws.set_read_timeout(STALL).map_err(|e| e.to_string())?;
    Ok(ws)
}

fn ws_loop(mut ws: Ws, ctx: &mut RxCtx) -> Result<(), String> {
    loop {
        let msg = ws.read_message();
        let (at, at_ms32) = stamp();
        if ctx.stopping() {
            return Ok(());
        }
        let msg = msg.map_err(|e| format!("WS read: {e}"))?;
        let (bytes, payload) = match msg {
            tungstenite::Message::Text(t) => (t.len(), Payload::Text(t)),
            tungstenite::Message::Binary(b) => (b.len(), Payload::Binary(b)),
            tungstenite::Message::Close(c) => return Err(format!("WS closed by server: {c:?}")),
            _ => {
                ctx.other.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        ctx.push(Arrival {
            at,
            at_ms32,
            bytes,
            payload,
        });
    }
}

// ---------------------------------------------------------------- MJPEG

fn mjpeg_loop(mut m: Mjpeg, ctx: &mut RxCtx) -> Result<(), String> {
    loop {
        let part = m.try_next_part();
        let (at, at_ms32) = stamp();
        if ctx.stopping() {
            return Ok(());
        }
        let part = part
            .map_err(|e| format!("MJPEG: {e}"))?
            .ok_or("MJPEG: server closed the stream")?;
        let seq = part.header("x-frame-seq").and_then(|v| v.parse().ok());
        ctx.push(Arrival {
            at,
            at_ms32,
            bytes: part.wire_bytes,
            payload: Payload::Jpeg(part.body, seq),
        });
    }
}

// ---------------------------------------------------------------- decoding

fn decoder(rx: Receiver<(usize, Payload)>, out: Sender<Vec<Decoded>>, boost: Arc<AtomicBool>) {
    let set_nice = |nice: libc::c_int| {
        // SAFETY: setpriority on our own thread id; failure only leaves the priority.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    };
    set_nice(19);
    let mut boosted = false;
    let mut decoded = Vec::with_capacity(1024);
    for (i, payload) in rx {
        if !boosted && boost.load(Ordering::Relaxed) {
            // Receiving is over: finish the backlog at normal priority (needs root or
            // RLIMIT_NICE; harmless otherwise).
            set_nice(0);
            boosted = true;
        }
        let (code, seq, problem) = match payload {
            Payload::Decoded(code, problem) => (code, None, problem),
            Payload::Jpeg(jpeg, seq) => split(read_jpeg_shared(&jpeg), seq),
            Payload::Text(t) => match serde_json::from_str(&t)
                .map_err(|e| format!("text frame not JSON: {e}"))
                .and_then(|v| WsFrame::parse_json(&v))
            {
                Ok(f) => split(read_jpeg_shared(&f.jpeg), Some(f.seq)),
                Err(e) => (None, None, Some(e)),
            },
            Payload::Binary(b) => match WsFrame::parse_binary(&b) {
                Ok(f) => split(read_jpeg_shared(&f.jpeg), Some(f.seq)),
                Err(e) => (None, None, Some(e)),
            },
        };
        decoded.push((i, code, seq, problem));
    }
    let _ = out.send(decoded);
}

fn split(
    r: Result<FrameCode, String>,
    seq: Option<u64>,
) -> (Option<FrameCode>, Option<u64>, Option<String>) {
    match r {
        Ok(c) => (Some(c), seq, None),
        Err(e) => (None, seq, Some(e)),
    }
}

/// Codes of recently decoded JPEGs by content: viewers of one camera get the very same
/// bytes (one shared encode) at the same moment, so each picture is decoded once (by the
/// first decoder to see it, the others wait for it), not once per viewer.
static DECODED: Mutex<Option<HashMap<[u64; 2], Pending>>> = Mutex::new(None);
/// `None` while the first decoder of that picture is at work.
type Pending = Option<Result<FrameCode, String>>;
static DECODED_CV: Condvar = Condvar::new();

/// [`read_code`] through [`DECODED`], keyed by a hash of the whole JPEG and its length.
fn read_jpeg_shared(jpeg: &[u8]) -> Result<FrameCode, String> {
    let key = {
        let mut h = DefaultHasher::new();
        jpeg.hash(&mut h);
        [h.finish(), jpeg.len() as u64]
    };
    {
        let mut guard = DECODED.lock();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let map = guard.get_or_insert_with(HashMap::new);
            match map.get(&key) {
                Some(Some(done)) => return done.clone(),
                // Another decoder is on it.
                Some(None) => {
                    if DECODED_CV.wait_until(&mut guard, deadline).timed_out() {
                        break;
                    }
                }
                None => {
                    if map.len() > 4096 {
                        map.clear();
                    }
                    map.insert(key, None);
                    break;
                }
            }
        }
    }
    let code = read_code(jpeg).map(|(_, _, code)| code);
    DECODED
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(key, Some(code.clone()));
    DECODED_CV.notify_all();
    code
}

// ---------------------------------------------------------------- direct client

mod direct {
    use super::*;
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;
    use gstreamer_video as gst_video;
    use gstreamer_video::prelude::*;

    pub struct Client {
        pipeline: gst::Pipeline,
        sink: gst_app::AppSink,
    }

    impl Client {
        /// The same chain the project's e2e tests use, with the appliance's settings.
        pub fn play(url: &str) -> Result<Client, String> {
            gst::init().map_err(|e| e.to_string())?;
            let pipeline = gst::parse::launch(
                "rtspsrc name=src latency=0 protocols=tcp drop-on-latency=true \
                 do-retransmission=false ! rtph264depay ! h264parse \
                 ! avdec_h264 max-threads=1 output-corrupt=false \
                 ! appsink name=sink sync=false max-buffers=8",
            )
            .map_err(|e| e.to_string())?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline")?;
            let src = pipeline.by_name("src").ok_or("no rtspsrc")?;
            src.set_property("location", url);
            let sink = pipeline
                .by_name("sink")
                .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
                .ok_or("no appsink")?;
            pipeline
                .set_state(gst::State::Playing)
                .map_err(|e| format!("direct client: {e}"))?;
            Ok(Client { pipeline, sink })
        }

        pub fn run(self, ctx: &mut RxCtx) -> Result<(), String> {
            let mut quiet = Instant::now();
            while !ctx.stopping() {
                let Some(sample) = self
                    .sink
                    .try_pull_sample(gst::ClockTime::from_mseconds(200))
                else {
                    if self.sink.is_eos() {
                        return Err("direct client: end of stream".into());
                    }
                    if quiet.elapsed() > STALL {
                        return Err("direct client: no frame for 10 s".into());
                    }
                    continue;
                };
                let (at, at_ms32) = stamp();
                quiet = Instant::now();
                // Reading the luma in place is microseconds: no need for the decoder thread.
                let code = read_sample(&sample);
                // Nothing goes over a network here: bytes/s does not apply.
                let bytes = 0;
                let (code, problem) = match code {
                    Ok(c) => (Some(c), None),
                    Err(e) => (None, Some(e)),
                };
                ctx.push(Arrival {
                    at,
                    at_ms32,
                    bytes,
                    payload: Payload::Decoded(code, problem),
                });
            }
            Ok(())
        }
    }

    fn read_sample(sample: &gst::Sample) -> Result<FrameCode, String> {
        let caps = sample.caps().ok_or("no caps")?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        let buffer = sample.buffer().ok_or("no buffer")?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| e.to_string())?;
        let stride = usize::try_from(frame.plane_stride()[0]).map_err(|e| e.to_string())?;
        let luma = frame.plane_data(0).map_err(|e| e.to_string())?;
        barcode::read(luma, stride, frame.width(), frame.height())
            .ok_or_else(|| "no barcode".into())
    }

    impl Drop for Client {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }
}
