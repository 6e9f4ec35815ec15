//! `crop=x,y,w,h`: a region of the picture cut at the source's full resolution before any
//! scaling, on `/frame`, MJPEG and WebSocket subscriptions; its headers and fields; and
//! the errors for crops out of range.

mod common;

use std::time::Duration;

use common::*;
use ptz_edge::sim::barcode::{self, BLOCKS_PER_ROW, WIDTH_DIVISOR};
use serde_json::{json, Value};

/// The simulator's frame code, read from a picture where its blocks are `pitch` pixels
/// wide, as far as the picture goes (`width / pitch` blocks per row, at most 32): the
/// top `n` bits of the counter, sent-time and check rows, and whether the check row
/// matches (`counter ^ sent ^ 0xA5A5A5A5` in those bits). Same sampling as
/// `barcode::read`: the mean of each block's central half against 128.
fn read_partial_code(luma: &[u8], width: u32, pitch: u32) -> (u32, [u32; 3], bool) {
    let n = (width / pitch).min(BLOCKS_PER_ROW);
    let w = width as usize;
    let mut rows = [0u32; 3];
    for (r, word) in rows.iter_mut().enumerate() {
        for i in 0..n {
            let (x0, y0) = ((i * pitch) as usize, r * pitch as usize);
            let q = pitch as usize / 4;
            let mut sum = 0u64;
            let mut count = 0u64;
            for y in y0 + q..y0 + pitch as usize - q {
                for x in x0 + q..x0 + pitch as usize - q {
                    sum += u64::from(luma[y * w + x]);
                    count += 1;
                }
            }
            *word = (*word << 1) | u32::from(sum >= 128 * count);
        }
    }
    let check = 0xA5A5_A5A5u32 >> (32 - n);
    let ok = rows[2] == rows[0] ^ rows[1] ^ check;
    (n, rows, ok)
}

/// Pixels over which luma climbs from 20 % to 80 % of the black-to-white step, averaged
/// over the block edges of the code's second row (sent time; its middle line) where the
/// bit changes (`bits`, that row as read).
/// A picture cut at full resolution has edges as sharp as the scaled one's; a region
/// blown up from a scaled picture would have them about twice as wide.
fn edge_width(luma: &[u8], width: u32, pitch: u32, bits: u32, n: u32) -> f64 {
    let w = width as usize;
    let line = &luma[(pitch + pitch / 2) as usize * w..][..w];
    let (lo, hi) = (16.0 + 0.2 * 219.0, 16.0 + 0.8 * 219.0);
    let mut widths = Vec::new();
    for i in 1..n {
        let (a, b) = ((bits >> (n - i)) & 1, (bits >> (n - 1 - i)) & 1);
        if a == b {
            continue;
        }
        let edge = (i * pitch) as usize;
        let window = &line[edge - pitch as usize / 4..edge + pitch as usize / 4];
        let between = window
            .iter()
            .filter(|&&v| (lo..=hi).contains(&f64::from(v)))
            .count();
        widths.push(between as f64);
    }
    assert!(
        !widths.is_empty(),
        "no bit change in the first row: {bits:#b}"
    );
    widths.iter().sum::<f64>() / widths.len() as f64
}

/// The top-left `w`x`h` of `luma` (stride `stride`) scaled up 2x, bilinear.
fn upscale_2x(luma: &[u8], stride: usize, w: usize, h: usize) -> Vec<u8> {
    let at = |x: f64, y: f64| {
        let (x, y) = (x.clamp(0.0, (w - 1) as f64), y.clamp(0.0, (h - 1) as f64));
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f64, y - y0 as f64);
        let p = |x: usize, y: usize| f64::from(luma[y * stride + x]);
        let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
        let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
        (top * (1.0 - fy) + bottom * fy).round() as u8
    };
    let mut out = vec![0u8; 4 * w * h];
    for y in 0..2 * h {
        for x in 0..2 * w {
            out[y * 2 * w + x] = at((x as f64 + 0.5) / 2.0 - 0.5, (y as f64 + 0.5) / 2.0 - 0.5);
        }
    }
    out
}

#[test]
fn crop_of_a_4k_source_is_cut_at_full_resolution() {
    let sim = Sim::simple("3840x2160", 10);
    let app = Appliance::start(&[]);
    app.connect_sim("uhd", &sim, "/1");

    // The whole picture, scaled to 1920x1080: code blocks 1920/40 = 48 px.
    let whole = app.frame("uhd", "");
    assert_eq!(whole.header("x-crop"), None, "no crop, no crop headers");
    assert_eq!(whole.header("x-source-size"), None);
    let (w, h, full) = decode_jpeg(&whole.body);
    assert_eq!((w, h), (1920, 1080));
    assert!(barcode::read(&full, 1920, 1920, 1080).is_some());
    let scaled_pitch = 1920 / WIDTH_DIVISOR;

    // The top-left quarter, cut from the 3840x2160 picture: 1920x1080 source pixels,
    // served as they are. Its code blocks are the source's, 3840/40 = 96 px: twice the
    // scaled picture's.
    let r = app.frame("uhd", "?crop=0,0,0.5,0.5");
    assert_eq!(r.header("x-crop"), Some("0,0,0.5,0.5"));
    assert_eq!(r.header("x-crop-pixels"), Some("0,0,1920,1080"));
    assert_eq!(r.header("x-source-size"), Some("3840x2160"));
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(expose.contains("X-Crop"), "{expose}");
    let (w, h, crop) = decode_jpeg(&r.body);
    assert_eq!(
        (w, h),
        (1920, 1080),
        "0.5x0.5 of 3840x2160 at full resolution"
    );
    let full_pitch = 3840 / WIDTH_DIVISOR;
    assert_eq!(full_pitch, 2 * scaled_pitch);
    let (n, rows, ok) = read_partial_code(&crop, 1920, full_pitch);
    assert_eq!(n, 20, "20 of the code's 32 blocks fit in 1920 px at 96 px");
    assert!(
        ok,
        "the crop does not hold the code at 96 px blocks: rows {rows:08x?}"
    );
    // The same reading at the scaled picture's pitch fails (each 96 px block read
    // twice cannot match the check row), and vice versa: the pitch is what tells a
    // full-resolution cut from the scaled picture.
    assert!(!read_partial_code(&crop, 1920, scaled_pitch).2);
    let (_, full_rows, full_ok) = read_partial_code(&full, 1920, scaled_pitch);
    assert!(full_ok, "the scaled picture at 48 px: {full_rows:08x?}");
    assert!(!read_partial_code(&full, 1920, full_pitch).2);

    // Sharp: block edges no wider (in pixels) than in the scaled picture, although the
    // blocks are twice as wide. The top-left of the 1080p picture blown up 2x
    // (bilinear, as videoscale would) has the right size and pitch but edges two
    // pixels wide: the measure tells the two apart.
    let sharp_crop = edge_width(&crop, 1920, full_pitch, rows[1], n);
    let sharp_full = edge_width(&full, 1920, scaled_pitch, full_rows[1], n);
    let blown = upscale_2x(&full, 1920, 960, 540);
    let (_, blown_rows, blown_ok) = read_partial_code(&blown, 1920, full_pitch);
    assert!(blown_ok, "the blown-up picture holds the code at 96 px too");
    let sharp_blown = edge_width(&blown, 1920, full_pitch, blown_rows[1], n);
    eprintln!(
        "edge width (20..80 %): crop {sharp_crop:.2} px at 96 px blocks, whole picture \
         {sharp_full:.2} px at 48 px blocks, 1080p blown up 2x {sharp_blown:.2} px"
    );
    assert!(
        sharp_blown >= sharp_full + 1.0,
        "the measure does not see an upscale: {sharp_blown:.2} vs {sharp_full:.2}"
    );
    assert!(
        sharp_crop < sharp_full + 0.5,
        "crop edges {sharp_crop:.2} px, the scaled picture's {sharp_full:.2} px: not cut \
         at full resolution?"
    );

    // The centre quarter: 1920x1080 of source too.
    let r = app.frame("uhd", "?crop=0.25,0.25,0.5,0.5");
    assert_eq!(r.header("x-crop-pixels"), Some("960,540,1920,1080"));
    let (w, h, _) = decode_jpeg(&r.body);
    assert_eq!((w, h), (1920, 1080));

    // A tenth each way: 384x216 source pixels, served at that size (not blown up), with
    // the code's first 4 blocks at 96 px.
    let r = app.frame("uhd", "?crop=0,0,0.1,0.1");
    let (w, h, tiny) = decode_jpeg(&r.body);
    assert_eq!((w, h), (384, 216));
    assert_eq!(r.header("x-crop-pixels"), Some("0,0,384,216"));
    // Rows 0 and 1 (counter and sent time) fit; their top 4 bits match the big crop's
    // reading (a picture of a moment before), sampled at the same 96 px.
    let mut tiny_rows = [0u32; 2];
    for (row, word) in tiny_rows.iter_mut().enumerate() {
        for i in 0..4usize {
            let (x, y) = (i * 96 + 48, row * 96 + 48);
            *word = (*word << 1) | u32::from(tiny[y * 384 + x] >= 128);
        }
    }
    eprintln!("tiny crop rows {tiny_rows:x?}, big crop rows {rows:x?}");
    assert_eq!(
        tiny_rows,
        [rows[0] >> 16, rows[1] >> 16],
        "the top 4 bits of the counter and of the sent time (ms, they change every 3 days)"
    );

    // `width` scales the region, not the picture: 960x540 of the 1920x1080 region.
    let (w, h, _) = decode_jpeg(&app.frame("uhd", "?crop=0.25,0.25,0.5,0.5&width=960").body);
    assert_eq!((w, h), (960, 540));
    // A region wider than 1920 px is fit into 1920x1080 like a whole picture.
    let (w, h, _) = decode_jpeg(&app.frame("uhd", "?crop=0,0,0.8,1").body);
    assert_eq!((w, h), (1536, 1080), "3072x2160 fit into 1920x1080");
    // The crop of the whole picture is the whole picture.
    let r = app.frame("uhd", "?crop=0,0,1,1");
    assert_eq!(r.header("x-crop"), Some("0,0,1,1"));
    let (w, h, _) = decode_jpeg(&r.body);
    assert_eq!((w, h), (1920, 1080));
}

/// A 1280x720 simulator and an appliance with camera `cam` on it.
fn hd() -> (Sim, Appliance) {
    let sim = Sim::simple("1280x720", 15);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    (sim, app)
}

#[test]
fn mjpeg_and_websocket_serve_the_cropped_size() {
    let (_sim, app) = hd();

    // MJPEG: every part is the region's size and says what it shows.
    let mut stream = Mjpeg::open(
        app.addr,
        "/api/cameras/cam/mjpeg?fps=10&crop=0.5,0.5,0.5,0.5",
    );
    for i in 0..3 {
        let part = stream.next_part().expect("an MJPEG part");
        let (w, h, _) = decode_jpeg(&part.body);
        assert_eq!((w, h), (640, 360), "part {i}");
        assert_eq!(part.header("x-crop"), Some("0.5,0.5,0.5,0.5"), "part {i}");
        assert_eq!(part.header("x-crop-pixels"), Some("640,360,640,360"));
        assert_eq!(part.header("x-source-size"), Some("1280x720"));
    }
    drop(stream);
    // With width: the region scaled.
    let mut stream = Mjpeg::open(
        app.addr,
        "/api/cameras/cam/mjpeg?fps=10&crop=0,0,0.5,0.5&width=320",
    );
    let part = stream.next_part().expect("an MJPEG part");
    assert_eq!(decode_jpeg(&part.body).0, 320);
    drop(stream);

    // WebSocket, text: the array form; frames carry "crop" as served.
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": "cam", "fps": 10,
                    "crop": [0.25, 0.25, 0.5, 0.5]}));
    let mut seen = 0;
    while seen < 3 {
        match ws.recv(Duration::from_secs(10)) {
            Some(WsIn::Json(v)) if v["type"] == "frame" => {
                assert_eq!(v["crop"], json!([0.25, 0.25, 0.5, 0.5]), "{}", short(&v));
                let f = WsFrame::from_json(&v);
                assert_eq!((f.width, f.height), (640, 360));
                let (w, h, _) = decode_jpeg(&f.jpeg);
                assert_eq!((w, h), (640, 360));
                seen += 1;
            }
            Some(WsIn::Json(_)) => {}
            other => panic!("no text frame: {other:?}"),
        }
    }
    // Binary, the string form: the header carries "crop" too.
    ws.send(
        &json!({"action": "subscribe", "cameraId": "cam", "fps": 10, "binary": true,
                    "crop": "0,0,0.25,0.25"}),
    );
    let header = loop {
        match ws.recv(Duration::from_secs(10)) {
            Some(WsIn::Binary(b)) => {
                let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
                let header: Value = serde_json::from_slice(&b[2..2 + n]).expect("header");
                let (w, h, _) = decode_jpeg(&b[2 + n..]);
                assert_eq!((w, h), (320, 180));
                break header;
            }
            Some(WsIn::Json(_)) => {}
            other => panic!("no binary frame: {other:?}"),
        }
    };
    assert_eq!(header["crop"], json!([0.0, 0.0, 0.25, 0.25]), "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(320), Some(180))
    );

    // Without a crop, the frame message is the contract's: no "crop" key.
    ws.send(&json!({"action": "subscribe", "cameraId": "cam", "fps": 10}));
    let mut plain = 0;
    while plain < 2 {
        match ws.recv(Duration::from_secs(10)) {
            Some(WsIn::Json(v)) if v["type"] == "frame" => {
                // Frames of the previous (binary) subscription may still be in flight.
                if v["width"] == 1280 {
                    assert!(v.get("crop").is_none(), "{}", short(&v));
                    plain += 1;
                }
            }
            Some(_) => {}
            None => panic!("no plain frame"),
        }
    }
}

#[test]
fn crops_out_of_range_are_422_with_a_detail() {
    let (_sim, app) = hd();
    for (q, why) in [
        ("crop=", "four numbers"),
        ("crop=0,0,0.5", "four numbers"),
        ("crop=a,b,c,d", "four numbers"),
        ("crop=NaN,0,0.5,0.5", "finite"),
        ("crop=-0.1,0,0.5,0.5", "x and y"),
        ("crop=1.5,0,0.5,0.5", "x and y"),
        ("crop=0,0,0,0.5", "w and h"),
        ("crop=0,0,0.5,0", "w and h"),
        ("crop=0.6,0,0.5,0.5", "inside the picture"),
        ("crop=0,0.2,1,0.9", "inside the picture"),
    ] {
        for path in ["frame", "mjpeg"] {
            let r = app.get(&format!("/api/cameras/cam/{path}?{q}"));
            let detail = r.assert_detail(422, &format!("{path}?{q}"));
            assert!(detail.contains(why), "{path}?{q}: {detail}");
            r.assert_cors(q);
        }
    }
    let mut ws = app.ws();
    for crop in [
        json!([0, 0, 2, 1]),
        json!("0,0"),
        json!([0, 0, 0.5]),
        json!(true),
    ] {
        ws.send(&json!({"action": "subscribe", "cameraId": "cam", "crop": crop}));
        let v = ws.expect_type("error", Duration::from_secs(5));
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("crop"), "crop {crop}: {v}");
        ws.ping_pong(Duration::from_secs(5));
    }
    // None of them started a stream.
    if let Some(m) = ws.recv(Duration::from_millis(500)) {
        panic!("a failed subscribe sent {m:?}");
    }
}
