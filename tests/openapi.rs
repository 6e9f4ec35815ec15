//! `GET /openapi.json` stays true: its paths and methods are exactly the router's table
//! (`api::router::ROUTES`), a real validator (PyPI's `openapi-spec-validator`) accepts it
//! as OpenAPI 3.1, and what a running appliance answers — REST replies, WebSocket
//! messages, PTZ — validates against its schemas (the validator's JSON Schema engine,
//! `openapi-schema-validator`), with the status and health objects having exactly the
//! fields the schemas name.
//!
//! Outside CI a missing validator skips those checks with a message; in CI (`CI=true`)
//! it fails, since `deploy/deps.sh --test` installs it.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use ptz_edge::api::router::{OPENAPI, ROUTES};
use serde_json::{json, Value};

const CAM: &str = "cam1";
const TOKEN: &str = "openapi-test-token";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON")
}

#[test]
fn paths_and_methods_are_the_routers() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.json differs from router::ROUTES: routed but not documented {missing:?}; \
         documented but not routed {extra:?}"
    );
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    // Every path parameter of a pattern is declared.
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for m in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let params = item[*m]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let declared = |name: &str| {
                params.iter().any(|p| {
                    p["name"] == name
                        || p["$ref"]
                            .as_str()
                            .is_some_and(|r| r.ends_with(&format!("/{name}")))
                })
            };
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(declared(name), "{m} {path}: no parameter {name}");
            }
        }
    }
}

/// Whether Python with the validator is there; outside CI, `None` means skip.
fn validator() -> Option<()> {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import openapi_spec_validator, openapi_schema_validator",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "python3 with openapi-spec-validator is missing; CI installs it with \
             deploy/deps.sh --test"
        );
    }
    eprintln!(
        "SKIPPED: openapi-spec-validator is not installed (pip install openapi-spec-validator)"
    );
    None
}

#[track_caller]
fn python(args: &[&str], what: &str) {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Validates each `(schema name, instance)` against `#/components/schemas/<name>`.
const VALIDATE: &str = r##"
import json, sys
from openapi_schema_validator import OAS31Validator
doc = json.load(open(sys.argv[1]))
failed = []
for name, instance in doc["checks"]:
    schema = {"$ref": "#/components/schemas/" + name, "components": doc["spec"]["components"]}
    errors = list(OAS31Validator(schema).iter_errors(instance))
    if errors:
        failed.append(f"{name}: {[e.message for e in errors]} in {json.dumps(instance)[:400]}")
# And the schemas are not so loose that anything passes.
for name, instance in doc["rejects"]:
    if not list(OAS31Validator({"$ref": "#/components/schemas/" + name,
                                "components": doc["spec"]["components"]}).iter_errors(instance)):
        failed.append(f"{name} accepts {json.dumps(instance)}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"##;

/// Field names of an object and of the schema's `properties`.
fn same_fields(instance: &Value, spec: &Value, schema: &str) {
    let got: BTreeSet<&String> = instance.as_object().expect("an object").keys().collect();
    let named: BTreeSet<&String> = spec["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has properties"))
        .keys()
        .collect();
    assert_eq!(
        got, named,
        "the API's {schema} fields (left) and docs/openapi.json's (right) differ"
    );
}

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

#[test]
fn the_served_document_is_valid_and_replies_match_it() {
    let sim = Sim::start(&["--path", "/1", "--size", "320x180", "--fps", "15", "--ptz"]);
    let app = Appliance::start(&[("PTZ_EDGE_TOKEN", TOKEN)]);

    // Served without the token, byte for byte the file.
    let r = app.get("/openapi.json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), OPENAPI);
    let spec = spec();

    // What the API answers, to check against the schemas.
    let (k, v) = auth();
    let h = [(k, v.as_str())];
    let get = |path: &str| app.request("GET", path, &h, b"");
    let post = |path: &str, body: &Value| {
        app.request(
            "POST",
            path,
            &[h[0], ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let mut checks: Vec<(&str, Value)> = Vec::new();
    let health = app.get("/health").json();
    same_fields(&health, &spec, "Health");
    checks.push(("Health", health));

    let visca = sim.ready["ptz"]["visca_tcp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ptz.visca_tcp in {}", sim.ready));
    let mut body = connect_body(CAM, &sim, "/1");
    body["ptz"] = json!({"protocol": "visca-tcp", "port": visca});
    body["watch"] = json!({"threshold": 0.05, "cooldown": 2});
    checks.push(("ConnectRequest", body.clone()));
    let r = post("/api/cameras/connect", &body);
    assert_eq!(r.status, 200, "connect: {}", r.text());
    checks.push(("ConnectResponse", r.json()));

    let status = get(&format!("/api/cameras/{CAM}/status")).json();
    same_fields(&status, &spec, "CameraStatus");
    assert!(status["ptz"].is_object(), "{status}");
    checks.push(("CameraStatus", status));
    checks.push(("CameraList", get("/api/cameras").json()));
    let missing = get("/api/cameras/nocam/status");
    assert_eq!(missing.status, 404);
    checks.push(("Error", missing.json()));

    // Change watching: read, set, refused.
    let w = get(&format!("/api/cameras/{CAM}/watch"));
    assert_eq!(w.status, 200, "{}", w.text());
    same_fields(&w.json(), &spec, "WatchStatus");
    checks.push(("WatchStatus", w.json()));
    let block = json!({"threshold": 0.1, "cooldown": 5});
    checks.push(("WatchBlock", block.clone()));
    let w = post(&format!("/api/cameras/{CAM}/watch"), &block);
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(w.json()["cooldown"], 5.0, "{}", w.text());
    checks.push(("WatchStatus", w.json()));
    let w = post(
        &format!("/api/cameras/{CAM}/watch"),
        &json!({"cooldown": 0}),
    );
    assert_eq!(w.status, 422, "{}", w.text());
    checks.push(("Error", w.json()));

    let stop = json!({"action": "stop"});
    checks.push(("PtzCommand", stop.clone()));
    let r = post(&format!("/api/cameras/{CAM}/ptz"), &stop);
    assert_eq!(r.status, 200, "ptz stop: {}", r.text());
    checks.push(("PtzResult", r.json()));
    let r = wait_for(Duration::from_secs(10), "a PTZ position", || {
        let r = get(&format!("/api/cameras/{CAM}/ptz"));
        (r.status == 200).then_some(r.clone()).ok_or(r.text())
    });
    checks.push(("PtzPosition", r.json()));

    // The WebSocket: every kind of message each way.
    let mut ws = Ws::connect(app.addr, &format!("/ws?token={TOKEN}"));
    for m in [
        json!({"action": "ping"}),
        json!({"action": "subscribe", "cameraId": CAM, "fps": 5, "width": 160}),
        json!({"action": "subscribe", "cameraId": CAM, "fps": 5, "crop": [0, 0, 0.5, 0.5]}),
        json!({"action": "ptz", "cameraId": CAM, "command": {"action": "move", "pan": 0.5}}),
        json!({"action": "ptz", "cameraId": CAM, "command": {"action": "stop"}}),
        json!({"action": "unsubscribe"}),
        json!({"action": "watch", "cameraIds": [CAM]}),
        json!({"action": "unwatch"}),
        json!({"action": "subscribe", "cameraId": CAM, "binary": true}),
        json!({"action": "subscribe", "cameraId": CAM, "binary": true, "crop": "0.5,0.5,0.5,0.5"}),
        json!({"action": "bogus"}),
    ] {
        // The bogus action is the one message the schema must not accept.
        if m["action"] != "bogus" {
            checks.push(("WsClientMessage", m.clone()));
        }
        ws.send(&m);
        match m["action"].as_str() {
            Some("ping") => checks.push(("WsServerMessage", ws.expect_type("pong", secs(10)))),
            // A subscription with a crop: wait for a frame of it (frames of the
            // previous one may still be on the way), which carries "crop".
            Some("subscribe") if m["binary"] == true => {
                let header = wait_for(secs(20), "a binary frame", || match ws.recv(secs(1)) {
                    Some(WsIn::Binary(b)) => {
                        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
                        let h: Value = serde_json::from_slice(&b[2..2 + n]).expect("JSON header");
                        if m.get("crop").is_some() == h.get("crop").is_some() {
                            Ok(h)
                        } else {
                            Err(format!("a frame of the previous subscription: {h}"))
                        }
                    }
                    other => Err(format!("{other:?}")),
                });
                checks.push(("WsBinaryFrameHeader", header));
            }
            Some("subscribe") if m.get("crop").is_some() => {
                let frame = wait_for(secs(20), "a cropped frame", || {
                    let v = ws.expect_type("frame", secs(20));
                    v.get("crop")
                        .is_some()
                        .then_some(v.clone())
                        .ok_or(short(&v))
                });
                checks.push(("WsServerMessage", frame))
            }
            Some("subscribe") => {
                checks.push(("WsServerMessage", ws.expect_type("frame", secs(20))))
            }
            Some("ptz") => checks.push(("WsServerMessage", ws.expect_type("ptz", secs(10)))),
            Some("watch") | Some("unwatch") => {
                checks.push(("WsServerMessage", ws.expect_type("watching", secs(10))))
            }
            Some("bogus") => checks.push(("WsServerMessage", ws.expect_type("error", secs(10)))),
            _ => {}
        }
    }
    // A settled snapshot and a one-stop tour (preset 1 saved where the head is).
    let snap_body = json!({"format": "json", "width": 160, "crop": [0, 0, 0.5, 0.5]});
    checks.push(("SnapshotRequest", snap_body.clone()));
    let r = post(&format!("/api/cameras/{CAM}/snapshot"), &snap_body);
    assert_eq!(r.status, 200, "snapshot: {}", r.text());
    let snap = r.json();
    same_fields(&snap, &spec, "Snapshot");
    checks.push(("Snapshot", snap));
    let r = post(
        &format!("/api/cameras/{CAM}/ptz"),
        &json!({"action": "preset", "op": "save", "index": 1}),
    );
    assert_eq!(r.status, 200, "preset save: {}", r.text());
    let tour_body = json!({"stops": [1, {"preset": 1, "width": 160}], "timeout": 20});
    checks.push(("TourRequest", tour_body.clone()));
    let r = post(&format!("/api/cameras/{CAM}/tour"), &tour_body);
    assert_eq!(r.status, 200, "tour: {}", r.text());
    checks.push(("TourResponse", r.json()));

    let r = post("/api/cameras/disconnect", &json!({"cameraId": CAM}));
    checks.push(("DisconnectResponse", r.json()));

    let Some(()) = validator() else {
        return;
    };
    let dir = temp_dir("openapi");
    let file = dir.join("openapi.json");
    std::fs::write(&file, OPENAPI).expect("write the document");
    let file_s = file.to_str().expect("a UTF-8 path");
    python(
        &["-m", "openapi_spec_validator", file_s],
        "openapi-spec-validator rejects docs/openapi.json",
    );
    let checks_file = dir.join("checks.json");
    std::fs::write(
        &checks_file,
        json!({"spec": spec, "checks": checks, "rejects": [
            ["WsClientMessage", {"action": "bogus"}],
            ["WsClientMessage", {"action": "subscribe"}],
            ["WsClientMessage", {"action": "subscribe", "cameraId": "c", "crop": [0, 0, 2, 1]}],
            ["WsClientMessage", {"action": "subscribe", "cameraId": "c", "crop": [0, 0, 1]}],
            ["WsClientMessage", {"action": "watch", "cameraIds": []}],
            ["WatchBlock", {"threshold": 2}],
            ["WatchBlock", {"treshold": 0.1}],
            ["PtzCommand", {"action": "preset", "op": "goto"}],
            ["SnapshotRequest", {"format": "png"}],
            ["TourRequest", {"stops": []}],
            ["ConnectRequest", {"cameraId": "a/b", "ip": "10.0.0.1"}],
            ["CameraStatus", {"cameraId": "c", "connected": true, "frameRate": 1,
                              "lastFrameTime": null, "frameCount": 1, "state": "weird"}],
        ]})
        .to_string(),
    )
    .expect("write the checks");
    python(
        &["-c", VALIDATE, checks_file.to_str().expect("a UTF-8 path")],
        "replies that do not match docs/openapi.json",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
