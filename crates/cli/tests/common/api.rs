use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Cheap to clone: the client is a shared connection pool.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    secret: String,
}

/// A decoded response; `body` is `Null` when the body is not JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// The error code when the body has the contract's error shape.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// The `Retry-After` header in whole seconds; panics when it is missing or not a number.
    pub fn retry_after(&self) -> u64 {
        let header = self.headers.get("retry-after").unwrap_or_else(|| panic!("no Retry-After: {self:?}"));
        let text = header.to_str().unwrap_or_else(|_| panic!("Retry-After is not text: {self:?}"));
        text.trim().parse().unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {text:?}"))
    }

    /// Asserts `status` and returns the JSON body.
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status, body: {}", self.text);
        &self.body
    }

    /// Asserts an error response with the contract shape, status and code.
    pub fn expect_error(&self, status: u16, code: &str) -> &Reply {
        assert_eq!(self.status, status, "unexpected status, body: {}", self.text);
        self.expect_error_shape();
        assert_eq!(self.code(), code, "unexpected error code, body: {}", self.text);
        self
    }

    /// Asserts `{"error":{"code":"<snake_case>","message":"<text>"}}`.
    pub fn expect_error_shape(&self) -> &Reply {
        let code = self.code();
        let snake = !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        assert!(snake, "error code is not snake_case (status {}): {}", self.status, self.text);
        assert!(!self.message().is_empty(), "error message missing (status {}): {}", self.status, self.text);
        self
    }
}

impl Api {
    pub fn new(secret: String, admin_token: String) -> Api {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build http client");
        Api { base: String::new(), admin_token, client, secret }
    }

    pub fn with_base(&self, base: String) -> Api {
        Api { base, ..self.clone() }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.admin_token)
    }

    pub fn user(&self, user: &str, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(self.token(user))
    }

    /// An HS256 token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        self.sign(&json!({ "sub": user, "exp": now_secs() + 3600 }), &self.secret)
    }

    pub fn sign(&self, claims: &Value, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&Header::default(), claims, &key).expect("sign jwt")
    }

    /// Sends and decodes; transport errors are returned for callers that expect them.
    pub async fn try_send(&self, request: RequestBuilder) -> Result<Reply, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, headers, text, body })
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        self.try_send(request).await.expect("http request failed")
    }

    pub async fn create_sale(&self, body: Value) -> Value {
        let reply = self.send(self.admin(Method::POST, "/v1/sales").json(&body)).await;
        reply.expect(201).clone()
    }

    /// A live sale with the given stock, per-user limit and hold length; returns its id.
    pub async fn sale_with(&self, stock: u64, per_user_limit: u64, hold_seconds: u64) -> String {
        let body = json!({
            "name": "test sale",
            "stock": stock,
            "price_cents": 1999,
            "per_user_limit": per_user_limit,
            "hold_seconds": hold_seconds,
        });
        let sale = self.create_sale(body).await;
        sale["id"].as_str().expect("sale id").to_string()
    }

    pub async fn sale(&self, id: &str) -> Value {
        let reply = self.send(self.request(Method::GET, &format!("/v1/sales/{id}"))).await;
        reply.expect(200).clone()
    }

    pub fn buy_request(&self, user: &str, sale_id: &str, quantity: u64, key: Option<&str>) -> RequestBuilder {
        let path = format!("/v1/sales/{sale_id}/orders");
        let request = self.user(user, Method::POST, &path).json(&json!({ "quantity": quantity }));
        match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        }
    }

    pub async fn buy(&self, user: &str, sale_id: &str, quantity: u64, key: Option<&str>) -> Reply {
        self.send(self.buy_request(user, sale_id, quantity, key)).await
    }

    pub async fn try_buy(&self, user: &str, sale_id: &str, quantity: u64, key: &str) -> Result<Reply, reqwest::Error> {
        self.try_send(self.buy_request(user, sale_id, quantity, Some(key))).await
    }

    pub async fn order(&self, user: &str, order_id: &str) -> Reply {
        self.send(self.user(user, Method::GET, &format!("/v1/orders/{order_id}"))).await
    }

    /// The caller's orders, newest first.
    pub async fn orders(&self, user: &str) -> Vec<Value> {
        let reply = self.send(self.user(user, Method::GET, "/v1/orders")).await;
        let body = reply.expect(200);
        body["orders"].as_array().expect("orders array").clone()
    }

    pub async fn pay(&self, user: &str, order_id: &str) -> Reply {
        let request = self.user(user, Method::POST, &format!("/v1/orders/{order_id}/pay"));
        self.send(request.json(&json!({ "payment_ref": "test-payment" }))).await
    }

    pub async fn cancel(&self, user: &str, order_id: &str) -> Reply {
        let request = self.user(user, Method::POST, &format!("/v1/orders/{order_id}/cancel"));
        self.send(request.json(&json!({}))).await
    }

    pub async fn waitlist(&self, user: &str, sale_id: &str) -> Reply {
        let request = self.user(user, Method::POST, &format!("/v1/sales/{sale_id}/waitlist"));
        self.send(request.json(&json!({}))).await
    }

    pub async fn ledger(&self, sale_id: &str) -> Value {
        let path = format!("/v1/admin/sales/{sale_id}/ledger");
        let reply = self.send(self.admin(Method::GET, &path)).await;
        reply.expect(200).clone()
    }

    /// Checks `available + held + sold == stock` on the sale and on the ledger, and that the
    /// ledger reports itself consistent; returns the sale.
    pub async fn assert_consistent(&self, sale_id: &str) -> Value {
        let sale = self.sale(sale_id).await;
        assert_sums_to_stock(&sale, "sale");
        let ledger = self.ledger(sale_id).await;
        assert_sums_to_stock(&ledger, "ledger");
        assert_eq!(ledger["consistent"], json!(true), "ledger not consistent: {ledger}");
        assert_eq!(ledger["stock"], sale["stock"], "ledger stock differs: {ledger} vs {sale}");
        sale
    }

    pub async fn create_auction(&self, body: Value) -> Value {
        let reply = self.send(self.admin(Method::POST, "/v1/auctions").json(&body)).await;
        reply.expect(201).clone()
    }

    /// A live auction ending in an hour, starting at 10.00, with `overrides` on top; returns it.
    pub async fn auction_with(&self, overrides: Value) -> Value {
        let mut body = json!({
            "title": "test lot",
            "starting_price_cents": 1000,
            "ends_at": rfc3339_after(Duration::from_secs(3600)),
        });
        let fields = overrides.as_object().expect("overrides are a JSON object");
        for (field, value) in fields {
            body[field] = value.clone();
        }
        self.create_auction(body).await
    }

    pub async fn auction(&self, id: &str) -> Value {
        let reply = self.send(self.request(Method::GET, &format!("/v1/auctions/{id}"))).await;
        reply.expect(200).clone()
    }

    pub fn bid_request(&self, user: &str, auction_id: &str, max_cents: i64, key: Option<&str>) -> RequestBuilder {
        let path = format!("/v1/auctions/{auction_id}/bids");
        let request = self.user(user, Method::POST, &path).json(&json!({ "max_amount_cents": max_cents }));
        match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        }
    }

    pub async fn bid(&self, user: &str, auction_id: &str, max_cents: i64, key: Option<&str>) -> Reply {
        self.send(self.bid_request(user, auction_id, max_cents, key)).await
    }

    pub async fn buy_now(&self, user: &str, auction_id: &str) -> Reply {
        let request = self.user(user, Method::POST, &format!("/v1/auctions/{auction_id}/buy-now"));
        self.send(request.json(&json!({}))).await
    }

    /// `GET /v1/challenge`, as `user` when given; returns the challenge body.
    pub async fn challenge(&self, user: Option<&str>) -> Value {
        let request = match user {
            Some(user) => self.user(user, Method::GET, "/v1/challenge"),
            None => self.request(Method::GET, "/v1/challenge"),
        };
        self.send(request).await.expect(200).clone()
    }

    /// A fresh challenge for `user`, solved at the difficulty it asks: a `Stampede-Pow` value.
    pub async fn solved_challenge(&self, user: Option<&str>) -> String {
        let challenge = self.challenge(user).await;
        let token = challenge["challenge"].as_str().expect("challenge token").to_string();
        let difficulty = challenge["difficulty"].as_u64().expect("challenge difficulty");
        solve_pow(&token, u32::try_from(difficulty).expect("difficulty fits u32")).await
    }

    /// Bans in force, as `GET /v1/admin/bans` lists them.
    pub async fn bans(&self) -> Vec<Value> {
        let reply = self.send(self.admin(Method::GET, "/v1/admin/bans")).await;
        reply.expect(200)["bans"].as_array().expect("bans array").clone()
    }

    /// The subjects (`user:<id>`, `ip:<addr>`) banned now.
    pub async fn banned_subjects(&self) -> Vec<String> {
        let bans = self.bans().await;
        bans.iter().map(|ban| ban["subject"].as_str().expect("ban subject").to_string()).collect()
    }

    /// `POST /v1/admin/bans`.
    pub async fn ban(&self, body: Value) -> Reply {
        self.send(self.admin(Method::POST, "/v1/admin/bans").json(&body)).await
    }

    /// `DELETE /v1/admin/bans/{subject}`.
    pub async fn lift_ban(&self, subject: &str) -> Reply {
        self.send(self.admin(Method::DELETE, &format!("/v1/admin/bans/{subject}"))).await
    }
}

/// Finds a nonce for a proof-of-work challenge, off the reactor; returns the `Stampede-Pow`
/// header value `<challenge>:<nonce>` whose SHA-256 has `difficulty` leading zero bits.
pub async fn solve_pow(challenge: &str, difficulty: u32) -> String {
    let challenge = challenge.to_string();
    let solve = move || {
        use sha2::{Digest, Sha256};
        let prefix = Sha256::new().chain_update(challenge.as_bytes()).chain_update(b":");
        let nonce = (0u64..)
            .find(|nonce| leading_zero_bits(&prefix.clone().chain_update(nonce.to_string()).finalize()) >= difficulty)
            .expect("some nonce solves the challenge");
        format!("{challenge}:{nonce}")
    };
    tokio::task::spawn_blocking(solve).await.expect("solver panicked")
}

/// Leading zero bits of a hash, as the proof of work counts them.
pub fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for &byte in hash {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

pub fn count(value: &Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or_else(|| panic!("field {field} is not a count in {value}"))
}

fn assert_sums_to_stock(value: &Value, what: &str) {
    let total = count(value, "available") + count(value, "held") + count(value, "sold");
    assert_eq!(total, count(value, "stock"), "{what}: available + held + sold != stock: {value}");
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after epoch").as_secs()
}

/// The RFC 3339 UTC time `delay` from now, with milliseconds.
pub fn rfc3339_after(delay: Duration) -> String {
    let at = chrono::Utc::now() + chrono::Duration::from_std(delay).expect("delay in range");
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time from a response.
pub fn parse_rfc3339(text: &str) -> chrono::DateTime<chrono::Utc> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|error| panic!("bad time {text}: {error}"));
    parsed.with_timezone(&chrono::Utc)
}
