//! The time of day, as the node's services read it: expiry of invoices, timestamps of
//! payments, forwards and closed channels. Services take an `Arc<dyn Clock>` so that a test
//! advances a [`ManualClock`] instead of sleeping until an invoice expires.
//!
//! Durations (timeouts, retry delays) are not read here: they run on tokio's clock, which
//! tests pause and advance (`tokio::time::pause`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A future a clock returns.
pub type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Wall-clock time, injectable.
pub trait Clock: Send + Sync {
    /// Milliseconds since the UNIX epoch (0 before 1970).
    fn unix_ms(&self) -> u64;

    /// Seconds since the UNIX epoch (0 before 1970).
    fn unix_now(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// Nanoseconds since the UNIX epoch (what CLN keeps as a rune's `last_used`); clocks
    /// that only know milliseconds give those.
    fn unix_nanos(&self) -> u64 {
        self.unix_ms().saturating_mul(1_000_000)
    }

    /// Completes once this clock reads `unix_ms` or later.
    fn sleep_until(&self, unix_ms: u64) -> Wait<'_>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn unix_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn sleep_until(&self, unix_ms: u64) -> Wait<'_> {
        // The wall clock may be set back or forward meanwhile: sleep at most an hour at a
        // time, then look again.
        Box::pin(async move {
            loop {
                let now = self.unix_ms();
                if now >= unix_ms {
                    return;
                }
                let ms = (unix_ms - now).min(3_600_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        })
    }
}

/// A clock that moves only when told ([`ManualClock::advance`], [`ManualClock::set`]); what
/// sleeps on it wakes when it passes their time.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock reading `unix_ms`.
    pub fn at(unix_ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now_ms: watch::Sender::new(unix_ms),
        })
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.send_modify(|t| *t = t.saturating_add(ms));
    }

    /// Sets the clock (backwards too: a wall clock can be set back).
    pub fn set(&self, unix_ms: u64) {
        self.now_ms.send_replace(unix_ms);
    }
}

impl Clock for ManualClock {
    fn unix_ms(&self) -> u64 {
        *self.now_ms.borrow()
    }

    fn sleep_until(&self, unix_ms: u64) -> Wait<'_> {
        let mut rx = self.now_ms.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which this future borrows.
            let _ = rx.wait_for(|t| *t >= unix_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_passes_their_time() {
        let clock = ManualClock::at(10_000);
        assert_eq!(clock.unix_now(), 10);
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(12_500).await });
        clock.advance(Duration::from_secs(2));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke at 12.0 s for 12.5 s");
        clock.advance(Duration::from_millis(500));
        sleeper.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(clock.unix_ms(), 12_500);
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_until_its_time() {
        let c = SystemClock;
        let target = c.unix_ms() + 20;
        c.sleep_until(target).await;
        assert!(c.unix_ms() >= target);
    }
}
