//! Operations endpoints: `GET /metrics`, the dashboard page and its event stream.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{check_admin, stream_token};
use crate::error::{ApiError, ErrorBody};
use crate::AppState;

const PAGE: &str = include_str!("pages/dashboard.html");

/// One Server-Sent Event of the dashboard's stream (no `id`: a page that reconnects gets the
/// whole state again).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DashboardEvent {
    /// `state` first, then `tick`.
    event: String,
    /// The JSON of the board (`state`) or of what changed in the tick.
    data: String,
}

/// `GET /metrics`: the Prometheus text format. Open like `/healthz` (a scraper needs no token);
/// it names sales and auctions by id and nothing about users.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text format (version 0.0.4)", content_type = "text/plain", body = String),
        (status = 404, description = "`not_found`: metrics are off on this server", body = ErrorBody),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut text = state
        .telemetry
        .render()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "metrics are off on this server"))?;
    state.board.render_metrics(&mut text);
    crate::queue::render_metrics(&state, &mut text).await;
    if let Some(limits) = &state.limits {
        if let Ok(bans) = limits.bans(stampede_core::Timestamp::now()).await {
            text.push_str("# HELP stampede_bans_active Bans in force (users and addresses).\n");
            text.push_str("# TYPE stampede_bans_active gauge\n");
            text.push_str(&format!("stampede_bans_active {}\n", bans.len()));
        }
    }
    text.push_str("# HELP stampede_stream_subscribers Open live streams (SSE and WebSocket) on this process.\n");
    text.push_str("# TYPE stampede_stream_subscribers gauge\n");
    text.push_str(&format!("stampede_stream_subscribers {}\n", state.hub.open_streams()));
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}

/// `GET /dashboard`: the page itself holds no data, so it needs no token; it asks for the admin
/// token once and keeps it in the tab's session storage for its stream.
#[utoipa::path(
    get, path = "/dashboard", tag = "operations", operation_id = "dashboard",
    responses((status = 200, description = "The live dashboard page (self-contained HTML)", content_type = "text/html", body = String)),
)]
pub async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /v1/admin/dashboard/events` (admin; the token may come as `?access_token=` since a
/// browser `EventSource` cannot set headers): a `state` event with everything the board holds,
/// then a `tick` event every board tick.
#[utoipa::path(
    get, path = "/v1/admin/dashboard/events", tag = "operations", operation_id = "dashboard_events",
    responses(
        (status = 200, description = "Server-Sent Events: `state` (history, log, sales, auctions), then `tick` every 250 ms", content_type = "text/event-stream", body = DashboardEvent),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
    ),
    security(("admin" = []), ("user_query" = [])),
)]
pub async fn events(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let token = stream_token(&headers, uri.query()).ok_or_else(ApiError::unauthorized)?;
    check_admin(&state, token)?;
    let slot = state.hub.slot()?;
    let (first, frames) = state.board.follow();
    let closing = state.hub.closing();
    let first = Some(event("state", &first));
    let body = stream::unfold((first, frames, closing, slot), |(first, mut frames, mut closing, slot)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (None, frames, closing, slot)));
        }
        loop {
            let next = tokio::select! {
                frame = frames.recv() => frame,
                _ = closing.wait_for(|closing| *closing) => return None,
            };
            match next {
                Ok(frame) => return Some((Ok(event("tick", &frame)), (None, frames, closing, slot))),
                // A slow page skips ticks; the next one carries the whole ledger again.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(crate::streams::event_stream(Body::from_stream(body)))
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}
