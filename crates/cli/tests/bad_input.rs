//! Hostile and malformed requests get precise JSON errors, never a 5xx, and the server lives on.
mod common;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, RequestBuilder};
use serde_json::json;

use common::{Api, Reply, Server};

const JSON: &str = "application/json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_wrong_types_are_invalid_request() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 3, 600).await;
    let orders_path = format!("/v1/sales/{sale_id}/orders");

    let truncated = api.send(raw(api.admin(Method::POST, "/v1/sales"), r#"{"name": "x", "stock": "#)).await;
    truncated.expect_error(400, "invalid_request");
    let not_json = api.send(raw(api.user("bi-user", Method::POST, &orders_path), "not json")).await;
    not_json.expect_error(400, "invalid_request");

    let cases = [
        (api.admin(Method::POST, "/v1/sales"), json!({"name": "x", "stock": "ten", "price_cents": 100}), "stock"),
        (
            api.admin(Method::POST, "/v1/sales"),
            json!({"name": "x", "stock": 10, "price_cents": "cheap"}),
            "price_cents",
        ),
        (api.admin(Method::POST, "/v1/sales"), json!({"name": 7, "stock": 10, "price_cents": 100}), "name"),
        (api.user("bi-user", Method::POST, &orders_path), json!({"quantity": "x"}), "quantity"),
        (api.request(Method::POST, "/v1/users"), json!({"username": 5, "password": "long enough pw"}), "username"),
    ];
    for (request, body, field) in cases {
        let reply = api.send(request.json(&body)).await;
        reply.expect_error(400, "invalid_request");
        assert!(reply.message().contains(field), "message should name `{field}`: {}", reply.text);
    }
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_payload_too_large() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 1, 600).await;
    let padding = "x".repeat(70 * 1024);

    let sale = json!({"name": padding, "stock": 1, "price_cents": 1});
    api.send(api.admin(Method::POST, "/v1/sales").json(&sale)).await.expect_error(413, "payload_too_large");
    let order = json!({"quantity": 1, "note": padding});
    let path = format!("/v1/sales/{sale_id}/orders");
    api.send(api.user("bi-big", Method::POST, &path).json(&order)).await.expect_error(413, "payload_too_large");
    let user = json!({"username": "bigbody", "password": padding});
    api.send(api.request(Method::POST, "/v1/users").json(&user)).await.expect_error(413, "payload_too_large");

    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["available"].as_u64(), Some(10), "{sale}");
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthorized() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 1, 600).await;
    let future = common::now_secs() + 3600;

    let bearers = [
        "garbage".to_string(),
        "a.b.c".to_string(),
        String::new(),
        api.sign(&json!({"sub": "bi-eve", "exp": common::now_secs() - 3600}), api.secret()),
        api.sign(&json!({"sub": "bi-eve", "exp": future}), "not-the-server-secret"),
        api.sign(&json!({"exp": future}), api.secret()),
        sign_with(Algorithm::HS512, &json!({"sub": "bi-eve", "exp": future}), api.secret()),
        unsigned_token(&json!({"sub": "bi-eve", "exp": future})),
    ];
    let path = format!("/v1/sales/{sale_id}/orders");
    for bearer in &bearers {
        let list =
            api.send(api.request(Method::GET, "/v1/orders").header("Authorization", format!("Bearer {bearer}"))).await;
        list.expect_error(401, "unauthorized");
        let buy = api.request(Method::POST, &path).header("Authorization", format!("Bearer {bearer}"));
        api.send(buy.json(&json!({"quantity": 1}))).await.expect_error(401, "unauthorized");
    }
    api.send(api.request(Method::GET, "/v1/orders")).await.expect_error(401, "unauthorized");
    let basic = api.request(Method::GET, "/v1/orders").header("Authorization", "Basic dXNlcjpwYXNzd29yZA==");
    api.send(basic).await.expect_error(401, "unauthorized");

    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["held"].as_u64(), Some(0), "no forged purchase went through: {sale}");
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_refuse_users_and_strangers() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 1, 600).await;
    let ledger = format!("/v1/admin/sales/{sale_id}/ledger");
    let sale = json!({"name": "sneaky", "stock": 1, "price_cents": 1});

    let as_user = api.user("bi-mallory", Method::POST, "/v1/sales").json(&sale);
    api.send(as_user).await.expect_error(403, "forbidden");
    api.send(api.user("bi-mallory", Method::GET, &ledger)).await.expect_error(403, "forbidden");
    api.send(api.request(Method::GET, &ledger)).await.expect_error(401, "unauthorized");
    let wrong_admin = api.request(Method::POST, "/v1/sales").bearer_auth("not-the-admin-token").json(&sale);
    api.send(wrong_admin).await.expect_error(401, "unauthorized");
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_foreign_orders_are_not_found() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 1, 600).await;

    for path in ["/nope", "/v1/nope", "/v1/sales/does-not-exist", &format!("/v1/sales/{sale_id}/nope")] {
        api.send(api.user("bi-alice", Method::GET, path)).await.expect_error(404, "not_found");
    }
    let missing_sale = api.user("bi-alice", Method::POST, "/v1/sales/does-not-exist/orders").json(&json!({}));
    api.send(missing_sale).await.expect_error(404, "not_found");
    api.order("bi-alice", "does-not-exist").await.expect_error(404, "not_found");

    let order = api.buy("bi-alice", &sale_id, 1, Some("alice-1")).await;
    let order_id = order.expect(201)["id"].as_str().expect("order id").to_string();
    api.order("bi-bob", &order_id).await.expect_error(404, "not_found");
    api.pay("bi-bob", &order_id).await.expect_error(404, "not_found");
    api.cancel("bi-bob", &order_id).await.expect_error(404, "not_found");
    assert_eq!(api.order("bi-alice", &order_id).await.expect(200)["status"], json!("held"));
    assert!(api.orders("bi-bob").await.is_empty(), "bob sees no orders");
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_idempotency_keys_are_rejected() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 1, 600).await;

    for key in ["k".repeat(200), "k".repeat(129), "has space".to_string()] {
        api.buy("bi-key", &sale_id, 1, Some(&key)).await.expect_error(400, "invalid_request");
    }
    api.buy("bi-key", &sale_id, 1, Some(&"k".repeat(128))).await.expect(201);
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["held"].as_u64(), Some(1), "only the valid key bought: {sale}");
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_quantities_are_rejected() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(10, 3, 600).await;
    let path = format!("/v1/sales/{sale_id}/orders");

    let bodies = [
        r#"{"quantity":0}"#,
        r#"{"quantity":-1}"#,
        r#"{"quantity":"x"}"#,
        r#"{"quantity":1e9}"#,
        r#"{"quantity":1000000000}"#,
        r#"{"quantity":1.5}"#,
        r#"{"quantity":4}"#,
        r#"{"quantity":99999999999999999999999}"#,
    ];
    for body in bodies {
        let reply = api.send(raw(api.user("bi-qty", Method::POST, &path), body)).await;
        assert_eq!(reply.status, 400, "body {body}: {}", reply.text);
        reply.expect_error(400, "invalid_request");
    }
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["available"].as_u64(), Some(10), "nothing was held: {sale}");
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_not_5xx() {
    let mut server = Server::start().await;
    let api = server.api().clone();

    let long_path = format!("/v1/sales/{}", "a".repeat(20_000));
    expect_client_error(api.send(api.request(Method::GET, &long_path)).await);
    let mut many_headers = api.request(Method::GET, "/v1/nope");
    for i in 0..300 {
        many_headers = many_headers.header(format!("x-junk-{i}"), "v".repeat(64));
    }
    expect_client_error(api.send(many_headers).await);

    for path in ["/v1/sales/%FF", "/v1/orders/%C3%28", "/v1/admin/sales/%FE/ledger"] {
        let reply = api.send(api.user("bi-alice", Method::GET, path)).await;
        expect_client_error(reply).expect_error_shape();
    }

    let wrong_method = api.send(api.admin(Method::DELETE, "/v1/sales")).await;
    expect_client_error(wrong_method).expect_error_shape();
    let wrong_type = api.admin(Method::POST, "/v1/sales").header("Content-Type", "text/plain");
    let wrong_type = api.send(wrong_type.body(r#"{"name":"x","stock":1,"price_cents":1}"#)).await;
    expect_no_server_error(wrong_type);
    assert_alive(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_reject_bad_input_and_hide_which_part_was_wrong() {
    let mut server = Server::start().await;
    let api = server.api().clone();

    for (username, password) in [("ab", "long enough"), ("bad name!", "long enough"), ("okname", "short")] {
        let reply = api.send(register(&api, username, password)).await;
        reply.expect_error(400, "invalid_request");
    }
    let created = api.send(register(&api, "bi.carol-1", "correct horse")).await;
    assert_eq!(created.expect(201)["username"], json!("bi.carol-1"));
    api.send(register(&api, "bi.carol-1", "another pass")).await.expect_error(409, "username_taken");

    api.send(login(&api, "bi.carol-1", "wrong password")).await.expect_error(401, "invalid_credentials");
    api.send(login(&api, "nobody-here", "correct horse")).await.expect_error(401, "invalid_credentials");
    let session = api.send(login(&api, "bi.carol-1", "correct horse")).await;
    let token = session.expect(200)["token"].as_str().expect("session token").to_string();
    assert!(session.body["expires_at"].is_string(), "{}", session.text);
    api.send(api.request(Method::GET, "/v1/orders").bearer_auth(token)).await.expect(200);
    assert_alive(&mut server).await;
}

fn raw(request: RequestBuilder, body: &'static str) -> RequestBuilder {
    request.header("Content-Type", JSON).body(body)
}

fn register(api: &Api, username: &str, password: &str) -> RequestBuilder {
    api.request(Method::POST, "/v1/users").json(&json!({"username": username, "password": password}))
}

fn login(api: &Api, username: &str, password: &str) -> RequestBuilder {
    api.request(Method::POST, "/v1/sessions").json(&json!({"username": username, "password": password}))
}

fn expect_client_error(reply: Reply) -> Reply {
    assert!((400..500).contains(&reply.status), "expected a 4xx, got {} {}", reply.status, reply.text);
    reply
}

/// Lenient acceptance is fine; when refused, the error still has the contract shape.
fn expect_no_server_error(reply: Reply) {
    assert!(reply.status < 500, "got a 5xx: {} {}", reply.status, reply.text);
    if reply.status >= 400 {
        reply.expect_error_shape();
    }
}

async fn assert_alive(server: &mut Server) {
    assert!(server.is_running(), "server process exited");
    let health = server.api().send(server.api().request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, 200, "healthz: {}", health.text);
}

fn sign_with(alg: Algorithm, claims: &serde_json::Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("sign jwt")
}

/// `alg: none` with an empty signature, the classic forgery.
fn unsigned_token(claims: &serde_json::Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
