//! `FrameSlot`: the newest decoded picture of one camera id, its number (`seq`), and the
//! wake-ups that tell waiting viewers a newer picture (or a state change) is there.
//!
//! The slot holds one picture and never queues: the camera's decoder overwrites it, and
//! a viewer that looks late simply gets the newest one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

/// Picture numbers are process-wide, so they only ever increase for a viewer, even when
/// its camera id is disconnected and connected anew (a new slot).
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
    /// A picture numbered with the next seq: what [`FrameSlot::publish`] stores, and what
    /// change watching scores without publishing while nobody views the camera.
    pub fn new(
        captured: f64,
        info: gstreamer_video::VideoInfo,
        buffer: gstreamer::Buffer,
    ) -> Frame {
        Frame {
            seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed) + 1,
            captured,
            info,
            buffer,
        }
    }

    pub fn width(&self) -> u32 {
        self.info.width()
    }
    pub fn height(&self) -> u32 {
        self.info.height()
    }
}

/// A registered wake-up. A waiter that has not looked yet is woken once, not once per
/// picture: its channel holds at most one wake-up.
struct Registered {
    id: u64,
    tx: Sender<()>,
}

/// The newest picture and whoever waits for the next one.
#[derive(Default)]
pub struct FrameSlot {
    latest: Mutex<Option<Arc<Frame>>>,
    /// Pictures published here so far (decoded frames of this id).
    published: AtomicU64,
    waiters: Mutex<Vec<Registered>>,
    next_waiter: AtomicU64,
}

impl FrameSlot {
    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.latest.lock().clone()
    }

    pub fn latest_seq(&self) -> u64 {
        self.latest.lock().as_ref().map_or(0, |f| f.seq)
    }

    /// Stores a decoded picture as the newest (numbering it), wakes every waiter, and
    /// returns it. Only the camera's decoder calls this.
    pub fn publish(
        &self,
        captured: f64,
        info: gstreamer_video::VideoInfo,
        buffer: gstreamer::Buffer,
    ) -> Arc<Frame> {
        let frame = Arc::new(Frame::new(captured, info, buffer));
        *self.latest.lock() = Some(Arc::clone(&frame));
        self.published.fetch_add(1, Ordering::Relaxed);
        self.wake_all();
        frame
    }

    /// How many pictures were published here (decoded) so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Frees the picture without waking anyone (decoding paused; nobody watches).
    pub fn drop_picture(&self) {
        *self.latest.lock() = None;
    }

    /// Forgets the picture and wakes the waiters (the camera was disconnected).
    pub fn clear(&self) {
        *self.latest.lock() = None;
        self.wake_all();
    }

    /// Wakes every waiter: a new picture, or a state change they should look at.
    pub fn wake_all(&self) {
        self.waiters.lock().retain(|w| match w.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => true,
            Err(TrySendError::Disconnected(())) => false,
        });
    }

    /// A subscription to wake-ups; unregistered when dropped.
    pub fn waiter(self: &Arc<Self>) -> Waiter {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        self.waiters.lock().push(Registered { id, tx });
        Waiter {
            slot: Arc::clone(self),
            id,
            rx,
        }
    }
}

/// See [`FrameSlot::waiter`].
pub struct Waiter {
    slot: Arc<FrameSlot>,
    id: u64,
    rx: Receiver<()>,
}

impl Waiter {
    /// Becomes ready when a newer picture may be there.
    pub fn wakeups(&self) -> &Receiver<()> {
        &self.rx
    }

    pub fn slot(&self) -> &Arc<FrameSlot> {
        &self.slot
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.slot.waiters.lock().retain(|w| w.id != self.id);
    }
}
