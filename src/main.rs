//! `ptz-edge`: reads the configuration, starts the cameras and the API, waits for
//! SIGTERM / SIGINT, and shuts down joining every thread. No logic lives here.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ptz_edge::api::{Ctx, Server};
use ptz_edge::camera::supervisor::CameraOptions;
use ptz_edge::camera::Registry;
use ptz_edge::config::Config;
use ptz_edge::ptz::Controllers;
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

    let registry = Arc::new(Registry::new(
        CameraOptions {
            decode: config.decode,
            decoder: config.decoder.clone(),
            decoder_threads: config.decoder_threads,
        },
        config.limits.max_cameras,
    ));
    let store = config.state_file.clone().map(Store::new);
    let ptz = Controllers::new();
    if let Some(store) = &store {
        restore(&registry, &ptz, store);
    }
    let ctx = Ctx::new(Arc::clone(&registry), config, ptz, store);
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
    let sim = if demo {
        Some(demo::start(&ctx, addr)?)
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
    ctx.ptz.shutdown();
    registry.shutdown();
    #[cfg(feature = "sim")]
    if let Some((sim, ptz_sim)) = sim {
        sim.stop();
        drop(ptz_sim);
    }
    log::info!("stopped");
    Ok(())
}

fn restore(registry: &Registry, ptz: &Controllers, store: &Store) {
    store.remove_stale_temp_files();
    match store.load() {
        Ok(saved) => {
            for s in saved {
                let id = s.camera.id.clone();
                if let Some(cfg) = s.ptz {
                    let c = &s.camera;
                    ptz.attach(&id, &c.host, cfg, &c.username, &c.password);
                }
                match registry.restore(s.camera) {
                    Ok(_) => log::info!("{id}: restored from {}", store.path().display()),
                    Err(e) => log::warn!("{id}: cannot restore: {e}"),
                }
            }
        }
        Err(e) => log::error!(
            "cannot read {} ({e}); starting with no cameras",
            store.path().display()
        ),
    }
}

#[cfg(feature = "sim")]
mod demo {
    use std::net::SocketAddr;
    use std::time::Duration;

    use ptz_edge::api::Ctx;
    use ptz_edge::camera::{CameraSpec, Transport};
    use ptz_edge::ptz::{Protocol, PtzConfig};
    use ptz_edge::secret::Secret;
    use ptz_edge::sim::ptz::PtzSim;
    use ptz_edge::sim::{SimConfig, Simulator};

    /// Starts the simulator (picture and PTZ head) on loopback and connects it as camera
    /// `demo`, with VISCA over TCP for PTZ.
    pub fn start(ctx: &Ctx, addr: SocketAddr) -> Result<(Simulator, PtzSim), String> {
        let ptz_sim = PtzSim::try_start([127, 0, 0, 1].into()).map_err(|e| e.to_string())?;
        let sim = Simulator::start(SimConfig {
            ptz_view: Some(ptz_sim.handle()),
            ..SimConfig::default()
        })
        .map_err(|e| e.to_string())?;
        let spec = CameraSpec {
            id: "demo".into(),
            host: "127.0.0.1".into(),
            port: sim.rtsp_port(),
            path: "/1".into(),
            username: String::new(),
            password: Secret::default(),
            transport: Transport::Tcp,
        };
        ctx.registry
            .connect(spec.clone(), Duration::from_secs(10))
            .map_err(|e| format!("demo camera: {e}"))?;
        let ptz = PtzConfig::new(Protocol::ViscaTcp, Some(ptz_sim.visca_tcp_port()))?;
        ctx.ptz
            .attach(&spec.id, &spec.host, ptz, &spec.username, &spec.password);
        let port = addr.port();
        log::info!("demo camera connected: try");
        log::info!("  curl http://127.0.0.1:{port}/api/cameras/demo/status");
        log::info!("  curl -o frame.jpg http://127.0.0.1:{port}/api/cameras/demo/frame");
        log::info!("  open http://127.0.0.1:{port}/ in a browser (arrows drive the PTZ)");
        Ok((sim, ptz_sim))
    }
}
