//! The RTSP interop matrix (issue #11): gst-rtsp-server (camera-sim) serving the stream
//! shapes cameras send: Digest auth, TCP-only, H.264 High with B-frames, a 4 s GOP, an
//! audio track beside the video, H.265, 5 and 60 fps, 4K. For each: connect, first
//! picture (at the served size), a second session joining the running stream, a second
//! viewer's picture, and reconnect after the server restarts on the same port. The whole matrix runs before any assertion, and
//! the table is printed (`--nocapture`) and kept in docs/interop.md.
//!
//! Then VLC's RTSP server (`cvlc`, run as an unprivileged user) serving an MP4 with video
//! and audio: connect, first picture, a WebSocket and an MJPEG viewer, the file's loop,
//! reconnect after VLC restarts. Outside CI a missing `cvlc` skips that row with a
//! message; in CI (`CI=true`) it fails, since `deploy/deps.sh --test` installs it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

// ---------------------------------------------------------------------------------------
// VLC's RTSP server

const VLC_CAM: &str = "vlc";
/// What the media file holds (and so what VLC serves).
const VLC_SIZE: (u32, u32) = (320, 240);
/// The file's length: the test outlives a few loops of it.
const VLC_FILE_SECS: u64 = 4;

/// `cvlc`'s path, or `None` (with the reason printed) when the test should skip.
fn cvlc() -> Option<PathBuf> {
    optional_tool(
        "CVLC",
        "/usr/bin/cvlc",
        "`vlc-bin` and `vlc-plugin-base`",
        "the VLC interop row",
    )
}

/// A directory VLC (running as `nobody`) can read, removed on drop unless the test
/// failed (the file is kept for a look).
struct MediaDir(PathBuf);

impl Drop for MediaDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// An MP4 written at test time: H.264 (x264, 1 s GOP) at `VLC_SIZE` and 10 fps beside
/// AAC 44.1 kHz mono, `VLC_FILE_SECS` long, world-readable.
fn vlc_media(dir: &Path) -> PathBuf {
    let file = dir.join("clip.mp4");
    let frames = VLC_FILE_SECS * 10;
    let audio_buffers = VLC_FILE_SECS * 44_100 / 1024 + 1;
    let (w, h) = VLC_SIZE;
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball \
         ! video/x-raw,format=I420,width={w},height={h},framerate=10/1 \
         ! x264enc speed-preset=ultrafast key-int-max=10 bitrate=300 ! h264parse \
         ! mp4mux name=mux ! filesink location={file} \
         audiotestsrc num-buffers={audio_buffers} samplesperbuffer=1024 \
         ! audio/x-raw,rate=44100,channels=1 ! avenc_aac ! aacparse ! mux.",
        file = file.display()
    );
    if let Err(e) = media::write_media(&desc, Duration::from_secs(30)) {
        panic!("cannot make the test's MP4: {e}");
    }
    for (p, mode) in [(dir, 0o755), (file.as_path(), 0o644)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }
    file
}

/// The row: `Ok(notes)` or the first step that failed.
fn vlc_row(app: &Appliance, bin: &Path, file: &Path) -> Result<String, String> {
    let port = closed_port();
    let started = Instant::now();
    let mut vlc = Vlc::launch(bin, file, port, Launch::temp("interop-vlc"))?;
    let vlc_ready = started.elapsed();
    // The file's audio is served beside the video (VLC lists audio first).
    if !(vlc.sdp.contains("m=audio") && vlc.sdp.contains("m=video")) {
        return Err(format!("VLC's SDP lacks audio or video:\n{}", vlc.sdp));
    }
    let mut body = camera_body(VLC_CAM, port, VLC_PATH);

    // VLC 3's RTSP server has no RTP over TCP (SETUP with `interleaved` gets 461).
    let r = app.connect(&body);
    if r.status == 200 {
        return Err("transport tcp was accepted by VLC, which has no interleaved RTP".into());
    }
    let tcp_refused = r.status;

    // A path VLC does not serve: its 404 carries no CSeq, which rtspsrc reports as a
    // parse error; the connect must still fail cleanly.
    let mut wrong = body.clone();
    wrong["streamPath"] = json!("/nope");
    wrong["transport"] = json!("auto");
    let r = app.connect(&wrong);
    if r.status == 200 {
        return Err("a path VLC does not serve was accepted".into());
    }
    let wrong_path = format!("{} {}", r.status, r.text());

    // `auto`: TCP first, refused at SETUP, then UDP.
    body["transport"] = json!("auto");
    let t = Instant::now();
    let r = app.connect(&body);
    if r.status != 200 {
        return Err(format!("connect (auto): {} {}", r.status, r.text()));
    }
    let first = t.elapsed();
    let r = app.get(&format!("/api/cameras/{VLC_CAM}/frame"));
    if r.status != 200 {
        return Err(format!("first picture: {} {}", r.status, r.text()));
    }
    let (w, h, _) = decode_jpeg(&r.body);
    if (w, h) != VLC_SIZE {
        return Err(format!("first picture is {w}x{h}, expected {VLC_SIZE:?}"));
    }
    let after_connect = app.status(VLC_CAM);

    // A WebSocket viewer sees advancing pictures of the served size.
    let mut ws = app.ws();
    ws.send(&json!({"action": "subscribe", "cameraId": VLC_CAM, "fps": 10}));
    let frames = collect_frames(&mut ws, Duration::from_secs(2));
    if frames.len() < 5 {
        return Err(format!("WebSocket viewer: {} frames in 2 s", frames.len()));
    }
    if let Some(p) = frames.windows(2).find(|p| p[1].seq <= p[0].seq) {
        return Err(format!("WebSocket seq went {} -> {}", p[0].seq, p[1].seq));
    }
    let f = &frames[frames.len() - 1];
    let (w, h, _) = decode_jpeg(&f.jpeg);
    if (f.width, f.height, w, h) != (VLC_SIZE.0, VLC_SIZE.1, VLC_SIZE.0, VLC_SIZE.1) {
        return Err(format!(
            "WebSocket frame says {}x{}, its JPEG is {w}x{h}",
            f.width, f.height
        ));
    }
    ws.close();

    // An MJPEG viewer too.
    let mut mjpeg = Mjpeg::try_open(
        app.addr,
        &format!("/api/cameras/{VLC_CAM}/mjpeg?fps=5"),
        Duration::from_secs(10),
    )?;
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let part = mjpeg.try_next_part()?.ok_or("the MJPEG stream ended")?;
        decode_jpeg(&part.body);
        seqs.push(seq_of(part.header("x-frame-seq")));
    }
    if !seqs.windows(2).all(|p| p[1] > p[0]) {
        return Err(format!("MJPEG X-Frame-Seq not advancing: {seqs:?}"));
    }
    drop(mjpeg);

    // The file loops (every VLC_FILE_SECS) under the same session: no reconnect. VLC
    // does not tell when it loops (not at this log level), so this is a window to watch
    // over, not a wait for an event: two loops have passed by its end.
    let since_start = started.elapsed();
    let loops_by = Duration::from_secs(VLC_FILE_SECS * 2 + 1);
    if since_start < loops_by {
        std::thread::sleep(loops_by - since_start);
    }
    let now = app.status(VLC_CAM);
    if now["state"] != "streaming" || now["reconnects"] != after_connect["reconnects"] {
        return Err(format!(
            "across the file's loop: {now} (after connect: {after_connect})"
        ));
    }

    // VLC restarts on the same port: the camera comes back by itself.
    let last = try_wait_for(
        Duration::from_secs(5),
        "a picture before the restart",
        || {
            let r = app.get(&format!("/api/cameras/{VLC_CAM}/frame?width=160"));
            match r.status {
                200 => Ok(seq(&r)),
                st => Err(format!("{st} {}", r.text())),
            }
        },
    )?;
    let t = Instant::now();
    vlc.proc.stop(Duration::from_secs(5));
    drop(vlc);
    try_wait_for(Duration::from_secs(15), "the outage to show", || {
        let s = app.status(VLC_CAM);
        if s["state"] == "reconnecting" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })?;
    let outage = t.elapsed();
    // The newest picture of the old VLC: whatever came between `last` and the stop.
    let r = app.get(&format!("/api/cameras/{VLC_CAM}/frame?width=160"));
    let last = if r.status == 200 {
        seq(&r).max(last)
    } else {
        last
    };
    let t = Instant::now();
    let _vlc2 = Vlc::launch(bin, file, port, Launch::temp("interop-vlc"))?;
    let vlc_up = t.elapsed();
    try_wait_for(
        Duration::from_secs(30),
        "a picture after VLC restarted",
        || {
            let r = app.get(&format!("/api/cameras/{VLC_CAM}/frame?width=160"));
            match (r.status, seq(&r)) {
                (200, s) if s > last => Ok(()),
                (st, s) => Err(format!("{st} seq {s}: {}", app.status(VLC_CAM))),
            }
        },
    )?;
    let back = t.elapsed();
    let st = app.status(VLC_CAM);
    app.disconnect(VLC_CAM);
    eprintln!("VLC, unknown path: {wrong_path}");
    Ok(format!(
        "VLC ready {} ms after launch; transport tcp refused ({tcp_refused}); auto: first \
         picture after {} ms (TCP SETUP 461, then UDP), codec {}; {} WebSocket frames in 2 s, \
         MJPEG seqs {seqs:?}; same session across {}+ loops; outage seen {} ms after \
         stopping VLC; picture {} ms after the new VLC started ({} ms after it served)",
        vlc_ready.as_millis(),
        first.as_millis(),
        st["codec"].as_str().unwrap_or("?"),
        frames.len(),
        loops_by.as_secs() / VLC_FILE_SECS,
        outage.as_millis(),
        (back + vlc_up).as_millis(),
        back.as_millis(),
    ))
}

fn seq_of(h: Option<&str>) -> u64 {
    h.and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn vlc_rtsp_server() {
    let Some(bin) = cvlc() else {
        return;
    };
    let dir = MediaDir(temp_dir("vlc-media"));
    let file = vlc_media(&dir.0);
    let app = Appliance::start(&[]);
    let r = vlc_row(&app, &bin, &file);
    let (mark, note) = match &r {
        Ok(n) => ("pass", n.clone()),
        Err(e) => ("FAIL", e.clone()),
    };
    eprintln!("| VLC 3 RTSP server (cvlc), MP4 with H.264 + AAC | {mark} | {note} |");
    if let Err(e) = r {
        panic!("VLC row: {e}");
    }
}
