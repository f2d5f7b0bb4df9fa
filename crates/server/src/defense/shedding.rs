//! Load shedding: a bound on requests in flight and on how long one may wait for a place. A
//! request that cannot start in time is answered `503 overloaded` with `Retry-After` at once, so
//! the requests that are admitted keep their latency and goodput holds under overload instead of
//! every request slowing down together. The check runs in the first layer behind the router
//! (`telemetry::front`), for every route but the health check, metrics and the dashboard; under
//! sustained overload the connection loop refuses before routing (`refuse_early`).
//!
//! The wait for a place adapts, as in CoDel: a burst may wait up to `max_wait`, but once the
//! queue has not been empty for a whole `max_wait` (a standing queue: the server is overloaded,
//! not merely busy for a moment), requests wait at most `CONGESTED_WAIT`. Under sustained
//! overload a FIFO queue with the full bound would make every admitted request wait nearly the
//! whole bound, since the place it gets is the one the oldest waiter freed; the short bound keeps
//! admitted requests fast and turns the rest away sooner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::error::ApiError;

/// The wait for a place while the queue stands.
const CONGESTED_WAIT: Duration = Duration::from_millis(5);

pub struct Shedder {
    in_flight: Semaphore,
    max_wait: Duration,
    /// Time origin of `last_empty`.
    epoch: Instant,
    /// Microseconds after `epoch` when a request last found a place without waiting.
    last_empty: AtomicU64,
}

impl Shedder {
    pub fn new(max_in_flight: usize, max_wait: Duration) -> Self {
        Self {
            in_flight: Semaphore::new(max_in_flight.max(1)),
            max_wait,
            epoch: Instant::now(),
            last_empty: AtomicU64::new(0),
        }
    }

    /// A place for one more request, waiting at most the current queue bound; 503 `overloaded`
    /// when none came free in time.
    pub(crate) async fn place(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        let now = self.micros(Instant::now());
        if let Ok(permit) = self.in_flight.try_acquire() {
            self.last_empty.fetch_max(now, Ordering::Relaxed);
            return Ok(permit);
        }
        let wait = self.wait_bound(now);
        match tokio::time::timeout(wait, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(at_capacity()),
        }
    }

    /// Whether a request arriving now should be turned away before any work is spent on it
    /// (routing, extractors): the queue stands and no place is free. The connection loop asks
    /// this first, so under sustained overload a refusal costs little more than reading the
    /// request and writing the answer; everything else still goes through `place`.
    pub(crate) fn refuse_early(&self) -> bool {
        self.in_flight.available_permits() == 0 && self.wait_bound(self.micros(Instant::now())) < self.max_wait
    }

    /// `max_wait`, or the short bound once the queue has stood for longer than `max_wait` (never
    /// longer than `max_wait` itself, so with a bound under `CONGESTED_WAIT` nothing changes).
    fn wait_bound(&self, now: u64) -> Duration {
        let standing = Duration::from_micros(now.saturating_sub(self.last_empty.load(Ordering::Relaxed)));
        if standing > self.max_wait {
            CONGESTED_WAIT.min(self.max_wait)
        } else {
            self.max_wait
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }
}

/// The refusal of a request the shedder has no place for, wherever it is turned away.
pub(crate) fn at_capacity() -> ApiError {
    ApiError::overloaded("the server is at capacity, retry shortly")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_the_full_bound_but_a_standing_queue_only_the_short_one() {
        let shedder = Arc::new(Shedder::new(1, Duration::from_millis(100)));
        let held = shedder.place().await.expect("a free place");

        // A burst: the queue has been empty a moment ago, so a request waits the whole bound.
        let started = Instant::now();
        assert!(shedder.place().await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(100));

        // Still full, and no request has found a free place for longer than the bound: the
        // queue stands, so the next request waits only the short bound.
        tokio::time::advance(Duration::from_millis(1)).await;
        let started = Instant::now();
        assert!(shedder.place().await.is_err());
        assert_eq!(started.elapsed(), CONGESTED_WAIT);
        assert!(shedder.refuse_early(), "a standing queue with no free place refuses at once");

        // A place that comes free within the short bound is still taken.
        let waiting = tokio::spawn({
            let shedder = Arc::clone(&shedder);
            async move {
                let started = Instant::now();
                let placed = shedder.place().await.map(drop).is_ok();
                (placed, started.elapsed())
            }
        });
        tokio::time::advance(Duration::from_millis(2)).await;
        drop(held);
        let (placed, waited) = waiting.await.expect("task");
        assert!(placed, "the freed place goes to the waiter");
        assert!(waited <= CONGESTED_WAIT, "{waited:?}");

        // Once a request finds a place without waiting, bursts get the full bound again.
        let held = shedder.place().await.expect("a free place");
        assert!(!shedder.refuse_early(), "a burst is not refused early");
        let started = Instant::now();
        assert!(shedder.place().await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        drop(held);
    }
}
