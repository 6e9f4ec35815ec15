//! GStreamer sources for tests that feed the product's pipelines directly (decoder,
//! JPEG service): a described pipeline ending in `appsink name=sink`; and media files
//! written at test time (the interop matrix's VLC row), never committed.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Starts `desc` (which must end in `appsink name=sink`) and returns it with its sink.
pub fn appsink_pipeline(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
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

/// Runs `desc` (a pipeline that ends by itself, e.g. sources with `num-buffers` into a
/// muxer and a `filesink`) to its end of stream: how test media files are made, at test
/// time, instead of being committed.
pub fn write_media(desc: &str, timeout: std::time::Duration) -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer init: {e}"))?;
    let pipeline = gst::parse::launch(desc)
        .map_err(|e| format!("pipeline {desc:?}: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| format!("{desc:?} is not a pipeline"))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let result = pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("{desc:?} does not start: {e}"))
        .and_then(|_| {
            let msg = bus
                .timed_pop_filtered(
                    gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
                    &[gst::MessageType::Eos, gst::MessageType::Error],
                )
                .ok_or_else(|| format!("{desc:?} did not end within {timeout:?}"))?;
            match msg.view() {
                gst::MessageView::Error(e) => {
                    Err(format!("{desc:?}: {} ({:?})", e.error(), e.debug()))
                }
                _ => Ok(()),
            }
        });
    let _ = pipeline.set_state(gst::State::Null);
    result
}
