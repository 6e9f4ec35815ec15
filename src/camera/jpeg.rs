//! `JpegService`: a camera's JPEG encoding, with its own bounds. One encode per (picture,
//! crop, size, quality) however many viewers ask; sizes and qualities snapped to a small
//! ladder and crops to a 1/1000 grid, so near-equal asks share; at most
//! [`MAX_ENCODERS_PER_CAMERA`] encoder pipelines per camera (least recently used evicted),
//! idle ones freed after [`ENCODER_IDLE`], and at most [`MAX_ENCODERS_TOTAL`] in the
//! process, whatever the keys.
//!
//! Each encoder is an `appsrc ! [videocrop !] videoscale ! capsfilter ! jpegenc ! appsink`
//! pipeline (one streaming thread): a few MB and a thread each, which is why they are
//! capped. A crop is cut from the decoded picture at the source's resolution, before any
//! scaling: a region of a 4K camera is served with 4K detail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gstreamer as gst;
use parking_lot::Mutex;

use super::frame::Frame;
pub use super::pipeline::PixelRect;
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
pub const CACHE_LEN: usize = 8;

/// What a viewer asks for: a region of the picture (`crop`, cut at the source's full
/// resolution before any scaling), `width` (scaled down only, aspect kept) and JPEG
/// quality.
///
/// [`JpegParams::new`] snaps width and quality to the served ladder (a [`Crop`] is snapped
/// when made); the service snaps whatever it is given again, so a value built field by
/// field is served snapped too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JpegParams {
    pub width: Option<u32>,
    pub quality: u8,
    /// The region served; `None` is the whole picture.
    pub crop: Option<Crop>,
}

impl Default for JpegParams {
    fn default() -> Self {
        JpegParams {
            width: None,
            quality: DEFAULT_QUALITY,
            crop: None,
        }
    }
}

impl JpegParams {
    /// Params snapped to [`WIDTH_LADDER`] and [`QUALITY_STEPS`], whole picture. `None` is
    /// full size.
    pub fn new(width: Option<u32>, quality: u8) -> JpegParams {
        JpegParams {
            width: snap_width(width),
            quality: snap_quality(quality),
            crop: None,
        }
    }

    /// These params with `crop` as the region served.
    pub fn with_crop(self, crop: Option<Crop>) -> JpegParams {
        JpegParams { crop, ..self }
    }

    /// These params as served (see [`JpegParams::new`]).
    pub fn snapped(self) -> JpegParams {
        // A `Crop` is snapped when made (its fields are private).
        JpegParams::new(self.width, self.quality).with_crop(self.crop)
    }
}

/// Crop fractions are snapped to steps of `1 / CROP_GRID` of the picture's width and
/// height. 1/1000: finer than the even-pixel alignment of a 1080p source (2 px of 1920 is
/// 1/960) and within 4 px of a 4K one, so a snapped crop is where the app meant it; and
/// three decimals, so what the app writes with three decimals is served (and echoed in
/// `X-Crop`) exactly. The key space this leaves (10^12 rectangles) is not what bounds
/// memory: encoders are [`MAX_ENCODERS_PER_CAMERA`] per camera (LRU) and
/// [`MAX_ENCODERS_TOTAL`] per process, and cached pictures [`CACHE_LEN`], whatever the
/// keys; snapping makes near-equal asks (0.25 and 0.2500001) share an encoder and a
/// cached picture.
pub const CROP_GRID: u16 = 1000;
/// The smallest region cut, in source pixels each way: a smaller crop grows to this
/// (kept inside the picture), as JPEG's 8x8 blocks and 4:2:0 chroma make less useless.
pub const MIN_CROP_PIXELS: u32 = 16;

/// A region of the picture: left, top, width and height as fractions of the picture's
/// width and height, held in steps of 1/[`CROP_GRID`]. Invariant (kept by [`Crop::new`]):
/// `w, h >= 1` step, `x + w <= CROP_GRID`, `y + h <= CROP_GRID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crop {
    x: u16,
    y: u16,
    w: u16,
    h: u16,
}

impl Crop {
    /// The crop of fractions `x, y, w, h`, snapped to the nearest step of the grid and
    /// kept inside the picture (a size that snaps to 0 becomes one step). Range checks
    /// with clear errors for the client are `api::params`'s; this one never fails, so a
    /// value out of range (or NaN) is clamped, not trusted.
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Crop {
        let grid = f64::from(CROP_GRID);
        let step = |v: f64| {
            let v = if v.is_nan() { 0.0 } else { v };
            (v * grid).round().clamp(0.0, grid) as u16
        };
        let (w, h) = (step(w).max(1), step(h).max(1));
        Crop {
            x: step(x).min(CROP_GRID - w),
            y: step(y).min(CROP_GRID - h),
            w,
            h,
        }
    }

    /// Left, top, width, height as fractions (snapped).
    pub fn fractions(self) -> [f64; 4] {
        let f = |v: u16| f64::from(v) / f64::from(CROP_GRID);
        [f(self.x), f(self.y), f(self.w), f(self.h)]
    }

    /// The pixel rectangle of this crop in a `src_w`×`src_h` picture: even left, top,
    /// width and height (4:2:0 chroma), at least [`MIN_CROP_PIXELS`] each way (or the
    /// picture's size, if smaller), inside the picture.
    pub fn pixels(self, src_w: u32, src_h: u32) -> PixelRect {
        let axis = |start: u16, len: u16, size: u32| -> (u32, u32) {
            let scale = |v: u16| (u64::from(v) * u64::from(size) / u64::from(CROP_GRID)) as u32;
            let even_down = |v: u32| v & !1;
            let even_up = |v: u32| (v + 1) & !1;
            let size_even = even_down(size).max(2.min(size));
            let mut a = even_down(scale(start));
            let mut b = even_up(scale(start + len)).min(size_even);
            let min = MIN_CROP_PIXELS.min(size_even);
            if b < a + min {
                // Grow to the minimum around the start, kept inside the picture.
                b = (a + min).min(size_even);
                a = b - min;
            }
            (a, b - a)
        };
        let (x, width) = axis(self.x, self.w, src_w);
        let (y, height) = axis(self.y, self.h, src_h);
        PixelRect {
            x,
            y,
            width,
            height,
        }
    }
}

impl std::fmt::Display for Crop {
    /// `x,y,w,h` as decimal fractions, as the API takes them (`0.25,0.25,0.5,0.5`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [x, y, w, h] = self.fractions();
        write!(f, "{x},{y},{w},{h}")
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
    /// The params as served (snapped; `crop` is `None` when it covered the whole
    /// picture).
    pub params: JpegParams,
    /// The size of the decoded picture it was made from (the source's resolution).
    pub source: (u32, u32),
    /// The source pixels it shows (the whole picture without a crop).
    pub region: PixelRect,
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
    crop: Option<PixelRect>,
    out: (u32, u32),
    /// Counts this encoder against the camera's and the process's caps until dropped
    /// (declared last: released after the pipeline is down).
    _permit: Permit,
}

impl Encoder {
    fn new(
        in_caps: &gst::Caps,
        crop: Option<PixelRect>,
        out: (u32, u32),
        quality: u8,
        permit: Permit,
    ) -> Result<Encoder, PipelineError> {
        Ok(Encoder {
            pipeline: JpegPipeline::start(in_caps, crop, out, quality)?,
            in_caps: in_caps.clone(),
            crop,
            out,
            _permit: permit,
        })
    }

    fn encode(&self, frame: &Frame) -> Result<Vec<u8>, PipelineError> {
        self.pipeline.encode(frame.buffer.clone())
    }
}

/// One (crop, size, quality)'s encoder, made on first use and remade when the picture size
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
        let whole = PixelRect::whole(frame.width(), frame.height());
        let region = match params.crop {
            Some(c) => c.pixels(whole.width, whole.height),
            None => whole,
        };
        if region == whole {
            // A crop of the whole picture is the picture: one encoder, one cache entry.
            params.crop = None;
        }
        let crop = params.crop.map(|_| region);
        if fit(region.width, region.height, params.width) == fit(region.width, region.height, None)
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
            let out = fit(region.width, region.height, params.width);
            let in_caps = frame
                .info
                .to_caps()
                .map_err(|_| PipelineError::Build("picture has no caps".into()))?;
            let reuse = matches!(&*enc,
                Some(e) if e.out == out && e.crop == crop && e.in_caps == in_caps);
            if !reuse {
                *enc = None; // gives its permit back first
                let permit = self.permit(&slot)?;
                *enc = Some(Encoder::new(&in_caps, crop, out, params.quality, permit)?);
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
                source: (whole.width, whole.height),
                region,
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

    /// Encoded pictures cached now (at most [`CACHE_LEN`]).
    pub fn cached_pictures(&self) -> usize {
        self.cache.lock().len()
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
                quality: 50,
                crop: None,
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
                    crop: None,
                },
            )
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(jpegs.encodes(), 1);
        assert_eq!((a.width, a.height), (160, 120));
        assert_eq!(a.data[..2], [0xFF, 0xD8]);
    }

    #[test]
    fn crops_snap_to_the_grid_and_stay_inside() {
        let c = Crop::new(0.25, 0.25, 0.5, 0.5);
        assert_eq!(c.fractions(), [0.25, 0.25, 0.5, 0.5]);
        assert_eq!(c.to_string(), "0.25,0.25,0.5,0.5");
        assert_eq!(Crop::new(0.2500004, 0.2499996, 0.5000001, 0.5), c);
        assert_ne!(Crop::new(0.251, 0.25, 0.5, 0.5), c);
        assert_eq!(Crop::new(0.0, 0.0, 0.1, 0.1).to_string(), "0,0,0.1,0.1");
        assert_eq!(
            Crop::new(1.0 / 3.0, 0.0, 0.5, 1.0).to_string(),
            "0.333,0,0.5,1"
        );
        // Never fails: sizes that snap to 0 are one step, out of range is clamped in.
        assert_eq!(
            Crop::new(0.0, 0.0, 0.0001, 0.0).fractions()[2..],
            [0.001, 0.001]
        );
        for c in [
            Crop::new(f64::NAN, 2.0, -1.0, f64::INFINITY),
            Crop::new(0.9996, 0.9996, 0.0004, 0.0004),
            Crop::new(1.0, 1.0, 1.0, 1.0),
        ] {
            let [x, y, w, h] = c.fractions();
            assert!(w > 0.0 && h > 0.0 && x + w <= 1.0 && y + h <= 1.0, "{c}");
        }
        // The key space grows with the grid only, one key per snapped crop.
        let mut keys = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let f = |k: u32| f64::from((i * k) % 10_000) / 40_000.0;
            keys.insert(Crop::new(f(7), f(13), 0.5 + f(17), 0.5 + f(19)));
        }
        assert!(keys.len() <= 10_000);
    }

    #[test]
    fn crop_pixels_are_even_inside_and_at_least_16() {
        let px = |c: Crop, w, h| {
            let r = c.pixels(w, h);
            (r.x, r.y, r.width, r.height)
        };
        let quarter = Crop::new(0.25, 0.25, 0.5, 0.5);
        assert_eq!(px(quarter, 3840, 2160), (960, 540, 1920, 1080));
        assert_eq!(px(quarter, 1920, 1080), (480, 270, 960, 540));
        assert_eq!(
            px(Crop::new(0.0, 0.0, 0.1, 0.1), 3840, 2160),
            (0, 0, 384, 216)
        );
        assert_eq!(
            px(Crop::new(0.0, 0.0, 1.0, 1.0), 3840, 2160),
            (0, 0, 3840, 2160)
        );
        // Tiny: grown to 16x16, kept inside at the far corner.
        assert_eq!(
            px(Crop::new(0.5, 0.5, 0.001, 0.001), 3840, 2160),
            (1920, 1080, 16, 16)
        );
        assert_eq!(
            px(Crop::new(0.999, 0.999, 0.001, 0.001), 3840, 2160),
            (3824, 2144, 16, 16)
        );
        // Edges go to even pixels, outwards: 0.333 of 1280 is 426.24 (426), 0.666 of it
        // 852.48 (852); of 720, 239.76 (238) and 479.52 (480).
        assert_eq!(
            px(Crop::new(0.333, 0.333, 0.333, 0.333), 1280, 720),
            (426, 238, 426, 242)
        );
        // Every crop on a coarse grid, at several sizes (odd ones too).
        for (w, h) in [
            (3840, 2160),
            (1920, 1080),
            (640, 360),
            (1281, 721),
            (20, 14),
        ] {
            for i in 0..=20 {
                for j in 1..=20 - i {
                    let c = Crop::new(f64::from(i) / 20.0, 0.0, f64::from(j) / 20.0, 0.013);
                    let r = c.pixels(w, h);
                    assert!(
                        r.x + r.width <= w && r.y + r.height <= h,
                        "{c} {r:?} in {w}x{h}"
                    );
                    assert!(r.x % 2 == 0 && r.y % 2 == 0, "{c} {r:?}");
                    assert!(r.width % 2 == 0 && r.height % 2 == 0, "{c} {r:?}");
                    let min = |s: u32| MIN_CROP_PIXELS.min(s & !1);
                    assert!(r.width >= min(w) && r.height >= min(h), "{c} {r:?}");
                }
            }
        }
    }

    /// A `width`×`height` I420 picture: luma 16 everywhere but in `stripes`, where
    /// columns alternate 235 (even x) and 16 (odd x): detail only full resolution keeps.
    fn striped_frame(seq: u64, width: u32, height: u32, stripes: PixelRect) -> Frame {
        gst::init().expect("GStreamer init");
        let info =
            gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::I420, width, height)
                .build()
                .expect("I420 info");
        let mut data = vec![128u8; info.size()];
        let stride = info.stride()[0] as usize;
        for y in 0..height as usize {
            for x in 0..width as usize {
                let inside = (stripes.x as usize..(stripes.x + stripes.width) as usize)
                    .contains(&x)
                    && (stripes.y as usize..(stripes.y + stripes.height) as usize).contains(&y);
                data[y * stride + x] = if inside && x % 2 == 0 { 235 } else { 16 };
            }
        }
        Frame {
            seq,
            captured: 0.0,
            info,
            buffer: gst::Buffer::from_mut_slice(data),
        }
    }

    /// Luma of a JPEG (stride = width).
    fn luma(jpeg: &Jpeg) -> Vec<u8> {
        let mut d = jpeg_decoder::Decoder::new(&jpeg.data[..]);
        let px = d.decode().expect("the JPEG decodes");
        let info = d.info().expect("info");
        assert_eq!(
            (u32::from(info.width), u32::from(info.height)),
            (jpeg.width, jpeg.height)
        );
        match info.pixel_format {
            jpeg_decoder::PixelFormat::L8 => px,
            jpeg_decoder::PixelFormat::RGB24 => px
                .chunks_exact(3)
                .map(|p| {
                    ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000)
                        as u8
                })
                .collect(),
            f => panic!("pixel format {f:?}"),
        }
    }

    /// Mean |difference| of horizontally adjacent pixels over lines `y0..y1`.
    fn contrast(l: &[u8], width: u32, y0: u32, y1: u32) -> f64 {
        let w = width as usize;
        let mut sum = 0u64;
        let mut n = 0u64;
        for y in y0 as usize..y1 as usize {
            for x in 0..w - 1 {
                sum += u64::from(l[y * w + x].abs_diff(l[y * w + x + 1]));
                n += 1;
            }
        }
        sum as f64 / n as f64
    }

    #[test]
    fn crop_is_cut_at_full_resolution_before_scaling() {
        static BUDGET: EncoderBudget = EncoderBudget::new(8);
        let jpegs = JpegService::with_budget(&BUDGET);
        let stripes = PixelRect {
            x: 960,
            y: 540,
            width: 1920,
            height: 1080,
        };
        let frame = striped_frame(1, 3840, 2160, stripes);
        let quarter = Crop::new(0.25, 0.25, 0.5, 0.5);
        let p = JpegParams::new(None, 95).with_crop(Some(quarter));
        let j = jpegs.get(&frame, p).unwrap();
        assert_eq!((j.width, j.height), (1920, 1080));
        assert_eq!((j.source, j.region), ((3840, 2160), stripes));
        assert_eq!(j.params.crop, Some(quarter));
        let l = luma(&j);
        // Every 1-px stripe is there, from the first line to the last.
        for (y0, y1) in [(0, 8), (536, 544), (1072, 1080)] {
            let c = contrast(&l, 1920, y0, y1);
            assert!(c > 150.0, "lines {y0}..{y1}: contrast {c:.1}, stripes lost");
        }
        // And exactly the region: its first column is a white stripe, its last a black
        // one (the flat black outside starts beyond it).
        let column = |x: usize| (0..1080).map(|y| f64::from(l[y * 1920 + x])).sum::<f64>() / 1080.0;
        assert!(
            column(0) > 200.0 && column(1) < 50.0,
            "{} {}",
            column(0),
            column(1)
        );
        assert!(column(1918) > 200.0 && column(1919) < 50.0);

        // The whole picture scaled to 1080p has no such detail: the stripes are gone.
        let whole = jpegs.get(&frame, JpegParams::new(None, 95)).unwrap();
        assert_eq!((whole.width, whole.height), (1920, 1080));
        let c = contrast(&luma(&whole), 1920, 400, 600);
        assert!(
            c < 40.0,
            "a 2x downscale kept 1-px stripes? contrast {c:.1}"
        );

        // `width` scales the region (not the picture): 960x540 of the 1920x1080 region.
        let half = jpegs
            .get(&frame, p.with_crop(Some(quarter)).snapped())
            .unwrap();
        assert!(Arc::ptr_eq(&half, &j), "same params, same cached picture");
        let small = jpegs
            .get(
                &frame,
                JpegParams::new(Some(960), 95).with_crop(Some(quarter)),
            )
            .unwrap();
        assert_eq!((small.width, small.height), (960, 540));
        // A small crop is served at its pixel size, not blown up: 384x216.
        let tiny = jpegs
            .get(
                &frame,
                JpegParams::new(None, 95).with_crop(Some(Crop::new(0.0, 0.0, 0.1, 0.1))),
            )
            .unwrap();
        assert_eq!((tiny.width, tiny.height), (384, 216));
        // A crop of the whole picture is the picture: the same encoder and cache entry.
        let all = jpegs
            .get(
                &frame,
                JpegParams::new(None, 95).with_crop(Some(Crop::new(0.0, 0.0, 1.0, 1.0))),
            )
            .unwrap();
        assert!(Arc::ptr_eq(&all, &whole));
        assert_eq!(all.params.crop, None);
        assert!(jpegs.encoders() <= MAX_ENCODERS_PER_CAMERA);
    }

    /// Encode time of a crop against the whole 4K picture scaled to 1080p (printed; run
    /// with `--nocapture` to see). The crop must not cost more than the full scale.
    #[test]
    fn crop_encode_cost() {
        static BUDGET: EncoderBudget = EncoderBudget::new(8);
        let jpegs = JpegService::with_budget(&BUDGET);
        let base = test_frame(0, 3840, 2160);
        let frame = |seq| Frame {
            seq,
            captured: 0.0,
            info: base.info.clone(),
            buffer: base.buffer.clone(),
        };
        let cases = [
            ("4K -> 1920x1080 (scaled)", None),
            (
                "crop 0.25,0.25,0.5,0.5 (1920x1080, not scaled)",
                Some(Crop::new(0.25, 0.25, 0.5, 0.5)),
            ),
            (
                "crop 0,0,0.1,0.1 (384x216)",
                Some(Crop::new(0.0, 0.0, 0.1, 0.1)),
            ),
            (
                "crop 0,0,0.8,1 (3072x2160 -> 1536x1080)",
                Some(Crop::new(0.0, 0.0, 0.8, 1.0)),
            ),
        ];
        let mut times = Vec::new();
        for (name, crop) in cases {
            let p = JpegParams::default().with_crop(crop);
            jpegs.get(&frame(1), p).unwrap(); // builds the encoder
            let runs = 10u64;
            let started = Instant::now();
            for seq in 2..2 + runs {
                jpegs.get(&frame(seq), p).unwrap();
            }
            let each = started.elapsed() / runs as u32;
            println!("encode {name}: {:.1} ms", each.as_secs_f64() * 1000.0);
            times.push(each);
        }
        // Loose (a shared 2-core box): cutting 1920x1080 out is not dearer than scaling
        // the whole 3840x2160 to the same size.
        assert!(times[1] < times[0] * 2, "{times:?}");
    }
}
