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

use common::*;
use ptz_edge::sim::onvif::SimProfile;
use ptz_edge::sim::ptz::PtzSim;
use serde_json::{json, Value};

/// A password no reply may contain.
const PASSWORD: &str = "Zebra-9431";

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// An ONVIF device with user `admin` / [`PASSWORD`] whose two profiles point at `rtsp`'s
/// `/1`; the main one's URI embeds the credentials, as some firmware does.
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
                uri: format!("rtsp://127.0.0.1:{rtsp_port}/1?sub"),
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
    assert_eq!(profiles[1]["streamUri"], "rtsp://127.0.0.1:8554/1?sub");
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
