//! Live streams: a sale's or an auction's state, and a user's own events, over Server-Sent
//! Events or WebSocket (the same JSON). See `hub` for how changes reach subscribers.

mod follow;
pub mod hub;
mod personal;
pub(crate) mod raw;
mod snapshot;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::json;
use stampede_core::UserId;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};

pub use self::follow::run;
use self::hub::{Frame, Topic};
use crate::auth::StreamUser;
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathId;
use crate::orders::OrderBody;
use crate::AppState;

/// One Server-Sent Event as a client reads it (WebSocket messages carry the `data` alone).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    /// Names the state (a snapshot) or the event: resuming with `Last-Event-ID` skips a state seen.
    id: String,
    /// `sale`, `auction`, `orders`, `hold`, `outbid`, `won`, `queue_position`, `admitted`, ...
    event: String,
    /// The JSON of the state or event.
    data: String,
}

#[utoipa::path(
    get, path = "/v1/sales/{id}/events", tag = "streams", operation_id = "sale_events",
    params(
        ("id" = String, Path, description = "Sale id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event seen: the current state is skipped when it is that one"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `sale` events with the sale as JSON, coalesced; `: heartbeat` comments", content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "`not_found`: no such sale", body = ErrorBody),
    ),
)]
pub async fn sale_sse(state: State<AppState>, id: PathId, headers: HeaderMap) -> Result<Response, ApiError> {
    let feed = topic_feed(&state, Topic::Sale(Arc::from(id.0)), last_event_id(&headers)).await?;
    Ok(sse(feed))
}

#[utoipa::path(
    get, path = "/v1/sales/{id}/events/ws", tag = "streams", operation_id = "sale_events_ws",
    params(("id" = String, Path, description = "Sale id")),
    responses(
        (status = 101, description = "WebSocket: the same JSON as the event stream, one text message each"),
        (status = 400, description = "`invalid_request`: not a WebSocket upgrade request", body = ErrorBody),
        (status = 404, description = "`not_found`: no such sale", body = ErrorBody),
    ),
)]
pub async fn sale_ws(state: State<AppState>, id: PathId, upgrade: Upgrade) -> Result<Response, ApiError> {
    let feed = topic_feed(&state, Topic::Sale(Arc::from(id.0)), None).await?;
    Ok(websocket(upgrade, feed))
}

#[utoipa::path(
    get, path = "/v1/auctions/{id}/events", tag = "streams", operation_id = "auction_events",
    params(
        ("id" = String, Path, description = "Auction id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event seen: the current state is skipped when it is that one"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `auction` events with the auction as JSON, coalesced; `: heartbeat` comments", content_type = "text/event-stream", body = StreamEvent),
        (status = 404, description = "`not_found`: no such auction", body = ErrorBody),
    ),
)]
pub async fn auction_sse(state: State<AppState>, id: PathId, headers: HeaderMap) -> Result<Response, ApiError> {
    let feed = topic_feed(&state, Topic::Auction(Arc::from(id.0)), last_event_id(&headers)).await?;
    Ok(sse(feed))
}

#[utoipa::path(
    get, path = "/v1/auctions/{id}/events/ws", tag = "streams", operation_id = "auction_events_ws",
    params(("id" = String, Path, description = "Auction id")),
    responses(
        (status = 101, description = "WebSocket: the same JSON as the event stream, one text message each"),
        (status = 400, description = "`invalid_request`: not a WebSocket upgrade request", body = ErrorBody),
        (status = 404, description = "`not_found`: no such auction", body = ErrorBody),
    ),
)]
pub async fn auction_ws(state: State<AppState>, id: PathId, upgrade: Upgrade) -> Result<Response, ApiError> {
    let feed = topic_feed(&state, Topic::Auction(Arc::from(id.0)), None).await?;
    Ok(websocket(upgrade, feed))
}

#[utoipa::path(
    get, path = "/v1/me/events", tag = "streams", operation_id = "my_events",
    responses(
        (status = 200, description = "Server-Sent Events: first the caller's orders, then holds, outbids, wins, queue positions and admissions", content_type = "text/event-stream", body = StreamEvent),
        (status = 401, response = crate::openapi::Unauthorized),
    ),
    security(("user" = []), ("user_query" = [])),
)]
pub async fn me_sse(state: State<AppState>, StreamUser(user): StreamUser) -> Result<Response, ApiError> {
    Ok(sse(personal_feed(&state, &user).await?))
}

#[utoipa::path(
    get, path = "/v1/me/events/ws", tag = "streams", operation_id = "my_events_ws",
    responses(
        (status = 101, description = "WebSocket: the same JSON as the event stream, one text message each"),
        (status = 400, description = "`invalid_request`: not a WebSocket upgrade request", body = ErrorBody),
        (status = 401, response = crate::openapi::Unauthorized),
    ),
    security(("user" = []), ("user_query" = [])),
)]
pub async fn me_ws(
    state: State<AppState>,
    StreamUser(user): StreamUser,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    Ok(websocket(upgrade, personal_feed(&state, &user).await?))
}

/// A WebSocket handshake, or 400 for a plain request to a `/ws` route.
pub struct Upgrade(WebSocketUpgrade);

impl axum::extract::FromRequestParts<AppState> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(Upgrade)
            .map_err(|_| ApiError::invalid("this route speaks WebSocket: send an upgrade request"))
    }
}

/// What one open stream reads from: its source, the heartbeat, and the shutdown signal.
struct Feed {
    source: Source,
    pending: VecDeque<Arc<Frame>>,
    heartbeat: watch::Receiver<()>,
    closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

enum Source {
    Topic(watch::Receiver<Arc<Frame>>),
    Personal(broadcast::Receiver<Arc<Frame>>),
}

enum Item {
    Frame(Arc<Frame>),
    Beat,
}

impl Feed {
    fn new(state: &AppState, source: Source, slot: OwnedSemaphorePermit) -> Self {
        let (heartbeat, closing) = (state.hub.heartbeat(), state.hub.closing());
        Self { source, pending: VecDeque::new(), heartbeat, closing, _slot: slot }
    }

    /// The next thing to send; None when the stream should end. Cancel-safe.
    async fn next(&mut self) -> Option<Item> {
        if *self.closing.borrow() {
            return None;
        }
        if let Some(frame) = self.pending.pop_front() {
            return Some(Item::Frame(frame));
        }
        tokio::select! {
            _ = self.closing.changed() => None,
            frame = self.source.next() => frame.map(Item::Frame),
            beat = self.heartbeat.changed() => beat.ok().map(|()| Item::Beat),
        }
    }
}

impl Source {
    async fn next(&mut self) -> Option<Arc<Frame>> {
        match self {
            Source::Topic(latest) => {
                latest.changed().await.ok()?;
                Some(latest.borrow_and_update().clone())
            }
            Source::Personal(events) => loop {
                match events.recv().await {
                    Ok(frame) => return Some(frame),
                    // Too slow: the oldest events are skipped, the newest still come.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    }
}

/// Subscribes to a topic (404 if it does not exist) and queues its current state, unless the
/// client resumes with `Last-Event-ID` naming exactly that state.
fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("last-event-id").and_then(|value| value.to_str().ok())
}

async fn topic_feed(state: &AppState, topic: Topic, last_seen: Option<&str>) -> Result<Feed, ApiError> {
    let current = snapshot::of(state, &topic).await.ok_or_else(|| not_found(&topic))?;
    let slot = state.hub.slot()?;
    let mut latest = state.hub.subscribe(topic, current);
    let frame = latest.borrow_and_update().clone();
    let mut feed = Feed::new(state, Source::Topic(latest), slot);
    if last_seen != Some(frame.id.as_str()) {
        feed.pending.push_back(frame);
    }
    Ok(feed)
}

fn not_found(topic: &Topic) -> ApiError {
    match topic {
        Topic::Sale(_) => ApiError::not_found("sale"),
        Topic::Auction(_) => ApiError::not_found("auction"),
    }
}

/// Subscribes to the user's events and queues the current state of their orders first, so a
/// client that reconnects has everything it missed in state terms.
async fn personal_feed(state: &AppState, user: &UserId) -> Result<Feed, ApiError> {
    let slot = state.hub.slot()?;
    let events = state.hub.personal(user);
    let orders = state.backend.orders_of(user).await?;
    let orders: Vec<OrderBody> = orders.into_iter().map(OrderBody::from).collect();
    let mut feed = Feed::new(state, Source::Personal(events), slot);
    feed.pending.push_back(Arc::new(Frame::snapshot("orders", &json!({"type": "orders", "orders": orders}))));
    Ok(feed)
}

fn sse(feed: Feed) -> Response {
    let body = stream::unfold(feed, |mut feed| async move {
        let bytes = match feed.next().await? {
            Item::Frame(frame) => frame.sse.clone(),
            Item::Beat => Bytes::from_static(b": heartbeat\n\n"),
        };
        Some((Ok::<_, Infallible>(bytes), feed))
    });
    event_stream(Body::from_stream(body))
}

/// An answer carrying Server-Sent Events: never cached, never buffered by a proxy.
pub(crate) fn event_stream(body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Client messages are ignored (beyond close and pong), so a small read buffer does; the
/// default (128 KiB, zero-filled before each read) would be most of an idle socket's memory.
const WS_READ_BUFFER: usize = 1024;
/// Frames go out one by one as they come, with nothing to gather.
const WS_WRITE_BUFFER: usize = 0;
/// A client message larger than this closes the socket.
const WS_MAX_MESSAGE: usize = 16 * 1024;

fn websocket(Upgrade(upgrade): Upgrade, feed: Feed) -> Response {
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| pump(socket, feed))
}

/// Sends the feed to the socket until either side ends; client messages other than close are
/// ignored.
async fn pump(mut socket: WebSocket, mut feed: Feed) {
    loop {
        let message = tokio::select! {
            item = feed.next() => match item {
                Some(Item::Frame(frame)) => Message::Text(frame.text.clone()),
                Some(Item::Beat) => Message::Ping(Bytes::new()),
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(message).await.is_err() {
            return;
        }
    }
}
