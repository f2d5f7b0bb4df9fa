use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hyper::StatusCode;

use crate::histogram::Histogram;

/// Results of one measured phase; warm-up requests are not in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub name: String,
    /// Responses received (any status) for requests started in the measured window.
    pub requests: u64,
    /// Responses with the scenario's success status (200 for healthz, 201 for purchases).
    pub ok: u64,
    /// Non-2xx responses.
    pub errors: u64,
    /// Requests that got no response: connection reset, closed mid-request, timed out, or a
    /// failed reconnect. Not included in `requests`.
    pub io_errors: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub elapsed: Duration,
    /// `requests / elapsed`.
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Report {
    /// Throughput relative to `baseline`; NaN when the baseline did no work, so any threshold
    /// check on the ratio fails rather than passes.
    pub fn ratio_to(&self, baseline: &Report) -> f64 {
        if baseline.rps > 0.0 {
            self.rps / baseline.rps
        } else {
            f64::NAN
        }
    }

    /// Responses with the scenario's success status per second of the measured window.
    pub fn ok_per_second(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }

    pub fn line(&self) -> String {
        let mut line = format!(
            "{}: {} req in {} = {:.0} req/s, ok {}, non-2xx {}, io errors {}, p50 {} p99 {} p99.9 {} max {}",
            self.name,
            self.requests,
            human(self.elapsed),
            self.rps,
            self.ok,
            self.errors,
            self.io_errors,
            human(self.p50),
            human(self.p99),
            human(self.p999),
            human(self.max),
        );
        line.push_str(" [status");
        for (status, count) in &self.by_status {
            let _ = write!(line, " {status}:{count}");
        }
        line.push(']');
        line
    }
}

/// One connection task's counts, merged into a `Report` when the phase ends.
#[derive(Default)]
pub(crate) struct Tally {
    latencies: Histogram,
    by_status: BTreeMap<u16, u64>,
    io_errors: u64,
}

impl Tally {
    pub(crate) fn record(&mut self, status: StatusCode, latency: Duration) {
        self.latencies.record(latency);
        *self.by_status.entry(status.as_u16()).or_insert(0) += 1;
    }

    pub(crate) fn record_io_error(&mut self) {
        self.io_errors += 1;
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.latencies.merge(&other.latencies);
        for (status, count) in &other.by_status {
            *self.by_status.entry(*status).or_insert(0) += count;
        }
        self.io_errors += other.io_errors;
    }

    pub(crate) fn into_report(self, name: &str, ok_status: StatusCode, elapsed: Duration) -> Report {
        let requests = self.latencies.count();
        debug_assert_eq!(requests, self.by_status.values().sum::<u64>());
        Report {
            name: name.to_owned(),
            requests,
            ok: self.count_where(|status| status == ok_status.as_u16()),
            errors: self.count_where(|status| !(200..300).contains(&status)),
            io_errors: self.io_errors,
            rps: per_second(requests, elapsed),
            elapsed,
            p50: self.latencies.quantile(0.50),
            p99: self.latencies.quantile(0.99),
            p999: self.latencies.quantile(0.999),
            max: self.latencies.max(),
            by_status: self.by_status,
        }
    }

    fn count_where(&self, keep: impl Fn(u16) -> bool) -> u64 {
        let matching = self.by_status.iter().filter(|(status, _)| keep(**status));
        matching.map(|(_, count)| count).sum()
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn human(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.2}ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let mut tally = Tally::default();
        for _ in 0..3 {
            tally.record(StatusCode::CREATED, Duration::from_micros(200));
        }
        tally.record(StatusCode::CONFLICT, Duration::from_millis(2));
        tally.record_io_error();
        tally.into_report("purchases", StatusCode::CREATED, Duration::from_secs(2))
    }

    #[test]
    fn report_counts_ok_errors_and_statuses() {
        let report = sample_report();
        assert_eq!(report.requests, 4);
        assert_eq!(report.ok, 3);
        assert_eq!(report.errors, 1);
        assert_eq!(report.io_errors, 1);
        assert_eq!(report.by_status.get(&409), Some(&1));
        assert_eq!(report.rps, 2.0);
        assert_eq!(report.p50, Duration::from_micros(200));
        assert_eq!(report.max, Duration::from_millis(2));
    }

    #[test]
    fn line_shows_rate_percentiles_and_statuses() {
        let line = sample_report().line();
        assert!(line.starts_with("purchases: 4 req in 2.00s = 2 req/s"), "{line}");
        assert!(line.contains("p50 200µs"), "{line}");
        assert!(line.contains("max 2.00ms"), "{line}");
        assert!(line.ends_with("[status 201:3 409:1]"), "{line}");
    }

    #[test]
    fn ratio_is_relative_throughput() {
        let report = sample_report();
        let mut baseline = sample_report();
        baseline.rps = 8.0;
        assert_eq!(report.ratio_to(&baseline), 0.25);
        baseline.rps = 0.0;
        assert!(report.ratio_to(&baseline).is_nan());
    }
}
