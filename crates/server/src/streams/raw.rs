//! Server-Sent Events straight on the socket. An idle stream held by the HTTP stack keeps its
//! read and header buffers (16 KiB) and a full connection state for as long as it is open; a
//! stream is mostly idle, and there may be a hundred thousand of them. So when a connection's
//! first request is an event stream, the server answers it here: it parses the head itself,
//! writes the response head and then each event as one pre-encoded HTTP/1.1 chunk, holding
//! nothing per stream but the socket and its feed. Every other request (and any request this
//! module does not fully understand) goes to the HTTP stack, which serves the same routes too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hub::Topic;
use super::{personal_feed, topic_feed, Feed, Item};
use crate::auth::stream_user;
use crate::error::ApiError;
use crate::AppState;

/// The most of a request head looked at; a longer head goes to the HTTP stack.
const HEAD_LIMIT: usize = 4096;
const MAX_HEADERS: usize = 32;
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n";
const HEARTBEAT_CHUNK: &[u8] = b"d\r\n: heartbeat\n\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What the first request of a connection is, as far as this module cares.
pub(crate) enum First {
    /// An event stream request whose head is complete: served here.
    Stream,
    /// Anything else: the HTTP stack's.
    Http,
    /// Nothing arrived within the header time: close.
    Silent,
}

/// Looks at the connection's first bytes without consuming them.
pub(crate) async fn first_request(stream: &TcpStream, wait: Duration) -> First {
    let mut head = vec![0; HEAD_LIMIT];
    match tokio::time::timeout(wait, stream.peek(&mut head)).await {
        Err(_) => First::Silent,
        Ok(Err(_) | Ok(0)) => First::Http,
        Ok(Ok(read)) => match parse(&head[..read]) {
            Some(_) => First::Stream,
            None => First::Http,
        },
    }
}

/// A parsed event-stream request.
struct Head {
    length: usize,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

fn parse(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = request.parse(bytes).ok()? else { return None };
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let (path, query) = request.path?.split_once('?').map_or((request.path?, None), |(p, q)| (p, Some(q)));
    route(path)?;
    let mut map = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    // A WebSocket handshake or a request with a body is not a plain stream request.
    let unusual = ["upgrade", "content-length", "transfer-encoding"].iter().any(|name| map.contains_key(*name));
    if unusual {
        return None;
    }
    Some(Head { length, path: path.to_owned(), query: query.map(str::to_owned), headers: map })
}

enum Route<'a> {
    Sale(&'a str),
    Auction(&'a str),
    Me,
}

fn route(path: &str) -> Option<Route<'_>> {
    if path == "/v1/me/events" {
        return Some(Route::Me);
    }
    let rest = path.strip_prefix("/v1/")?.strip_suffix("/events")?;
    let (kind, id) = rest.split_once('/')?;
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (kind, plain) {
        ("sales", true) => Some(Route::Sale(id)),
        ("auctions", true) => Some(Route::Auction(id)),
        _ => None,
    }
}

/// Serves the stream request at the head of `stream` (checked by `first_request`).
pub(crate) async fn serve(state: AppState, mut stream: TcpStream, _peer: SocketAddr) {
    let mut bytes = vec![0; HEAD_LIMIT];
    let Ok(read) = stream.peek(&mut bytes).await else { return };
    let Some(head) = parse(&bytes[..read]) else { return };
    if stream.read_exact(&mut bytes[..head.length]).await.is_err() {
        return;
    }
    drop(bytes);
    match feed_for(&state, &head).await {
        Ok(feed) => pump(stream, feed).await,
        Err(error) => refuse(stream, error).await,
    }
}

async fn feed_for(state: &AppState, head: &Head) -> Result<Feed, ApiError> {
    let last_seen = head.headers.get("last-event-id").and_then(|value| value.to_str().ok());
    match route(&head.path) {
        Some(Route::Sale(id)) => topic_feed(state, Topic::Sale(Arc::from(id)), last_seen).await,
        Some(Route::Auction(id)) => topic_feed(state, Topic::Auction(Arc::from(id)), last_seen).await,
        Some(Route::Me) => {
            let user = stream_user(state, &head.headers, head.query.as_deref())?;
            personal_feed(state, &user).await
        }
        None => Err(ApiError::not_found("route")),
    }
}

/// Writes the feed until it ends (shutdown) or the client goes away.
async fn pump(mut stream: TcpStream, mut feed: Feed) {
    if stream.write_all(RESPONSE_HEAD).await.is_err() {
        return;
    }
    let mut probe = [0u8; 64];
    loop {
        let written = tokio::select! {
            item = feed.next() => match item {
                Some(Item::Frame(frame)) => stream.write_all(&frame.chunk).await,
                Some(Item::Beat) => stream.write_all(HEARTBEAT_CHUNK).await,
                None => {
                    let _ = stream.write_all(LAST_CHUNK).await;
                    return;
                }
            },
            // The client sends nothing more on a stream; end of input means it went away.
            readable = stream.readable() => {
                if readable.is_err() {
                    return;
                }
                match stream.try_read(&mut probe) {
                    Ok(0) => return,
                    Err(error) if error.kind() != std::io::ErrorKind::WouldBlock => return,
                    Ok(_) | Err(_) => Ok(()),
                }
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// Answers an error the way the HTTP stack would, then closes.
async fn refuse(mut stream: TcpStream, error: ApiError) {
    let response = error.into_response();
    let status = response.status();
    let mut head = format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    for (name, value) in response.headers() {
        head.push_str(&format!("{}: {}\r\n", name, value.to_str().unwrap_or("")));
    }
    let body = to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_plain_stream_requests_are_taken() {
        let head = |text: &str| parse(text.as_bytes()).map(|head| (head.path, head.query, head.length));
        let taken = head("GET /v1/sales/s_1/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n");
        assert_eq!(taken, Some(("/v1/sales/s_1/events".to_owned(), None, 64)));
        let me = head("GET /v1/me/events?access_token=t HTTP/1.1\r\n\r\n");
        assert_eq!(me.map(|(_, query, _)| query), Some(Some("access_token=t".to_owned())));
        for refused in [
            "GET /v1/sales/s_1/events HTTP/1.1\r\nHost: x\r\n",
            "POST /v1/sales/s_1/events HTTP/1.1\r\n\r\n",
            "GET /v1/sales/s_1/events HTTP/1.0\r\n\r\n",
            "GET /v1/sales/s_1/events/ws HTTP/1.1\r\n\r\n",
            "GET /v1/sales/s_1/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /v1/sales/s_1/events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /v1/sales/s_1 HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
        ] {
            assert!(head(refused).is_none(), "{refused:?}");
        }
    }

    #[test]
    fn routes_name_sales_auctions_and_me() {
        assert!(matches!(route("/v1/sales/s_abc/events"), Some(Route::Sale("s_abc"))));
        assert!(matches!(route("/v1/auctions/a_1/events"), Some(Route::Auction("a_1"))));
        assert!(matches!(route("/v1/me/events"), Some(Route::Me)));
        for other in ["/v1/sales//events", "/v1/sales/a/b/events", "/v1/orders/o_1/events", "/v1/sales/%7B/events"] {
            assert!(route(other).is_none(), "{other}");
        }
    }
}
