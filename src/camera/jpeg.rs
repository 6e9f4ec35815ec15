//! `JpegService`: a camera's JPEG encoding, with its own bounds. One encode per (picture,
//! size, quality) however many viewers ask; sizes and qualities snapped to a small ladder
//! so the key space of encoders and cached pictures is ours, not the client's; at most
//! [`MAX_ENCODERS_PER_CAMERA`] encoder pipelines per camera (least recently used evicted),
//! idle ones freed after [`ENCODER_IDLE`], and at most [`MAX_ENCODERS_TOTAL`] in the
//! process.
//!
//! Each encoder is an `appsrc ! videoscale ! capsfilter ! jpegenc ! appsink` pipeline
//! (one streaming thread): a few MB and a thread each, which is why they are capped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gstreamer as gst;
use parking_lot::Mutex;

use super::frame::Frame;
use super::pipeline::{JpegPipeline, PipelineError};
use crate::meter::{self, Histogram};

/// The largest picture served: larger sources are scaled down to fit, aspect kept.
pub const MAX_WIDTH: u32 = 1920;
pub const MAX_HEIGHT: u32 = 1080;
pub const DEFAULT_QUALITY: u8 = 80;
/// The JPEG encoder element (see `pipeline::JPEG_ENCODER`).
pub use super::pipeline::JPEG_ENCODER as ENCODER;

/// Widths served. A requested width snaps to the largest rung not above it (below the
/// smallest: the smallest); 1920 and above mean full size (fit into 1920×1080).
pub const WIDTH_LADDER: [u32; 7] = [160, 320, 480, 640, 960, 1280, 1920];
/// JPEG qualities served. A requested quality snaps to the nearest step (a tie goes up).
/// 50 and 80 (the default) are steps, so they are served exactly.
pub const QUALITY_STEPS: [u8; 6] = [25, 50, 65, 80, 90, 95];
/// Encoder pipelines one camera keeps; the least recently used one goes first.
pub const MAX_ENCODERS_PER_CAMERA: usize = 4;
/// Encoder pipelines the whole process may run (see [`JpegError::Busy`]).
pub const MAX_ENCODERS_TOTAL: usize = 32;
/// An encoder unused this long is freed by [`JpegService::sweep`], even while the
/// camera's other encoders are in use.
pub const ENCODER_IDLE: Duration = Duration::from_secs(10);
/// How many encoded pictures are kept (a few sizes of the newest one or two frames).
const CACHE_LEN: usize = 8;

/// What a viewer asks for: `width` (scaled down only, aspect kept) and JPEG quality.
///
/// [`JpegParams::new`] snaps both to the served ladder; the service snaps whatever it is
/// given again, so a value built field by field is served snapped too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JpegParams {
    pub width: Option<u32>,
    pub quality: u8,
}

impl Default for JpegParams {
    fn default() -> Self {
        JpegParams {
            width: None,
            quality: DEFAULT_QUALITY,
        }
    }
}

impl JpegParams {
    /// Params snapped to [`WIDTH_LADDER`] and [`QUALITY_STEPS`]. `None` is full size.
    pub fn new(width: Option<u32>, quality: u8) -> JpegParams {
        JpegParams {
            width: snap_width(width),
            quality: snap_quality(quality),
        }
    }

    /// These params as served (see [`JpegParams::new`]).
    pub fn snapped(self) -> JpegParams {
        JpegParams::new(self.width, self.quality)
    }
}

/// The served width for a requested one: the largest rung of [`WIDTH_LADDER`] not above
/// it, the smallest rung below that; `None` (full size) from 1920 on, where a width no
/// longer changes the picture (it is fit into 1920×1080 anyway).
pub fn snap_width(width: Option<u32>) -> Option<u32> {
    let w = width?;
    if w >= MAX_WIDTH {
        return None;
    }
    Some(
        WIDTH_LADDER
            .iter()
            .rev()
            .copied()
            .find(|&rung| rung <= w)
            .unwrap_or(WIDTH_LADDER[0]),
    )
}

/// The served quality for a requested one: the nearest of [`QUALITY_STEPS`], a tie going
/// to the higher step.
pub fn snap_quality(quality: u8) -> u8 {
    let dist = |s: u8| (i16::from(s) - i16::from(quality)).abs();
    QUALITY_STEPS
        .iter()
        .copied()
        .fold(QUALITY_STEPS[0], |best, s| {
            if dist(s) <= dist(best) {
                s
            } else {
                best
            }
        })
}

/// Why no JPEG came. Each variant says what the caller should do.
#[derive(Debug)]
pub enum JpegError {
    /// The process runs [`MAX_ENCODERS_TOTAL`] encoders and this camera has none it could
    /// give up (its own are all busy encoding). Transient: answer 503 with a `detail`
    /// (REST) or skip this picture (streams); a later request will find room.
    Busy,
    /// Encoding failed (element missing, pipeline refused to start, no output in time).
    /// The encoder is dropped, so the next request builds a fresh one. Answer 500 and log.
    Pipeline(PipelineError),
}

impl std::fmt::Display for JpegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JpegError::Busy => write!(
                f,
                "all {MAX_ENCODERS_TOTAL} JPEG encoders are busy; try again shortly"
            ),
            JpegError::Pipeline(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for JpegError {}

impl From<PipelineError> for JpegError {
    fn from(e: PipelineError) -> Self {
        JpegError::Pipeline(e)
    }
}

/// An encoded picture, shared by every viewer of the same frame, size and quality.
pub struct Jpeg {
    pub seq: u64,
    pub captured: f64,
    pub width: u32,
    pub height: u32,
    /// The params as served (snapped).
    pub params: JpegParams,
    pub data: Vec<u8>,
    base64: OnceLock<String>,
}

impl Jpeg {
    /// Base64 of `data`, computed once for all text viewers.
    pub fn base64(&self) -> &str {
        self.base64
            .get_or_init(|| base64::engine::general_purpose::STANDARD.encode(&self.data))
    }
}

/// Output size for a `src_w`×`src_h` picture: fits 1920×1080 and `width`, aspect kept,
/// never upscaled, even numbers (4:2:0 chroma).
pub fn fit(src_w: u32, src_h: u32, width: Option<u32>) -> (u32, u32) {
    let mut scale = 1f64
        .min(MAX_WIDTH as f64 / src_w as f64)
        .min(MAX_HEIGHT as f64 / src_h as f64);
    if let Some(w) = width {
        scale = scale.min(w.max(16) as f64 / src_w as f64);
    }
    if scale >= 1.0 {
        return (src_w, src_h);
    }
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (even(src_w as f64 * scale), even(src_h as f64 * scale))
}

/// How many encoders may run in the process, and how many do.
pub struct EncoderBudget {
    cap: usize,
    live: AtomicUsize,
}

/// The process-wide budget every camera's [`JpegService`] draws from by default.
static PROCESS_BUDGET: EncoderBudget = EncoderBudget::new(MAX_ENCODERS_TOTAL);

impl EncoderBudget {
    /// A budget of `cap` encoders (tests use a small one of their own).
    pub const fn new(cap: usize) -> EncoderBudget {
        EncoderBudget {
            cap,
            live: AtomicUsize::new(0),
        }
    }

    /// Encoders alive under this budget now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    fn try_take(&'static self, camera: &Arc<AtomicUsize>) -> Option<Permit> {
        self.live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()?;
        camera.fetch_add(1, Ordering::SeqCst);
        Some(Permit {
            budget: self,
            camera: Arc::clone(camera),
        })
    }
}

/// One encoder's place in its camera's and the process's count; `Drop` gives it back.
struct Permit {
    budget: &'static EncoderBudget,
    camera: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.camera.fetch_sub(1, Ordering::SeqCst);
        self.budget.live.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Encoder {
    pipeline: JpegPipeline,
    in_caps: gst::Caps,
    out: (u32, u32),
    /// Counts this encoder against the camera's and the process's caps until dropped
    /// (declared last: released after the pipeline is down).
    _permit: Permit,
}

impl Encoder {
    fn new(
        in_caps: &gst::Caps,
        out: (u32, u32),
        quality: u8,
        permit: Permit,
    ) -> Result<Encoder, PipelineError> {
        Ok(Encoder {
            pipeline: JpegPipeline::start(in_caps, out, quality)?,
            in_caps: in_caps.clone(),
            out,
            _permit: permit,
        })
    }

    fn encode(&self, frame: &Frame) -> Result<Vec<u8>, PipelineError> {
        self.pipeline.encode(frame.buffer.clone())
    }
}

/// One (size, quality)'s encoder, made on first use and remade when the picture size
/// changes. Its lock serialises encodes on it; whoever waited finds the picture cached.
#[derive(Default)]
struct Slot {
    encoder: Mutex<Option<Encoder>>,
    /// Evicted or idle: whoever holds the lock frees the encoder, nobody makes a new one.
    retired: AtomicBool,
}

impl Slot {
    /// Takes the slot out of use and frees its encoder now, or (if an encode is running
    /// on it) as soon as that encode ends.
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        if let Some(mut enc) = self.encoder.try_lock() {
            *enc = None;
        }
    }
}

struct Entry {
    params: JpegParams,
    slot: Arc<Slot>,
    last_used: Instant,
}

/// A camera's JPEG encoders and the cache of its newest encoded pictures.
///
/// Bounds: [`MAX_ENCODERS_PER_CAMERA`] encoders (LRU), each freed after [`ENCODER_IDLE`]
/// unused (by [`JpegService::sweep`], for the camera thread to call on its tick; and
/// [`JpegService::get`] calls too), [`MAX_ENCODERS_TOTAL`] in the process, 8
/// pictures.
pub struct JpegService {
    budget: &'static EncoderBudget,
    /// Encoders of this camera alive now (including one still finishing an encode
    /// after its eviction).
    live: Arc<AtomicUsize>,
    entries: Mutex<Vec<Entry>>,
    cache: Mutex<VecDeque<Arc<Jpeg>>>,
    encodes: AtomicU64,
    /// How long each successful encode took (the encode only, not starting a pipeline).
    encode_time: Histogram,
}

impl Default for JpegService {
    fn default() -> Self {
        JpegService::with_budget(&PROCESS_BUDGET)
    }
}

impl JpegService {
    /// A service drawing on the process's budget of [`MAX_ENCODERS_TOTAL`] encoders.
    pub fn new() -> JpegService {
        JpegService::default()
    }

    /// A service drawing on `budget` (tests use a small budget of their own).
    pub fn with_budget(budget: &'static EncoderBudget) -> JpegService {
        JpegService {
            budget,
            live: Arc::new(AtomicUsize::new(0)),
            entries: Mutex::new(Vec::new()),
            cache: Mutex::new(VecDeque::with_capacity(CACHE_LEN)),
            encodes: AtomicU64::new(0),
            encode_time: Histogram::new(meter::ENCODE_BUCKETS),
        }
    }

    /// The JPEG of `frame` at `params` (snapped; a width that does not shrink the picture
    /// counts as full size), encoding it only if nobody has yet.
    pub fn get(&self, frame: &Frame, params: JpegParams) -> Result<Arc<Jpeg>, JpegError> {
        self.get_at(frame, params, Instant::now())
    }

    /// [`JpegService::get`] at time `now` (a test's clock; `get` uses `Instant::now()`).
    pub fn get_at(
        &self,
        frame: &Frame,
        params: JpegParams,
        now: Instant,
    ) -> Result<Arc<Jpeg>, JpegError> {
        let mut params = params.snapped();
        if fit(frame.width(), frame.height(), params.width)
            == fit(frame.width(), frame.height(), None)
        {
            // A width at or above the picture's: the full-size picture, one encoder.
            params.width = None;
        }
        self.sweep(now);
        if let Some(j) = self.cached(frame.seq, params) {
            self.entries
                .lock()
                .iter_mut()
                .filter(|e| e.params == params)
                .for_each(|e| e.last_used = e.last_used.max(now));
            return Ok(j);
        }
        // A slot can be retired between looking it up and locking it (evicted by a
        // request for other params): look again, a few times at most.
        for _ in 0..4 {
            let (slot, evicted) = self.slot_for(params, now);
            for s in evicted {
                s.retire();
            }
            let mut enc = slot.encoder.lock();
            if slot.retired.load(Ordering::SeqCst) {
                *enc = None;
                continue;
            }
            if let Some(j) = self.cached(frame.seq, params) {
                return Ok(j);
            }
            let out = fit(frame.width(), frame.height(), params.width);
            let in_caps = frame
                .info
                .to_caps()
                .map_err(|_| PipelineError::Build("picture has no caps".into()))?;
            let reuse = matches!(&*enc, Some(e) if e.out == out && e.in_caps == in_caps);
            if !reuse {
                *enc = None; // gives its permit back first
                let permit = self.permit(&slot)?;
                *enc = Some(Encoder::new(&in_caps, out, params.quality, permit)?);
            }
            let encoder = enc.as_ref().expect("set just above");
            let started = Instant::now();
            let result = encoder.encode(frame);
            let took = started.elapsed();
            if result.is_err() || slot.retired.load(Ordering::SeqCst) {
                *enc = None;
            }
            let data = result?;
            self.encodes.fetch_add(1, Ordering::Relaxed);
            self.encode_time.observe(took);
            let jpeg = Arc::new(Jpeg {
                seq: frame.seq,
                captured: frame.captured,
                width: out.0,
                height: out.1,
                params,
                data,
                base64: OnceLock::new(),
            });
            {
                let mut cache = self.cache.lock();
                if cache.len() >= CACHE_LEN {
                    cache.pop_front();
                }
                cache.push_back(Arc::clone(&jpeg));
            }
            // Cached before the encoder's lock is let go: whoever waited on it finds
            // this picture instead of encoding it again.
            drop(enc);
            return Ok(jpeg);
        }
        Err(JpegError::Busy)
    }

    /// The slot for `params` (made if new, marked used at `now`), and the slots pushed out
    /// by it (to retire, outside the list's lock).
    fn slot_for(&self, params: JpegParams, now: Instant) -> (Arc<Slot>, Vec<Arc<Slot>>) {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.iter_mut().find(|e| e.params == params) {
            e.last_used = e.last_used.max(now);
            return (Arc::clone(&e.slot), Vec::new());
        }
        let slot = Arc::new(Slot::default());
        let mut evicted = Vec::new();
        while entries.len() >= MAX_ENCODERS_PER_CAMERA {
            let lru = (0..entries.len())
                .min_by_key(|&i| entries[i].last_used)
                .expect("not empty");
            evicted.push(entries.remove(lru).slot);
        }
        entries.push(Entry {
            params,
            slot: Arc::clone(&slot),
            last_used: now,
        });
        (slot, evicted)
    }

    /// A place in the process's budget for a new encoder in `slot`. When the budget is
    /// spent, this camera's other encoders go, least recently used first; a camera with
    /// none to give up gets [`JpegError::Busy`].
    fn permit(&self, slot: &Arc<Slot>) -> Result<Permit, JpegError> {
        loop {
            if let Some(p) = self.budget.try_take(&self.live) {
                return Ok(p);
            }
            let victim = {
                let mut entries = self.entries.lock();
                let lru = (0..entries.len())
                    .filter(|&i| !Arc::ptr_eq(&entries[i].slot, slot))
                    .min_by_key(|&i| entries[i].last_used);
                match lru {
                    Some(i) => entries.remove(i).slot,
                    None => return Err(JpegError::Busy),
                }
            };
            victim.retire();
        }
    }

    /// Frees the encoders unused for [`ENCODER_IDLE`] at `now`, and the cached pictures
    /// once no encoder is left. Returns how many encoders it retired. Cheap (a scan of at
    /// most [`MAX_ENCODERS_PER_CAMERA`] entries); call it on the camera thread's tick.
    pub fn sweep(&self, now: Instant) -> usize {
        let (idle, none_left) = {
            let mut entries = self.entries.lock();
            let mut idle = Vec::new();
            entries.retain(|e| {
                let keep = now.saturating_duration_since(e.last_used) < ENCODER_IDLE;
                if !keep {
                    idle.push(Arc::clone(&e.slot));
                }
                keep
            });
            (idle, entries.is_empty())
        };
        for s in &idle {
            s.retire();
        }
        if none_left && !idle.is_empty() {
            self.cache.lock().clear();
        }
        idle.len()
    }

    fn cached(&self, seq: u64, params: JpegParams) -> Option<Arc<Jpeg>> {
        self.cache
            .lock()
            .iter()
            .find(|j| j.seq == seq && j.params == params)
            .cloned()
    }

    /// JPEG encodes done so far (for status and the benchmark).
    pub fn encodes(&self) -> u64 {
        self.encodes.load(Ordering::Relaxed)
    }

    /// How long the encodes so far took (seconds, bucketed).
    pub fn encode_time(&self) -> meter::Snapshot {
        self.encode_time.snapshot()
    }

    /// Encoder pipelines of this camera alive now.
    pub fn encoders(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Encoder pipelines alive in the whole process now.
    pub fn total_encoders() -> usize {
        PROCESS_BUDGET.live()
    }

    /// Frees every encoder and cached picture (nobody watches any more).
    pub fn release(&self) {
        let slots: Vec<Arc<Slot>> = self.entries.lock().drain(..).map(|e| e.slot).collect();
        for s in &slots {
            s.retire();
        }
        self.cache.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer::prelude::*;

    #[test]
    fn fit_keeps_small_pictures() {
        assert_eq!(fit(1280, 720, None), (1280, 720));
        assert_eq!(fit(1920, 1080, None), (1920, 1080));
    }

    #[test]
    fn fit_scales_4k_and_odd_aspects_down() {
        assert_eq!(fit(3840, 2160, None), (1920, 1080));
        assert_eq!(fit(4000, 3000, None), (1440, 1080));
        assert_eq!(fit(3840, 1080, None), (1920, 540));
    }

    #[test]
    fn fit_honours_width_without_upscaling() {
        assert_eq!(fit(1920, 1080, Some(640)), (640, 360));
        assert_eq!(fit(640, 360, Some(1280)), (640, 360));
        assert_eq!(fit(1920, 1080, Some(1)), (16, 8));
    }

    #[test]
    fn widths_snap_to_the_rung_not_above() {
        let cases = [
            (None, None),
            (Some(16), Some(160)),
            (Some(159), Some(160)),
            (Some(160), Some(160)),
            (Some(319), Some(160)),
            (Some(320), Some(320)),
            (Some(479), Some(320)),
            (Some(640), Some(640)),
            (Some(959), Some(640)),
            (Some(960), Some(960)),
            (Some(1279), Some(960)),
            (Some(1280), Some(1280)),
            (Some(1919), Some(1280)),
            (Some(1920), None),
            (Some(7680), None),
        ];
        for (asked, served) in cases {
            assert_eq!(snap_width(asked), served, "width {asked:?}");
        }
        // Full size and 1920 are the same picture, so they share an encoder.
        assert_eq!(fit(3840, 2160, Some(1920)), fit(3840, 2160, None));
        assert_eq!(fit(4000, 3000, Some(1920)), fit(4000, 3000, None));
    }

    #[test]
    fn qualities_snap_to_the_nearest_step() {
        let cases = [
            (1, 25),
            (25, 25),
            (37, 25),
            (38, 50),
            (50, 50),
            (57, 50),
            (58, 65),
            (65, 65),
            (72, 65),
            (73, 80),
            (80, 80),
            (85, 90), // a tie goes up
            (90, 90),
            (92, 90),
            (93, 95),
            (100, 95),
        ];
        for (asked, served) in cases {
            assert_eq!(snap_quality(asked), served, "quality {asked}");
        }
        assert_eq!(
            JpegParams::default(),
            JpegParams::new(None, DEFAULT_QUALITY)
        );
        assert_eq!(
            JpegParams::new(Some(700), 51),
            JpegParams {
                width: Some(640),
                quality: 50
            }
        );
        // Every (width, quality) the API accepts maps into a small key space.
        let mut keys = std::collections::HashSet::new();
        for w in 16..=7680 {
            for q in 1..=100 {
                keys.insert(JpegParams::new(Some(w), q));
            }
        }
        assert_eq!(keys.len(), WIDTH_LADDER.len() * QUALITY_STEPS.len());
    }

    /// One `width`×`height` I420 picture from `videotestsrc`.
    pub(crate) fn test_frame(seq: u64, width: i32, height: i32) -> Frame {
        let (pipeline, sink) = crate::camera::pipeline::test_source(&format!(
            "videotestsrc num-buffers=1 ! video/x-raw,format=I420,width={width},height={height} \
             ! appsink name=sink sync=false"
        ));
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(10))
            .expect("videotestsrc gave no picture");
        pipeline.set_state(gst::State::Null).unwrap();
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        Frame {
            seq,
            captured: 0.0,
            info,
            buffer: sample.buffer_owned().unwrap(),
        }
    }

    #[test]
    fn idle_encoders_are_freed_while_others_are_used() {
        static BUDGET: EncoderBudget = EncoderBudget::new(8);
        let jpegs = JpegService::with_budget(&BUDGET);
        let frame = test_frame(1, 320, 240);
        let t0 = Instant::now();
        let a = JpegParams::new(Some(160), 50);
        let b = JpegParams::new(None, 80);
        jpegs.get_at(&frame, a, t0).unwrap();
        jpegs.get_at(&frame, b, t0).unwrap();
        assert_eq!(jpegs.encoders(), 2);
        // b stays in use every few seconds; a is never asked for again.
        let mut t = t0;
        for i in 2..=4u64 {
            t = t0 + Duration::from_secs(4 * i);
            let f = test_frame(i, 320, 240);
            let j = jpegs.get_at(&f, b, t).unwrap();
            assert_eq!((j.width, j.height, j.params), (320, 240, b));
        }
        // At t0 + 16 s, `get` swept a (idle 16 s) while b (used at t0 + 16 s) stays.
        assert_eq!(jpegs.encoders(), 1, "the idle encoder was not freed");
        assert_eq!(BUDGET.live(), 1);
        assert_eq!(jpegs.sweep(t + ENCODER_IDLE - Duration::from_millis(1)), 0);
        assert_eq!(jpegs.encoders(), 1);
        assert_eq!(jpegs.sweep(t + ENCODER_IDLE), 1);
        assert_eq!(
            jpegs.encoders(),
            0,
            "nobody asked for 10 s: no encoder left"
        );
        assert_eq!(BUDGET.live(), 0);
        // And a later request makes one again.
        let j = jpegs.get_at(&frame, a, t + 2 * ENCODER_IDLE).unwrap();
        assert_eq!((j.width, j.height), (160, 120));
        assert_eq!(jpegs.encoders(), 1);
    }

    #[test]
    fn lru_per_camera_and_the_process_cap() {
        static BUDGET: EncoderBudget = EncoderBudget::new(5);
        let one = JpegService::with_budget(&BUDGET);
        let two = JpegService::with_budget(&BUDGET);
        let frame = test_frame(7, 1280, 720);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        let p = |w: u32| JpegParams::new(Some(w), 80);
        for (i, w) in [160, 320, 480, 640].into_iter().enumerate() {
            one.get_at(&frame, p(w), at(i as u64)).unwrap();
        }
        assert_eq!(one.encoders(), MAX_ENCODERS_PER_CAMERA);
        // A fifth size pushes out the least recently used (160, then 320 after 160 is
        // asked for again).
        one.get_at(&frame, p(160), at(10)).unwrap(); // cached, but counts as use
        one.get_at(&frame, p(960), at(11)).unwrap();
        assert_eq!(one.encoders(), MAX_ENCODERS_PER_CAMERA);
        let kept: Vec<_> = one.entries.lock().iter().map(|e| e.params).collect();
        assert!(!kept.contains(&p(320)), "{kept:?}");
        assert!(kept.contains(&p(160)), "{kept:?}");
        // The process has room for one more: camera two takes it...
        two.get_at(&frame, p(160), at(12)).unwrap();
        assert_eq!(BUDGET.live(), 5);
        // ...then, with the budget spent, gives up its own LRU encoder for a new one.
        two.get_at(&frame, p(320), at(13)).unwrap();
        assert_eq!((two.encoders(), BUDGET.live()), (1, 5));
        // A camera with no encoder to give up is told the process is busy.
        let three = JpegService::with_budget(&BUDGET);
        let err = three
            .get_at(&frame, p(160), at(14))
            .err()
            .expect("over the cap");
        assert!(matches!(err, JpegError::Busy), "{err}");
        assert!(err.to_string().contains("busy"), "{err}");
        assert_eq!(three.encoders(), 0);
        // Once another camera frees its encoders, there is room again.
        one.release();
        assert_eq!(BUDGET.live(), 1);
        three.get_at(&frame, p(160), at(15)).unwrap();
        assert_eq!(BUDGET.live(), 2);
    }

    #[test]
    fn one_encode_per_picture_and_params() {
        static BUDGET: EncoderBudget = EncoderBudget::new(4);
        let jpegs = JpegService::with_budget(&BUDGET);
        let frame = test_frame(3, 320, 240);
        let a = jpegs.get(&frame, JpegParams::new(Some(300), 49)).unwrap();
        // Other asks that snap to the same params share the encode.
        let b = jpegs
            .get(
                &frame,
                JpegParams {
                    width: Some(319),
                    quality: 52,
                },
            )
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(jpegs.encodes(), 1);
        assert_eq!((a.width, a.height), (160, 120));
        assert_eq!(a.data[..2], [0xFF, 0xD8]);
    }
}
