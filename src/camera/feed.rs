//! `Feed`: what one camera id offers its viewers — the newest picture (`FrameSlot`), the
//! demand for it (`DemandCounter`) and its JPEG encodings (`JpegService`). It outlives a
//! reconnect or replacement of the id, so viewers stay subscribed across both.
//!
//! Who writes what: only the camera's decoder publishes into the slot; viewers hold a
//! [`Viewer`] (a demand guard plus a wake-up) and read; JPEG encoding is the service's;
//! whoever sends a picture to a viewer counts it in [`Sent`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::demand::{Demand, DemandCounter};
use super::frame::{Frame, FrameSlot, Waiter};
use super::jpeg::JpegService;
use crate::clock::unix_now;
use crate::meter::{self, Histogram};

#[derive(Default)]
pub struct Feed {
    pub slot: Arc<FrameSlot>,
    pub demand: Arc<DemandCounter>,
    pub jpeg: JpegService,
    pub sent: Sent,
}

/// The ways a picture leaves for a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// One picture per request (`/frame`).
    Rest,
    WebSocket,
    Mjpeg,
}

impl Via {
    pub const ALL: [Via; 3] = [Via::Rest, Via::WebSocket, Via::Mjpeg];

    pub fn as_str(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::WebSocket => "websocket",
            Via::Mjpeg => "mjpeg",
        }
    }
}

/// What this id's viewers were sent: bytes per way out, and how old each picture was as
/// it went out (from its packet's arrival to the end of its write). Counted by the
/// sender after a successful write; only read by `/metrics`.
pub struct Sent {
    bytes: [AtomicU64; 3],
    latency: Histogram,
}

impl Default for Sent {
    fn default() -> Self {
        Sent {
            bytes: Default::default(),
            latency: Histogram::new(meter::LATENCY_BUCKETS),
        }
    }
}

impl Sent {
    /// A picture captured at `captured` (unix seconds) went out `via` in `bytes` bytes
    /// (everything written for it: framing, headers, base64).
    pub fn record(&self, via: Via, bytes: usize, captured: f64) {
        self.bytes[via as usize].fetch_add(bytes as u64, Ordering::Relaxed);
        // Clamped (a clock step back, a NaN) so the sum cannot overflow.
        let age = unix_now() - captured;
        let age = if age.is_finite() {
            age.clamp(0.0, 1e6)
        } else {
            0.0
        };
        self.latency.observe(Duration::from_secs_f64(age));
    }

    /// Bytes sent `via` so far.
    pub fn bytes(&self, via: Via) -> u64 {
        self.bytes[via as usize].load(Ordering::Relaxed)
    }

    /// Capture-to-send latency of the pictures sent so far.
    pub fn latency(&self) -> meter::Snapshot {
        self.latency.snapshot()
    }
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    /// A viewer's subscription: the camera decodes while it lives.
    pub fn watch(self: &Arc<Self>) -> Viewer {
        Viewer {
            demand: self.demand.hold(),
            waiter: self.slot.waiter(),
            feed: Arc::clone(self),
        }
    }

    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.slot.latest()
    }
}

/// A viewer of one feed. Dropping it ends its demand and its wake-ups.
pub struct Viewer {
    // Field order: the guard and the waiter go before the feed they point into.
    demand: Demand,
    waiter: Waiter,
    feed: Arc<Feed>,
}

impl Viewer {
    /// Becomes ready when a newer picture may be there.
    pub fn wakeups(&self) -> &crossbeam_channel::Receiver<()> {
        self.waiter.wakeups()
    }

    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// Whether this viewer watches `feed` (a viewer following a reconnected id).
    pub fn watches(&self, feed: &Arc<Feed>) -> bool {
        Arc::ptr_eq(&self.feed, feed) && self.demand.counts_for(&feed.demand)
    }
}
