//! Time, passed in. Nothing in Bastion reads the wall clock except [`SystemClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch (UTC), signed so that arithmetic around the epoch is safe.
pub type UnixTime = i64;

/// A source of the current time in whole seconds since the Unix epoch.
///
/// Expiry, TTLs, throttling windows and TOTP steps all read from a `Clock`, so tests can
/// pin time with [`FixedClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, seconds since 1970-01-01T00:00:00Z.
    fn now(&self) -> UnixTime;
}

/// A clock shared across tasks.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads the wall clock"
    )]
    fn now(&self) -> UnixTime {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // A wall clock before 1970 is a broken host; report the epoch rather than panic.
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to. For tests and simulations.
#[derive(Debug, Clone)]
pub struct FixedClock(Arc<AtomicI64>);

impl FixedClock {
    /// A clock standing at `t` seconds since the epoch.
    #[must_use]
    pub fn new(t: UnixTime) -> Self {
        Self(Arc::new(AtomicI64::new(t)))
    }

    /// Moves the clock forward (or back, with a negative value) by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: UnixTime) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let c = FixedClock::new(1_000);
        assert_eq!(c.now(), 1_000);
        c.advance(30);
        assert_eq!(c.now(), 1_030);
        c.set(5);
        assert_eq!(c.now(), 5);
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now() > 1_700_000_000);
    }
}
