//! The test kit, shared by the integration tests (`mod common;`) and the benchmark
//! (`examples/bench.rs` includes the same files with `#[path]`):
//!
//! - [`procs`]: `camera-sim` and `ptz-edge` as child processes on 127.0.0.1, ports chosen
//!   at run time, logs kept for failures, SIGTERM/SIGKILL on drop; VLC's RTSP server
//!   (`cvlc`, as `nobody` when run as root);
//! - [`http`]: one tiny HTTP/1.1 client (raw bytes and convenience forms) and an MJPEG
//!   reader;
//! - [`ws`]: the WebSocket client and frames in either mode;
//! - [`pictures`]: JPEG decoding and the simulator's frame code (latency, duplicates);
//! - [`probes`]: threads, fds, RSS, CPU of a process, from `/proc`;
//! - [`net`]: TCP fixtures (closed port, silent server, idle connections, fd limit) and
//!   one RTSP DESCRIBE;
//! - [`wait`]: bounded polling with clear failure messages;
//! - [`media`]: GStreamer test sources for the tests that feed pipelines directly, and
//!   media files written at test time.
//!
//! This file adds what only the tests have: the binaries Cargo built for them, and
//! constructors that panic instead of returning an `Err`.

// Each test file uses a different part of the kit.
#![allow(dead_code, unused_imports)]

pub mod http;
pub mod media;
pub mod net;
pub mod pictures;
pub mod probes;
pub mod procs;
pub mod wait;
pub mod ws;

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use self::http::*;
pub use self::net::*;
pub use self::pictures::*;
pub use self::probes::*;
pub use self::procs::*;
pub use self::wait::*;
pub use self::ws::*;

/// The simulator binary Cargo built for the tests.
pub fn sim_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_camera-sim"))
}

/// The appliance binary Cargo built for the tests.
pub fn appliance_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ptz-edge"))
}

impl Sim {
    /// `camera-sim --bind 127.0.0.1 --port 0 ARGS...`; returns once it listens.
    #[track_caller]
    pub fn start(args: &[&str]) -> Sim {
        match Sim::launch(sim_bin(), args, Launch::temp("sim")) {
            Ok(sim) => sim,
            Err(e) => panic!("{e}"),
        }
    }

    /// A `WxH` simulator at `fps` serving `/1`.
    #[track_caller]
    pub fn simple(size: &str, fps: u32) -> Sim {
        Sim::start(&["--path", "/1", "--size", size, "--fps", &fps.to_string()])
    }

    /// A `WxH` simulator at `fps` serving `/1` with a PTZ head (`--ptz`) whose presets
    /// take `travel_ms` to reach (`--preset-travel`; the head starts 0.3 s after the call).
    #[track_caller]
    pub fn with_ptz_travel(size: &str, fps: u32, travel_ms: u32) -> Sim {
        let (fps, travel) = (fps.to_string(), travel_ms.to_string());
        Sim::start(&[
            "--path",
            "/1",
            "--size",
            size,
            "--fps",
            &fps,
            "--ptz",
            "--preset-travel",
            &travel,
        ])
    }

    /// Like [`Sim::simple`], asking for user `admin` with `password`; `extra` arguments
    /// (e.g. `--ptz`) come before the credentials.
    #[track_caller]
    pub fn with_password(size: &str, fps: u32, password: &str, extra: &[&str]) -> Sim {
        let fps = fps.to_string();
        let mut args = vec!["--path", "/1", "--size", size, "--fps", &fps];
        args.extend_from_slice(extra);
        args.extend(["--user", "admin", "--password", password]);
        Sim::start(&args)
    }
}

impl Appliance {
    /// `ptz-edge` on 127.0.0.1, port 0, its own state file, `RUST_LOG=info`, no mDNS
    /// announcements, plus `env` (which may override any of those, e.g.
    /// `PTZ_EDGE_STATE`).
    #[track_caller]
    pub fn start(env: &[(&str, &str)]) -> Appliance {
        let launch = Launch::temp("app");
        let state_file = launch.dir.join("cameras.json");
        Appliance::start_in(&state_file, env, launch)
    }

    /// Like [`Appliance::start`] but with a given state file (for restarts that read it
    /// again); the caller owns that file and its directory.
    #[track_caller]
    pub fn start_with_state(state_file: &Path, env: &[(&str, &str)]) -> Appliance {
        Appliance::start_in(state_file, env, Launch::temp("app"))
    }

    #[track_caller]
    fn start_in(state_file: &Path, env: &[(&str, &str)], launch: Launch) -> Appliance {
        // No multicast announcements from the many appliances tests start; logs at info
        // whatever the caller's RUST_LOG (tests read them).
        let mut all = vec![("RUST_LOG", "info"), ("PTZ_EDGE_MDNS", "off")];
        all.extend_from_slice(env);
        match Appliance::launch(appliance_bin(), state_file, &all, launch) {
            Ok(app) => app,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The path of an external program some tests need (`env` overrides `default`), or
/// `None` after saying so on stderr when it is missing: those tests skip on a developer
/// machine and fail in CI (`CI=true`), where `deploy/deps.sh --test` installs it.
/// `install` names the Debian packages, `tests` what cannot run without it.
pub fn optional_tool(env: &str, default: &str, install: &str, tests: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "{} not found (install Debian's {install}: `deploy/deps.sh --test`; or set {env})",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}: {tests} cannot be skipped in CI");
    }
    // Straight to stderr: the test harness would capture `eprintln!` of a passing test.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    None
}
