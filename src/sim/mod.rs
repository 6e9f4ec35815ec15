//! The bundled camera simulator (feature `sim`): an RTSP server on gstreamer-rtsp-server
//! that streams a moving H.264 test picture, stamped with a machine-readable frame code
//! ([`barcode`]), on one or more paths, optionally behind RTSP basic auth.
//!
//! The server runs a GLib main loop on its own `sim-rtsp` thread with its own
//! `MainContext`, so it never touches the process's default context (the appliance may
//! run GStreamer in the same process, e.g. in `--demo` mode and in tests).
//!
//! ```no_run
//! use ptz_edge::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default())?;
//! println!("{}", sim.url("/1")); // rtsp://127.0.0.1:PORT/1
//! sim.stop();
//! # Ok::<(), ptz_edge::sim::SimError>(())
//! ```

pub mod barcode;
pub mod demo;
mod media;
pub mod onvif;
pub mod ptz;
pub mod scene;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod onvif_tests;
#[cfg(test)]
mod ptz_tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use media::StreamFormat;
pub use scene::Scene;

/// Media-factory role given to authenticated clients.
const AUTH_ROLE: &str = "user";

/// Limits on the picture, so a typo cannot ask x264 for something absurd.
const MIN_WIDTH: u32 = 64;
const MAX_SIDE: u32 = 7680;
const MAX_FPS: u32 = 120;

/// What the simulator serves and where.
#[derive(Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Address to listen on; `127.0.0.1` by default so tests never expose a port.
    pub bind: IpAddr,
    /// RTSP port; 0 picks a free one (read it back with [`Simulator::rtsp_port`]).
    pub port: u16,
    /// Mount paths, each starting with `/` (e.g. `/1`, `/stream2`); each is one camera
    /// stream with its own encoder.
    pub paths: Vec<String>,
    /// Picture width in pixels (even, 64..=7680). The frame code needs at least 320 to
    /// survive lossy coding reliably.
    pub width: u32,
    /// Picture height in pixels (even, at least [`barcode::code_height`] of the width).
    pub height: u32,
    /// Frames per second (1..=120); also the keyframe interval in frames.
    pub fps: u32,
    /// RTSP basic auth `(user, password)`; when set, every path requires it.
    pub auth: Option<(String, String)>,
    /// The video codec every path sends.
    pub codec: SimCodec,
    /// Seconds between keyframes (1..=10).
    pub gop_secs: u32,
    /// H.264 B-frames (0..=4); more than 0 sends the High profile.
    pub bframes: u32,
    /// An Opus audio track beside the video.
    pub audio: bool,
    /// RTP over the RTSP TCP connection only (UDP transport refused).
    pub tcp_only: bool,
    /// RTSP Digest instead of Basic for [`SimConfig::auth`].
    pub digest: bool,
    /// A simulated PTZ head whose position the picture shows: the scene moves against
    /// pan and tilt and grows with zoom, and the position is drawn as a code below the
    /// frame code (see `barcode::read_ptz`).
    pub ptz_view: Option<crate::sim::ptz::PtzSimHandle>,
    /// The colour bars scroll (a busy scene, e.g. for load figures); by default they
    /// stand still, so the picture changes only where the scene does.
    pub scroll: bool,
    /// The scene: an object that appears on demand ([`Scene::set_object`]).
    pub scene: Scene,
}

/// What the simulator encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimCodec {
    #[default]
    H264,
    H265,
}

impl std::str::FromStr for SimCodec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "avc" => Ok(SimCodec::H264),
            "h265" | "hevc" => Ok(SimCodec::H265),
            other => Err(format!("codec {other:?} is not h264 or h265")),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            paths: vec!["/1".to_owned()],
            width: 1280,
            height: 720,
            fps: 30,
            auth: None,
            codec: SimCodec::H264,
            gop_secs: 1,
            bframes: 0,
            audio: false,
            tcp_only: false,
            digest: false,
            ptz_view: None,
            scroll: false,
            scene: Scene::default(),
        }
    }
}

/// Redacts the password.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("paths", &self.paths)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

impl SimConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |msg: String| Err(SimError::InvalidConfig(msg));
        if self.paths.is_empty() {
            return invalid("paths: at least one path is needed".into());
        }
        for (i, path) in self.paths.iter().enumerate() {
            let well_formed = path.len() > 1
                && path.starts_with('/')
                && !path.ends_with('/')
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c));
            if !well_formed {
                return invalid(format!(
                    "paths: {path:?} must start with '/' and hold only letters, digits and / _ - ."
                ));
            }
            if self.paths[..i].contains(path) {
                return invalid(format!("paths: {path:?} is listed twice"));
            }
        }
        if !(MIN_WIDTH..=MAX_SIDE).contains(&self.width) || self.width % 2 != 0 {
            return invalid(format!(
                "width: {} must be even and in {MIN_WIDTH}..={MAX_SIDE}",
                self.width
            ));
        }
        let min_height = barcode::code_height(self.width).max(2);
        if !(min_height..=MAX_SIDE).contains(&self.height) || self.height % 2 != 0 {
            return invalid(format!(
                "height: {} must be even and in {min_height}..={MAX_SIDE} for width {}",
                self.height, self.width
            ));
        }
        if !(1..=10).contains(&self.gop_secs) {
            return invalid(format!("gop_secs: {} must be in 1..=10", self.gop_secs));
        }
        if self.bframes > 4 || (self.bframes > 0 && self.codec != SimCodec::H264) {
            return invalid(format!(
                "bframes: {} must be in 0..=4, and only with H.264",
                self.bframes
            ));
        }
        if !(1..=MAX_FPS).contains(&self.fps) {
            return invalid(format!("fps: {} must be in 1..={MAX_FPS}", self.fps));
        }
        if let Some((user, password)) = &self.auth {
            // Basic auth joins them as "user:password", so a ':' in the user is ambiguous.
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                return invalid(
                    "auth: the user must be non-empty, without ':' or control characters".into(),
                );
            }
            if password.is_empty() {
                return invalid("auth: the password must not be empty".into());
            }
        }
        Ok(())
    }

    fn format(&self) -> StreamFormat {
        StreamFormat {
            width: self.width,
            height: self.height,
            fps: self.fps,
            codec: self.codec,
            gop_secs: self.gop_secs,
            bframes: self.bframes,
            audio: self.audio,
            scroll: self.scroll,
        }
    }
}

/// Why the simulator did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// GStreamer could not be initialised: check the installation (`gst-inspect-1.0`).
    Init(String),
    /// A [`SimConfig`] field is invalid (the message names it): fix the configuration.
    InvalidConfig(String),
    /// A GStreamer element is not installed (`x264enc` is in gst-plugins-ugly,
    /// `rtph264pay` in gst-plugins-good): install the plugin package.
    MissingElement(&'static str),
    /// The server could not listen on `addr` (port in use, or not a local address):
    /// choose another port or address, or use port 0.
    Bind { addr: SocketAddr, reason: String },
    /// The `sim-rtsp` thread could not be spawned or died during start-up: a resource
    /// limit or a bug; the message says which.
    Thread(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Init(err) => write!(f, "cannot initialise GStreamer: {err}"),
            Self::InvalidConfig(msg) => write!(f, "invalid simulator config: {msg}"),
            Self::MissingElement(name) => write!(f, "GStreamer element {name} is not installed"),
            Self::Bind { addr, reason } => write!(f, "cannot listen on {addr}: {reason}"),
            Self::Thread(msg) => write!(f, "simulator thread: {msg}"),
        }
    }
}

impl std::error::Error for SimError {}

/// A running simulator. Stops (closing its port and client connections) on [`stop`] or
/// drop.
///
/// [`stop`]: Simulator::stop
pub struct Simulator {
    bind: IpAddr,
    port: u16,
    paths: Vec<String>,
    /// The server's own context; owned by the `sim-rtsp` thread while it runs.
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    /// `None` once joined.
    thread: Option<JoinHandle<()>>,
}

/// What the `sim-rtsp` thread reports once the server listens.
struct Listening {
    port: u16,
    main_loop: glib::MainLoop,
}

impl Simulator {
    /// Validates `cfg`, starts the RTSP server on its `sim-rtsp` thread and returns once
    /// it is listening. Encoders start per path when the first client plays it.
    pub fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        cfg.validate()?;
        gst::init().map_err(|err| SimError::Init(err.to_string()))?;
        for name in media::required_elements(cfg.codec, cfg.audio) {
            if gst::ElementFactory::find(name).is_none() {
                return Err(SimError::MissingElement(name));
            }
        }

        let context = glib::MainContext::new();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let context = context.clone();
            let cfg = cfg.clone();
            thread::Builder::new()
                .name("sim-rtsp".into())
                .spawn(move || serve(&cfg, &context, &ready_tx))
                .map_err(|err| SimError::Thread(format!("cannot spawn sim-rtsp: {err}")))?
        };
        let listening = match ready_rx.recv() {
            Ok(Ok(listening)) => listening,
            Ok(Err(err)) => {
                join_logged(thread);
                return Err(err);
            }
            Err(mpsc::RecvError) => {
                join_logged(thread);
                return Err(SimError::Thread("sim-rtsp ended during start-up".into()));
            }
        };
        let sim = Simulator {
            bind: cfg.bind,
            port: listening.port,
            paths: cfg.paths,
            context,
            main_loop: listening.main_loop,
            thread: Some(thread),
        };
        log::info!(
            "sim: listening on {}, paths {:?}, {}x{}@{}, auth {}",
            SocketAddr::new(sim.bind, sim.port),
            sim.paths,
            cfg.width,
            cfg.height,
            cfg.fps,
            if cfg.auth.is_some() { "on" } else { "off" }
        );
        Ok(sim)
    }

    /// The port the server listens on (the chosen one when the config said 0).
    pub fn rtsp_port(&self) -> u16 {
        self.port
    }

    /// `rtsp://ip:port/path`, without credentials. A missing leading `/` is added. When
    /// bound to the unspecified address (`0.0.0.0` or `::`), the URL uses loopback of the
    /// same family, since the unspecified address is not a destination.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        let host = match self.bind {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("rtsp://{}{slash}{path}", SocketAddr::new(host, self.port))
    }

    /// The served paths, as configured.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// [`url`](Simulator::url) of every path, in config order.
    pub fn urls(&self) -> Vec<String> {
        self.paths.iter().map(|path| self.url(path)).collect()
    }

    /// Stops the server: closes the listening socket and every client connection (which
    /// stops the encoders), quits the main loop and joins the `sim-rtsp` thread.
    pub fn stop(self) {
        // Drop does it.
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Quit from inside the loop: a quit() that ran before run() started would be lost.
        let main_loop = self.main_loop.clone();
        self.context.invoke(move || main_loop.quit());
        join_logged(thread);
        log::info!("sim: stopped (port {})", self.port);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

fn join_logged(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        log::error!("sim: the sim-rtsp thread panicked");
    }
}

/// Body of the `sim-rtsp` thread: owns `context` as its thread default, builds and
/// attaches the server, reports on `ready`, runs until quit, then closes everything.
fn serve(
    cfg: &SimConfig,
    context: &glib::MainContext,
    ready: &mpsc::SyncSender<Result<Listening, SimError>>,
) {
    let ran = context.with_thread_default(|| {
        let main_loop = glib::MainLoop::new(Some(context), false);
        let server = build_server(cfg);
        let addr = SocketAddr::new(cfg.bind, cfg.port);
        let source = match server.attach(Some(context)) {
            Ok(source) => source,
            Err(err) => {
                let reason = err.to_string();
                // A send error means start() is gone; nobody is left to tell.
                let _ = ready.send(Err(SimError::Bind { addr, reason }));
                return;
            }
        };
        let Ok(port) = u16::try_from(server.bound_port()) else {
            if let Some(source) = context.find_source_by_id(&source) {
                source.destroy();
            }
            let reason = "no bound port after attach".to_owned();
            let _ = ready.send(Err(SimError::Bind { addr, reason }));
            return;
        };
        let listening = Listening {
            port,
            main_loop: main_loop.clone(),
        };
        if ready.send(Ok(listening)).is_err() {
            return;
        }

        main_loop.run();

        // Close the listening socket, then every client: that tears down their sessions
        // and with the last one each path's encoder.
        if let Some(source) = context.find_source_by_id(&source) {
            source.destroy();
        }
        let closed = server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        log::debug!("sim: closed {} client(s)", closed.len());
        // Run what the teardown queued (client and media clean-up) before the context goes.
        // Bounded: a removed client's watch can stay ready on its closed connection
        // (gst-rtsp-server 1.22 then logs a GLib-GIO-CRITICAL per dispatch), and an
        // unbounded drain spun on it for seconds.
        for _ in 0..64 {
            if !context.iteration(false) {
                break;
            }
        }
    });
    if let Err(err) = ran {
        let _ = ready.send(Err(SimError::Thread(format!(
            "cannot own the server's main context: {err}"
        ))));
    }
}

/// The server with its mount points and optional auth; not yet attached.
fn build_server(cfg: &SimConfig) -> rtsp::RTSPServer {
    let server = rtsp::RTSPServer::new();
    server.set_address(&cfg.bind.to_string());
    server.set_service(&cfg.port.to_string());

    let role = cfg.auth.as_ref().map(|(user, password)| {
        let auth = rtsp::RTSPAuth::new();
        let token = rtsp::RTSPToken::builder()
            .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, AUTH_ROLE)
            .build();
        if cfg.digest {
            auth.set_supported_methods(rtsp::gst_rtsp::RTSPAuthMethod::Digest);
            auth.add_digest(user, password, &token);
        } else {
            auth.add_basic(&rtsp::RTSPAuth::make_basic(user, password), &token);
        }
        // No default token: a client without valid credentials gets 401 on every path.
        server.set_auth(Some(&auth));
        AUTH_ROLE
    });

    let mounts = server
        .mount_points()
        .expect("a new RTSPServer always has mount points");
    for path in &cfg.paths {
        mounts.add_factory(
            path,
            media::factory(
                path,
                cfg.format(),
                role,
                cfg.ptz_view.clone(),
                cfg.scene.clone(),
                cfg.tcp_only,
            ),
        );
    }
    server.connect_client_connected(|_, client| {
        client.connect_closed(|_| log::debug!("sim: client disconnected"));
        log::debug!("sim: client connected");
    });
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let cfg = SimConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.paths, vec!["/1".to_owned()]);
        assert_eq!(
            (cfg.width, cfg.height, cfg.fps, cfg.port),
            (1280, 720, 30, 0)
        );
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = [
            SimConfig {
                paths: vec![],
                ..SimConfig::default()
            },
            SimConfig {
                paths: vec!["1".into()],
                ..SimConfig::default()
            },
            SimConfig {
                paths: vec!["/a b".into()],
                ..SimConfig::default()
            },
            SimConfig {
                paths: vec!["/1".into(), "/1".into()],
                ..SimConfig::default()
            },
            SimConfig {
                width: 641,
                ..SimConfig::default()
            },
            SimConfig {
                width: 1920,
                height: 100,
                ..SimConfig::default()
            },
            SimConfig {
                fps: 0,
                ..SimConfig::default()
            },
            SimConfig {
                auth: Some(("a:b".into(), "pw".into())),
                ..SimConfig::default()
            },
            SimConfig {
                auth: Some(("user".into(), String::new())),
                ..SimConfig::default()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.validate(), Err(SimError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn debug_redacts_password() {
        let cfg = SimConfig {
            auth: Some(("admin".into(), "hunter2".into())),
            ..SimConfig::default()
        };
        let text = format!("{cfg:?}");
        assert!(text.contains("admin"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn start_picks_port_and_stops() {
        let sim = Simulator::start(SimConfig {
            paths: vec!["/1".into(), "/stream2".into()],
            ..SimConfig::default()
        })
        .expect("start");
        let port = sim.rtsp_port();
        assert_ne!(port, 0);
        assert_eq!(sim.url("/1"), format!("rtsp://127.0.0.1:{port}/1"));
        assert_eq!(
            sim.url("stream2"),
            format!("rtsp://127.0.0.1:{port}/stream2")
        );
        assert_eq!(sim.urls().len(), 2);
        // Listening now, closed after stop.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        sim.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn busy_port_is_a_bind_error() {
        let sim = Simulator::start(SimConfig::default()).expect("start");
        let taken = SimConfig {
            port: sim.rtsp_port(),
            ..SimConfig::default()
        };
        match Simulator::start(taken) {
            Err(SimError::Bind { .. }) => {}
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[test]
    fn simulator_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Simulator>();
        assert_send_sync::<SimError>();
    }

    #[test]
    fn unspecified_bind_gives_loopback_urls() {
        let sim = Simulator::start(SimConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ..SimConfig::default()
        })
        .expect("start");
        assert_eq!(
            sim.url("/1"),
            format!("rtsp://127.0.0.1:{}/1", sim.rtsp_port())
        );
    }

    #[test]
    fn ipv6_url_has_brackets() {
        let sim = Simulator::start(SimConfig {
            bind: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ..SimConfig::default()
        });
        // Hosts without IPv6 loopback cannot bind; nothing to check there.
        if let Ok(sim) = sim {
            assert_eq!(sim.url("/1"), format!("rtsp://[::1]:{}/1", sim.rtsp_port()));
        }
    }
}
