//! `Fleet`: the one owner of the connected cameras, their PTZ controllers and the state
//! file. Connect, disconnect, restore and persist live here; routes and `main` only call
//! it, and nothing else keeps a map of cameras.
//!
//! Lifetimes: each camera is a [`camera::Handle`] held only here, so removing it from the
//! map (disconnect, replace, shutdown, or dropping the fleet) stops and joins its thread.
//! Readers get the shared [`Camera`] (spec, feed, health), which never keeps a thread alive.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::camera::change::{ChangeEvent, WatchConfig};
use crate::camera::{
    self, Camera, CameraOptions, CameraSpec, CameraState, CameraStatus, Feed, StreamLocation,
};
use crate::clock::Clock;
use crate::onvif::{self, OnvifSource};
use crate::ptz::{Controller, PtzConfig, PtzHealth};
use crate::state::{SavedCamera, Store};

/// Why a fleet operation did not succeed. The API maps each to one HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetError {
    /// No camera with this id: the caller should connect it first (404).
    NotFound(String),
    /// The camera has no PTZ control: connect it with a `ptz` block (404).
    NoPtz(String),
    /// The camera limit is reached: disconnect one first (503).
    Full(usize),
    /// The camera did not deliver a picture in time; it may be slow: retry later (504).
    Timeout(String),
    /// The camera refused or failed (address, path, credentials, codec): fix the
    /// request (502).
    Unreachable(String),
    /// A thread could not be started (out of resources): retry later (500).
    Internal(String),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::NotFound(id) => write!(f, "Camera {id} not found"),
            FleetError::NoPtz(id) => write!(
                f,
                "Camera {id} has no PTZ control (connect it with a \"ptz\" block)"
            ),
            FleetError::Full(n) => write!(
                f,
                "the camera limit is reached ({n}); disconnect a camera first"
            ),
            FleetError::Timeout(s) | FleetError::Unreachable(s) | FleetError::Internal(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for FleetError {}

/// What connect asks for: the stream and, optionally, PTZ control. With `onvif`, the
/// stream's host, port and path come from the device (`GetStreamUri`), asked at connect
/// and again before each reconnect; `spec`'s are placeholders until then.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub spec: CameraSpec,
    pub ptz: Option<PtzConfig>,
    pub onvif: Option<OnvifSource>,
    /// Change watching (`None`: off).
    pub watch: Option<WatchConfig>,
}

/// One ONVIF exchange while looking a stream up: short, because a reconnect's lookup
/// runs on the camera thread and delays a stop by as much (at most two exchanges when
/// the device is silent).
const ONVIF_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Asks the device where the profile's stream is.
fn locate_onvif(spec: &CameraSpec, src: &OnvifSource) -> Result<StreamLocation, String> {
    let mut client = onvif::Client::with_timeout(
        &src.host,
        src.port,
        &spec.username,
        spec.password.clone(),
        ONVIF_LOOKUP_TIMEOUT,
    );
    let uri = onvif::device::stream_uri_of_profile(&mut client, src.profile.as_deref())
        .map_err(|e| e.to_string())?;
    let u = onvif::parse_rtsp_uri(&uri).map_err(|e| e.to_string())?;
    camera::validate_host(&u.host)
        .and_then(|()| camera::validate_path(&u.path))
        .map_err(|e| format!("the device's stream URI {uri} is not usable: {e}"))?;
    Ok(StreamLocation {
        host: u.host,
        port: u.port,
        path: u.path,
    })
}

/// A camera's status with its PTZ control link, as status replies show it.
#[derive(Debug, Clone)]
pub struct CameraView {
    pub status: CameraStatus,
    pub ptz: Option<PtzHealth>,
}

/// State changes and change events of cameras, for whoever listens (WebSocket
/// clients).
#[derive(Default)]
pub struct Events {
    subscribers: Mutex<Vec<Sender<CameraStatus>>>,
    changes: Mutex<Vec<Sender<ChangeEvent>>>,
}

impl Events {
    /// A bounded subscription to change events: a listener that does not keep up
    /// misses events (they are debounced per camera, so 16 is many seconds' worth).
    pub fn subscribe_changes(&self) -> Receiver<ChangeEvent> {
        let (tx, rx) = crossbeam_channel::bounded(16);
        self.changes.lock().push(tx);
        rx
    }

    fn publish_change(&self, ev: ChangeEvent) {
        self.changes
            .lock()
            .retain(|tx| !matches!(tx.try_send(ev.clone()), Err(TrySendError::Disconnected(_))));
    }

    /// A bounded subscription: a listener that does not keep up misses events.
    pub fn subscribe(&self) -> Receiver<CameraStatus> {
        let (tx, rx) = crossbeam_channel::bounded(16);
        self.subscribers.lock().push(tx);
        rx
    }

    fn publish(&self, status: CameraStatus) {
        self.subscribers.lock().retain(|tx| {
            !matches!(
                tx.try_send(status.clone()),
                Err(TrySendError::Disconnected(_))
            )
        });
    }
}

/// One connected camera: its thread's handle, its PTZ control and, if connected by
/// ONVIF, where its stream is looked up.
struct Entry {
    handle: camera::Handle,
    ptz: Option<Arc<Controller>>,
    onvif: Option<OnvifSource>,
}

impl Entry {
    fn camera(&self) -> &Arc<Camera> {
        self.handle.camera()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // The PTZ thread first (a last stop to a moving head), then the camera's.
        if let Some(p) = &self.ptz {
            p.close();
        }
    }
}

pub struct Fleet {
    entries: Mutex<HashMap<String, Entry>>,
    options: CameraOptions,
    max_cameras: usize,
    store: Option<Store>,
    /// Saves run one at a time, each with a snapshot taken under this lock, so two
    /// changes at once never save the older list last.
    persisting: Mutex<()>,
    events: Arc<Events>,
    clock: Clock,
}

impl Fleet {
    pub fn new(
        options: CameraOptions,
        max_cameras: usize,
        store: Option<Store>,
        clock: Clock,
    ) -> Fleet {
        Fleet {
            entries: Mutex::new(HashMap::new()),
            options,
            max_cameras,
            store,
            persisting: Mutex::new(()),
            events: Arc::new(Events::default()),
            clock,
        }
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn camera(&self, id: &str) -> Option<Arc<Camera>> {
        self.entries.lock().get(id).map(|e| Arc::clone(e.camera()))
    }

    /// The camera's PTZ controller, or why there is none.
    pub fn ptz(&self, id: &str) -> Result<Arc<Controller>, FleetError> {
        let entries = self.entries.lock();
        let e = entries
            .get(id)
            .ok_or_else(|| FleetError::NotFound(id.to_owned()))?;
        e.ptz
            .clone()
            .ok_or_else(|| FleetError::NoPtz(id.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A camera's status with its PTZ link.
    pub fn view(&self, id: &str) -> Option<CameraView> {
        let (cam, ptz) = {
            let entries = self.entries.lock();
            let e = entries.get(id)?;
            (Arc::clone(e.camera()), e.ptz.clone())
        };
        Some(CameraView {
            status: cam.status(),
            ptz: ptz.map(|p| p.health()),
        })
    }

    /// A status (e.g. from an event) with the PTZ link of the camera now under its id.
    pub fn view_of(&self, status: CameraStatus) -> CameraView {
        let ptz = self
            .entries
            .lock()
            .get(&status.id)
            .and_then(|e| e.ptz.as_ref().map(|p| p.health()));
        CameraView { status, ptz }
    }

    /// Every camera, sorted by id.
    pub fn list(&self) -> Vec<CameraView> {
        let mut all: Vec<(Arc<Camera>, Option<Arc<Controller>>)> = self
            .entries
            .lock()
            .values()
            .map(|e| (Arc::clone(e.camera()), e.ptz.clone()))
            .collect();
        all.sort_by(|a, b| a.0.id().cmp(b.0.id()));
        all.into_iter()
            .map(|(c, p)| CameraView {
                status: c.status(),
                ptz: p.map(|p| p.health()),
            })
            .collect()
    }

    /// Every camera, sorted by id (for readers that need more than its status, such as
    /// the metrics of its feed).
    pub fn cameras(&self) -> Vec<Arc<Camera>> {
        let mut all: Vec<Arc<Camera>> = self
            .entries
            .lock()
            .values()
            .map(|e| Arc::clone(e.camera()))
            .collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }

    /// Decoder elements in use by any camera.
    pub fn decoders_in_use(&self) -> Vec<String> {
        self.list()
            .into_iter()
            .filter_map(|v| v.status.decoder)
            .collect()
    }

    /// Connects (or replaces) a camera and waits up to `wait` for its first picture.
    /// On success its PTZ control is (re)started and the list saved. On failure the
    /// camera is not left behind: a failed re-connect also ends the old connection's PTZ
    /// control and saved entry. Viewers of the id stay subscribed across a replacement.
    pub fn connect(&self, mut req: ConnectRequest, wait: Duration) -> Result<(), FleetError> {
        let id = req.spec.id.clone();
        if let Some(src) = &req.onvif {
            let loc = locate_onvif(&req.spec, src).map_err(|e| {
                FleetError::Unreachable(format!(
                    "Could not get the stream URI from the ONVIF device at {}:{}: {e}",
                    src.host, src.port
                ))
            })?;
            log::info!(
                "{id}: ONVIF stream at rtsp://{}:{}{}",
                loc.host,
                loc.port,
                loc.path
            );
            (req.spec.host, req.spec.port, req.spec.path) = (loc.host, loc.port, loc.path);
        }
        let cam = self.start(req.spec.clone(), req.onvif.clone(), req.watch)?;
        match wait_first_picture(&cam, wait) {
            Ok(()) => {
                let ptz = req
                    .ptz
                    .map(|cfg| self.start_ptz(&req.spec, cfg, req.onvif.as_ref()));
                // Change watching starts over after the camera's own moves.
                cam.set_view_motion(ptz.as_ref().map(|p| p.motion()));
                let old_ptz = {
                    let mut entries = self.entries.lock();
                    match entries.get_mut(&id) {
                        Some(e) if Arc::ptr_eq(e.camera(), &cam) => {
                            std::mem::replace(&mut e.ptz, ptz)
                        }
                        // Replaced meanwhile by a concurrent connect: ours is not needed.
                        _ => ptz,
                    }
                };
                if let Some(p) = old_ptz {
                    p.close();
                }
                self.persist();
                Ok(())
            }
            Err(e) => {
                self.remove_if_same(&cam);
                self.persist();
                Err(e)
            }
        }
    }

    /// Restores the saved cameras (at start): each is kept and retried until
    /// disconnected, without waiting for pictures.
    pub fn restore(&self) {
        let Some(store) = &self.store else {
            return;
        };
        store.remove_stale_temp_files();
        let saved = match store.load() {
            Ok(s) => s,
            Err(e) => {
                log::error!(
                    "cannot read {} ({e}); starting with no cameras",
                    store.path().display()
                );
                return;
            }
        };
        for s in saved {
            let id = s.camera.id.clone();
            match self.start(
                s.camera.clone(),
                s.onvif.clone(),
                s.watch.map(|w| w.config()),
            ) {
                Ok(cam) => {
                    cam.request_picture();
                    if let Some(cfg) = s.ptz {
                        let ptz = self.start_ptz(&s.camera, cfg, s.onvif.as_ref());
                        cam.set_view_motion(Some(ptz.motion()));
                        if let Some(e) = self.entries.lock().get_mut(&id) {
                            e.ptz = Some(ptz);
                        }
                    }
                    log::info!("{id}: restored from {}", store.path().display());
                }
                Err(e) => log::warn!("{id}: cannot restore: {e}"),
            }
        }
    }

    /// Starts PTZ control of the camera `spec` describes (its address and credentials).
    /// A camera connected by ONVIF is controlled at the device's address, which its
    /// stream URI may not name.
    fn start_ptz(
        &self,
        spec: &CameraSpec,
        cfg: PtzConfig,
        onvif: Option<&OnvifSource>,
    ) -> Arc<Controller> {
        Arc::new(Controller::start(
            &spec.id,
            onvif.map_or(&spec.host, |o| &o.host),
            cfg,
            &spec.username,
            &spec.password,
            self.clock.clone(),
        ))
    }

    /// Starts the camera thread for `spec`, replacing a camera of the same id (whose
    /// feed, with its viewers, carries over).
    fn start(
        &self,
        spec: CameraSpec,
        onvif: Option<OnvifSource>,
        watch: Option<WatchConfig>,
    ) -> Result<Arc<Camera>, FleetError> {
        let id = spec.id.clone();
        let old = {
            let mut entries = self.entries.lock();
            if !entries.contains_key(&id) && entries.len() >= self.max_cameras {
                return Err(FleetError::Full(self.max_cameras));
            }
            entries.remove(&id)
        };
        // The old connection goes first (a camera may allow one RTSP session only).
        let feed = match old {
            Some(old) => {
                log::info!("{id}: replacing the existing connection");
                let feed = Arc::clone(&old.camera().feed);
                drop(old);
                feed
            }
            None => Feed::new(),
        };
        let events = Arc::clone(&self.events);
        // A camera connected by ONVIF asks the device for its stream URI again before
        // each reconnect: a device that rebooted may serve it elsewhere. The connect
        // address (with the camera's credentials) is the device's.
        let locate: Option<camera::Locate> = onvif.clone().map(|src| {
            let device = spec.clone();
            Box::new(move || locate_onvif(&device, &src)) as camera::Locate
        });
        let handle = camera::Handle::spawn_located(
            spec,
            feed,
            self.options.clone(),
            self.clock.clone(),
            Box::new(move |cam| events.publish(cam.status())),
            locate,
        )
        .map_err(|e| FleetError::Internal(format!("cannot start the camera thread: {e}")))?;
        let cam = Arc::clone(handle.camera());
        let changes = Arc::clone(&self.events);
        cam.on_change(Arc::new(move |ev| changes.publish_change(ev)));
        cam.set_watch(watch);
        // The cap is checked again and the camera inserted under one lock, so
        // concurrent connects of new ids cannot overshoot it.
        let replaced = {
            let mut entries = self.entries.lock();
            if !entries.contains_key(&id) && entries.len() >= self.max_cameras {
                drop(entries);
                drop(handle);
                return Err(FleetError::Full(self.max_cameras));
            }
            entries.insert(
                id,
                Entry {
                    handle,
                    ptz: None,
                    onvif,
                },
            )
        };
        // A concurrent connect of the same id got in between: it is replaced (stopped
        // here, outside the lock).
        drop(replaced);
        Ok(cam)
    }

    fn remove_if_same(&self, cam: &Arc<Camera>) {
        let removed = {
            let mut entries = self.entries.lock();
            match entries.get(cam.id()) {
                Some(e) if Arc::ptr_eq(e.camera(), cam) => entries.remove(cam.id()),
                _ => None,
            }
        };
        if let Some(e) = removed {
            drop(e);
            cam.feed.slot.clear();
        }
    }

    /// Turns a camera's change watching on (`Some`) or off, and saves it.
    pub fn set_watch(&self, id: &str, watch: Option<WatchConfig>) -> Result<(), FleetError> {
        let cam = self
            .camera(id)
            .ok_or_else(|| FleetError::NotFound(id.to_owned()))?;
        cam.set_watch(watch);
        self.persist();
        Ok(())
    }

    /// Stops and forgets a camera (and its PTZ control). Returns whether it was there.
    pub fn disconnect(&self, id: &str) -> bool {
        let removed = self.entries.lock().remove(id);
        match removed {
            Some(e) => {
                let feed = Arc::clone(&e.camera().feed);
                drop(e);
                feed.slot.clear();
                log::info!("{id}: disconnected");
                self.persist();
                true
            }
            None => false,
        }
    }

    /// Stops every camera and PTZ control and joins their threads (shutdown; the saved
    /// list is kept). Also what dropping the fleet does.
    pub fn shutdown(&self) {
        let all: Vec<Entry> = self.entries.lock().drain().map(|(_, e)| e).collect();
        drop(all);
    }

    /// Saves the cameras (with their PTZ settings).
    fn persist(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let _one_at_a_time = self.persisting.lock();
        let mut saved: Vec<SavedCamera> = self
            .entries
            .lock()
            .values()
            .map(|e| SavedCamera {
                camera: e.camera().spec.clone(),
                ptz: e.ptz.as_ref().map(|p| p.config()),
                onvif: e.onvif.clone(),
                watch: e.camera().watch_config().map(Into::into),
            })
            .collect();
        saved.sort_by(|a, b| a.camera.id.cmp(&b.camera.id));
        if let Err(e) = store.save(&saved) {
            log::error!("cannot save {}: {e}", store.path().display());
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits for a camera's first picture; a camera that fails before ever streaming is
/// reported at once, not after the whole wait.
fn wait_first_picture(cam: &Camera, wait: Duration) -> Result<(), FleetError> {
    let deadline = Instant::now() + wait;
    let waiter = cam.feed.slot.waiter();
    let start_seq = cam.feed.slot.latest_seq();
    cam.request_picture();
    loop {
        if cam.feed.slot.latest_seq() > start_seq {
            return Ok(());
        }
        // Wrong address, port, path or credentials show at the first attempt.
        if cam.state() == CameraState::Reconnecting && !cam.ever_streamed() {
            let why = cam.last_error().unwrap_or_default();
            return Err(FleetError::Unreachable(format!(
                "Could not connect to camera at {}: {why}",
                cam.spec.location()
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = cam
                .last_error()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(match cam.state() {
                CameraState::Reconnecting => FleetError::Unreachable(format!(
                    "Could not connect to camera at {}{why}",
                    cam.spec.location()
                )),
                _ => FleetError::Timeout(format!(
                    "No frame from camera at {} within {} s{why}",
                    cam.spec.location(),
                    wait.as_secs()
                )),
            });
        }
        // Keep the demand fresh while waiting.
        cam.request_picture();
        let _ = waiter
            .wakeups()
            .recv_timeout(left.min(Duration::from_millis(500)));
    }
}
