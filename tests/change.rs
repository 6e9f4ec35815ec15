//! Change events (issue 13): a camera connected with a `watch` block and nobody viewing
//! decodes keyframes only (about one scored picture a second); the simulator's object
//! appearing (SIGUSR1) gives exactly one `change` event on a socket that sent `watch`,
//! a still scene none over a minute; the watch block is validated, settable later and
//! kept across a restart; a viewer makes it score decoded frames at a bounded rate.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CAM: &str = "cam";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A 640x360 15 fps still simulator and an appliance with `CAM` connected, watched.
fn watched(watch: Value) -> (Sim, Appliance) {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    let mut body = connect_body(CAM, &sim, "/1");
    body["watch"] = watch;
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect: {}", r.text());
    (sim, app)
}

/// Waits until the camera's `watch.mode` is `mode` and its score rate has settled
/// inside `rate`; returns the watch object.
fn wait_mode(app: &Appliance, mode: &str, rate: std::ops::RangeInclusive<f64>) -> Value {
    wait_for(
        secs(20),
        &format!("watch mode {mode} at {rate:?}/s"),
        || {
            let w = app.status(CAM)["watch"].clone();
            let r = w["scoredPerSecond"].as_f64().unwrap_or(-1.0);
            if w["mode"] == mode && rate.contains(&r) && w["scored"].as_u64() > Some(3) {
                Ok(w)
            } else {
                Err(w.to_string())
            }
        },
    )
}

/// Every `change` message that comes within `d` (other messages are ignored).
fn changes_within(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        match ws.recv(left) {
            Some(WsIn::Json(v)) if v["type"] == "change" => out.push(v),
            Some(WsIn::Closed(c)) => panic!("socket closed ({c:?})"),
            _ => {}
        }
    }
}

#[test]
fn an_object_appearing_is_one_event_while_only_keyframes_are_decoded() {
    let (sim, app) = watched(json!(true));
    // Nobody views: keyframes only, one a second at the simulator's 1 s GOP.
    let w = wait_mode(&app, "keyframes", 0.5..=1.6);
    assert_eq!(w["enabled"], true, "{w}");
    assert_eq!(w["events"], 0, "a still scene fired: {w}");
    assert!(w["microsPerScore"].as_f64() > Some(0.0), "{w}");
    let mut ws = app.ws();
    ws.send(&json!({"action": "watch", "cameraIds": [CAM]}));
    let ack = ws.expect_type("watching", secs(10));
    assert_eq!(ack["cameraIds"], json!([CAM]), "{ack}");
    assert_eq!(ack["watchOff"], json!([]), "{ack}");

    let before = ptz_edge::clock::unix_now();
    sim.proc.signal(libc::SIGUSR1);
    let ev = ws.expect_type("change", secs(10));
    assert_eq!(ev["cameraId"], CAM, "{ev}");
    let seq = ev["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {ev}"));
    assert!(seq > 0, "{ev}");
    let score = ev["score"].as_f64().expect("a score");
    assert!((0.05..=1.0).contains(&score), "{ev}");
    let ts = ev["timestamp"].as_f64().expect("a timestamp");
    assert!(
        ts >= before - 0.5 && ts <= ptz_edge::clock::unix_now(),
        "the event's picture was captured at {ts}, the object appeared at {before}"
    );
    // Exactly that picture, as kept for the event.
    let frame = |q: &str| app.get(&format!("/api/cameras/{CAM}/frame?{q}"));
    let r = frame(&format!("seq={seq}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("x-frame-seq"), Some(seq.to_string().as_str()));
    assert!(r.body.starts_with(&[0xFF, 0xD8]), "not a JPEG");
    let r = frame(&format!("seq={}", seq - 1));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("not kept"), "{}", r.text());
    assert_eq!(frame("seq=x").status, 422);
    assert_eq!(frame(&format!("seq={seq}&width=320")).status, 422);

    // The object stays: the background learns it, no second event.
    let more = changes_within(&mut ws, secs(8));
    assert!(more.is_empty(), "more than one event: {more:?}");
    let w = app.status(CAM)["watch"].clone();
    assert_eq!(w["events"], 1, "{w}");
    assert_eq!(w["lastEventSeq"], seq, "{w}");
    assert_eq!(w["mode"], "keyframes", "{w}");

    // It goes: a change too (documented), and the socket that stopped watching hears
    // nothing of it.
    let mut other = app.ws();
    other.send(&json!({"action": "watch", "cameraIds": [CAM]}));
    other.expect_type("watching", secs(10));
    ws.send(&json!({"action": "unwatch"}));
    ws.expect_type("watching", secs(10));
    // The background has learnt the object once the score is back under the re-arm
    // level (half the threshold).
    wait_for(secs(30), "the score to fall back", || {
        let w = app.status(CAM)["watch"].clone();
        (w["lastScore"].as_f64() < Some(0.02))
            .then_some(())
            .ok_or(w.to_string())
    });
    sim.proc.signal(libc::SIGUSR1);
    let gone = match changes_within(&mut other, secs(10)).first() {
        Some(g) => g.clone(),
        None => panic!("no event for the going: {}", app.status(CAM)["watch"]),
    };
    assert!(gone["seq"].as_u64() > Some(seq), "{gone}");
    assert!(
        changes_within(&mut ws, secs(2)).is_empty(),
        "unwatched socket"
    );
}

#[test]
fn a_still_scene_gives_no_event_over_a_minute() {
    let (_sim, app) = watched(json!({"threshold": 0.05, "cooldown": 1}));
    let mut ws = app.ws();
    ws.send(&json!({"action": "watch", "cameraIds": [CAM]}));
    ws.expect_type("watching", secs(10));
    let start = app.status(CAM)["watch"]["scored"].as_u64().unwrap_or(0);
    let events = changes_within(&mut ws, secs(60));
    assert!(events.is_empty(), "a still scene fired: {events:?}");
    let w = app.status(CAM)["watch"].clone();
    let scored = w["scored"].as_u64().unwrap_or(0) - start;
    assert!(
        scored >= 40,
        "only {scored} pictures scored in a minute (not watching?): {w}"
    );
    assert_eq!(w["events"], 0, "{w}");
}

#[test]
fn the_watch_block_is_checked_settable_and_kept_across_a_restart() {
    let sim = Sim::simple("640x360", 15);
    let state = temp_dir("change-state").join("cameras.json");
    let mut app = Appliance::start_with_state(&state, &[]);
    let path = format!("/api/cameras/{CAM}/watch");
    // Refused on connect, with what is wrong.
    for (watch, says) in [
        (json!({"threshold": 0}), "watch.threshold must be"),
        (json!({"cooldown": 99999}), "watch.cooldown must be"),
        (json!("on"), "watch must be true, false or"),
        (json!({"cooldwn": 1}), "unknown field"),
    ] {
        let mut body = connect_body(CAM, &sim, "/1");
        body["watch"] = watch.clone();
        let r = app.connect(&body);
        assert_eq!(r.status, 422, "{watch}: {}", r.text());
        assert!(
            r.json()["detail"].as_str().unwrap_or("").contains(says),
            "{watch}: {}",
            r.text()
        );
    }
    assert_eq!(app.get(&path).status, 404);
    assert_eq!(app.post(&path, "true").status, 404);
    app.connect_sim(CAM, &sim, "/1");
    let w = app.get(&path).json();
    assert_eq!(w["enabled"], false, "{w}");
    assert_eq!(w["mode"], Value::Null, "{w}");
    // Set later; bad bodies refused and the setting kept.
    let r = app.post(&path, r#"{"threshold": 0.2, "cooldown": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["enabled"].clone(), r.json()["cooldown"].clone()),
        (json!(true), json!(3.0))
    );
    let r = app.post(&path, "{");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = app.post(&path, r#"{"threshold": 2}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("from 0.01 to 1"), "{}", r.text());
    assert_eq!(app.get(&path).json()["threshold"], 0.2);
    wait_mode(&app, "keyframes", 0.5..=1.6);

    // A viewer: every picture decoded, at most 5 a second scored.
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 15, "width": 160}));
    ws.expect_type("frame", secs(10));
    let w = wait_mode(&app, "frames", 3.0..=5.5);
    assert_eq!(w["events"], 0, "{w}");
    drop(ws);
    wait_mode(&app, "keyframes", 0.5..=1.6);

    // Kept across a restart.
    app.terminate_ok(secs(5));
    let mut app = Appliance::start_with_state(&state, &[]);
    let w = wait_for(secs(15), "the watch restored", || {
        let r = app.get(&path);
        (r.status == 200 && r.json()["mode"] == "keyframes")
            .then(|| r.json())
            .ok_or(r.text())
    });
    assert_eq!(
        (w["threshold"].clone(), w["cooldown"].clone()),
        (json!(0.2), json!(3.0))
    );
    // Off, and off after a restart too.
    let r = app.post(&path, r#"{"enabled": false}"#);
    assert_eq!(r.json()["enabled"], false, "{}", r.text());
    app.terminate_ok(secs(5));
    let app = Appliance::start_with_state(&state, &[]);
    let w = wait_for(secs(15), "the camera restored", || {
        let r = app.get(&path);
        (r.status == 200).then(|| r.json()).ok_or(r.text())
    });
    assert_eq!(w["enabled"], false, "{w}");
    drop(app);
    let _ = std::fs::remove_dir_all(state.parent().expect("state dir"));
}

/// The camera's own PTZ moves change the view (the simulator's target moves and the
/// picture hunts in brightness after each stop): not a change of the scene. Watching
/// starts over from the view the head arrives at, and an object appearing afterwards is
/// still one event.
#[test]
fn the_cameras_own_moves_are_not_changes() {
    let sim = Sim::with_ptz_travel("640x360", 15, 800);
    let visca = sim.ready["ptz"]["visca_tcp"].as_u64().expect("visca port");
    let app = Appliance::start(&[]);
    let mut body = connect_body(CAM, &sim, "/1");
    body["watch"] = json!(true);
    body["ptz"] = json!({"protocol": "visca-tcp", "port": visca});
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect: {}", r.text());
    // A viewer: every decoded picture is there, five a second are scored, so the hunt
    // after each stop is seen.
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 5}));
    wait_mode(&app, "frames", 2.5..=6.0);
    ws.send(&json!({"action": "watch", "cameraIds": [CAM]}));
    ws.expect_type("watching", secs(10));
    let ptz = |cmd: Value| {
        let r = app.post_json(&format!("/api/cameras/{CAM}/ptz"), &cmd);
        assert_eq!(r.status, 200, "PTZ {cmd}: {}", r.text());
    };
    // Past the detector's warm-up (2.5 s and 4 pictures), so a change would show.
    wait_until(secs(20), "20 pictures scored", || {
        app.status(CAM)["watch"]["scored"].as_u64().unwrap_or(0) >= 20
    });
    let events_before = app.status(CAM)["watch"]["events"].as_u64().unwrap_or(0);
    ptz(json!({"action": "preset", "op": "save", "index": 1}));
    ptz(json!({"action": "move", "pan": 1.0, "tilt": 0.5}));
    std::thread::sleep(Duration::from_millis(600));
    ptz(json!({"action": "stop"}));
    ptz(json!({"action": "preset", "op": "goto", "index": 1}));
    let during = changes_within(&mut ws, secs(8));
    assert!(
        during.is_empty(),
        "the camera's own moves gave change events: {during:?}"
    );
    let w = app.status(CAM)["watch"].clone();
    assert_eq!(w["events"].as_u64(), Some(events_before), "{w}");
    // Watching goes on: the object appearing is one event.
    sim.proc.signal(libc::SIGUSR1);
    let after = changes_within(&mut ws, secs(8));
    assert_eq!(after.len(), 1, "the object after the moves: {after:?}");
}
