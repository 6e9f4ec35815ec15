//! `Histogram`: a lock-free distribution of durations, updated by whoever owns the data
//! (a camera's JPEG service, its viewers' sends) and read at scrape time by `metrics`.
//! Fixed buckets, so it never grows; recording is a few atomic adds, no lock, no
//! allocation. It knows nothing of Prometheus: `metrics` turns a [`Snapshot`] into text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds (seconds) for how long a JPEG encode takes: a small preview on a fast
/// core is a millisecond or two, a full 1080p picture on a Pi tens of milliseconds.
pub const ENCODE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Bucket bounds (seconds) for a picture's age as it goes out to a viewer (capture to
/// send): a LAN viewer of a live camera is within a frame or two, a slow one later.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Counts of observations per bucket (not cumulative; the last bucket is everything
/// above the largest bound) and their sum in nanoseconds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// What a histogram held at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `(upper bound in seconds, observations in this bucket)`, not cumulative; the last
    /// bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// The number of observations (the sum of the buckets' counts).
    pub count: u64,
    /// The sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// A histogram with these upper bounds (seconds, increasing) plus one for the rest.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds increase");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts now. Taken without a lock while others record: a reader may see an
    /// observation in its bucket before its sum, never a count that does not add up.
    pub fn snapshot(&self) -> Snapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        Snapshot {
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(10)); // on the bound: le="0.01"
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(0.01, 2), (0.1, 1), (f64::INFINITY, 1)],
            "{s:?}"
        );
        assert_eq!(s.count, 4);
        assert!((s.sum - 3.065).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn empty() {
        let s = Histogram::new(LATENCY_BUCKETS).snapshot();
        assert_eq!(s.count, 0);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.sum, 0.0);
    }
}
