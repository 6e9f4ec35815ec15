//! `WS /ws`: subscriptions at a rate, frame fields in text and binary mode, pictures that
//! are new each time (frame codes strictly increasing), ping, errors that keep the
//! socket open, unsubscribe, and status pushes.

mod common;

use std::time::Duration;

use common::*;
use ptz_edge::sim::barcode;
use serde_json::json;

const CAM: &str = "cam";
const WINDOW: Duration = Duration::from_secs(3);

/// A 640x360 30 fps simulator and an appliance with `CAM` connected to it.
fn connected() -> (Sim, Appliance) {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    (sim, app)
}

/// Checks every frame's fields and picture: camera id, increasing seq, increasing frame
/// code (no picture twice), size, timestamp = unix seconds of capture (after the
/// simulator drew it, shortly before we got it).
fn check_frames(frames: &[WsFrame], width: u32, height: u32) {
    assert!(!frames.is_empty());
    let mut last: Option<(u64, u32)> = None;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.camera_id, CAM, "frame {i}");
        assert_eq!(
            (f.width, f.height),
            (width, height),
            "frame {i} size fields"
        );
        let (w, h, code) = jpeg_code(&f.jpeg);
        assert_eq!(
            (w, h),
            (width, height),
            "frame {i}: JPEG size vs its fields"
        );
        if let Some((seq, counter)) = last {
            assert!(f.seq > seq, "frame {i}: seq {} after {seq}", f.seq);
            assert!(
                code.counter > counter,
                "frame {i}: picture {} after {counter} (a repeated or older picture)",
                code.counter
            );
        }
        last = Some((f.seq, code.counter));
        // timestamp: capture time in unix seconds, so after the simulator drew the
        // picture, and not far in the past.
        let captured_ms32 = (f.timestamp * 1000.0) as u64 as u32;
        let drawn_to_captured = barcode::latency_ms(&code, captured_ms32);
        assert!(
            drawn_to_captured < 2000,
            "frame {i}: timestamp {} is {drawn_to_captured} ms after the picture was drawn \
             (or before it): not the capture time in unix seconds",
            f.timestamp
        );
    }
    let now = unix_now();
    let newest = frames.last().expect("not empty").timestamp;
    assert!(
        newest <= now + 0.5 && now - newest < 10.0,
        "timestamp {newest} is not unix seconds near now ({now})"
    );
}

fn rate(frames: &[WsFrame]) -> f64 {
    frames.len() as f64 / WINDOW.as_secs_f64()
}

#[test]
fn subscribe_at_10_fps() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 10}));
    let frames = collect_frames(&mut ws, WINDOW);
    let r = rate(&frames);
    eprintln!("fps 10: {} frames in {WINDOW:?} ({r:.1}/s)", frames.len());
    assert!(
        (6.0..=12.0).contains(&r),
        "asked 10 fps, got {r:.1}/s ({} frames)",
        frames.len()
    );
    check_frames(&frames, 640, 360);
}

#[test]
fn subscribe_at_30_fps() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 30}));
    let frames = collect_frames(&mut ws, WINDOW);
    let r = rate(&frames);
    eprintln!("fps 30: {} frames in {WINDOW:?} ({r:.1}/s)", frames.len());
    assert!(r >= 20.0, "asked 30 fps of a 30 fps camera, got {r:.1}/s");
    assert!(r <= 34.0, "more frames ({r:.1}/s) than the camera makes");
    check_frames(&frames, 640, 360);
}

#[test]
fn subscribe_defaults_to_15_fps() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM}));
    let frames = collect_frames(&mut ws, WINDOW);
    let r = rate(&frames);
    eprintln!(
        "default fps: {} frames in {WINDOW:?} ({r:.1}/s)",
        frames.len()
    );
    assert!((9.0..=18.0).contains(&r), "default 15 fps, got {r:.1}/s");
    check_frames(&frames, 640, 360);
}

#[test]
fn binary_mode_layout() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 5, "binary": true}));
    let mut got = Vec::new();
    while got.len() < 3 {
        match ws.recv(Duration::from_secs(10)) {
            Some(WsIn::Binary(b)) => {
                // Layout: u16 BE length, that many bytes of JSON, then the whole JPEG.
                let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
                let header: serde_json::Value = serde_json::from_slice(&b[2..2 + n])
                    .unwrap_or_else(|e| panic!("binary header: {e}"));
                let keys: Vec<&String> = header.as_object().expect("object").keys().collect();
                for k in ["cameraId", "timestamp", "seq", "width", "height"] {
                    assert!(
                        header.get(k).is_some(),
                        "no {k:?} in binary header {keys:?}"
                    );
                }
                assert!(
                    header.get("data").is_none(),
                    "binary header carries base64 data"
                );
                let jpeg = &b[2 + n..];
                assert!(
                    jpeg.starts_with(&[0xFF, 0xD8]),
                    "JPEG SOI right after the header"
                );
                assert!(
                    jpeg.ends_with(&[0xFF, 0xD9]),
                    "message ends with the JPEG EOI"
                );
                got.push(WsFrame::from_binary(&b));
            }
            Some(WsIn::Json(v)) => {
                assert_ne!(
                    v["type"],
                    "frame",
                    "a text frame in binary mode: {}",
                    short(&v)
                );
            }
            Some(WsIn::Closed(c)) => panic!("closed: {c:?}"),
            None => panic!("no binary frame within 10 s (got {})", got.len()),
        }
    }
    check_frames(&got, 640, 360);
}

#[test]
fn subscribe_with_width_scales_frames() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send(
        &json!({"action": "subscribe", "cameraId": CAM, "fps": 10, "width": 480, "quality": 60}),
    );
    let frames = collect_frames(&mut ws, Duration::from_millis(500));
    check_frames(&frames, 480, 270);
}

#[test]
fn ping_pong() {
    let app = Appliance::start(&[]);
    let mut ws = app.ws();
    for _ in 0..3 {
        let before = ws.ping_pong(Duration::from_secs(5));
        assert!(
            before.is_empty(),
            "unexpected messages before pong: {before:?}"
        );
    }
}

fn expect_error(ws: &mut Ws, what: &str) -> String {
    let v = ws.expect_type("error", Duration::from_secs(5));
    let msg = v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: error without a string message: {v}"));
    assert!(!msg.is_empty(), "{what}: empty error message");
    // The socket stays open and keeps answering.
    ws.ping_pong(Duration::from_secs(5));
    msg.to_owned()
}

#[test]
fn bad_messages_get_errors_and_the_socket_stays_open() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send_text("{not json");
    expect_error(&mut ws, "bad JSON");
    ws.send_text("[1, 2, 3]");
    expect_error(&mut ws, "not an object");
    ws.send(&json!({"action": "dance"}));
    expect_error(&mut ws, "unknown action");
    ws.send(&json!({"hello": "there"}));
    expect_error(&mut ws, "no action");
    ws.send(&json!({"action": "subscribe", "cameraId": "no-such-camera"}));
    let msg = expect_error(&mut ws, "unknown camera");
    assert!(
        msg.contains("no-such-camera"),
        "error should name the camera: {msg:?}"
    );
    ws.send(&json!({"action": "subscribe"}));
    expect_error(&mut ws, "subscribe without cameraId");
    for fps in [json!(0), json!(0.05), json!(61), json!(-1), json!("fast")] {
        ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": fps}));
        expect_error(&mut ws, &format!("fps {fps}"));
    }
    // None of the failed subscribes started a stream.
    match ws.recv(Duration::from_millis(500)) {
        None => {}
        Some(m) => panic!("a failed subscribe sent {m:?}"),
    }
    // And a good one still works on the same socket.
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 10}));
    let frames = collect_frames(&mut ws, Duration::ZERO);
    check_frames(&frames, 640, 360);
}

#[test]
fn unsubscribe_stops_frames() {
    let (_sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 30}));
    collect_frames(&mut ws, Duration::from_millis(300));
    ws.send(&json!({"action": "unsubscribe"}));
    // The pong comes after the unsubscribe was handled.
    ws.ping_pong(Duration::from_secs(5));
    match ws.recv(Duration::from_secs(1)) {
        None => {}
        Some(WsIn::Json(v)) if v["type"] != "frame" => {
            panic!("unexpected message after unsubscribe: {}", short(&v))
        }
        Some(m) => panic!(
            "a frame arrived after unsubscribe + pong: {:?}",
            as_frame(&m).map(|f| f.seq)
        ),
    }
    // The viewer is gone from the camera's status.
    wait_for(Duration::from_secs(3), "viewers back to 0", || {
        let s = app.status(CAM);
        if s["viewers"] == 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
}

#[test]
fn viewers_are_counted_and_released_on_close() {
    let (_sim, app) = connected();
    let mut a = app.ws();
    let mut b = app.ws();
    for ws in [&mut a, &mut b] {
        ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 5}));
        collect_frames(ws, Duration::ZERO);
    }
    assert_eq!(app.status(CAM)["viewers"], 2);
    a.close();
    wait_for(Duration::from_secs(3), "one viewer after one close", || {
        let s = app.status(CAM);
        if s["viewers"] == 1 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    drop(b); // no close handshake: the server must notice the dead socket
    wait_for(
        Duration::from_secs(5),
        "no viewer after the socket dropped",
        || {
            let s = app.status(CAM);
            if s["viewers"] == 0 {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
}

/// A subscriber is told when its camera's state changes: the simulator going away makes
/// the camera reconnect.
#[test]
fn status_pushed_when_camera_drops() {
    let (sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 5}));
    collect_frames(&mut ws, Duration::ZERO);
    drop(sim);
    let v = wait_for(
        Duration::from_secs(15),
        "a status push with connected=false",
        || match ws.recv(Duration::from_millis(200)) {
            Some(WsIn::Json(v)) if v["type"] == "status" && v["connected"] == false => Ok(v),
            Some(WsIn::Closed(c)) => panic!("socket closed: {c:?}"),
            Some(m) => Err(format!("{:?}", as_frame(&m).map(|f| f.seq))),
            None => Err("nothing".into()),
        },
    );
    assert_eq!(v["cameraId"], CAM, "{v}");
    for k in ["frameRate", "frameCount", "lastFrameTime", "state"] {
        assert!(v.get(k).is_some(), "status push without {k}: {v}");
    }
    assert_ne!(v["state"], "streaming", "{v}");
    ws.ping_pong(Duration::from_secs(5));
}
