//! The per-camera PTZ control thread (`ptz-{id}`): owns the camera's driver, runs its
//! commands one at a time in arrival order (a slow camera only delays itself), stops a
//! move that is not refreshed within [`DEADMAN`], retries a stop that failed, and keeps
//! the connection checked while idle.
//!
//! Those three timers run on an injected [`Clock`] (the system clock in the product, a
//! manual one in tests). The drivers' own network timeouts and a caller's wait for an
//! answer ([`REPLY_WAIT`]) are real time: they bound real I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use super::Position;
use super::{open_driver, PresetOp, Protocol, PtzCommand, PtzConfig, PtzDriver, PtzError, DEADMAN};
use crate::clock::Clock;
use crate::motion::{self, ViewMotion};
use crate::secret::Secret;

/// Requests waiting for the camera thread; beyond this a caller gets `Busy` rather than
/// queueing behind a dead camera.
const QUEUE: usize = 16;
/// How long a caller waits for the camera thread's answer. Longer than the worst driver
/// exchange (a CGI move with a digest round trip, or a VISCA reconnect plus a reply),
/// so a caller normally hears the driver's own verdict.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);
/// Idle time after which the driver's keep-alive runs (VISCA: a power inquiry).
const KEEPALIVE_EVERY: Duration = Duration::from_millis(1500);
/// Backoff between retries of a stop that failed.
const STOP_RETRY_MIN: Duration = Duration::from_millis(250);
const STOP_RETRY_MAX: Duration = Duration::from_secs(2);
/// A failed stop is retried this often before giving up (a camera gone for ~15 s has
/// lost its motion state anyway when it comes back).
const STOP_RETRIES: u32 = 10;

/// What the camera thread is asked to do.
enum Job {
    Command(PtzCommand),
    Position,
}

#[derive(Clone)]
enum Answer {
    Done,
    Position(Position),
}

/// Whether answering took a camera exchange.
enum Via {
    Camera,
    Local,
}

struct Request {
    job: Job,
    reply: Sender<Result<Answer, PtzError>>,
}

/// What the last exchange with the camera's control interface showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Nothing exchanged yet (HTTP-CGI has no keep-alive, so until the first command).
    Unknown,
    /// The last exchange succeeded.
    Up,
    /// The last exchange failed; `PtzHealth::last_error` says how.
    Down,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkState::Unknown => "unknown",
            LinkState::Up => "up",
            LinkState::Down => "down",
        })
    }
}

/// The camera's control channel, for status replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtzHealth {
    pub protocol: Protocol,
    pub port: u16,
    pub link: LinkState,
    /// The last failure, until an exchange succeeds again.
    pub last_error: Option<String>,
    /// The automated run holding the head now (a tour, a preset snapshot), if any.
    pub busy_with: Option<String>,
}

/// One camera's PTZ control: the owner of its `ptz-{id}` thread. Commands from any
/// number of API threads are serialised on that thread. Dropping the handle is enough
/// to end it: the thread sends a last stop if a move was active (or a stop is still
/// being retried), and `Drop` joins it. [`Controller::close`] does the same early, for
/// a handle that is shared (`Arc`) and must stop now.
pub struct Controller {
    camera_id: String,
    cfg: PtzConfig,
    /// `None` once stopped; dropping the sender is the thread's shutdown signal.
    tx: Mutex<Option<Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    health: Arc<Mutex<PtzHealth>>,
    /// Callers waiting for this camera now. Past [`MAX_WAITING`] a caller is answered
    /// Busy at once, so a hung camera holds at most that many API threads.
    waiting: std::sync::atomic::AtomicUsize,
    /// The automated run holding the head, if any (see [`Controller::claim`]).
    claim: Mutex<Option<Arc<ClaimState>>>,
    /// Until when the commands move the view (shared with the worker).
    motion: Arc<ViewMotion>,
}

/// What a [`Claim`] shares with its controller: what the run is, and why it was ended.
struct ClaimState {
    what: String,
    interrupted: Mutex<Option<String>>,
}

/// The head, held for an automated run (a tour, a settled snapshot) until dropped. Its
/// commands go to the camera like manual ones; a manual command through
/// [`Controller::command`] ends the claim, and the run's next command or
/// [`Claim::check`] answers [`PtzError::Interrupted`] saying so.
pub struct Claim<'a> {
    ctrl: &'a Controller,
    state: Arc<ClaimState>,
}

impl Claim<'_> {
    /// `Ok` while the claim holds; [`PtzError::Interrupted`] once a manual command ended it.
    pub fn check(&self) -> Result<(), PtzError> {
        match &*self.state.interrupted.lock() {
            Some(why) => Err(PtzError::Interrupted(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs a command for the run (see [`Controller::command`]), if the claim holds.
    pub fn command(&self, cmd: PtzCommand) -> Result<(), PtzError> {
        self.check()?;
        cmd.validate(self.ctrl.cfg.protocol)?;
        self.ctrl.ask(Job::Command(cmd)).map(|_| ())?;
        self.check()
    }

    /// The head's position (see [`Controller::position`]), if the claim holds.
    pub fn position(&self) -> Result<Position, PtzError> {
        self.check()?;
        let p = self.ctrl.position()?;
        self.check().map(|()| p)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut held = self.ctrl.claim.lock();
        if held.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.state)) {
            *held = None;
        }
    }
}

/// How many callers may wait on one camera at once: enough for a joystick over REST at
/// 10 Hz against a camera answering in 150 ms, few enough that a hung camera cannot tie
/// up the HTTP workers (other cameras and `/health` must stay responsive).
const MAX_WAITING: usize = 2;

/// Lowers the waiting count when a caller stops waiting, however it ends.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Controller {
    /// Starts the camera's control thread, its dead-man, stop-retry and keep-alive timers
    /// running on `clock` (the product passes [`Clock::system`]). Never blocks on the
    /// network: the thread connects on its own and reports failures through commands and
    /// [`Controller::health`].
    pub fn start(
        camera_id: &str,
        host: &str,
        cfg: PtzConfig,
        username: &str,
        password: &Secret,
        clock: Clock,
    ) -> Controller {
        let driver = open_driver(camera_id, host, cfg, username, password);
        Controller::with_driver(camera_id, cfg, driver, clock)
    }

    /// Starts the thread around a given driver (tests inject fakes here).
    pub fn with_driver(
        camera_id: &str,
        cfg: PtzConfig,
        driver: Box<dyn PtzDriver>,
        clock: Clock,
    ) -> Controller {
        let (tx, rx) = bounded(QUEUE);
        let motion = Arc::new(ViewMotion::default());
        let health = Arc::new(Mutex::new(PtzHealth {
            protocol: cfg.protocol,
            port: cfg.port,
            link: LinkState::Unknown,
            last_error: None,
            busy_with: None,
        }));
        let worker = Worker {
            id: camera_id.to_owned(),
            driver,
            rx,
            health: health.clone(),
            active: None,
            stop_retry: None,
            next_keepalive: clock.now(),
            clock,
            motion: Arc::clone(&motion),
        };
        let thread = thread::Builder::new()
            .name(format!("ptz-{camera_id}"))
            .spawn(move || worker.run())
            .map_err(|e| log::error!("{camera_id}: cannot start the PTZ thread: {e}"))
            .ok();
        Controller {
            camera_id: camera_id.to_owned(),
            cfg,
            tx: Mutex::new(thread.as_ref().map(|_| tx)),
            thread: Mutex::new(thread),
            health,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            claim: Mutex::new(None),
            motion,
        }
    }

    /// When this camera's view is being moved by its commands (for change watching).
    pub fn motion(&self) -> Arc<ViewMotion> {
        Arc::clone(&self.motion)
    }

    /// Claims the head for an automated run described by `what` (e.g. "a tour of 4
    /// presets"), until the [`Claim`] is dropped or a manual command ends it. One claim at
    /// a time: another answers [`PtzError::Claimed`].
    pub fn claim(&self, what: &str) -> Result<Claim<'_>, PtzError> {
        let mut held = self.claim.lock();
        if let Some(s) = held.as_ref() {
            return Err(PtzError::Claimed(s.what.clone()));
        }
        let state = Arc::new(ClaimState {
            what: what.to_owned(),
            interrupted: Mutex::new(None),
        });
        *held = Some(Arc::clone(&state));
        Ok(Claim { ctrl: self, state })
    }

    /// What holds the head now, if anything (see [`Controller::claim`]).
    pub fn claimed_by(&self) -> Option<String> {
        self.claim.lock().as_ref().map(|s| s.what.clone())
    }

    pub fn camera_id(&self) -> &str {
        &self.camera_id
    }

    pub fn config(&self) -> PtzConfig {
        self.cfg
    }

    pub fn health(&self) -> PtzHealth {
        let mut h = self.health.lock().clone();
        h.busy_with = self.claimed_by();
        h
    }

    fn ask(&self, job: Job) -> Result<Answer, PtzError> {
        let before = self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if before >= MAX_WAITING {
            return Err(PtzError::Busy);
        }
        let (reply, answer) = bounded(1);
        // Clone the sender and let go of the lock before waiting: the lock is never held
        // while the camera works, and close can always take the sender.
        let tx = self.tx.lock().clone().ok_or(PtzError::Closed)?;
        match tx.try_send(Request { job, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PtzError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(PtzError::Closed),
        }
        drop(tx);
        match answer.recv_timeout(REPLY_WAIT) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(PtzError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(PtzError::Closed),
        }
    }

    /// Runs a command and waits (up to [`REPLY_WAIT`]) for the camera's answer.
    /// A move equal to the running one only refreshes the dead-man timer; a different
    /// move replaces it.
    ///
    /// A manual command: it ends a running [`Claim`] (a tour stops where it is), which is
    /// how a user takes the head back from an automated run.
    pub fn command(&self, cmd: PtzCommand) -> Result<(), PtzError> {
        cmd.validate(self.cfg.protocol)?;
        if let Some(s) = self.claim.lock().take() {
            let why = format!(
                "{} was stopped by a manual PTZ command ({})",
                s.what,
                cmd.action()
            );
            log::info!("{}: {why}", self.camera_id);
            *s.interrupted.lock() = Some(why);
        }
        self.ask(Job::Command(cmd)).map(|_| ())
    }

    /// Asks the camera where it is (VISCA inquiries; CGI cannot).
    pub fn position(&self) -> Result<Position, PtzError> {
        match self.ask(Job::Position)? {
            Answer::Position(p) => Ok(p),
            Answer::Done => Err(PtzError::Camera("no position in the answer".into())),
        }
    }

    /// Stops the thread (after a last stop if a move was active) and joins it, before
    /// the handle is dropped: for a controller shared through an `Arc` that must end now
    /// (replaced or detached). Later calls answer [`PtzError::Closed`]. Idempotent;
    /// dropping the handle does the same.
    pub fn close(&self) {
        drop(self.tx.lock().take());
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            if h.join().is_err() {
                log::error!("{}: PTZ thread panicked", self.camera_id);
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.close();
    }
}

/// The running move and when it expires.
struct Active {
    velocity: (f64, f64, f64),
    deadline: Instant,
    /// The camera acknowledged it; if not, a refresh resends instead of just extending.
    acknowledged: bool,
}

/// A stop that failed and is retried.
struct StopRetry {
    at: Instant,
    delay: Duration,
    attempts: u32,
}

struct Worker {
    id: String,
    driver: Box<dyn PtzDriver>,
    rx: Receiver<Request>,
    health: Arc<Mutex<PtzHealth>>,
    active: Option<Active>,
    stop_retry: Option<StopRetry>,
    next_keepalive: Instant,
    /// What every timer above is read on.
    clock: Clock,
    /// Told of every command that moves the view.
    motion: Arc<ViewMotion>,
}

impl Worker {
    fn run(mut self) {
        log::debug!("{}: PTZ thread started", self.id);
        let mut pending: VecDeque<Request> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match self.clock.recv_deadline(&self.rx, self.next_wake()) {
                    Ok(r) => pending.push_back(r),
                    Err(RecvTimeoutError::Timeout) => {
                        self.on_timers(self.clock.now());
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            pending.extend(self.rx.try_iter());
            let Some(req) = pending.pop_front() else {
                continue;
            };
            // A move followed by other queued moves is superseded before it reaches the
            // camera: a joystick sends faster than a slow camera answers, and only the
            // newest velocity matters. Its caller gets the answer of the move that
            // replaced it (what the camera actually did).
            let mut req = req;
            let mut superseded = Vec::new();
            while matches!(req.job, Job::Command(PtzCommand::Move { .. }))
                && matches!(
                    pending.front(),
                    Some(Request {
                        job: Job::Command(PtzCommand::Move { .. }),
                        ..
                    })
                )
            {
                let next = pending.pop_front().expect("front was just matched");
                superseded.push(std::mem::replace(&mut req, next).reply);
            }
            let result = self.handle(req.job);
            // Callers may have given up waiting; that is fine.
            for reply in superseded {
                let _ = reply.send(result.clone());
            }
            let _ = req.reply.send(result);
            self.on_timers(self.clock.now());
        }
        if self.active.is_some() || self.stop_retry.is_some() {
            log::info!(
                "{}: PTZ control stopping; stopping the camera's move",
                self.id
            );
            let r = self.driver.stop();
            self.record(r.as_ref().err());
        }
        log::debug!("{}: PTZ thread stopped", self.id);
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_keepalive;
        if let Some(a) = &self.active {
            wake = wake.min(a.deadline);
        }
        if let Some(s) = &self.stop_retry {
            wake = wake.min(s.at);
        }
        wake
    }

    /// Notes the outcome of a camera exchange (`None`: it succeeded).
    fn record(&mut self, err: Option<&PtzError>) {
        let mut h = self.health.lock();
        match err {
            None => {
                h.link = LinkState::Up;
                h.last_error = None;
            }
            // Invalid and unsupported requests say nothing about the camera.
            Some(PtzError::Invalid(_) | PtzError::Unsupported(_)) => {}
            Some(e) => {
                h.link = LinkState::Down;
                h.last_error = Some(e.to_string());
            }
        }
    }

    fn handle(&mut self, job: Job) -> Result<Answer, PtzError> {
        let r = match job {
            Job::Position => self
                .driver
                .position()
                .map(|p| (Answer::Position(p), Via::Camera)),
            Job::Command(cmd) => self.command(cmd).map(|via| (Answer::Done, via)),
        };
        match r {
            // Answered without the camera (a refresh): says nothing about the link, and
            // must not hold off the keep-alive while a move is held for a long time.
            Ok((answer, Via::Local)) => Ok(answer),
            Ok((answer, Via::Camera)) => {
                self.record(None);
                self.next_keepalive = self.clock.now() + KEEPALIVE_EVERY;
                Ok(answer)
            }
            Err(e) => {
                self.record(Some(&e));
                self.next_keepalive = self.clock.now() + KEEPALIVE_EVERY;
                Err(e)
            }
        }
    }

    fn command(&mut self, cmd: PtzCommand) -> Result<Via, PtzError> {
        let camera = |r: Result<(), PtzError>| r.map(|()| Via::Camera);
        let hold = match cmd {
            PtzCommand::Move { .. } | PtzCommand::Stop => Some(motion::AFTER_MOVE),
            PtzCommand::Home
            | PtzCommand::Preset {
                op: PresetOp::Goto, ..
            } => Some(motion::AFTER_RECALL),
            PtzCommand::Preset {
                op: PresetOp::Save, ..
            } => None,
        };
        if let Some(hold) = hold {
            self.motion.moved(self.clock.now(), hold);
        }
        match cmd {
            // All zero ends the continuous move. With none running it is a no-op: a
            // joystick at rest sends zeros, and they must not cut a preset recall short.
            // An explicit Stop always goes out.
            PtzCommand::Move { pan, tilt, zoom } if pan == 0.0 && tilt == 0.0 && zoom == 0.0 => {
                if self.active.is_some() || self.stop_retry.is_some() {
                    camera(self.stop("move with all velocities 0"))
                } else {
                    Ok(Via::Local)
                }
            }
            PtzCommand::Move { pan, tilt, zoom } => {
                let now = self.clock.now();
                if let Some(a) = &mut self.active {
                    if a.velocity == (pan, tilt, zoom) && a.acknowledged {
                        a.deadline = now + DEADMAN;
                        return Ok(Via::Local);
                    }
                }
                self.stop_retry = None;
                let r = self.driver.move_continuous(pan, tilt, zoom);
                // Armed even when the camera did not answer: it may have moved anyway,
                // and the dead-man stop must then still go out.
                self.active = Some(Active {
                    velocity: (pan, tilt, zoom),
                    deadline: self.clock.now() + DEADMAN,
                    acknowledged: r.is_ok(),
                });
                camera(r)
            }
            PtzCommand::Stop => camera(self.stop("stop requested")),
            PtzCommand::Home => {
                self.settle();
                camera(self.driver.home())
            }
            PtzCommand::Preset {
                op: PresetOp::Goto,
                index,
            } => {
                self.settle();
                camera(self.driver.preset_goto(index))
            }
            PtzCommand::Preset {
                op: PresetOp::Save,
                index,
            } => camera(self.driver.preset_save(index)),
        }
    }

    /// Before a home or preset recall: stop a running move (the recall moves pan and
    /// tilt, but a running zoom would go on), and disarm the dead-man, whose stop would
    /// otherwise cut the recall's travel short.
    fn settle(&mut self) {
        let moving = self.active.take().is_some();
        let unstopped = self.stop_retry.take().is_some();
        if moving || unstopped {
            if let Err(e) = self.driver.stop() {
                log::warn!("{}: PTZ stop before recall failed: {e}", self.id);
            }
        }
    }

    fn stop(&mut self, why: &str) -> Result<(), PtzError> {
        self.active = None;
        let r = self.driver.stop();
        match &r {
            Ok(()) => {
                log::debug!("{}: PTZ stopped ({why})", self.id);
                self.stop_retry = None;
            }
            Err(e) => {
                log::warn!(
                    "{}: PTZ stop ({why}) failed: {e}; retrying in {} ms",
                    self.id,
                    STOP_RETRY_MIN.as_millis()
                );
                self.stop_retry = Some(StopRetry {
                    at: self.clock.now() + STOP_RETRY_MIN,
                    delay: STOP_RETRY_MIN,
                    attempts: 1,
                });
            }
        }
        r
    }

    fn on_timers(&mut self, now: Instant) {
        if self.active.as_ref().is_some_and(|a| now >= a.deadline) {
            log::info!(
                "{}: PTZ move not refreshed for {} ms; stopping it",
                self.id,
                DEADMAN.as_millis()
            );
            self.motion.moved(now, motion::AFTER_MOVE);
            let r = self.stop("dead-man");
            self.record(r.as_ref().err());
            self.next_keepalive = self.clock.now() + KEEPALIVE_EVERY;
            return;
        }
        if let Some(s) = &self.stop_retry {
            if now >= s.at {
                let (delay, attempts) = (s.delay, s.attempts);
                let r = self.driver.stop();
                self.record(r.as_ref().err());
                match r {
                    Ok(()) => {
                        log::info!("{}: PTZ stop succeeded on retry {attempts}", self.id);
                        self.stop_retry = None;
                    }
                    Err(e) if attempts >= STOP_RETRIES => {
                        log::warn!("{}: PTZ stop still failing ({e}); giving up", self.id);
                        self.stop_retry = None;
                    }
                    Err(_) => {
                        let delay = (delay * 2).min(STOP_RETRY_MAX);
                        self.stop_retry = Some(StopRetry {
                            at: self.clock.now() + delay,
                            delay,
                            attempts: attempts + 1,
                        });
                    }
                }
                self.next_keepalive = self.clock.now() + KEEPALIVE_EVERY;
                return;
            }
        }
        if now >= self.next_keepalive {
            if let Some(r) = self.driver.keepalive() {
                self.record(r.as_ref().err());
            }
            self.next_keepalive = self.clock.now() + KEEPALIVE_EVERY;
        }
    }
}

/// Every camera's controller, by camera id. Replacing or removing one stops and joins
/// its thread outside the map's lock.
#[derive(Default)]
pub struct Controllers {
    map: Mutex<HashMap<String, Arc<Controller>>>,
    /// Given to every controller started here.
    clock: Clock,
}

impl Controllers {
    /// Controllers whose timers run on the system clock.
    pub fn new() -> Controllers {
        Controllers::default()
    }

    /// Controllers whose timers run on `clock`.
    pub fn with_clock(clock: Clock) -> Controllers {
        Controllers {
            map: Mutex::default(),
            clock,
        }
    }

    /// Starts control of a camera, replacing (and stopping) any previous controller
    /// for the same id.
    pub fn attach(
        &self,
        id: &str,
        host: &str,
        cfg: PtzConfig,
        username: &str,
        password: &Secret,
    ) -> Arc<Controller> {
        let ctrl = Arc::new(Controller::start(
            id,
            host,
            cfg,
            username,
            password,
            self.clock.clone(),
        ));
        let old = self.map.lock().insert(id.to_owned(), ctrl.clone());
        if let Some(old) = old {
            old.close();
        }
        ctrl
    }

    /// Stops control of a camera; `false` if it had none.
    pub fn detach(&self, id: &str) -> bool {
        let old = self.map.lock().remove(id);
        match old {
            Some(c) => {
                c.close();
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Controller>> {
        self.map.lock().get(id).cloned()
    }

    /// Stops every controller (a last stop for moving cameras) and joins the threads.
    pub fn shutdown(&self) {
        let all: Vec<Arc<Controller>> = self.map.lock().drain().map(|(_, c)| c).collect();
        for c in all {
            c.close();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The controller against a recording driver, its timers on a manual clock: the
    //! test moves time and waits (bounded, on the wall clock) until the `ptz-fake`
    //! thread has looked at the new time and gone back to sleep (`Clock::await_parked`),
    //! then asserts what reached the driver. No wall-clock sleeps decide an outcome.

    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// The longest the test waits for the PTZ thread to react (a loaded 2-core box).
    const WAIT: Duration = Duration::from_secs(10);
    const MS: Duration = Duration::from_millis(1);

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Move(f64, f64, f64),
        Stop,
        Home,
        Goto(u8),
        Save(u8),
        Position,
        Keepalive,
    }

    type Calls = Arc<Mutex<Vec<Call>>>;

    /// Records calls; `delay` makes every call slow (a slow camera), `fail_stops` fails
    /// that many stops; `dropped` is set when the driver is dropped, which happens when
    /// the thread that owns it has ended.
    struct Fake {
        calls: Calls,
        delay: Duration,
        fail_stops: u32,
        dropped: Arc<AtomicBool>,
    }

    impl Fake {
        fn call(&mut self, c: Call) {
            self.calls.lock().push(c);
            thread::sleep(self.delay);
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl PtzDriver for Fake {
        fn move_continuous(&mut self, p: f64, t: f64, z: f64) -> Result<(), PtzError> {
            self.call(Call::Move(p, t, z));
            Ok(())
        }
        fn stop(&mut self) -> Result<(), PtzError> {
            self.call(Call::Stop);
            if self.fail_stops > 0 {
                self.fail_stops -= 1;
                return Err(PtzError::Timeout);
            }
            Ok(())
        }
        fn home(&mut self) -> Result<(), PtzError> {
            self.call(Call::Home);
            Ok(())
        }
        fn preset_goto(&mut self, i: u8) -> Result<(), PtzError> {
            self.call(Call::Goto(i));
            Ok(())
        }
        fn preset_save(&mut self, i: u8) -> Result<(), PtzError> {
            self.call(Call::Save(i));
            Ok(())
        }
        fn position(&mut self) -> Result<Position, PtzError> {
            self.call(Call::Position);
            Ok(Position {
                pan: 1,
                tilt: 2,
                zoom: 3,
            })
        }
        fn keepalive(&mut self) -> Option<Result<(), PtzError>> {
            self.call(Call::Keepalive);
            Some(Ok(()))
        }
    }

    /// A controller around a fake driver on a manual clock, its thread parked (it ran
    /// the first keep-alive and sleeps until the clock moves or a command comes).
    struct Rig {
        c: Controller,
        calls: Calls,
        clock: Clock,
        dropped: Arc<AtomicBool>,
    }

    fn rig(delay: Duration, fail_stops: u32) -> Rig {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicBool::new(false));
        let clock = Clock::manual();
        let cfg = PtzConfig::new(Protocol::ViscaTcp, None).unwrap();
        let d = Fake {
            calls: calls.clone(),
            delay,
            fail_stops,
            dropped: dropped.clone(),
        };
        let c = Controller::with_driver("fake", cfg, Box::new(d), clock.clone());
        assert!(
            clock.await_parked(0, WAIT),
            "the PTZ thread never went to sleep"
        );
        Rig {
            c,
            calls,
            clock,
            dropped,
        }
    }

    impl Rig {
        /// Runs a command and waits until the thread has gone back to sleep after it
        /// (so it has also looked at its timers).
        fn command(&self, cmd: PtzCommand) -> Result<(), PtzError> {
            let p = self.clock.parks();
            let r = self.c.command(cmd);
            assert!(
                self.clock.await_parked(p, WAIT),
                "the PTZ thread did not go back to sleep after {cmd:?}"
            );
            r
        }

        /// Moves the clock on and waits until the thread has looked at the new time
        /// and gone back to sleep.
        fn advance(&self, d: Duration) {
            let p = self.clock.parks();
            self.clock.advance(d);
            assert!(
                self.clock.await_parked(p, WAIT),
                "the PTZ thread did not look at the clock after {d:?}"
            );
        }

        /// What reached the driver, keep-alives left out.
        fn calls(&self) -> Vec<Call> {
            self.calls
                .lock()
                .iter()
                .filter(|c| **c != Call::Keepalive)
                .cloned()
                .collect()
        }

        fn stops(&self) -> usize {
            self.calls().iter().filter(|c| **c == Call::Stop).count()
        }
    }

    fn mv(pan: f64) -> PtzCommand {
        PtzCommand::Move {
            pan,
            tilt: 0.0,
            zoom: 0.0,
        }
    }

    #[test]
    fn refresh_costs_no_io_and_new_move_replaces() {
        let r = rig(Duration::ZERO, 0);
        r.command(mv(0.5)).unwrap();
        r.command(mv(0.5)).unwrap();
        r.command(mv(0.5)).unwrap();
        r.command(mv(-0.5)).unwrap();
        r.command(PtzCommand::Stop).unwrap();
        assert_eq!(
            r.calls(),
            vec![
                Call::Move(0.5, 0.0, 0.0),
                Call::Move(-0.5, 0.0, 0.0),
                Call::Stop
            ]
        );
        assert_eq!(r.c.position().unwrap().zoom, 3);
    }

    #[test]
    fn deadman_stops_exactly_once_at_the_deadline() {
        let r = rig(Duration::ZERO, 0);
        r.command(mv(0.5)).unwrap();
        r.advance(DEADMAN - MS);
        assert_eq!(r.calls(), vec![Call::Move(0.5, 0.0, 0.0)], "stopped early");
        r.advance(MS);
        assert_eq!(
            r.calls(),
            vec![Call::Move(0.5, 0.0, 0.0), Call::Stop],
            "no dead-man stop at the deadline"
        );
        assert_eq!(r.c.health().link, LinkState::Up);
        // Once stopped, nothing more goes out however long nobody speaks.
        r.advance(DEADMAN * 10);
        assert_eq!(r.stops(), 1, "{:?}", r.calls());
    }

    #[test]
    fn refresh_rearms_the_deadman() {
        let r = rig(Duration::ZERO, 0);
        r.command(mv(0.5)).unwrap();
        r.advance(DEADMAN * 6 / 10);
        r.command(mv(0.5)).unwrap();
        // Past the first move's deadline: the refresh holds it.
        r.advance(DEADMAN * 6 / 10);
        r.advance(DEADMAN * 4 / 10 - MS);
        assert_eq!(r.calls(), vec![Call::Move(0.5, 0.0, 0.0)]);
        // One deadline after the refresh.
        r.advance(MS);
        assert_eq!(r.calls(), vec![Call::Move(0.5, 0.0, 0.0), Call::Stop]);
        // A different move is a new move, with its own full deadline.
        r.command(mv(0.2)).unwrap();
        r.advance(DEADMAN / 2);
        r.command(mv(0.3)).unwrap();
        r.advance(DEADMAN - MS);
        assert_eq!(r.stops(), 1, "{:?}", r.calls());
        r.advance(MS);
        assert_eq!(r.stops(), 2, "{:?}", r.calls());
    }

    #[test]
    fn zero_move_ends_a_move_and_recall_stops_a_move_first() {
        let r = rig(Duration::ZERO, 0);
        // Nothing running: a zero move is a no-op.
        r.command(mv(0.0)).unwrap();
        r.command(mv(0.3)).unwrap();
        // Running: a zero move stops it.
        r.command(mv(0.0)).unwrap();
        r.command(mv(0.3)).unwrap();
        r.command(PtzCommand::Preset {
            op: PresetOp::Goto,
            index: 4,
        })
        .unwrap();
        // A joystick at rest during the recall does not interrupt it.
        r.command(mv(0.0)).unwrap();
        r.command(PtzCommand::Home).unwrap();
        r.command(PtzCommand::Preset {
            op: PresetOp::Save,
            index: 5,
        })
        .unwrap();
        // An explicit stop always goes out.
        r.command(PtzCommand::Stop).unwrap();
        let expected = vec![
            Call::Move(0.3, 0.0, 0.0),
            Call::Stop,
            Call::Move(0.3, 0.0, 0.0),
            Call::Stop,
            Call::Goto(4),
            Call::Home,
            Call::Save(5),
            Call::Stop,
        ];
        assert_eq!(r.calls(), expected);
        // No dead-man stop after a recall.
        r.command(mv(0.3)).unwrap();
        r.command(PtzCommand::Home).unwrap();
        r.advance(DEADMAN * 3);
        let mut expected = expected;
        expected.extend([Call::Move(0.3, 0.0, 0.0), Call::Stop, Call::Home]);
        assert_eq!(r.calls(), expected);
    }

    #[test]
    fn reserved_preset_is_refused_before_the_thread() {
        let r = rig(Duration::ZERO, 0);
        let e =
            r.c.command(PtzCommand::Preset {
                op: PresetOp::Goto,
                index: 95,
            })
            .unwrap_err();
        assert!(matches!(e, PtzError::Invalid(_)));
        assert!(r.calls().is_empty());
    }

    /// A joystick faster than a slow camera: at most MAX_WAITING callers wait, the rest
    /// are told Busy at once, and no more moves reach the camera than were waited for.
    #[test]
    fn queued_moves_are_bounded() {
        // Every camera exchange takes 100 ms (real time: it stands for the network).
        let r = rig(Duration::from_millis(100), 0);
        let c = Arc::new(r.c);
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let c = c.clone();
                thread::spawn(move || c.command(mv(0.1 * (i + 1) as f64)))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || *r == Err(PtzError::Busy)),
            "{results:?}"
        );
        let busy = results.iter().filter(|r| r.is_err()).count();
        let moves = r
            .calls
            .lock()
            .iter()
            .filter(|c| matches!(c, Call::Move(..)))
            .count();
        assert!(
            moves >= 1 && moves <= 6 - busy,
            "{moves} moves, {results:?}"
        );
        c.command(PtzCommand::Stop).unwrap();
    }

    /// Many callers at once against a camera that takes long: never more than
    /// MAX_WAITING wait, so some are told Busy.
    #[test]
    fn a_hung_camera_holds_at_most_max_waiting_callers() {
        let r = rig(Duration::from_millis(400), 0);
        let c = Arc::new(r.c);
        let start = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (c, start) = (c.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    c.command(PtzCommand::Home)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let busy = results
            .iter()
            .filter(|r| **r == Err(PtzError::Busy))
            .count();
        assert_eq!(ok + busy, 8, "{results:?}");
        assert!(ok <= MAX_WAITING * 2 && busy >= 1, "{results:?}");
    }

    /// A stop that fails is retried on a doubling backoff (250 ms, 500 ms, 1 s, then
    /// every 2 s), STOP_RETRIES times, and then given up.
    #[test]
    fn failed_stop_is_retried_with_backoff_then_given_up() {
        let r = rig(Duration::ZERO, u32::MAX);
        r.command(mv(1.0)).unwrap();
        assert_eq!(r.command(PtzCommand::Stop), Err(PtzError::Timeout));
        assert_eq!(r.c.health().link, LinkState::Down);
        let mut expected = vec![250, 500, 1000];
        expected.resize(STOP_RETRIES as usize, 2000);
        for (i, ms) in expected.into_iter().enumerate() {
            let before = r.stops();
            r.advance(Duration::from_millis(ms) - MS);
            assert_eq!(r.stops(), before, "retry {} came before {ms} ms", i + 1);
            r.advance(MS);
            assert_eq!(r.stops(), before + 1, "retry {} not at {ms} ms", i + 1);
        }
        // Given up: no more stops.
        r.advance(STOP_RETRY_MAX * 10);
        assert_eq!(r.stops(), 1 + STOP_RETRIES as usize);
    }

    #[test]
    fn failed_stop_retry_succeeds_and_link_comes_back() {
        let r = rig(Duration::ZERO, 2);
        r.command(mv(1.0)).unwrap();
        assert_eq!(r.command(PtzCommand::Stop), Err(PtzError::Timeout));
        r.advance(STOP_RETRY_MIN);
        assert_eq!(r.stops(), 2);
        assert_eq!(r.c.health().link, LinkState::Down);
        r.advance(STOP_RETRY_MIN * 2);
        assert_eq!(r.stops(), 3);
        assert_eq!(r.c.health().link, LinkState::Up);
        r.advance(STOP_RETRY_MAX * 10);
        assert_eq!(r.stops(), 3, "{:?}", r.calls());
    }

    /// The dead-man's stop fails too: it is retried like a requested one.
    #[test]
    fn failed_deadman_stop_is_retried() {
        let r = rig(Duration::ZERO, 1);
        r.command(mv(0.4)).unwrap();
        r.advance(DEADMAN);
        assert_eq!(r.stops(), 1);
        assert_eq!(r.c.health().link, LinkState::Down);
        r.advance(STOP_RETRY_MIN);
        assert_eq!(r.stops(), 2);
        assert_eq!(r.c.health().link, LinkState::Up);
    }

    /// The keep-alive runs after KEEPALIVE_EVERY of idleness, and a held move (refreshes
    /// answered locally) does not hold it off.
    #[test]
    fn keepalive_runs_when_idle() {
        let r = rig(Duration::ZERO, 0);
        let keepalives = || {
            r.calls
                .lock()
                .iter()
                .filter(|c| **c == Call::Keepalive)
                .count()
        };
        assert_eq!(keepalives(), 1, "the first look at the connection");
        r.advance(KEEPALIVE_EVERY - MS);
        assert_eq!(keepalives(), 1);
        r.advance(MS);
        assert_eq!(keepalives(), 2);
        // A move (a camera exchange) puts the next keep-alive one period after it;
        // refreshes of the move do not push it further.
        r.command(mv(0.3)).unwrap();
        r.advance(KEEPALIVE_EVERY / 2);
        r.command(mv(0.3)).unwrap();
        r.advance(KEEPALIVE_EVERY / 2 - MS);
        assert_eq!(keepalives(), 2);
        r.advance(MS);
        assert_eq!(keepalives(), 3, "a held move held off the keep-alive");
        r.command(PtzCommand::Stop).unwrap();
    }

    #[test]
    fn closing_stops_a_moving_camera_and_answers_closed() {
        let r = rig(Duration::ZERO, 0);
        r.command(mv(1.0)).unwrap();
        r.c.close();
        assert_eq!(r.calls().last(), Some(&Call::Stop));
        assert!(r.dropped.load(Ordering::SeqCst), "thread still running");
        assert_eq!(r.c.command(PtzCommand::Stop), Err(PtzError::Closed));
        r.c.close();
    }

    /// Dropping the handle alone stops the moving head and ends the thread: when `drop`
    /// returns, the last stop went out and the driver (owned by the thread) is gone.
    #[test]
    fn dropping_the_handle_stops_the_head_and_joins_the_thread() {
        let r = rig(Duration::ZERO, 0);
        r.command(mv(1.0)).unwrap();
        let Rig {
            c, calls, dropped, ..
        } = r;
        drop(c);
        assert!(dropped.load(Ordering::SeqCst), "thread still running");
        assert_eq!(calls.lock().last(), Some(&Call::Stop));
        // Still (no move): no stop on drop.
        let r = rig(Duration::ZERO, 0);
        r.command(PtzCommand::Home).unwrap();
        let Rig {
            c, calls, dropped, ..
        } = r;
        drop(c);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(calls.lock().last(), Some(&Call::Home));
    }

    #[test]
    fn controllers_map() {
        let all = Controllers::with_clock(Clock::manual());
        let cfg = PtzConfig::new(Protocol::ViscaUdp, Some(9)).unwrap();
        let a = all.attach("a", "127.0.0.1", cfg, "", &Secret::default());
        assert!(all.get("a").is_some());
        let b = all.attach("a", "127.0.0.1", cfg, "", &Secret::default());
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.command(PtzCommand::Stop), Err(PtzError::Closed));
        assert!(all.detach("a"));
        assert!(!all.detach("a"));
        assert!(all.get("a").is_none());
        all.attach("c", "127.0.0.1", cfg, "", &Secret::default());
        all.shutdown();
        assert!(all.get("c").is_none());
    }
}
