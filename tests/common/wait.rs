//! Bounded waiting: poll a condition until it holds, with a clear failure message.

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` every 50 ms until it gives `Ok`; after `timeout` panics with `what` and
/// the last `Err` (what was seen instead).
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Result<T, String>) -> T {
    match try_wait_for(timeout, what, f) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`wait_for`], the timeout an `Err` instead of a panic.
pub fn try_wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(seen) if Instant::now() >= deadline => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The value of `f` once it has not changed for `quiet` (e.g. a thread count while
/// threads of finished work wind down); panics with `what` after `timeout`.
#[track_caller]
pub fn settled<T: PartialEq + Copy + std::fmt::Debug>(
    timeout: Duration,
    quiet: Duration,
    what: &str,
    f: impl FnMut() -> T,
) -> T {
    match try_settled(timeout, quiet, what, f) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`settled`], the timeout an `Err` instead of a panic.
pub fn try_settled<T: PartialEq + Copy + std::fmt::Debug>(
    timeout: Duration,
    quiet: Duration,
    what: &str,
    mut f: impl FnMut() -> T,
) -> Result<T, String> {
    let mut last = f();
    let mut since = Instant::now();
    try_wait_for(timeout, what, || {
        let v = f();
        if v != last {
            last = v;
            since = Instant::now();
        }
        if since.elapsed() >= quiet {
            Ok(v)
        } else {
            Err(format!("{v:?}, still changing"))
        }
    })
}
