//! `/frame`: sizes (fit into 1920x1080, `?width=`), quality, parameter errors, and that an
//! on-demand camera still answers with a fresh picture after decoding paused.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn four_k_source_fits_1080p_and_width_scales() {
    let sim = Sim::simple("3840x2160", 10);
    let app = Appliance::start(&[]);
    let took = app.connect_sim("uhd", &sim, "/1");
    eprintln!("connect-to-first-frame (3840x2160@10): {took:?}");

    let s = app.status("uhd");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(3840), Some(2160)),
        "status reports the source size: {s}"
    );

    let r = app.frame("uhd", "");
    let (w, h, code) = jpeg_code(&r.body);
    assert_eq!(
        (w, h),
        (1920, 1080),
        "a 4K picture is scaled to fit 1920x1080"
    );
    let age = code_age_ms(&code);
    assert!(age < 5000, "the 1080p frame was drawn {age} ms ago");

    let r = app.frame("uhd", "?width=640");
    let (w, h, _) = jpeg_code(&r.body);
    assert_eq!((w, h), (640, 360), "?width=640 of a 16:9 source");

    // Asking wider than the 1080p cap does not go past it.
    let r = app.frame("uhd", "?width=7680");
    let (w, h, _) = decode_jpeg(&r.body);
    assert_eq!((w, h), (1920, 1080), "?width=7680 still fits 1920x1080");
}

#[test]
fn connect_times_by_source_size() {
    let app = Appliance::start(&[]);
    for (size, fps) in [("640x360", 30), ("1280x720", 30), ("1920x1080", 15)] {
        let sim = Sim::simple(size, fps);
        let id = format!("cam-{size}");
        let took = app.connect_sim(&id, &sim, "/1");
        eprintln!("connect-to-first-frame ({size}@{fps}): {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "connect took {took:?}: the contract's wait is 5 s"
        );
        let (w, _, _) = jpeg_code(&app.frame(&id, "").body);
        assert_eq!(w.to_string(), size.split('x').next().unwrap());
        assert_eq!(app.disconnect(&id).status, 200);
    }
}

#[test]
fn width_and_quality_parameters() {
    let sim = Sim::simple("1280x720", 15);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");

    let (w, h, _) = jpeg_code(&app.frame("cam", "?width=640").body);
    assert_eq!((w, h), (640, 360));
    // Never upscaled.
    let (w, h, _) = jpeg_code(&app.frame("cam", "?width=1920").body);
    assert_eq!((w, h), (1280, 720));

    // Quality changes the encoding: the same picture is far smaller at 10 than at 95.
    let low = app.frame("cam", "?quality=10");
    let high = app.frame("cam", "?quality=95");
    decode_jpeg(&low.body);
    assert!(
        low.body.len() * 2 < high.body.len(),
        "quality=10 gave {} bytes, quality=95 {} bytes",
        low.body.len(),
        high.body.len()
    );

    for q in [
        "?width=abc",
        "?width=0",
        "?width=-5",
        "?width=100000",
        "?quality=0",
        "?quality=101",
        "?quality=high",
    ] {
        let r = app.get(&format!("/api/cameras/cam/frame{q}"));
        r.assert_detail(422, q);
        r.assert_cors(q);
    }
}

/// On demand, decoding pauses when nobody watches; `/frame` must then still answer with
/// a picture of now, not the one left from when decoding stopped.
#[test]
fn frame_after_idle_is_fresh() {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    let first = app.frame("cam", "");
    let (_, _, code1) = jpeg_code(&first.body);

    wait_for(Duration::from_secs(10), "decoding to pause", || {
        let s = app.status("cam");
        if s["decoding"] == Value::Bool(false) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(
        app.status("cam")["connected"],
        true,
        "still connected while idle"
    );
    let idle_since = Instant::now();

    let started = Instant::now();
    let r = app.frame("cam", "");
    let took = started.elapsed();
    let (_, _, code2) = jpeg_code(&r.body);
    assert!(
        code2.counter > code1.counter,
        "the same old picture came back"
    );
    let age = code_age_ms(&code2);
    assert!(
        age < 1500,
        "after {:?} idle, /frame gave a picture drawn {age} ms ago (took {took:?})",
        idle_since.elapsed()
    );
    eprintln!("first /frame after idle: {took:?}, picture age {age} ms");
}

#[test]
fn always_decode_mode_keeps_decoding() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[("PTZ_EDGE_DECODE", "always")]);
    app.connect_sim("cam", &sim, "/1");
    let s = app.status("cam");
    assert_eq!(s["decodeMode"], "always", "{s}");
    // Nobody watches for longer than the on-demand linger: still decoding.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let s = app.status("cam");
        assert_eq!(s["decoding"], true, "decoding stopped in always mode: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, _, code) = jpeg_code(&app.frame("cam", "").body);
    assert!(code_age_ms(&code) < 1500);
}
