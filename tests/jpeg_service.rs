//! The JPEG service's bounds from outside: 2,000 distinct (width, quality) pairs on one
//! picture, then 1,000 distinct crops, keep at most `MAX_ENCODERS_PER_CAMERA` encoders
//! alive and `CACHE_LEN` pictures cached, and once they are swept the process has the
//! threads and memory it had with one viewer.
//!
//! Its own test binary (one test), so `/proc/self/task` counts only this work's threads.

mod common;

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use ptz_edge::camera::jpeg::{
    fit, snap_width, Crop, JpegParams, JpegService, CACHE_LEN, ENCODER_IDLE,
    MAX_ENCODERS_PER_CAMERA, MAX_ENCODERS_TOTAL,
};
use ptz_edge::camera::Frame;

/// One 1280×720 I420 picture from `videotestsrc`.
fn test_frame() -> Frame {
    let (pipeline, sink) = common::media::appsink_pipeline(
        "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,format=I420,width=1280,height=720 \
         ! appsink name=sink sync=false",
    );
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(10))
        .expect("videotestsrc gave no picture within 10 s");
    pipeline.set_state(gst::State::Null).expect("stopped");
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("info");
    Frame {
        seq: 1,
        captured: 0.0,
        info,
        buffer: sample.buffer_owned().expect("a buffer"),
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Resident memory in MB (VmRSS of /proc/self/status).
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb / 1024.0
}

#[test]
fn a_sweep_of_2000_sizes_and_qualities_stays_within_the_encoder_caps() {
    gst::init().expect("GStreamer");
    let frame = test_frame();
    let jpegs = JpegService::new();

    // One viewer: the default picture, its encoder made and warm.
    let t0 = Instant::now();
    let first = jpegs
        .get_at(&frame, JpegParams::default(), t0)
        .expect("the default JPEG");
    assert_eq!((first.width, first.height), (1280, 720));
    let (threads_one, rss_one) = (threads(), rss_mb());

    let mut max_encoders = 0;
    let mut max_threads = 0;
    let mut pairs = std::collections::HashSet::new();
    let mut sizes = std::collections::BTreeSet::new();
    let mut now = t0;
    for i in 0..2000u32 {
        // Distinct widths (16..=7680, stride coprime with the range) and a spread of
        // qualities: 2,000 distinct pairs, in an order that hops between rungs.
        let width = 16 + (i * 3833) % 7665;
        let quality = 1 + ((i * 37) % 100) as u8;
        assert!(pairs.insert((width, quality)));
        now += Duration::from_millis(1);
        let jpeg = jpegs
            .get_at(
                &frame,
                JpegParams {
                    width: Some(width),
                    quality,
                    crop: None,
                },
                now,
            )
            .unwrap_or_else(|e| panic!("width {width} quality {quality}: {e}"));
        assert_eq!(
            (jpeg.width, jpeg.height),
            fit(1280, 720, snap_width(Some(width))),
            "width {width}"
        );
        sizes.insert((jpeg.width, jpeg.height));
        assert!(
            jpeg.params.width.is_none_or(|w| w < 1280),
            "{:?}",
            jpeg.params
        );
        let live = jpegs.encoders();
        assert!(
            live <= MAX_ENCODERS_PER_CAMERA,
            "{live} encoders alive after request {i} (cap {MAX_ENCODERS_PER_CAMERA})"
        );
        assert!(JpegService::total_encoders() <= MAX_ENCODERS_TOTAL);
        max_encoders = max_encoders.max(live);
        if i % 50 == 0 {
            max_threads = max_threads.max(threads());
        }
    }
    let (threads_2000, rss_2000) = (threads(), rss_mb());
    let encodes = jpegs.encodes();

    // Nobody asks for 10 s: the camera thread's tick sweeps every encoder.
    let swept = jpegs.sweep(now + ENCODER_IDLE);
    assert_eq!(jpegs.encoders(), 0, "encoders left after the idle sweep");
    let (threads_swept, rss_swept) = (threads(), rss_mb());

    println!(
        "one viewer: {threads_one} threads, {rss_one:.1} MB | after 2,000 pairs: {threads_2000} \
         threads (max {max_threads}), {rss_2000:.1} MB, {max_encoders} encoders max, {encodes} \
         encodes, {} sizes | after the sweep ({swept} freed): {threads_swept} threads, \
         {rss_swept:.1} MB",
        sizes.len()
    );
    // The ladder's rungs up to the source's 1280 (1920 and full size are 1280×720 too).
    assert_eq!(sizes.len(), 6, "sizes served: {sizes:?}");
    // Each encoder is one streaming thread; GLib's pool may keep a couple warm.
    assert!(
        max_threads <= threads_one + MAX_ENCODERS_PER_CAMERA + 4,
        "threads: {threads_one} with one viewer, up to {max_threads} during the sweep"
    );
    // GLib's task pool may keep the freed encoders' threads warm for its idle time (and
    // GStreamer starts a helper thread or two on first use): a few, never one per pair.
    assert!(
        threads_swept <= threads_one + MAX_ENCODERS_PER_CAMERA + 2,
        "threads: {threads_one} with one viewer, {threads_swept} after the sweep"
    );
    assert!(
        rss_swept <= rss_one + 20.0,
        "RSS: {rss_one:.1} MB with one viewer, {rss_swept:.1} MB after the sweep"
    );

    // 1,000 distinct crops (each a new encoder key), with a spread of widths, on
    // pictures that change every 10 requests: the same bounds hold.
    let mut crops = std::collections::HashSet::new();
    let mut max_threads = 0;
    let mut max_cached = 0;
    let mut frame = frame;
    for i in 0..1000u32 {
        let f = |k: u32, m: u32| f64::from((i * k) % m) / 1000.0;
        let (w, h) = (0.05 + f(613, 900), 0.05 + f(389, 900));
        let (x, y) = (f(271, 1000) * (1.0 - w), f(457, 1000) * (1.0 - h));
        let crop = Crop::new(x, y, w, h);
        crops.insert(crop);
        let width = [None, Some(160), Some(640), Some(1280)][(i % 4) as usize];
        if i % 10 == 0 {
            frame.seq += 1;
        }
        now += Duration::from_millis(1);
        let p = JpegParams::new(width, 80).with_crop(Some(crop));
        let jpeg = jpegs
            .get_at(&frame, p, now)
            .unwrap_or_else(|e| panic!("crop {crop}: {e}"));
        let r = crop.pixels(1280, 720);
        assert_eq!(jpeg.region, r, "crop {crop}");
        assert_eq!(
            (jpeg.width, jpeg.height),
            fit(r.width, r.height, snap_width(width)),
            "crop {crop} width {width:?}"
        );
        assert!(
            jpegs.encoders() <= MAX_ENCODERS_PER_CAMERA,
            "after crop {i}"
        );
        assert!(JpegService::total_encoders() <= MAX_ENCODERS_TOTAL);
        max_cached = max_cached.max(jpegs.cached_pictures());
        if i % 50 == 0 {
            max_threads = max_threads.max(threads());
        }
    }
    assert!(crops.len() > 900, "{} distinct crops", crops.len());
    assert!(max_cached <= CACHE_LEN, "{max_cached} pictures cached");
    let rss_crops = rss_mb();
    jpegs.sweep(now + ENCODER_IDLE);
    assert_eq!(jpegs.encoders(), 0);
    assert_eq!(jpegs.cached_pictures(), 0);
    let (threads_crops_swept, rss_crops_swept) = (threads(), rss_mb());
    println!(
        "after {} crops: {rss_crops:.1} MB, threads max {max_threads}, {max_cached} cached \
         | swept: {threads_crops_swept} threads, {rss_crops_swept:.1} MB",
        crops.len()
    );
    assert!(
        max_threads <= threads_one + MAX_ENCODERS_PER_CAMERA + 4,
        "threads: {threads_one} with one viewer, up to {max_threads} during the crops"
    );
    assert!(
        threads_crops_swept <= threads_one + MAX_ENCODERS_PER_CAMERA + 2,
        "threads: {threads_one} with one viewer, {threads_crops_swept} after the crops"
    );
    assert!(
        rss_crops_swept <= rss_one + 20.0,
        "RSS: {rss_one:.1} MB with one viewer, {rss_crops_swept:.1} MB after the crops"
    );
}
