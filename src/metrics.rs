//! `/metrics`: the appliance in Prometheus' text formats, encoded by the official
//! `prometheus-client` crate. Nothing is counted twice: each scrape reads what the owners
//! already count — every camera's status (frames received, dropped, JPEG encodes,
//! reconnects, state, viewers) and its feed's counters (pictures decoded, encode time,
//! bytes and capture-to-send latency of what viewers were sent) — plus the process's own
//! numbers from `/proc/self`, and encodes that one snapshot.
//!
//! Calls go one way: `api` calls [`render`], which reads `fleet` and `camera`; neither
//! knows this module.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, text, DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::camera::feed::Via;
use crate::camera::{CameraState, CameraStatus};
use crate::fleet::Fleet;
use crate::meter::Snapshot;

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format 0.0.4 (curl, `promtool check metrics`).
    Prometheus,
    /// OpenMetrics 1.0 text, for scrapers that ask for it (Prometheus itself does).
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header offers it, else the classic format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The metrics now, in `format`.
pub fn render(fleet: &Fleet, format: Format) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Sample::take(fleet)));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::Prometheus => prometheus_text::encode(&mut out, &registry)?,
        Format::OpenMetrics => text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

/// One camera's numbers at scrape time.
#[derive(Debug)]
struct CameraSample {
    status: CameraStatus,
    decoded: u64,
    encode_time: Snapshot,
    sent_bytes: Vec<(Via, u64)>,
    latency: Snapshot,
}

/// Everything one scrape reports, read before encoding starts.
#[derive(Debug)]
struct Sample {
    cameras: Vec<CameraSample>,
    process: Process,
}

impl Sample {
    fn take(fleet: &Fleet) -> Sample {
        let cameras = fleet
            .cameras()
            .iter()
            .map(|cam| CameraSample {
                status: cam.status(),
                decoded: cam.feed.slot.published(),
                encode_time: cam.feed.jpeg.encode_time(),
                sent_bytes: Via::ALL
                    .iter()
                    .map(|&v| (v, cam.feed.sent.bytes(v)))
                    .collect(),
                latency: cam.feed.sent.latency(),
            })
            .collect();
        Sample {
            cameras,
            process: Process::read(),
        }
    }

    /// One family with a sample per camera (label `camera`), `value` writing each.
    fn per_camera(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        kind: MetricType,
        value: impl Fn(&CameraSample, MetricEncoder) -> fmt::Result,
    ) -> fmt::Result {
        let mut family = enc.encode_descriptor(name, help, unit, kind)?;
        for c in &self.cameras {
            let labels = [("camera", c.status.id.as_str())];
            value(c, family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn camera_counter(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: impl Fn(&CameraSample) -> u64,
    ) -> fmt::Result {
        self.per_camera(enc, name, help, unit, MetricType::Counter, |c, m| {
            ConstCounter::new(value(c)).encode(m)
        })
    }

    fn camera_gauge(
        &self,
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&CameraSample) -> i64,
    ) -> fmt::Result {
        self.per_camera(enc, name, help, None, MetricType::Gauge, |c, m| {
            ConstGauge::new(value(c)).encode(m)
        })
    }

    fn cameras(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let secs = Unit::Seconds;
        let bytes = Unit::Bytes;
        self.camera_counter(
            enc,
            "ptz_edge_camera_frames_received",
            "Frames (access units) received from the camera since it was connected.",
            None,
            |c| c.status.frame_count,
        )?;
        self.camera_counter(
            enc,
            "ptz_edge_camera_frames_decoded",
            "Pictures decoded (published to viewers) for this camera id.",
            None,
            |c| c.decoded,
        )?;
        self.camera_counter(
            enc,
            "ptz_edge_camera_frames_dropped",
            "Frames not decoded because decoding fell behind (skipped to the next keyframe).",
            None,
            |c| c.status.dropped_frames,
        )?;
        self.camera_counter(
            enc,
            "ptz_edge_camera_jpeg_encodes",
            "JPEG encodes of this camera's pictures (one per picture, size and quality).",
            None,
            |c| c.status.jpeg_encodes,
        )?;
        self.per_camera(
            enc,
            "ptz_edge_camera_jpeg_encode_duration",
            "Time one JPEG encode took (the encode, not starting an encoder).",
            Some(&secs),
            MetricType::Histogram,
            |c, m| histogram(&c.encode_time, m),
        )?;
        self.camera_counter(
            enc,
            "ptz_edge_camera_change_events",
            "Change events of the camera's watched scene.",
            None,
            |c| c.status.watch.events,
        )?;
        self.camera_counter(
            enc,
            "ptz_edge_camera_change_scores",
            "Pictures scored for change watching (their cost: `watch` in the camera status).",
            None,
            |c| c.status.watch.scored,
        )?;
        self.camera_counter(
            enc,
            "ptz_edge_camera_reconnects",
            "Reconnects of the camera's stream after it failed or stalled.",
            None,
            |c| c.status.reconnects,
        )?;
        {
            let mut family = enc.encode_descriptor(
                "ptz_edge_camera_state",
                "The camera's state: 1 for the state it is in, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for c in &self.cameras {
                for s in CameraState::ALL {
                    let state = s.to_string();
                    let labels = [("camera", c.status.id.as_str()), ("state", state.as_str())];
                    ConstGauge::new(i64::from(c.status.state == s))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        self.camera_gauge(
            enc,
            "ptz_edge_camera_viewers",
            "WebSocket and MJPEG viewers of the camera now.",
            |c| c.status.viewers as i64,
        )?;
        self.camera_gauge(
            enc,
            "ptz_edge_camera_decoding",
            "1 while the camera's decoder runs (someone watches, or decode mode is always).",
            |c| i64::from(c.status.decoding),
        )?;
        self.camera_gauge(
            enc,
            "ptz_edge_camera_lagging",
            "1 while decoding is behind and skipping to the next keyframe.",
            |c| i64::from(c.status.lagging),
        )?;
        {
            let mut family = enc.encode_descriptor(
                "ptz_edge_camera_sent",
                "Bytes of pictures sent to viewers, by way out (rest, websocket, mjpeg).",
                Some(&bytes),
                MetricType::Counter,
            )?;
            for c in &self.cameras {
                for (via, n) in &c.sent_bytes {
                    let labels = [("camera", c.status.id.as_str()), ("via", via.as_str())];
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        self.per_camera(
            enc,
            "ptz_edge_camera_capture_to_send",
            "Age of each picture sent to a viewer: from its packet's arrival to its sending.",
            Some(&secs),
            MetricType::Histogram,
            |c, m| histogram(&c.latency, m),
        )
    }

    fn appliance(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        let mut m = enc.encode_descriptor(
            "ptz_edge_build_info",
            "The running build: always 1, its version as a label.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(m.encode_family(&version)?)?;
        ConstGauge::new(self.cameras.len() as i64).encode(enc.encode_descriptor(
            "ptz_edge_cameras",
            "Cameras connected (in any state).",
            None,
            MetricType::Gauge,
        )?)
    }
}

fn histogram(s: &Snapshot, mut m: MetricEncoder) -> fmt::Result {
    m.encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
}

impl Collector for Sample {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.appliance(&mut enc)?;
        self.cameras(&mut enc)?;
        self.process.encode(&mut enc)
    }
}

/// The process's own numbers (the names every Prometheus client library uses). A number
/// that cannot be read is left out, not reported as 0.
#[derive(Debug, Default)]
struct Process {
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    threads: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl Process {
    fn read() -> Process {
        let mut p = Process::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let field = |name: &str| {
                status.lines().find_map(|l| {
                    let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
            };
            p.resident_bytes = field("VmRSS").map(|kib| kib * 1024);
            p.virtual_bytes = field("VmSize").map(|kib| kib * 1024);
            p.threads = field("Threads");
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        p.cpu_seconds = cpu_seconds();
        p.max_fds = max_fds();
        p
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let secs = Unit::Seconds;
        let bytes = Unit::Bytes;
        let gauges: [(&str, &str, Option<&Unit>, Option<u64>); 5] = [
            (
                "process_resident_memory",
                "Resident memory size.",
                Some(&bytes),
                self.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size.",
                Some(&bytes),
                self.virtual_bytes,
            ),
            ("process_threads", "OS threads.", None, self.threads),
            (
                "process_open_fds",
                "Open file descriptors.",
                None,
                self.open_fds,
            ),
            (
                "process_max_fds",
                "The limit of open file descriptors (soft).",
                None,
                self.max_fds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(v) = value {
                ConstGauge::new(v).encode(enc.encode_descriptor(
                    name,
                    help,
                    unit,
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Some(cpu) = self.cpu_seconds {
            ConstCounter::new(cpu).encode(enc.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent.",
                Some(&secs),
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}

/// User plus system CPU time of the whole process (every thread).
fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DecodeMode;
    use crate::meter::{Histogram, LATENCY_BUCKETS};
    use std::time::Duration;

    fn status(id: &str) -> CameraStatus {
        CameraStatus {
            id: id.into(),
            state: CameraState::Streaming,
            frame_rate: 30.0,
            last_frame_time: None,
            frame_count: 1234,
            last_error: None,
            reconnects: 2,
            codec: None,
            width: None,
            height: None,
            decoder: None,
            decoding: true,
            decode_mode: DecodeMode::OnDemand,
            viewers: 3,
            jpeg_encodes: 17,
            dropped_frames: 5,
            lagging: false,
            watch: Default::default(),
        }
    }

    fn encode(sample: Sample, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(sample));
        let mut out = String::new();
        match format {
            Format::Prometheus => prometheus_text::encode(&mut out, &registry),
            Format::OpenMetrics => text::encode(&mut out, &registry),
        }
        .expect("encodes");
        out
    }

    fn sample(id: &str) -> Sample {
        let latency = Histogram::new(LATENCY_BUCKETS);
        latency.observe(Duration::from_millis(40));
        latency.observe(Duration::from_secs(9));
        Sample {
            cameras: vec![CameraSample {
                status: status(id),
                decoded: 900,
                encode_time: Histogram::new(crate::meter::ENCODE_BUCKETS).snapshot(),
                sent_bytes: vec![(Via::Rest, 0), (Via::WebSocket, 4096), (Via::Mjpeg, 0)],
                latency: latency.snapshot(),
            }],
            process: Process::read(),
        }
    }

    #[test]
    fn names_units_and_values() {
        let out = encode(sample("cam1"), Format::Prometheus);
        for line in [
            "# TYPE ptz_edge_camera_frames_received_total counter",
            "ptz_edge_camera_frames_received_total{camera=\"cam1\"} 1234",
            "ptz_edge_camera_frames_decoded_total{camera=\"cam1\"} 900",
            "ptz_edge_camera_frames_dropped_total{camera=\"cam1\"} 5",
            "ptz_edge_camera_jpeg_encodes_total{camera=\"cam1\"} 17",
            "ptz_edge_camera_reconnects_total{camera=\"cam1\"} 2",
            "ptz_edge_camera_state{camera=\"cam1\",state=\"streaming\"} 1",
            "ptz_edge_camera_state{camera=\"cam1\",state=\"reconnecting\"} 0",
            "ptz_edge_camera_viewers{camera=\"cam1\"} 3",
            "ptz_edge_camera_sent_bytes_total{camera=\"cam1\",via=\"websocket\"} 4096",
            "# TYPE ptz_edge_camera_capture_to_send_seconds histogram",
            "ptz_edge_camera_capture_to_send_seconds_bucket{camera=\"cam1\",le=\"0.05\"} 1",
            "ptz_edge_camera_capture_to_send_seconds_bucket{camera=\"cam1\",le=\"+Inf\"} 2",
            "ptz_edge_camera_capture_to_send_seconds_count{camera=\"cam1\"} 2",
            "# TYPE ptz_edge_camera_jpeg_encode_duration_seconds histogram",
            "ptz_edge_cameras 1",
            &format!(
                "ptz_edge_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_threads gauge",
            "# TYPE process_open_fds gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
        }
        assert!(!out.contains("# EOF"), "{out}");
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let out = encode(sample("cam1"), Format::OpenMetrics);
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(out.contains("# TYPE ptz_edge_camera_frames_received counter\n"));
        assert!(out.contains("# UNIT ptz_edge_camera_capture_to_send_seconds seconds\n"));
    }

    /// A camera id may hold quotes and non-ASCII; label values are escaped.
    #[test]
    fn label_values_are_escaped() {
        let out = encode(sample("Kamera \"Süd\""), Format::Prometheus);
        assert!(
            out.contains("ptz_edge_camera_viewers{camera=\"Kamera \\\"Süd\\\"\"} 3"),
            "{out}"
        );
    }

    #[test]
    fn process_numbers_come_from_proc() {
        let p = Process::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1024 * 1024), "{p:?}");
        assert!(p.threads.is_some_and(|t| t >= 1), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s > 0.0), "{p:?}");
    }

    #[test]
    fn accept_picks_the_format() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
    }
}
