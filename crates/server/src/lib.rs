//! Stampede's HTTP API: `app(state)` builds the router, `serve` runs it until shutdown.

mod auctions;
pub mod auth;
mod board;
mod dashboard;
pub mod defense;
mod docs;
pub mod error;
pub mod extract;
mod listing;
pub mod openapi;
mod ops;
mod orders;
mod queue;
mod sales;
mod serve;
pub mod streams;
pub mod telemetry;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use stampede_engine::limits::{Limits, Policy};
use stampede_engine::rooms::{MemoryRooms, Rooms};
use stampede_engine::Backend;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::Auth;
use crate::error::ApiError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers, also while a kept-alive connection idles.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub session_ttl_seconds: u64,
    /// Password hashes computed at once (each takes ~20 MiB and tens of ms of CPU).
    pub hashing_slots: usize,
    /// Live streams (SSE and WebSocket) open at once; one more gets 503.
    pub max_streams: usize,
    /// Requests handled at once; more wait for a place, at most `max_queue_wait`, then get 503.
    pub max_in_flight: usize,
    pub max_queue_wait: Duration,
    /// Peers whose `X-Forwarded-For` is believed: the client address is the nearest hop before
    /// them. Empty: the peer address is the client.
    pub trusted_proxies: Vec<defense::client_ip::IpRange>,
    /// Request metrics and `/metrics` (off: neither, for measuring what they cost).
    pub metrics: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 300_000,
            session_ttl_seconds: 24 * 3600,
            hashing_slots: 4,
            max_streams: 250_000,
            max_in_flight: 1_024,
            max_queue_wait: Duration::from_millis(100),
            trusted_proxies: Vec::new(),
            metrics: true,
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub backend: Arc<dyn Backend>,
    pub auth: Auth,
    pub settings: HttpSettings,
    pub hub: Arc<streams::hub::Hub>,
    pub telemetry: telemetry::Telemetry,
    pub board: board::Board,
    /// `None` when limits are off (`STAMPEDE_LIMITS=off`).
    pub limits: Option<Arc<dyn Limits>>,
    pub policy: Policy,
    /// `None` where waiting rooms are not available (scale-out mode, for now).
    pub rooms: Option<Arc<dyn Rooms>>,
    signer: defense::pass::Signer,
    sale_defenses: std::sync::Mutex<std::collections::HashMap<String, Arc<queue::SaleDefenses>>>,
    puzzles: defense::pow::Puzzles,
    shedder: defense::shedding::Shedder,
    hashing: Arc<Semaphore>,
    dummy_hash: String,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The traffic defenses a server runs with.
pub struct Defenses {
    /// `None` for limits off (`STAMPEDE_LIMITS=off`).
    pub limits: Option<Arc<dyn Limits>>,
    /// The policy the limits were built with.
    pub policy: Policy,
    pub rooms: Option<Arc<dyn Rooms>>,
}

impl Default for Defenses {
    /// No limits, waiting rooms in this process.
    fn default() -> Self {
        Self { limits: None, policy: Policy::default(), rooms: Some(Arc::new(MemoryRooms::default())) }
    }
}

impl AppState {
    pub fn new(backend: Arc<dyn Backend>, jwt_secret: &str, admin_token: &str, settings: HttpSettings) -> Self {
        Self::with_defenses(backend, jwt_secret, admin_token, settings, Defenses::default())
    }

    pub fn with_defenses(
        backend: Arc<dyn Backend>,
        jwt_secret: &str,
        admin_token: &str,
        settings: HttpSettings,
        defenses: Defenses,
    ) -> Self {
        let auth = Auth::new(jwt_secret, admin_token, settings.session_ttl_seconds);
        let hashing = Arc::new(Semaphore::new(settings.hashing_slots.max(1)));
        let hub = Arc::new(streams::hub::Hub::new(settings.max_streams));
        let shedder = defense::shedding::Shedder::new(settings.max_in_flight, settings.max_queue_wait);
        let Defenses { limits, policy, rooms } = defenses;
        let telemetry = telemetry::Telemetry::new(settings.metrics);
        Self(Arc::new(Inner {
            backend,
            auth,
            settings,
            hub,
            telemetry,
            board: board::Board::default(),
            limits,
            policy,
            rooms,
            signer: defense::pass::Signer::new(jwt_secret),
            sale_defenses: std::sync::Mutex::default(),
            puzzles: defense::pow::Puzzles::new(jwt_secret),
            shedder,
            hashing,
            dummy_hash: users::dummy_hash(),
        }))
    }
}

/// Locks a std mutex, carrying on after a panic elsewhere (no step leaves the data half done).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn app(state: AppState) -> Router {
    // Mutating endpoints a client can hammer: behind the guard (bans, rate limits, proof of work).
    let guarded_routes = Router::new()
        .route("/v1/users", post(users::sign_up))
        .route("/v1/sessions", post(users::sign_in))
        .route("/v1/sales/{id}/orders", post(sales::purchase))
        .route("/v1/sales/{id}/waitlist", post(sales::join_waitlist))
        .route("/v1/sales/{id}/queue", post(queue::join))
        .route("/v1/orders/{id}/pay", post(orders::pay))
        .route("/v1/orders/{id}/cancel", post(orders::cancel))
        .route("/v1/auctions/{id}/bids", post(auctions::bid))
        .route("/v1/auctions/{id}/buy-now", post(auctions::buy_now))
        .route_layer(middleware::from_fn_with_state(state.clone(), defense::guard::guard));
    let api = Router::new()
        .route("/v1/sales", post(sales::create).get(listing::sales))
        .route("/v1/sales/{id}", get(sales::get))
        .route("/v1/sales/{id}/queue", get(queue::summary))
        .route("/v1/sales/{id}/queue/{ticket}", get(queue::standing))
        .route("/v1/admin/sales/{id}/queue", post(queue::set_state))
        .route("/v1/sales/{id}/events", get(streams::sale_sse))
        .route("/v1/sales/{id}/events/ws", get(streams::sale_ws))
        .route("/v1/orders", get(orders::list))
        .route("/v1/orders/{id}", get(orders::get))
        .route("/v1/auctions", post(auctions::create).get(listing::auctions))
        .route("/v1/auctions/{id}", get(auctions::get))
        .route("/v1/auctions/{id}/events", get(streams::auction_sse))
        .route("/v1/auctions/{id}/events/ws", get(streams::auction_ws))
        .route("/v1/me/events", get(streams::me_sse))
        .route("/v1/me/events/ws", get(streams::me_ws))
        .route("/v1/challenge", get(defense::endpoints::challenge))
        .route("/rooms/{id}", get(queue::page))
        .route("/v1/admin/sales/{id}/ledger", get(ops::ledger))
        .route("/v1/admin/orders/{id}", get(listing::order))
        .route("/v1/admin/bans", get(defense::endpoints::list).post(defense::endpoints::ban))
        .route("/v1/admin/bans/{subject}", axum::routing::delete(defense::endpoints::lift))
        .route("/readyz", get(ops::readyz))
        .route("/v1/admin/dashboard/events", get(dashboard::events))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(docs::page))
        .route("/docs/{file}", get(docs::asset))
        .merge(guarded_routes);
    let routes = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(dashboard::metrics))
        .route("/dashboard", get(dashboard::page))
        .merge(api);
    guarded(routes, state)
}

/// What every route gets: JSON answers for unknown routes and methods, the time limit, the body
/// limit, and a 500 JSON answer (the server stays up) when a handler panics.
fn guarded(routes: Router<AppState>, state: AppState) -> Router {
    let routes = routes
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("a request handler panicked");
            ApiError::internal().into_response()
        }))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT));
    // Outermost, after the fallbacks are in place: shedding, and every answer counted, panics
    // and unknown routes included.
    routes.layer(middleware::from_fn_with_state(state.clone(), telemetry::front)).with_state(state)
}

/// Answers 503 instead of letting a request run past the configured time.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::overloaded("the request took too long, retry shortly").into_response(),
    }
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then ends the live streams and
/// finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let max_connections = state.settings.max_connections;
    let header_read_timeout = state.settings.header_read_timeout;
    let (stop_streams, streams_stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(streams::run(state.clone(), streams_stopped.clone()));
    let board = tokio::spawn(board::run(state.clone(), streams_stopped.clone()));
    let rooms = tokio::spawn(queue::run(state.clone(), streams_stopped));
    let hub = state.hub.clone();
    let shutdown = async move {
        shutdown.await;
        hub.close();
    };
    serve::run(listener, state, max_connections, header_read_timeout, shutdown).await;
    let _ = stop_streams.send(true);
    if let Err(error) = follower.await {
        tracing::error!(%error, "the stream follower ended abnormally");
    }
    if let Err(error) = board.await {
        tracing::error!(%error, "the live board ended abnormally");
    }
    if let Err(error) = rooms.await {
        tracing::error!(%error, "the waiting room job ended abnormally");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::{to_bytes, Body};
    use axum::http::{Request, StatusCode};
    use stampede_engine::{Embedded, EmbeddedOptions};
    use tower::ServiceExt;

    use super::*;

    async fn test_state(dir: &tempfile::TempDir, request_timeout: Duration) -> AppState {
        let settings = HttpSettings { request_timeout, hashing_slots: 1, ..HttpSettings::default() };
        state_with(dir, settings).await
    }

    async fn state_with(dir: &tempfile::TempDir, settings: HttpSettings) -> AppState {
        let options = EmbeddedOptions { data_dir: dir.path().to_owned(), synchronous_full: false };
        let backend: Arc<dyn Backend> = Embedded::open(options).await.expect("open store");
        AppState::new(backend, "secret", "admin", settings)
    }

    async fn error_of(router: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = router.oneshot(request).await.expect("router answers");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json body"))
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_json_500_and_others_still_work() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = test_state(&dir, Duration::from_secs(5)).await;
        let routes = Router::new()
            .route("/boom", get(|| async { panic!("handler bug") as &'static str }))
            .route("/healthz", get(ops::healthz));
        let router = guarded(routes, state);

        let (status, body) = error_of(router.clone(), "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        let (status, body) = error_of(router, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_bound_are_shed_with_retry_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings =
            HttpSettings { max_in_flight: 1, max_queue_wait: Duration::from_millis(20), ..Default::default() };
        let state = state_with(&dir, settings).await;
        let (release, released) = tokio::sync::watch::channel(false);
        let slow = move || {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|done| *done).await;
                "done"
            }
        };
        let routes = Router::new().route("/slow", get(slow)).route("/healthz", get(ops::healthz));
        let router = guarded(routes, state);

        let holder = tokio::spawn(router.clone().oneshot(Request::get("/slow").body(Body::empty()).expect("request")));
        tokio::task::yield_now().await;
        let (status, body) = error_of(router.clone(), "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "overloaded");
        let (status, _) = error_of(router.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::OK, "health checks are never shed");
        let _ = release.send(true);
        let first = holder.await.expect("task").expect("answer");
        assert_eq!(first.status(), StatusCode::OK, "the admitted request finishes normally");
    }

    #[tokio::test]
    async fn a_request_past_the_time_limit_gets_a_json_503_with_retry_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = test_state(&dir, Duration::from_millis(50)).await;
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        };
        let router = guarded(Router::new().route("/slow", get(slow)), state);

        let request = Request::get("/slow").body(Body::empty()).expect("request");
        let response = router.oneshot(request).await.expect("router answers");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
