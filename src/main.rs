//! `ptz-edge`: reads the configuration, starts the cameras and the API, waits for
//! SIGTERM / SIGINT, and shuts down joining every thread. No logic lives here.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ptz_edge::api::{Ctx, Server};
use ptz_edge::camera::CameraOptions;
use ptz_edge::clock::Clock;
use ptz_edge::config::Config;
use ptz_edge::fleet::Fleet;
use ptz_edge::state::Store;

const USAGE: &str = "\
ptz-edge: PTZ camera RTSP streams to JPEG over REST and WebSocket

Usage: ptz-edge [--demo]

  --demo    also start the bundled camera simulator and connect it as camera \"demo\"

Settings come from the environment: PORT (3000), BIND (0.0.0.0), RUST_LOG (info),
PTZ_EDGE_STATE (state file, or 'off'), PTZ_EDGE_TOKEN (API token), PTZ_EDGE_DECODE
(on-demand | always), PTZ_EDGE_DECODER (force a decoder element). See README.md.
";

fn main() -> ExitCode {
    tune_malloc();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc, set for many threads passing large short-lived buffers (decoder
/// pictures, reference frames, JPEGs): measured in docs/memory.md.
///
/// - Blocks from 256 KiB on are mapped on their own and unmapped when freed. By default
///   the threshold rises to the largest block freed (up to 32 MiB), so a decoder's
///   megabytes stay in the arena of the thread that freed them after it stops: each
///   further idle camera kept 6–8 MB (avdec_h264) or 24 MB (openh264dec) that way, 3 MB
///   now.
/// - Two arenas instead of 8 per core: every arena keeps its own free memory.
///
/// The environment wins (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `GLIBC_TUNABLES`);
/// this runs before any thread is started.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        let tunables = set("GLIBC_TUNABLES");
        // SAFETY: mallopt only changes allocator settings; called before any thread.
        unsafe {
            if !tunables && !set("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if !tunables && !set("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            }
        }
    }
}

fn run() -> Result<(), String> {
    let mut demo = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--demo" => demo = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "-V" | "--version" => {
                println!("ptz-edge {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    if demo {
        // The demo camera lives on a port of this run only: never save or restore it.
        config.state_file = None;
    }
    gstreamer::init().map_err(|e| format!("GStreamer: {e}"))?;

    // The first signal shuts down cleanly; a second one exits at once.
    let term = Arc::new(AtomicBool::new(false));
    for sig in signal_hook::consts::TERM_SIGNALS {
        signal_hook::flag::register_conditional_shutdown(*sig, 130, Arc::clone(&term))
            .map_err(|e| e.to_string())?;
        signal_hook::flag::register(*sig, Arc::clone(&term)).map_err(|e| e.to_string())?;
    }
    let mut signals = signal_hook::iterator::Signals::new(signal_hook::consts::TERM_SIGNALS)
        .map_err(|e| e.to_string())?;

    let fleet = Arc::new(Fleet::new(
        CameraOptions {
            decode: config.decode,
            decoder: config.decoder.clone(),
            decoder_threads: config.decoder_threads,
        },
        config.limits.max_cameras,
        config.state_file.clone().map(Store::new),
        Clock::system(),
    ));
    fleet.restore();
    let ctx = Ctx::new(Arc::clone(&fleet), config);
    let server = Server::start(Arc::clone(&ctx)).map_err(|e| {
        format!(
            "cannot listen on {}:{}: {e}",
            ctx.config.bind, ctx.config.port
        )
    })?;
    let addr = server.local_addr();
    log::info!(
        "ptz-edge {} listening on http://{addr} (decode {})",
        env!("CARGO_PKG_VERSION"),
        ctx.config.decode
    );
    let announcer = match ptz_edge::discovery::Announcer::start(
        ctx.config.mdns,
        ctx.config.bind,
        addr.port(),
    ) {
        Ok(a) => a,
        Err(e) => {
            log::warn!("{e}; the app will need the address typed in");
            None
        }
    };
    // One machine-readable line for scripts and tests that start us on port 0.
    println!("{{\"listening\":\"{addr}\"}}");
    let _ = std::io::stdout().flush();

    #[cfg(feature = "sim")]
    let demo_camera = if demo {
        Some(ptz_edge::sim::demo::start(&fleet, addr)?)
    } else {
        None
    };
    #[cfg(not(feature = "sim"))]
    if demo {
        return Err("--demo needs a build with the `sim` feature".into());
    }

    let sig = signals.forever().next();
    log::info!("signal {sig:?}: shutting down");
    if let Some(a) = announcer {
        a.stop();
    }
    server.stop();
    // Cameras and PTZ controls stop (a moving head gets a last stop) and their threads
    // are joined; then the demo's simulator, which they were connected to.
    fleet.shutdown();
    #[cfg(feature = "sim")]
    drop(demo_camera);
    log::info!("stopped");
    Ok(())
}
