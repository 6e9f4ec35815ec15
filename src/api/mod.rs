//! The app-facing API: an HTTP/1.1 front end that owns its sockets (`server`), the
//! `router` and what it calls — `params` (every default and range), `status` (the JSON),
//! `error` (failures to HTTP), `ptz`, the operator `console` (embedded static files), and
//! the viewers: WebSocket (`ws`, parsing in `messages`) and MJPEG (`mjpeg`), paced by
//! `pace`, capped by `sessions`.

pub mod console;
pub mod error;
pub mod messages;
pub mod mjpeg;
pub mod onvif;
pub mod pace;
pub mod params;
pub mod ptz;
pub mod request;
pub mod router;
pub mod server;
pub mod sessions;
pub mod snapshot;
pub mod status;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::fleet::Fleet;

pub use server::Server;

/// What every handler may use. Cheap to share: everything inside is `Arc` or read-only.
/// The cameras are the fleet's; the API keeps no map of its own.
pub struct Ctx {
    pub fleet: Arc<Fleet>,
    pub config: Config,
    pub started: Instant,
    pub shutdown: Arc<AtomicBool>,
    pub sessions: sessions::Sessions,
    /// Snapshots and tours running now: each holds an HTTP worker while it waits, so at
    /// most half the workers may (`snapshot::MAX_RUNNING`), and `/health` and the rest
    /// of the API always have workers left.
    pub snapshots: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    pub fn new(fleet: Arc<Fleet>, config: Config) -> Arc<Ctx> {
        let sessions =
            sessions::Sessions::new(config.limits.max_websockets, config.limits.max_streams);
        Arc::new(Ctx {
            fleet,
            config,
            started: Instant::now(),
            shutdown: Arc::new(AtomicBool::new(false)),
            sessions,
            snapshots: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}
