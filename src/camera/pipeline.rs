//! Every GStreamer pipeline ptz-edge runs, and the only module that builds elements:
//!
//! - [`Ingest`]: one camera session, `rtspsrc` → depay → parse → appsink of whole access
//!   units. No decoding here, so a camera nobody watches costs only the depayloading.
//! - [`DecoderPipeline`]: `appsrc` of access units → decoder → convert → appsink of raw
//!   pictures (what to feed it, and when to drop, is `decode.rs`'s policy).
//! - [`JpegPipeline`]: `appsrc` of raw pictures → videocrop (for a crop) → videoscale →
//!   jpegenc → appsink (which encoders to keep is `jpeg.rs`'s policy).
//!
//! One session uses one lower transport (TCP-interleaved or UDP), never rtspsrc's own
//! `tcp+udp` fallback: that one tries UDP first and, when UDP brings nothing, waits out
//! its whole `timeout` before it re-opens over TCP (the 3.1 s session start of issue 14,
//! see `docs/rtsp-session-start.md`). Which transport to try is the camera thread's
//! choice (`supervisor::TransportPlan`); how long each step of the start may take is its
//! `SessionStart`, fed by the [`BusEvent::Step`] and [`BusEvent::FirstRtp`] events here.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{CameraSpec, Codec, LowerTransport};
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

/// A step of a session start, in order, as rtspsrc reports it in its progress messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionStep {
    /// TCP connect to the camera's RTSP port.
    Connect,
    /// OPTIONS and DESCRIBE (with the 401 round trip when the camera asks for auth).
    Describe,
    /// SETUP of the video stream.
    Setup,
    /// PLAY, until the camera answers it.
    Play,
    /// PLAY answered; waiting for the first RTP packet.
    FirstRtp,
}

impl SessionStep {
    /// The step a progress message of rtspsrc (1.22) starts, if any. Codes and texts are
    /// rtspsrc's `GST_ELEMENT_PROGRESS` calls: "connect" CONTINUE "Connecting to ...",
    /// "open" CONTINUE "Retrieving server options" / "Retrieving media info", "request"
    /// CONTINUE "SETUP stream N" and "Sending PLAY request", "request" COMPLETE "Sent
    /// PLAY request". The START messages are not used: rtspsrc posts them when a
    /// command is queued (PLAY's comes before the connect has even begun).
    pub fn from_progress(kind: gst::ProgressType, code: &str, text: &str) -> Option<SessionStep> {
        use gst::ProgressType as P;
        match (kind, code) {
            (P::Continue, "connect") => Some(SessionStep::Connect),
            (P::Continue, "open") if text.starts_with("Retrieving") => Some(SessionStep::Describe),
            (P::Continue, "request") if text.starts_with("SETUP") => Some(SessionStep::Setup),
            (P::Continue, "request") if text.contains("PLAY") => Some(SessionStep::Play),
            (P::Complete, "request") if text.contains("PLAY") => Some(SessionStep::FirstRtp),
            _ => None,
        }
    }
}

impl std::fmt::Display for SessionStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionStep::Connect => "TCP connect",
            SessionStep::Describe => "DESCRIBE",
            SessionStep::Setup => "SETUP",
            SessionStep::Play => "PLAY",
            SessionStep::FirstRtp => "first RTP packet",
        })
    }
}

/// What the bus (and the first RTP buffer) tell the camera's thread.
#[derive(Debug, Clone)]
pub enum BusEvent {
    Error(String),
    Eos,
    /// rtspsrc moved on to this step of the session start.
    Step(SessionStep),
    /// The first RTP packet of the video stream left rtspsrc.
    FirstRtp,
    /// A warning from an element (e.g. "The server closed the connection"): logged,
    /// the session goes on.
    Warning(String),
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

/// rtspsrc's own bound on the TCP connect and on each RTSP reply (`tcp-timeout`). A
/// backstop only: the camera thread's step bounds (`supervisor::SessionStart`) are
/// shorter and end a stuck session first, with a log line naming the step.
const RTSP_IO_TIMEOUT_US: u64 = 4_000_000;

/// A running (or starting) ingest pipeline. Dropping it stops it.
pub struct Ingest {
    pipeline: gst::Pipeline,
    bus_rx: Receiver<BusEvent>,
}

impl Ingest {
    /// Builds and starts the pipeline over `lower`. Every access unit goes to `on_au` on
    /// a streaming thread; errors, end of stream and the steps of the session start
    /// arrive on [`Ingest::events`].
    pub fn start(
        spec: &CameraSpec,
        lower: LowerTransport,
        on_au: AuSink,
    ) -> Result<Ingest, PipelineError> {
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
        src.set_property("tcp-timeout", RTSP_IO_TIMEOUT_US);
        // One lower transport per session. With "udp" alone rtspsrc has nothing to fall
        // back to; its UDP timeout is off because the camera thread bounds the wait for
        // the first RTP packet itself (and says so in the log).
        src.set_property("timeout", 0u64);
        src.set_property_from_str(
            "protocols",
            match lower {
                LowerTransport::Tcp => "tcp",
                LowerTransport::Udp => "udp",
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

        let (tx, bus_rx) = crossbeam_channel::bounded(32);
        let weak = pipeline.downgrade();
        let linked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_au_pad = Arc::clone(&on_au);
        let rtp_tx = tx.clone();
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if linked.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            match link_video(&pipeline, pad, Arc::clone(&on_au_pad)) {
                Ok(true) => {
                    linked.store(true, std::sync::atomic::Ordering::SeqCst);
                    notify_first_rtp(pad, rtp_tx.clone());
                }
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

/// Sends [`BusEvent::FirstRtp`] once, when the first buffer passes rtspsrc's video pad.
fn notify_first_rtp(pad: &gst::Pad, tx: Sender<BusEvent>) {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, _| {
            let _ = tx.try_send(BusEvent::FirstRtp);
            gst::PadProbeReturn::Remove
        },
    );
}

/// The factory name of the element that posted `msg` (element names carry counters).
fn stage_of(msg: &gst::Message) -> String {
    let stage = match msg.src().and_then(|s| s.downcast_ref::<gst::Element>()) {
        Some(el) => el
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_else(|| el.name().to_string()),
        None => "pipeline".into(),
    };
    if stage == "rtspsrc" {
        "RTSP".to_owned()
    } else {
        stage
    }
}

fn forward(tx: &Sender<BusEvent>, msg: &gst::Message) {
    use gst::MessageView;
    let ev = match msg.view() {
        MessageView::Progress(p) => {
            let (kind, code, text) = p.get();
            match SessionStep::from_progress(kind, code, text) {
                Some(step) => BusEvent::Step(step),
                None => return,
            }
        }
        MessageView::Warning(w) => {
            // The debug text may name the URL, never credentials: they are properties.
            let detail = w
                .debug()
                .map(|d| d.to_string())
                .and_then(|d| d.lines().last().map(|l| l.trim().to_owned()))
                .filter(|d| !d.is_empty() && d.len() < 200)
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            BusEvent::Warning(format!("{}: {}{detail}", stage_of(msg), w.error()))
        }
        MessageView::Error(e) => {
            // Element names carry counters (rtspsrc3); say which stage failed instead.
            // The debug text may name the URL, never credentials: they are properties.
            let stage = stage_of(msg);
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

    /// Ends the input: the decoder gives out what it holds back (reordering delay).
    pub fn end_of_stream(&self) {
        let _ = self.appsrc.end_of_stream();
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

/// A rectangle of source pixels (what `videocrop` cuts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl PixelRect {
    /// The whole `width`×`height` picture.
    pub fn whole(width: u32, height: u32) -> PixelRect {
        PixelRect {
            x: 0,
            y: 0,
            width,
            height,
        }
    }
}

/// `appsrc` of raw pictures (`in_caps`) → videocrop to `crop` (when given) → videoscale to
/// `out` → jpegenc at `quality` → appsink. One streaming thread. Dropping it stops it.
///
/// The crop comes first, so it is cut from the picture at the source's full resolution
/// and only the region is scaled. `videocrop` copies just the region out of the
/// decoder's picture (its zero-copy path, a crop meta, needs a downstream element that
/// reads the meta, and videoscale/jpegenc do not): no full-frame copy per encode.
pub struct JpegPipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    appsink: gst_app::AppSink,
}

impl JpegPipeline {
    pub fn start(
        in_caps: &gst::Caps,
        crop: Option<PixelRect>,
        out: (u32, u32),
        quality: u8,
    ) -> Result<JpegPipeline, PipelineError> {
        let appsrc = gst_app::AppSrc::builder()
            .caps(in_caps)
            .format(gst::Format::Time)
            .build();
        let cropper = match crop {
            None => None,
            Some(r) => {
                let info = gstreamer_video::VideoInfo::from_caps(in_caps)
                    .map_err(|_| PipelineError::Build("picture caps without a size".into()))?;
                let (w, h) = (info.width(), info.height());
                if r.width == 0 || r.height == 0 || r.x + r.width > w || r.y + r.height > h {
                    return Err(PipelineError::Build(format!(
                        "crop {r:?} is not inside the {w}x{h} picture"
                    )));
                }
                let c = make("videocrop")?;
                c.set_property("left", r.x as i32);
                c.set_property("top", r.y as i32);
                c.set_property("right", (w - r.x - r.width) as i32);
                c.set_property("bottom", (h - r.y - r.height) as i32);
                Some(c)
            }
        };
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
        let mut chain = vec![appsrc.upcast_ref::<gst::Element>()];
        chain.extend(cropper.as_ref());
        chain.extend([&scale, &filter, &enc, appsink.upcast_ref()]);
        let pipeline = start_chain("jpeg", &chain)?;
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

/// A test source: `desc` (ending in `appsink name=sink`) started, with its sink. For the
/// unit tests of the modules that feed these pipelines (decode, jpeg).
#[cfg(test)]
pub(crate) fn test_source(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    gst::init().expect("GStreamer init");
    let pipeline = gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("pipeline {desc:?}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline
        .by_name("sink")
        .expect("an element named sink")
        .downcast::<gst_app::AppSink>()
        .expect("sink is an appsink");
    pipeline.set_state(gst::State::Playing).expect("playing");
    (pipeline, sink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst::ProgressType as P;

    /// The progress messages of rtspsrc 1.22 in the order one session start posts them
    /// (captured with GST_DEBUG=rtspsrc:5 against camera-sim), and the steps they start.
    #[test]
    fn rtspsrc_progress_messages_map_to_session_steps() {
        let seen = [
            (P::Start, "open", "Opening Stream", None),
            // Queued with the PLAY command, before the connect: not a step.
            (P::Start, "request", "Sending PLAY request", None),
            (
                P::Continue,
                "connect",
                "Connecting to rtsp://127.0.0.2:8554/1",
                Some(SessionStep::Connect),
            ),
            (
                P::Continue,
                "open",
                "Retrieving server options",
                Some(SessionStep::Describe),
            ),
            (
                P::Continue,
                "open",
                "Retrieving media info",
                Some(SessionStep::Describe),
            ),
            (
                P::Continue,
                "request",
                "SETUP stream 0",
                Some(SessionStep::Setup),
            ),
            (P::Complete, "open", "Opened Stream", None),
            (
                P::Continue,
                "request",
                "Sending PLAY request",
                Some(SessionStep::Play),
            ),
            (
                P::Complete,
                "request",
                "Sent PLAY request",
                Some(SessionStep::FirstRtp),
            ),
        ];
        for (kind, code, text, step) in seen {
            assert_eq!(
                SessionStep::from_progress(kind, code, text),
                step,
                "{code} {text}"
            );
        }
    }
}
