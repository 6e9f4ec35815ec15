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
    let (w, h, _) = jpeg_code(&r.body);
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
    jpeg_code(&low.body);
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

/// libjpeg's luminance quantisation table (ITU T.81 K.1), natural order.
const STD_LUMA: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
/// Natural index of each zigzag position (the order DQT stores).
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The luminance table libjpeg's `jpeg_set_quality(q, force_baseline)` makes, zigzag.
fn expected_luma_table(quality: u32) -> Vec<u16> {
    let scale = if quality < 50 {
        5000 / quality
    } else {
        200 - 2 * quality
    };
    ZIGZAG
        .iter()
        .map(|&i| ((u32::from(STD_LUMA[i]) * scale + 50) / 100).clamp(1, 255) as u16)
        .collect()
}

/// The quantisation table with id 0 (luminance) of a baseline JPEG, as stored (zigzag).
fn luma_table(jpeg: &[u8]) -> Vec<u16> {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        assert_eq!(jpeg[i], 0xFF, "marker expected at {i}");
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let seg = &jpeg[i + 4..i + 2 + len];
        if marker == 0xDB {
            let mut j = 0;
            while j < seg.len() {
                let (precision, id) = (seg[j] >> 4, seg[j] & 0x0F);
                let n = if precision == 0 { 64 } else { 128 };
                let table = &seg[j + 1..j + 1 + n];
                if id == 0 {
                    return if precision == 0 {
                        table.iter().map(|&v| u16::from(v)).collect()
                    } else {
                        table
                            .chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect()
                    };
                }
                j += 1 + n;
            }
        }
        if marker == 0xDA {
            break;
        }
        i += 2 + len;
    }
    panic!("no luminance quantisation table in the JPEG");
}

/// Contract: "JPEG quality 80" by default; `?quality=` changes it.
#[test]
fn default_jpeg_quality_is_80() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    let jpeg = app.frame("cam", "").body;
    assert_eq!(
        luma_table(&jpeg),
        expected_luma_table(80),
        "the default frame is not quality 80"
    );
    let jpeg = app.frame("cam", "?quality=50").body;
    assert_eq!(luma_table(&jpeg), expected_luma_table(50), "?quality=50");
}

/// A 4:3 source larger than 1080p keeps its aspect when fitted.
#[test]
fn large_4_3_source_keeps_its_aspect() {
    let sim = Sim::simple("2560x1920", 5);
    let app = Appliance::start(&[]);
    let took = app.connect_sim("cam", &sim, "/1");
    eprintln!("connect-to-first-frame (2560x1920@5): {took:?}");
    let (w, h, _) = jpeg_code(&app.frame("cam", "").body);
    assert_eq!((w, h), (1440, 1080), "2560x1920 fitted into 1920x1080");
}

/// Several `/frame` requests at once all get a picture.
#[test]
fn concurrent_frame_requests() {
    let sim = Sim::simple("1280x720", 15);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    let addr = app.addr;
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let q = if i % 2 == 0 { "" } else { "?width=640" };
                (
                    i,
                    http(addr, "GET", &format!("/api/cameras/cam/frame{q}"), &[], b""),
                )
            })
        })
        .collect();
    for h in handles {
        let (i, r) = h.join().expect("client thread");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let (w, _, _) = jpeg_code(&r.body);
        assert_eq!(w, if i % 2 == 0 { 1280 } else { 640 }, "request {i}");
    }
}

/// Reads MJPEG parts from `path` for `window` after the first: (X-Frame-Seq, JPEG).
fn read_mjpeg(app: &Appliance, path: &str, window: Duration) -> Vec<(u64, Vec<u8>)> {
    let mut stream = Mjpeg::open(app.addr, path);
    let cors = stream
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("access-control-allow-origin") && v == "*");
    assert!(cors, "MJPEG response without CORS: {:?}", stream.headers);
    let mut parts = Vec::new();
    let mut end = None;
    while end.is_none_or(|e| Instant::now() < e) {
        let part = stream.next_part().expect("the stream ended");
        assert_eq!(part.header("content-type"), Some("image/jpeg"));
        let seq = part
            .header("x-frame-seq")
            .and_then(|v| v.parse().ok())
            .expect("part X-Frame-Seq");
        parts.push((seq, part.body));
        end.get_or_insert_with(|| Instant::now() + window);
    }
    parts
}

#[test]
fn mjpeg_stream_paces_and_numbers_its_parts() {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    let window = Duration::from_secs(2);
    let parts = read_mjpeg(&app, "/api/cameras/cam/mjpeg?fps=10&width=480", window);
    let rate = parts.len() as f64 / window.as_secs_f64();
    eprintln!("mjpeg fps=10: {} parts in {window:?}", parts.len());
    assert!(
        (6.0..=12.5).contains(&rate),
        "asked 10 fps, got {rate:.1}/s"
    );
    let mut last: Option<(u64, u32)> = None;
    for (i, (seq, jpeg)) in parts.iter().enumerate() {
        let (w, h, code) = jpeg_code(jpeg);
        assert_eq!((w, h), (480, 270), "part {i}");
        if let Some((last_seq, counter)) = last {
            assert!(*seq > last_seq, "part {i}: seq {seq} after {last_seq}");
            assert!(code.counter > counter, "part {i}: picture repeated");
        }
        last = Some((*seq, code.counter));
    }
    wait_for(Duration::from_secs(5), "the MJPEG viewer to go", || {
        let s = app.status("cam");
        if s["viewers"] == 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    app.get("/api/cameras/nope/mjpeg")
        .assert_detail(404, "mjpeg of unknown camera");
    app.get("/api/cameras/cam/mjpeg?fps=0")
        .assert_detail(422, "mjpeg fps=0");
}
