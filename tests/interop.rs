//! The RTSP interop matrix (issue #11): gst-rtsp-server (camera-sim) serving the stream
//! shapes cameras send: Digest auth, TCP-only, H.264 High with B-frames, a 4 s GOP, an
//! audio track beside the video, H.265, 5 and 60 fps, 4K. For each: connect, first
//! picture (at the served size), a second session joining the running stream, a second
//! viewer's picture, and reconnect after the server restarts on the same port. The whole matrix runs before any assertion, and
//! the table is printed (`--nocapture`) and kept in docs/interop.md.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const PASSWORD: &str = "Matrix-7731";

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    size: (u32, u32),
    /// Credentials for the connect body.
    auth: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "H.264 baseline, 10 fps (reference)",
        args: &["--size", "320x240", "--fps", "10"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "RTSP Digest auth",
        args: &[
            "--size",
            "320x240",
            "--fps",
            "10",
            "--user",
            "admin",
            "--password",
            PASSWORD,
            "--digest",
        ],
        size: (320, 240),
        auth: true,
    },
    Case {
        name: "TCP only (UDP refused), transport auto",
        args: &["--size", "320x240", "--fps", "10", "--tcp-only"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "H.264 High, 2 B-frames",
        args: &["--size", "320x240", "--fps", "10", "--bframes", "2"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "4 s GOP",
        args: &["--size", "320x240", "--fps", "10", "--gop", "4"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "Opus audio beside the video",
        args: &["--size", "320x240", "--fps", "10", "--audio"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "H.265",
        args: &["--size", "320x240", "--fps", "10", "--codec", "h265"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "5 fps",
        args: &["--size", "320x240", "--fps", "5"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "60 fps",
        args: &["--size", "320x240", "--fps", "60"],
        size: (320, 240),
        auth: false,
    },
    Case {
        name: "4K (3840x2160) at 5 fps",
        args: &["--size", "3840x2160", "--fps", "5"],
        size: (3840, 2160),
        auth: false,
    },
];

fn seq(r: &Resp) -> u64 {
    r.header("x-frame-seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One case: `Ok(notes)` or the first step that failed.
fn run(app: &Appliance, i: usize, case: &Case) -> Result<String, String> {
    let id = format!("interop-{i}");
    let mut args = vec!["--path", "/1"];
    args.extend_from_slice(case.args);
    let mut sim = Sim::launch(sim_bin(), &args, Launch::temp("interop-sim"))?;
    let mut body = camera_body(&id, sim.rtsp_port, "/1");
    // The server really enforces the case: without credentials, or over UDP only, no.
    if case.auth {
        let r = app.connect(&body);
        if r.status != 502 {
            return Err(format!(
                "no credentials: expected 502, got {} {}",
                r.status,
                r.text()
            ));
        }
    }
    if case.args.contains(&"--tcp-only") {
        body["transport"] = json!("udp");
        let r = app.connect(&body);
        if r.status == 200 {
            return Err("UDP transport was accepted by a TCP-only server".into());
        }
    }
    body["transport"] = json!("auto");
    if case.auth {
        body["username"] = json!("admin");
        body["password"] = json!(PASSWORD);
    }
    let t = Instant::now();
    let r = app.connect(&body);
    if r.status != 200 {
        return Err(format!("connect: {} {}", r.status, r.text()));
    }
    let first = t.elapsed();
    let r = app.get(&format!("/api/cameras/{id}/frame"));
    if r.status != 200 {
        return Err(format!("first picture: {} {}", r.status, r.text()));
    }
    let st = app.status(&id);
    let size = (
        st["width"].as_u64().unwrap_or(0),
        st["height"].as_u64().unwrap_or(0),
    );
    if size != (u64::from(case.size.0), u64::from(case.size.1)) {
        return Err(format!("size {size:?}, expected {:?}: {st}", case.size));
    }
    // A second camera on the same path joins the running (shared) stream mid-GOP: its
    // first picture waits for the next keyframe. Not with audio: gst-rtsp-server shares
    // one media per path, and after our video-only SETUP (the appliance never sets up
    // audio) it answers a second session 503, a property of the simulator's shared
    // factory (two clients that both set up audio and video are served); see
    // docs/interop.md.
    let join = if case.args.contains(&"--audio") {
        "(not run)".to_owned()
    } else {
        let mut joined = body.clone();
        joined["cameraId"] = json!(format!("{id}-join"));
        let t = Instant::now();
        let j = app.connect(&joined);
        // With a 4 s GOP the join takes up to 4 s plus set-up, against connect's 5 s
        // wait: on a loaded host that can run out (504). Counted, not failed.
        if j.status == 504 && case.args.contains(&"--gop") {
            format!(
                "(ran past connect's 5 s wait: 504 after {} ms)",
                t.elapsed().as_millis()
            )
        } else if j.status != 200 {
            return Err(format!(
                "joining the running stream: {} {}",
                j.status,
                j.text()
            ));
        } else {
            app.disconnect(&format!("{id}-join"));
            format!("{} ms", t.elapsed().as_millis())
        }
    };
    // A second viewer (a sized picture: another encoder) sees a newer picture.
    let s1 = seq(&r);
    let s2 = try_wait_for(Duration::from_secs(10), "a newer picture", || {
        let r = app.get(&format!("/api/cameras/{id}/frame?width=160"));
        match (r.status, seq(&r)) {
            (200, s) if s > s1 => Ok(s),
            (st, s) => Err(format!("{st} seq {s}")),
        }
    })?;
    // The server restarts on the same port: the camera comes back by itself.
    let port = sim.rtsp_port.to_string();
    sim.proc.stop(Duration::from_secs(5));
    try_wait_for(Duration::from_secs(15), "the outage to show", || {
        let s = app.status(&id);
        if s["state"] == "reconnecting" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })?;
    let mut again = args.clone();
    again.extend(["--port", port.as_str()]);
    let _sim2 = Sim::launch(sim_bin(), &again, Launch::temp("interop-sim"))?;
    try_wait_for(
        Duration::from_secs(30),
        "a picture after the restart",
        || {
            let r = app.get(&format!("/api/cameras/{id}/frame?width=160"));
            match (r.status, seq(&r)) {
                (200, s) if s > s2 => Ok(()),
                (st, s) => Err(format!("{st} seq {s}: {}", app.status(&id))),
            }
        },
    )?;
    let codec = app.status(&id)["codec"].as_str().unwrap_or("?").to_owned();
    app.disconnect(&id);
    Ok(format!(
        "first picture after {} ms, a second session's after {}, codec {codec}",
        first.as_millis(),
        join
    ))
}

#[test]
fn rtsp_interop_matrix() {
    let app = Appliance::start(&[]);
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let r = run(&app, i, case);
        let (mark, note) = match &r {
            Ok(n) => ("pass", n.clone()),
            Err(e) => ("FAIL", e.clone()),
        };
        if r.is_err() {
            failed.push(case.name);
        }
        rows.push(format!("| {} | {mark} | {note} |", case.name));
    }
    eprintln!(
        "| case | connect, first picture, 2nd viewer, restart | notes |\n|---|---|---|\n{}",
        rows.join("\n")
    );
    assert!(failed.is_empty(), "failed: {failed:?}\n{}", rows.join("\n"));
}
