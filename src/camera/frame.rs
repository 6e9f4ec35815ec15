//! `Feed`: the newest decoded picture of one camera id plus its viewers, and the
//! wake-ups that tell viewers a newer picture is there.
//!
//! A feed outlives the connection that fills it: reconnecting or replacing a camera
//! keeps its viewers subscribed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

/// Picture numbers are process-wide, so they only ever increase for a viewer, even when
/// its camera id is disconnected and connected anew (a new feed).
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// One decoded picture. `buffer` holds raw video as described by `info`.
pub struct Frame {
    /// Increases with every decoded picture (process-wide), across reconnects.
    pub seq: u64,
    /// Unix seconds at which the camera's packet for this picture arrived.
    pub captured: f64,
    pub info: gstreamer_video::VideoInfo,
    pub buffer: gstreamer::Buffer,
}

impl Frame {
    pub fn width(&self) -> u32 {
        self.info.width()
    }
    pub fn height(&self) -> u32 {
        self.info.height()
    }
}

/// Wakes a viewer when a newer frame (or a state change) is there. A viewer that has not
/// looked yet is woken once, not once per frame: its channel holds at most one wake-up.
struct Waker {
    id: u64,
    tx: Sender<()>,
}

#[derive(Default)]
pub struct Feed {
    latest: Mutex<Option<Arc<Frame>>>,
    wakers: Mutex<Vec<Waker>>,
    next_waker: AtomicU64,
    viewers: AtomicUsize,
    /// Last time a one-off request (`/frame`, connect) asked for a picture.
    last_request: Mutex<Option<Instant>>,
    /// JPEGs of the newest pictures, shared by all viewers.
    pub jpeg: super::jpeg::JpegStore,
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.latest.lock().clone()
    }

    pub fn latest_seq(&self) -> u64 {
        self.latest.lock().as_ref().map_or(0, |f| f.seq)
    }

    /// Stores a decoded picture as the newest (numbering it) and wakes every viewer.
    pub fn publish(
        &self,
        captured: f64,
        info: gstreamer_video::VideoInfo,
        buffer: gstreamer::Buffer,
    ) -> u64 {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = Arc::new(Frame {
            seq,
            captured,
            info,
            buffer,
        });
        *self.latest.lock() = Some(frame);
        self.wake_all();
        seq
    }

    /// Frees the picture without waking anyone (decoding paused; nobody watches).
    pub fn drop_picture(&self) {
        *self.latest.lock() = None;
    }

    /// Forgets the picture (the camera was disconnected), keeping numbering.
    pub fn clear(&self) {
        *self.latest.lock() = None;
        self.wake_all();
    }

    pub fn wake_all(&self) {
        self.wakers.lock().retain(|w| match w.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => true,
            Err(TrySendError::Disconnected(())) => false,
        });
    }

    /// A viewer's subscription: counts as a viewer (so the camera decodes) until dropped.
    pub fn watch(self: &Arc<Self>) -> Viewer {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = self.next_waker.fetch_add(1, Ordering::Relaxed);
        self.wakers.lock().push(Waker { id, tx });
        self.viewers.fetch_add(1, Ordering::Relaxed);
        Viewer {
            feed: Arc::clone(self),
            id,
            rx,
        }
    }

    /// Wake-ups without counting as a viewer (e.g. a connect waiting for the first frame).
    pub fn listen(self: &Arc<Self>) -> Listener {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = self.next_waker.fetch_add(1, Ordering::Relaxed);
        self.wakers.lock().push(Waker { id, tx });
        Listener {
            feed: Arc::clone(self),
            id,
            rx,
        }
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Notes a one-off request for a picture, so an on-demand camera decodes for a while.
    pub fn touch(&self) {
        *self.last_request.lock() = Some(Instant::now());
    }

    pub fn last_request(&self) -> Option<Instant> {
        *self.last_request.lock()
    }

    fn remove_waker(&self, id: u64) {
        self.wakers.lock().retain(|w| w.id != id);
    }
}

/// See [`Feed::watch`].
pub struct Viewer {
    feed: Arc<Feed>,
    id: u64,
    rx: Receiver<()>,
}

impl Viewer {
    /// Becomes ready when a newer frame may be there.
    pub fn wakeups(&self) -> &Receiver<()> {
        &self.rx
    }
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.feed.viewers.fetch_sub(1, Ordering::Relaxed);
        self.feed.remove_waker(self.id);
    }
}

/// See [`Feed::listen`].
pub struct Listener {
    feed: Arc<Feed>,
    id: u64,
    rx: Receiver<()>,
}

impl Listener {
    pub fn wakeups(&self) -> &Receiver<()> {
        &self.rx
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.feed.remove_waker(self.id);
    }
}

/// Unix time in seconds, as a float.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
