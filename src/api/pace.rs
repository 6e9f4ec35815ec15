//! `Pacer`: sends a viewer the newest picture at most at its asked rate, never the same
//! picture twice and never faster than the camera.

use std::time::{Duration, Instant};

pub struct Pacer {
    interval: Duration,
    next_due: Instant,
    last_seq: u64,
}

impl Pacer {
    /// `fps` must be positive (callers validate 0.1..=60).
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / fps),
            next_due: Instant::now(),
            last_seq: 0,
        }
    }

    /// Whether picture `seq` should go out now.
    ///
    /// A quarter interval of slack: a picture that comes a little early for its slot is
    /// still sent, so 30 fps of a 30 fps camera is every picture despite jitter.
    pub fn due(&self, seq: u64, now: Instant) -> bool {
        seq > self.last_seq && now + self.interval / 4 >= self.next_due
    }

    /// How long until a waiting newer picture is due (zero if it is due now).
    pub fn wait(&self, now: Instant) -> Duration {
        self.next_due
            .saturating_duration_since(now + self.interval / 4)
    }

    /// Notes that `seq` went out (or was skipped for good) at `now`.
    pub fn sent(&mut self, seq: u64, now: Instant) {
        self.last_seq = seq;
        // Keep the phase, but do not bank sends after a stall.
        self.next_due = (self.next_due + self.interval).max(now - self.interval / 2);
    }

    /// Marks `seq` as seen without moving the schedule (e.g. its encode failed).
    pub fn skip(&mut self, seq: u64) {
        self.last_seq = seq;
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Forget what was sent (the feed changed and numbering may restart).
    pub fn reset(&mut self) {
        self.last_seq = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a camera at `cam_fps` with ±`jitter_ms` through a pacer at `fps` for 10 s
    /// of simulated time and returns the pictures sent per second.
    fn simulate(cam_fps: f64, fps: f64, jitter_ms: i64) -> f64 {
        let t0 = Instant::now();
        let mut p = Pacer::new(fps);
        p.next_due = t0;
        let mut sent = 0;
        let frames = (cam_fps * 10.0) as u64;
        for i in 1..=frames {
            let j = if i % 2 == 0 { jitter_ms } else { -jitter_ms };
            let at_ms = (i as f64 * 1000.0 / cam_fps) as i64 + j;
            let now = t0 + Duration::from_millis(at_ms.max(0) as u64);
            if p.due(i, now) {
                p.sent(i, now);
                sent += 1;
            } else if p.due(i, now + p.wait(now)) {
                // The viewer waits for the slot; the picture is still the newest if the
                // next one comes later.
                let at = now + p.wait(now);
                let next = t0 + Duration::from_millis(((i + 1) as f64 * 1000.0 / cam_fps) as u64);
                if at < next {
                    p.sent(i, at);
                    sent += 1;
                }
            }
        }
        sent as f64 / 10.0
    }

    #[test]
    fn full_rate_when_asked_rate_matches_camera() {
        let r = simulate(30.0, 30.0, 6);
        assert!(r > 29.0, "{r}");
    }

    #[test]
    fn half_rate() {
        let r = simulate(30.0, 15.0, 5);
        assert!((14.0..=15.5).contains(&r), "{r}");
    }

    #[test]
    fn never_faster_than_camera() {
        let r = simulate(10.0, 60.0, 0);
        assert!(r <= 10.0, "{r}");
    }

    #[test]
    fn never_twice_the_same_picture() {
        let now = Instant::now();
        let mut p = Pacer::new(60.0);
        assert!(p.due(1, now));
        p.sent(1, now);
        assert!(!p.due(1, now + Duration::from_secs(1)));
        assert!(p.due(2, now + Duration::from_secs(1)));
    }
}
