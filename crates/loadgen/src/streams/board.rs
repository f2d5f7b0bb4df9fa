//! What the subscribers tell the conductor: one arrival slot each, and counts of how opening
//! went. Atomics rather than channels, so a subscriber's report costs no allocation and the
//! conductor reads all of them in one pass.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::histogram::Histogram;

pub(super) struct Board {
    base: Instant,
    /// Nanoseconds after `base` (plus one) at which each subscriber got its first message since
    /// the last `arm`; 0 while it has none.
    arrivals: Box<[AtomicU64]>,
    opened: AtomicUsize,
    failed: AtomicUsize,
    /// Subscribers whose stream ended after it had opened (the server closed it).
    dropped: AtomicUsize,
    // std Mutex: written once per failed subscriber, read once at the end; never across await.
    first_error: Mutex<Option<String>>,
}

/// Arrivals after one change, relative to the moment it was sent.
pub(super) struct Delivery {
    pub(super) latencies: Histogram,
    /// Messages that arrived after `arm` but before the change was sent: not caused by it.
    pub(super) early: usize,
}

impl Board {
    pub(super) fn new(subscribers: usize) -> Self {
        Self {
            base: Instant::now(),
            arrivals: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            opened: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Subscriber `index` got a message now; only its first since `arm` counts.
    pub(super) fn arrived(&self, index: usize) {
        let now = self.nanos(Instant::now());
        let _ = self.arrivals[index].compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(super) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(error);
    }

    pub(super) fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn opened_count(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    pub(super) fn failed_count(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Subscribers that opened and are still connected.
    pub(super) fn live(&self) -> usize {
        self.opened_count().saturating_sub(self.dropped.load(Ordering::Relaxed))
    }

    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Forgets every arrival, so the next message of each subscriber is recorded.
    pub(super) fn arm(&self) {
        for arrival in self.arrivals.iter() {
            arrival.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn reached(&self) -> usize {
        self.arrivals.iter().filter(|arrival| arrival.load(Ordering::Relaxed) != 0).count()
    }

    pub(super) fn delivery_since(&self, sent: Instant) -> Delivery {
        let sent = self.nanos(sent);
        let mut delivery = Delivery { latencies: Histogram::new(), early: 0 };
        for arrival in self.arrivals.iter() {
            let at = arrival.load(Ordering::Relaxed);
            match at {
                0 => {}
                at if at < sent => delivery.early += 1,
                at => delivery.latencies.record(Duration::from_nanos(at - sent)),
            }
        }
        delivery
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_first_arrival_after_arm_counts() {
        let board = Board::new(3);
        board.arrived(0);
        board.arm();
        let sent = Instant::now();
        board.arrived(1);
        let first = board.arrivals[1].load(Ordering::Relaxed);
        board.arrived(1);
        assert_eq!(board.arrivals[1].load(Ordering::Relaxed), first);
        assert_eq!(board.reached(), 1);
        let delivery = board.delivery_since(sent);
        assert_eq!(delivery.latencies.count(), 1);
        assert_eq!(delivery.early, 0);
    }

    #[test]
    fn counts_opened_failed_and_dropped() {
        let board = Board::new(2);
        board.opened();
        board.opened();
        board.dropped();
        board.failed("refused".to_owned());
        board.failed("later".to_owned());
        assert_eq!((board.opened_count(), board.live(), board.failed_count()), (2, 1, 2));
        assert_eq!(board.first_error().as_deref(), Some("refused"));
    }
}
