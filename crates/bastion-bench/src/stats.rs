//! Latency samples and their summary: mean, nearest-rank percentiles, throughput.

use std::time::{Duration, Instant};

/// The one place the benchmark reads the wall clock.
#[expect(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
#[must_use]
pub fn now() -> Instant {
    Instant::now()
}

/// Per-operation latencies (nanoseconds) and the wall time of the whole run.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// One entry per operation, nanoseconds.
    pub nanos: Vec<u64>,
    /// Wall time from the first operation's start to the last one's end.
    pub wall: Duration,
}

impl Samples {
    /// Room for `n` samples.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(n),
            wall: Duration::ZERO,
        }
    }

    /// Records one operation that took `d`.
    pub fn push(&mut self, d: Duration) {
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Merges the samples of parallel workers; the wall time is set by the caller.
    pub fn extend(&mut self, other: &Self) {
        self.nanos.extend_from_slice(&other.nanos);
    }

    /// The summary.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        let sum: u128 = sorted.iter().map(|&x| u128::from(x)).sum();
        let mean = if n == 0 {
            0.0
        } else {
            to_f64(sum) / to_f64(n as u128)
        };
        let wall = self.wall.as_secs_f64();
        Summary {
            n,
            mean_ns: mean,
            p50_ns: percentile(&sorted, 50.0),
            p99_ns: percentile(&sorted, 99.0),
            max_ns: sorted.last().copied().unwrap_or(0),
            ops_per_sec: if wall > 0.0 {
                to_f64(n as u128) / wall
            } else {
                0.0
            },
        }
    }
}

/// Counts and nanosecond sums here are far below 2^52, so the conversion is exact enough.
fn to_f64(x: u128) -> f64 {
    x as f64
}

/// Nearest-rank percentile (`p` in 0..=100) of ascending `sorted`; 0 when empty.
#[must_use]
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (p / 100.0 * to_f64(n as u128)).ceil();
    // `rank` is in 0..=n.
    let rank = rank as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// What a table row shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Operations measured.
    pub n: usize,
    /// Mean latency, ns.
    pub mean_ns: f64,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile latency, ns.
    pub p99_ns: u64,
    /// Slowest operation, ns.
    pub max_ns: u64,
    /// Operations per second of wall time.
    pub ops_per_sec: f64,
}

/// A duration in ns, printed in µs below 1 ms and in ms above.
#[must_use]
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_throughput_uses_wall_time() {
        let mut s = Samples::with_capacity(4);
        for _ in 0..4 {
            s.push(Duration::from_millis(1));
        }
        s.wall = Duration::from_secs(2);
        let sum = s.summary();
        assert_eq!(sum.n, 4);
        assert!((sum.ops_per_sec - 2.0).abs() < 1e-9);
        assert_eq!(sum.p50_ns, 1_000_000);
        assert!((sum.mean_ns - 1_000_000.0).abs() < 1e-6);
    }

    #[test]
    fn formats_units() {
        assert_eq!(fmt_ns(4_500.0), "4.5 µs");
        assert_eq!(fmt_ns(2_500_000.0), "2.50 ms");
    }
}
