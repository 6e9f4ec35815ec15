//! `Registry`: the connected cameras by id, connect / replace / disconnect, and the
//! broadcast of their state changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use super::frame::Feed;
use super::supervisor::{Camera, CameraOptions, CameraState, CameraStatus};
use super::CameraSpec;

/// Why a connect did not succeed. Each maps to one HTTP status in the API.
#[derive(Debug)]
pub enum ConnectError {
    /// The camera did not deliver a picture in time: the caller may retry later.
    Timeout(String),
    /// The camera refused or failed (wrong address, credentials, codec).
    Failed(String),
    /// Too many cameras: disconnect one first.
    Full(usize),
    /// The camera thread could not be started (out of resources).
    Internal(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout(s) | ConnectError::Failed(s) | ConnectError::Internal(s) => {
                f.write_str(s)
            }
            ConnectError::Full(n) => write!(
                f,
                "the camera limit is reached ({n}); disconnect a camera first"
            ),
        }
    }
}

/// State changes of cameras, for whoever listens (WebSocket clients).
#[derive(Default)]
pub struct Events {
    subscribers: Mutex<Vec<Sender<CameraStatus>>>,
}

impl Events {
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

pub struct Registry {
    cameras: Mutex<HashMap<String, Arc<Camera>>>,
    options: CameraOptions,
    max_cameras: usize,
    events: Arc<Events>,
}

impl Registry {
    pub fn new(options: CameraOptions, max_cameras: usize) -> Registry {
        Registry {
            cameras: Mutex::new(HashMap::new()),
            options,
            max_cameras,
            events: Arc::new(Events::default()),
        }
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn get(&self, id: &str) -> Option<Arc<Camera>> {
        self.cameras.lock().get(id).cloned()
    }

    /// Every camera, sorted by id.
    pub fn list(&self) -> Vec<Arc<Camera>> {
        let mut v: Vec<_> = self.cameras.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }

    pub fn len(&self) -> usize {
        self.cameras.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connects (or replaces) a camera and waits up to `wait` for its first picture.
    /// On failure the camera is not left behind. Viewers of the id stay subscribed
    /// across a replacement.
    pub fn connect(&self, spec: CameraSpec, wait: Duration) -> Result<Arc<Camera>, ConnectError> {
        let cam = self.start(spec)?;
        match self.wait_first_picture(&cam, wait) {
            Ok(()) => Ok(cam),
            Err(e) => {
                self.remove_if_same(&cam);
                Err(e)
            }
        }
    }

    /// Starts a camera without waiting (restoring saved cameras at start-up): it is kept
    /// and retried until disconnected.
    pub fn restore(&self, spec: CameraSpec) -> Result<Arc<Camera>, ConnectError> {
        let cam = self.start(spec)?;
        cam.request_picture();
        Ok(cam)
    }

    fn start(&self, spec: CameraSpec) -> Result<Arc<Camera>, ConnectError> {
        let id = spec.id.clone();
        let old = {
            let cams = self.cameras.lock();
            if !cams.contains_key(&id) && cams.len() >= self.max_cameras {
                return Err(ConnectError::Full(self.max_cameras));
            }
            cams.get(&id).cloned()
        };
        // The old connection goes first (a camera may allow one RTSP session only);
        // its feed, with its viewers, carries over.
        let feed = match &old {
            Some(old) => {
                log::info!("{id}: replacing the existing connection");
                old.stop();
                Arc::clone(&old.feed)
            }
            None => Feed::new(),
        };
        let events = Arc::clone(&self.events);
        // The cap is checked again and the camera inserted under one lock, so
        // concurrent connects of new ids cannot overshoot it. (Spawning a thread under
        // the lock is quick; the camera's thread never takes this lock.)
        let mut cams = self.cameras.lock();
        if !cams.contains_key(&id) && cams.len() >= self.max_cameras {
            return Err(ConnectError::Full(self.max_cameras));
        }
        let cam = Camera::spawn(
            spec,
            feed,
            self.options.clone(),
            Box::new(move |cam| events.publish(cam.status())),
        )
        .map_err(|e| ConnectError::Internal(format!("cannot start the camera thread: {e}")))?;
        let replaced = cams.insert(id, Arc::clone(&cam));
        drop(cams);
        if let Some(r) = replaced {
            if old.as_ref().is_none_or(|o| !Arc::ptr_eq(o, &r)) {
                // A concurrent connect of the same id got in between: stop it too.
                r.stop();
            }
        }
        Ok(cam)
    }

    fn wait_first_picture(&self, cam: &Arc<Camera>, wait: Duration) -> Result<(), ConnectError> {
        let deadline = Instant::now() + wait;
        let listener = cam.feed.listen();
        let start_seq = cam.feed.latest_seq();
        cam.request_picture();
        loop {
            if cam.feed.latest_seq() > start_seq {
                return Ok(());
            }
            // A camera that failed before ever streaming is reported at once, not
            // after the whole wait: wrong address, port, path or credentials.
            if cam.state() == CameraState::Reconnecting && !cam.ever_streamed() {
                let why = cam.last_error().unwrap_or_default();
                return Err(ConnectError::Failed(format!(
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
                    CameraState::Reconnecting => ConnectError::Failed(format!(
                        "Could not connect to camera at {}{why}",
                        cam.spec.location()
                    )),
                    _ => ConnectError::Timeout(format!(
                        "No frame from camera at {} within {} s{why}",
                        cam.spec.location(),
                        wait.as_secs()
                    )),
                });
            }
            // Keep the demand fresh while waiting.
            cam.request_picture();
            let _ = listener
                .wakeups()
                .recv_timeout(left.min(Duration::from_millis(500)));
        }
    }

    fn remove_if_same(&self, cam: &Arc<Camera>) {
        let removed = {
            let mut cams = self.cameras.lock();
            match cams.get(cam.id()) {
                Some(c) if Arc::ptr_eq(c, cam) => cams.remove(cam.id()),
                _ => None,
            }
        };
        cam.stop();
        if removed.is_some() {
            cam.feed.clear();
        }
    }

    /// Stops and forgets a camera. Returns whether it was there.
    pub fn disconnect(&self, id: &str) -> bool {
        let cam = self.cameras.lock().remove(id);
        match cam {
            Some(cam) => {
                cam.stop();
                cam.feed.clear();
                true
            }
            None => false,
        }
    }

    /// Stops every camera and joins their threads (shutdown; the saved list is kept).
    pub fn shutdown(&self) {
        let cams: Vec<_> = self.cameras.lock().drain().map(|(_, c)| c).collect();
        for c in cams {
            c.stop();
        }
    }

    /// Status of every camera.
    pub fn statuses(&self) -> Vec<CameraStatus> {
        self.list().iter().map(|c| c.status()).collect()
    }
}
