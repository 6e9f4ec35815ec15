//! Stale pictures (issue 10): during an outage `/frame` and the viewers never pass an old
//! picture off as new. Every picture says how old it is (`X-Frame-Age` on `/frame` and
//! MJPEG parts, `age` in each WebSocket frame); once the camera is out (its packets
//! stopped and the watchdog noticed, or none came for 3 s) `/frame` is 503 with a
//! `{"detail"}` saying so, and it serves pictures again when the camera is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const CAM: &str = "stale";

fn age_header(r: &Resp) -> f64 {
    r.header("x-frame-age")
        .unwrap_or_else(|| panic!("no X-Frame-Age on a {} /frame", r.status))
        .parse()
        .expect("X-Frame-Age is a number")
}

#[test]
fn an_out_camera_answers_503_not_an_old_picture() {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");

    let r = app.frame(CAM, "");
    assert_eq!(r.status, 200);
    let age = age_header(&r);
    assert!((0.0..1.0).contains(&age), "a fresh picture {age} s old");

    let mut ws = app.ws();
    ws.send(&json!({"action":"subscribe","cameraId":CAM,"fps":10,"binary":true}));
    let header = wait_for(Duration::from_secs(10), "a binary frame", || {
        match ws.recv(Duration::from_secs(5)) {
            Some(WsIn::Binary(b)) => {
                let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
                Ok(serde_json::from_slice::<serde_json::Value>(&b[2..2 + n]).unwrap())
            }
            other => Err(format!("{other:?}")),
        }
    });
    let ws_age = header["age"]
        .as_f64()
        .unwrap_or_else(|| panic!("no age: {header}"));
    assert!(
        (0.0..1.0).contains(&ws_age),
        "WS frame age {ws_age}: {header}"
    );
    ws.close();

    // Freeze the camera: its sockets stay open, nothing comes.
    let frozen_at = Instant::now();
    sim.proc.signal(libc::SIGSTOP);
    let frame = || app.get(&format!("/api/cameras/{CAM}/frame"));
    let r = wait_for(
        Duration::from_secs(15),
        "/frame to say the camera is out",
        || {
            let r = frame();
            match r.status {
                503 => Ok(r),
                200 => {
                    // Until the outage is noticed, a picture may still come, but it says its age.
                    age_header(&r);
                    Err("200".into())
                }
                s => Err(format!("status {s}: {}", r.text())),
            }
        },
    );
    let noticed = frozen_at.elapsed();
    let detail = r.assert_detail(503, "/frame of an out camera");
    eprintln!("camera frozen: /frame 503 after {noticed:?}: {detail}");
    assert!(detail.contains("no live picture"), "{detail}");
    assert!(r.header("x-frame-seq").is_none(), "a 503 carried a picture");

    // Back: pictures again, fresh ones.
    sim.proc.signal(libc::SIGCONT);
    let age = wait_for(Duration::from_secs(20), "/frame to serve again", || {
        let r = frame();
        if r.status == 200 {
            Ok(age_header(&r))
        } else {
            Err(format!("status {}", r.status))
        }
    });
    assert!(
        age < 1.0,
        "the first picture after the outage is {age} s old"
    );
}
