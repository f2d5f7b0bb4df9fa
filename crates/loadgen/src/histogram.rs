//! Fixed-size log-linear latency histogram.
//!
//! Values are microseconds. Each power-of-two range is split into `HALF` linear buckets, so
//! values below `2 * HALF` µs are exact and larger ones land in a bucket at most `1 / HALF`
//! (0.8 %) wide relative to its lower edge. Memory is fixed regardless of how many samples are
//! recorded, which keeps one histogram per connection task affordable.

use std::time::Duration;

/// Power-of-two ranges are split into `2^SUB_BITS` linear buckets.
const SUB_BITS: u32 = 7;
const HALF: u64 = 1 << SUB_BITS;
/// Samples above this (about 134 s) are clamped; the exact maximum is still tracked separately.
const MAX_BITS: u32 = 27;
const CLAMP_US: u64 = (1 << MAX_BITS) - 1;
const BUCKETS: usize = bucket_index(CLAMP_US) + 1;

/// Latency histogram with bounded relative error (< 1 %) and fixed memory.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max_us: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, max_us: 0 }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.record_micros(micros);
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.counts[bucket_index(micros.min(CLAMP_US))] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// Value at quantile `q` in `[0, 1]`: the highest value of the bucket holding the sample of
    /// rank `ceil(q * count)`, so it over-reports by less than one bucket width, never under.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.quantile_micros(q))
    }

    pub fn quantile_micros(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = quantile_rank(q, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen < rank {
                continue;
            }
            let clamped = index == BUCKETS - 1;
            return if clamped { self.max_us } else { bucket_high(index).min(self.max_us) };
        }
        self.max_us
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// 1-based rank of the sample at quantile `q`; clamped so `q = 0` means the minimum.
fn quantile_rank(q: f64, total: u64) -> u64 {
    let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
    let rank = (q * total as f64).ceil() as u64;
    rank.clamp(1, total)
}

const fn bucket_index(micros: u64) -> usize {
    let shift = octave_shift(micros);
    (shift as u64 * HALF + (micros >> shift)) as usize
}

/// How many low bits a value loses to its bucket: zero in the exact linear region.
const fn octave_shift(micros: u64) -> u32 {
    let bits = u64::BITS - micros.leading_zeros();
    bits.saturating_sub(SUB_BITS + 1)
}

/// Inverse of `bucket_index`: the highest value that maps to `index`.
fn bucket_high(index: usize) -> u64 {
    let index = index as u64;
    if index < 2 * HALF {
        return index;
    }
    let shift = (index / HALF - 1) as u32;
    let sub = index - u64::from(shift) * HALF;
    ((sub + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(from: u64, to: u64) -> Histogram {
        let mut hist = Histogram::new();
        for micros in from..=to {
            hist.record_micros(micros);
        }
        hist
    }

    fn assert_close(actual: u64, expected: u64) {
        let error = actual.abs_diff(expected) as f64 / expected as f64;
        assert!(error <= 0.01, "{actual} is not within 1% of {expected}");
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let hist = Histogram::new();
        assert_eq!(hist.quantile(0.99), Duration::ZERO);
        assert_eq!(hist.max(), Duration::ZERO);
        assert_eq!(hist.count(), 0);
    }

    #[test]
    fn small_values_are_exact() {
        let hist = uniform(1, 100);
        assert_eq!(hist.quantile_micros(0.5), 50);
        assert_eq!(hist.quantile_micros(0.99), 99);
        assert_eq!(hist.quantile_micros(0.999), 100);
        assert_eq!(hist.quantile_micros(0.0), 1);
        assert_eq!(hist.max(), Duration::from_micros(100));
    }

    #[test]
    fn uniform_distribution_percentiles_within_one_percent() {
        let hist = uniform(1, 100_000);
        assert_close(hist.quantile_micros(0.5), 50_000);
        assert_close(hist.quantile_micros(0.99), 99_000);
        assert_close(hist.quantile_micros(0.999), 99_900);
        assert_eq!(hist.quantile_micros(1.0), 100_000);
    }

    #[test]
    fn quantiles_never_under_report() {
        let hist = uniform(1, 100_000);
        for q in [0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
            let exact = (q * 100_000.0_f64).ceil() as u64;
            let reported = hist.quantile_micros(q);
            assert!(reported >= exact, "q={q}: {reported} < {exact}");
            assert_close(reported, exact);
        }
    }

    #[test]
    fn bimodal_distribution_separates_tail() {
        let mut hist = Histogram::new();
        for _ in 0..9_900 {
            hist.record(Duration::from_micros(200));
        }
        for _ in 0..100 {
            hist.record(Duration::from_millis(50));
        }
        assert_eq!(hist.quantile_micros(0.5), 200);
        assert_eq!(hist.quantile_micros(0.99), 200);
        assert_close(hist.quantile_micros(0.999), 50_000);
        assert_eq!(hist.max(), Duration::from_millis(50));
    }

    #[test]
    fn every_bucket_round_trips_within_error_bound() {
        for index in 0..BUCKETS {
            let high = bucket_high(index);
            assert_eq!(bucket_index(high), index);
            assert_eq!(bucket_index(high + 1), index + 1);
        }
        for micros in (0..CLAMP_US).step_by(9_973) {
            let high = bucket_high(bucket_index(micros));
            assert!(high >= micros);
            assert!((high - micros) as f64 <= micros as f64 / HALF as f64);
        }
    }

    #[test]
    fn huge_values_are_clamped_but_max_is_exact() {
        let mut hist = Histogram::new();
        hist.record(Duration::from_secs(3_600));
        assert_eq!(hist.max(), Duration::from_secs(3_600));
        assert_eq!(hist.quantile(0.5), Duration::from_secs(3_600));
    }

    #[test]
    fn merge_adds_counts_and_keeps_max() {
        let mut low = uniform(1, 50);
        let high = uniform(51, 100);
        low.merge(&high);
        assert_eq!(low.count(), 100);
        assert_eq!(low.quantile_micros(0.5), 50);
        assert_eq!(low.max(), Duration::from_micros(100));
    }
}
