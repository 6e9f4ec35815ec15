//! Change events: whether a camera's scene changed, scored on [`Thumb`]s of its decoded
//! pictures against a slowly adapting background, with hysteresis and a cooldown.
//!
//! Pure: every call takes the time from the caller (the camera's clock), so the state
//! machine is tested on synthetic thumbnails and a driven clock.
//!
//! What counts as one change: the score ([`Thumb::changed`] of the picture against the
//! background, the fraction of cells that moved) crossing the threshold going up. The
//! background then learns the new scene (time constant [`ADAPT`]), so the score falls
//! back; only once it is below `threshold * REARM` can another event fire. An object
//! that appears is one event; the background adapting to it is none; the object going
//! away again (the background now has it) is a second change, and reported as such.
//! At most one event per cooldown: a crossing during the cooldown fires when the
//! cooldown ends if the score is still above the threshold then (a change that lasts is
//! reported late, never lost; a flicker shorter than the cooldown is dropped).

use std::time::{Duration, Instant};

use super::thumb::Thumb;

/// `threshold` when the watch block does not give one: 5 % of the cells.
pub const DEFAULT_THRESHOLD: f32 = 0.05;
/// `cooldown` when the watch block does not give one.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(2);
/// The background's time constant: a change that stays is part of the scene after
/// about three of these.
pub const ADAPT: Duration = Duration::from_secs(4);
/// The detector re-arms once the score is below this share of the threshold.
pub const REARM: f32 = 0.5;

/// A camera's change-watch settings (watching is on while a camera has one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchConfig {
    /// The share of thumbnail cells (0..1) that must change for an event.
    pub threshold: f32,
    /// The least time between two events.
    pub cooldown: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            threshold: DEFAULT_THRESHOLD,
            cooldown: DEFAULT_COOLDOWN,
        }
    }
}

/// What one scored picture gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The picture's change score (0..1).
    pub score: f32,
    /// Whether it fires a change event.
    pub event: bool,
}

/// The detector of one camera: background, armed state, cooldown.
#[derive(Debug, Clone)]
pub struct Detector {
    config: WatchConfig,
    /// The running average of the thumbnails' cells, and its shape.
    background: Vec<f32>,
    shape: (usize, usize),
    /// The background as a thumbnail (what [`Thumb::changed`] compares against).
    reference: Option<Thumb>,
    last_scored: Option<Instant>,
    /// Armed: the next crossing fires. Not armed: waiting for the score to fall back.
    armed: bool,
    last_event: Option<Instant>,
}

impl Detector {
    pub fn new(config: WatchConfig) -> Detector {
        Detector {
            config,
            background: Vec::new(),
            shape: (0, 0),
            reference: None,
            last_scored: None,
            armed: true,
            last_event: None,
        }
    }

    pub fn config(&self) -> WatchConfig {
        self.config
    }

    /// New settings; the background and the cooldown carry over.
    pub fn set_config(&mut self, config: WatchConfig) {
        self.config = config;
    }

    /// Forgets the background (the stream restarted or the head moved the view): the
    /// next picture becomes the reference and scores 0.
    pub fn reset(&mut self) {
        self.reference = None;
        self.background.clear();
        self.last_scored = None;
        self.armed = true;
    }

    /// Scores one picture's thumbnail taken at `now`, and learns it into the background.
    pub fn score(&mut self, thumb: &Thumb, now: Instant) -> Scored {
        let score = match &self.reference {
            Some(r) if self.shape == (thumb.w, thumb.h) => thumb.changed(r),
            _ => {
                // First picture, or the picture size changed: a new reference.
                self.background = thumb.cells.iter().map(|&c| f32::from(c)).collect();
                self.shape = (thumb.w, thumb.h);
                self.reference = Some(thumb.clone());
                self.last_scored = Some(now);
                return Scored {
                    score: 0.0,
                    event: false,
                };
            }
        };
        let dt = self
            .last_scored
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_scored = Some(now);
        let alpha = 1.0 - (-dt.as_secs_f32() / ADAPT.as_secs_f32()).exp();
        for (b, &c) in self.background.iter_mut().zip(&thumb.cells) {
            *b += (f32::from(c) - *b) * alpha;
        }
        if let Some(r) = &mut self.reference {
            for (rc, b) in r.cells.iter_mut().zip(&self.background) {
                *rc = b.round().clamp(0.0, 255.0) as u8;
            }
        }
        let cooled = self
            .last_event
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.cooldown);
        let mut event = false;
        if self.armed {
            if score >= self.config.threshold && cooled {
                event = true;
                self.armed = false;
                self.last_event = Some(now);
            }
        } else if score < self.config.threshold * REARM {
            self.armed = true;
        }
        Scored { score, event }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    /// A 64×36 thumbnail: a gradient, with a bright box of cells (12 %) when `object`.
    fn thumb(object: bool) -> Thumb {
        let (w, h) = (64, 36);
        let mut cells = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let inside = object && (40..58).contains(&x) && (18..32).contains(&y);
                cells.push(if inside { 250 } else { (40 + x * 2) as u8 });
            }
        }
        Thumb { w, h, cells }
    }

    /// A flat thumbnail with the share `frac` of its cells bright.
    fn share(frac: f32) -> Thumb {
        let n = 64 * 36;
        let bright = (frac * n as f32).round() as usize;
        Thumb {
            w: 64,
            h: 36,
            cells: (0..n).map(|i| if i < bright { 250 } else { 40 }).collect(),
        }
    }

    /// Scores `n` pictures of `t` at `every`; returns the events' count.
    fn run(d: &mut Detector, clock: &Clock, t: &Thumb, n: usize, every: Duration) -> usize {
        (0..n)
            .filter(|_| {
                clock.advance(every);
                d.score(t, clock.now()).event
            })
            .count()
    }

    #[test]
    fn a_still_scene_never_fires() {
        let clock = Clock::manual();
        let mut d = Detector::new(WatchConfig::default());
        let still = thumb(false);
        assert_eq!(
            run(&mut d, &clock, &still, 600, Duration::from_millis(200)),
            0
        );
        clock.advance(Duration::from_millis(200));
        assert_eq!(d.score(&still, clock.now()).score, 0.0);
    }

    #[test]
    fn an_object_fires_once_and_its_going_fires_once_more() {
        let clock = Clock::manual();
        let mut d = Detector::new(WatchConfig::default());
        let (still, object) = (thumb(false), thumb(true));
        let step = Duration::from_millis(200);
        run(&mut d, &clock, &still, 20, step);
        clock.advance(step);
        let first = d.score(&object, clock.now());
        assert!(first.event, "the object appears: {first:?}");
        assert!(first.score > 0.1, "{first:?}");
        // It stays for a minute: the background learns it, no second event.
        assert_eq!(run(&mut d, &clock, &object, 300, step), 0);
        clock.advance(step);
        assert!(d.score(&object, clock.now()).score < DEFAULT_THRESHOLD * REARM);
        // It goes: the background had it, so that is a change too (one).
        assert_eq!(run(&mut d, &clock, &still, 300, step), 1);
    }

    #[test]
    fn hysteresis_rearms_only_well_below_the_threshold() {
        let clock = Clock::manual();
        // A cooldown far shorter than the steps, and steps far shorter than the
        // background's adaptation: only the hysteresis decides.
        let mut d = Detector::new(WatchConfig {
            threshold: 0.05,
            cooldown: Duration::from_millis(1),
        });
        let step = Duration::from_millis(10);
        let mut score = |frac: f32| {
            clock.advance(step);
            d.score(&share(frac), clock.now())
        };
        assert!(!score(0.0).event);
        let s = score(0.10);
        assert!(s.event && (0.095..0.105).contains(&s.score), "{s:?}");
        assert!(!score(0.04).event, "below the threshold, above re-arm");
        assert!(!score(0.10).event, "not re-armed: no second event");
        assert!(!score(0.03).event);
        assert!(!score(0.10).event, "0.03 is not below 0.05 × {REARM}");
        assert!(!score(0.0).event, "re-armed");
        assert!(score(0.10).event, "a new crossing fires");
    }

    #[test]
    fn the_cooldown_defers_a_lasting_change_and_drops_a_short_one() {
        let clock = Clock::manual();
        let mut d = Detector::new(WatchConfig {
            threshold: 0.05,
            cooldown: Duration::from_secs(3),
        });
        let (still, object) = (thumb(false), thumb(true));
        let step = Duration::from_millis(100);
        d.score(&still, clock.now());
        clock.advance(step);
        assert!(d.score(&object, clock.now()).event);
        let first = clock.now();
        // Gone again at once (the background had no time to learn it): re-armed.
        clock.advance(step);
        let s = d.score(&still, clock.now());
        assert!(!s.event && s.score < 0.025, "{s:?}");
        // Back within the cooldown: no event until the cooldown ends, then one (it
        // lasted; the background has not learnt it yet).
        let mut fired = Vec::new();
        for _ in 0..50 {
            clock.advance(step);
            if d.score(&object, clock.now()).event {
                fired.push(clock.now().saturating_duration_since(first));
            }
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(
            fired[0] >= Duration::from_secs(3) && fired[0] < Duration::from_millis(3200),
            "{fired:?}"
        );
        // A flicker shorter than a cooldown, after the object went: dropped.
        run(&mut d, &clock, &still, 300, step);
        let mut d = Detector::new(WatchConfig {
            threshold: 0.05,
            cooldown: Duration::from_secs(3),
        });
        d.score(&still, clock.now());
        clock.advance(step);
        assert!(d.score(&object, clock.now()).event);
        clock.advance(step);
        assert!(!d.score(&still, clock.now()).event);
        clock.advance(step);
        assert!(!d.score(&object, clock.now()).event, "within the cooldown");
        assert_eq!(run(&mut d, &clock, &still, 100, step), 0, "it went again");
    }

    #[test]
    fn a_new_picture_size_is_a_new_reference_not_an_event() {
        let clock = Clock::manual();
        let mut d = Detector::new(WatchConfig::default());
        d.score(&thumb(false), clock.now());
        clock.advance(Duration::from_secs(1));
        let small = Thumb {
            w: 32,
            h: 18,
            cells: vec![0; 32 * 18],
        };
        assert_eq!(
            d.score(&small, clock.now()),
            Scored {
                score: 0.0,
                event: false
            }
        );
        d.reset();
        clock.advance(Duration::from_secs(1));
        assert!(!d.score(&thumb(true), clock.now()).event);
    }
}
