//! Live streams through HTTP: sale and auction snapshots over SSE and WebSocket, resuming with
//! `Last-Event-ID`, a user's own events, the stream cap, slow clients and shutdown.
//!
//! Snapshots are coalesced, so the tests wait (bounded) for the state they expect and never
//! assert that every intermediate state was sent.
mod common;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{for_each_concurrent, rfc3339_after, wait_for, Api, Reply, Server};

/// How long a test waits for an event it expects; far above the 100 ms coalescing tick.
const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// One server-sent event; `data` is `Null` when it is not JSON.
#[derive(Debug, Clone)]
struct Event {
    id: Option<String>,
    event: String,
    data: Value,
    text: String,
}

/// An open SSE response, read incrementally.
struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

/// How a stream finished.
#[derive(Debug, PartialEq)]
enum End {
    /// The server finished the response (SSE) or sent a close frame (WebSocket).
    Clean,
    Broken(String),
}

impl Sse {
    /// Opens `path` and expects an event stream.
    async fn open(api: &Api, path: &str, headers: HeaderMap) -> Sse {
        match Sse::connect(api, path, headers).await {
            Ok(stream) => stream,
            Err(reply) => panic!("GET {path} did not open a stream: {} {}", reply.status, reply.text),
        }
    }

    /// A stream, or the error reply when the server refuses one. Its own client: the shared one
    /// has a total request time limit that would cut a long stream.
    async fn connect(api: &Api, path: &str, headers: HeaderMap) -> Result<Sse, Reply> {
        let client = reqwest::Client::builder().build().expect("build stream client");
        let response = client.get(api.url(path)).headers(headers).send().await.expect("stream request");
        if response.status() != 200 {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(Reply { status, headers, text, body });
        }
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|value| value.to_str().ok());
        assert_eq!(content_type, Some("text/event-stream"), "GET {path}");
        Ok(Sse { response, buffer: Vec::new() })
    }

    /// The next event (comments skipped), or how the stream ended.
    async fn next(&mut self) -> Result<Event, End> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(event);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Err(End::Clean),
                Err(error) => return Err(End::Broken(error.to_string())),
            }
        }
    }

    fn take_event(&mut self) -> Option<Event> {
        loop {
            let end = self.buffer.windows(2).position(|pair| pair == b"\n\n")?;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8(block).expect("events are UTF-8");
            if let Some(event) = parse_event(&block) {
                return Some(event);
            }
        }
    }

    /// The next event within `EVENT_LIMIT`.
    async fn next_event(&mut self) -> Event {
        let next = tokio::time::timeout(EVENT_LIMIT, self.next()).await;
        let next = next.unwrap_or_else(|_| panic!("no event within {EVENT_LIMIT:?}"));
        next.unwrap_or_else(|end| panic!("the stream ended early: {end:?}"))
    }

    /// Reads events until one matches, within `EVENT_LIMIT`; returns every event read.
    async fn until(&mut self, mut wanted: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(EVENT_LIMIT, async {
            loop {
                let event = self.next().await.unwrap_or_else(|end| panic!("the stream ended early: {end:?}"));
                let done = wanted(&event);
                seen.push(event);
                if done {
                    return;
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the expected event did not come within {EVENT_LIMIT:?}; got {seen:#?}");
        seen
    }

    /// Reads until the server ends the stream; events after the end was asked for are fine.
    async fn end(mut self) -> End {
        loop {
            match self.next().await {
                Ok(_) => continue,
                Err(end) => return end,
            }
        }
    }
}

/// Parses one event block; `None` for a block of comments only (the heartbeat).
fn parse_event(block: &str) -> Option<Event> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    let text = data.join("\n");
    let data = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Event { id, event: event.unwrap_or_else(|| "message".to_string()), data, text })
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket at `path`, or returns the HTTP status the handshake got instead.
async fn ws_connect(api: &Api, path: &str, token: Option<&str>) -> Result<Socket, u16> {
    let url = api.url(path).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().expect("websocket request");
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("websocket handshake to {path} failed: {error}"),
    }
}

async fn ws_open(api: &Api, path: &str, token: Option<&str>) -> Socket {
    match ws_connect(api, path, token).await {
        Ok(socket) => socket,
        Err(status) => panic!("websocket {path} was refused with {status}"),
    }
}

/// The next text message as JSON (pings skipped), or how the socket ended.
async fn ws_next(socket: &mut Socket) -> Result<Value, End> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).expect("messages are JSON")),
            Some(Ok(Message::Close(_))) => return Err(End::Clean),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(End::Broken(error.to_string())),
            None => return Err(End::Broken("closed without a close frame".to_string())),
        }
    }
}

async fn ws_next_within(socket: &mut Socket) -> Value {
    let next = tokio::time::timeout(EVENT_LIMIT, ws_next(socket)).await;
    let next = next.unwrap_or_else(|_| panic!("no message within {EVENT_LIMIT:?}"));
    next.unwrap_or_else(|end| panic!("the socket ended early: {end:?}"))
}

/// Reads messages until one matches, within `EVENT_LIMIT`; returns it.
async fn ws_until(socket: &mut Socket, mut wanted: impl FnMut(&Value) -> bool) -> Value {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(EVENT_LIMIT, async {
        loop {
            let message = ws_next(socket).await.unwrap_or_else(|end| panic!("the socket ended early: {end:?}"));
            if wanted(&message) {
                return message;
            }
            seen.push(message);
        }
    })
    .await;
    read.unwrap_or_else(|_| panic!("the expected message did not come within {EVENT_LIMIT:?}; got {seen:#?}"))
}

fn bearer(api: &Api, user: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {}", api.token(user))).expect("header value");
    headers.insert(AUTHORIZATION, value);
    headers
}

fn last_event_id(id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("last-event-id", HeaderValue::from_str(id).expect("header value"));
    headers
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_string()
}

fn event_id(event: &Event) -> String {
    event.id.clone().unwrap_or_else(|| panic!("a snapshot without an id: {event:?}"))
}

/// A personal event of `kind` about order `order_id`.
fn is_order_event(event: &Event, kind: &str, order_id: &str) -> bool {
    event.event == kind && event.data["type"] == kind && event.data["order"]["id"] == order_id
}

async fn buy_ok(api: &Api, user: &str, sale_id: &str) -> String {
    let reply = api.buy(user, sale_id, 1, Some(&format!("{user}-{sale_id}"))).await;
    id_of(reply.expect(201))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_stream_sends_the_snapshot_then_later_states() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 1, 600).await;
    let mut stream = Sse::open(api, &format!("/v1/sales/{sale_id}/events"), HeaderMap::new()).await;

    let first = stream.next_event().await;
    assert_eq!(first.event, "sale", "{first:?}");
    assert!(!event_id(&first).is_empty(), "{first:?}");
    assert_eq!(first.data, api.sale(&sale_id).await, "the first event is the current state");

    for buyer in 0..6 {
        buy_ok(api, &format!("sse-buyer-{buyer}"), &sale_id).await;
    }
    let mut events = stream.until(|event| event.data["available"] == 4).await;
    assert_eq!(events.last().map(|event| &event.data), Some(&api.sale(&sale_id).await), "the latest state arrives");
    for buyer in 6..10 {
        buy_ok(api, &format!("sse-buyer-{buyer}"), &sale_id).await;
    }
    events.extend(stream.until(|event| event.data["status"] == "sold_out").await);
    let last = events.last().expect("events");
    assert_eq!(last.data, api.sale(&sale_id).await, "the final state matches GET");
    assert_eq!((last.data["available"].clone(), last.data["held"].clone()), (json!(0), json!(10)));

    let mut previous = first;
    for event in events {
        assert_eq!(event.event, "sale");
        assert_ne!(event.id, previous.id, "a snapshot is never sent twice in a row: {event:?}");
        let available = event.data["available"].as_u64().expect("available");
        assert!(available < previous.data["available"].as_u64().expect("available"), "states go forward: {event:?}");
        previous = event;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auction_stream_shows_new_prices_and_leaders_but_no_maxima() {
    let server = Server::start().await;
    let api = server.api();
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);
    let mut stream = Sse::open(api, &format!("/v1/auctions/{auction_id}/events"), HeaderMap::new()).await;

    let first = stream.next_event().await;
    assert_eq!(first.event, "auction", "{first:?}");
    assert_eq!(first.data, api.auction(&auction_id).await, "the first event is the current state");

    api.bid("sse-alice", &auction_id, 987_654, None).await.expect(201);
    let events = stream.until(|event| event.data["leader_id"] == "sse-alice").await;
    assert_eq!(events.last().expect("event").data["current_price_cents"], 1000);
    api.bid("sse-bob", &auction_id, 5000, None).await.expect(201);
    let mut later = stream.until(|event| event.data["current_price_cents"] == 5100).await;
    let last = later.last().expect("event");
    assert_eq!((last.data["leader_id"].clone(), last.data["bid_count"].clone()), (json!("sse-alice"), json!(2)));
    assert_eq!(last.data, api.auction(&auction_id).await, "the final state matches GET");

    later.extend(events);
    for event in later {
        assert!(!event.text.contains("987654"), "a stream reveals alice's maximum: {}", event.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_streams_carry_the_same_json() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(5, 1, 600).await;
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);
    let mut sale = ws_open(api, &format!("/v1/sales/{sale_id}/events/ws"), None).await;
    let mut auction = ws_open(api, &format!("/v1/auctions/{auction_id}/events/ws"), None).await;

    assert_eq!(ws_next_within(&mut sale).await, api.sale(&sale_id).await);
    assert_eq!(ws_next_within(&mut auction).await, api.auction(&auction_id).await);

    buy_ok(api, "ws-ann", &sale_id).await;
    buy_ok(api, "ws-ben", &sale_id).await;
    let latest = ws_until(&mut sale, |state| state["available"] == 3).await;
    assert_eq!(latest, api.sale(&sale_id).await);

    api.bid("ws-ann", &auction_id, 3000, None).await.expect(201);
    api.bid("ws-ben", &auction_id, 2000, None).await.expect(201);
    let latest = ws_until(&mut auction, |state| state["current_price_cents"] == 2050).await;
    assert_eq!(latest["leader_id"], "ws-ann", "{latest}");
    assert_eq!(latest, api.auction(&auction_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_the_last_event_id_does_not_repeat_that_snapshot() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 1, 600).await;
    let path = format!("/v1/sales/{sale_id}/events");
    let mut stream = Sse::open(api, &path, HeaderMap::new()).await;
    let seen = event_id(&stream.next_event().await);
    drop(stream);

    let mut resumed = Sse::open(api, &path, last_event_id(&seen)).await;
    buy_ok(api, "resume-ann", &sale_id).await;
    let next = resumed.next_event().await;
    assert_ne!(event_id(&next), seen, "the snapshot the client had is not sent again");
    assert_eq!(next.data, api.sale(&sale_id).await, "the next event is the change: {next:?}");
    drop(resumed);

    let mut outdated = Sse::open(api, &path, last_event_id(&seen)).await;
    let current = outdated.next_event().await;
    assert_eq!(event_id(&current), event_id(&next), "an outdated id gets the current state first");
    assert_eq!(current.data["available"], 9, "{current:?}");

    let mut unknown = Sse::open(api, &path, last_event_id("not-an-event")).await;
    let current = unknown.next_event().await;
    assert_eq!(current.data, api.sale(&sale_id).await, "an unknown id gets the current state first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_events_follow_my_orders_and_bids() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 3, 600).await;
    let earlier = buy_ok(api, "me-alice", &sale_id).await;
    let mut me = Sse::open(api, "/v1/me/events", bearer(api, "me-alice")).await;

    let snapshot = me.next_event().await;
    assert_eq!((snapshot.event.as_str(), &snapshot.data["type"]), ("orders", &json!("orders")), "{snapshot:?}");
    assert_eq!(snapshot.data["orders"], json!(api.orders("me-alice").await), "the snapshot lists my orders");
    assert_eq!(snapshot.data["orders"][0]["id"], earlier);

    let paid = api.buy("me-alice", &sale_id, 1, Some("me-2")).await.expect(201)["id"].clone();
    let paid = paid.as_str().expect("order id");
    let created = me.until(|event| is_order_event(event, "hold_created", paid)).await;
    assert_eq!(created.last().expect("event").data["order"]["status"], "held");
    api.pay("me-alice", paid).await.expect(200);
    let done = me.until(|event| is_order_event(event, "order_paid", paid)).await;
    assert_eq!(done.last().expect("event").data["order"]["status"], "paid");

    let dropped = api.buy("me-alice", &sale_id, 1, Some("me-3")).await.expect(201)["id"].clone();
    let dropped = dropped.as_str().expect("order id");
    me.until(|event| is_order_event(event, "hold_created", dropped)).await;
    api.cancel("me-alice", dropped).await.expect(200);
    let cancelled = me.until(|event| is_order_event(event, "order_cancelled", dropped)).await;
    assert_eq!(cancelled.last().expect("event").data["order"]["status"], "cancelled");

    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);
    api.bid("me-alice", &auction_id, 3000, None).await.expect(201);
    api.bid("me-bob", &auction_id, 876_543, None).await.expect(201);
    let outbid = me.until(|event| event.event == "outbid").await;
    let outbid = outbid.last().expect("event");
    assert_eq!(outbid.data["type"], "outbid");
    let auction = &outbid.data["auction"];
    assert_eq!((&auction["id"], &auction["leader_id"]), (&json!(auction_id), &json!("me-bob")), "{outbid:?}");
    assert_eq!(auction["current_price_cents"], 3100, "{outbid:?}");
    assert!(!outbid.text.contains("876543"), "the outbid event reveals bob's maximum: {}", outbid.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_winner_hears_of_the_win_and_watchers_see_the_end() {
    let server = Server::start().await;
    let api = server.api();
    let ends_at = rfc3339_after(Duration::from_secs(2));
    let auction_id = id_of(&api.auction_with(json!({"ends_at": ends_at, "soft_close_seconds": 0})).await);
    let mut me = Sse::open(api, "/v1/me/events", bearer(api, "won-bob")).await;
    me.next_event().await;
    let mut watcher = Sse::open(api, &format!("/v1/auctions/{auction_id}/events"), HeaderMap::new()).await;
    api.bid("won-bob", &auction_id, 3000, None).await.expect(201);
    api.bid("won-ann", &auction_id, 2000, None).await.expect(201);

    let events = me.until(|event| event.event == "auction_won").await;
    let won = events.last().expect("event");
    assert_eq!((&won.data["type"], &won.data["auction_id"]), (&json!("auction_won"), &json!(auction_id)), "{won:?}");
    let order = &won.data["order"];
    assert_eq!(order["status"], "held", "{won:?}");
    let order_id = order["id"].as_str().expect("order id");
    assert_eq!(api.order("won-bob", order_id).await.expect(200), order, "the event carries the order");

    let ended = watcher.until(|event| event.data["status"] == "ended" && event.data["order_id"].is_string()).await;
    let ended = &ended.last().expect("event").data;
    assert_eq!((&ended["winner_id"], &ended["order_id"]), (&json!("won-bob"), &json!(order_id)), "{ended}");
    assert_eq!(ended, &api.auction(&auction_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_hold_warns_then_expires_on_my_stream() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(3, 1, 1).await;
    let mut me = Sse::open(api, "/v1/me/events", bearer(api, "exp-cleo")).await;
    me.next_event().await;

    let order_id = buy_ok(api, "exp-cleo", &sale_id).await;
    let events = me.until(|event| is_order_event(event, "hold_expired", &order_id)).await;
    let kinds: Vec<&str> = events
        .iter()
        .filter(|event| event.data["order"]["id"] == order_id.as_str())
        .map(|event| event.event.as_str())
        .collect();
    assert_eq!(kinds, ["hold_created", "hold_expiring", "hold_expired"], "{events:#?}");
    assert_eq!(events.last().expect("event").data["order"]["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_events_take_the_token_from_the_query_too() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(3, 1, 600).await;
    let token = api.token("query-dan");

    let mut sse = Sse::open(api, &format!("/v1/me/events?access_token={token}"), HeaderMap::new()).await;
    let snapshot = sse.next_event().await;
    assert_eq!((snapshot.event.as_str(), &snapshot.data["orders"]), ("orders", &json!([])), "{snapshot:?}");
    let mut ws = ws_open(api, &format!("/v1/me/events/ws?access_token={token}"), None).await;
    assert_eq!(ws_next_within(&mut ws).await, json!({"type": "orders", "orders": []}));
    let mut ws_header = ws_open(api, "/v1/me/events/ws", Some(&token)).await;
    assert_eq!(ws_next_within(&mut ws_header).await["type"], "orders");

    let order_id = buy_ok(api, "query-dan", &sale_id).await;
    sse.until(|event| is_order_event(event, "hold_created", &order_id)).await;
    let created = ws_until(&mut ws, |message| message["type"] == "hold_created").await;
    assert_eq!(created["order"]["id"], order_id.as_str(), "{created}");

    let forged = api.sign(&json!({"sub": "query-dan", "exp": common::now_secs() + 60}), "wrong-secret");
    for path in [format!("/v1/me/events?access_token={forged}"), "/v1/me/events".to_string()] {
        let refused = Sse::connect(api, &path, HeaderMap::new()).await.err().expect("refused");
        refused.expect_error(401, "unauthorized");
    }
    let refused = ws_connect(api, &format!("/v1/me/events/ws?access_token={forged}"), None).await;
    assert_eq!(refused.err(), Some(401), "a websocket with a bad token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_plain_requests_to_websocket_routes_are_refused() {
    let server = Server::start().await;
    let api = server.api();
    for path in ["/v1/sales/s_nonexistent/events", "/v1/auctions/a_nonexistent/events"] {
        let refused = Sse::connect(api, path, HeaderMap::new()).await.err().expect("refused");
        refused.expect_error(404, "not_found");
        let refused = ws_connect(api, &format!("{path}/ws"), None).await;
        assert_eq!(refused.err(), Some(404), "{path}/ws");
    }
    let sale_id = api.sale_with(3, 1, 600).await;
    let plain = api.send(api.request(Method::GET, &format!("/v1/sales/{sale_id}/events/ws"))).await;
    plain.expect_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_cap_get_503_with_retry_after() {
    let server = Server::start_with_env(&[("STAMPEDE_MAX_STREAMS", "2")]).await;
    let api = server.api();
    let sale_id = api.sale_with(3, 1, 600).await;
    let path = format!("/v1/sales/{sale_id}/events");
    let mut held = Sse::open(api, &path, HeaderMap::new()).await;
    held.next_event().await;
    let socket = ws_open(api, &format!("{path}/ws"), None).await;

    let refused = Sse::connect(api, "/v1/me/events", bearer(api, "cap-eve")).await.err().expect("refused");
    refused.expect_error(503, "overloaded");
    let retry_after = refused.headers.get("retry-after").and_then(|value| value.to_str().ok());
    assert!(retry_after.is_some_and(|value| value.parse::<u64>().is_ok()), "Retry-After in seconds: {refused:?}");
    assert_eq!(ws_connect(api, &format!("{path}/ws"), None).await.err(), Some(503));

    drop(socket);
    let reopened = wait_for(EVENT_LIMIT, || async { Sse::connect(api, &path, HeaderMap::new()).await.ok() }).await;
    let mut reopened = reopened.expect("a closed stream frees its place");
    assert_eq!(reopened.next_event().await.data, api.sale(&sale_id).await);
}

/// Clients that send a request and never read sit on the sale's stream while it changes a lot;
/// a normal reader still gets the latest state and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_do_not_hold_up_others() {
    let server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(200, 1, 600).await;
    let path = format!("/v1/sales/{sale_id}/events");
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(never_reading(&api, &path).await);
    }
    let mut unread_sockets = Vec::new();
    for _ in 0..4 {
        unread_sockets.push(ws_open(&api, &format!("{path}/ws"), None).await);
    }
    let mut reader = Sse::open(&api, &path, HeaderMap::new()).await;
    let mut socket = ws_open(&api, &format!("{path}/ws"), None).await;
    reader.next_event().await;
    ws_next_within(&mut socket).await;

    let shared = (api.clone(), sale_id.clone());
    let replies = for_each_concurrent((0..150).collect(), 32, move |buyer: usize| {
        let (api, sale_id) = shared.clone();
        async move { api.buy(&format!("slow-buyer-{buyer}"), &sale_id, 1, None).await.status }
    })
    .await;
    assert!(replies.iter().all(|&status| status == 201), "every purchase succeeds: {replies:?}");

    let latest = reader.until(|event| event.data["available"] == 50).await;
    assert_eq!(latest.last().expect("event").data, api.sale(&sale_id).await);
    let latest = ws_until(&mut socket, |state| state["available"] == 50).await;
    assert_eq!(latest, api.sale(&sale_id).await);
    let health = api.send(api.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, 200, "the server still answers");
    drop((stalled, unread_sockets));
}

/// A connection that asks for `path` as an event stream with a small receive buffer and never
/// reads from it.
async fn never_reading(api: &Api, path: &str) -> TcpStream {
    let addr = api.url("").trim_start_matches("http://").parse().expect("server address");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: stampede\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_exits_cleanly() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(3, 1, 600).await;
    let auction_id = id_of(&api.auction_with(json!({})).await);
    let mut sale = Sse::open(&api, &format!("/v1/sales/{sale_id}/events"), HeaderMap::new()).await;
    let mut me = Sse::open(&api, "/v1/me/events", bearer(&api, "term-fay")).await;
    let mut auction = ws_open(&api, &format!("/v1/auctions/{auction_id}/events/ws"), None).await;
    sale.next_event().await;
    me.next_event().await;
    ws_next_within(&mut auction).await;

    let sale_end = tokio::spawn(sale.end());
    let me_end = tokio::spawn(me.end());
    let auction_end = tokio::spawn(async move {
        loop {
            match ws_next(&mut auction).await {
                Ok(_) => continue,
                Err(end) => return end,
            }
        }
    });
    let status = tokio::time::timeout(EVENT_LIMIT, server.terminate()).await;
    let status = status.expect("the server exits within 10 s of SIGTERM with streams open");
    assert!(status.success(), "a clean exit, got {status}");
    for (what, end) in [("sale SSE", sale_end), ("me SSE", me_end), ("auction WebSocket", auction_end)] {
        let end = tokio::time::timeout(EVENT_LIMIT, end).await.expect("the stream ends").expect("reader task");
        assert_eq!(end, End::Clean, "the server ends the {what} stream properly");
    }
}

/// A stream asked for on a connection that already served another request goes through the
/// HTTP stack rather than the direct writer; both give the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_kept_alive_connection_works_too() {
    let server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(5, 1, 600).await;
    let addr: std::net::SocketAddr = api.url("").trim_start_matches("http://").parse().expect("server address");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: stampede\r\n\r\n").await.expect("send");
    let first = read_until(&mut stream, b"\"ok\"").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let request = format!("GET /v1/sales/{sale_id}/events HTTP/1.1\r\nHost: stampede\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let snapshot = read_until(&mut stream, b"\"available\":5").await;
    assert!(snapshot.contains("text/event-stream") && snapshot.contains("event: sale"), "{snapshot}");
    buy_ok(&api, "kept-alive-buyer", &sale_id).await;
    read_until(&mut stream, b"\"available\":4").await;
}

/// Reads until `needle` appears, within `EVENT_LIMIT`; returns what was read.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read = tokio::time::timeout(EVENT_LIMIT, async {
        let mut buffer = [0u8; 4096];
        while !seen.windows(needle.len()).any(|window| window == needle) {
            let n = stream.read(&mut buffer).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            seen.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(read.is_ok(), "{} did not arrive; got {text}", String::from_utf8_lossy(needle));
    text
}
