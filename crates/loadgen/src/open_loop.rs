//! Open-loop load: requests fall due at a fixed rate whatever the server does, the way a crowd
//! arrives, and are sent over a pool of keep-alive connections (HTTP/1.1: one request in flight
//! each).
//!
//! Slot `i` is due at `start + i / rate`. An idle connection claims the next slot and sends it
//! when it falls due, so idle connections always hold the earliest slots. A slot claimed more
//! than `LATE_LIMIT` after it fell due found every connection busy: it is not sent and is
//! counted as such, rather than sent late in a burst. Latency is taken from the slot's due time
//! (so a slow server cannot hide its queue by slowing the generator down: no coordinated
//! omission) and also from the moment the request was actually written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::conn::{self, Conn};
use crate::histogram::Histogram;
use crate::runner::connect_all;
use crate::workload::Workload;
use crate::LoadError;

/// Shape of one open-loop run.
#[derive(Clone, Debug)]
pub struct OpenLoop {
    /// Requests offered per second.
    pub rate: f64,
    /// Connections in the pool. It bounds the requests in flight, so it must exceed the rate
    /// times the latency under load, or requests go unsent.
    pub connections: usize,
    /// Measured window, after warm-up.
    pub duration: Duration,
    /// Load offered before measuring; excluded from the report.
    pub warmup: Duration,
}

/// Results of one open-loop run; slots due during warm-up are not in it.
#[derive(Clone, Debug)]
pub struct OpenLoopReport {
    pub name: String,
    pub offered_rate: f64,
    pub connections: usize,
    /// Requests due in the measured window.
    pub scheduled: u64,
    /// Due requests not sent because every connection was busy.
    pub not_sent: u64,
    /// Sent requests that got no answer (reset, closed, timed out, failed reconnect).
    pub io_errors: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Answers with the scenario's success status.
    pub ok: u64,
    /// `503` answers: shed by the server.
    pub shed: u64,
    /// When the measured window began (the first due time in it), so other figures can be
    /// taken over the same window.
    pub window_start: std::time::Instant,
    /// The measured window.
    pub elapsed: Duration,
    /// Answers other than 503, from the slot's due time.
    pub accepted_from_due: Histogram,
    /// Answers other than 503, from the moment the request was sent.
    pub accepted_from_send: Histogram,
    /// 503 answers, from the moment the request was sent: how fast shedding answers.
    pub shed_from_send: Histogram,
}

/// A slot claimed later than this after it fell due found no connection free.
pub const LATE_LIMIT: Duration = Duration::from_millis(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Shared histograms, each behind its own lock: one histogram per connection would cost
/// tens of kilobytes times thousands of connections.
const SHARDS: usize = 16;
/// Room to connect the pool and spawn its tasks before the first slot falls due.
const LEAD_IN: Duration = Duration::from_millis(50);

struct Schedule {
    start: Instant,
    nanos_per_slot: f64,
    record_from: Instant,
    end: Instant,
    next: AtomicU64,
}

#[derive(Default)]
struct Latencies {
    accepted_from_due: Histogram,
    accepted_from_send: Histogram,
    shed_from_send: Histogram,
}

/// What one connection task counted.
#[derive(Default)]
struct Counts {
    by_status: BTreeMap<u16, u64>,
    io_errors: u64,
    not_sent: u64,
}

struct Worker {
    id: usize,
    addr: SocketAddr,
    schedule: Arc<Schedule>,
    workload: Arc<Workload>,
    latencies: Arc<[Mutex<Latencies>]>,
    counts: Counts,
    seq: u64,
}

impl OpenLoopReport {
    /// Successful answers per second of the measured window.
    pub fn goodput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Requests that were sent and answered.
    pub fn answered(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Answers other than 503.
    pub fn accepted(&self) -> u64 {
        self.answered() - self.shed
    }

    pub fn line(&self) -> String {
        let ms = |histogram: &Histogram, q: f64| histogram.quantile(q).as_secs_f64() * 1e3;
        let mut line = format!(
            "{} open loop: offered {:.0}/s over {} connections for {:.1}s: {} due, {} not sent (all connections \
             busy), {} io errors, {} answered ({} shed 503); goodput {:.0}/s; accepted p50/p99/p99.9 from due \
             {:.2}/{:.2}/{:.2} ms, from send {:.2}/{:.2}/{:.2} ms; shed p50/p99 from send {:.2}/{:.2} ms",
            self.name,
            self.offered_rate,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.scheduled,
            self.not_sent,
            self.io_errors,
            self.answered(),
            self.shed,
            self.goodput(),
            ms(&self.accepted_from_due, 0.5),
            ms(&self.accepted_from_due, 0.99),
            ms(&self.accepted_from_due, 0.999),
            ms(&self.accepted_from_send, 0.5),
            ms(&self.accepted_from_send, 0.99),
            ms(&self.accepted_from_send, 0.999),
            ms(&self.shed_from_send, 0.5),
            ms(&self.shed_from_send, 0.99),
        );
        line.push_str(" [status");
        for (status, count) in &self.by_status {
            let _ = write!(line, " {status}:{count}");
        }
        line.push(']');
        line
    }
}

/// Offers `workload` at `open.rate` over `open.connections` connections; connection `i` goes
/// to `addrs[i % addrs.len()]`.
pub(crate) async fn run_open_loop(
    name: &str,
    addrs: &[SocketAddr],
    open: &OpenLoop,
    workload: Workload,
) -> Result<OpenLoopReport, LoadError> {
    validate(open)?;
    if addrs.is_empty() {
        return Err(LoadError::InvalidScenario("at least one server address is needed"));
    }
    let conns = connect_all(addrs, open.connections).await?;
    let ok_status = workload.ok_status();
    let schedule = Arc::new(Schedule::new(open, Instant::now() + LEAD_IN));
    let latencies: Arc<[Mutex<Latencies>]> = (0..SHARDS).map(|_| Mutex::default()).collect();
    let workload = Arc::new(workload);
    let mut workers = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let worker = Worker {
            id,
            addr: addrs[id % addrs.len()],
            schedule: Arc::clone(&schedule),
            workload: Arc::clone(&workload),
            latencies: Arc::clone(&latencies),
            counts: Counts::default(),
            seq: 0,
        };
        workers.spawn(worker.run(conn));
    }
    let counts = join_all(&mut workers).await?;
    Ok(report(name, open, &schedule, counts, &latencies, ok_status))
}

pub(crate) fn validate(open: &OpenLoop) -> Result<(), LoadError> {
    let valid_rate = open.rate.is_finite() && open.rate > 0.0;
    if !valid_rate {
        return Err(LoadError::InvalidScenario("the offered rate must be above 0"));
    }
    if open.connections == 0 {
        return Err(LoadError::InvalidScenario("connections must be at least 1"));
    }
    Ok(())
}

/// Dropping the `JoinSet` on an early return aborts the remaining tasks, so none outlive us.
async fn join_all(workers: &mut JoinSet<Counts>) -> Result<Counts, LoadError> {
    let mut total = Counts::default();
    while let Some(joined) = workers.join_next().await {
        let counts = joined.map_err(LoadError::Worker)?;
        for (status, count) in counts.by_status {
            *total.by_status.entry(status).or_insert(0) += count;
        }
        total.io_errors += counts.io_errors;
        total.not_sent += counts.not_sent;
    }
    Ok(total)
}

fn report(
    name: &str,
    open: &OpenLoop,
    schedule: &Schedule,
    counts: Counts,
    latencies: &[Mutex<Latencies>],
    ok_status: StatusCode,
) -> OpenLoopReport {
    let mut merged = Latencies::default();
    for shard in latencies {
        // Every worker has finished, so nothing else holds these locks; a poisoned shard's
        // data is still valid counts.
        let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        merged.accepted_from_due.merge(&shard.accepted_from_due);
        merged.accepted_from_send.merge(&shard.accepted_from_send);
        merged.shed_from_send.merge(&shard.shed_from_send);
    }
    let count_of = |status: StatusCode| counts.by_status.get(&status.as_u16()).copied().unwrap_or(0);
    OpenLoopReport {
        name: name.to_owned(),
        offered_rate: open.rate,
        connections: open.connections,
        scheduled: schedule.slots_in_window(),
        not_sent: counts.not_sent,
        io_errors: counts.io_errors,
        ok: count_of(ok_status),
        shed: count_of(StatusCode::SERVICE_UNAVAILABLE),
        by_status: counts.by_status,
        window_start: schedule.record_from.into_std(),
        elapsed: open.duration,
        accepted_from_due: merged.accepted_from_due,
        accepted_from_send: merged.accepted_from_send,
        shed_from_send: merged.shed_from_send,
    }
}

impl Schedule {
    fn new(open: &OpenLoop, start: Instant) -> Self {
        let record_from = start + open.warmup;
        Self { start, nanos_per_slot: 1e9 / open.rate, record_from, end: record_from + open.duration, next: 0.into() }
    }

    fn due(&self, slot: u64) -> Instant {
        self.start + Duration::from_nanos((slot as f64 * self.nanos_per_slot) as u64)
    }

    /// Slots due in `[record_from, end)`.
    fn slots_in_window(&self) -> u64 {
        let first = (self.record_from - self.start).as_nanos() as f64 / self.nanos_per_slot;
        let end = (self.end - self.start).as_nanos() as f64 / self.nanos_per_slot;
        (end.ceil() - first.ceil()) as u64
    }
}

impl Worker {
    async fn run(mut self, mut conn: Conn) -> Counts {
        while let Some(due) = self.claim() {
            sleep_until(due).await;
            self.exchange(&mut conn, due).await;
        }
        self.counts
    }

    /// The next slot this connection sends, skipping (and counting) those nobody was free for;
    /// `None` once the schedule is over.
    fn claim(&mut self) -> Option<Instant> {
        let now = Instant::now();
        loop {
            let due = self.schedule.due(self.schedule.next.fetch_add(1, Ordering::Relaxed));
            if due >= self.schedule.end {
                return None;
            }
            if due + LATE_LIMIT >= now {
                return Some(due);
            }
            if due >= self.schedule.record_from {
                self.counts.not_sent += 1;
            }
        }
    }

    async fn exchange(&mut self, conn: &mut Conn, due: Instant) {
        let measured = due >= self.schedule.record_from;
        if !self.ensure_open(conn).await {
            self.io_error(measured);
            return;
        }
        let request = self.workload.request(self.id, self.seq);
        self.seq += 1;
        let sent = Instant::now();
        match timeout(REQUEST_TIMEOUT, conn.send(request)).await {
            Ok(Ok(status)) if measured => self.record(status, due, sent),
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                conn.close();
                self.io_error(measured);
            }
        }
    }

    /// Makes `conn` ready for a request, reconnecting once if the server closed it meanwhile.
    async fn ensure_open(&mut self, conn: &mut Conn) -> bool {
        if conn.is_open() && matches!(timeout(REQUEST_TIMEOUT, conn.ready()).await, Ok(Ok(()))) {
            return true;
        }
        match conn::connect(self.addr).await {
            Ok(fresh) => *conn = fresh,
            Err(_) => return false,
        }
        matches!(timeout(REQUEST_TIMEOUT, conn.ready()).await, Ok(Ok(())))
    }

    fn record(&mut self, status: StatusCode, due: Instant, sent: Instant) {
        let now = Instant::now();
        *self.counts.by_status.entry(status.as_u16()).or_insert(0) += 1;
        let shard = &self.latencies[self.id % SHARDS];
        // A std mutex: held to bump two counters, never across an await.
        let mut latencies = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            latencies.shed_from_send.record(now.saturating_duration_since(sent));
        } else {
            latencies.accepted_from_due.record(now.saturating_duration_since(due));
            latencies.accepted_from_send.record(now.saturating_duration_since(sent));
        }
    }

    fn io_error(&mut self, measured: bool) {
        if measured {
            self.counts.io_errors += 1;
        }
    }
}
