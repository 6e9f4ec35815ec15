//! ONVIF end to end (issue #11) through the real `ptz-edge` binary: WS-Discovery finds
//! the simulator on loopback (`GET /api/discover`, the probe sent unicast to the
//! simulator because multicast need not loop back here), inspect lists its identity,
//! profiles and stream URIs without credentials, ONVIF PTZ moves its head, and a camera
//! connected by ONVIF streams from the URI the device gives.
//!
//! The ONVIF device is the PTZ simulator inside this test process (`PtzSim`, whose HTTP
//! port serves ONVIF); the video comes from a `camera-sim` process.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use ptz_edge::sim::onvif::SimProfile;
use ptz_edge::sim::ptz::PtzSim;
use serde_json::{json, Value};

/// A password no reply may contain.
const PASSWORD: &str = "Zebra-9431";

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// An ONVIF device with user `admin` / [`PASSWORD`] whose profiles `main` and `sub`
/// point at `/1` and `/2` on `rtsp_port`; the main one's URI embeds the credentials, as
/// some firmware does.
fn device(rtsp_port: u16) -> PtzSim {
    let sim = PtzSim::start(localhost());
    sim.set_onvif(|o| {
        o.credentials = Some(("admin".into(), PASSWORD.into()));
        o.name = "Stage left".into();
        o.hardware = "SIM-PTZ-20X".into();
        o.manufacturer = "Simco".into();
        o.profiles = vec![
            SimProfile {
                token: "main".into(),
                name: "Main".into(),
                encoding: "H264".into(),
                width: 320,
                height: 240,
                uri: format!("rtsp://admin:{PASSWORD}@127.0.0.1:{rtsp_port}/1"),
                ptz: true,
            },
            SimProfile {
                token: "sub".into(),
                name: "Sub".into(),
                encoding: "H264".into(),
                width: 320,
                height: 240,
                uri: format!("rtsp://127.0.0.1:{rtsp_port}/2"),
                ptz: false,
            },
        ];
    });
    sim
}

fn app_probing(sim: &PtzSim) -> Appliance {
    let targets = format!("127.0.0.1:{}", sim.discovery_port());
    Appliance::start(&[
        ("PTZ_EDGE_DISCOVERY_MULTICAST", "off"),
        ("PTZ_EDGE_DISCOVERY_TARGETS", &targets),
    ])
}

#[track_caller]
fn no_password(r: &Resp) {
    let text = r.text();
    assert!(
        !text.contains(PASSWORD),
        "a reply carries the password: {text}"
    );
}

#[test]
fn discover_finds_the_simulator_on_loopback() {
    let sim = device(554);
    let app = app_probing(&sim);
    let r = app.get("/api/discover?timeout=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{v}");
    let d = &devices[0];
    assert_eq!(d["address"], "127.0.0.1");
    assert_eq!(d["xaddrs"], json!([sim.onvif_device_url()]));
    assert_eq!(d["name"], "Stage left");
    assert_eq!(d["hardware"], "SIM-PTZ-20X");
    no_password(&r);
    for bad in ["timeout=0", "timeout=11", "timeout=soon"] {
        let r = app.get(&format!("/api/discover?{bad}"));
        r.assert_detail(422, bad);
    }
    let r = app.post("/api/discover", "{}");
    assert_eq!(r.status, 405);
}

/// The real thing: the probe goes to 239.255.255.250:3702 out of the interface `BIND`
/// names (loopback here), and the simulator, joined to the group on loopback, answers.
/// Other tests' simulators may answer too: ours must be among the devices.
#[test]
fn discover_by_multicast_on_loopback() {
    let mut sim = device(554);
    sim.join_discovery_multicast()
        .expect("joining 239.255.255.250 on loopback (needs multicast on lo)");
    let app = Appliance::start(&[]);
    let r = app.get("/api/discover?timeout=1.5");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let ours = v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["xaddrs"] == json!([sim.onvif_device_url()]))
        .cloned()
        .unwrap_or_else(|| panic!("the simulator did not answer the multicast probe: {v}"));
    assert_eq!(ours["name"], "Stage left");
    assert_eq!(ours["address"], "127.0.0.1");
}

#[test]
fn inspect_lists_identity_profiles_and_stream_uris_without_credentials() {
    let sim = device(8554);
    let app = app_probing(&sim);
    let body = json!({"ip": "127.0.0.1", "port": sim.http_port(), "username": "admin", "password": PASSWORD});
    let r = app.post_json("/api/discover/inspect", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    no_password(&r);
    let v = r.json();
    assert_eq!(v["manufacturer"], "Simco");
    assert_eq!(v["model"], "camera-sim");
    assert!(
        v["firmwareVersion"].as_str().is_some_and(|f| !f.is_empty()),
        "{v}"
    );
    assert_eq!(v["ptz"], true);
    let profiles = v["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 2, "{v}");
    assert_eq!(
        (
            &profiles[0]["token"],
            &profiles[0]["encoding"],
            &profiles[0]["width"],
            &profiles[0]["height"]
        ),
        (&json!("main"), &json!("H264"), &json!(320), &json!(240))
    );
    assert_eq!(profiles[0]["streamUri"], "rtsp://127.0.0.1:8554/1");
    assert_eq!(profiles[1]["streamUri"], "rtsp://127.0.0.1:8554/2");
    assert_eq!(profiles[1]["ptz"], false);

    // A wrong password: a clear 502 naming the authentication failure, no password echoed.
    let mut wrong = body.clone();
    wrong["password"] = json!("nope-nope");
    let r = app.post_json("/api/discover/inspect", &wrong);
    let detail = r.assert_detail(502, "wrong password");
    assert!(detail.contains("ONVIF authentication failed"), "{detail}");
    assert!(!detail.contains("nope-nope"), "{detail}");
    // Nobody there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = app.post_json(
        "/api/discover/inspect",
        &json!({"ip": "127.0.0.1", "port": port}),
    );
    r.assert_detail(502, "nobody listening");
    app.post("/api/discover/inspect", "{\"port\":80}")
        .assert_detail(422, "no ip");
}

/// The connect body for camera `id` with video from `video` and ONVIF PTZ on `sim`.
fn onvif_ptz_body(id: &str, video: &Sim, sim: &PtzSim, password: &str) -> Value {
    let mut body = connect_body(id, video, "/1");
    body["username"] = json!("admin");
    body["password"] = json!(password);
    body["ptz"] = json!({"protocol": "onvif", "port": sim.http_port()});
    body
}

#[test]
fn onvif_ptz_moves_the_head_through_the_appliance() {
    let video = Sim::simple("320x240", 10);
    let sim = device(video.rtsp_port);
    let app = Appliance::start(&[]);
    let r = app.connect(&onvif_ptz_body("cam-onvif", &video, &sim, PASSWORD));
    assert_eq!(r.status, 200, "{}", r.text());
    let ptz = "/api/cameras/cam-onvif/ptz";
    let r = app.post_json(ptz, &json!({"action": "move", "pan": 1.0, "tilt": 0.5}));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = sim.state();
    assert!(s.pan_velocity > 0.0 && s.tilt_velocity > 0.0, "{s:?}");
    let r = app.post_json(ptz, &json!({"action": "stop"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let s = sim.state();
    assert!(!s.moving && s.pan > 0, "{s:?}");
    let r = app.get(ptz);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert!(p["pan"].as_i64().is_some_and(|v| v > 0), "{p}");
    let r = app.post_json(ptz, &json!({"action": "home"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((sim.state().pan, sim.state().tilt), (0, 0));
    let st = app.status("cam-onvif");
    assert_eq!(st["ptz"]["protocol"], "onvif", "{st}");

    // The same camera with a wrong password: the move is refused with a clear error.
    let r = app.connect(&onvif_ptz_body("cam-wrong", &video, &sim, "bad-password"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.post_json(
        "/api/cameras/cam-wrong/ptz",
        &json!({"action": "move", "pan": 1.0}),
    );
    let detail = r.assert_detail(502, "wrong ONVIF password");
    assert!(detail.contains("ONVIF authentication failed"), "{detail}");
    assert!(!sim.state().moving);
}

/// A connect body in the ONVIF form: the device at 127.0.0.1:`port`, no `streamPath`.
fn onvif_connect_body(id: &str, port: u16, onvif: Value, password: &str) -> Value {
    json!({
        "cameraId": id,
        "ip": "127.0.0.1",
        "username": "admin",
        "password": password,
        "transport": "tcp",
        "onvif": onvif,
        "onvifPort": port,
    })
}

/// The frame's sequence number, once a fresh one is served.
fn frame_seq(app: &Appliance, id: &str) -> u64 {
    let r = app.frame(id, "?width=160");
    r.header("x-frame-seq")
        .and_then(|s| s.parse().ok())
        .expect("X-Frame-Seq")
}

#[test]
fn connect_by_onvif_streams_from_the_uri_the_device_gives() {
    let video = Sim::start(&[
        "--path", "/1", "--path", "/2", "--size", "320x240", "--fps", "10",
    ]);
    let sim = device(video.rtsp_port);
    let app = Appliance::start(&[]);

    // The main profile (its URI carries credentials the appliance drops).
    let r = app.connect(&onvif_connect_body(
        "by-onvif",
        sim.http_port(),
        json!(true),
        PASSWORD,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    frame_seq(&app, "by-onvif");
    let st = app.status("by-onvif");
    assert_eq!(st["state"], "streaming", "{st}");
    let status_text = st.to_string();
    assert!(!status_text.contains(PASSWORD), "{status_text}");

    // A named profile, with ONVIF PTZ on the same port.
    let mut body = onvif_connect_body(
        "by-profile",
        sim.http_port(),
        json!({"profile": "sub"}),
        PASSWORD,
    );
    body["ptz"] = json!({"protocol": "onvif"});
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "{}", r.text());
    frame_seq(&app, "by-profile");
    let r = app.post_json(
        "/api/cameras/by-profile/ptz",
        &json!({"action": "move", "zoom": 1.0}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(sim.state().zoom_velocity > 0.0);
    app.post_json("/api/cameras/by-profile/ptz", &json!({"action": "stop"}));

    // Refusals: an unknown profile, a wrong password, both forms at once.
    let r = app.connect(&onvif_connect_body(
        "nope",
        sim.http_port(),
        json!({"profile": "x"}),
        PASSWORD,
    ));
    let d = r.assert_detail(502, "unknown profile");
    assert!(d.contains("no media profile \"x\""), "{d}");
    let r = app.connect(&onvif_connect_body(
        "nope",
        sim.http_port(),
        json!(true),
        "wrong-pw",
    ));
    let d = r.assert_detail(502, "wrong password");
    assert!(d.contains("ONVIF authentication failed"), "{d}");
    assert!(!d.contains("wrong-pw"), "{d}");
    let mut both = onvif_connect_body("nope", sim.http_port(), json!(true), PASSWORD);
    both["streamPath"] = json!("/1");
    app.connect(&both)
        .assert_detail(422, "streamPath and onvif");
    assert_eq!(app.get("/api/cameras/nope/status").status, 404);

    // The contract's form is unchanged beside it.
    app.connect_sim("by-path", &video, "/1");
}

/// The device comes back serving its stream elsewhere (a new RTSP port after a
/// reboot): the camera connected by ONVIF asks for the URI again and streams again.
#[test]
fn a_camera_connected_by_onvif_follows_a_moved_stream() {
    let mut video = Sim::simple("320x240", 10);
    let sim = device(video.rtsp_port);
    let app = Appliance::start(&[]);
    let r = app.connect(&onvif_connect_body(
        "moving",
        sim.http_port(),
        json!(true),
        PASSWORD,
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let before = frame_seq(&app, "moving");

    video.proc.stop(Duration::from_secs(5));
    wait_for(
        Duration::from_secs(15),
        "the camera to notice the outage",
        || {
            let s = app.status("moving");
            if s["state"] == "reconnecting" {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let moved = Sim::simple("320x240", 10);
    assert_ne!(moved.rtsp_port, video.rtsp_port);
    let port = moved.rtsp_port;
    sim.set_onvif(|o| {
        for p in &mut o.profiles {
            p.uri = p
                .uri
                .replace(&format!(":{}/", video.rtsp_port), &format!(":{port}/"));
        }
    });
    wait_for(
        Duration::from_secs(30),
        "streaming from the moved URI",
        || {
            let s = app.status("moving");
            if s["state"] == "streaming" {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let after = frame_seq(&app, "moving");
    assert!(after > before, "no new picture: {before} -> {after}");
    let log = app.proc.log_text();
    assert!(
        log.contains(&format!("stream moved to rtsp://127.0.0.1:{port}/1")),
        "{}",
        tail(&log, 30)
    );
    assert!(!log.contains(PASSWORD), "the log carries the password");
}

/// A camera connected by ONVIF is saved with its ONVIF source and comes back after a
/// restart, its PTZ going to the device; the stream it was saved with has moved
/// meanwhile, so the restored camera must ask the device again.
#[test]
fn an_onvif_camera_is_restored_after_a_restart() {
    let mut video = Sim::simple("320x240", 10);
    let sim = device(video.rtsp_port);
    let state = temp_dir("state").join("cameras.json");
    {
        let mut app = Appliance::start_with_state(&state, &[]);
        let mut body = onvif_connect_body(
            "saved",
            sim.http_port(),
            json!({"profile": "main"}),
            PASSWORD,
        );
        body["ptz"] = json!({"protocol": "onvif"});
        let r = app.connect(&body);
        assert_eq!(r.status, 200, "{}", r.text());
        app.terminate_ok(Duration::from_secs(5));
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let cam = &saved["cameras"][0];
    assert_eq!(
        cam["onvif"],
        json!({"host": "127.0.0.1", "port": sim.http_port(), "profile": "main"}),
        "{saved}"
    );
    video.proc.stop(Duration::from_secs(5));
    let moved = Sim::simple("320x240", 10);
    let (old, new) = (video.rtsp_port, moved.rtsp_port);
    sim.set_onvif(|o| {
        for p in &mut o.profiles {
            p.uri = p.uri.replace(&format!(":{old}/"), &format!(":{new}/"));
        }
    });
    let app = Appliance::start_with_state(&state, &[]);
    wait_for(
        Duration::from_secs(30),
        "the restored camera streaming",
        || {
            let s = app.status("saved");
            if s["state"] == "streaming" {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    frame_seq(&app, "saved");
    let r = app.post_json("/api/cameras/saved/ptz", &json!({"action": "home"}));
    assert_eq!(r.status, 200, "{}", r.text());
}
