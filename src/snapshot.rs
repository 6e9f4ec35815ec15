//! Settled snapshots and preset tours: pictures a vision model can use. A snapshot goes
//! to a preset if asked, waits until the head has stopped (its position inquiry answers
//! the same a few times running, where the protocol has one) and the picture has settled
//! (consecutive decoded pictures hardly differ: no motion blur, no focus or exposure
//! hunting), then encodes the newest picture. A tour does that for a list of presets in
//! order, holding the head (`ptz::Claim`) so that a manual PTZ command stops it with a
//! clear message.
//!
//! Sits above `camera` and `ptz` (it steers one and watches the other); the API calls it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::camera::jpeg::JpegError;
use crate::camera::thumb::Thumb;
use crate::camera::{Camera, Jpeg, JpegParams, PictureError};
use crate::clock::unix_now;
use crate::ptz::{Claim, Controller, Position, PresetOp, PtzCommand, PtzError};

/// Position inquiries in a row that must agree before the head counts as stopped.
pub const HEAD_STABLE_READS: usize = 3;
/// Time between position inquiries while waiting for the head.
pub const HEAD_POLL: Duration = Duration::from_millis(100);
/// Consecutive picture pairs that must be this close for the picture to count as
/// settled: [`SETTLE_SHARE`] of their thumbnails' cells differ by less than this many
/// grey levels (0..255). A small part changing (an on-screen clock, someone walking by)
/// does not hold a snapshot up; the whole picture moving, blurring or changing
/// brightness does.
pub const SETTLE_DISTANCE: f32 = 2.0;
pub const SETTLE_SHARE: f32 = 0.75;
/// How many such pairs in a row (3 pairs: 4 pictures, about 130 ms at 30 fps).
pub const SETTLE_PAIRS: usize = 3;
/// The default and largest time limit of one snapshot.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// After a preset recall a camera takes a few hundred milliseconds to start moving, and
/// until then it stands still at the old place. So within this time a head counts as
/// stopped only once it was seen moving, and on a head that cannot say where it is
/// (HTTP-CGI) pictures captured sooner do not count.
pub const RECALL_GRACE: Duration = Duration::from_secs(1);
/// How often a wait for the next picture looks at the cancel flag (a camera that
/// stalls sends no wake-ups).
const CANCEL_CHECK: Duration = Duration::from_millis(200);
/// Snapshots and tours that may run at once in the process: each holds an HTTP worker
/// while it waits (the API answers 503 beyond).
pub const MAX_RUNNING: usize = 4;
/// The most presets one tour visits.
pub const MAX_STOPS: usize = 16;
/// How long a tour may take in all, whatever its stops' limits.
pub const MAX_TOUR: Duration = Duration::from_secs(180);

/// One snapshot: where to go (a preset, or stay), how to encode, how long to try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shot {
    pub preset: Option<u8>,
    pub params: JpegParams,
    pub timeout: Duration,
}

/// A settled picture and how it was got.
pub struct Snapshot {
    pub jpeg: Arc<Jpeg>,
    pub preset: Option<u8>,
    /// The head's position when the picture settled (`None` without PTZ, or when the
    /// protocol cannot report it).
    pub position: Option<Position>,
    /// From the request to the settled picture, and the part spent waiting for the head.
    pub took: Duration,
    pub head: Duration,
    /// Decoded pictures compared on the way.
    pub examined: u32,
}

/// Why no snapshot came.
#[derive(Debug)]
pub enum SnapshotError {
    /// No picture from the camera (not yet streaming, or out).
    Picture(PictureError),
    /// A PTZ command or inquiry failed, or a manual command ended the tour.
    Ptz(PtzError),
    /// The time limit ran out; the text says what was still moving.
    Timeout(String),
    /// The picture could not be encoded.
    Jpeg(JpegError),
    /// The appliance is shutting down.
    Cancelled,
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Picture(e) => write!(f, "no live picture ({e:?})"),
            SnapshotError::Ptz(e) => write!(f, "{e}"),
            SnapshotError::Timeout(m) => f.write_str(m),
            SnapshotError::Jpeg(e) => write!(f, "{e}"),
            SnapshotError::Cancelled => f.write_str("the appliance is shutting down"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<PtzError> for SnapshotError {
    fn from(e: PtzError) -> Self {
        SnapshotError::Ptz(e)
    }
}

/// Counts agreeing position inquiries: the head has stopped after
/// [`HEAD_STABLE_READS`] equal answers in a row.
#[derive(Debug, Default)]
pub struct HeadSettle {
    last: Option<Position>,
    same: usize,
    /// The answers differed at least once: the head was seen moving.
    moved: bool,
}

impl HeadSettle {
    /// Feeds one answer; `true` once the head counts as stopped.
    pub fn observe(&mut self, p: Position) -> bool {
        if self.last == Some(p) {
            self.same += 1;
        } else {
            self.moved |= self.last.is_some();
            self.last = Some(p);
            self.same = 1;
        }
        self.same >= HEAD_STABLE_READS
    }

    pub fn position(&self) -> Option<Position> {
        self.last
    }

    /// Whether the head was seen moving (two answers differed).
    pub fn moved(&self) -> bool {
        self.moved
    }
}

/// Counts close consecutive pictures: settled after [`SETTLE_PAIRS`] pairs in a row
/// whose thumbnails mostly differ by less than [`SETTLE_DISTANCE`].
#[derive(Debug, Default)]
pub struct PictureSettle {
    last: Option<Thumb>,
    close: usize,
    /// The difference of the newest pair (for the time-out message).
    pub last_distance: Option<f32>,
}

impl PictureSettle {
    /// Feeds the next picture's thumbnail; `true` once the picture counts as settled.
    pub fn observe(&mut self, t: Thumb) -> bool {
        if let Some(prev) = &self.last {
            let d = t.spread(prev, SETTLE_SHARE);
            self.last_distance = Some(d);
            if d < SETTLE_DISTANCE {
                self.close += 1;
            } else {
                self.close = 0;
            }
        }
        self.last = Some(t);
        self.close >= SETTLE_PAIRS
    }
}

/// The camera's head, as a snapshot sees it.
#[derive(Clone, Copy)]
pub enum Head<'a> {
    /// No PTZ control: only the picture is waited for.
    None,
    /// PTZ control, not held: its position is watched (a snapshot without a preset).
    Watch(&'a Controller),
    /// Held for this run: it may be sent to a preset, and a manual command ends the run.
    Held(&'a Claim<'a>),
}

impl Head<'_> {
    fn position(&self) -> Option<Result<Position, PtzError>> {
        match self {
            Head::None => None,
            Head::Watch(c) => Some(c.position()),
            Head::Held(c) => Some(c.position()),
        }
    }
}

/// Takes one settled snapshot of `camera`: to go to a preset the head must be
/// [`Head::Held`]. Blocks up to `shot.timeout`.
/// `cancel` set (the appliance shutting down) ends the wait within a frame interval or
/// a position inquiry.
pub fn take(
    camera: &Camera,
    head: Head,
    shot: Shot,
    cancel: &AtomicBool,
) -> Result<Snapshot, SnapshotError> {
    let started = Instant::now();
    let deadline = started + shot.timeout;
    // Decode every picture while we look (a viewer's demand), from before the move.
    let viewer = camera.watch();
    let mut recalled = None;
    if let Some(index) = shot.preset {
        let Head::Held(claim) = head else {
            return Err(SnapshotError::Ptz(PtzError::Invalid(format!(
                "camera {} has no PTZ control to go to preset {index}",
                camera.id()
            ))));
        };
        claim.command(PtzCommand::Preset {
            op: PresetOp::Goto,
            index,
        })?;
        recalled = Some((Instant::now(), unix_now()));
    }
    let mut examined = 0;
    loop {
        // The head first: it must answer the same position a few times running.
        let position = head_stopped(head, recalled.map(|r| r.0), deadline, cancel)?;
        let head_wait = started.elapsed();
        // Without a position inquiry (HTTP-CGI) nothing says when the head started to
        // move: pictures of the first moments after a recall may show it still at the
        // old place, so they do not count.
        let since = match (position, recalled) {
            (None, Some((_, at))) => unix_now().max(at + RECALL_GRACE.as_secs_f64()),
            _ => unix_now(),
        };
        // Then the picture: pictures captured from now on, until a few in a row agree.
        let mut settle = PictureSettle::default();
        let mut seen = 0u64;
        let frame = loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(SnapshotError::Cancelled);
            }
            if !camera.live() {
                return Err(SnapshotError::Picture(camera.out_or_not_yet()));
            }
            let latest = viewer.feed().latest();
            if let Some(f) = latest.filter(|f| f.seq != seen && f.captured >= since) {
                seen = f.seq;
                examined += 1;
                if let Some(t) = Thumb::of(&f) {
                    if settle.observe(t) {
                        break f;
                    }
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SnapshotError::Timeout(match settle.last_distance {
                    Some(d) => format!(
                        "the picture did not settle within {:.1} s (most of consecutive pictures still differs by {d:.0} grey levels or more)",
                        shot.timeout.as_secs_f64()
                    ),
                    None => format!(
                        "no new picture within {:.1} s",
                        shot.timeout.as_secs_f64()
                    ),
                }));
            }
            let _ = viewer.wakeups().recv_timeout(left.min(CANCEL_CHECK));
        };
        // The head must still be where it was: a move that started late begins again.
        if let (Some(now), Some(p)) = (head.position(), position) {
            if now? != p {
                continue;
            }
        }
        let jpeg = camera
            .feed
            .jpeg
            .get(&frame, shot.params)
            .map_err(SnapshotError::Jpeg)?;
        return Ok(Snapshot {
            jpeg,
            preset: shot.preset,
            position,
            took: started.elapsed(),
            head: head_wait,
            examined,
        });
    }
}

/// Waits until the head answers the same position [`HEAD_STABLE_READS`] times running.
/// `None` when the protocol cannot say where the head is (HTTP-CGI): the picture alone
/// tells then.
fn head_stopped(
    head: Head,
    recalled: Option<Instant>,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Option<Position>, SnapshotError> {
    let mut settle = HeadSettle::default();
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(SnapshotError::Cancelled);
        }
        match head.position() {
            None => return Ok(None),
            Some(Ok(p)) => {
                let started =
                    settle.moved() || recalled.is_none_or(|at| at.elapsed() >= RECALL_GRACE);
                if settle.observe(p) && started {
                    return Ok(Some(p));
                }
            }
            Some(Err(PtzError::Unsupported(_))) => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
        }
        if Instant::now() + HEAD_POLL > deadline {
            return Err(SnapshotError::Timeout(format!(
                "the head did not stop in time (last position {:?})",
                settle.position()
            )));
        }
        std::thread::sleep(HEAD_POLL);
    }
}

/// A tour's stop: a preset and how to encode its picture (crop, size, quality).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    pub preset: u8,
    pub params: JpegParams,
}

/// Why a tour ended early: the snapshots taken before, and the error.
pub struct TourError {
    pub done: Vec<Snapshot>,
    pub error: SnapshotError,
}

/// Visits `stops` in order with one settled snapshot each (each within `per_stop`, the
/// whole within [`MAX_TOUR`]), holding the head: a manual command ends the tour.
pub fn tour(
    camera: &Camera,
    ctrl: &Controller,
    stops: &[Stop],
    per_stop: Duration,
    cancel: &AtomicBool,
) -> Result<Vec<Snapshot>, TourError> {
    let what = format!(
        "a tour of {} preset{}",
        stops.len(),
        if stops.len() == 1 { "" } else { "s" }
    );
    // Every stop is checked before the head moves: a reserved preset at the end must
    // not turn up after the first stops were visited.
    let refused = |e: PtzError| TourError {
        done: Vec::new(),
        error: e.into(),
    };
    for stop in stops {
        crate::ptz::check_preset(ctrl.config().protocol, stop.preset).map_err(refused)?;
    }
    let claim = ctrl.claim(&what).map_err(refused)?;
    let end = Instant::now() + MAX_TOUR;
    let mut done = Vec::with_capacity(stops.len());
    for stop in stops {
        let left = end.saturating_duration_since(Instant::now());
        let shot = Shot {
            preset: Some(stop.preset),
            params: stop.params,
            timeout: per_stop.min(left),
        };
        match take(camera, Head::Held(&claim), shot, cancel) {
            Ok(s) => done.push(s),
            Err(error) => return Err(TourError { done, error }),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(pan: i32) -> Position {
        Position {
            pan,
            tilt: 0,
            zoom: 0,
        }
    }

    #[test]
    fn the_head_settles_after_equal_answers_in_a_row() {
        let mut h = HeadSettle::default();
        assert!(!h.observe(pos(1)));
        assert!(!h.moved());
        assert!(!h.observe(pos(2)));
        assert!(h.moved());
        assert!(!h.observe(pos(2)));
        assert!(!h.observe(pos(3)), "a change starts the count again");
        assert!(!h.observe(pos(3)));
        assert!(h.observe(pos(3)));
        assert_eq!(h.position(), Some(pos(3)));
    }

    fn flat(v: u8) -> Thumb {
        Thumb::from_luma(&vec![v; 64 * 36], 64, 64, 36)
    }

    #[test]
    fn the_picture_settles_after_close_pairs_in_a_row() {
        let mut s = PictureSettle::default();
        // Hunting: brightness swings between pictures.
        for v in [100, 140, 60, 130, 90] {
            assert!(!s.observe(flat(v)));
        }
        assert!(s.last_distance.unwrap() > SETTLE_DISTANCE);
        assert!(!s.observe(flat(100)));
        assert!(!s.observe(flat(101)));
        assert!(!s.observe(flat(100)));
        assert!(s.observe(flat(101)), "three close pairs");
        let mut s = PictureSettle::default();
        for v in [100, 100, 100, 120, 120, 120] {
            assert!(!s.observe(flat(v)), "a jump restarts the count");
        }
        assert!(s.observe(flat(120)));
    }
}
