//! Every GStreamer pipeline ptz-edge runs, and the only module that builds elements:
//!
//! - [`Ingest`]: one camera session, `rtspsrc` → depay → parse → appsink of whole access
//!   units. No decoding here, so a camera nobody watches costs only the depayloading.
//! - [`DecoderPipeline`]: `appsrc` of access units → decoder → convert → appsink of raw
//!   pictures (what to feed it, and when to drop, is `decode.rs`'s policy).
//! - [`JpegPipeline`]: `appsrc` of raw pictures → videoscale → jpegenc → appsink (which
//!   encoders to keep is `jpeg.rs`'s policy).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{CameraSpec, Codec, Transport};
use crate::clock::unix_now;

/// One encoded picture as it left the parser.
#[derive(Clone)]
pub struct AccessUnit {
    pub buffer: gst::Buffer,
    pub caps: gst::Caps,
    pub codec: Codec,
    /// Unix seconds when it reached us.
    pub arrived: f64,
    pub keyframe: bool,
}

/// What the bus tells the camera's thread.
#[derive(Debug, Clone)]
pub enum BusEvent {
    Error(String),
    Eos,
}

/// Why a pipeline could not be built, started or run. The text never holds credentials
/// (they are element properties, never part of a location or a message we build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineError {
    /// A GStreamer element is not installed: install the plugin package (the text names
    /// the element). Trying another element (decoder fallback) may help.
    MissingElement(String),
    /// Elements could not be added or linked, or the stream is not one we handle (e.g. a
    /// codec other than H.264/H.265): the text says which; retrying will not help.
    Build(String),
    /// The pipeline refused to start: the element or device is unusable now; try the next
    /// candidate or retry later.
    Start(String),
    /// A running pipeline failed one job (an encode gave no picture): retry the job.
    Run(String),
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::MissingElement(factory) => write!(
                f,
                "GStreamer element {factory:?} is missing (install the gstreamer1.0-plugins packages)"
            ),
            PipelineError::Build(s) | PipelineError::Start(s) | PipelineError::Run(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for PipelineError {}

pub type AuSink = Arc<dyn Fn(AccessUnit) + Send + Sync>;

/// A running (or starting) ingest pipeline. Dropping it stops it.
pub struct Ingest {
    pipeline: gst::Pipeline,
    bus_rx: Receiver<BusEvent>,
}

impl Ingest {
    /// Builds and starts the pipeline. Every access unit goes to `on_au` on a streaming
    /// thread; errors and end of stream arrive on [`Ingest::events`].
    pub fn start(spec: &CameraSpec, on_au: AuSink) -> Result<Ingest, PipelineError> {
        let pipeline = gst::Pipeline::with_name(&format!("cam-{}", spec.id));
        let src = make("rtspsrc")?;
        src.set_property("location", spec.location());
        if !spec.username.is_empty() || !spec.password.is_empty() {
            // Credentials as properties, never in the URL: they cannot inject into the
            // address and never show in GStreamer's errors or debug logs.
            src.set_property("user-id", &spec.username);
            src.set_property("user-pw", spec.password.expose());
        }
        src.set_property("latency", 0u32);
        src.set_property("drop-on-latency", true);
        src.set_property("do-retransmission", false);
        // Bounds the initial TCP connect and RTSP handshake (µs).
        src.set_property("tcp-timeout", 3_000_000u64);
        src.set_property("timeout", 3_000_000u64);
        src.set_property_from_str(
            "protocols",
            match spec.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
                Transport::Auto => "tcp+udp+udp-mcast",
            },
        );
        pipeline
            .add(&src)
            .map_err(|e| PipelineError::Build(e.to_string()))?;

        // Only the video stream is set up: audio would cost bandwidth and, unlinked,
        // stop the pipeline with not-negotiated / not-linked.
        src.connect("select-stream", false, |args| {
            let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
            let video = caps
                .as_ref()
                .and_then(|c| c.structure(0))
                .and_then(|s| s.get::<&str>("media").ok())
                .is_some_and(|m| m == "video");
            Some(video.to_value())
        });

        let weak = pipeline.downgrade();
        let linked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_au_pad = Arc::clone(&on_au);
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if linked.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            match link_video(&pipeline, pad, Arc::clone(&on_au_pad)) {
                Ok(true) => linked.store(true, std::sync::atomic::Ordering::SeqCst),
                Ok(false) => {}
                Err(e) => {
                    let _ = pipeline.post_message(
                        gst::message::Application::builder(
                            gst::Structure::builder("ptz-edge-error")
                                .field("reason", e.to_string())
                                .build(),
                        )
                        .build(),
                    );
                }
            }
        });

        let (tx, bus_rx) = crossbeam_channel::bounded(16);
        let bus = pipeline.bus().expect("a pipeline has a bus");
        bus.set_sync_handler(move |_, msg| {
            forward(&tx, msg);
            gst::BusSyncReply::Drop
        });

        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| PipelineError::Start("pipeline refused to start".into()))?;
        Ok(Ingest { pipeline, bus_rx })
    }

    pub fn events(&self) -> &Receiver<BusEvent> {
        &self.bus_rx
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn forward(tx: &Sender<BusEvent>, msg: &gst::Message) {
    use gst::MessageView;
    let ev = match msg.view() {
        MessageView::Error(e) => {
            // Element names carry counters (rtspsrc3); say which stage failed instead.
            // The debug text may name the URL, never credentials: they are properties.
            let stage = match msg.src().and_then(|s| s.downcast_ref::<gst::Element>()) {
                Some(el) => el
                    .factory()
                    .map(|f| f.name().to_string())
                    .unwrap_or_else(|| el.name().to_string()),
                None => "pipeline".into(),
            };
            let stage = if stage == "rtspsrc" {
                "RTSP".to_owned()
            } else {
                stage
            };
            let detail = e
                .debug()
                .map(|d| d.to_string())
                .and_then(|d| d.lines().last().map(|l| l.trim().to_owned()))
                .filter(|d| !d.is_empty() && d.len() < 200)
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            BusEvent::Error(format!("{stage}: {}{detail}", e.error()))
        }
        MessageView::Eos(_) => BusEvent::Eos,
        MessageView::Application(a) => match a.structure() {
            Some(s) if s.name() == "ptz-edge-error" => BusEvent::Error(
                s.get::<String>("reason")
                    .unwrap_or_else(|_| "pipeline error".into()),
            ),
            _ => return,
        },
        _ => return,
    };
    let _ = tx.try_send(ev);
}

/// Links rtspsrc's new pad to depay → parse → appsink if it is the video stream.
/// Returns whether it did.
fn link_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    on_au: AuSink,
) -> Result<bool, PipelineError> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else {
        return Ok(false);
    };
    if s.get::<&str>("media").ok() != Some("video") {
        return Ok(false);
    }
    let encoding = s
        .get::<&str>("encoding-name")
        .unwrap_or("")
        .to_ascii_uppercase();
    let codec = match encoding.as_str() {
        "H264" => Codec::H264,
        "H265" => Codec::H265,
        other => {
            return Err(PipelineError::Build(format!(
                "camera sends {other:?} video; only H.264 and H.265 are supported"
            )))
        }
    };
    let (depay, parse, media) = match codec {
        Codec::H264 => ("rtph264depay", "h264parse", "video/x-h264"),
        Codec::H265 => ("rtph265depay", "h265parse", "video/x-h265"),
    };
    let depay = make(depay)?;
    let parse = make(parse)?;
    // Parameter sets before every keyframe: decoding can start at any keyframe we kept.
    parse.set_property("config-interval", -1i32);
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst::Caps::builder(media)
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    );
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(4)
        .drop(false)
        .build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps_owned())
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                on_au(AccessUnit {
                    buffer,
                    caps,
                    codec,
                    arrived: unix_now(),
                    keyframe,
                });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let elems = [&depay, &parse, &filter, sink.upcast_ref::<gst::Element>()];
    pipeline
        .add_many(elems)
        .map_err(|e| PipelineError::Build(e.to_string()))?;
    gst::Element::link_many(elems).map_err(|e| PipelineError::Build(e.to_string()))?;
    for e in elems {
        e.sync_state_with_parent()
            .map_err(|e| PipelineError::Build(e.to_string()))?;
    }
    let sinkpad = depay
        .static_pad("sink")
        .expect("depayloaders have a sink pad");
    pad.link(&sinkpad)
        .map_err(|e| PipelineError::Build(format!("linking the camera's video: {e:?}")))?;
    Ok(true)
}

fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| PipelineError::MissingElement(factory.to_owned()))
}

/// Adds `elems` to a new pipeline named `name`, links them in order and starts it.
fn start_chain(name: &str, elems: &[&gst::Element]) -> Result<gst::Pipeline, PipelineError> {
    let pipeline = gst::Pipeline::with_name(name);
    pipeline
        .add_many(elems)
        .map_err(|e| PipelineError::Build(e.to_string()))?;
    gst::Element::link_many(elems).map_err(|e| PipelineError::Build(e.to_string()))?;
    if pipeline.set_state(gst::State::Playing).is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(PipelineError::Start(format!("{name} refused to start")));
    }
    Ok(pipeline)
}

/// A decoded picture as it left the decoder: raw video (I420, NV12 or YV12) described by
/// `info`.
pub type RawSink = Box<dyn Fn(gst::Buffer, gstreamer_video::VideoInfo) + Send + Sync>;

/// `appsrc` → decoder `element` → convert → appsink. Dropping it stops it.
pub struct DecoderPipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    bus: gst::Bus,
}

impl DecoderPipeline {
    /// Builds and starts a decoder of `caps` with the element `element` (`threads` for
    /// software decoders); every picture goes to `on_raw` on the streaming thread.
    pub fn start(
        caps: &gst::Caps,
        element: &str,
        threads: u32,
        on_raw: RawSink,
    ) -> Result<DecoderPipeline, PipelineError> {
        let appsrc = gst_app::AppSrc::builder()
            .caps(caps)
            .format(gst::Format::Time)
            .is_live(true)
            // Never block the camera's streaming thread. With `block=false` appsrc's own
            // limits only emit `enough-data` and queue on: the caller bounds what it
            // pushes (decode.rs's gate), by `level()`.
            .block(false)
            .max_bytes(0)
            .build();
        let dec = make(element)?;
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
        let convert = make(if element.starts_with("nvv4l2") {
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
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) else {
                        return Err(gst::FlowError::NotNegotiated);
                    };
                    on_raw(buffer, info);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let pipeline = start_chain(
            "decoder",
            &[
                appsrc.upcast_ref::<gst::Element>(),
                &dec,
                &convert,
                &filter,
                sink.upcast_ref(),
            ],
        )?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        Ok(DecoderPipeline {
            pipeline,
            appsrc,
            bus,
        })
    }

    /// Queues one access unit; never blocks.
    pub fn push(&self, buffer: gst::Buffer) {
        let _ = self.appsrc.push_buffer(buffer);
    }

    /// Units waiting in `appsrc` (`current-level-buffers`; by name, as the typed getter
    /// needs the crate's GStreamer 1.20 feature).
    pub fn level(&self) -> u64 {
        self.appsrc.property::<u64>("current-level-buffers")
    }

    /// The decoder's error message, if it posted one since the last call.
    pub fn error(&self) -> Option<String> {
        while let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(e.error().to_string());
            }
        }
        None
    }
}

impl Drop for DecoderPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The JPEG encoder element. libjpeg-turbo's `jpegenc` is fast on every CPU; hardware
/// encoders (nvjpegenc, v4l2jpegenc) need their own memory types and are not used yet.
pub const JPEG_ENCODER: &str = "jpegenc";

/// `appsrc` of raw pictures (`in_caps`) → videoscale to `out` → jpegenc at `quality` →
/// appsink. One streaming thread. Dropping it stops it.
pub struct JpegPipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    appsink: gst_app::AppSink,
}

impl JpegPipeline {
    pub fn start(
        in_caps: &gst::Caps,
        out: (u32, u32),
        quality: u8,
    ) -> Result<JpegPipeline, PipelineError> {
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
        let enc = make(JPEG_ENCODER)?;
        enc.set_property("quality", quality as i32);
        let appsink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(1)
            .build();
        let pipeline = start_chain(
            "jpeg",
            &[
                appsrc.upcast_ref::<gst::Element>(),
                &scale,
                &filter,
                &enc,
                appsink.upcast_ref(),
            ],
        )?;
        Ok(JpegPipeline {
            pipeline,
            appsrc,
            appsink,
        })
    }

    /// Encodes one picture (waiting up to 2 s for the encoder).
    pub fn encode(&self, buffer: gst::Buffer) -> Result<Vec<u8>, PipelineError> {
        self.appsrc
            .push_buffer(buffer)
            .map_err(|e| PipelineError::Run(format!("JPEG encoder: {e:?}")))?;
        let sample = self
            .appsink
            .try_pull_sample(gst::ClockTime::from_seconds(2))
            .ok_or_else(|| PipelineError::Run("JPEG encoder gave no picture".into()))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| PipelineError::Run("JPEG encoder gave an empty sample".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|_| PipelineError::Run("JPEG buffer not readable".into()))?;
        Ok(map.as_slice().to_vec())
    }
}

impl Drop for JpegPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
