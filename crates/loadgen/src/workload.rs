//! Pre-built requests. Everything that can be computed before the timed phase is (URIs, bodies,
//! `Authorization` values), so a request in the loop costs a few reference-count bumps plus,
//! when enabled, one formatted idempotency key.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::http::HeaderValue;
use hyper::{Method, Request, StatusCode, Uri};

use crate::auction::Bidding;
use crate::conn::{Body, Conn};
use crate::{pow, LoadError};

/// What every connection task of a phase sends.
pub(crate) enum Workload {
    Healthz(Healthz),
    Purchase(Purchase),
    Bid(Bidding),
}

pub(crate) struct Healthz {
    host: HeaderValue,
    uri: Uri,
}

pub(crate) struct Purchase {
    pub(crate) host: HeaderValue,
    /// One `/v1/sales/{id}/orders` per sale; user `u` buys from sale `u % sales`.
    pub(crate) order_uris: Vec<Uri>,
    /// `Bearer <jwt>` per user.
    pub(crate) tokens: Vec<HeaderValue>,
    pub(crate) body: Bytes,
    /// Prefix unique to this run, so keys never collide with an earlier run's orders.
    pub(crate) idempotency_prefix: Option<String>,
    /// Shared so that consecutive requests, whichever task sends them, come from different
    /// users; one relaxed increment per request is negligible next to an HTTP round trip.
    pub(crate) next_user: AtomicUsize,
    /// Fetch and solve a proof-of-work challenge for each order before sending it.
    pub(crate) pow: bool,
}

impl Workload {
    pub(crate) fn ok_status(&self) -> StatusCode {
        match self {
            Workload::Healthz(_) => StatusCode::OK,
            Workload::Purchase(_) | Workload::Bid(_) => StatusCode::CREATED,
        }
    }

    /// The `seq`-th request of connection task `worker`.
    pub(crate) fn request(&self, worker: usize, seq: u64) -> Request<Body> {
        match self {
            Workload::Healthz(healthz) => healthz.request(),
            Workload::Purchase(purchase) => purchase.request(worker, seq),
            Workload::Bid(bidding) => bidding.request(),
        }
    }

    /// Like `request`, but does the work a request needs first over `conn` (a solved
    /// proof-of-work challenge, when the purchase scenario asks for one).
    pub(crate) async fn prepared_request(
        &self,
        conn: &mut Conn,
        worker: usize,
        seq: u64,
    ) -> Result<Request<Body>, LoadError> {
        match self {
            Workload::Purchase(purchase) if purchase.pow => purchase.proven_request(conn, worker, seq).await,
            Workload::Healthz(_) | Workload::Purchase(_) | Workload::Bid(_) => Ok(self.request(worker, seq)),
        }
    }
}

impl Healthz {
    pub(crate) fn new(addr: SocketAddr) -> Result<Self, LoadError> {
        Ok(Self { host: host_header(addr)?, uri: Uri::from_static("/healthz") })
    }

    fn request(&self) -> Request<Body> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().insert(HOST, self.host.clone());
        request
    }
}

impl Purchase {
    fn request(&self, worker: usize, seq: u64) -> Request<Body> {
        self.request_of(self.next_user(), worker, seq)
    }

    async fn proven_request(&self, conn: &mut Conn, worker: usize, seq: u64) -> Result<Request<Body>, LoadError> {
        let user = self.next_user();
        let proof = pow::prove(conn, &self.host, &self.tokens[user]).await?;
        let mut request = self.request_of(user, worker, seq);
        request.headers_mut().insert(pow::POW_HEADER, proof);
        Ok(request)
    }

    fn next_user(&self) -> usize {
        self.next_user.fetch_add(1, Ordering::Relaxed) % self.tokens.len()
    }

    fn request_of(&self, user: usize, worker: usize, seq: u64) -> Request<Body> {
        let uri = &self.order_uris[user % self.order_uris.len()];
        let mut request = json_request(Method::POST, uri.clone(), &self.host, self.body.clone());
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.tokens[user].clone());
        if let Some(key) = self.idempotency_key(worker, seq) {
            headers.insert("idempotency-key", key);
        }
        request
    }

    fn idempotency_key(&self, worker: usize, seq: u64) -> Option<HeaderValue> {
        let prefix = self.idempotency_prefix.as_ref()?;
        let key = HeaderValue::try_from(format!("{prefix}-{worker}-{seq}"));
        // The prefix was validated as a header value and digits and dashes are always valid.
        debug_assert!(key.is_ok());
        key.ok()
    }
}

pub(crate) fn json_request(method: Method, uri: Uri, host: &HeaderValue, body: Bytes) -> Request<Body> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(HOST, host.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request
}

pub(crate) fn host_header(addr: SocketAddr) -> Result<HeaderValue, LoadError> {
    HeaderValue::try_from(addr.to_string()).map_err(|_| LoadError::InvalidHeader { what: "host" })
}

pub(crate) fn bearer(token: &str, what: &'static str) -> Result<HeaderValue, LoadError> {
    HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| LoadError::InvalidHeader { what })
}

/// `/v1/sales/{id}/orders`, percent-encoding the opaque id so any id forms a valid path.
pub(crate) fn order_uri(sale_id: &str) -> Result<Uri, LoadError> {
    let path = format!("/v1/sales/{}/orders", encode_segment(sale_id));
    path.parse().map_err(|_| LoadError::InvalidSaleId(sale_id.to_owned()))
}

pub(crate) fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
        if unreserved {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase(idempotency: bool) -> Purchase {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid addr");
        Purchase {
            host: host_header(addr).expect("valid host"),
            order_uris: vec![order_uri("a").expect("uri"), order_uri("b").expect("uri")],
            tokens: (0..3).map(|u| bearer(&format!("t{u}"), "user token").expect("header")).collect(),
            body: Bytes::from_static(br#"{"quantity":1}"#),
            idempotency_prefix: idempotency.then(|| "lg-1".to_owned()),
            next_user: AtomicUsize::new(0),
            pow: false,
        }
    }

    #[test]
    fn order_uri_encodes_unsafe_id_characters() {
        let uri = order_uri("a b/c?d").expect("encoded id is a valid path");
        assert_eq!(uri.path(), "/v1/sales/a%20b%2Fc%3Fd/orders");
        assert_eq!(order_uri("01HX-y_z.~").expect("uri").path(), "/v1/sales/01HX-y_z.~/orders");
    }

    #[test]
    fn purchase_requests_rotate_users_and_spread_sales() {
        let purchase = purchase(false);
        let seen: Vec<(String, String)> = (0..4)
            .map(|seq| {
                let request = purchase.request(0, seq);
                let auth = request.headers()[AUTHORIZATION].to_str().expect("ascii").to_owned();
                (auth, request.uri().path().to_owned())
            })
            .collect();
        assert_eq!(seen[0], ("Bearer t0".to_owned(), "/v1/sales/a/orders".to_owned()));
        assert_eq!(seen[1], ("Bearer t1".to_owned(), "/v1/sales/b/orders".to_owned()));
        assert_eq!(seen[2], ("Bearer t2".to_owned(), "/v1/sales/a/orders".to_owned()));
        assert_eq!(seen[3], ("Bearer t0".to_owned(), "/v1/sales/a/orders".to_owned()));
    }

    #[test]
    fn idempotency_keys_are_unique_when_enabled() {
        let with_keys = purchase(true).request(3, 7);
        assert_eq!(with_keys.headers()["idempotency-key"], "lg-1-3-7");
        assert_eq!(with_keys.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(with_keys.method(), Method::POST);
        let without = purchase(false).request(3, 7);
        assert!(without.headers().get("idempotency-key").is_none());
    }
}
