//! The decoder's input bound, with real H.264 from x264 (1920×1080, a keyframe every 30
//! units) pushed much faster than `avdec_h264` can decode it:
//!
//! - the old `appsrc` settings (`block=false`, `max-bytes=32MB`) bound nothing: the queue
//!   grows with every unit pushed;
//! - `Decoder` keeps at most `MAX_QUEUED_UNITS` (or `MAX_QUEUED_TIME` of arrival time)
//!   waiting, drops to the next keyframe and counts the drops, never feeds a delta unit
//!   whose reference was dropped, and decodes again once the queue has drained;
//! - the kept GOP replayed at the start (units older than the decoder) is fed whole.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use ptz_edge::camera::decode::{Decoder, Picture, MAX_QUEUED_TIME, MAX_QUEUED_UNITS};
use ptz_edge::camera::pipeline::AccessUnit;
use ptz_edge::camera::Codec;

/// Units in the recording: 8 GOPs of 30.
const UNITS: usize = 240;
const GOP: usize = 30;

/// The recording, made once per test binary: 240 H.264 access units of a 1080p30 test
/// picture (the moving ball over SMPTE bars makes every unit differ).
fn recording() -> &'static [AccessUnit] {
    static AUS: OnceLock<Vec<AccessUnit>> = OnceLock::new();
    AUS.get_or_init(|| {
        let (pipeline, sink) = common::media::appsink_pipeline(&format!(
            "videotestsrc num-buffers={UNITS} pattern=smpte horizontal-speed=8 \
             ! video/x-raw,width=1920,height=1080,framerate=30/1 \
             ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={GOP} bframes=0 \
             ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink sync=false"
        ));
        let mut aus = Vec::with_capacity(UNITS);
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
            let buffer = sample.buffer_owned().expect("a buffer");
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            aus.push(AccessUnit {
                buffer,
                caps: sample.caps_owned().expect("caps"),
                codec: Codec::H264,
                arrived: 0.0,
                keyframe,
            });
            if aus.len() == UNITS {
                break;
            }
        }
        pipeline.set_state(gst::State::Null).expect("stopped");
        assert_eq!(aus.len(), UNITS, "x264 made too few units");
        for (i, au) in aus.iter().enumerate() {
            assert_eq!(au.keyframe, i % GOP == 0, "unit {i}: keyframe every {GOP}");
        }
        aus
    })
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Unit `i` of the recording as if it arrived at `arrived`, its PTS moved on by `round`
/// recordings (so a recording can be pushed again and again).
fn unit(i: usize, round: u64, arrived: f64) -> AccessUnit {
    let mut au = recording()[i].clone();
    let buffer = au.buffer.make_mut();
    let shift = gst::ClockTime::from_seconds(round * (UNITS / GOP) as u64);
    buffer.set_pts(buffer.pts().map(|p| p + shift));
    buffer.set_dts(buffer.dts().map(|p| p + shift));
    au.arrived = arrived;
    au
}

fn h264_decoder() -> (Decoder, Receiver<Picture>) {
    let (tx, rx) = crossbeam_channel::bounded(4 * UNITS);
    let decoder = Decoder::start(
        &recording()[0].caps,
        Codec::H264,
        &["avdec_h264".to_owned()],
        1,
        Arc::new(move |p| {
            let _ = tx.try_send(p);
        }),
    )
    .expect("avdec_h264 starts");
    (decoder, rx)
}

/// Pictures until the decoder has nothing queued (bounded wait, event-driven: each
/// picture out is when the queue can have drained).
fn drain(decoder: &Decoder, pictures: &Receiver<Picture>, out: &mut Vec<Picture>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while decoder.stats().queued > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match pictures.recv_timeout(left) {
            Ok(p) => out.push(p),
            Err(_) => panic!(
                "the decoder did not drain in 60 s: {:?}, {} pictures",
                decoder.stats(),
                out.len()
            ),
        }
    }
}

/// After the queue drained, the last units taken may still be in the decoder: collect
/// pictures until `expected` came (bounded).
fn collect(pictures: &Receiver<Picture>, out: &mut Vec<Picture>, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match pictures.recv_timeout(left) {
            Ok(p) => out.push(p),
            Err(_) => panic!("{} pictures of {expected} came in 30 s", out.len()),
        }
    }
    // None beyond the expected (a few ms for a stray one to show).
    if let Ok(p) = pictures.recv_timeout(Duration::from_millis(300)) {
        panic!(
            "a picture beyond the {expected} fed (captured {})",
            p.captured
        );
    }
}

#[test]
fn the_old_appsrc_settings_bound_nothing() {
    let aus = recording();
    gst::init().expect("GStreamer");
    // The decoder input as it was: appsrc block=false max-bytes=32MB ! avdec_h264.
    let pipeline = gst::Pipeline::with_name("old-decoder");
    let appsrc = gst_app::AppSrc::builder()
        .caps(&aus[0].caps)
        .format(gst::Format::Time)
        .is_live(true)
        .block(false)
        .max_bytes(32 * 1024 * 1024)
        .build();
    let dec = gst::ElementFactory::make("avdec_h264")
        .property("max-threads", 1i32)
        .build()
        .expect("avdec_h264");
    let convert = gst::ElementFactory::make("videoconvert")
        .build()
        .expect("videoconvert");
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .drop(true)
        .build();
    let elems = [
        appsrc.upcast_ref::<gst::Element>(),
        &dec,
        &convert,
        sink.upcast_ref(),
    ];
    pipeline.add_many(elems).expect("add");
    gst::Element::link_many(elems).expect("link");
    pipeline.set_state(gst::State::Playing).expect("playing");

    let rounds = 4u64;
    let mut max_level = 0u64;
    let mut refused = 0;
    for round in 0..rounds {
        for i in 0..UNITS {
            if appsrc.push_buffer(unit(i, round, 0.0).buffer).is_err() {
                refused += 1;
            }
            max_level = max_level.max(appsrc.property::<u64>("current-level-buffers"));
        }
        println!(
            "old settings: after {} units pushed, {} queued ({} bytes)",
            (round + 1) as usize * UNITS,
            appsrc.property::<u64>("current-level-buffers"),
            appsrc.property::<u64>("current-level-bytes"),
        );
    }
    pipeline.set_state(gst::State::Null).expect("stopped");
    println!(
        "old settings: queue max {max_level} of {} pushed",
        rounds as usize * UNITS
    );
    assert_eq!(refused, 0, "appsrc refused units");
    // Pushing is far faster than decoding 1080p: nearly everything waits, many times
    // the new bound.
    assert!(
        max_level > 10 * MAX_QUEUED_UNITS,
        "the old queue stayed at {max_level}: the proof needs a faster burst"
    );
}

/// Pushes `units` (index in the recording, arrival time) at once and returns the
/// highest queue level seen.
fn burst(decoder: &Decoder, units: impl Iterator<Item = (usize, u64, f64)>) -> u64 {
    let mut max_queued = 0;
    for (i, round, arrived) in units {
        decoder.push(&unit(i, round, arrived));
        let s = decoder.stats();
        max_queued = max_queued.max(s.queued);
    }
    max_queued
}

/// The recording indices of the pictures (by their capture stamps: `base + i * step`).
fn decoded(out: &[Picture], base: f64, step: f64) -> BTreeSet<usize> {
    out.iter()
        .map(|p| ((p.captured - base) / step).round() as usize)
        .collect()
}

/// Every decoded unit's GOP was decoded from its keyframe on: no delta unit was fed
/// whose reference had been dropped.
fn assert_reference_chains(indices: &BTreeSet<usize>) {
    for &i in indices {
        let key = i - i % GOP;
        assert!(
            (key..i).all(|j| indices.contains(&j)),
            "unit {i} was decoded without all of {key}..{i}: {indices:?}"
        );
    }
}

#[test]
fn a_burst_is_bounded_in_units_and_drops_to_the_next_keyframe() {
    let aus = recording();
    let (decoder, pictures) = h264_decoder();
    // Arrival stamps 1/30 s apart (a 30 fps camera), after the decoder started: live.
    let base = unix_now() + 1.0;
    let step = 1.0 / 30.0;
    let at = |i: usize| base + i as f64 * step;

    // 5 GOPs at once: far faster than 1080p decodes.
    let first = 5 * GOP;
    let max1 = burst(&decoder, (0..first).map(|i| (i, 0, at(i))));
    let s1 = decoder.stats();
    println!("burst of {first}: queue max {max1}, {s1:?}");
    assert!(s1.dropped > 0, "nothing dropped: {s1:?}");
    assert!(s1.lagging, "not lagging while skipping: {s1:?}");
    let mut out = Vec::new();
    drain(&decoder, &pictures, &mut out);

    // The rest, again at once: decoding resumes at the first keyframe.
    let max2 = burst(&decoder, (first..aus.len()).map(|i| (i, 0, at(i))));
    drain(&decoder, &pictures, &mut out);
    let s = decoder.stats();
    assert!(
        s.lagging,
        "skipping to the next keyframe, yet not lagging: {s:?}"
    );
    // A keyframe and a few units more, as a camera would send them next: decoding goes
    // on, and the decoder no longer lags.
    let more = 10;
    let max3 = burst(&decoder, (0..more).map(|i| (i, 1, at(aus.len() + i))));
    drain(&decoder, &pictures, &mut out);
    let s = decoder.stats();
    assert!(!s.lagging, "still lagging after draining: {s:?}");
    let max2 = max2.max(max3);
    let fed = aus.len() + more - s.dropped as usize;
    collect(&pictures, &mut out, fed);
    let indices = decoded(&out, base, step);
    println!(
        "bounded: queue max {} (bound {MAX_QUEUED_UNITS}), {} dropped of {}, {} pictures out, \
         decoded {indices:?}",
        max1.max(max2),
        s.dropped,
        aus.len() + more,
        out.len()
    );
    assert!(
        max1.max(max2) <= MAX_QUEUED_UNITS,
        "queue reached {} (bound {MAX_QUEUED_UNITS})",
        max1.max(max2)
    );
    assert_eq!(indices.len(), out.len(), "a unit decoded twice");
    assert!(
        indices.iter().any(|&i| i >= first),
        "no picture after the burst: decoding did not resume ({indices:?})"
    );
    let resumed = indices.iter().find(|&&i| i >= first).expect("checked");
    assert_eq!(
        resumed % GOP,
        0,
        "resumed at unit {resumed}, not a keyframe"
    );
    assert!(
        indices.contains(&aus.len()),
        "the keyframe after the skip was not decoded"
    );
    assert_reference_chains(&indices);
    assert_eq!(decoder.error(), None, "the decoder posted an error");
}

#[test]
fn a_burst_is_bounded_in_time() {
    let aus = recording();
    let (decoder, pictures) = h264_decoder();
    // Stamps 1/10 s apart: 1 s of arrival time is 10 units, long before 30 wait.
    let base = unix_now() + 1.0;
    let step = 0.1;
    let at = |i: usize| base + i as f64 * step;
    let max_queued = burst(&decoder, (0..aus.len()).map(|i| (i, 0, at(i))));
    let s = decoder.stats();
    let time_bound = (MAX_QUEUED_TIME.as_secs_f64() / step).round() as u64 + 1;
    drain(&decoder, &pictures, &mut Vec::new());
    println!("time bound: queue max {max_queued} (≤ {time_bound} by time), {s:?}");
    assert!(s.dropped > 0 && s.lagging, "{s:?}");
    assert!(
        max_queued <= time_bound,
        "{max_queued} units (over {:.1} s of arrival time) waited",
        (max_queued as f64 - 1.0) * step
    );
    assert_eq!(decoder.error(), None, "the decoder posted an error");
}

#[test]
fn the_kept_gop_replayed_at_the_start_is_fed_whole() {
    let (decoder, pictures) = h264_decoder();
    // Four GOPs that arrived before the decoder started (the camera keeps up to a few
    // seconds of units since the last keyframe and replays them): more than the bound,
    // but the decoder's first picture must come from the newest of them.
    let step = 1.0 / 30.0;
    let base = unix_now() - 10.0;
    let units = 4 * GOP;
    let max_queued = burst(&decoder, (0..units).map(|i| (i, 0, base + i as f64 * step)));
    let mut out = Vec::new();
    drain(&decoder, &pictures, &mut out);
    collect(&pictures, &mut out, units);
    let s = decoder.stats();
    println!("replay of {units}: queue max {max_queued}, {s:?}");
    assert_eq!(s.dropped, 0, "{s:?}");
    assert!(!s.lagging, "{s:?}");
    // Each picture carries its own unit's arrival, not the time it was decoded.
    let indices = decoded(&out, base, step);
    assert_eq!(indices, (0..units).collect(), "pictures' stamps");
    assert_eq!(decoder.error(), None);
}
