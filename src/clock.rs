//! `Clock`: the time that watchdogs, backoff and dead-man stops run on. In the product it
//! is the system's monotonic clock; in tests it is a manual clock the test advances, so
//! timing logic is tested without wall-clock sleeps (moonfire-nvr's `base/clock.rs` idea).
//!
//! A thread that waits "until a deadline or a message" calls [`Clock::recv_deadline`]
//! instead of `Receiver::recv_timeout`: on the system clock that is the same thing; on a
//! manual clock the wait ends when the test has advanced the clock past the deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

/// A monotonic clock: the system's, or a manual one for tests. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

/// The manual clock's state: a fixed origin plus the time the test has advanced, and
/// the waiters to wake when it moves.
struct Manual {
    origin: Instant,
    offset: Mutex<Duration>,
    waiters: Mutex<Vec<Sender<()>>>,
    /// How many times a waiter has parked (gone to sleep on this clock). A test reads it
    /// before advancing and awaits a larger value to know the waiter has looked at the
    /// new time and decided (see [`Clock::await_parked`]).
    parks: AtomicU64,
    parked: Condvar,
    parked_lock: Mutex<()>,
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock(Some(Arc::new(Manual {
            origin: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
            waiters: Mutex::new(Vec::new()),
            parks: AtomicU64::new(0),
            parked: Condvar::new(),
            parked_lock: Mutex::new(()),
        })))
    }

    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(m) => m.origin + *m.offset.lock(),
        }
    }

    /// Moves a manual clock forward and wakes every waiter. Panics on the system clock:
    /// only tests advance time.
    pub fn advance(&self, d: Duration) {
        let m = self
            .0
            .as_ref()
            .expect("only a manual clock can be advanced");
        *m.offset.lock() += d;
        m.waiters
            .lock()
            .retain(|w| !matches!(w.try_send(()), Err(TrySendError::Disconnected(()))));
    }

    /// How many times waiters have parked on this manual clock so far (0 on the system
    /// clock).
    pub fn parks(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |m| m.parks.load(Ordering::SeqCst))
    }

    /// Waits (on the wall clock, at most `limit`) until waiters have parked more than
    /// `after` times: after an [`advance`](Clock::advance), that means a waiter has
    /// looked at the new time and gone back to sleep. False if `limit` ran out.
    pub fn await_parked(&self, after: u64, limit: Duration) -> bool {
        let Some(m) = &self.0 else { return true };
        let deadline = Instant::now() + limit;
        let mut g = m.parked_lock.lock();
        while m.parks.load(Ordering::SeqCst) <= after {
            if m.parked.wait_until(&mut g, deadline).timed_out() {
                return m.parks.load(Ordering::SeqCst) > after;
            }
        }
        true
    }

    /// Receives from `rx`, or gives up once this clock reaches `deadline`.
    pub fn recv_deadline<T>(
        &self,
        rx: &Receiver<T>,
        deadline: Instant,
    ) -> Result<T, RecvTimeoutError> {
        let Some(m) = &self.0 else {
            return rx.recv_deadline(deadline);
        };
        let (tx, tick) = crossbeam_channel::bounded(1);
        m.waiters.lock().push(tx);
        loop {
            if let Ok(v) = rx.try_recv() {
                return Ok(v);
            }
            if self.now() >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            m.parks.fetch_add(1, Ordering::SeqCst);
            {
                let _g = m.parked_lock.lock();
                m.parked.notify_all();
            }
            select! {
                recv(rx) -> v => return v.map_err(|_| RecvTimeoutError::Disconnected),
                recv(tick) -> _ => {}
            }
        }
    }

    /// Receives from `rx`, or gives up after `timeout` on this clock.
    pub fn recv_timeout<T>(
        &self,
        rx: &Receiver<T>,
        timeout: Duration,
    ) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(rx, self.now() + timeout)
    }
}

/// Unix time in seconds, as a float: the wall clock, for capture times shown to clients
/// (never for timing decisions, which use [`Clock::now`]).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::system"),
            Some(m) => write!(f, "Clock::manual(+{:?})", *m.offset.lock()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = Clock::manual();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(3));
        assert_eq!(c.now() - t0, Duration::from_secs(3));
    }

    #[test]
    fn a_waiter_times_out_only_when_the_clock_passes_its_deadline() {
        let c = Clock::manual();
        let (_tx, rx) = crossbeam_channel::bounded::<()>(1);
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.recv_timeout(&rx, Duration::from_secs(1)))
        };
        assert!(
            c.await_parked(0, Duration::from_secs(10)),
            "waiter never parked"
        );
        let p = c.parks();
        c.advance(Duration::from_millis(999));
        assert!(
            c.await_parked(p, Duration::from_secs(10)),
            "waiter did not re-park"
        );
        assert!(!waiter.is_finished(), "timed out before its deadline");
        c.advance(Duration::from_millis(1));
        assert_eq!(waiter.join().unwrap(), Err(RecvTimeoutError::Timeout));
    }

    #[test]
    fn a_message_ends_the_wait() {
        let c = Clock::manual();
        let (tx, rx) = crossbeam_channel::bounded(1);
        tx.send(7).unwrap();
        assert_eq!(c.recv_timeout(&rx, Duration::from_secs(1)), Ok(7));
        let s = Clock::system();
        tx.send(8).unwrap();
        assert_eq!(s.recv_timeout(&rx, Duration::from_secs(1)), Ok(8));
    }
}
