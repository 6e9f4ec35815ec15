//! Cameras over time: replacing a connection, disconnect freeing its threads, failures
//! that leave nothing behind, persistence across a restart, and shutdown on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CAM: &str = "cam";

fn camera_ids(app: &Appliance) -> Vec<String> {
    let v = app.get("/api/cameras").json();
    v["cameras"]
        .as_array()
        .unwrap_or_else(|| panic!("no cameras array: {v}"))
        .iter()
        .map(|c| field_str(c, "cameraId"))
        .collect()
}

#[test]
fn reconnect_replaces_the_old_stream() {
    let small = Sim::simple("640x360", 30);
    let large = Sim::simple("1280x720", 30);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &small, "/1");
    let (w, h, _) = jpeg_code(&app.frame(CAM, "").body);
    assert_eq!((w, h), (640, 360));

    // A viewer subscribed before the replacement.
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 10}));
    let before = collect_frames(&mut ws, Duration::ZERO);
    let last_seq = before.last().expect("a frame").seq;

    let took = app.connect_sim(CAM, &large, "/1");
    eprintln!("connect-to-first-frame when replacing (1280x720@30): {took:?}");
    assert_eq!(camera_ids(&app), [CAM], "still exactly one camera");
    assert_eq!(app.get("/health").json()["activeCameras"], 1);

    // Right after the connect reply, frames come from the new source.
    let (w, h, _) = jpeg_code(&app.frame(CAM, "").body);
    assert_eq!((w, h), (1280, 720), "frame after replacing the source");
    let s = app.status(CAM);
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(1280), Some(720)),
        "{s}"
    );
    assert_eq!(s["connected"], true, "{s}");

    // The viewer follows the id to its new stream, with seq still increasing.
    let f = wait_for(
        Duration::from_secs(5),
        "a 1280x720 frame on the socket",
        || match ws.recv(Duration::from_millis(200)) {
            Some(WsIn::Closed(c)) => panic!("socket closed: {c:?}"),
            Some(m) => match as_frame(&m) {
                Some(f) if f.width == 1280 => Ok(f),
                Some(f) => Err(format!("{}x{} seq {}", f.width, f.height, f.seq)),
                None => Err("a non-frame message".into()),
            },
            None => Err("nothing".into()),
        },
    );
    assert!(f.seq > last_seq, "seq {} after {last_seq}", f.seq);
    let (w, h, _) = jpeg_code(&f.jpeg);
    assert_eq!((w, h), (1280, 720));
}

#[test]
fn reconnect_to_another_path_of_the_same_sim() {
    let sim = Sim::start(&[
        "--path", "/1", "--path", "/x", "--size", "640x360", "--fps", "15",
    ]);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let seq1: u64 = app
        .frame(CAM, "")
        .header("x-frame-seq")
        .and_then(|s| s.parse().ok())
        .expect("X-Frame-Seq");
    app.connect_sim(CAM, &sim, "/x");
    assert_eq!(camera_ids(&app), [CAM]);
    let r = app.frame(CAM, "");
    let seq2: u64 = r
        .header("x-frame-seq")
        .and_then(|s| s.parse().ok())
        .expect("X-Frame-Seq");
    assert!(seq2 > seq1, "seq {seq2} after {seq1}");
    jpeg_code(&r.body);
    let s = app.status(CAM);
    assert_eq!(s["state"], "streaming", "{s}");
}

/// Connect and disconnect cycles (with a `/frame` and a WebSocket viewer each time) give
/// every thread back: the count returns to what it was after one warm-up cycle.
#[test]
fn disconnect_frees_threads() {
    let sim = Sim::simple("640x360", 30);
    let app = Appliance::start(&[]);
    let pid = app.pid();
    let cycle = |i: usize| {
        let id = format!("cyc{i}");
        app.connect_sim(&id, &sim, "/1");
        jpeg_code(&app.frame(&id, "").body);
        let mut ws = app.ws();
        ws.send(&json!({"action": "subscribe", "cameraId": id, "fps": 30}));
        collect_frames(&mut ws, Duration::from_millis(200));
        ws.close();
        let during = thread_count(pid);
        assert_eq!(app.disconnect(&id).status, 200);
        app.get(&format!("/api/cameras/{id}/status"))
            .assert_detail(404, "status after disconnect");
        during
    };

    cycle(0);
    let baseline = settled_threads(pid);
    let fds = fd_count(pid);
    eprintln!("threads after warm-up: {baseline}; fds {fds}");

    let mut peak = 0;
    for i in 1..=5 {
        peak = peak.max(cycle(i));
    }
    assert!(
        peak > baseline,
        "a connected camera should cost threads ({peak} vs {baseline})"
    );
    let ten = Duration::from_secs(10);
    let what = format!("threads back to baseline {baseline} + 2 (peak {peak})");
    await_threads_at_most(pid, baseline + 2, ten, &what);
    let what = format!("file descriptors back to baseline {fds} + 4");
    await_fds_at_most(pid, fds + 4, ten, &what);
    assert_eq!(app.get("/health").json()["activeCameras"], 0);
}

#[test]
fn nothing_listening_is_502_quickly() {
    let app = Appliance::start(&[]);
    let port = closed_port();
    let started = Instant::now();
    let r = app.connect(&json!({
        "cameraId": CAM,
        "ip": "127.0.0.1",
        "port": port,
        "username": "u",
        "password": "p",
    }));
    let took = started.elapsed();
    let detail = r.assert_detail(502, "connect to a closed port");
    r.assert_cors("502");
    eprintln!("closed port: 502 after {took:?}: {detail}");
    assert!(took < Duration::from_secs(5), "502 took {took:?}");
    assert!(camera_ids(&app).is_empty(), "the failed camera is listed");
    app.get(&format!("/api/cameras/{CAM}/status"))
        .assert_detail(404, "status after a failed connect");
    assert_eq!(app.get("/health").json()["activeCameras"], 0);
}

#[test]
fn unknown_path_is_502_quickly() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    let started = Instant::now();
    let r = app.connect(&connect_body(CAM, &sim, "/does-not-exist"));
    let took = started.elapsed();
    r.assert_detail(502, "connect to a missing path");
    assert!(took < Duration::from_secs(5), "502 took {took:?}");
    assert!(camera_ids(&app).is_empty(), "the failed camera is listed");
}

/// A failed replacement must not take the working camera's id down with it silently:
/// whatever the reply, the list and status agree with it.
#[test]
fn failed_replacement_is_consistent() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let r = app.connect(&json!({
        "cameraId": CAM,
        "ip": "127.0.0.1",
        "port": closed_port(),
    }));
    r.assert_detail(502, "replacement to a closed port");
    let listed = camera_ids(&app);
    let status = app.get(&format!("/api/cameras/{CAM}/status"));
    match status.status {
        404 => assert!(listed.is_empty(), "404 status but listed: {listed:?}"),
        200 => assert_eq!(listed, [CAM]),
        other => panic!("status {other}: {}", status.text()),
    }
}

#[test]
fn cameras_are_restored_after_a_restart() {
    let sim = Sim::simple("640x360", 15);
    let state = temp_dir("state").join("cameras.json");
    {
        let mut app = Appliance::start_with_state(&state, &[]);
        app.connect_sim(CAM, &sim, "/1");
        app.terminate_ok(Duration::from_secs(5));
    }
    assert!(state.exists(), "no state file at {}", state.display());
    let app = Appliance::start_with_state(&state, &[]);
    wait_for(
        Duration::from_secs(10),
        "the saved camera to stream again",
        || {
            let r = app.get(&format!("/api/cameras/{CAM}/status"));
            if r.status != 200 {
                return Err(format!("{} {}", r.status, r.text()));
            }
            let s: Value = r.json();
            if s["connected"] == true {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let (w, _, _) = jpeg_code(&app.frame(CAM, "").body);
    assert_eq!(w, 640);
    // A disconnect is remembered too.
    assert_eq!(app.disconnect(CAM).status, 200);
    let mut app = app;
    app.terminate_ok(Duration::from_secs(5));
    let app = Appliance::start_with_state(&state, &[]);
    assert!(
        camera_ids(&app).is_empty(),
        "a disconnected camera came back"
    );
    let _ = std::fs::remove_dir_all(state.parent().expect("state dir"));
}

#[test]
fn sigterm_exits_0_promptly_with_a_subscribed_viewer() {
    let sim = Sim::simple("640x360", 30);
    let mut app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 30}));
    collect_frames(&mut ws, Duration::from_millis(300));

    let took = app.terminate_ok(Duration::from_secs(5));
    eprintln!("exit after SIGTERM with a viewer: {took:?}");
    // The viewer was told: a Close frame (or at least the end of the connection).
    let end = wait_for(Duration::from_secs(2), "the socket to close", || {
        match ws.recv(Duration::from_millis(100)) {
            Some(WsIn::Closed(c)) => Ok(c),
            Some(_) | None => Err("still open".into()),
        }
    });
    eprintln!("viewer saw: {end:?}");
    assert_eq!(
        end.map(|(code, _)| code),
        Some(1001),
        "a clean close (1001 going away) on shutdown"
    );
}

#[test]
fn sigterm_exits_0_when_idle() {
    let mut app = Appliance::start(&[]);
    let took = app.terminate_ok(Duration::from_secs(5));
    eprintln!("idle exit after SIGTERM: {took:?}");
}

/// A camera that accepts the connection and then says nothing: connect gives up with
/// 502 or 504 in about the contract's 5 s, and leaves nothing behind.
#[test]
fn silent_camera_fails_within_the_connect_wait() {
    let (port, accepted) = silent_server();
    let app = Appliance::start(&[]);
    let started = Instant::now();
    let r = app.connect(&json!({"cameraId": CAM, "ip": "127.0.0.1", "port": port}));
    let took = started.elapsed();
    assert!(
        accepted.try_recv().is_ok(),
        "the appliance never reached the silent camera"
    );
    assert!(
        r.status == 502 || r.status == 504,
        "silent camera: {} {}",
        r.status,
        r.text()
    );
    let detail = r.assert_detail(r.status, "silent camera");
    eprintln!("silent camera: {} after {took:?}: {detail}", r.status);
    assert!(took < Duration::from_secs(7), "connect waited {took:?}");
    assert!(camera_ids(&app).is_empty(), "the failed camera is listed");
}

/// SIGTERM while a connect waits on a camera that never answers: still a prompt exit 0.
#[test]
fn sigterm_exits_0_while_a_connect_is_pending() {
    let (port, accepted) = silent_server();
    let mut app = Appliance::start(&[]);
    let addr = app.addr;
    let pending = std::thread::spawn(move || {
        let body = json!({"cameraId": "c", "ip": "127.0.0.1", "port": port});
        http_raw(
            addr,
            format!(
                "POST /api/cameras/connect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.to_string().len()
            )
            .as_bytes(),
        )
    });
    accepted
        .recv_timeout(Duration::from_secs(10))
        .expect("the appliance to reach the silent camera");
    let took = app.terminate_ok(Duration::from_secs(5));
    eprintln!("exit after SIGTERM with a connect pending: {took:?}");
    // The pending request ends one way or another (reply or closed connection).
    let _ = pending.join().expect("client thread");
}

/// Two connects of the same id at once: one camera at the end, streaming, and no
/// camera thread left over from the loser.
#[test]
fn concurrent_connects_of_one_id_leave_one_camera() {
    let a = Sim::simple("640x360", 15);
    let b = Sim::simple("1280x720", 15);
    let app = Appliance::start(&[]);
    let pid = app.pid();
    let addr = app.addr;
    let bodies = [connect_body(CAM, &a, "/1"), connect_body(CAM, &b, "/1")];
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            std::thread::spawn(move || {
                http(
                    addr,
                    "POST",
                    "/api/cameras/connect",
                    &[("Content-Type", "application/json")],
                    body.to_string().as_bytes(),
                )
            })
        })
        .collect();
    let replies: Vec<Resp> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert!(
        ok >= 1,
        "neither concurrent connect succeeded: {:?}",
        replies.iter().map(Resp::text).collect::<Vec<_>>()
    );
    assert_eq!(camera_ids(&app), [CAM]);
    let s = wait_for(Duration::from_secs(5), "the camera to stream", || {
        let s = app.status(CAM);
        if s["connected"] == true {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    let size = (s["width"].as_u64(), s["height"].as_u64());
    let (w, h, _) = jpeg_code(&app.frame(CAM, "").body);
    assert_eq!((Some(u64::from(w)), Some(u64::from(h))), size);
    let names = thread_names(pid);
    let cam_threads = names.iter().filter(|n| n.starts_with("cam-")).count();
    assert_eq!(cam_threads, 1, "camera threads: {names:?}");
}

/// Disconnecting an id while its connect still waits: the connect fails and the camera
/// does not come back.
#[test]
fn disconnect_during_a_pending_connect() {
    let (port, accepted) = silent_server();
    let app = Appliance::start(&[]);
    let pid = app.pid();
    let addr = app.addr;
    let pending = std::thread::spawn(move || {
        let body = json!({"cameraId": CAM, "ip": "127.0.0.1", "port": port});
        http(
            addr,
            "POST",
            "/api/cameras/connect",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    });
    accepted
        .recv_timeout(Duration::from_secs(10))
        .expect("the appliance to reach the silent camera");
    assert_eq!(app.disconnect(CAM).status, 200);
    let r = pending.join().expect("client thread");
    assert_ne!(
        r.status,
        200,
        "connect succeeded after disconnect: {}",
        r.text()
    );
    r.assert_detail(r.status, "connect cut short by disconnect");
    assert!(camera_ids(&app).is_empty(), "the camera came back");
    wait_until(Duration::from_secs(5), "no camera thread", || {
        !thread_names(pid).iter().any(|n| n.starts_with("cam-"))
    });
}

/// A password with URL-special characters survives the state file: the camera comes
/// back after a restart.
#[test]
fn restored_camera_with_special_password_streams() {
    const PASSWORD: &str = "p@ss:w/rd#%?&";
    let sim = Sim::with_password("640x360", 15, PASSWORD, &[]);
    let state = temp_dir("state").join("cameras.json");
    let body = json!({
        "cameraId": CAM,
        "ip": "127.0.0.1",
        "port": sim.rtsp_port,
        "username": "admin",
        "password": PASSWORD,
    });
    {
        let mut app = Appliance::start_with_state(&state, &[]);
        let r = app.connect(&body);
        assert_eq!(r.status, 200, "{}", r.text());
        app.terminate_ok(Duration::from_secs(5));
    }
    let app = Appliance::start_with_state(&state, &[]);
    wait_for(
        Duration::from_secs(10),
        "the restored camera to stream",
        || {
            let r = app.get(&format!("/api/cameras/{CAM}/status"));
            let s = r.json();
            if r.status == 200 && s["connected"] == true {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    jpeg_code(&app.frame(CAM, "").body);
    let _ = std::fs::remove_dir_all(state.parent().expect("state dir"));
}

/// An MJPEG client that is still open when its camera is disconnected, and closes
/// afterwards, must not leave its stream thread behind.
#[test]
fn mjpeg_viewer_of_a_disconnected_camera_is_freed() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    let pid = app.pid();
    let cycle = |i: usize| {
        let id = format!("mj{i}");
        app.connect_sim(&id, &sim, "/1");
        let mut stream = Mjpeg::open(app.addr, &format!("/api/cameras/{id}/mjpeg?fps=5"));
        jpeg_code(&stream.next_part().expect("a first part").body);
        assert_eq!(app.disconnect(&id).status, 200);
        drop(stream);
    };
    cycle(0);
    let baseline = settled_threads(pid);
    for i in 1..=3 {
        cycle(i);
    }
    let what = format!("threads back to baseline {baseline} + 2");
    await_threads_at_most(pid, baseline + 2, Duration::from_secs(10), &what);
}

/// A camera that drops is reconnected by itself once it is back (the first version never
/// did), and a subscribed viewer gets its frames again.
#[test]
fn dropped_camera_reconnects_when_it_returns() {
    let sim = Sim::simple("640x360", 15);
    let port = sim.rtsp_port.to_string();
    let app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 5}));
    collect_frames(&mut ws, Duration::ZERO);

    drop(sim);
    let s = wait_for(
        Duration::from_secs(15),
        "the camera to notice the drop",
        || {
            let s = app.status(CAM);
            if s["connected"] == false && s["state"] == "reconnecting" {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    assert!(s["lastError"].is_string(), "no lastError after a drop: {s}");
    assert_eq!(camera_ids(&app), [CAM], "a dropped camera stays listed");

    let _back = Sim::start(&[
        "--port", &port, "--path", "/1", "--size", "640x360", "--fps", "15",
    ]);
    let s = wait_for(
        Duration::from_secs(15),
        "the camera to stream again",
        || {
            let s = app.status(CAM);
            if s["connected"] == true {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    );
    assert!(
        s["reconnects"].as_u64().is_some_and(|n| n >= 1),
        "reconnects not counted: {s}"
    );
    let (_, _, code) = jpeg_code(&app.frame(CAM, "").body);
    assert!(
        code_age_ms(&code) < 2000,
        "an old picture after reconnecting"
    );
    // The viewer's stream resumed with pictures of the new source.
    wait_for(
        Duration::from_secs(5),
        "a fresh frame on the socket",
        || match ws.recv(Duration::from_millis(200)) {
            Some(WsIn::Closed(c)) => panic!("socket closed: {c:?}"),
            Some(m) => match as_frame(&m) {
                Some(f) => {
                    let (_, _, code) = jpeg_code(&f.jpeg);
                    let age = code_age_ms(&code);
                    if age < 2000 {
                        Ok(())
                    } else {
                        Err(format!("a picture {age} ms old"))
                    }
                }
                None => Err("a non-frame message".into()),
            },
            None => Err("nothing".into()),
        },
    );
}

/// SIGTERM with an MJPEG viewer and a WebSocket viewer that stopped reading (its socket
/// buffers full, the server's writes to it blocked): still exit 0 within 5 s.
#[test]
fn sigterm_exits_0_with_stalled_and_mjpeg_viewers() {
    let sim = Sim::simple("1280x720", 30);
    let mut app = Appliance::start(&[]);
    app.connect_sim(CAM, &sim, "/1");
    let mut stalled = app.ws();
    stalled.send(
        &json!({"action": "subscribe", "cameraId": CAM, "fps": 30, "binary": true, "quality": 100}),
    );
    collect_frames(&mut stalled, Duration::ZERO);
    let mut mjpeg = Mjpeg::open(app.addr, &format!("/api/cameras/{CAM}/mjpeg?fps=5"));
    jpeg_code(&mjpeg.next_part().expect("an MJPEG part").body);
    // Give the stalled viewer time to fill its buffers, watching the MJPEG stream.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        mjpeg.next_part().expect("the MJPEG stream ended early");
    }
    let took = app.terminate_ok(Duration::from_secs(5));
    eprintln!("exit after SIGTERM with stalled and MJPEG viewers: {took:?}");
    // The MJPEG stream ends with the process.
    while mjpeg.next_part().is_some() {}
    drop(stalled);
}
