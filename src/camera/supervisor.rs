//! One thread per camera (`cam-{id}`): runs the ingest pipeline, starts and stops the
//! decoder as viewers come and go, notices a dead or frozen stream and reconnects with
//! backoff until told to stop.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;

use super::decode::{self, Decoder};
use super::frame::{unix_now, Feed};
use super::pipeline::{AccessUnit, BusEvent, Ingest};
use super::{CameraSpec, Codec};
use crate::config::DecodeMode;

/// Where a camera is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    Connecting,
    Streaming,
    Reconnecting,
    Stopped,
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
}

/// Settings shared by every camera.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    pub decode: DecodeMode,
    pub decoder: Option<String>,
    pub decoder_threads: u32,
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
}

/// Received access units: count, last arrival and a window for the rate.
#[derive(Default)]
struct Arrivals {
    count: u64,
    last: Option<f64>,
    last_instant: Option<Instant>,
    window: VecDeque<f64>,
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
/// Decoding goes on this long after the last request or viewer.
const DEMAND_LINGER: Duration = Duration::from_millis(1500);
/// How often the camera thread looks at its watchdog and demand.
const TICK: Duration = Duration::from_millis(50);
/// The shortest "no data" time that counts as a dead stream.
const STALL_MIN: Duration = Duration::from_secs(2);
/// How long a new session may take to deliver its first packet.
const FIRST_PACKET: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
// Capped low: on a LAN a retry costs a SYN, and being back within seconds of the
// camera matters more than a quiet log.
const BACKOFF_MAX: Duration = Duration::from_millis(1500);

pub(crate) enum Command {
    /// Re-evaluate demand now (someone asked for a picture).
    Wake,
    Stop,
}

/// A connected camera: the handle the API uses. Its thread stops when told to or when
/// the handle is dropped by the registry.
pub struct Camera {
    pub spec: CameraSpec,
    pub feed: Arc<Feed>,
    options: CameraOptions,
    health: Mutex<Health>,
    arrivals: Mutex<Arrivals>,
    gop: Mutex<Gop>,
    /// Decoder elements that failed at run time on this camera: skipped until the
    /// next session, so a broken hardware decoder falls back to the next one.
    failed_decoders: Mutex<Vec<String>>,
    cmd_tx: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Notified on every state change (WebSocket status pushes).
    on_state: Box<dyn Fn(&Camera) + Send + Sync>,
}

impl Camera {
    /// Starts the camera's thread.
    pub fn spawn(
        spec: CameraSpec,
        feed: Arc<Feed>,
        options: CameraOptions,
        on_state: Box<dyn Fn(&Camera) + Send + Sync>,
    ) -> std::io::Result<Arc<Camera>> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(8);
        let cam = Arc::new(Camera {
            spec,
            feed,
            options,
            health: Mutex::new(Health::default()),
            arrivals: Mutex::new(Arrivals::default()),
            gop: Mutex::new(Gop::default()),
            failed_decoders: Mutex::new(Vec::new()),
            cmd_tx,
            thread: Mutex::new(None),
            on_state,
        });
        let name: String = format!("cam-{}", cam.spec.id).chars().take(15).collect();
        let runner = Arc::clone(&cam);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || runner.run(cmd_rx))?;
        *cam.thread.lock() = Some(handle);
        Ok(cam)
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(&self) {
        let _ = self.cmd_tx.send(Command::Stop);
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            if h.join().is_err() {
                log::error!("{}: camera thread panicked", self.spec.id);
            }
        }
    }

    /// Someone wants a picture: decode for a while even when on demand.
    pub fn request_picture(&self) {
        self.feed.touch();
        let _ = self.cmd_tx.try_send(Command::Wake);
    }

    /// Viewers came: look at demand now rather than at the next tick.
    pub fn wake(&self) {
        let _ = self.cmd_tx.try_send(Command::Wake);
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

    pub fn status(&self) -> CameraStatus {
        let h = self.health.lock();
        let (frame_rate, last, count) = {
            let a = self.arrivals.lock();
            let stale = a
                .last_instant
                .is_none_or(|t| t.elapsed() > Duration::from_secs(2));
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
            viewers: self.feed.viewers(),
            jpeg_encodes: self.feed.jpeg.encodes(),
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
            self.feed.wake_all();
            (self.on_state)(self);
        }
    }

    /// Called on a streaming thread for every access unit.
    fn on_access_unit(&self, au: AccessUnit) {
        {
            let mut a = self.arrivals.lock();
            a.count += 1;
            a.last = Some(au.arrived);
            a.last_instant = Some(Instant::now());
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

    /// Unix time the newest packet from the camera arrived.
    pub fn last_packet_time(&self) -> Option<f64> {
        self.arrivals.lock().last
    }

    fn last_packet(&self) -> Option<Instant> {
        self.arrivals.lock().last_instant
    }

    /// The longest gap between packets that is still a live stream.
    fn stall_limit(&self) -> Duration {
        let a = self.arrivals.lock();
        let interval = match (a.window.front(), a.window.back()) {
            (Some(f), Some(l)) if a.window.len() > 1 && l > f => {
                (l - f) / (a.window.len() - 1) as f64
            }
            _ => 0.0,
        };
        STALL_MIN.max(Duration::from_secs_f64(interval * 4.0))
    }

    /// The camera thread.
    fn run(self: Arc<Self>, cmd_rx: Receiver<Command>) {
        let id = self.spec.id.clone();
        log::info!("{id}: connecting to {}", self.spec.location());
        let mut backoff = BACKOFF_MIN;
        let mut failures: u64 = 0;
        loop {
            let outcome = self.run_session(&cmd_rx);
            self.stop_decoder();
            {
                let mut g = self.gop.lock();
                g.aus.clear();
                g.bytes = 0;
            }
            let reason = match outcome {
                SessionEnd::Stop => break,
                SessionEnd::Failed { reason, streamed } => {
                    if streamed {
                        backoff = BACKOFF_MIN;
                        failures = 0;
                    }
                    reason
                }
            };
            failures += 1;
            self.health.lock().reconnects += 1;
            // The first failure and then every 20th: a camera that is off for an hour
            // must not flood the journal.
            if failures == 1 || failures % 20 == 0 {
                log::warn!(
                    "{id}: {reason}; reconnecting in {} ms (attempt {failures})",
                    backoff.as_millis()
                );
            }
            self.set_state(CameraState::Reconnecting, Some(reason));
            if wait_or_stop(&cmd_rx, backoff) {
                break;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.set_state(CameraState::Stopped, None);
        self.feed.jpeg.release();
        log::info!("{id}: stopped");
    }

    fn run_session(self: &Arc<Self>, cmd_rx: &Receiver<Command>) -> SessionEnd {
        let weak = Arc::downgrade(self);
        let sink: super::pipeline::AuSink = Arc::new(move |au| {
            if let Some(cam) = weak.upgrade() {
                cam.on_access_unit(au);
            }
        });
        let started = Instant::now();
        let ingest = match Ingest::start(&self.spec, sink) {
            Ok(i) => i,
            Err(e) => {
                return SessionEnd::Failed {
                    reason: e.0,
                    streamed: false,
                }
            }
        };
        let session_packets_from = self.arrivals.lock().count;
        let mut streaming = false;
        // When a viewer (or always-on mode) last wanted pictures: decoding lingers a
        // little after the last viewer leaves, so a viewer switching back is instant.
        let mut last_viewer = Instant::now();
        loop {
            select! {
                recv(cmd_rx) -> cmd => match cmd {
                    Ok(Command::Stop) | Err(_) => return SessionEnd::Stop,
                    Ok(Command::Wake) => {}
                },
                recv(ingest.events()) -> ev => match ev {
                    Ok(BusEvent::Error(e)) => return SessionEnd::Failed { reason: e, streamed: streaming },
                    Ok(BusEvent::Eos) => return SessionEnd::Failed { reason: "camera ended the stream".into(), streamed: streaming },
                    Err(_) => return SessionEnd::Failed { reason: "pipeline bus closed".into(), streamed: streaming },
                },
                default(TICK) => {}
            }
            let got_packets = self.arrivals.lock().count > session_packets_from;
            if !streaming && got_packets {
                streaming = true;
                self.set_state(CameraState::Streaming, None);
                log::info!(
                    "{}: streaming ({} ms to first packet)",
                    self.spec.id,
                    started.elapsed().as_millis()
                );
            }
            if !streaming {
                if started.elapsed() > FIRST_PACKET {
                    return SessionEnd::Failed {
                        reason: "no video from the camera".into(),
                        streamed: false,
                    };
                }
                if self.state() != CameraState::Reconnecting {
                    self.set_state(CameraState::Connecting, None);
                }
            } else if let Some(t) = self.last_packet() {
                let limit = self.stall_limit();
                if t.elapsed() > limit {
                    return SessionEnd::Failed {
                        reason: format!(
                            "no data from the camera for {:.1} s",
                            t.elapsed().as_secs_f64()
                        ),
                        streamed: true,
                    };
                }
            }
            // Decoder on demand.
            if self.options.decode == DecodeMode::Always || self.feed.viewers() > 0 {
                last_viewer = Instant::now();
            }
            let requested = self
                .feed
                .last_request()
                .is_some_and(|t| t.elapsed() < DEMAND_LINGER);
            if requested || last_viewer.elapsed() < DEMAND_LINGER {
                if self.gop.lock().decoder.is_none() {
                    if let Err(e) = self.start_decoder() {
                        return SessionEnd::Failed {
                            reason: e,
                            streamed: streaming,
                        };
                    }
                }
            } else if self.gop.lock().decoder.is_some() {
                log::debug!("{}: nobody watches; decoding paused", self.spec.id);
                self.stop_decoder();
                self.feed.jpeg.release();
                // The picture would be stale by the next request (which waits for a
                // fresh one anyway); a 1080p I420 picture is 3 MB held for nothing.
                if let Some(f) = self.feed.latest() {
                    self.health.lock().size = Some((f.width(), f.height()));
                }
                self.feed.drop_picture();
            }
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

    /// Starts decoding once a keyframe is there, fed with the units since it.
    fn start_decoder(&self) -> Result<(), String> {
        let (caps, codec) = {
            let g = self.gop.lock();
            match g.aus.first() {
                Some(au) => (au.caps.clone(), au.codec),
                None => return Ok(()), // no keyframe yet
            }
        };
        let mut candidates = decode::candidates(codec, self.options.decoder.as_deref());
        {
            let failed = self.failed_decoders.lock();
            candidates.retain(|c| !failed.contains(c));
        }
        if candidates.is_empty() {
            // Every decoder failed: start over with all of them in the next session.
            self.failed_decoders.lock().clear();
            return Err(format!("no working decoder for {codec}"));
        }
        let feed = Arc::clone(&self.feed);
        let on_picture: decode::PictureSink = Arc::new(move |p| {
            feed.publish(p.captured, p.info, p.buffer);
        });
        let decoder = Decoder::start(
            &caps,
            codec,
            &candidates,
            self.options.decoder_threads,
            on_picture,
        )
        .map_err(|e| e.0)?;
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
        drop(d);
        self.health.lock().decoding = false;
    }
}

enum SessionEnd {
    Stop,
    Failed { reason: String, streamed: bool },
}

/// Waits `d`; true if told to stop meanwhile.
fn wait_or_stop(cmd_rx: &Receiver<Command>, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match cmd_rx.recv_timeout(left) {
            Ok(Command::Stop) => return true,
            Ok(Command::Wake) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return false,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
        }
    }
}

/// Unix seconds now (re-exported for status replies).
pub fn now() -> f64 {
    unix_now()
}
