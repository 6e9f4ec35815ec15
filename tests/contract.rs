//! The app's compatible surface (shared/API.md): every endpoint with its exact field
//! names and JSON types, errors as `{"detail": string}`, CORS, and credentials that never
//! leave the appliance. Real `ptz-edge` and `camera-sim` processes over 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CAM: &str = "cam1";

/// A 640x360 30 fps simulator and an appliance with `CAM` connected to it.
fn connected() -> (Sim, Appliance) {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    (sim, app)
}

fn assert_object_has(v: &Value, keys: &[&str], what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object: {}", short(v)));
    for k in keys {
        assert!(obj.contains_key(*k), "{what}: no {k:?} in {}", short(v));
    }
}

#[test]
fn health_has_contract_fields_and_types() {
    let app = Appliance::start(&[]);
    let r = app.get("/health");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.assert_cors("/health");
    let v = r.json();
    assert_object_has(&v, &["status", "activeCameras", "uptime"], "/health");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(
        v["activeCameras"].as_u64(),
        Some(0),
        "activeCameras int: {v}"
    );
    assert!(v["uptime"].is_f64(), "uptime must be a float: {v}");
    let up1 = v["uptime"].as_f64().unwrap();
    assert!(
        (0.0..60.0).contains(&up1),
        "uptime of a fresh process: {up1}"
    );

    // Uptime is measured, not constant.
    let up2 = wait_for(Duration::from_secs(3), "uptime to grow", || {
        let up = app.get("/health").json()["uptime"].as_f64().unwrap_or(-1.0);
        if up > up1 {
            Ok(up)
        } else {
            Err(format!("uptime {up} after {up1}"))
        }
    });
    assert!(up2 > up1);
}

#[test]
fn health_counts_active_cameras() {
    let (sim, app) = connected();
    let v = app.get("/health").json();
    assert_eq!(v["activeCameras"].as_u64(), Some(1), "{v}");
    let r = app.connect(&connect_body("cam2", &sim, "/1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.get("/health").json()["activeCameras"].as_u64(), Some(2));
    assert_eq!(app.disconnect(CAM).status, 200);
    assert_eq!(app.get("/health").json()["activeCameras"].as_u64(), Some(1));
}

#[test]
fn connect_replies_with_exact_message() {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    // streamPath left out: it defaults to "/1".
    let started = Instant::now();
    let r = app.connect(&json!({
        "cameraId": CAM,
        "ip": "127.0.0.1",
        "port": sim.rtsp_port,
        "username": "",
        "password": "",
    }));
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.assert_cors("connect");
    let v = r.json();
    assert_eq!(v["success"], json!(true), "{v}");
    assert_eq!(v["cameraId"], json!(CAM), "{v}");
    assert_eq!(v["message"], json!("Camera connected successfully"), "{v}");
    eprintln!("connect-to-first-frame (640x360@30, default path): {took:?}");
    // "once the first frame has arrived": a frame is there at once.
    let f = app.frame(CAM, "");
    let (w, h, _) = jpeg_code(&f.body);
    assert_eq!((w, h), (640, 360));
}

#[test]
fn status_has_contract_fields_and_types() {
    let (_sim, app) = connected();
    let r = app.get(&format!("/api/cameras/{CAM}/status"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.assert_cors("status");
    let v = r.json();
    assert_object_has(
        &v,
        &[
            "cameraId",
            "connected",
            "frameRate",
            "lastFrameTime",
            "frameCount",
            "state",
            "lastError",
            "reconnects",
            "codec",
            "width",
            "height",
            "decoder",
            "decoding",
            "decodeMode",
            "viewers",
            "jpegEncodes",
        ],
        "status",
    );
    assert_eq!(v["cameraId"], json!(CAM), "{v}");
    assert_eq!(v["connected"], json!(true), "{v}");
    assert!(v["frameRate"].is_f64(), "frameRate must be a float: {v}");
    assert!(
        v["lastFrameTime"].is_f64(),
        "lastFrameTime must be a float: {v}"
    );
    let last = v["lastFrameTime"].as_f64().unwrap();
    assert!(
        (unix_now() - last).abs() < 5.0,
        "lastFrameTime {last} is not unix seconds near now ({})",
        unix_now()
    );
    let count = v["frameCount"]
        .as_u64()
        .unwrap_or_else(|| panic!("frameCount must be an integer: {v}"));
    assert!(count >= 1, "frameCount after the first frame: {v}");
    // Extensions.
    assert_eq!(v["state"], "streaming", "{v}");
    assert!(
        v["lastError"].is_null() || v["lastError"].is_string(),
        "{v}"
    );
    assert!(v["reconnects"].is_u64(), "{v}");
    assert_eq!(v["codec"], "h264", "{v}");
    assert_eq!(v["width"].as_u64(), Some(640), "{v}");
    assert_eq!(v["height"].as_u64(), Some(360), "{v}");
    assert!(v["decoder"].is_string(), "{v}");
    assert!(v["decoding"].is_boolean(), "{v}");
    assert_eq!(v["decodeMode"], "on-demand", "{v}");
    assert!(v["viewers"].is_u64(), "{v}");
    assert!(v["jpegEncodes"].is_u64(), "{v}");

    // frameRate is measured: a 30 fps camera reads near 30; frameCount keeps growing.
    let rate = wait_for(Duration::from_secs(5), "frameRate near 30", || {
        let s = app.status(CAM);
        let rate = s["frameRate"].as_f64().unwrap_or(-1.0);
        if (20.0..=40.0).contains(&rate) {
            Ok(rate)
        } else {
            Err(format!("frameRate {rate}"))
        }
    });
    eprintln!("measured frameRate of a 30 fps sim: {rate}");
    wait_for(
        Duration::from_secs(3),
        "frameCount and lastFrameTime to grow",
        || {
            let s = app.status(CAM);
            let (c, t) = (s["frameCount"].as_u64(), s["lastFrameTime"].as_f64());
            match (c, t) {
                (Some(c), Some(t)) if c > count && t > last => Ok(()),
                _ => Err(format!(
                    "{s} after frameCount {count}, lastFrameTime {last}"
                )),
            }
        },
    );
}

#[test]
fn camera_list_holds_status_objects() {
    let (sim, app) = connected();
    let r = app.get("/api/cameras");
    assert_eq!(r.status, 200, "{}", r.text());
    r.assert_cors("list");
    let v = r.json();
    let cams = v["cameras"]
        .as_array()
        .unwrap_or_else(|| panic!("no cameras array: {v}"));
    assert_eq!(cams.len(), 1, "{v}");
    assert_eq!(cams[0]["cameraId"], CAM, "{v}");
    assert_eq!(cams[0]["connected"], true, "{v}");
    assert!(cams[0]["frameCount"].is_u64(), "{v}");

    app.connect_sim("cam0", &sim, "/1");
    let v = app.get("/api/cameras").json();
    let ids: Vec<&str> = v["cameras"]
        .as_array()
        .expect("cameras array")
        .iter()
        .map(|c| c["cameraId"].as_str().expect("cameraId string"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["cam0", CAM], "{v}");
}

#[test]
fn frame_is_a_fresh_jpeg_with_a_readable_code() {
    let (_sim, app) = connected();
    let r = app.frame(CAM, "");
    r.assert_cors("frame");
    let seq1: u64 = r
        .header("x-frame-seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("X-Frame-Seq missing or not an integer: {:?}", r.headers));
    let ts: f64 = r
        .header("x-frame-timestamp")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("X-Frame-Timestamp missing or not a number: {:?}", r.headers));
    assert!(
        (unix_now() - ts).abs() < 5.0,
        "X-Frame-Timestamp {ts} is not unix seconds near now"
    );
    assert!(r.body.ends_with(&[0xFF, 0xD9]), "JPEG without EOI marker");
    let (w, h, code1) = jpeg_code(&r.body);
    assert_eq!((w, h), (640, 360), "a 640x360 source is not rescaled");
    let age = code_age_ms(&code1);
    assert!(age < 3000, "frame drawn {age} ms ago is not the latest");
    // X-Frame-Timestamp is when this picture was captured: after it was drawn.
    let drawn_to_captured = ptz_edge::sim::barcode::latency_ms(&code1, (ts * 1000.0) as u64 as u32);
    assert!(
        drawn_to_captured < 2000,
        "X-Frame-Timestamp {ts} is {drawn_to_captured} ms after the picture was drawn"
    );

    // A later request gives a later picture.
    let code2 = wait_for(Duration::from_secs(5), "a newer frame", || {
        let r = app.frame(CAM, "");
        let seq: u64 = r
            .header("x-frame-seq")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (_, _, code) = jpeg_code(&r.body);
        if seq > seq1 && code.counter > code1.counter {
            Ok(code)
        } else {
            Err(format!(
                "seq {seq} counter {} after seq {seq1} counter {}",
                code.counter, code1.counter
            ))
        }
    });
    assert!(code2.counter > code1.counter);
}

#[test]
fn unknown_camera_is_404_with_detail() {
    let app = Appliance::start(&[]);
    for path in ["/api/cameras/nope/status", "/api/cameras/nope/frame"] {
        let r = app.get(path);
        r.assert_detail(404, path);
        r.assert_cors(path);
    }
}

#[test]
fn disconnect_replies_success_for_known_and_unknown_ids() {
    let (_sim, app) = connected();
    let expected = json!({"success": true, "message": "Camera disconnected"});
    let r = app.disconnect("never-connected");
    assert_eq!(r.status, 200, "{}", r.text());
    r.assert_cors("disconnect");
    let v = r.json();
    assert_eq!(v["success"], expected["success"], "{v}");
    assert_eq!(v["message"], expected["message"], "{v}");

    let r = app.disconnect(CAM);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], expected["success"], "{v}");
    assert_eq!(v["message"], expected["message"], "{v}");
    // Gone everywhere.
    app.get(&format!("/api/cameras/{CAM}/status"))
        .assert_detail(404, "status after disconnect");
    app.get(&format!("/api/cameras/{CAM}/frame"))
        .assert_detail(404, "frame after disconnect");
    assert_eq!(app.get("/health").json()["activeCameras"], 0);
    assert_eq!(app.get("/api/cameras").json()["cameras"], json!([]));
    // Twice is fine too.
    assert_eq!(app.disconnect(CAM).status, 200);
}

#[test]
fn connect_with_bad_json_is_400_and_bad_fields_422() {
    let app = Appliance::start(&[]);
    let r = app.post("/api/cameras/connect", "{\"cameraId\": ");
    r.assert_detail(400, "truncated JSON");
    r.assert_cors("400");
    app.post("/api/cameras/connect", "not json at all")
        .assert_detail(400, "not JSON");

    let cases = [
        (json!({}), "empty object"),
        (json!({"ip": "127.0.0.1"}), "no cameraId"),
        (json!({"cameraId": "c"}), "no ip"),
        (
            json!({"cameraId": 5, "ip": "127.0.0.1"}),
            "numeric cameraId",
        ),
        (
            json!({"cameraId": "c", "ip": "127.0.0.1", "port": 0}),
            "port 0",
        ),
        (
            json!({"cameraId": "c", "ip": "127.0.0.1", "port": 70000}),
            "port 70000",
        ),
        (
            json!({"cameraId": "c", "ip": "127.0.0.1", "transport": "carrier-pigeon"}),
            "transport",
        ),
        (
            json!({"cameraId": "c", "ip": "not a host"}),
            "ip with a space",
        ),
        (
            json!({"cameraId": "c", "ip": "127.0.0.1", "streamPath": "no-slash"}),
            "streamPath",
        ),
        (json!(["cameraId", "c"]), "array body"),
    ];
    for (body, what) in cases {
        let r = app.connect(&body);
        r.assert_detail(422, what);
        r.assert_cors(what);
    }
    // Nothing was half-created by the failures.
    assert_eq!(app.get("/api/cameras").json()["cameras"], json!([]));

    app.post("/api/cameras/disconnect", "{oops")
        .assert_detail(400, "disconnect with bad JSON");
    app.post_json("/api/cameras/disconnect", &json!({}))
        .assert_detail(422, "disconnect without cameraId");
}

#[test]
fn cors_on_every_response_and_preflight() {
    let app = Appliance::start(&[]);
    let headers = [
        ("Origin", "http://localhost:8081"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    for path in [
        "/api/cameras/connect",
        "/api/cameras/x/status",
        "/health",
        "/nowhere",
    ] {
        let r = app.request("OPTIONS", path, &headers, b"");
        assert_eq!(r.status, 204, "preflight {path}: {:?}", r.headers);
        r.assert_cors(path);
        let methods = r
            .header("access-control-allow-methods")
            .unwrap_or_else(|| panic!("preflight {path}: no Allow-Methods in {:?}", r.headers))
            .to_ascii_uppercase();
        for m in ["GET", "POST"] {
            assert!(
                methods.contains(m),
                "preflight {path}: {m} not in {methods:?}"
            );
        }
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or_else(|| panic!("preflight {path}: no Allow-Headers in {:?}", r.headers))
            .to_ascii_lowercase();
        assert!(allowed.contains("content-type"), "{allowed:?}");
        assert!(r.body.is_empty(), "a 204 has no body");
    }
    // Error responses carry the header too.
    for (method, path) in [
        ("GET", "/nowhere"),
        ("DELETE", "/health"),
        ("GET", "/api/cameras/x/frame"),
    ] {
        let r = app.request(method, path, &[("Origin", "http://localhost:8081")], b"");
        assert!(r.status >= 400, "{method} {path}: {}", r.status);
        r.assert_cors(&format!("{method} {path}"));
        r.assert_detail(r.status, &format!("{method} {path}"));
    }
}

/// With `PTZ_EDGE_TOKEN`, everything but `/health` and preflight needs the token, as a
/// bearer header or `?token=`.
#[test]
fn token_guards_everything_but_health_and_preflight() {
    let token = "tok-123";
    let app = Appliance::start(&[("PTZ_EDGE_TOKEN", token)]);
    assert_eq!(app.get("/health").status, 200);
    let r = app.request("OPTIONS", "/api/cameras", &[("Origin", "http://x")], b"");
    assert_eq!(r.status, 204);
    for path in [
        "/api/cameras",
        "/api/cameras/x/status",
        "/api/cameras/x/frame",
    ] {
        let r = app.get(path);
        r.assert_detail(401, path);
        r.assert_cors(path);
        let r = app.request("GET", path, &[("Authorization", "Bearer wrong")], b"");
        r.assert_detail(401, path);
        let r = app.get(&format!("{path}?token=wrong"));
        r.assert_detail(401, path);
    }
    let r = app.connect(&json!({"cameraId": "c", "ip": "127.0.0.1"}));
    r.assert_detail(401, "connect without token");
    let bearer = format!("Bearer {token}");
    let r = app.request("GET", "/api/cameras", &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.get(&format!("/api/cameras?token={token}"));
    assert_eq!(r.status, 200, "{}", r.text());
    // The WebSocket: refused without, accepted with ?token=.
    assert!(
        Ws::try_connect(app.addr, "/ws").is_err(),
        "WebSocket upgrade without a token was accepted"
    );
    let mut ws = Ws::connect(app.addr, &format!("/ws?token={token}"));
    ws.ping_pong(Duration::from_secs(5));
}

/// A password with URL-special characters works, and shows nowhere: not in any reply,
/// not in the appliance's log (at debug level).
#[test]
fn password_with_special_characters_works_and_never_leaks() {
    const PASSWORD: &str = "s3cr3t@:/#%";
    let sim = Sim::with_password("640x360", 15, PASSWORD, &[]);
    let app = Appliance::start(&[("RUST_LOG", "debug")]);
    let mut replies: Vec<(String, String)> = Vec::new();

    let body = |pw: &str| {
        json!({
            "cameraId": CAM,
            "ip": "127.0.0.1",
            "port": sim.rtsp_port,
            "streamPath": "/1",
            "username": "admin",
            "password": pw,
            "transport": "tcp",
        })
    };
    // The simulator really checks: a wrong password fails, and fast.
    let wrong = format!("{PASSWORD}x");
    let started = Instant::now();
    let r = app.connect(&body(&wrong));
    replies.push(("connect with a wrong password".into(), r.text()));
    let detail = r.assert_detail(502, "connect with a wrong password");
    eprintln!("wrong password: {detail}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    app.get(&format!("/api/cameras/{CAM}/status"))
        .assert_detail(404, "a failed connect leaves no camera");

    let started = Instant::now();
    let r = app.connect(&body(PASSWORD));
    replies.push(("connect".into(), r.text()));
    assert_eq!(
        r.status,
        200,
        "connect with the right password: {}",
        r.text()
    );
    eprintln!(
        "connect-to-first-frame (640x360@15 with RTSP auth): {:?}",
        started.elapsed()
    );
    let (w, _, _) = jpeg_code(&app.frame(CAM, "").body);
    assert_eq!(w, 640);

    let r = app.get(&format!("/api/cameras/{CAM}/status"));
    replies.push(("status".into(), r.text()));
    assert_eq!(
        r.json()["username"],
        Value::Null,
        "status must not carry credentials"
    );
    replies.push(("list".into(), app.get("/api/cameras").text()));
    replies.push(("health".into(), app.get("/health").text()));
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 5}));
    let first = collect_frames(&mut ws, Duration::ZERO);
    assert!(!first.is_empty());
    // Replacing the camera pushes status messages to the subscriber.
    let r = app.connect(&body(PASSWORD));
    replies.push(("reconnect".into(), r.text()));
    assert_eq!(r.status, 200, "{}", r.text());
    let status = ws.expect_type("status", Duration::from_secs(5));
    replies.push(("ws status".into(), status.to_string()));
    ws.close();
    replies.push(("disconnect".into(), app.disconnect(CAM).text()));

    let needles = [
        PASSWORD.to_owned(),
        "s3cr3t".to_owned(),
        "s3cr3t%40".to_owned(),
        wrong.clone(),
    ];
    for (what, text) in &replies {
        for n in &needles {
            assert!(
                !text.contains(n.as_str()),
                "{what} reply shows the password: {text}"
            );
        }
    }
    let mut app = app;
    app.terminate_ok(Duration::from_secs(5));
    let log = app.proc.log_text();
    assert!(
        log.contains(CAM),
        "the log does not mention the camera:\n{log}"
    );
    for n in &needles {
        assert!(
            !log.contains(n.as_str()),
            "the appliance's log shows the password ({n:?})"
        );
    }
}

/// Ids are path segments: the app percent-encodes them (`encodeURIComponent`).
#[test]
fn camera_ids_with_spaces_and_unicode_work_in_paths() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    let id = "Kamera Süd";
    app.connect_sim(id, &sim, "/1");
    let encoded = "Kamera%20S%C3%BCd";
    let r = app.get(&format!("/api/cameras/{encoded}/status"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["cameraId"], id);
    let (w, _, _) = jpeg_code(&app.frame(encoded, "").body);
    assert_eq!(w, 640);
    assert_eq!(app.disconnect(id).status, 200);
    app.get(&format!("/api/cameras/{encoded}/status"))
        .assert_detail(404, "after disconnect");
}

/// The app's fetch keeps connections alive: several requests on one connection.
#[test]
fn keep_alive_connection_serves_several_requests() {
    use std::io::{BufRead, BufReader, Read, Write};
    let app = Appliance::start(&[]);
    let stream = std::net::TcpStream::connect(app.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    for (i, path) in [
        "/health",
        "/api/cameras",
        "/api/cameras/x/status",
        "/health",
    ]
    .iter()
    .enumerate()
    {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "request {i}: {status_line:?}"
        );
        let mut len = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
                assert!(
                    !(k.eq_ignore_ascii_case("connection") && v.trim() == "close"),
                    "request {i} ({path}) closed the keep-alive connection"
                );
            }
        }
        let len = len.unwrap_or_else(|| panic!("request {i}: no Content-Length"));
        let mut body = vec![0; len];
        reader.read_exact(&mut body).expect("body");
        let v: Value = serde_json::from_slice(&body).expect("JSON body");
        assert!(v.is_object(), "{v}");
    }
}

/// A camera that has never delivered a picture (restored from the state file while its
/// simulator is gone): status with `connected: false`, `lastFrameTime: null`, integer
/// `frameCount` 0; `/frame` is 404.
#[test]
fn camera_without_frames_has_null_last_frame_and_frame_404() {
    let state = temp_dir("state").join("cameras.json");
    {
        let sim = Sim::simple("640x360", 15);
        let mut app = Appliance::start_with_state(&state, &[]);
        app.connect_sim(CAM, &sim, "/1");
        app.terminate_ok(Duration::from_secs(5));
    }
    let app = Appliance::start_with_state(&state, &[]);
    let v = app.status(CAM);
    assert_eq!(v["cameraId"], CAM, "{v}");
    assert_eq!(v["connected"], false, "{v}");
    assert!(
        v["lastFrameTime"].is_null(),
        "lastFrameTime must be null: {v}"
    );
    assert_eq!(v["frameCount"].as_u64(), Some(0), "{v}");
    assert!(v["frameRate"].is_f64(), "frameRate must be a float: {v}");
    let r = app.get(&format!("/api/cameras/{CAM}/frame"));
    r.assert_detail(404, "frame of a camera without pictures");
    r.assert_cors("frame 404");
    let _ = std::fs::remove_dir_all(state.parent().expect("state dir"));
}

/// `transport` auto, tcp and udp all stream from the simulator.
#[test]
fn every_transport_streams() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    for transport in ["auto", "tcp", "udp", "UDP"] {
        let id = format!("t-{transport}");
        let mut body = connect_body(&id, &sim, "/1");
        body["transport"] = json!(transport);
        let started = Instant::now();
        let r = app.connect(&body);
        assert_eq!(r.status, 200, "transport {transport}: {}", r.text());
        eprintln!(
            "connect-to-first-frame (transport {transport}): {:?}",
            started.elapsed()
        );
        let (w, _, _) = jpeg_code(&app.frame(&id, "").body);
        assert_eq!(w, 640, "transport {transport}");
        assert_eq!(app.disconnect(&id).status, 200);
    }
}

/// PTZ control over HTTP-CGI with Digest auth uses the camera's credentials too; they
/// still show in no reply and no log line.
#[test]
fn ptz_credentials_never_leak() {
    const PASSWORD: &str = "pt2-s3cr3t@:/#%";
    let sim = Sim::with_password("640x360", 10, PASSWORD, &["--ptz"]);
    let cgi_port = sim.ready["ptz"]["http"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ptz.http port in {}", sim.ready));
    let mut app = Appliance::start(&[("RUST_LOG", "debug")]);
    let mut replies: Vec<(String, String)> = Vec::new();
    let r = app.connect(&json!({
        "cameraId": CAM,
        "ip": "127.0.0.1",
        "port": sim.rtsp_port,
        "username": "admin",
        "password": PASSWORD,
        "ptz": {"protocol": "cgi", "port": cgi_port},
    }));
    assert_eq!(r.status, 200, "connect with PTZ: {}", r.text());
    replies.push(("connect".into(), r.text()));
    let ptz = format!("/api/cameras/{CAM}/ptz");
    for cmd in [
        json!({"action": "move", "pan": 0.5, "tilt": -0.5, "zoom": 0}),
        json!({"action": "stop"}),
        json!({"action": "home"}),
    ] {
        let r = app.post_json(&ptz, &cmd);
        assert_eq!(r.status, 200, "PTZ {cmd}: {}", r.text());
        assert_eq!(r.json()["success"], true, "PTZ {cmd}: {}", r.text());
        replies.push((format!("ptz {cmd}"), r.text()));
    }
    replies.push(("ptz position".into(), app.get(&ptz).text()));
    replies.push((
        "status".into(),
        app.get(&format!("/api/cameras/{CAM}/status")).text(),
    ));
    replies.push(("list".into(), app.get("/api/cameras").text()));
    let mut ws = app.ws();
    ws.send(&json!({"action": "ptz", "cameraId": CAM, "command": {"action": "stop"}}));
    let v = ws.expect_type("ptz", Duration::from_secs(5));
    assert_eq!(v["success"], true, "{v}");
    replies.push(("ws ptz".into(), v.to_string()));
    ws.close();
    for (what, text) in &replies {
        assert!(
            !text.contains("s3cr3t"),
            "{what} reply shows the password: {text}"
        );
    }
    app.terminate_ok(Duration::from_secs(5));
    let log = app.proc.log_text();
    assert!(
        log.contains(CAM),
        "the log does not mention the camera:\n{log}"
    );
    assert!(
        !log.contains("s3cr3t"),
        "the appliance's log shows the password"
    );
}
