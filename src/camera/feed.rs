//! `Feed`: what one camera id offers its viewers — the newest picture (`FrameSlot`), the
//! demand for it (`DemandCounter`) and its JPEG encodings (`JpegService`). It outlives a
//! reconnect or replacement of the id, so viewers stay subscribed across both.
//!
//! Who writes what: only the camera's decoder publishes into the slot; viewers hold a
//! [`Viewer`] (a demand guard plus a wake-up) and read; JPEG encoding is the service's.

use std::sync::Arc;

use super::demand::{Demand, DemandCounter};
use super::frame::{Frame, FrameSlot, Waiter};
use super::jpeg::JpegService;

#[derive(Default)]
pub struct Feed {
    pub slot: Arc<FrameSlot>,
    pub demand: Arc<DemandCounter>,
    pub jpeg: JpegService,
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
