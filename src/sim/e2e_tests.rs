//! End-to-end tests of the simulator: real RTSP clients (rtspsrc → depay → parse →
//! avdec_h264 → appsink) against an in-process [`Simulator`], reading the frame code back
//! from the decoded pictures.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::barcode::{self, FrameCode};
use super::{SimConfig, Simulator};

const PULL_TIMEOUT: Duration = Duration::from_secs(10);

/// A receiving pipeline; set to `Null` on drop.
struct Client {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Client {
    /// Plays `url`, decoding to I420 and then through `tail` (e.g. a scaler), into an
    /// appsink. Credentials go in rtspsrc's properties, never in the URL.
    fn play(url: &str, credentials: Option<(&str, &str)>, tail: &str) -> Client {
        gst::init().expect("gst init");
        let description = format!(
            "rtspsrc name=src latency=0 protocols=tcp ! rtph264depay ! h264parse \
             ! avdec_h264 max-threads=1 output-corrupt=false ! {tail} \
             ! appsink name=sink sync=false max-buffers=64"
        );
        let pipeline = gst::parse::launch(&description)
            .expect("client pipeline")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let src = pipeline.by_name("src").expect("rtspsrc");
        src.set_property("location", url);
        if let Some((user, password)) = credentials {
            src.set_property("user-id", user);
            src.set_property("user-pw", password);
        }
        let sink = pipeline
            .by_name("sink")
            .expect("appsink")
            .downcast::<gst_app::AppSink>()
            .expect("an appsink");
        pipeline
            .set_state(gst::State::Playing)
            .expect("client to play");
        Client { pipeline, sink }
    }

    /// Next decoded frame's code (`None` if the picture has no readable code), with the
    /// picture's width; panics after [`PULL_TIMEOUT`] without a frame.
    fn next_code(&self) -> (Option<FrameCode>, u32) {
        let sample = self
            .sink
            .try_pull_sample(gst::ClockTime::from_seconds(PULL_TIMEOUT.as_secs()))
            .expect("a frame within the timeout");
        let caps = sample.caps().expect("sample caps");
        let info = gst_video::VideoInfo::from_caps(caps).expect("video caps");
        let buffer = sample.buffer().expect("sample buffer");
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).expect("map frame");
        let stride = usize::try_from(frame.plane_stride()[0]).expect("positive stride");
        let luma = frame.plane_data(0).expect("luma plane");
        (
            barcode::read(luma, stride, frame.width(), frame.height()),
            frame.width(),
        )
    }

    /// Codes of the next `n` frames; panics on any frame without a code.
    fn codes(&self, n: usize) -> Vec<FrameCode> {
        (0..n)
            .map(|i| {
                let (code, width) = self.next_code();
                code.unwrap_or_else(|| panic!("frame {i} ({width} px wide) has no code"))
            })
            .collect()
    }

    /// Waits for an error on the bus; returns its message, or `None` after `timeout`.
    fn error_within(&self, timeout: Duration) -> Option<String> {
        let bus = self.pipeline.bus().expect("pipeline bus");
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(left.as_millis() as u64),
                &[gst::MessageType::Error],
            )?;
            if let gst::MessageView::Error(err) = msg.view() {
                return Some(err.error().to_string());
            }
        }
        None
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Counters go up by one per frame (TCP transport, no drops expected) and the send time
/// is recent.
fn assert_sane(codes: &[FrameCode]) {
    for pair in codes.windows(2) {
        assert_eq!(pair[1].counter, pair[0].counter + 1, "{codes:?}");
    }
    let last = codes.last().expect("some codes");
    let age = barcode::latency_ms(last, barcode::now_ms32());
    assert!(age < 5_000, "frame sent {age} ms ago: {codes:?}");
}

fn small_config() -> SimConfig {
    SimConfig {
        width: 320,
        height: 240,
        fps: 30,
        ..SimConfig::default()
    }
}

#[test]
fn decoded_frames_carry_increasing_codes() {
    let sim = Simulator::start(small_config()).expect("start");
    let client = Client::play(&sim.url("/1"), None, "video/x-raw,format=I420");
    let codes = client.codes(20);
    // The first client built the encoder, so it starts near 0 (the first IDR is frame 0).
    assert!(codes[0].counter < 30, "{codes:?}");
    assert_sane(&codes);
    drop(client);
    sim.stop();
}

#[test]
fn paths_are_shared_per_path() {
    let sim = Simulator::start(SimConfig {
        paths: vec!["/1".into(), "/2".into()],
        ..small_config()
    })
    .expect("start");
    let first = Client::play(&sim.url("/1"), None, "video/x-raw,format=I420");
    let codes = first.codes(40);
    assert_sane(&codes);
    // A second client of /1 joins the running encoder: its counters do not restart.
    let second = Client::play(&sim.url("/1"), None, "video/x-raw,format=I420");
    let joined = second.codes(5);
    assert_sane(&joined);
    assert!(
        joined[0].counter > codes[0].counter,
        "{joined:?} vs {codes:?}"
    );
    // /2 has its own encoder, started fresh.
    let other = Client::play(&sim.url("/2"), None, "video/x-raw,format=I420");
    let fresh = other.codes(5);
    assert_sane(&fresh);
    assert!(fresh[0].counter < 30, "{fresh:?}");
}

#[test]
fn code_survives_downscale_and_jpeg() {
    let sim = Simulator::start(SimConfig::default()).expect("start"); // 1280x720
    let tail = "videoscale ! video/x-raw,width=640,height=360 ! jpegenc quality=80 \
                ! jpegdec ! videoconvert ! video/x-raw,format=I420";
    let client = Client::play(&sim.url("/1"), None, tail);
    let codes = client.codes(10);
    assert_sane(&codes);
}

#[test]
fn auth_rejects_wrong_password_and_accepts_right_one() {
    let sim = Simulator::start(SimConfig {
        auth: Some(("viewer".into(), "s3cret".into())),
        ..small_config()
    })
    .expect("start");
    let url = sim.url("/1");

    let anonymous = Client::play(&url, None, "video/x-raw,format=I420");
    let err = anonymous.error_within(PULL_TIMEOUT);
    assert!(err.is_some(), "no credentials must fail");
    drop(anonymous);

    let wrong = Client::play(&url, Some(("viewer", "wrong")), "video/x-raw,format=I420");
    let err = wrong.error_within(PULL_TIMEOUT);
    assert!(err.is_some(), "a wrong password must fail");
    drop(wrong);

    let right = Client::play(&url, Some(("viewer", "s3cret")), "video/x-raw,format=I420");
    assert_sane(&right.codes(5));
}

#[test]
fn stop_with_a_client_playing_ends_its_stream() {
    let sim = Simulator::start(small_config()).expect("start");
    let client = Client::play(&sim.url("/1"), None, "video/x-raw,format=I420");
    assert_sane(&client.codes(3));
    let started = Instant::now();
    sim.stop();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    // The client sees the server go: an error or EOS.
    let bus = client.pipeline.bus().expect("pipeline bus");
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(PULL_TIMEOUT.as_secs()),
        &[gst::MessageType::Error, gst::MessageType::Eos],
    );
    assert!(msg.is_some(), "the client noticed nothing");
}
