//! Demand for a camera's pictures, as values rather than counters poked from routes.
//!
//! A viewer (WebSocket subscription, MJPEG stream) holds a [`Demand`] guard: while it
//! lives the camera decodes; dropping it is how demand ends. A one-off request (`/frame`,
//! connect) calls [`DemandCounter::request`] instead, which keeps decoding going for a
//! short linger. The camera thread only reads: [`DemandCounter::wanted`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Decoding goes on this long after the last one-off request or viewer, so a viewer
/// switching back (or a second `/frame`) is instant.
pub const LINGER: Duration = Duration::from_millis(1500);

/// The demand of one camera id: live viewers and the last one-off request.
#[derive(Default)]
pub struct DemandCounter {
    viewers: AtomicUsize,
    last_request: Mutex<Option<Instant>>,
    last_viewer: Mutex<Option<Instant>>,
}

impl DemandCounter {
    /// A viewer's guard: counts until dropped.
    pub fn hold(self: &Arc<Self>) -> Demand {
        self.viewers.fetch_add(1, Ordering::SeqCst);
        Demand {
            counter: Arc::clone(self),
        }
    }

    /// Notes a one-off request for a picture at `now`.
    pub fn request(&self, now: Instant) {
        *self.last_request.lock() = Some(now);
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::SeqCst)
    }

    /// Whether pictures are wanted at `now`: a viewer holds a guard, or a viewer was seen
    /// here (by an earlier call) or a request came less than [`LINGER`] ago. The camera
    /// thread calls it on every tick, on its own clock.
    pub fn wanted(&self, now: Instant) -> bool {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < LINGER);
        if self.viewers() > 0 {
            *self.last_viewer.lock() = Some(now);
            return true;
        }
        recent(*self.last_request.lock()) || recent(*self.last_viewer.lock())
    }
}

/// See [`DemandCounter::hold`].
pub struct Demand {
    counter: Arc<DemandCounter>,
}

impl Demand {
    /// Whether this guard counts toward `counter` (a viewer following a reconnected id
    /// checks it still holds the current camera's demand).
    pub fn counts_for(&self, counter: &Arc<DemandCounter>) -> bool {
        Arc::ptr_eq(&self.counter, counter)
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        self.counter.viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_is_demand_until_dropped_then_lingers() {
        let d = Arc::new(DemandCounter::default());
        let t0 = Instant::now();
        assert!(!d.wanted(t0));
        let g = d.hold();
        assert_eq!(d.viewers(), 1);
        let left = t0 + Duration::from_secs(60);
        assert!(d.wanted(left));
        drop(g);
        assert_eq!(d.viewers(), 0);
        assert!(d.wanted(left + LINGER - Duration::from_millis(1)));
        assert!(!d.wanted(left + LINGER + Duration::from_secs(61)));
    }

    #[test]
    fn a_request_lingers() {
        let d = DemandCounter::default();
        let t0 = Instant::now();
        d.request(t0);
        assert!(d.wanted(t0 + LINGER - Duration::from_millis(1)));
        assert!(!d.wanted(t0 + LINGER));
    }
}
