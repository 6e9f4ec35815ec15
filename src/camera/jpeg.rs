//! JPEG encoding on demand: one encode per (picture, size, quality) however many viewers
//! ask, through a reused `appsrc ! videoscale ! jpegenc ! appsink` per size and quality.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use parking_lot::Mutex;

use super::frame::Frame;
use super::pipeline::{make, PipelineError};

/// The largest picture served: larger sources are scaled down to fit, aspect kept.
pub const MAX_WIDTH: u32 = 1920;
pub const MAX_HEIGHT: u32 = 1080;
pub const DEFAULT_QUALITY: u8 = 80;
/// The JPEG encoder element. libjpeg-turbo's `jpegenc` is fast on every CPU; hardware
/// encoders (nvjpegenc, v4l2jpegenc) need their own memory types and are not used yet.
pub const ENCODER: &str = "jpegenc";

/// What a viewer asks for: `width` (scaled down only, aspect kept) and JPEG quality.
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

/// An encoded picture, shared by every viewer of the same frame, size and quality.
pub struct Jpeg {
    pub seq: u64,
    pub captured: f64,
    pub width: u32,
    pub height: u32,
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

struct Encoder {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    appsink: gst_app::AppSink,
    in_caps: gst::Caps,
    out: (u32, u32),
}

impl Encoder {
    fn new(in_caps: &gst::Caps, out: (u32, u32), quality: u8) -> Result<Encoder, PipelineError> {
        let pipeline = gst::Pipeline::with_name("jpeg");
        let appsrc = gst_app::AppSrc::builder()
            .caps(in_caps)
            .format(gst::Format::Time)
            .build();
        let scale = make("videoscale")?;
        let filter = make("capsfilter")?;
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("width", out.0 as i32)
                .field("height", out.1 as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        let enc = make(ENCODER)?;
        enc.set_property("quality", quality as i32);
        let appsink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(1)
            .build();
        let elems = [
            appsrc.upcast_ref::<gst::Element>(),
            &scale,
            &filter,
            &enc,
            appsink.upcast_ref(),
        ];
        pipeline
            .add_many(elems)
            .map_err(|e| PipelineError(e.to_string()))?;
        gst::Element::link_many(elems).map_err(|e| PipelineError(e.to_string()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| PipelineError("JPEG encoder refused to start".into()))?;
        Ok(Encoder {
            pipeline,
            appsrc,
            appsink,
            in_caps: in_caps.clone(),
            out,
        })
    }

    fn encode(&self, frame: &Frame) -> Result<Vec<u8>, PipelineError> {
        self.appsrc
            .push_buffer(frame.buffer.clone())
            .map_err(|e| PipelineError(format!("JPEG encoder: {e:?}")))?;
        let sample = self
            .appsink
            .try_pull_sample(gst::ClockTime::from_seconds(2))
            .ok_or_else(|| PipelineError("JPEG encoder gave no picture".into()))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| PipelineError("JPEG encoder gave an empty sample".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|_| PipelineError("JPEG buffer not readable".into()))?;
        Ok(map.as_slice().to_vec())
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One encoder, made on first use and remade when the picture size changes.
type EncoderSlot = Arc<Mutex<Option<Encoder>>>;

/// Per-camera encoders and the cache of the newest encoded pictures.
#[derive(Default)]
pub struct JpegStore {
    encoders: Mutex<Vec<(JpegParams, EncoderSlot)>>,
    cache: Mutex<Vec<Arc<Jpeg>>>,
    encodes: std::sync::atomic::AtomicU64,
}

/// How many encoded pictures are kept (a few sizes of the newest one or two frames).
const CACHE_LEN: usize = 8;
/// Encoders idle this long are dropped.
const ENCODER_IDLE: Duration = Duration::from_secs(10);

impl JpegStore {
    /// The JPEG of `frame` at `params`, encoding it only if nobody has yet.
    pub fn get(&self, frame: &Frame, params: JpegParams) -> Result<Arc<Jpeg>, PipelineError> {
        if let Some(j) = self.cached(frame.seq, params) {
            return Ok(j);
        }
        let slot = {
            let mut encs = self.encoders.lock();
            match encs.iter().find(|(p, _)| *p == params) {
                Some((_, e)) => Arc::clone(e),
                None => {
                    let e = Arc::new(Mutex::new(None));
                    encs.push((params, Arc::clone(&e)));
                    e
                }
            }
        };
        // One encode at a time per size and quality; whoever waited finds it cached.
        let mut enc = slot.lock();
        if let Some(j) = self.cached(frame.seq, params) {
            return Ok(j);
        }
        let out = fit(frame.width(), frame.height(), params.width);
        let in_caps = frame
            .info
            .to_caps()
            .map_err(|_| PipelineError("picture has no caps".into()))?;
        let reuse = matches!(&*enc, Some(e) if e.out == out && e.in_caps == in_caps);
        if !reuse {
            *enc = Some(Encoder::new(&in_caps, out, params.quality)?);
        }
        let encoder = enc.as_ref().expect("set just above");
        let data = match encoder.encode(frame) {
            Ok(d) => d,
            Err(e) => {
                *enc = None;
                return Err(e);
            }
        };
        self.encodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let jpeg = Arc::new(Jpeg {
            seq: frame.seq,
            captured: frame.captured,
            width: out.0,
            height: out.1,
            params,
            data,
            base64: OnceLock::new(),
        });
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_LEN {
            cache.remove(0);
        }
        cache.push(Arc::clone(&jpeg));
        Ok(jpeg)
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
        self.encodes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Frees every encoder and cached picture (nobody watches any more).
    pub fn release(&self) {
        self.encoders.lock().clear();
        self.cache.lock().clear();
    }

    /// How long an unused store may keep its encoders.
    pub fn idle_limit() -> Duration {
        ENCODER_IDLE
    }
}

#[cfg(test)]
mod tests {
    use super::fit;

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
}
