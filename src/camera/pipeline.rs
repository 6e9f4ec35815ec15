//! The ingest pipeline of one camera session: `rtspsrc` → depay → parse → appsink of
//! whole access units. No decoding happens here (see `decode.rs`), so a connected camera
//! nobody watches costs only the depayloading.

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

#[derive(Debug)]
pub struct PipelineError(pub String);

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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
            .map_err(|e| PipelineError(e.to_string()))?;

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
                                .field("reason", e.0)
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
            .map_err(|_| PipelineError("pipeline refused to start".into()))?;
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
            return Err(PipelineError(format!(
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
        .map_err(|e| PipelineError(e.to_string()))?;
    gst::Element::link_many(elems).map_err(|e| PipelineError(e.to_string()))?;
    for e in elems {
        e.sync_state_with_parent()
            .map_err(|e| PipelineError(e.to_string()))?;
    }
    let sinkpad = depay
        .static_pad("sink")
        .expect("depayloaders have a sink pad");
    pad.link(&sinkpad)
        .map_err(|e| PipelineError(format!("linking the camera's video: {e:?}")))?;
    Ok(true)
}

pub(crate) fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        PipelineError(format!(
            "GStreamer element {factory:?} is missing (install the gstreamer1.0-plugins packages)"
        ))
    })
}
