//! The arithmetic of a subject's state, shared by both implementations: `lua/subject.lua` does
//! the same steps in Redis, so a change here must be made there too (the conformance suite runs
//! both against the same expectations).

use std::time::Duration;

use super::{Quota, Risk};

/// Buckets of the sliding window: `ban_window / BUCKETS` each.
pub const BUCKETS: usize = 10;

/// A GCRA rate in microseconds: one request every `interval_us`, up to `tolerance_us /
/// interval_us` (the burst) at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub interval_us: i64,
    pub tolerance_us: i64,
}

impl Gcra {
    /// None for an unlimited quota.
    pub fn of(quota: Quota) -> Option<Self> {
        if quota.per_second == 0 {
            return None;
        }
        let interval_us = (1_000_000 / i64::from(quota.per_second)).max(1);
        Some(Self { interval_us, tolerance_us: interval_us * i64::from(quota.burst.max(1)) })
    }

    /// One request at `now_us`: moves `arrival` on when allowed, or says how long until it
    /// would be. A `now_us` older than one already allowed counts as that one: requests of one
    /// subject reach the state out of the order their clocks were read in (concurrent requests,
    /// replicas whose clocks differ a little), and must not be refused for it.
    pub fn step(self, arrival: &mut Arrival, now_us: i64) -> Result<(), Duration> {
        let now_us = now_us.max(arrival.latest_us);
        let next = arrival.tat_us.max(now_us) + self.interval_us;
        let excess = next - now_us - self.tolerance_us;
        if excess > 0 {
            return Err(Duration::from_micros(excess.unsigned_abs()));
        }
        *arrival = Arrival { tat_us: next, latest_us: now_us };
        Ok(())
    }
}

/// A subject's GCRA state: its theoretical arrival time and the latest time a request of it
/// was allowed at (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub tat_us: i64,
    pub latest_us: i64,
}

impl Arrival {
    pub const NEW: Self = Self { tat_us: i64::MIN, latest_us: i64::MIN };
}

/// Requests and refusals of one subject per bucket, in a ring: slot `bucket % BUCKETS` holds the
/// counts of that bucket while it is one of the last `BUCKETS` buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    newest: i64,
    requests: [u32; BUCKETS],
    refused: [u32; BUCKETS],
}

fn slot(bucket: i64) -> usize {
    bucket.rem_euclid(BUCKETS as i64) as usize
}

impl Window {
    pub fn new(bucket: i64) -> Self {
        Self { newest: bucket, requests: [0; BUCKETS], refused: [0; BUCKETS] }
    }

    /// Counts a request in `bucket`; returns the requests now in the window.
    pub fn count_request(&mut self, bucket: i64) -> u32 {
        let slot = self.advance(bucket);
        self.requests[slot] = self.requests[slot].saturating_add(1);
        self.totals(bucket).requests
    }

    /// Forgets the requests counted so far (not the refusals): a ban settles them, so a subject
    /// whose ban ends or is lifted starts counting afresh instead of being banned again at once.
    pub fn forgive_requests(&mut self) {
        self.requests = [0; BUCKETS];
    }

    pub fn count_refused(&mut self, bucket: i64) {
        let slot = self.advance(bucket);
        self.refused[slot] = self.refused[slot].saturating_add(1);
    }

    /// The counts in the window that ends with `bucket`.
    pub fn totals(&self, bucket: i64) -> Risk {
        let age = bucket.saturating_sub(self.newest).max(0);
        let live = (BUCKETS as i64).saturating_sub(age).max(0);
        let mut risk = Risk::default();
        for back in 0..live {
            let slot = slot(self.newest - back);
            risk.requests = risk.requests.saturating_add(self.requests[slot]);
            risk.refused = risk.refused.saturating_add(self.refused[slot]);
        }
        risk
    }

    /// Whether every counted bucket has left the window at `bucket`.
    pub fn is_idle(&self, bucket: i64) -> bool {
        bucket.saturating_sub(self.newest) >= BUCKETS as i64
    }

    /// Moves the ring on to `bucket`, zeroing the buckets that left the window; returns the slot
    /// to count in. A bucket older than the newest (a caller whose clock is a little behind)
    /// counts in the newest.
    fn advance(&mut self, bucket: i64) -> usize {
        if self.is_idle(bucket) {
            *self = Self::new(bucket);
        }
        while self.newest < bucket {
            self.newest += 1;
            let slot = slot(self.newest);
            self.requests[slot] = 0;
            self.refused[slot] = 0;
        }
        slot(self.newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        let gcra = Gcra::of(Quota { per_second: 10, burst: 3 }).unwrap();
        let mut arrival = Arrival::NEW;
        for _ in 0..3 {
            gcra.step(&mut arrival, 1_000_000).expect("within the burst");
        }
        assert_eq!(gcra.step(&mut arrival, 1_000_000), Err(Duration::from_millis(100)));
        assert_eq!(gcra.step(&mut arrival, 1_060_000), Err(Duration::from_millis(40)));
        assert!(gcra.step(&mut arrival, 1_100_000).is_ok());
    }

    #[test]
    fn gcra_takes_a_burst_whose_clocks_were_read_out_of_order() {
        let gcra = Gcra::of(Quota { per_second: 1, burst: 4 }).unwrap();
        let mut arrival = Arrival::NEW;
        for now_us in [1_005_000, 1_000_000, 1_003_000, 1_001_000] {
            gcra.step(&mut arrival, now_us).expect("the burst of 4, whatever the order");
        }
        assert_eq!(gcra.step(&mut arrival, 1_002_000), Err(Duration::from_secs(1)));
        assert_eq!(arrival, Arrival { tat_us: 5_005_000, latest_us: 1_005_000 });
    }

    #[test]
    fn gcra_of_unlimited_or_zero_burst() {
        assert_eq!(Gcra::of(Quota::UNLIMITED), None);
        let one = Gcra::of(Quota { per_second: 4, burst: 0 }).unwrap();
        assert_eq!(one, Gcra { interval_us: 250_000, tolerance_us: 250_000 });
    }

    #[test]
    fn window_forgets_buckets_as_they_leave() {
        let mut window = Window::new(100);
        for bucket in 100..110 {
            assert_eq!(window.count_request(bucket), (bucket - 99) as u32);
        }
        assert_eq!(window.count_request(110), 10, "bucket 100 left as 110 came");
        window.count_refused(110);
        assert_eq!(window.totals(115), Risk { requests: 5, refused: 1 });
        assert_eq!(window.totals(119), Risk { requests: 1, refused: 1 });
        assert!(!window.is_idle(119));
        assert_eq!(window.totals(120), Risk::default());
        assert!(window.is_idle(120));
        assert_eq!(window.count_request(135), 1, "a long gap starts afresh");
    }

    #[test]
    fn window_counts_a_late_bucket_in_the_newest() {
        let mut window = Window::new(50);
        window.count_request(52);
        assert_eq!(window.count_request(51), 2);
        assert_eq!(window.totals(61), Risk { requests: 2, refused: 0 });
        assert_eq!(window.totals(62), Risk::default());
    }
}
