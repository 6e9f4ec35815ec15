//! The decoder of one camera session: `appsrc` of access units → decoder → appsink of
//! raw pictures, and the choice of decoder element (hardware where the device has one).
//!
//! It runs only while someone watches (see `DecodeMode`), fed first with the access units
//! since the last keyframe so a picture comes within a few frames' decode time.

use std::collections::VecDeque;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use parking_lot::Mutex;

use super::feed::Feed;
use super::pipeline::{make, AccessUnit, PipelineError};
use super::Codec;
use crate::clock::unix_now;

/// Decoder elements that can take `codec`, best first: the override (if any), then by
/// rank. Elements of rank NONE are only used when named by the override.
pub fn candidates(codec: Codec, forced: Option<&str>) -> Vec<String> {
    let caps = gst::Caps::builder(codec.media_type()).build();
    let mut factories: Vec<gst::ElementFactory> = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_VIDEO,
        gst::Rank::MARGINAL,
    )
    .into_iter()
    .filter(|f| f.can_sink_any_caps(&caps))
    .collect();
    factories.sort_by_key(|f| std::cmp::Reverse(f.rank()));
    let mut names: Vec<String> = factories.iter().map(|f| f.name().to_string()).collect();
    if let Some(forced) = forced {
        names.retain(|n| n != forced);
        names.insert(0, forced.to_owned());
    }
    names
}

/// Whether an element name looks like a hardware decoder (for status and logs).
pub fn is_hardware(name: &str) -> bool {
    !(name.starts_with("avdec_") || name.starts_with("openh264") || name == "libde265dec")
}

/// Arrival times by PTS, oldest first.
type Arrivals = Arc<Mutex<VecDeque<(Option<gst::ClockTime>, f64)>>>;

/// A running decoder. Dropping it stops it.
pub struct Decoder {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    element: String,
    /// Arrival times by PTS, to stamp each decoded picture with its capture time.
    arrivals: Arrivals,
    bus: gst::Bus,
}

impl Decoder {
    /// Starts the first candidate that comes up; decoded pictures go to `feed`.
    pub fn start(
        caps: &gst::Caps,
        codec: Codec,
        candidates: &[String],
        threads: u32,
        feed: Arc<Feed>,
    ) -> Result<Decoder, PipelineError> {
        let mut last_err = PipelineError(format!("no decoder for {}", codec.media_type()));
        for name in candidates {
            match Decoder::start_with(caps, name, threads, Arc::clone(&feed)) {
                Ok(d) => return Ok(d),
                Err(e) => {
                    log::warn!("decoder {name} failed to start ({e}); trying the next one");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    fn start_with(
        caps: &gst::Caps,
        name: &str,
        threads: u32,
        feed: Arc<Feed>,
    ) -> Result<Decoder, PipelineError> {
        let pipeline = gst::Pipeline::with_name("decoder");
        let appsrc = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(true)
            // Never block the camera's streaming thread; 32 MB is seconds of 4K.
            .block(false)
            .max_bytes(32 * 1024 * 1024)
            .build();
        let dec = make(name)?;
        if dec.has_property("max-threads") {
            dec.set_property("max-threads", threads.max(1) as i32);
        }
        if dec.has_property("thread-type") {
            // Frame threading holds back one picture per extra thread: latency.
            dec.set_property_from_str("thread-type", "slice");
        }
        if dec.has_property("output-corrupt") {
            dec.set_property("output-corrupt", false);
        }
        // Jetson's decoder outputs NVMM (device) memory: only nvvidconv brings it to
        // system memory. Everything else negotiates system memory with videoconvert,
        // which passes I420/NV12 through untouched.
        let convert = make(if name.starts_with("nvv4l2") {
            "nvvidconv"
        } else {
            "videoconvert"
        })?;
        let filter = make("capsfilter")?;
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", gst::List::new(["I420", "NV12", "YV12"]))
                .build(),
        );
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(1)
            .drop(true)
            .build();
        let arrivals: Arrivals = Arc::new(Mutex::new(VecDeque::with_capacity(64)));
        let arrivals_cb = Arc::clone(&arrivals);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let Ok(info) = gst_video::VideoInfo::from_caps(caps) else {
                        return Err(gst::FlowError::NotNegotiated);
                    };
                    let captured = take_arrival(&arrivals_cb, buffer.pts());
                    feed.slot.publish(captured, info, buffer);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let elems = [
            appsrc.upcast_ref::<gst::Element>(),
            &dec,
            &convert,
            &filter,
            sink.upcast_ref(),
        ];
        pipeline
            .add_many(elems)
            .map_err(|e| PipelineError(e.to_string()))?;
        gst::Element::link_many(elems).map_err(|e| PipelineError(e.to_string()))?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        if pipeline.set_state(gst::State::Playing).is_err() {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(PipelineError(format!("decoder {name} refused to start")));
        }
        Ok(Decoder {
            pipeline,
            appsrc,
            element: name.to_owned(),
            arrivals,
            bus,
        })
    }

    pub fn element(&self) -> &str {
        &self.element
    }

    /// Queues one access unit; never blocks.
    pub fn push(&self, au: &AccessUnit) {
        {
            let mut a = self.arrivals.lock();
            if a.len() >= 64 {
                a.pop_front();
            }
            a.push_back((au.buffer.pts(), au.arrived));
        }
        let _ = self.appsrc.push_buffer(au.buffer.clone());
    }

    /// The decoder's error, if it reported one since the last call.
    pub fn error(&self) -> Option<String> {
        while let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(format!("decoder {}: {}", self.element, e.error()));
            }
        }
        None
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn take_arrival(
    arrivals: &Mutex<VecDeque<(Option<gst::ClockTime>, f64)>>,
    pts: Option<gst::ClockTime>,
) -> f64 {
    let mut a = arrivals.lock();
    if let Some(i) = a.iter().position(|(p, _)| *p == pts && pts.is_some()) {
        let t = a[i].1;
        a.drain(..=i);
        return t;
    }
    unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264_caps() -> gst::Caps {
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build()
    }

    #[test]
    fn candidates_rank_software_and_honour_the_override() {
        gst::init().unwrap();
        let all = candidates(Codec::H264, None);
        assert!(all.iter().any(|c| c == "avdec_h264"), "{all:?}");
        let forced = candidates(Codec::H264, Some("v4l2h264dec"));
        assert_eq!(forced[0], "v4l2h264dec");
        assert_eq!(forced.iter().filter(|c| *c == "v4l2h264dec").count(), 1);
        assert!(candidates(Codec::H265, None)
            .iter()
            .any(|c| c == "avdec_h265"));
        assert!(!is_hardware("avdec_h264"));
        assert!(is_hardware("nvv4l2decoder"));
    }

    #[test]
    fn falls_back_when_the_preferred_decoder_is_missing() {
        gst::init().unwrap();
        let names = vec!["nvv4l2decoder_not_here".to_owned(), "avdec_h264".to_owned()];
        let d = Decoder::start(&h264_caps(), Codec::H264, &names, 1, Feed::new()).unwrap();
        assert_eq!(d.element(), "avdec_h264");
    }

    #[test]
    fn no_candidate_is_an_error() {
        gst::init().unwrap();
        let names = vec!["nothing_here".to_owned()];
        let err = Decoder::start(&h264_caps(), Codec::H264, &names, 1, Feed::new())
            .err()
            .expect("no decoder can start");
        assert!(err.0.contains("nothing_here"), "{}", err.0);
    }
}
