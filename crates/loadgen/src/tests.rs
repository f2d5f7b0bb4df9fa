//! End-to-end tests against a minimal in-process HTTP/1.1 server that plays the parts of the
//! Stampede API the generator uses.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{healthz, purchases, purchases_open_loop, LoadError, OpenLoop, Phase, PurchaseScenario, Target};

const SECRET: &str = "test-secret";
const ADMIN: &str = "test-admin";

#[derive(Default)]
struct Shop {
    stock_per_sale: AtomicI64,
    /// Units left, shared by all sales: the fake only has to tell sold out from not.
    remaining: AtomicI64,
    sales: AtomicUsize,
    unauthorized: AtomicUsize,
    // A std mutex: held only to insert one key, never across an await.
    keys: Mutex<HashSet<String>>,
    duplicate_keys: AtomicUsize,
    close_each_response: bool,
    /// Orders carrying a valid proof of work (8 zero bits), and carrying an invalid one.
    proven: AtomicUsize,
    badly_proven: AtomicUsize,
}

struct FakeServer {
    addr: SocketAddr,
    shop: Arc<Shop>,
    accept: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Parsed {
    method: String,
    path: String,
    authorization: String,
    idempotency_key: Option<String>,
    pow: Option<String>,
    body: Vec<u8>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

async fn spawn_server(shop: Shop) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let shop = Arc::new(shop);
    let accept_shop = Arc::clone(&shop);
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, Arc::clone(&accept_shop)));
        }
    });
    FakeServer { addr, shop, accept }
}

async fn serve_connection(stream: TcpStream, shop: Arc<Shop>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&stream, &mut buffer).await {
        let (status, body) = route(&shop, &request);
        let connection = if shop.close_each_response { "close" } else { "keep-alive" };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        if write_all(&stream, response.as_bytes()).await.is_none() || shop.close_each_response {
            return;
        }
    }
}

/// tokio's `io-util` feature is not in the workspace, so the fake does raw readiness I/O.
async fn read_request(stream: &TcpStream, buffer: &mut Vec<u8>) -> Option<Parsed> {
    loop {
        if let Some((request, used)) = parse_request(buffer) {
            buffer.drain(..used);
            return Some(request);
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0; 4096];
    loop {
        stream.readable().await.ok()?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> Option<()> {
    while !bytes.is_empty() {
        stream.writable().await.ok()?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
    Some(())
}

/// A complete request at the start of `buffer` and how many bytes it took, if there is one.
fn parse_request(buffer: &[u8]) -> Option<(Parsed, usize)> {
    let head_end = buffer.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split_whitespace();
    let mut request = Parsed {
        method: parts.next()?.to_owned(),
        path: parts.next()?.to_owned(),
        authorization: String::new(),
        idempotency_key: None,
        pow: None,
        body: Vec::new(),
    };
    let mut length = 0;
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "authorization" => request.authorization = value,
            "idempotency-key" => request.idempotency_key = Some(value),
            "stampede-pow" => request.pow = Some(value),
            _ => {}
        }
    }
    let body = buffer.get(head_end..head_end + length)?;
    request.body = body.to_vec();
    Some((request, head_end + length))
}

fn route(shop: &Shop, request: &Parsed) -> (u16, String) {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/healthz") => (200, r#"{"status":"ok"}"#.to_owned()),
        ("GET", "/v1/challenge") => (200, r#"{"challenge":"p1.c.1.8.ff","difficulty":8,"expires_at":"x"}"#.to_owned()),
        ("POST", "/v1/sales") => create_sale(shop, request),
        ("POST", path) if path.starts_with("/v1/sales/") && path.ends_with("/orders") => order(shop, request),
        _ => (404, r#"{"error":{"code":"not_found","message":"no route"}}"#.to_owned()),
    }
}

fn create_sale(shop: &Shop, request: &Parsed) -> (u16, String) {
    if request.authorization != format!("Bearer {ADMIN}") {
        return (403, r#"{"error":{"code":"forbidden","message":"admin only"}}"#.to_owned());
    }
    let sale: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
    assert_eq!(sale["hold_seconds"], 3600);
    assert_eq!(sale["stock"], shop.stock_per_sale.load(Ordering::Relaxed));
    let id = shop.sales.fetch_add(1, Ordering::Relaxed);
    (201, format!(r#"{{"id":"sale {id}"}}"#))
}

fn order(shop: &Shop, request: &Parsed) -> (u16, String) {
    assert!(request.path.starts_with("/v1/sales/sale%20"), "{}", request.path);
    if !valid_user(&request.authorization) {
        shop.unauthorized.fetch_add(1, Ordering::Relaxed);
        return (401, String::new());
    }
    if let Some(proof) = &request.pow {
        // Checked independently of the generator's solver: 8 zero bits is one zero byte.
        let solved = proof.starts_with("p1.c.1.8.ff:") && Sha256::digest(proof.as_bytes())[0] == 0;
        let counter = if solved { &shop.proven } else { &shop.badly_proven };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(key) = &request.idempotency_key {
        let fresh = shop.keys.lock().expect("keys lock").insert(key.clone());
        if !fresh {
            shop.duplicate_keys.fetch_add(1, Ordering::Relaxed);
        }
    }
    if shop.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
        return (409, r#"{"error":{"code":"sold_out","message":"sold out"}}"#.to_owned());
    }
    (201, r#"{"id":"o","status":"held"}"#.to_owned())
}

fn valid_user(authorization: &str) -> bool {
    let Some(token) = authorization.strip_prefix("Bearer ") else {
        return false;
    };
    let key = DecodingKey::from_secret(SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &Validation::new(Algorithm::HS256));
    claims.is_ok_and(|data| data.claims.sub.starts_with("loadgen-"))
}

fn target(addr: SocketAddr) -> Target {
    Target { addr, replicas: Vec::new(), jwt_secret: SECRET.to_owned(), admin_token: ADMIN.to_owned() }
}

fn phase(connections: usize, warmup_ms: u64, duration_ms: u64) -> Phase {
    Phase { connections, warmup: Duration::from_millis(warmup_ms), duration: Duration::from_millis(duration_ms) }
}

fn scenario(sales: usize, stock_per_sale: u32) -> PurchaseScenario {
    PurchaseScenario {
        sales,
        stock_per_sale,
        users: 500,
        quantity: 1,
        per_user_limit: 1,
        idempotency_keys: true,
        stock_buckets: 1,
        pow: false,
    }
}

fn shop_with_stock(units: i64, per_sale: i64) -> Shop {
    Shop { remaining: AtomicI64::new(units), stock_per_sale: AtomicI64::new(per_sale), ..Shop::default() }
}

#[tokio::test]
async fn healthz_measures_only_after_warmup() {
    let server = spawn_server(Shop::default()).await;
    let report = healthz(&target(server.addr), &phase(4, 50, 200)).await.expect("phase runs");
    assert!(report.requests > 0, "{}", report.line());
    assert_eq!(report.ok, report.requests);
    assert_eq!(report.errors, 0);
    assert_eq!(report.io_errors, 0);
    assert_eq!(report.by_status.get(&200), Some(&report.requests));
    assert!(report.elapsed >= Duration::from_millis(200));
    assert!(report.elapsed < Duration::from_secs(2), "{:?}", report.elapsed);
    assert!(report.p50 <= report.p99 && report.p99 <= report.p999 && report.p999 <= report.max);
}

#[tokio::test]
async fn purchases_sell_out_and_report_conflicts() {
    let server = spawn_server(shop_with_stock(100, 50)).await;
    let report = purchases(&target(server.addr), &phase(4, 0, 300), &scenario(2, 50)).await.expect("phase runs");
    assert_eq!(report.ok, 100, "{}", report.line());
    assert_eq!(report.by_status.get(&201), Some(&100));
    assert!(report.by_status.get(&409).is_some_and(|&n| n > 0), "{}", report.line());
    assert_eq!(report.errors, report.requests - 100);
    assert_eq!(server.shop.sales.load(Ordering::Relaxed), 2);
    assert_eq!(server.shop.unauthorized.load(Ordering::Relaxed), 0);
    assert_eq!(server.shop.duplicate_keys.load(Ordering::Relaxed), 0);
    let keys = server.shop.keys.lock().expect("keys lock").len() as u64;
    assert_eq!(keys, report.requests);
}

#[tokio::test]
async fn reconnects_when_server_closes_each_connection() {
    let shop = Shop { close_each_response: true, ..Shop::default() };
    let server = spawn_server(shop).await;
    let report = healthz(&target(server.addr), &phase(2, 0, 200)).await.expect("phase runs");
    assert!(report.requests > 10, "{}", report.line());
    assert_eq!(report.io_errors, 0, "{}", report.line());
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    let result = healthz(&target(addr), &phase(1, 0, 100)).await;
    assert!(matches!(result, Err(LoadError::Connect { .. })), "{result:?}");
}

#[tokio::test]
async fn rejected_sale_creation_is_an_error() {
    let server = spawn_server(shop_with_stock(10, 10)).await;
    let wrong_admin = Target { admin_token: "nope".to_owned(), ..target(server.addr) };
    let result = purchases(&wrong_admin, &phase(1, 0, 100), &scenario(1, 10)).await;
    let Err(LoadError::UnexpectedStatus { status, body, .. }) = result else {
        panic!("expected an unexpected status error, got {result:?}");
    };
    assert_eq!(status, 403);
    assert!(body.contains("forbidden"));
}

#[tokio::test]
async fn empty_scenarios_are_rejected() {
    let server = spawn_server(Shop::default()).await;
    let no_users = PurchaseScenario { users: 0, ..scenario(1, 10) };
    let result = purchases(&target(server.addr), &phase(1, 0, 100), &no_users).await;
    assert!(matches!(result, Err(LoadError::InvalidScenario(_))), "{result:?}");
    let result = healthz(&target(server.addr), &phase(0, 0, 100)).await;
    assert!(matches!(result, Err(LoadError::InvalidScenario(_))), "{result:?}");
}

#[tokio::test]
async fn purchases_with_pow_carry_a_solved_challenge_each() {
    let server = spawn_server(shop_with_stock(1_000, 1_000)).await;
    let with_pow = PurchaseScenario { pow: true, ..scenario(1, 1_000) };
    let report = purchases(&target(server.addr), &phase(2, 0, 200), &with_pow).await.expect("phase runs");
    assert!(report.ok > 0, "{}", report.line());
    assert_eq!(report.io_errors, 0, "{}", report.line());
    assert_eq!(server.shop.badly_proven.load(Ordering::Relaxed), 0);
    assert_eq!(server.shop.proven.load(Ordering::Relaxed) as u64, report.requests);
}

fn open_loop(rate: f64, connections: usize, duration_ms: u64) -> OpenLoop {
    OpenLoop { rate, connections, warmup: Duration::from_millis(50), duration: Duration::from_millis(duration_ms) }
}

#[tokio::test]
async fn open_loop_sends_every_due_request_when_connections_suffice() {
    let server = spawn_server(shop_with_stock(1_000_000, 1_000_000)).await;
    let open = open_loop(2_000.0, 16, 300);
    let report = purchases_open_loop(&target(server.addr), &open, &scenario(1, 1_000_000)).await.expect("runs");
    assert!(report.scheduled.abs_diff(600) <= 1, "{}", report.line());
    assert_eq!(report.not_sent, 0, "{}", report.line());
    assert_eq!(report.io_errors, 0, "{}", report.line());
    assert!(report.ok.abs_diff(report.scheduled) <= 1, "{}", report.line());
    assert_eq!(report.accepted(), report.ok);
    assert_eq!(report.shed, 0);
    assert!((report.goodput() - 2_000.0).abs() < 20.0, "{}", report.line());
    let from_due = report.accepted_from_due.quantile(0.5);
    assert!(from_due >= report.accepted_from_send.quantile(0.5), "{}", report.line());
}

#[tokio::test]
async fn open_loop_counts_what_a_busy_pool_cannot_send() {
    let server = spawn_server(shop_with_stock(1_000_000, 1_000_000)).await;
    let open = open_loop(1_000_000.0, 1, 200);
    let report = purchases_open_loop(&target(server.addr), &open, &scenario(1, 1_000_000)).await.expect("runs");
    assert!(report.not_sent > report.scheduled / 2, "{}", report.line());
    let accounted = report.not_sent + report.io_errors + report.answered();
    assert!(accounted.abs_diff(report.scheduled) <= 2, "{accounted} vs {}", report.line());
}

#[tokio::test]
async fn open_loop_rejects_pow_and_a_zero_rate() {
    let server = spawn_server(Shop::default()).await;
    let with_pow = PurchaseScenario { pow: true, ..scenario(1, 10) };
    let result = purchases_open_loop(&target(server.addr), &open_loop(10.0, 1, 10), &with_pow).await;
    assert!(matches!(result, Err(LoadError::InvalidScenario(_))), "{result:?}");
    let result = purchases_open_loop(&target(server.addr), &open_loop(0.0, 1, 10), &scenario(1, 10)).await;
    assert!(matches!(result, Err(LoadError::InvalidScenario(_))), "{result:?}");
}
