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
//!
//! Noise: cells that move from one scored picture to the next most of the time (an
//! on-screen clock, the simulator's frame code, a flickering light) are "busy" and left
//! out of the score; the first [`WARMUP`] pictures and [`WARMUP_TIME`] only learn them. An object that
//! appears moves its cells once, so it is never taken for noise.

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
/// How fast a cell's "busy" level (how often it moved from one scored picture to the
/// next) follows: a time constant.
pub const BUSY_ADAPT: Duration = Duration::from_secs(5);
/// A cell busier than this is left out of the score: an on-screen clock, a frame code,
/// a flickering light or a tree in the wind changes all the time and is not a change
/// of the scene.
pub const BUSY: f32 = 0.25;
/// Scored pictures before the first event may fire: long enough to learn the busy
/// cells (each scores 0 until then).
pub const WARMUP: u32 = 4;
/// And time: a cell that moves in every picture is busy after this much learning
/// (`1 - e^-0.5` = 39 % > [`BUSY`]), however few pictures came (one a second while
/// nobody views, five while viewers are there).
pub const WARMUP_TIME: Duration = Duration::from_millis(2500);

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
    /// Per cell: how often it moved from one scored picture to the next (0..1). A
    /// frame code or a clock moves all the time; an object that appears and stays moves
    /// once.
    busy: Vec<f32>,
    /// The last scored picture's cells.
    previous: Vec<u8>,
    /// Pictures scored since the reference was (re)made, and when it was.
    seen: u32,
    since: Option<Instant>,
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
            busy: Vec::new(),
            previous: Vec::new(),
            seen: 0,
            since: None,
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
        self.busy.clear();
        self.seen = 0;
        self.since = None;
        self.last_scored = None;
        self.armed = true;
    }

    /// Scores one picture's thumbnail taken at `now`, and learns it into the background.
    ///
    /// The score is [`Thumb::changed`] against the background, with busy cells (see
    /// [`BUSY`]) taken as unchanged: the reference holds the picture's own grey there.
    pub fn score(&mut self, thumb: &Thumb, now: Instant) -> Scored {
        let fits = self.reference.is_some() && self.shape == (thumb.w, thumb.h);
        if !fits {
            // First picture, or the picture size changed: a new reference.
            self.background = thumb.cells.iter().map(|&c| f32::from(c)).collect();
            self.busy = vec![0.0; thumb.cells.len()];
            self.previous = thumb.cells.clone();
            self.shape = (thumb.w, thumb.h);
            self.reference = Some(thumb.clone());
            self.last_scored = Some(now);
            self.seen = 1;
            self.since = Some(now);
            return Scored {
                score: 0.0,
                event: false,
            };
        }
        let dt = self
            .last_scored
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_scored = Some(now);
        let rate = |tau: Duration| 1.0 - (-dt.as_secs_f32() / tau.as_secs_f32()).exp();
        let reference = self.reference.as_mut().expect("checked above");
        for (i, (rc, &c)) in reference.cells.iter_mut().zip(&thumb.cells).enumerate() {
            let b = self.background[i].round().clamp(0.0, 255.0) as u8;
            let moved = if c.abs_diff(self.previous[i]) > super::thumb::CELL_THRESHOLD {
                1.0
            } else {
                0.0
            };
            self.busy[i] += (moved - self.busy[i]) * rate(BUSY_ADAPT);
            self.previous[i] = c;
            *rc = if self.busy[i] > BUSY { c } else { b };
        }
        let learning = self
            .since
            .is_some_and(|t| now.saturating_duration_since(t) < WARMUP_TIME);
        let score = if self.seen < WARMUP || learning {
            0.0
        } else {
            thumb.changed(reference)
        };
        self.seen = self.seen.saturating_add(1);
        let alpha = rate(ADAPT);
        for (b, &c) in self.background.iter_mut().zip(&thumb.cells) {
            *b += (f32::from(c) - *b) * alpha;
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

/// How a watched camera gets the pictures it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreMode {
    /// Nobody views the camera: only keyframes are decoded, each one scored.
    Keyframes,
    /// Viewers make the camera decode every picture: at most [`FRAMES_PER_SECOND`] of
    /// them are scored.
    Frames,
}

impl ScoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreMode::Keyframes => "keyframes",
            ScoreMode::Frames => "frames",
        }
    }
}

/// At most this many decoded pictures a second are scored while viewers are there.
pub const FRAMES_PER_SECOND: u32 = 5;

/// A change event: the scored picture's seq and capture time (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub camera_id: String,
    pub seq: u64,
    pub score: f32,
    pub captured: f64,
}

/// Where a camera's change events go (called on its decoder's thread: must not block).
pub type ChangeSink = std::sync::Arc<dyn Fn(ChangeEvent) + Send + Sync>;

/// What watching costs and gave so far, for status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WatchStatus {
    pub config: Option<WatchConfig>,
    /// How pictures are scored now; `None` while no picture is being decoded for it.
    pub mode: Option<ScoreMode>,
    pub scored: u64,
    pub scored_per_second: f64,
    pub micros_per_score: f64,
    /// What decoding one keyframe for the score costs while nobody views (a decoder
    /// started for it and stopped after), on average; 0 before the first.
    pub micros_per_decode: f64,
    pub events: u64,
    pub last_score: Option<f32>,
    /// The last event's picture: seq and capture time.
    pub last_event: Option<(u64, f64)>,
}

/// One camera's watching: its detector (while enabled) and what it cost.
#[derive(Debug, Default)]
pub struct Watch {
    detector: Option<Detector>,
    mode: Option<ScoreMode>,
    scored: u64,
    micros: f64,
    decodes: u64,
    decode_micros: f64,
    recent: std::collections::VecDeque<Instant>,
    events: u64,
    last_score: Option<f32>,
    last_event: Option<(u64, f64)>,
}

impl Watch {
    /// Turns watching on with `config` (keeping the background) or off.
    pub fn configure(&mut self, config: Option<WatchConfig>) {
        match (config, &mut self.detector) {
            (Some(c), Some(d)) => d.set_config(c),
            (Some(c), None) => self.detector = Some(Detector::new(c)),
            (None, _) => self.detector = None,
        }
    }

    pub fn config(&self) -> Option<WatchConfig> {
        self.detector.as_ref().map(Detector::config)
    }

    pub fn set_mode(&mut self, mode: Option<ScoreMode>) {
        if self.mode != mode {
            self.recent.clear();
        }
        self.mode = mode;
    }

    /// Whether a picture decoded at `now` should be scored (the rate bound in
    /// [`ScoreMode::Frames`]).
    pub fn due(&self, now: Instant) -> bool {
        if self.detector.is_none() {
            return false;
        }
        match (self.mode, self.recent.back()) {
            (Some(ScoreMode::Frames), Some(t)) => {
                now.saturating_duration_since(*t)
                    >= Duration::from_secs(1) / FRAMES_PER_SECOND - Duration::from_millis(5)
            }
            _ => true,
        }
    }

    /// Scores a picture's thumbnail (`seq`, `captured`) at `now`; `took` is what making
    /// the thumbnail cost. Returns the score when the picture is a change event.
    pub fn score(
        &mut self,
        thumb: &Thumb,
        seq: u64,
        captured: f64,
        now: Instant,
        took: Duration,
    ) -> Option<f32> {
        let started = std::time::Instant::now();
        let s = self.detector.as_mut()?.score(thumb, now);
        let took = took + started.elapsed();
        self.scored += 1;
        self.micros += took.as_secs_f64() * 1e6;
        self.recent.push_back(now);
        while self.recent.len() > 2
            && (self.recent.len() > 64
                || now.saturating_duration_since(self.recent[0]) > Duration::from_secs(10))
        {
            self.recent.pop_front();
        }
        self.last_score = Some(s.score);
        if s.event {
            self.events += 1;
            self.last_event = Some((seq, captured));
            return Some(s.score);
        }
        None
    }

    /// Counts one keyframe decoded for the score alone (decoder start included).
    pub fn record_decode(&mut self, took: Duration) {
        self.decodes += 1;
        self.decode_micros += took.as_secs_f64() * 1e6;
    }

    /// Forgets the background (a new session: the view may differ).
    pub fn reset(&mut self) {
        if let Some(d) = &mut self.detector {
            d.reset();
        }
    }

    pub fn status(&self, now: Instant) -> WatchStatus {
        let rate = match (self.recent.front(), self.recent.back()) {
            (Some(f), Some(l))
                if self.recent.len() > 1
                    && now.saturating_duration_since(*l) < Duration::from_secs(3)
                    && l > f =>
            {
                (self.recent.len() - 1) as f64 / l.saturating_duration_since(*f).as_secs_f64()
            }
            _ => 0.0,
        };
        WatchStatus {
            config: self.config(),
            mode: self.detector.as_ref().and(self.mode),
            scored: self.scored,
            scored_per_second: (rate * 100.0).round() / 100.0,
            micros_per_score: if self.scored == 0 {
                0.0
            } else {
                (self.micros / self.scored as f64 * 10.0).round() / 10.0
            },
            micros_per_decode: if self.decodes == 0 {
                0.0
            } else {
                (self.decode_micros / self.decodes as f64).round()
            },
            events: self.events,
            last_score: self.last_score,
            last_event: self.last_event,
        }
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
    fn busy_cells_are_left_out_and_the_object_still_fires_once() {
        let clock = Clock::manual();
        let mut d = Detector::new(WatchConfig::default());
        // A frame code: 10 % of the cells flip between black and white every picture,
        // far above the threshold.
        let coded = |n: u32, object: bool| {
            let mut t = thumb(object);
            for (i, c) in t.cells.iter_mut().take(230).enumerate() {
                *c = if (i as u32 + n) % 2 == 0 { 16 } else { 235 };
            }
            t
        };
        let step = Duration::from_secs(1);
        let mut events = 0;
        for n in 0..120 {
            clock.advance(step);
            events += usize::from(d.score(&coded(n, false), clock.now()).event);
        }
        assert_eq!(events, 0, "the frame code fired");
        clock.advance(step);
        let s = d.score(&coded(120, false), clock.now());
        assert!(s.score < 0.01, "{s:?}");
        clock.advance(step);
        let s = d.score(&coded(121, true), clock.now());
        assert!(s.event && s.score > 0.1, "{s:?}");
        for n in 122..180 {
            clock.advance(step);
            events += usize::from(d.score(&coded(n, true), clock.now()).event);
        }
        assert_eq!(events, 0, "a second event while the object stays");
        // Its going is seen: its cells were not learnt as busy.
        let mut gone = 0;
        for n in 180..200 {
            clock.advance(step);
            gone += usize::from(d.score(&coded(n, false), clock.now()).event);
        }
        assert_eq!(gone, 1);
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
        for _ in 0..WARMUP {
            assert!(!score(0.0).event);
        }
        // Past the warm-up time too.
        clock.advance(WARMUP_TIME);
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
        run(&mut d, &clock, &still, WARMUP as usize, step);
        clock.advance(WARMUP_TIME);
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
        run(&mut d, &clock, &still, WARMUP as usize, step);
        clock.advance(WARMUP_TIME);
        d.score(&still, clock.now());
        clock.advance(step);
        assert!(d.score(&object, clock.now()).event);
        clock.advance(step);
        assert!(!d.score(&still, clock.now()).event);
        clock.advance(step);
        assert!(!d.score(&object, clock.now()).event, "within the cooldown");
        assert_eq!(run(&mut d, &clock, &still, 100, step), 0, "it went again");
    }

    /// However many pictures came, nothing fires before [`WARMUP_TIME`] of learning
    /// (a frame code's slower bits are busy only after a while).
    #[test]
    fn nothing_fires_while_learning() {
        let clock = Clock::manual();
        let mut d = Detector::new(WatchConfig::default());
        let (still, object) = (thumb(false), thumb(true));
        let step = Duration::from_millis(100);
        run(&mut d, &clock, &still, 10, step);
        clock.advance(step);
        let s = d.score(&object, clock.now());
        assert!(!s.event && s.score == 0.0, "{s:?}");
        // Still there once learning is over: the change is reported then.
        clock.advance(WARMUP_TIME);
        assert!(d.score(&object, clock.now()).event);
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
