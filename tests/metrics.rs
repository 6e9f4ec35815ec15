//! `GET /metrics` of a running appliance with a camera connected and a WebSocket viewer
//! attached: the values say what happened, `promtool check metrics` (Debian's
//! `prometheus` package) accepts the text, and a real Prometheus server scrapes it over
//! loopback with the bearer token and answers queries about it.
//!
//! Outside CI a missing `promtool` / `prometheus` skips those checks with a message; in
//! CI (`CI=true`) it fails, since `deploy/deps.sh` installs them.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CAM: &str = "cam1";
const TOKEN: &str = "metrics-test-token";

/// A 640x360 15 fps simulator, an appliance with a token and `CAM` connected, and a
/// binary WebSocket viewer that has received a few frames.
struct Scene {
    _sim: Sim,
    app: Appliance,
    _viewer: Ws,
}

impl Scene {
    fn start() -> Scene {
        let sim = Sim::simple("640x360", 15);
        let app = Appliance::start(&[("PTZ_EDGE_TOKEN", TOKEN)]);
        let body = connect_body(CAM, &sim, "/1").to_string();
        let r = app.request(
            "POST",
            "/api/cameras/connect",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {TOKEN}")),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "connect: {}", r.text());
        let mut viewer = Ws::connect(app.addr, &format!("/ws?token={TOKEN}"));
        viewer.send(&json!({"action": "subscribe", "cameraId": CAM, "fps": 15, "binary": true}));
        let mut frames = 0;
        wait_until(Duration::from_secs(20), "3 WebSocket frames", || {
            if let Some(WsIn::Binary(_)) = viewer.recv(Duration::from_millis(200)) {
                frames += 1;
            }
            frames >= 3
        });
        Scene {
            _sim: sim,
            app,
            _viewer: viewer,
        }
    }

    fn scrape(&self) -> Resp {
        self.app.request(
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b"",
        )
    }
}

/// The value of the sample written exactly `series` (name and labels as encoded).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[track_caller]
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// A tool of Debian's `prometheus` package, or `None` (outside CI) when absent.
fn tool(name: &str) -> Option<&'static str> {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(if name == "promtool" {
            "promtool"
        } else {
            "prometheus"
        });
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is not installed; CI installs it with deploy/deps.sh --test (Debian package prometheus)");
    }
    eprintln!(
        "SKIPPED: {name} is not installed (apt-get install prometheus); this check runs in CI"
    );
    None
}

#[test]
fn metrics_of_a_streaming_camera_with_a_viewer() {
    let scene = Scene::start();

    // Behind the token like the rest of the API.
    let r = scene.app.get("/metrics");
    assert_eq!(r.status, 401, "{}", r.text());

    let r = scene.scrape();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let cam = format!("{{camera=\"{CAM}\"}}");
    assert!(
        value(
            &text,
            &format!("ptz_edge_camera_frames_received_total{cam}")
        ) > 0.0
    );
    assert!(value(&text, &format!("ptz_edge_camera_frames_decoded_total{cam}")) >= 3.0);
    assert!(value(&text, &format!("ptz_edge_camera_jpeg_encodes_total{cam}")) >= 3.0);
    assert!(
        value(
            &text,
            &format!("ptz_edge_camera_jpeg_encode_duration_seconds_count{cam}")
        ) >= 3.0
    );
    assert_eq!(value(&text, &format!("ptz_edge_camera_viewers{cam}")), 1.0);
    assert_eq!(
        value(
            &text,
            &format!("ptz_edge_camera_state{{camera=\"{CAM}\",state=\"streaming\"}}")
        ),
        1.0
    );
    assert!(
        value(
            &text,
            &format!("ptz_edge_camera_sent_bytes_total{{camera=\"{CAM}\",via=\"websocket\"}}")
        ) > 3.0 * 1000.0,
        "three JPEGs are more than 3 kB"
    );
    let sent = value(
        &text,
        &format!("ptz_edge_camera_capture_to_send_seconds_count{cam}"),
    );
    assert!(sent >= 3.0, "{sent}");
    let under_1s = value(
        &text,
        &format!("ptz_edge_camera_capture_to_send_seconds_bucket{{camera=\"{CAM}\",le=\"1\"}}"),
    );
    assert!(
        under_1s >= 1.0,
        "a live loopback viewer gets pictures within 1 s: {under_1s} of {sent}"
    );
    assert_eq!(value(&text, "ptz_edge_cameras"), 1.0);
    assert_eq!(
        value(
            &text,
            &format!(
                "ptz_edge_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // The process's numbers are the appliance's own (compare with /proc/PID).
    let threads = value(&text, "process_threads");
    assert!(threads >= 5.0, "{threads}");
    let rss = value(&text, "process_resident_memory_bytes");
    let probe = rss_kib(scene.app.pid()) as f64 * 1024.0;
    assert!(
        rss > probe / 2.0 && rss < probe * 2.0,
        "rss {rss} vs /proc {probe}"
    );
    assert!(value(&text, "process_open_fds") >= 3.0);
    assert!(value(&text, "process_cpu_seconds_total") > 0.0);

    // OpenMetrics for a scraper that asks for it.
    let r = scene.app.request(
        "GET",
        "/metrics",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            (
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            ),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    assert!(r.text().ends_with("# EOF\n"));

    // promtool's lint: format, names, units, HELP and TYPE.
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\nof:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server on 127.0.0.1 with its storage in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(bin: &str, dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: ptz-edge\n    authorization:\n      \
                 credentials: {TOKEN}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        // A free port, bound and released just before Prometheus binds it: another
        // process may take it in between, so a Prometheus that exits is started again.
        let log = dir.join("prometheus.log");
        let mut last = String::new();
        for _ in 0..3 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port");
            let out = std::fs::File::create(&log).expect("create the log");
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(out.try_clone().expect("log handle"))
                .stderr(out)
                .spawn()
                .expect("start prometheus");
            let mut prom = Prometheus {
                child,
                addr,
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = prom.child.try_wait() {
                    last = format!("prometheus exited ({status}): {}", prom.log_tail());
                    break;
                }
                match try_http(addr, "GET", "/-/ready", &[], b"") {
                    Ok(r) if r.status == 200 => return prom,
                    Ok(r) => last = format!("/-/ready: {} {}", r.status, r.text()),
                    Err(e) => last = e,
                }
                if Instant::now() >= deadline {
                    panic!(
                        "Prometheus not ready within 60 s: {last}\n{}",
                        prom.log_tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("Prometheus did not start: {last}");
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 20)
    }

    /// The result vector of an instant query.
    fn query(&mut self, q: &str) -> Result<Vec<Value>, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("prometheus exited ({status}): {}", self.log_tail()));
        }
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        let v = get_json(self.addr, &path, Duration::from_secs(5))?;
        if v["status"] != "success" {
            return Err(format!("query {q}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The one sample's value of a query's result, as a number.
fn only_value(result: &[Value]) -> Result<f64, String> {
    match result {
        [one] => one["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("not a sample: {one}")),
        other => Err(format!("{} series: {other:?}", other.len())),
    }
}

#[test]
fn prometheus_scrapes_the_appliance_over_loopback() {
    let Some(bin) = tool("prometheus") else {
        return;
    };
    let scene = Scene::start();
    let dir = temp_dir("prometheus");
    let mut prom = Prometheus::start(bin, &dir, scene.app.addr);

    // A scrape every second: `up` is 1 once one succeeded (with the token, in the
    // format Prometheus negotiates), and the camera's series are stored.
    wait_for(Duration::from_secs(60), "up{job=\"ptz-edge\"} == 1", || {
        let up = only_value(&prom.query("up{job=\"ptz-edge\"}")?)?;
        (up == 1.0).then_some(()).ok_or(format!("up = {up}"))
    });
    let frames = wait_for(
        Duration::from_secs(30),
        "the camera's received frames in Prometheus",
        || {
            only_value(&prom.query(&format!(
                "ptz_edge_camera_frames_received_total{{camera=\"{CAM}\"}}"
            ))?)
        },
    );
    assert!(frames > 0.0, "{frames}");
    let viewers = only_value(
        &prom
            .query(&format!("ptz_edge_camera_viewers{{camera=\"{CAM}\"}}"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(viewers, 1.0);
    // The histogram arrived as one: a quantile of the capture-to-send latency.
    let p50 = wait_for(
        Duration::from_secs(30),
        "a latency quantile from Prometheus",
        || {
            let q = format!(
                "histogram_quantile(0.5, ptz_edge_camera_capture_to_send_seconds_bucket{{camera=\"{CAM}\"}})"
            );
            let v = only_value(&prom.query(&q)?)?;
            v.is_finite().then_some(v).ok_or(format!("{v}"))
        },
    );
    assert!((0.0..5.0).contains(&p50), "median capture-to-send {p50} s");
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}
