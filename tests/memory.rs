//! Memory levers (docs/memory.md), against the real appliance and simulator:
//!
//! - an H.264 stream OpenH264 decodes exactly is decoded without loading libav at all
//!   (its dependency tree is about 27 MB of resident file pages more); the override
//!   `PTZ_EDGE_DECODER` still wins;
//! - a further 1080p camera nobody watches costs a few MB of anonymous memory: the
//!   megabytes its decoder held for the first picture at connect go back to the system
//!   (glibc's malloc set in `main`).

mod common;

use std::time::Duration;

use common::{wait_until, Appliance, Sim};

fn maps(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("/proc/PID/maps")
}

/// `RssAnon` of /proc/PID/status, kB.
fn rss_anon_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// Waits until every camera in `ids` has paused decoding (nobody watches).
fn wait_paused(app: &Appliance, ids: &[String]) {
    wait_until(
        Duration::from_secs(30),
        "every camera to pause decoding",
        || ids.iter().all(|id| app.status(id)["decoding"] == false),
    );
}

#[test]
fn a_stream_openh264_decodes_never_loads_libav() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    let jpeg = app.frame("cam", "");
    assert!(
        jpeg.body.len() > 1000,
        "a picture: {} bytes",
        jpeg.body.len()
    );
    let status = app.status("cam");
    assert_eq!(status["decoder"], "openh264dec", "{status}");
    let maps = maps(app.pid());
    assert!(
        !maps.contains("libgstlibav") && !maps.contains("libavcodec"),
        "libav is mapped although openh264dec decodes:\n{}",
        maps.lines()
            .filter(|l| l.contains("libav"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(maps.contains("libopenh264"), "openh264 is not mapped");
}

#[test]
fn the_decoder_override_still_wins() {
    let sim = Sim::simple("640x360", 15);
    let app = Appliance::start(&[("PTZ_EDGE_DECODER", "avdec_h264")]);
    app.connect_sim("cam", &sim, "/1");
    app.frame("cam", "");
    let status = app.status("cam");
    assert_eq!(status["decoder"], "avdec_h264", "{status}");
    assert!(maps(app.pid()).contains("libavcodec"));
}

#[test]
fn a_further_idle_1080p_camera_costs_under_5_mb() {
    const FURTHER: u64 = 3;
    // 5 fps keeps the simulator's four 1080p encoders light on a shared machine; the
    // decoder's buffers at connect are those of any 1080p stream.
    let sim = Sim::start(&[
        "--path",
        "/1",
        "--path",
        "/2",
        "--path",
        "/3",
        "--path",
        "/4",
        "--size",
        "1920x1080",
        "--fps",
        "5",
    ]);
    let app = Appliance::start(&[("PTZ_EDGE_STATE", "off")]);
    let ids: Vec<String> = (1..=FURTHER + 1).map(|i| format!("cam{i}")).collect();
    app.connect_sim(&ids[0], &sim, "/1");
    wait_paused(&app, &ids[..1]);
    let one = rss_anon_kb(app.pid());
    for (i, id) in ids.iter().enumerate().skip(1) {
        app.connect_sim(id, &sim, &format!("/{}", i + 1));
    }
    wait_paused(&app, &ids);
    let all = rss_anon_kb(app.pid());
    let each = all.saturating_sub(one) / FURTHER;
    eprintln!(
        "RssAnon: {one} kB with one idle camera, {all} kB with {}",
        FURTHER + 1
    );
    assert!(
        each < 5 * 1024,
        "each further idle camera costs {each} kB anonymous ({one} kB with one camera, \
         {all} kB with {})",
        FURTHER + 1
    );
}

/// Change watching while nobody views decodes each keyframe with a decoder of its own,
/// stopped after it: a watched idle camera holds no decoder between keyframes (a kept
/// 1080p decoder held about 24 MB per camera).
#[test]
fn a_further_idle_watched_1080p_camera_costs_under_8_mb() {
    const FURTHER: u64 = 2;
    let sim = Sim::start(&[
        "--path",
        "/1",
        "--path",
        "/2",
        "--path",
        "/3",
        "--size",
        "1920x1080",
        "--fps",
        "5",
    ]);
    let app = Appliance::start(&[("PTZ_EDGE_STATE", "off")]);
    let ids: Vec<String> = (1..=FURTHER + 1).map(|i| format!("cam{i}")).collect();
    let connect = |i: usize| {
        let mut body = common::connect_body(&ids[i], &sim, &format!("/{}", i + 1));
        body["watch"] = serde_json::json!(true);
        let r = app.connect(&body);
        assert_eq!(r.status, 200, "connect {}: {}", ids[i], r.text());
    };
    // Scored a few keyframes since decoding for connect paused.
    let scored_since_pause = |ids: &[String]| {
        wait_paused(&app, ids);
        let base: Vec<u64> = ids
            .iter()
            .map(|id| app.status(id)["watch"]["scored"].as_u64().unwrap_or(0))
            .collect();
        wait_until(Duration::from_secs(30), "3 keyframes scored each", || {
            ids.iter().zip(&base).all(|(id, b)| {
                let w = &app.status(id)["watch"];
                w["mode"] == "keyframes" && w["scored"].as_u64().unwrap_or(0) >= b + 3
            })
        });
    };
    connect(0);
    scored_since_pause(&ids[..1]);
    let one = rss_anon_kb(app.pid());
    for i in 1..ids.len() {
        connect(i);
    }
    scored_since_pause(&ids);
    let all = rss_anon_kb(app.pid());
    let each = all.saturating_sub(one) / FURTHER;
    let w = app.status(&ids[0])["watch"].clone();
    eprintln!(
        "RssAnon: {one} kB with one watched idle camera, {all} kB with {}; watch {w}",
        FURTHER + 1
    );
    assert!(
        each < 8 * 1024,
        "each further watched idle camera costs {each} kB anonymous ({one} kB with one, \
         {all} kB with {})",
        FURTHER + 1
    );
    assert!(w["microsPerDecode"].as_f64().unwrap_or(0.0) > 0.0, "{w}");
}
