//! Settled snapshots and preset tours (issue 13), against camera-sim with a PTZ head
//! whose presets take a second to reach and whose picture hunts in brightness for
//! 600 ms after the head stops (`sim::scene::HUNT`). The picture carries the head's
//! position (`barcode::read_ptz`) and the moment it was drawn (the frame code), which is
//! how these tests know a snapshot is from after the stop and past the hunt.

mod common;

use std::time::Duration;

use common::*;
use ptz_edge::sim::barcode::{self, PtzCode};
use ptz_edge::sim::scene::HUNT;
use serde_json::{json, Value};

/// How long the simulated head takes to reach a preset.
const TRAVEL_MS: u32 = 1000;
/// Long enough for a tour on a loaded 2-core machine.
const SLOW: Duration = Duration::from_secs(90);

struct Rig {
    app: Appliance,
    _sim: Sim,
}

/// A 640x360 camera-sim with a PTZ head (presets take [`TRAVEL_MS`]), connected as `cam`
/// with VISCA over TCP.
fn rig() -> Rig {
    rig_with(TRAVEL_MS, 30, &[])
}

/// [`rig`] with presets taking `travel_ms`, the simulator at `fps`, and the
/// appliance's environment `env`.
fn rig_with(travel_ms: u32, fps: u32, env: &[(&str, &str)]) -> Rig {
    let sim = Sim::with_ptz_travel("640x360", fps, travel_ms);
    let visca = sim.ready["ptz"]["visca_tcp"].as_u64().expect("visca port");
    let app = Appliance::start(env);
    let mut body = connect_body("cam", &sim, "/1");
    body["ptz"] = json!({"protocol": "visca-tcp", "port": visca});
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect: {}", r.text());
    Rig { app, _sim: sim }
}

impl Rig {
    fn ptz(&self, cmd: Value) {
        let r = self.app.post_json("/api/cameras/cam/ptz", &cmd);
        assert_eq!(r.status, 200, "PTZ {cmd}: {}", r.text());
    }

    fn position(&self) -> (i64, i64, i64) {
        let p = self.app.get("/api/cameras/cam/ptz").json();
        let n = |k: &str| p[k].as_i64().unwrap_or_else(|| panic!("position {p}"));
        (n("pan"), n("tilt"), n("zoom"))
    }

    /// Waits for the head to stand still (the same position three times, 100 ms apart)
    /// and returns where.
    fn still_at(&self) -> (i64, i64, i64) {
        let mut last = self.position();
        let mut same = 1;
        wait_until(Duration::from_secs(10), "the head to stand still", || {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.position();
            same = if now == last { same + 1 } else { 1 };
            last = now;
            same >= 3
        });
        last
    }

    /// Moves right (`pan` > 0) or left by at least 300 units and saves preset `index`
    /// there.
    fn save_preset_after_move(&self, pan: f64, index: u8) -> (i64, i64, i64) {
        let before = self.position();
        self.ptz(json!({"action": "move", "pan": pan, "tilt": 0.3 * pan}));
        // Far enough that no two presets of a test can coincide.
        wait_until(Duration::from_secs(5), "the head to move 300 units", || {
            (self.position().0 - before.0).abs() >= 300
        });
        self.ptz(json!({"action": "stop"}));
        let at = self.still_at();
        self.ptz(json!({"action": "preset", "op": "save", "index": index}));
        at
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        request(
            self.app.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            SLOW,
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// The head's position drawn into a JPEG by the simulator.
fn drawn_position(jpeg: &[u8]) -> PtzCode {
    let (w, h, luma) = decode_jpeg(jpeg);
    barcode::read_ptz(&luma, w as usize, w, h).expect("a PTZ code in the picture")
}

/// The mean grey level of the picture's lower half (away from the codes).
fn lower_half_grey(jpeg: &[u8]) -> f64 {
    let (w, h, luma) = decode_jpeg(jpeg);
    let lower = &luma[(w * h / 2) as usize..];
    lower.iter().map(|&v| f64::from(v)).sum::<f64>() / lower.len() as f64
}

fn pos_of(v: &Value) -> (i64, i64, i64) {
    let n = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("position {v}"));
    (n("pan"), n("tilt"), n("zoom"))
}

fn code_pos(c: PtzCode) -> (i64, i64, i64) {
    (i64::from(c.pan), i64::from(c.tilt), i64::from(c.zoom))
}

fn b64(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().expect("data"))
        .expect("base64")
}

#[test]
fn a_snapshot_after_a_preset_is_from_after_the_stop_and_past_the_hunt() {
    let rig = rig();
    let home = rig.still_at();
    rig.ptz(json!({"action": "preset", "op": "save", "index": 1}));
    let away = rig.save_preset_after_move(1.0, 2);
    assert_ne!(
        home, away,
        "the presets must differ for the test to prove anything"
    );

    // The head is at preset 2; a snapshot at preset 1 makes it travel back.
    let asked_ms = barcode::now_ms32();
    let r = rig.post(
        "/api/cameras/cam/snapshot",
        &json!({"preset": 1, "format": "json"}),
    );
    assert_eq!(r.status, 200, "snapshot: {}", r.text());
    let shot = r.json();
    let jpeg = b64(&shot);

    // The position the head answered and the one drawn into the picture: preset 1's.
    assert_eq!(pos_of(&shot["position"]), home, "reply: {shot}");
    assert_eq!(
        code_pos(drawn_position(&jpeg)),
        home,
        "the picture is from the preset"
    );
    // Drawn after the travel and (almost all of) the hunt: not during the move, not
    // while the brightness still swung.
    let (_, _, code) = jpeg_code(&jpeg);
    let drawn_after = code.sent_ms.wrapping_sub(asked_ms);
    let hunt_ms = HUNT.as_millis() as u32;
    assert!(
        drawn_after >= TRAVEL_MS + hunt_ms * 3 / 4 && drawn_after < 60_000,
        "the picture was drawn {drawn_after} ms after the request: before the head \
         arrived ({TRAVEL_MS} ms) and its picture settled ({hunt_ms} ms more)"
    );
    let settle = shot["settleMs"].as_u64().expect("settleMs");
    eprintln!(
        "snapshot at preset 1 ({TRAVEL_MS} ms travel, {} ms hunt): settleMs {settle}, headMs {}, \
         examined {}, drawn {drawn_after} ms after the request",
        HUNT.as_millis(),
        shot["headMs"],
        shot["examined"]
    );
    assert!(settle >= u64::from(TRAVEL_MS), "settleMs {settle}");
    assert_eq!(shot["preset"], 1);
    assert_eq!(
        (shot["width"].as_u64(), shot["height"].as_u64()),
        (Some(640), Some(360))
    );

    // Sharp: about as bright as the still picture a while later (a hunting one is up to
    // 48 grey levels off; the encoder's own catching up after the hunt leaves ~3).
    std::thread::sleep(Duration::from_millis(800));
    let later = rig.app.frame("cam", "");
    assert_eq!(later.status, 200);
    let (a, b) = (lower_half_grey(&jpeg), lower_half_grey(&later.body));
    assert!(
        (a - b).abs() < 8.0,
        "snapshot grey {a:.1} vs still picture {b:.1}"
    );

    // The JPEG form carries the same in headers.
    let r = rig.post("/api/cameras/cam/snapshot", &json!({"preset": 2}));
    assert_eq!(r.status, 200, "snapshot: {}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let drawn = drawn_position(&r.body);
    assert_eq!(code_pos(drawn), away, "the picture is from preset 2");
    let header_pos = r
        .header("x-ptz-position")
        .expect("X-Ptz-Position")
        .to_owned();
    assert_eq!(header_pos, format!("{},{},{}", away.0, away.1, away.2));
    assert_eq!(r.header("x-preset"), Some("2"));
    assert!(r.header("x-settle-ms").is_some() && r.header("x-frame-seq").is_some());

    // No preset: the picture as it is, once settled (the head is already still).
    let r = rig.post("/api/cameras/cam/snapshot", &json!({"width": 320}));
    assert_eq!(r.status, 200, "snapshot: {}", r.text());
    let (w, h, _) = decode_jpeg(&r.body);
    assert_eq!((w, h), (320, 180));
}

#[test]
fn a_tour_returns_one_settled_picture_per_preset_in_order() {
    let rig = rig();
    let p1 = rig.still_at();
    rig.ptz(json!({"action": "preset", "op": "save", "index": 1}));
    let p2 = rig.save_preset_after_move(1.0, 2);
    let p3 = rig.save_preset_after_move(-1.0, 3);
    let p3 = if p3 == p1 {
        rig.save_preset_after_move(-1.0, 3)
    } else {
        p3
    };
    assert!(p1 != p2 && p2 != p3 && p1 != p3, "{p1:?} {p2:?} {p3:?}");

    let r = rig.post(
        "/api/cameras/cam/tour",
        &json!({
            "stops": [2, {"preset": 1, "width": 320}, {"preset": 3, "crop": [0.5, 0.5, 0.5, 0.5]}],
            "timeout": 20
        }),
    );
    assert_eq!(r.status, 200, "tour: {}", r.text());
    let tour = r.json();
    eprintln!("tour of 3 presets took {} s", tour["took"]);
    let shots = tour["shots"].as_array().expect("shots");
    assert_eq!(shots.len(), 3, "{tour}");
    let mut last_seq = 0;
    for (shot, (preset, want)) in shots.iter().zip([(2, p2), (1, p1), (3, p3)]) {
        assert_eq!(shot["preset"], preset);
        assert_eq!(pos_of(&shot["position"]), want, "shot at preset {preset}");
        // The code is read where it is drawn large enough: the full-size pictures.
        if shot["width"] == 640 {
            let jpeg = b64(shot);
            assert_eq!(
                code_pos(drawn_position(&jpeg)),
                want,
                "picture at preset {preset}"
            );
        }
        let seq = shot["seq"].as_u64().expect("seq");
        assert!(seq > last_seq, "pictures in order");
        last_seq = seq;
    }
    assert_eq!(shots[1]["width"], 320, "a stop's own width");
    assert_eq!(shots[0]["width"], 640);
    // A stop's crop: the lower-right quarter, cut at full resolution.
    assert_eq!(shots[2]["crop"], json!([0.5, 0.5, 0.5, 0.5]));
    let (w, h, _) = decode_jpeg(&b64(&shots[2]));
    assert_eq!((w, h), (320, 180));
}

#[test]
fn a_manual_command_stops_a_tour_and_one_tour_runs_at_a_time() {
    let rig = rig();
    rig.ptz(json!({"action": "preset", "op": "save", "index": 1}));
    let away = rig.save_preset_after_move(1.0, 2);
    let stops = json!({"stops": [1, 2, 1, 2, 1, 2]});
    std::thread::scope(|s| {
        let tour = s.spawn(|| rig.post("/api/cameras/cam/tour", &stops));
        // The tour is under way once the head leaves preset 2.
        wait_until(Duration::from_secs(20), "the tour to move the head", || {
            rig.position() != away
        });
        let busy = rig.app.status("cam")["ptz"]["busyWith"].clone();
        assert_eq!(busy, json!("a tour of 6 presets"), "status during the tour");
        let second = rig.post("/api/cameras/cam/tour", &json!({"stops": [1]}));
        let d = second.assert_detail(409, "a second tour");
        assert!(d.contains("busy with a tour of 6 presets"), "{d}");
        let snap = rig.post("/api/cameras/cam/snapshot", &json!({"preset": 1}));
        snap.assert_detail(409, "a preset snapshot during a tour");

        rig.ptz(json!({"action": "stop"}));
        let r = tour.join().expect("tour thread");
        let d = r.assert_detail(409, "the interrupted tour");
        assert!(
            d.contains("stopped by a manual PTZ command (stop)") && d.contains("of 6 presets"),
            "{d}"
        );
    });
    // The head is free again.
    assert_eq!(rig.app.status("cam")["ptz"]["busyWith"], Value::Null);
    let r = rig.post("/api/cameras/cam/tour", &json!({"stops": [2]}));
    assert_eq!(
        r.status,
        200,
        "a tour after the interrupted one: {}",
        r.text()
    );
}

#[test]
fn snapshot_errors_are_clear() {
    let rig = rig();
    let home = rig.still_at();
    rig.ptz(json!({"action": "preset", "op": "save", "index": 1}));
    rig.save_preset_after_move(1.0, 2);
    // Too short a limit for the head to arrive: 504 saying what moved.
    let r = rig.post(
        "/api/cameras/cam/snapshot",
        &json!({"preset": 1, "timeout": 0.5}),
    );
    let d = r.assert_detail(504, "a snapshot that cannot settle in time");
    assert!(
        d.contains("did not stop in time") || d.contains("did not settle"),
        "{d}"
    );

    for (body, status, what) in [
        (json!({"preset": 300}), 422, "preset"),
        (json!({"timeout": 0.1}), 422, "timeout"),
        (json!({"timeout": "soon"}), 422, "timeout"),
        (json!({"width": 5}), 422, "width"),
        (json!({"format": "png"}), 422, "format"),
        (json!([1]), 422, "a JSON object"),
    ] {
        let r = rig.post("/api/cameras/cam/snapshot", &body);
        let d = r.assert_detail(status, &format!("snapshot {body}"));
        assert!(d.contains(what), "{body}: {d}");
    }
    let r = rig.app.post("/api/cameras/cam/snapshot", "{not json");
    r.assert_detail(400, "bad JSON");
    for (body, what) in [
        (json!({}), "stops"),
        (json!({"stops": []}), "stops"),
        (json!({"stops": [1, "x"]}), "stops[1]"),
        (json!({"stops": (0..17).collect::<Vec<u8>>()}), "1 to 16"),
    ] {
        let r = rig.post("/api/cameras/cam/tour", &body);
        let d = r.assert_detail(422, &format!("tour {body}"));
        assert!(d.contains(what), "{body}: {d}");
    }
    rig.post("/api/cameras/nope/snapshot", &json!({}))
        .assert_detail(404, "unknown camera");
    // A preset PTZOptics reserves (90-99), anywhere in a tour: refused before the head
    // moves (once it has arrived from the timed-out snapshot above).
    wait_until(Duration::from_secs(10), "the head back at preset 1", || {
        rig.position() == home
    });
    let before = rig.still_at();
    let r = rig.post("/api/cameras/cam/tour", &json!({"stops": [2, 95]}));
    let d = r.assert_detail(422, "a tour with a reserved preset");
    assert!(d.contains("95"), "{d}");
    assert_eq!(rig.position(), before, "the head moved for a refused tour");
    let r = rig.post("/api/cameras/cam/snapshot", &json!({"preset": 95}));
    r.assert_detail(422, "a snapshot at a reserved preset");
}

#[test]
fn a_camera_without_ptz_gives_snapshots_but_no_presets() {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    app.connect_sim("plain", &sim, "/1");
    let r = request(
        app.addr,
        "POST",
        "/api/cameras/plain/snapshot",
        &[],
        b"",
        SLOW,
    )
    .expect("snapshot");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-ptz-position").is_none());
    jpeg_code(&r.body);
    let r = app.post_json("/api/cameras/plain/snapshot", &json!({"preset": 1}));
    r.assert_detail(404, "a preset without PTZ");
    let r = app.post_json("/api/cameras/plain/tour", &json!({"stops": [1]}));
    r.assert_detail(404, "a tour without PTZ");
}

/// Snapshots hold an HTTP worker while they wait: at most half the workers may, the
/// rest of the API stays answering, and SIGTERM ends a waiting snapshot at once.
#[test]
fn snapshots_are_bounded_and_end_on_shutdown() {
    // Two workers: one snapshot at a time. Presets take 30 s to reach.
    let mut rig = rig_with(30_000, 30, &[("PTZ_EDGE_HTTP_WORKERS", "2")]);
    rig.ptz(json!({"action": "preset", "op": "save", "index": 1}));
    let away = rig.save_preset_after_move(1.0, 2);
    let addr = rig.app.addr;
    let waiting = std::thread::spawn(move || {
        request(
            addr,
            "POST",
            "/api/cameras/cam/snapshot",
            &[("Content-Type", "application/json")],
            json!({"preset": 1, "timeout": 60}).to_string().as_bytes(),
            SLOW,
        )
    });
    wait_until(
        Duration::from_secs(20),
        "the snapshot to move the head",
        || rig.position() != away,
    );
    let r = rig.post("/api/cameras/cam/snapshot", &json!({}));
    let d = r.assert_detail(503, "a second snapshot with one allowed");
    assert!(d.contains("1 snapshots or tours are running"), "{d}");
    assert_eq!(rig.app.get("/health").status, 200, "the API still answers");

    let took = rig.app.terminate_ok(Duration::from_secs(5));
    eprintln!("SIGTERM with a snapshot waiting: exited in {took:?}");
    match waiting.join().expect("snapshot thread") {
        Ok(r) => {
            r.assert_detail(503, "the snapshot cut short by shutdown");
        }
        Err(e) => eprintln!("the waiting snapshot's connection closed: {e}"),
    }
}

/// HTTP-CGI cannot say where the head is: after a preset recall the picture alone tells
/// when it settled, and pictures of the first second do not count (the head may not have
/// started yet). The simulator's view does not pan with its head, so without that grace
/// this snapshot would settle mid-travel (the moving target is too small to hold it up).
#[test]
fn a_cgi_snapshot_waits_out_the_travel_without_a_position() {
    let sim = Sim::with_ptz_travel("640x360", 30, TRAVEL_MS);
    let http = sim.ready["ptz"]["http"].as_u64().expect("http port");
    let app = Appliance::start(&[]);
    let mut body = connect_body("cgi", &sim, "/1");
    body["ptz"] = json!({"protocol": "cgi", "port": http});
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect: {}", r.text());
    let ptz = |cmd: Value| {
        let r = app.post_json("/api/cameras/cgi/ptz", &cmd);
        assert_eq!(r.status, 200, "PTZ {cmd}: {}", r.text());
    };
    ptz(json!({"action": "preset", "op": "save", "index": 1}));
    ptz(json!({"action": "move", "pan": 1.0}));
    std::thread::sleep(Duration::from_millis(500));
    ptz(json!({"action": "stop"}));
    std::thread::sleep(Duration::from_millis(1000));
    let asked_ms = barcode::now_ms32();
    let r = request(
        app.addr,
        "POST",
        "/api/cameras/cgi/snapshot",
        &[("Content-Type", "application/json")],
        json!({"preset": 1, "format": "json"})
            .to_string()
            .as_bytes(),
        SLOW,
    )
    .expect("snapshot");
    assert_eq!(r.status, 200, "snapshot: {}", r.text());
    let shot = r.json();
    assert_eq!(
        shot["position"],
        Value::Null,
        "CGI reports no position: {shot}"
    );
    let jpeg = b64(&shot);
    assert_eq!(
        code_pos(drawn_position(&jpeg)),
        (0, 0, 0),
        "the picture is from preset 1"
    );
    let (_, _, code) = jpeg_code(&jpeg);
    let drawn_after = code.sent_ms.wrapping_sub(asked_ms);
    assert!(
        (TRAVEL_MS..60_000).contains(&drawn_after),
        "drawn {drawn_after} ms after the request: before the head arrived ({TRAVEL_MS} ms)"
    );
}

/// A camera answers a preset call before its motors start (the simulator's head starts
/// 0.3 s later): three equal position answers in that time are the old place, not the
/// stop. At 60 fps the picture would settle within that time too; the snapshot must
/// still come from the preset.
#[test]
fn a_preset_snapshot_waits_for_a_head_that_starts_late() {
    let rig = rig_with(TRAVEL_MS, 60, &[]);
    let home = rig.still_at();
    rig.ptz(json!({"action": "preset", "op": "save", "index": 1}));
    let away = rig.save_preset_after_move(1.0, 2);
    for (preset, want) in [(1, home), (2, away), (1, home)] {
        let r = rig.post(
            "/api/cameras/cam/snapshot",
            &json!({"preset": preset, "format": "json"}),
        );
        assert_eq!(r.status, 200, "snapshot: {}", r.text());
        let shot = r.json();
        assert_eq!(
            pos_of(&shot["position"]),
            want,
            "preset {preset}: settled after {} ms (head {} ms)",
            shot["settleMs"],
            shot["headMs"]
        );
        assert_eq!(
            code_pos(drawn_position(&b64(&shot))),
            want,
            "the picture at preset {preset}"
        );
    }
}
