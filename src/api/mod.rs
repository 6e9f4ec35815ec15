//! The app-facing API: an HTTP/1.1 front end that owns its sockets (`server`), the REST
//! routes (`http`), WebSocket viewers (`ws`) and MJPEG streams (`mjpeg`).

pub mod http;
pub mod messages;
pub mod mjpeg;
pub mod pace;
pub mod request;
pub mod server;
pub mod sessions;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::camera::Registry;
use crate::config::Config;

pub use server::Server;

/// What every handler may use. Cheap to share: everything inside is `Arc` or read-only.
pub struct Ctx {
    pub registry: Arc<Registry>,
    pub config: Config,
    pub started: Instant,
    pub shutdown: Arc<AtomicBool>,
    pub sessions: sessions::Sessions,
}

impl Ctx {
    pub fn new(registry: Arc<Registry>, config: Config) -> Arc<Ctx> {
        let sessions =
            sessions::Sessions::new(config.limits.max_websockets, config.limits.max_streams);
        Arc::new(Ctx {
            registry,
            config,
            started: Instant::now(),
            shutdown: Arc::new(AtomicBool::new(false)),
            sessions,
        })
    }
}
