//! Telemetry: the Prometheus metrics behind `GET /metrics`, and the per-second request figures
//! the dashboard charts.
//!
//! Metrics go through the `metrics` facade (the engine records its own: journal commits, hold
//! expiries) into one process-wide Prometheus recorder, installed the first time a server with
//! metrics on is built. Labels are bounded: routes are the router's patterns (never the raw
//! path), methods and statuses come from small fixed sets, outcomes are error codes; no label
//! ever carries a user. Per-sale and per-auction figures are not recorder metrics at all: they
//! are rendered at scrape time from the live board (`board.rs`), which forgets sales and
//! auctions once they are over, so ended ones do not pile up as series forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Seconds; request latency and journal commit latency.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Records per journal commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

pub const HTTP_REQUESTS: &str = "stampede_http_requests_total";
pub const HTTP_DURATION: &str = "stampede_http_request_duration_seconds";
pub const PURCHASES: &str = "stampede_purchases_total";
pub const BIDS: &str = "stampede_bids_total";
pub const DEFENSE_REFUSALS: &str = "stampede_defense_refusals_total";
pub const QUEUE_ADMISSIONS: &str = "stampede_queue_admissions_total";

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use.
fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = builder()
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "metric buckets refused; histograms render as summaries");
                    PrometheusBuilder::new()
                })
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows only the live figures");
            }
            describe();
            handle
        })
        .clone()
}

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(stampede_engine::telemetry::JOURNAL_BATCH.to_owned()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(stampede_engine::telemetry::SINK_BATCH.to_owned()), BATCH_BUCKETS)
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route pattern, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to the response head, by route pattern and status");
    describe_counter!(PURCHASES, "Purchase requests by outcome: held, replayed, or the error code");
    describe_counter!(BIDS, "Bids by outcome: leading, outbid, replayed, or the error code");
    describe_counter!(DEFENSE_REFUSALS, "Requests refused by the traffic defense, by reason");
    describe_counter!(QUEUE_ADMISSIONS, "Users let out of waiting rooms");
    stampede_engine::telemetry::describe();
}

/// What the server measures; one per `AppState`.
pub struct Telemetry {
    prometheus: Option<PrometheusHandle>,
    window: RequestWindow,
    /// The recorder's handles, looked up once per label set: building a key and finding it in
    /// the recorder's registry on every request cost more than the rest of the bookkeeping.
    routes: RwLock<HashMap<Box<str>, Vec<RouteHandles>>>,
    outcomes: RwLock<HashMap<(&'static str, &'static str), Counter>>,
}

/// One route's handles for one method and status.
struct RouteHandles {
    method: &'static str,
    status: &'static str,
    requests: Counter,
    duration: Histogram,
}

impl Telemetry {
    /// Metrics on (installs the recorder once per process) or off (nothing recorded, no
    /// `/metrics`; the dashboard's charts stay empty).
    pub fn new(on: bool) -> Self {
        Self {
            prometheus: on.then(prometheus),
            window: RequestWindow::default(),
            routes: RwLock::default(),
            outcomes: RwLock::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.prometheus.is_some()
    }

    /// The recorder's metrics in the Prometheus text format, after its periodic upkeep.
    pub(crate) fn render(&self) -> Option<String> {
        let prometheus = self.prometheus.as_ref()?;
        prometheus.run_upkeep();
        Some(prometheus.render())
    }

    /// Keeps the recorder's histograms compact between scrapes.
    pub(crate) fn upkeep(&self) {
        if let Some(prometheus) = &self.prometheus {
            prometheus.run_upkeep();
        }
    }

    fn request(&self, route: &str, method: &'static str, status: StatusCode, elapsed: Duration) {
        let status_label = status_label(status);
        let seconds = elapsed.as_secs_f64();
        self.window.record(status, elapsed);
        let record = |handles: &RouteHandles| {
            handles.requests.increment(1);
            handles.duration.record(seconds);
        };
        {
            let routes = self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = routes.get(route).and_then(|list| {
                list.iter().find(|handles| handles.method == method && handles.status == status_label)
            });
            if let Some(handles) = known {
                return record(handles);
            }
        }
        let owned = route.to_owned();
        let handles = RouteHandles {
            method,
            status: status_label,
            requests: metrics::counter!(HTTP_REQUESTS, "route" => owned.clone(), "method" => method, "status" => status_label),
            duration: metrics::histogram!(HTTP_DURATION, "route" => owned, "status" => status_label),
        };
        record(&handles);
        let mut routes = self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.entry(Box::from(route)).or_default().push(handles);
    }

    /// Counts one `outcome` of `metric` (only where metrics are on).
    fn outcome(&self, metric: &'static str, label: &'static str, outcome: &'static str) {
        if !self.enabled() {
            return;
        }
        {
            let outcomes = self.outcomes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(counter) = outcomes.get(&(metric, outcome)) {
                return counter.increment(1);
            }
        }
        let counter = metrics::counter!(metric, label => outcome);
        counter.increment(1);
        let mut outcomes = self.outcomes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        outcomes.insert((metric, outcome), counter);
    }

    /// A purchase request's outcome.
    pub(crate) fn purchase(&self, outcome: &'static str) {
        self.outcome(PURCHASES, "outcome", outcome);
        if outcome == "held" && self.enabled() {
            self.window.purchases.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn bid(&self, outcome: &'static str) {
        self.outcome(BIDS, "outcome", outcome);
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.outcome(DEFENSE_REFUSALS, "reason", reason);
    }

    pub(crate) fn admitted(&self, users: u64) {
        if self.enabled() && users > 0 {
            metrics::counter!(QUEUE_ADMISSIONS).increment(users);
        }
    }

    /// The figures since the last call, which starts the next second.
    pub(crate) fn take_second(&self) -> Second {
        self.window.take()
    }
}

/// Routes never shed: what an operator needs to see an overload.
const NEVER_SHED: [&str; 3] = ["/healthz", "/metrics", "/dashboard"];

/// The refusal of a request the shedder turns away before routing (see
/// `Shedder::refuse_early`), counted like one refused in `front`; `None` lets it through.
pub(crate) fn refuse_early<B>(state: &AppState, request: &hyper::Request<B>) -> Option<Response> {
    if NEVER_SHED.contains(&request.uri().path()) || !state.shedder.refuse_early() {
        return None;
    }
    let response = crate::defense::shedding::at_capacity().into_response();
    state.telemetry.refused("overloaded");
    if state.telemetry.enabled() {
        state.telemetry.request(SHED_ROUTE, method_label(request.method()), response.status(), Duration::ZERO);
    }
    Some(response)
}

/// The route label of requests refused before routing.
const SHED_ROUTE: &str = "(shed)";

/// The first layer behind the router (so the matched route pattern is known; unknown paths
/// count as `unmatched`): sheds what may be shed, then counts every answer when metrics are on.
/// One layer for both, since each layer costs every request.
pub async fn front(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let sheddable = route.as_ref().is_some_and(|route| !NEVER_SHED.contains(&route.as_str()));
    let place = if sheddable { Some(state.shedder.place().await) } else { None };
    let response = match place {
        Some(Err(refusal)) => {
            state.telemetry.refused("overloaded");
            refusal.into_response()
        }
        Some(Ok(permit)) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        None => next.run(request).await,
    };
    if state.telemetry.enabled() {
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        state.telemetry.request(route, method, response.status(), start.elapsed());
    }
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The statuses this server answers with, as static labels; anything else by class.
const STATUS_LABELS: [(u16, &str); 14] = [
    (101, "101"),
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (409, "409"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (503, "503"),
];

fn status_label(status: StatusCode) -> &'static str {
    let code = status.as_u16();
    match STATUS_LABELS.iter().find(|(known, _)| *known == code) {
        Some((_, label)) => label,
        None => match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// Latency buckets of the dashboard's window: bucket `i` holds latencies up to `GROWTH^i` µs.
const GROWTH: f64 = 1.1;
const WINDOW_BUCKETS: usize = 200;

/// One second of requests for the dashboard: counts by kind and a log-scale latency histogram
/// (10 % wide buckets, so the percentiles it gives are within 10 %).
struct RequestWindow {
    ok: AtomicU64,
    rejected: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    purchases: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Default for RequestWindow {
    fn default() -> Self {
        Self {
            ok: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            purchases: AtomicU64::new(0),
            latency: (0..WINDOW_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The request figures of one second, as the dashboard charts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Second {
    /// Answers other than the ones counted below.
    pub ok: u64,
    /// 4xx answers: refused requests (sold out, limits, bad input, …).
    pub rejected: u64,
    /// 503 answers: shed or unavailable.
    pub shed: u64,
    /// Other 5xx answers.
    pub errors: u64,
    /// Purchases that made a hold.
    pub purchases: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl RequestWindow {
    fn record(&self, status: StatusCode, elapsed: Duration) {
        let counter = match status.as_u16() {
            503 => &self.shed,
            500..=599 => &self.errors,
            400..=499 => &self.rejected,
            _ => &self.ok,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> Second {
        let counts: Vec<u64> = self.latency.iter().map(|bucket| bucket.swap(0, Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        Second {
            ok: self.ok.swap(0, Ordering::Relaxed),
            rejected: self.rejected.swap(0, Ordering::Relaxed),
            shed: self.shed.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            purchases: self.purchases.swap(0, Ordering::Relaxed),
            p50_ms: quantile(&counts, total, 0.50),
            p99_ms: quantile(&counts, total, 0.99),
        }
    }
}

fn bucket_of(elapsed: Duration) -> usize {
    let micros = elapsed.as_micros().max(1) as f64;
    (micros.ln() / GROWTH.ln()).ceil().clamp(0.0, (WINDOW_BUCKETS - 1) as f64) as usize
}

/// The upper bound (ms) of the bucket holding the `q` quantile; 0 for an empty window.
fn quantile(counts: &[u64], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return GROWTH.powi(index as i32) / 1000.0;
        }
    }
    GROWTH.powi(counts.len() as i32 - 1) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_by_kind_and_gives_percentiles_within_a_bucket() {
        let window = RequestWindow::default();
        for _ in 0..98 {
            window.record(StatusCode::CREATED, Duration::from_millis(2));
        }
        window.record(StatusCode::CONFLICT, Duration::from_millis(40));
        window.record(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(400));
        window.purchases.fetch_add(98, Ordering::Relaxed);
        let second = window.take();
        assert_eq!((second.ok, second.rejected, second.shed, second.errors, second.purchases), (98, 1, 1, 0, 98));
        assert!((2.0..2.2).contains(&second.p50_ms), "{second:?}");
        assert!((40.0..44.0).contains(&second.p99_ms), "{second:?}");
        assert_eq!(window.take(), Second::default(), "taking starts the next second afresh");
    }

    #[test]
    fn buckets_cover_a_microsecond_to_minutes() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert!(bucket_of(Duration::from_secs(60)) < WINDOW_BUCKETS - 1);
        assert_eq!(bucket_of(Duration::from_secs(100_000)), WINDOW_BUCKETS - 1);
        let labels: Vec<&str> =
            [200u16, 418, 502, 302].iter().map(|s| status_label(StatusCode::from_u16(*s).unwrap())).collect();
        assert_eq!(labels, ["200", "4xx", "5xx", "3xx"]);
    }
}
