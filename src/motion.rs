//! `ViewMotion`: when a camera's view is being moved on purpose (a PTZ command), shared
//! by its PTZ control, which records it, and its change watching, which starts over
//! after a move instead of reporting the new view as a change of the scene.
//!
//! A leaf: it knows neither PTZ protocols nor video, so `ptz` and `camera` both use it
//! without knowing each other. Times are on the fleet's `Clock`, which both share.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long the view counts as moving after a continuous move's last command or a stop
/// (the head coasts, the picture settles).
pub const AFTER_MOVE: Duration = Duration::from_secs(1);
/// How long after a preset recall or home: the head travels there on its own, for
/// seconds on a real camera, with no further command to say so.
pub const AFTER_RECALL: Duration = Duration::from_secs(5);

/// Until when the view is being moved.
#[derive(Debug, Default)]
pub struct ViewMotion {
    until: Mutex<Option<Instant>>,
}

impl ViewMotion {
    /// The view moves from `at` for `hold` (extends, never shortens, what is recorded).
    pub fn moved(&self, at: Instant, hold: Duration) {
        let mut until = self.until.lock();
        *until = (*until).max(Some(at + hold));
    }

    /// Whether the view is being moved at `now`.
    pub fn moving(&self, now: Instant) -> bool {
        self.until.lock().is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_holds_for_its_time_and_extends_only() {
        let m = ViewMotion::default();
        let t = Instant::now();
        assert!(!m.moving(t));
        m.moved(t, AFTER_RECALL);
        m.moved(t, AFTER_MOVE);
        assert!(
            m.moving(t + Duration::from_secs(4)),
            "the longer hold stays"
        );
        assert!(!m.moving(t + AFTER_RECALL));
    }
}
