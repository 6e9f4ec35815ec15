//! `Pacer`: decides, for each new picture a viewer sees, whether to send it, so the viewer
//! gets at most its asked rate, never the same picture twice and never more than the
//! camera gives — without ever holding a picture back (holding back is latency).
//!
//! It keeps a credit that grows with time at `fps` per second (capped) and costs one per
//! picture sent; a picture is sent when the credit covers it (with a little slack for
//! jitter), else skipped. At the camera's own rate every picture goes out the moment it
//! is decoded; at half the rate every other one; at 20 of 30, two of three.

use std::time::Instant;

/// How much credit short of a whole picture still sends: absorbs arrival jitter of a
/// quarter interval, so 30 of a 30 fps camera is every picture.
const SLACK: f64 = 0.25;
/// The most credit kept: a viewer that waited long gets one picture, not a burst.
const CAP: f64 = 1.0 + SLACK;

pub struct Pacer {
    fps: f64,
    credit: f64,
    updated: Option<Instant>,
    last_seq: u64,
}

impl Pacer {
    /// `fps` must be positive (callers validate 0.1..=60).
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            fps,
            credit: CAP,
            updated: None,
            last_seq: 0,
        }
    }

    /// Picture `seq` is the newest at `now`: true if it should be sent now. Either way it
    /// is not offered again.
    pub fn offer(&mut self, seq: u64, now: Instant) -> bool {
        if seq <= self.last_seq {
            return false;
        }
        self.last_seq = seq;
        if let Some(t) = self.updated {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            self.credit = (self.credit + dt * self.fps).min(CAP);
        }
        self.updated = Some(now);
        if self.credit >= 1.0 - SLACK {
            self.credit -= 1.0;
            true
        } else {
            false
        }
    }

    /// The newest picture offered so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Forget what was offered (the viewer moved to another feed).
    pub fn reset(&mut self) {
        self.last_seq = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Offers a camera at `cam_fps` with ±`jitter_ms` to a pacer at `fps` for 20 s of
    /// simulated time; returns the pictures sent per second.
    fn simulate(cam_fps: f64, fps: f64, jitter_ms: i64) -> f64 {
        let t0 = Instant::now();
        let mut p = Pacer::new(fps);
        let frames = (cam_fps * 20.0) as u64;
        let mut sent = 0;
        for i in 1..=frames {
            let j = if i % 2 == 0 { jitter_ms } else { -jitter_ms };
            let at_ms = ((i as f64 * 1000.0 / cam_fps) as i64 + j).max(0) as u64;
            if p.offer(i, t0 + Duration::from_millis(at_ms)) {
                sent += 1;
            }
        }
        sent as f64 / 20.0
    }

    #[test]
    fn every_picture_when_asked_rate_matches_camera() {
        let r = simulate(30.0, 30.0, 7);
        assert!(r >= 29.9, "{r}");
    }

    #[test]
    fn fractions_of_the_camera_rate() {
        let r = simulate(30.0, 15.0, 5);
        assert!((14.9..=15.1).contains(&r), "{r}");
        let r = simulate(30.0, 20.0, 3);
        assert!((19.5..=20.1).contains(&r), "{r}");
        let r = simulate(30.0, 10.0, 3);
        assert!((9.9..=10.1).contains(&r), "{r}");
    }

    #[test]
    fn never_faster_than_camera() {
        let r = simulate(10.0, 60.0, 0);
        assert!(r <= 10.0, "{r}");
    }

    #[test]
    fn never_twice_the_same_picture_and_no_burst_after_a_pause() {
        let now = Instant::now();
        let mut p = Pacer::new(30.0);
        assert!(p.offer(1, now));
        assert!(!p.offer(1, now + Duration::from_secs(1)));
        assert!(p.offer(2, now + Duration::from_secs(5)));
        // Right after: the long pause banked at most a little slack, not 150 pictures.
        assert!(!p.offer(3, now + Duration::from_secs(5) + Duration::from_millis(5)));
    }
}
