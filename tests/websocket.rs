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
        let age = f.received_unix - f.timestamp;
        assert!(
            (-0.5..5.0).contains(&age),
            "frame {i}: timestamp {} is not unix seconds shortly before it arrived ({})",
            f.timestamp,
            f.received_unix
        );
    }
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

/// One stream per socket: a second subscribe switches to the other camera.
#[test]
fn subscribe_again_switches_camera() {
    let (_sim, app) = connected();
    let other = Sim::simple("1280x720", 15);
    app.connect_sim("other", &other, "/1");
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 10}));
    let first = collect_frames(&mut ws, Duration::ZERO);
    assert_eq!(first[0].camera_id, CAM);
    ws.send(&json!({"action": "subscribe", "cameraId": "other", "fps": 10}));
    ws.ping_pong(Duration::from_secs(5));
    // After the pong, only the other camera's frames (one frame already being sent
    // at the switch may still be in flight; give it the pong's round trip).
    let frames = collect_frames(&mut ws, Duration::from_secs(1));
    for f in &frames {
        assert_eq!(
            f.camera_id, "other",
            "frame of the old camera after switching"
        );
        assert_eq!((f.width, f.height), (1280, 720));
    }
    wait_for(
        Duration::from_secs(3),
        "the first camera to lose its viewer",
        || {
            let (a, b) = (app.status(CAM), app.status("other"));
            if a["viewers"] == 0 && b["viewers"] == 1 {
                Ok(())
            } else {
                Err(format!("viewers {} and {}", a["viewers"], b["viewers"]))
            }
        },
    );
}

/// Disconnecting the watched camera pushes its stopped state; connecting the id again
/// brings frames back to the same subscription, seq still increasing.
#[test]
fn disconnect_pushes_status_and_reconnect_resumes_frames() {
    let (sim, app) = connected();
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 10}));
    let mut last_seq = collect_frames(&mut ws, Duration::ZERO)[0].seq;
    assert_eq!(app.disconnect(CAM).status, 200);
    let v = wait_for(
        Duration::from_secs(5),
        "a status push with connected=false",
        || match ws.recv(Duration::from_millis(200)) {
            Some(WsIn::Json(v)) if v["type"] == "status" && v["connected"] == false => Ok(v),
            Some(WsIn::Closed(c)) => panic!("socket closed: {c:?}"),
            Some(m) => {
                if let Some(f) = as_frame(&m) {
                    last_seq = last_seq.max(f.seq);
                }
                Err(format!("{:?}", as_frame(&m).map(|f| f.seq)))
            }
            None => Err("nothing".into()),
        },
    );
    assert_eq!(v["cameraId"], CAM, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    // No frames while the camera is gone (one already on its way at most).
    let stray: Vec<WsFrame> = ws
        .ping_pong(Duration::from_secs(5))
        .iter()
        .filter_map(as_frame)
        .collect();
    assert!(
        stray.len() <= 1,
        "{} frames came after the stopped status",
        stray.len()
    );
    for f in &stray {
        last_seq = last_seq.max(f.seq);
    }

    app.connect_sim(CAM, &sim, "/1");
    let f = wait_for(
        Duration::from_secs(5),
        "frames again after reconnecting",
        || match ws.recv(Duration::from_millis(200)) {
            Some(WsIn::Closed(c)) => panic!("socket closed: {c:?}"),
            Some(m) => as_frame(&m).ok_or_else(|| "a non-frame message".to_owned()),
            None => Err("nothing".into()),
        },
    );
    assert_eq!(f.camera_id, CAM);
    jpeg_code(&f.jpeg);
    // seq is strictly increasing on a subscription: a client that drops frames whose
    // seq is not above the last one it showed must not freeze after a reconnect.
    assert!(
        f.seq > last_seq,
        "seq went back on the same subscription after disconnect + connect: {} after {last_seq}",
        f.seq
    );
}

/// Nobody watching costs no JPEG encode; viewers of the same size and quality share
/// one encode per picture.
#[test]
fn viewers_share_encodes_and_idle_cameras_encode_nothing() {
    let (_sim, app) = connected();
    let encodes = |app: &Appliance| field_u64(&app.status(CAM), "jpegEncodes");
    assert_eq!(encodes(&app), 0, "a JPEG was encoded with nobody watching");
    let watch_until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < watch_until {
        assert_eq!(encodes(&app), 0, "a JPEG was encoded with nobody watching");
        std::thread::sleep(Duration::from_millis(100));
    }

    let before = encodes(&app);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mut ws = app.ws();
            std::thread::spawn(move || {
                ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 30}));
                let mut seqs: Vec<u64> = collect_frames(&mut ws, Duration::from_secs(2))
                    .iter()
                    .map(|f| f.seq)
                    .collect();
                // Pictures already encoded for this viewer may still be on their way:
                // stop the stream and count them too, until it is quiet.
                ws.send(&json!({"action": "unsubscribe"}));
                while let Some(m) = ws.recv(Duration::from_millis(500)) {
                    match as_frame(&m) {
                        Some(f) => seqs.push(f.seq),
                        None if matches!(m, WsIn::Closed(_)) => break,
                        None => {}
                    }
                }
                ws.close();
                seqs
            })
        })
        .collect();
    let seqs: Vec<std::collections::BTreeSet<u64>> = handles
        .into_iter()
        .map(|h| h.join().expect("viewer thread").into_iter().collect())
        .collect();
    let spent = encodes(&app) - before;
    // Each viewer is paced on its own, so under jitter one may skip a picture the other
    // sends: what is shared is one encode per picture sent to anyone, not per viewer.
    let union = seqs[0].union(&seqs[1]).count() as u64;
    let both = seqs[0].intersection(&seqs[1]).count();
    eprintln!(
        "two viewers got {} and {} frames ({union} distinct, {both} to both); {spent} encodes",
        seqs[0].len(),
        seqs[1].len()
    );
    assert!(both > 0, "the two viewers never got the same picture");
    assert!(
        spent <= union + 3,
        "two viewers of one size cost {spent} encodes for {union} distinct pictures sent"
    );
}

/// A passive viewer (it only reads; like a browser it answers pings but sends nothing of
/// its own) keeps its stream past the server's 60 s idle limit. Takes about 65 s.
#[test]
fn passive_viewer_is_not_dropped_as_idle() {
    let sim = Sim::simple("640x360", 5);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 1}));
    let started = std::time::Instant::now();
    let mut last_frame = started;
    let mut frames = 0;
    while started.elapsed() < Duration::from_secs(65) {
        match ws.recv(Duration::from_secs(5)) {
            Some(WsIn::Closed(c)) => panic!(
                "the server closed a passive viewer after {:?}: {c:?}",
                started.elapsed()
            ),
            Some(m) if as_frame(&m).is_some() => {
                frames += 1;
                last_frame = std::time::Instant::now();
            }
            Some(_) | None => {}
        }
        assert!(
            last_frame.elapsed() < Duration::from_secs(5),
            "no frame for {:?} after {:?}",
            last_frame.elapsed(),
            started.elapsed()
        );
    }
    assert!(frames >= 50, "{frames} frames at 1 fps in 65 s");
    ws.ping_pong(Duration::from_secs(5));
}

/// A viewer that stops reading only loses its own frames: another viewer of the same
/// camera keeps its rate.
#[test]
fn a_stalled_viewer_does_not_slow_others() {
    let sim = Sim::simple("1280x720", 30);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let mut stalled = app.ws();
    stalled.send(
        &json!({"action": "subscribe", "cameraId": CAM, "fps": 30, "binary": true, "quality": 100}),
    );
    // Let it fill the socket buffers: the server's writes to it block from here on.
    collect_frames(&mut stalled, Duration::ZERO);
    let fill_until = std::time::Instant::now() + Duration::from_secs(3);
    let mut fast = app.ws();
    while std::time::Instant::now() < fill_until {
        fast.ping_pong(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
    }
    fast.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 30}));
    let frames = collect_frames(&mut fast, WINDOW);
    let r = rate(&frames);
    eprintln!("fast viewer beside a stalled one: {r:.1}/s");
    assert!(r >= 20.0, "a stalled viewer slowed another to {r:.1}/s");
    check_frames(&frames, 1280, 720);
    drop(stalled);
}
