//! One thread per camera (`cam-{id}`): runs the ingest pipeline, starts and stops the
//! decoder as demand comes and goes, notices a dead or frozen stream and reconnects with
//! backoff until its [`Handle`] is dropped.
//!
//! Ownership: the fleet owns the `Handle` (dropping it stops and joins the thread);
//! readers (routes, viewers) share the [`Camera`]: its spec, its feed and its health.
//! Timing decisions (each step of a session start, first packet, stall, backoff) run on
//! an injected [`Clock`]. Which lower transport a session uses is the camera's
//! [`TransportPlan`]: `auto` starts with TCP-interleaved, tries UDP only when TCP cannot
//! carry the stream, and keeps whatever streamed for the next reconnect (the reasons and
//! the measurements are in `docs/rtsp-session-start.md`).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;

use super::change::{ChangeEvent, ChangeSink, ScoreMode, Watch, WatchConfig, WatchStatus};
use super::decode::{self, Decoder};
use super::feed::Feed;
use super::frame::Frame;
use super::pipeline::{AccessUnit, BusEvent, Ingest, SessionStep};
use super::thumb::Thumb;
use super::{CameraSpec, Codec, LowerTransport, Transport};
use crate::clock::{unix_now, Clock};
use crate::config::DecodeMode;
use crate::motion::ViewMotion;

/// Where a camera is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    Connecting,
    Streaming,
    Reconnecting,
    Stopped,
}

impl CameraState {
    pub const ALL: [CameraState; 4] = [
        CameraState::Connecting,
        CameraState::Streaming,
        CameraState::Reconnecting,
        CameraState::Stopped,
    ];
}

impl fmt::Display for CameraState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Reconnecting => "reconnecting",
            CameraState::Stopped => "stopped",
        })
    }
}

/// Why a session ended and the camera is being reconnected (gst-plugin-rs fallbacksrc's
/// `RetryReason` idea). Its text is the camera's `lastError`.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryReason {
    /// The pipeline reported an error (refused, unreachable, auth, codec): the text
    /// names the stage and GStreamer's message, never credentials.
    Pipeline(String),
    /// The camera ended the stream (EOS).
    EndOfStream,
    /// A session started but no video came within the first-packet bound.
    NoFirstPacket(Duration),
    /// A step of the session start (TCP connect, DESCRIBE, SETUP, PLAY, first RTP
    /// packet) took longer than its bound (see [`SessionStart`]).
    StepTimeout {
        step: SessionStep,
        lower: LowerTransport,
        bound: Duration,
    },
    /// Packets stopped arriving for longer than the stall limit.
    Stalled(Duration),
    /// No decoder element can decode this stream.
    NoDecoder(String),
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryReason::Pipeline(s) | RetryReason::NoDecoder(s) => f.write_str(s),
            RetryReason::EndOfStream => f.write_str("camera ended the stream"),
            RetryReason::NoFirstPacket(d) => {
                write!(
                    f,
                    "no video from the camera within {:.1} s",
                    d.as_secs_f64()
                )
            }
            RetryReason::Stalled(d) => {
                write!(f, "no data from the camera for {:.1} s", d.as_secs_f64())
            }
            RetryReason::StepTimeout { step, lower, bound } => {
                let b = bound.as_secs_f64();
                match step {
                    SessionStep::Connect => {
                        write!(f, "no TCP connection to the camera within {b:.1} s")
                    }
                    SessionStep::FirstRtp => {
                        write!(f, "no RTP over {lower} within {b:.1} s of PLAY")
                    }
                    _ => write!(f, "the camera did not answer {step} within {b:.1} s"),
                }
            }
        }
    }
}

/// A snapshot of a camera for status replies.
#[derive(Debug, Clone)]
pub struct CameraStatus {
    pub id: String,
    pub state: CameraState,
    pub frame_rate: f64,
    pub last_frame_time: Option<f64>,
    pub frame_count: u64,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub codec: Option<Codec>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub decoder: Option<String>,
    pub decoding: bool,
    pub decode_mode: DecodeMode,
    pub viewers: usize,
    pub jpeg_encodes: u64,
    /// Access units dropped because decoding fell behind (this id, all sessions).
    pub dropped_frames: u64,
    /// Decoding is behind right now (skipping to the next keyframe).
    pub lagging: bool,
    /// Change watching: settings, what it costs, what it gave.
    pub watch: WatchStatus,
}

/// Settings shared by every camera.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    pub decode: DecodeMode,
    pub decoder: Option<String>,
    pub decoder_threads: u32,
}

/// Reconnect delays: doubling from `MIN` to `MAX`, back to `MIN` after a session that
/// streamed.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(250);
    // Capped low: on a LAN a retry of a camera that is down costs a SYN and its RST, and
    // pictures must be back within 2 s of a rebooted camera accepting connections
    // (issue 14): the cap plus a session start (~0.1-0.3 s) plus the first picture.
    pub const MAX: Duration = Duration::from_millis(1000);

    pub fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    /// The delay before the next attempt; each call doubles the one after (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Decides, from packet arrivals, when a session is dead: no first packet within
/// [`Watchdog::FIRST_PACKET`], or a gap longer than the stall limit once streaming. Pure:
/// every call takes the time from the caller's clock.
#[derive(Debug, Clone)]
pub struct Watchdog {
    started: Instant,
    first_packet: Option<Instant>,
    last_packet: Option<Instant>,
    /// Recent arrival instants, for the frame interval.
    window: VecDeque<Instant>,
}

impl Watchdog {
    /// How long a new session may take to deliver its first packet.
    pub const FIRST_PACKET: Duration = Duration::from_secs(5);
    /// The shortest "no data" time that counts as a dead stream.
    pub const STALL_MIN: Duration = Duration::from_secs(2);
    /// A gap of this many frame intervals counts as a stall (slow cameras, 1 fps).
    const STALL_INTERVALS: u32 = 4;

    pub fn new(started: Instant) -> Watchdog {
        Watchdog {
            started,
            first_packet: None,
            last_packet: None,
            window: VecDeque::with_capacity(64),
        }
    }

    pub fn on_packet(&mut self, now: Instant) {
        self.first_packet.get_or_insert(now);
        self.last_packet = Some(now);
        self.window.push_back(now);
        while self.window.len() > 2
            && now.saturating_duration_since(self.window[0]) > Duration::from_secs(2)
        {
            self.window.pop_front();
        }
        if self.window.len() > 64 {
            self.window.pop_front();
        }
    }

    pub fn streaming(&self) -> bool {
        self.last_packet.is_some()
    }

    /// When the session's first packet arrived (not when the camera thread noticed).
    pub fn first_packet(&self) -> Option<Instant> {
        self.first_packet
    }

    /// The longest gap between packets that is still a live stream.
    pub fn stall_limit(&self) -> Duration {
        let interval = match (self.window.front(), self.window.back()) {
            (Some(f), Some(l)) if self.window.len() > 1 => {
                l.saturating_duration_since(*f) / (self.window.len() - 1) as u32
            }
            _ => Duration::ZERO,
        };
        Self::STALL_MIN.max(interval * Self::STALL_INTERVALS)
    }

    /// Why the session is dead at `now`, if it is.
    pub fn check(&self, now: Instant) -> Option<RetryReason> {
        match self.last_packet {
            None => {
                let waited = now.saturating_duration_since(self.started);
                (waited > Self::FIRST_PACKET).then_some(RetryReason::NoFirstPacket(waited))
            }
            Some(t) => {
                let gap = now.saturating_duration_since(t);
                (gap > self.stall_limit()).then_some(RetryReason::Stalled(gap))
            }
        }
    }
}

/// The start of one session, step by step (TCP connect, DESCRIBE, SETUP, PLAY, first RTP
/// packet), each with its own bound, so a reconnect never waits behind a stale
/// handshake and the log names the step that did not finish. Pure: every call takes the
/// time from the caller's clock.
#[derive(Debug, Clone)]
pub struct SessionStart {
    lower: LowerTransport,
    /// Whether another transport is there to fail over to (policy `auto`).
    failover: bool,
    step: SessionStep,
    since: Instant,
    /// How long each finished step took, in order.
    took: Vec<(SessionStep, Duration)>,
    done: bool,
}

impl SessionStart {
    /// Bound of the TCP connect. A SYN lost on a LAN is sent again after 1 s.
    pub const CONNECT: Duration = Duration::from_secs(2);
    /// Bound of each RTSP exchange (OPTIONS + DESCRIBE with its 401 round trip, SETUP,
    /// PLAY): cameras answer in milliseconds; 2 s is slow firmware's margin.
    pub const REQUEST: Duration = Duration::from_secs(2);
    /// Bound from the PLAY reply to the first RTP packet when there is nothing to fail
    /// over to: a camera sends within a frame interval of PLAY.
    pub const FIRST_RTP: Duration = Duration::from_secs(2);
    /// The same over UDP when TCP is there to fail over to (`auto`): a loopback or LAN
    /// packet takes well under a millisecond, so 0.8 s of nothing means UDP does not
    /// get through (host firewall, NAT, Docker bridge).
    pub const FIRST_RTP_UDP_FAILOVER: Duration = Duration::from_millis(800);

    pub fn new(now: Instant, lower: LowerTransport, policy: Transport) -> SessionStart {
        SessionStart {
            lower,
            failover: policy == Transport::Auto,
            step: SessionStep::Connect,
            since: now,
            took: Vec::with_capacity(5),
            done: false,
        }
    }

    pub fn step(&self) -> SessionStep {
        self.step
    }

    pub fn lower(&self) -> LowerTransport {
        self.lower
    }

    /// Whether the first RTP packet came.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The bound of `step` for this session.
    pub fn bound(&self, step: SessionStep) -> Duration {
        match step {
            SessionStep::Connect => Self::CONNECT,
            SessionStep::Describe | SessionStep::Setup | SessionStep::Play => Self::REQUEST,
            SessionStep::FirstRtp if self.lower == LowerTransport::Udp && self.failover => {
                Self::FIRST_RTP_UDP_FAILOVER
            }
            SessionStep::FirstRtp => Self::FIRST_RTP,
        }
    }

    /// rtspsrc moved on to `step` (steps only go forward; a repeat is ignored).
    pub fn on_step(&mut self, step: SessionStep, now: Instant) {
        if self.done || step <= self.step {
            return;
        }
        self.took
            .push((self.step, now.saturating_duration_since(self.since)));
        self.step = step;
        self.since = now;
    }

    /// The first RTP packet came: the start is over.
    pub fn on_rtp(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.took
            .push((self.step, now.saturating_duration_since(self.since)));
        self.done = true;
    }

    /// Why the start failed at `now`, if the current step is past its bound.
    pub fn check(&self, now: Instant) -> Option<RetryReason> {
        if self.done {
            return None;
        }
        let bound = self.bound(self.step);
        (now.saturating_duration_since(self.since) > bound).then_some(RetryReason::StepTimeout {
            step: self.step,
            lower: self.lower,
            bound,
        })
    }

    /// "TCP connect 2 ms, DESCRIBE 5 ms, ...": how long each finished step took.
    pub fn summary(&self) -> String {
        self.took
            .iter()
            .map(|(step, d)| format!("{step} {} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which lower transport the camera's next session uses, and the memory of what
/// worked. `tcp` and `udp` never change. `auto` starts with TCP-interleaved (go2rtc's
/// and Frigate's default: no firewall, NAT or loss surprises) and switches to the other
/// transport only when a session got as far as SETUP but the transport did not carry
/// the stream (SETUP refused, or no RTP within the bound after PLAY); a camera that is
/// down or refuses the connection never makes it switch. Whatever streamed stays the
/// first choice for the next reconnect.
#[derive(Debug, Clone)]
pub struct TransportPlan {
    policy: Transport,
    current: LowerTransport,
    /// The transport of the last session that streamed.
    worked: Option<LowerTransport>,
}

impl TransportPlan {
    pub fn new(policy: Transport) -> TransportPlan {
        TransportPlan {
            policy,
            current: policy.first(),
            worked: None,
        }
    }

    /// The transport of the next session.
    pub fn current(&self) -> LowerTransport {
        self.current
    }

    pub fn worked(&self) -> Option<LowerTransport> {
        self.worked
    }

    /// A session over [`current`](Self::current) ended: `streamed` if RTP came, else
    /// `failed_at` is the step it did not finish. Returns whether the next session
    /// uses the other transport.
    pub fn on_session_end(&mut self, streamed: bool, failed_at: Option<SessionStep>) -> bool {
        if streamed {
            self.worked = Some(self.current);
            return false;
        }
        let transport_failed = matches!(
            failed_at,
            Some(SessionStep::Setup) | Some(SessionStep::FirstRtp)
        );
        if self.policy == Transport::Auto && transport_failed {
            self.current = self.current.other();
            return true;
        }
        false
    }
}

#[derive(Default)]
struct Health {
    state: Option<CameraState>,
    last_error: Option<String>,
    reconnects: u64,
    codec: Option<Codec>,
    decoder: Option<String>,
    decoding: bool,
    /// Size of the last decoded picture (kept when the picture itself is dropped).
    size: Option<(u32, u32)>,
    /// Set once the camera streamed; a camera that never did is not retried forever.
    ever_streamed: bool,
    /// Drops of decoders of earlier sessions (the running one reports its own).
    dropped_before: u64,
}

/// Received access units: count, last arrival (unix and clock) and a window for the rate.
#[derive(Default)]
struct Arrivals {
    count: u64,
    last: Option<f64>,
    last_instant: Option<Instant>,
    window: VecDeque<f64>,
    watchdog: Option<Watchdog>,
}

/// The packets since the last keyframe, and the decoder they go to while one runs.
#[derive(Default)]
struct Gop {
    aus: Vec<AccessUnit>,
    bytes: usize,
    decoder: Option<Arc<Decoder>>,
}

/// Caps on what is kept for a fast first picture: a few seconds of a usual camera.
const GOP_MAX_UNITS: usize = 600;
const GOP_MAX_BYTES: usize = 24 * 1024 * 1024;
/// How often the camera thread looks at its watchdog and demand (a poll interval; the
/// decisions themselves use the camera's clock).
const TICK: Duration = Duration::from_millis(50);
/// How long a change-watching keyframe decode may take (decoder start included).
const KEYFRAME_WAIT: Duration = Duration::from_secs(1);
/// A picture is "live" while the camera's newest packet is at most this old: past it,
/// `/frame` and viewers say the camera is out rather than pass an old picture off as new.
pub const LIVE_WITHIN: Duration = Duration::from_secs(3);

enum Command {
    /// Re-evaluate demand now (someone asked for a picture).
    Wake,
    Stop,
}

/// Where a camera's stream is, as a lookup found it (e.g. ONVIF `GetStreamUri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLocation {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Looks the stream's address up again: called on the camera thread before each
/// reconnect (so a camera that comes back with a new URI is followed); an error keeps
/// the last address. Must be bounded in time (it delays a stop by as much).
pub type Locate = Box<dyn Fn() -> Result<StreamLocation, String> + Send + Sync>;

/// A camera as readers see it: its spec, its feed and its health. Shared by the camera
/// thread and the API; the thread's life is its [`Handle`]'s.
pub struct Camera {
    /// As connected; for a camera with a [`Locate`], the address of its first session.
    pub spec: CameraSpec,
    pub feed: Arc<Feed>,
    options: CameraOptions,
    clock: Clock,
    health: Mutex<Health>,
    arrivals: Mutex<Arrivals>,
    gop: Mutex<Gop>,
    /// Decoder elements that failed at run time on this camera: skipped until the
    /// next session, so a broken hardware decoder falls back to the next one.
    failed_decoders: Mutex<Vec<String>>,
    /// Arrival time of the keyframe change watching last decoded (one decode per GOP).
    last_scored_key: Mutex<Option<f64>>,
    /// When the camera's PTZ control moves the view (set by the fleet): change watching
    /// starts over after a move rather than report the new view.
    view_motion: Mutex<Option<Arc<ViewMotion>>>,
    cmd_tx: Sender<Command>,
    /// Notified on every state change (WebSocket status pushes).
    on_state: Box<dyn Fn(&Camera) + Send + Sync>,
    locate: Option<Locate>,
    /// The address [`Locate`] last found, when it differs from `spec`'s.
    located: Mutex<Option<CameraSpec>>,
    /// When [`Locate`] last ran (camera clock): at most once per [`RELOCATE_EVERY`].
    located_at: Mutex<Option<Instant>>,
    /// Change watching (off unless configured) and where its events go.
    watch: Mutex<Watch>,
    change_sink: Mutex<Option<ChangeSink>>,
    /// The JPEGs (default params) of the last [`EVENT_PICTURES`] change events' pictures,
    /// oldest first, so the app can fetch exactly the picture an event names.
    event_pictures: Mutex<VecDeque<Arc<super::Jpeg>>>,
}

/// Change events whose pictures are kept per camera.
pub const EVENT_PICTURES: usize = 4;

/// A camera that stays down is looked up again at most this often (each lookup is a few
/// exchanges with the device).
pub const RELOCATE_EVERY: Duration = Duration::from_secs(5);

/// The owner of a camera thread: dropping it stops the thread and joins it.
pub struct Handle {
    camera: Arc<Camera>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Starts the camera's thread. `feed` carries the id's viewers over from an earlier
    /// connection (or is new).
    pub fn spawn(
        spec: CameraSpec,
        feed: Arc<Feed>,
        options: CameraOptions,
        clock: Clock,
        on_state: Box<dyn Fn(&Camera) + Send + Sync>,
    ) -> std::io::Result<Handle> {
        Handle::spawn_located(spec, feed, options, clock, on_state, None)
    }

    /// Like [`Handle::spawn`], with a lookup of the stream's address before each
    /// reconnect.
    pub fn spawn_located(
        spec: CameraSpec,
        feed: Arc<Feed>,
        options: CameraOptions,
        clock: Clock,
        on_state: Box<dyn Fn(&Camera) + Send + Sync>,
        locate: Option<Locate>,
    ) -> std::io::Result<Handle> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(8);
        let camera = Arc::new(Camera {
            spec,
            feed,
            options,
            clock,
            health: Mutex::new(Health::default()),
            arrivals: Mutex::new(Arrivals::default()),
            gop: Mutex::new(Gop::default()),
            failed_decoders: Mutex::new(Vec::new()),
            last_scored_key: Mutex::new(None),
            view_motion: Mutex::new(None),
            cmd_tx,
            on_state,
            locate,
            located: Mutex::new(None),
            located_at: Mutex::new(None),
            watch: Mutex::new(Watch::default()),
            change_sink: Mutex::new(None),
            event_pictures: Mutex::new(VecDeque::with_capacity(EVENT_PICTURES)),
        });
        let name: String = format!("cam-{}", camera.spec.id).chars().take(15).collect();
        let runner = Arc::clone(&camera);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || runner.run(cmd_rx))?;
        Ok(Handle {
            camera,
            thread: Some(thread),
        })
    }

    pub fn camera(&self) -> &Arc<Camera> {
        &self.camera
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // `send` (not `try_send`): the thread drains its commands, so this cannot block
        // for long, and a Stop must not be lost to a full queue of wake-ups.
        let _ = self.camera.cmd_tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("{}: camera thread panicked", self.camera.spec.id);
            }
        }
    }
}

/// Why no picture can be served now.
#[derive(Debug, Clone, PartialEq)]
pub enum PictureError {
    /// The camera has not given a picture yet (none since it was connected): ask again
    /// shortly (404 in the API). `why` is the camera's last error, if any.
    NotYet { why: Option<String> },
    /// The camera is out (no packet for longer than [`LIVE_WITHIN`]): the caller must not
    /// show an old picture as current (503 in the API). `since` is how long ago the last
    /// packet came, `why` the camera's last error.
    Out {
        since: Option<Duration>,
        why: Option<String>,
    },
}

impl Camera {
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Where the camera's PTZ control says when it moves the view (`None`: no PTZ).
    pub fn set_view_motion(&self, motion: Option<Arc<ViewMotion>>) {
        *self.view_motion.lock() = motion;
    }

    /// Someone wants a picture once: decode for a while even when on demand.
    pub fn request_picture(&self) {
        self.feed.demand.request(self.clock.now());
        let _ = self.cmd_tx.try_send(Command::Wake);
    }

    /// A viewer's subscription to this camera's feed; the camera decodes while it lives.
    pub fn watch(&self) -> super::feed::Viewer {
        let v = self.feed.watch();
        let _ = self.cmd_tx.try_send(Command::Wake);
        v
    }

    /// Turns change watching on (`Some`) or off. While on and nobody views the camera,
    /// only keyframes are decoded, for the score.
    pub fn set_watch(&self, config: Option<WatchConfig>) {
        self.watch.lock().configure(config);
        let _ = self.cmd_tx.try_send(Command::Wake);
    }

    pub fn watch_config(&self) -> Option<WatchConfig> {
        self.watch.lock().config()
    }

    pub fn watch_status(&self) -> WatchStatus {
        self.watch.lock().status(self.clock.now())
    }

    /// The JPEG of change event picture `seq`, while it is one of the last
    /// [`EVENT_PICTURES`].
    pub fn event_picture(&self, seq: u64) -> Option<Arc<super::Jpeg>> {
        self.event_pictures
            .lock()
            .iter()
            .find(|j| j.seq == seq)
            .cloned()
    }

    /// Where change events go (one sink; a later call replaces it).
    pub fn on_change(&self, sink: ChangeSink) {
        *self.change_sink.lock() = Some(sink);
    }

    /// Scores a decoded picture for change watching (on the decoder's thread).
    fn score_picture(&self, frame: &Frame) {
        let now = self.clock.now();
        let moving = self
            .view_motion
            .lock()
            .as_ref()
            .is_some_and(|m| m.moving(now));
        if moving {
            // Our own PTZ command moves the view: not a change of the scene. The
            // background starts over from the view the head arrives at.
            self.watch.lock().reset();
            return;
        }
        let started = Instant::now();
        let Some(thumb) = Thumb::of(frame) else {
            return;
        };
        let took = started.elapsed();
        let event = self
            .watch
            .lock()
            .score(&thumb, frame.seq, frame.captured, now, took);
        if let Some(score) = event {
            // Encoded before the event goes out, so the picture is there when the app
            // asks for it (one encode per event; events are debounced).
            match self.feed.jpeg.get(frame, super::JpegParams::default()) {
                Ok(jpeg) => {
                    let mut kept = self.event_pictures.lock();
                    if kept.len() >= EVENT_PICTURES {
                        kept.pop_front();
                    }
                    kept.push_back(jpeg);
                }
                Err(e) => log::warn!(
                    "{}: cannot keep the picture of a change event: {e}",
                    self.spec.id
                ),
            }
            log::info!(
                "{}: change (score {score:.3}, picture {})",
                self.spec.id,
                frame.seq
            );
            let sink = self.change_sink.lock().clone();
            if let Some(sink) = sink {
                sink(ChangeEvent {
                    camera_id: self.spec.id.clone(),
                    seq: frame.seq,
                    score,
                    captured: frame.captured,
                });
            }
        }
    }

    pub fn state(&self) -> CameraState {
        self.health.lock().state.unwrap_or(CameraState::Connecting)
    }

    pub fn last_error(&self) -> Option<String> {
        self.health.lock().last_error.clone()
    }

    pub fn ever_streamed(&self) -> bool {
        self.health.lock().ever_streamed
    }

    /// Unix time the newest packet from the camera arrived.
    pub fn last_packet_time(&self) -> Option<f64> {
        self.arrivals.lock().last
    }

    /// How long ago the newest packet arrived, on the camera's clock.
    pub fn since_last_packet(&self) -> Option<Duration> {
        let last = self.arrivals.lock().last_instant;
        last.map(|t| self.clock.now().saturating_duration_since(t))
    }

    /// Whether the camera is live: streaming, and a packet came within [`LIVE_WITHIN`].
    pub fn live(&self) -> bool {
        self.state() == CameraState::Streaming
            && self.since_last_packet().is_some_and(|d| d <= LIVE_WITHIN)
    }

    /// The picture of the camera's newest packet (decoding it first if decoding had
    /// paused), waiting up to `wait`; an out camera answers at once.
    ///
    /// Fresh means: at most `fresh` older than the newest packet at the time of the call
    /// (a decoder that had paused first replays the kept keyframe and the frames after
    /// it; those older pictures are not served). If `wait` runs out, the newest picture
    /// there is is served.
    pub fn fresh_frame(&self, wait: Duration, fresh: Duration) -> Result<Arc<Frame>, PictureError> {
        let waiter = self.feed.slot.waiter();
        self.request_picture();
        if !self.live() {
            return Err(self.out_or_not_yet());
        }
        let newest = self.last_packet_time().unwrap_or_else(unix_now);
        let deadline = Instant::now() + wait;
        loop {
            let latest = self.feed.latest();
            if let Some(f) = &latest {
                if f.captured >= newest - fresh.as_secs_f64() {
                    return Ok(Arc::clone(f));
                }
            }
            if !self.live() {
                return Err(self.out_or_not_yet());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return latest.ok_or(PictureError::NotYet { why: None });
            }
            let _ = waiter.wakeups().recv_timeout(left);
        }
    }

    /// Why there is no live picture now: never a packet since connect (not yet), or out
    /// since the newest one.
    pub fn out_or_not_yet(&self) -> PictureError {
        let since = self.since_last_packet();
        if since.is_none() {
            // Never a packet since it was connected: no picture yet (the contract's 404),
            // never an outage of a picture someone saw.
            return PictureError::NotYet {
                why: self.last_error(),
            };
        }
        PictureError::Out {
            since,
            why: self.last_error(),
        }
    }

    pub fn status(&self) -> CameraStatus {
        let h = self.health.lock();
        let (frame_rate, last, count) = {
            let a = self.arrivals.lock();
            let stale = a.last_instant.is_none_or(|t| {
                self.clock.now().saturating_duration_since(t) > Duration::from_secs(2)
            });
            let rate = match (a.window.front(), a.window.back()) {
                (Some(first), Some(last)) if !stale && a.window.len() > 1 && last > first => {
                    (a.window.len() - 1) as f64 / (last - first)
                }
                _ => 0.0,
            };
            (rate, a.last, a.count)
        };
        let size = self
            .feed
            .latest()
            .map(|f| (f.width(), f.height()))
            .or(h.size);
        let (dropped_now, lagging) = self
            .gop
            .lock()
            .decoder
            .as_ref()
            .map_or((0, false), |d| decoder_drops(d));
        CameraStatus {
            id: self.spec.id.clone(),
            state: h.state.unwrap_or(CameraState::Connecting),
            frame_rate: (frame_rate * 100.0).round() / 100.0,
            last_frame_time: last,
            frame_count: count,
            last_error: h.last_error.clone(),
            reconnects: h.reconnects,
            codec: h.codec,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            decoder: h.decoder.clone(),
            decoding: h.decoding,
            decode_mode: self.options.decode,
            viewers: self.feed.demand.viewers(),
            jpeg_encodes: self.feed.jpeg.encodes(),
            dropped_frames: h.dropped_before + dropped_now,
            lagging,
            watch: self.watch_status(),
        }
    }

    fn set_state(&self, state: CameraState, error: Option<String>) {
        let changed = {
            let mut h = self.health.lock();
            let changed = h.state != Some(state) || (error.is_some() && h.last_error != error);
            h.state = Some(state);
            if state == CameraState::Streaming {
                h.ever_streamed = true;
            }
            if error.is_some() {
                h.last_error = error;
            }
            changed
        };
        if changed {
            // Whoever waits for a picture (connect, /frame) should see this at once.
            self.feed.slot.wake_all();
            (self.on_state)(self);
        }
    }

    /// Called on a streaming thread for every access unit.
    fn on_access_unit(&self, au: AccessUnit) {
        {
            let now = self.clock.now();
            let mut a = self.arrivals.lock();
            a.count += 1;
            a.last = Some(au.arrived);
            a.last_instant = Some(now);
            if let Some(w) = &mut a.watchdog {
                w.on_packet(now);
            }
            a.window.push_back(au.arrived);
            while a.window.len() > 2 && au.arrived - a.window[0] > 2.0 {
                a.window.pop_front();
            }
        }
        let mut g = self.gop.lock();
        if au.keyframe {
            g.aus.clear();
            g.bytes = 0;
        }
        // Keep from a keyframe on; a delta unit with no keyframe before it is useless.
        if (au.keyframe || !g.aus.is_empty())
            && g.aus.len() < GOP_MAX_UNITS
            && g.bytes + au.buffer.size() <= GOP_MAX_BYTES
        {
            g.bytes += au.buffer.size();
            if let Some(d) = &g.decoder {
                d.push(&au);
            }
            g.aus.push(au);
        } else if let Some(d) = &g.decoder {
            d.push(&au);
        }
    }

    /// The camera thread.
    fn run(self: Arc<Self>, cmd_rx: Receiver<Command>) {
        let id = self.spec.id.clone();
        log::info!(
            "{id}: connecting to {} (transport {})",
            self.spec.location(),
            self.spec.transport
        );
        let mut backoff = Backoff::new();
        let mut plan = TransportPlan::new(self.spec.transport);
        let mut failures: u64 = 0;
        loop {
            let lower = plan.current();
            let outcome = self.run_session(&cmd_rx, lower);
            self.stop_decoder();
            {
                let mut g = self.gop.lock();
                g.aus.clear();
                g.bytes = 0;
            }
            let (reason, switched) = match outcome {
                SessionEnd::Stop => break,
                SessionEnd::Failed {
                    reason,
                    streamed,
                    rtp,
                    failed_at,
                } => {
                    if streamed {
                        backoff.reset();
                        failures = 0;
                    }
                    (reason, plan.on_session_end(rtp, failed_at))
                }
            };
            failures += 1;
            self.health.lock().reconnects += 1;
            // A switch of transport after the first failure retries at once: the camera
            // answered, only the transport did not carry the stream.
            let delay = if switched && failures == 1 {
                Duration::ZERO
            } else {
                backoff.next_delay()
            };
            // The first failure and then every 20th: a camera that is off for an hour
            // must not flood the journal.
            if failures == 1 || failures % 20 == 0 || switched {
                let next = if switched {
                    format!(", next over {}", plan.current())
                } else {
                    String::new()
                };
                log::warn!(
                    "{id}: {reason} ({lower}); reconnecting in {} ms{next} (attempt {failures})",
                    delay.as_millis()
                );
            }
            // A camera that never streamed and is tried over the other transport at
            // once is still connecting (`auto` has not given up on it yet); after that
            // it is reconnecting like any other.
            let state = if switched && failures == 1 && !self.ever_streamed() {
                CameraState::Connecting
            } else {
                CameraState::Reconnecting
            };
            self.set_state(state, Some(reason.to_string()));
            if self.wait_or_stop(&cmd_rx, delay) {
                break;
            }
            self.relocate();
        }
        self.set_state(CameraState::Stopped, None);
        self.feed.jpeg.release();
        log::info!("{id}: stopped");
    }

    /// Asks the [`Locate`] (if any) where the stream is now.
    fn relocate(&self) {
        let Some(locate) = &self.locate else {
            return;
        };
        let now = self.clock.now();
        {
            let mut at = self.located_at.lock();
            if at.is_some_and(|t| now.saturating_duration_since(t) < RELOCATE_EVERY) {
                return;
            }
            *at = Some(now);
        }
        match locate() {
            Ok(loc) => {
                let mut spec = self.spec.clone();
                (spec.host, spec.port, spec.path) = (loc.host, loc.port, loc.path);
                let mut located = self.located.lock();
                let before = located.as_ref().unwrap_or(&self.spec).location();
                if spec.location() != before {
                    log::info!("{}: the stream moved to {}", self.spec.id, spec.location());
                }
                *located = (spec.location() != self.spec.location()).then_some(spec);
            }
            Err(e) => log::debug!(
                "{}: cannot look the stream address up ({e}); keeping the last one",
                self.spec.id
            ),
        }
    }

    /// The address the next session uses.
    pub fn session_spec(&self) -> CameraSpec {
        self.located
            .lock()
            .clone()
            .unwrap_or_else(|| self.spec.clone())
    }

    fn run_session(
        self: &Arc<Self>,
        cmd_rx: &Receiver<Command>,
        lower: LowerTransport,
    ) -> SessionEnd {
        let weak = Arc::downgrade(self);
        let sink: super::pipeline::AuSink = Arc::new(move |au| {
            if let Some(cam) = weak.upgrade() {
                cam.on_access_unit(au);
            }
        });
        let started = self.clock.now();
        let mut start = SessionStart::new(started, lower, self.spec.transport);
        self.arrivals.lock().watchdog = Some(Watchdog::new(started));
        let ingest = match Ingest::start(&self.session_spec(), lower, sink) {
            Ok(i) => i,
            Err(e) => {
                return SessionEnd::Failed {
                    reason: RetryReason::Pipeline(e.to_string()),
                    streamed: false,
                    rtp: false,
                    failed_at: Some(start.step()),
                }
            }
        };
        let mut streaming = false;
        let failed = |reason, streamed, start: &SessionStart| SessionEnd::Failed {
            reason,
            streamed,
            rtp: start.done(),
            failed_at: (!start.done()).then_some(start.step()),
        };
        loop {
            select! {
                recv(cmd_rx) -> cmd => match cmd {
                    Ok(Command::Stop) | Err(_) => return SessionEnd::Stop,
                    Ok(Command::Wake) => {}
                },
                recv(ingest.events()) -> ev => {
                    let reason = match ev {
                        Ok(BusEvent::Step(step)) => {
                            start.on_step(step, self.clock.now());
                            None
                        }
                        Ok(BusEvent::FirstRtp) => {
                            start.on_rtp(self.clock.now());
                            None
                        }
                        Ok(BusEvent::Warning(w)) => {
                            log::warn!("{}: {w}", self.spec.id);
                            None
                        }
                        Ok(BusEvent::Error(e)) => Some(RetryReason::Pipeline(e)),
                        Ok(BusEvent::Eos) => Some(RetryReason::EndOfStream),
                        Err(_) => Some(RetryReason::Pipeline("pipeline bus closed".into())),
                    };
                    if let Some(reason) = reason {
                        return failed(reason, streaming, &start);
                    }
                },
                default(TICK) => {}
            }
            let now = self.clock.now();
            if let Some(reason) = start.check(now) {
                return failed(reason, streaming, &start);
            }
            let (first_packet, dead) = {
                let a = self.arrivals.lock();
                let w = a.watchdog.as_ref().expect("set for the session above");
                (w.first_packet(), w.check(now))
            };
            if let Some(reason) = dead {
                return failed(reason, streaming, &start);
            }
            if let (false, Some(first)) = (streaming, first_packet) {
                streaming = true;
                // An access unit implies RTP, even if its probe event is still queued.
                start.on_rtp(first);
                self.set_state(CameraState::Streaming, None);
                log::info!(
                    "{}: streaming over {lower} ({} ms to first packet: {})",
                    self.spec.id,
                    first.saturating_duration_since(started).as_millis(),
                    start.summary()
                );
            }
            if !streaming && self.state() != CameraState::Reconnecting {
                self.set_state(CameraState::Connecting, None);
            }
            // The JPEG service keeps its idle times on the wall clock its callers use.
            self.feed.jpeg.sweep(Instant::now());
            // Decoder on demand: every picture for viewers, keyframes only for change
            // watching while nobody views.
            let viewed = self.options.decode == DecodeMode::Always || self.feed.demand.wanted(now);
            let wanted = if viewed {
                Some(ScoreMode::Frames)
            } else if self.watch.lock().config().is_some() {
                Some(ScoreMode::Keyframes)
            } else {
                None
            };
            let running = self.gop.lock().decoder.is_some();
            if running && !viewed {
                log::debug!("{}: nobody watches; decoding paused", self.spec.id);
                self.stop_decoder();
                self.feed.jpeg.release();
                // The picture would be stale by the next request (which waits for a
                // fresh one anyway); a 1080p I420 picture is 3 MB held for nothing.
                if let Some(f) = self.feed.latest() {
                    self.health.lock().size = Some((f.width(), f.height()));
                }
                self.feed.slot.drop_picture();
            }
            if viewed && !running {
                if let Err(reason) = self.start_decoder() {
                    return failed(reason, streaming, &start);
                }
            }
            if wanted == Some(ScoreMode::Keyframes) {
                if let Err(reason) = self.score_new_keyframe() {
                    return failed(reason, streaming, &start);
                }
            }
            self.watch.lock().set_mode(match wanted {
                Some(ScoreMode::Frames) if self.gop.lock().decoder.is_none() => None,
                other => other,
            });
            let decoder_error = self
                .gop
                .lock()
                .decoder
                .as_ref()
                .and_then(|d| d.error().map(|e| (d.element().to_owned(), e)));
            if let Some((element, e)) = decoder_error {
                log::warn!("{}: {e}; falling back to the next decoder", self.spec.id);
                self.failed_decoders.lock().push(element);
                self.stop_decoder();
                // The next tick starts the next candidate from the kept keyframe.
            }
        }
    }

    /// The decoders to try for `codec` (`caps`), in order, leaving out those that failed
    /// this session; none left is a reason to start the session over.
    fn decoder_candidates(
        &self,
        codec: Codec,
        caps: &gstreamer::Caps,
    ) -> Result<Vec<String>, RetryReason> {
        let mut candidates = decode::candidates_for(
            codec,
            caps,
            self.options.decoder.as_deref(),
            decode::Load::now(),
        );
        {
            let failed = self.failed_decoders.lock();
            candidates.retain(|c| !failed.contains(c));
        }
        if candidates.is_empty() {
            // Every decoder failed: start over with all of them in the next session.
            self.failed_decoders.lock().clear();
            return Err(RetryReason::NoDecoder(format!(
                "no working decoder for {codec}"
            )));
        }
        Ok(candidates)
    }

    /// Change watching while nobody views: decodes the newest keyframe, if it was not
    /// yet, with a decoder of its own that is gone again afterwards, and scores it.
    /// Runs on the camera thread (a few milliseconds once a GOP).
    fn score_new_keyframe(&self) -> Result<(), RetryReason> {
        let key = {
            let g = self.gop.lock();
            match g.aus.first() {
                Some(au) if au.keyframe && Some(au.arrived) != *self.last_scored_key.lock() => {
                    au.clone()
                }
                _ => return Ok(()),
            }
        };
        *self.last_scored_key.lock() = Some(key.arrived);
        let candidates = self.decoder_candidates(key.codec, &key.caps)?;
        let started = Instant::now();
        let decoded = Decoder::decode_one(
            &key.caps,
            key.codec,
            &candidates,
            self.options.decoder_threads,
            &key,
            KEYFRAME_WAIT,
        );
        self.watch.lock().record_decode(started.elapsed());
        match decoded {
            Ok(None) => log::debug!(
                "{}: change watching: no picture of the keyframe within {} ms",
                self.spec.id,
                KEYFRAME_WAIT.as_millis()
            ),
            Ok(Some(p)) => {
                {
                    let mut h = self.health.lock();
                    h.codec = Some(key.codec);
                    h.size = Some((p.info.width(), p.info.height()));
                }
                self.score_picture(&Frame::new(p.captured, p.info, p.buffer));
            }
            Err(e) => {
                log::warn!("{}: change watching: {e}", self.spec.id);
                // The decoder that failed goes to the back of the line, as for viewers.
                if let Some(element) = e.element {
                    self.failed_decoders.lock().push(element);
                }
            }
        }
        Ok(())
    }

    /// Starts decoding every picture once a keyframe is there, fed with the units since it.
    fn start_decoder(self: &Arc<Self>) -> Result<(), RetryReason> {
        let (caps, codec) = {
            let g = self.gop.lock();
            match g.aus.first() {
                Some(au) => (au.caps.clone(), au.codec),
                None => return Ok(()), // no keyframe yet
            }
        };
        let candidates = self.decoder_candidates(codec, &caps)?;
        let slot = Arc::clone(&self.feed.slot);
        let weak = Arc::downgrade(self);
        let on_picture: decode::PictureSink = Arc::new(move |p| {
            let frame = slot.publish(p.captured, p.info, p.buffer);
            let Some(cam) = weak.upgrade() else {
                return;
            };
            if cam.watch.lock().due(cam.clock.now()) {
                cam.score_picture(&frame);
            }
        });
        let decoder = Decoder::start(
            &caps,
            codec,
            &candidates,
            self.options.decoder_threads,
            on_picture,
        )
        .map_err(|e| RetryReason::NoDecoder(e.to_string()))?;
        let element = decoder.element().to_owned();
        let decoder = Arc::new(decoder);
        {
            let mut g = self.gop.lock();
            for au in &g.aus {
                decoder.push(au);
            }
            g.decoder = Some(decoder);
        }
        log::debug!("{}: decoding with {element}", self.spec.id);
        let mut h = self.health.lock();
        h.codec = Some(codec);
        h.decoder = Some(element);
        h.decoding = true;
        Ok(())
    }

    fn stop_decoder(&self) {
        let d = self.gop.lock().decoder.take();
        let mut h = self.health.lock();
        if let Some(d) = &d {
            h.dropped_before += decoder_drops(d).0;
        }
        h.decoding = false;
        drop(h);
        drop(d);
    }

    /// Waits `d` on the camera's clock; true if told to stop meanwhile.
    fn wait_or_stop(&self, cmd_rx: &Receiver<Command>, d: Duration) -> bool {
        let deadline = self.clock.now() + d;
        loop {
            match self.clock.recv_deadline(cmd_rx, deadline) {
                Ok(Command::Stop) => return true,
                Ok(Command::Wake) => {}
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
            }
        }
    }
}

/// A decoder's dropped access units and whether it lags now.
fn decoder_drops(d: &Decoder) -> (u64, bool) {
    let s = d.stats();
    (s.dropped, s.lagging)
}

enum SessionEnd {
    Stop,
    /// `streamed`: access units came (the backoff starts over); `rtp`: RTP came (the
    /// transport worked); `failed_at`: the step of the session start that did not
    /// finish, if RTP never came.
    Failed {
        reason: RetryReason,
        streamed: bool,
        rtp: bool,
        failed_at: Option<SessionStep>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let seq: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, [250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::MIN);
    }

    #[test]
    fn watchdog_first_packet_bound() {
        let clock = Clock::manual();
        let w = Watchdog::new(clock.now());
        clock.advance(Watchdog::FIRST_PACKET);
        assert_eq!(w.check(clock.now()), None, "at the bound is still in time");
        clock.advance(Duration::from_millis(1));
        assert!(matches!(
            w.check(clock.now()),
            Some(RetryReason::NoFirstPacket(_))
        ));
    }

    #[test]
    fn watchdog_stall_limit_follows_the_frame_interval() {
        let clock = Clock::manual();
        let mut w = Watchdog::new(clock.now());
        // 30 fps: the 2 s floor applies.
        for _ in 0..30 {
            clock.advance(Duration::from_millis(33));
            w.on_packet(clock.now());
        }
        assert_eq!(w.stall_limit(), Watchdog::STALL_MIN);
        clock.advance(Duration::from_millis(1999));
        assert_eq!(w.check(clock.now()), None);
        clock.advance(Duration::from_millis(2));
        assert!(matches!(
            w.check(clock.now()),
            Some(RetryReason::Stalled(_))
        ));
        // A 1 fps camera: four intervals.
        let mut w = Watchdog::new(clock.now());
        for _ in 0..3 {
            clock.advance(Duration::from_secs(1));
            w.on_packet(clock.now());
        }
        assert_eq!(w.stall_limit(), Duration::from_secs(4));
        clock.advance(Duration::from_millis(3900));
        assert_eq!(w.check(clock.now()), None);
        clock.advance(Duration::from_millis(200));
        assert!(matches!(
            w.check(clock.now()),
            Some(RetryReason::Stalled(_))
        ));
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn spec(id: &str) -> CameraSpec {
        CameraSpec {
            id: id.into(),
            host: "127.0.0.1".into(),
            port: closed_port(),
            path: "/1".into(),
            username: String::new(),
            password: crate::secret::Secret::default(),
            transport: super::super::Transport::Tcp,
        }
    }

    fn options() -> CameraOptions {
        CameraOptions {
            decode: DecodeMode::OnDemand,
            decoder: None,
            decoder_threads: 1,
        }
    }

    fn thread_exists(name: &str) -> bool {
        std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
            let comm = t.unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == name)
        })
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Dropping the handle is the whole shutdown: the thread is gone when drop returns.
    #[test]
    fn a_dropped_handle_joins_its_thread() {
        gstreamer::init().unwrap();
        let h = Handle::spawn(
            spec("dropjoin"),
            Feed::new(),
            options(),
            Clock::system(),
            Box::new(|_| {}),
        )
        .unwrap();
        // The name is set by the new thread itself, as it starts.
        wait_until("the camera thread to start", || {
            thread_exists("cam-dropjoin")
        });
        let cam = Arc::clone(h.camera());
        drop(h);
        assert!(
            !thread_exists("cam-dropjoin"),
            "the camera thread outlived its handle"
        );
        assert_eq!(cam.state(), CameraState::Stopped);
    }

    /// The reconnect backoff runs on the camera's clock: with a manual clock, the second
    /// attempt comes exactly when the clock passes the first delay, not before.
    /// A camera with a [`Locate`] asks it before a reconnect, at most once per
    /// [`RELOCATE_EVERY`] on the camera's clock, and its sessions use what it found.
    #[test]
    fn reconnects_look_the_stream_up_at_a_bounded_rate() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        gstreamer::init().unwrap();
        let clock = Clock::manual();
        let calls = Arc::new(AtomicUsize::new(0));
        let port = closed_port();
        let counted = Arc::clone(&calls);
        let locate: Locate = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(StreamLocation {
                host: "127.0.0.1".into(),
                port,
                path: "/moved".into(),
            })
        });
        let h = Handle::spawn_located(
            spec("locate"),
            Feed::new(),
            options(),
            clock.clone(),
            Box::new(|_| {}),
            Some(locate),
        )
        .unwrap();
        let cam = Arc::clone(h.camera());
        let mut parks = 0;
        let mut step = |d: Duration| {
            assert!(
                clock.await_parked(parks, Duration::from_secs(20)),
                "never parked"
            );
            parks = clock.parks();
            clock.advance(d);
        };
        // First failure, backoff, then the lookup before the second attempt.
        wait_until("the first failure", || cam.status().reconnects == 1);
        step(Backoff::MAX);
        wait_until("the second attempt", || cam.status().reconnects == 2);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cam.session_spec().path, "/moved");
        assert_eq!(cam.spec.path, "/1", "the connect spec stays as connected");
        // Within RELOCATE_EVERY: attempts go on without lookups.
        step(Backoff::MAX);
        wait_until("the third attempt", || cam.status().reconnects == 3);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "looked up again too soon");
        step(RELOCATE_EVERY);
        wait_until("the fourth attempt", || cam.status().reconnects == 4);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        drop(h);
    }

    #[test]
    fn reconnect_waits_for_the_backoff_on_the_cameras_clock() {
        gstreamer::init().unwrap();
        let clock = Clock::manual();
        let h = Handle::spawn(
            spec("backoff"),
            Feed::new(),
            options(),
            clock.clone(),
            Box::new(|_| {}),
        )
        .unwrap();
        let cam = Arc::clone(h.camera());
        // Nothing listens: the first session fails at once and the thread parks in its
        // backoff on the manual clock.
        wait_until("the first failure", || cam.status().reconnects == 1);
        assert!(
            clock.await_parked(0, Duration::from_secs(20)),
            "never parked"
        );
        let p = clock.parks();
        clock.advance(Backoff::MIN - Duration::from_millis(1));
        assert!(
            clock.await_parked(p, Duration::from_secs(20)),
            "did not re-park"
        );
        assert_eq!(
            cam.status().reconnects,
            1,
            "retried before the backoff ran out"
        );
        assert_eq!(cam.state(), CameraState::Reconnecting);
        clock.advance(Duration::from_millis(1));
        wait_until("the second attempt", || cam.status().reconnects == 2);
        let why = cam.last_error().unwrap_or_default();
        assert!(why.starts_with("RTSP"), "lastError {why:?}");
        drop(h);
    }

    /// Each step has its own bound on the camera's clock, and the reason names the step
    /// that did not finish.
    #[test]
    fn session_start_bounds_each_step_and_names_it() {
        let clock = Clock::manual();
        let mut s = SessionStart::new(clock.now(), LowerTransport::Tcp, Transport::Auto);
        clock.advance(SessionStart::CONNECT);
        assert_eq!(s.check(clock.now()), None, "at the bound is still in time");
        s.on_step(SessionStep::Connect, clock.now()); // a repeat does not restart it
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            s.check(clock.now()),
            Some(RetryReason::StepTimeout {
                step: SessionStep::Connect,
                lower: LowerTransport::Tcp,
                bound: SessionStart::CONNECT
            })
        );
        // Connected: DESCRIBE gets a bound of its own, counted from its start.
        s.on_step(SessionStep::Describe, clock.now());
        clock.advance(SessionStart::REQUEST);
        assert_eq!(s.check(clock.now()), None);
        s.on_step(SessionStep::Setup, clock.now());
        s.on_step(SessionStep::Describe, clock.now()); // steps never go back
        assert_eq!(s.step(), SessionStep::Setup);
        s.on_step(SessionStep::Play, clock.now());
        s.on_step(SessionStep::FirstRtp, clock.now());
        clock.advance(SessionStart::FIRST_RTP + Duration::from_millis(1));
        let why = s.check(clock.now()).expect("past the first-RTP bound");
        assert_eq!(why.to_string(), "no RTP over TCP within 2.0 s of PLAY");
        s.on_rtp(clock.now());
        assert!(s.done());
        assert_eq!(s.check(clock.now() + Duration::from_secs(60)), None);
        assert!(s
            .summary()
            .starts_with("TCP connect 2001 ms, DESCRIBE 2000 ms, SETUP 0 ms"));
    }

    /// UDP under `auto` gets a short first-RTP bound (TCP is there to fail over to);
    /// explicit UDP keeps the long one.
    #[test]
    fn udp_fails_over_in_well_under_a_second_only_when_there_is_tcp() {
        let clock = Clock::manual();
        let auto = SessionStart::new(clock.now(), LowerTransport::Udp, Transport::Auto);
        let udp = SessionStart::new(clock.now(), LowerTransport::Udp, Transport::Udp);
        assert!(auto.bound(SessionStep::FirstRtp) < Duration::from_secs(1));
        assert_eq!(udp.bound(SessionStep::FirstRtp), SessionStart::FIRST_RTP);
        let mut s = auto;
        s.on_step(SessionStep::FirstRtp, clock.now());
        clock.advance(Duration::from_millis(801));
        assert_eq!(
            s.check(clock.now()).map(|r| r.to_string()).as_deref(),
            Some("no RTP over UDP within 0.8 s of PLAY")
        );
        let d = RetryReason::StepTimeout {
            step: SessionStep::Describe,
            lower: LowerTransport::Tcp,
            bound: SessionStart::REQUEST,
        };
        assert_eq!(
            d.to_string(),
            "the camera did not answer DESCRIBE within 2.0 s"
        );
    }

    #[test]
    fn transport_plan_auto_starts_with_tcp_switches_on_transport_failures_and_remembers() {
        let mut p = TransportPlan::new(Transport::Auto);
        assert_eq!(p.current(), LowerTransport::Tcp);
        // A camera that is down does not make it switch.
        assert!(!p.on_session_end(false, Some(SessionStep::Connect)));
        assert!(!p.on_session_end(false, Some(SessionStep::Describe)));
        assert_eq!(p.current(), LowerTransport::Tcp);
        // TCP refused at SETUP: UDP next, and UDP stays once it streamed.
        assert!(p.on_session_end(false, Some(SessionStep::Setup)));
        assert_eq!(p.current(), LowerTransport::Udp);
        assert!(!p.on_session_end(true, None));
        assert_eq!(p.worked(), Some(LowerTransport::Udp));
        assert!(!p.on_session_end(false, Some(SessionStep::Connect)));
        assert_eq!(
            p.current(),
            LowerTransport::Udp,
            "remembered across an outage"
        );
        // UDP that brings nothing: back to TCP.
        assert!(p.on_session_end(false, Some(SessionStep::FirstRtp)));
        assert_eq!(p.current(), LowerTransport::Tcp);
        // Explicit transports never change.
        for policy in [Transport::Tcp, Transport::Udp] {
            let mut p = TransportPlan::new(policy);
            assert!(!p.on_session_end(false, Some(SessionStep::FirstRtp)));
            assert!(!p.on_session_end(false, Some(SessionStep::Setup)));
            assert_eq!(p.current(), policy.first());
        }
    }

    #[test]
    fn retry_reasons_read_as_before() {
        assert_eq!(
            RetryReason::Stalled(Duration::from_millis(2100)).to_string(),
            "no data from the camera for 2.1 s"
        );
        assert_eq!(
            RetryReason::EndOfStream.to_string(),
            "camera ended the stream"
        );
    }
}
