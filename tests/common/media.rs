//! GStreamer sources for tests that feed the product's pipelines directly (decoder,
//! JPEG service): a described pipeline ending in `appsink name=sink`.

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
