//! The app-facing API: an HTTP/1.1 front end that owns its sockets (`server`), the REST
//! routes (`http`), WebSocket viewers (`ws`) and MJPEG streams (`mjpeg`).

pub mod http;
pub mod messages;
pub mod mjpeg;
pub mod pace;
pub mod ptz;
pub mod request;
pub mod server;
pub mod sessions;
pub mod ws;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::camera::Registry;
use crate::config::Config;
use crate::state::Store;

pub use server::Server;

/// What every handler may use. Cheap to share: everything inside is `Arc` or read-only.
pub struct Ctx {
    pub registry: Arc<Registry>,
    pub config: Config,
    pub started: Instant,
    pub shutdown: Arc<AtomicBool>,
    pub sessions: sessions::Sessions,
    /// PTZ control of the cameras that have it.
    pub ptz: crate::ptz::Controllers,
    /// Where the camera list is saved; `None` when persistence is off.
    pub store: Option<Store>,
    persisting: parking_lot::Mutex<()>,
}

impl Ctx {
    pub fn new(
        registry: Arc<Registry>,
        config: Config,
        ptz: crate::ptz::Controllers,
        store: Option<Store>,
    ) -> Arc<Ctx> {
        let sessions =
            sessions::Sessions::new(config.limits.max_websockets, config.limits.max_streams);
        Arc::new(Ctx {
            registry,
            config,
            started: Instant::now(),
            shutdown: Arc::new(AtomicBool::new(false)),
            sessions,
            ptz,
            store,
            persisting: parking_lot::Mutex::new(()),
        })
    }

    /// Saves the cameras (with their PTZ settings) after a change.
    pub fn persist(&self) {
        let Some(store) = &self.store else {
            return;
        };
        // Snapshot and write under one lock: two changes at once must not save the
        // older list last.
        let _one_at_a_time = self.persisting.lock();
        let saved: Vec<crate::state::SavedCamera> = self
            .registry
            .list()
            .iter()
            .map(|c| crate::state::SavedCamera {
                camera: c.spec.clone(),
                ptz: self.ptz.get(c.id()).map(|p| p.config()),
            })
            .collect();
        if let Err(e) = store.save(&saved) {
            log::error!("cannot save {}: {e}", store.path().display());
        }
    }
}
