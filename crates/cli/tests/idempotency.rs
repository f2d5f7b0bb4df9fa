//! One Idempotency-Key means one order per user, even when the requests race.
mod common;

use std::collections::HashSet;

use common::{for_each_concurrent, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_create_one_order() {
    let server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(100, 5, 600).await;

    let shared = (api.clone(), sale_id.clone());
    let replies = for_each_concurrent((0..32).collect(), 32, move |_: usize| {
        let (api, sale_id) = shared.clone();
        async move { api.buy("idem-alice", &sale_id, 2, Some("checkout-42")).await }
    })
    .await;

    let mut ids = HashSet::new();
    for reply in &replies {
        assert!(matches!(reply.status, 200 | 201), "unexpected reply {} {}", reply.status, reply.text);
        ids.insert(reply.body["id"].as_str().expect("order id").to_string());
    }
    assert_eq!(ids.len(), 1, "all retries must return the same order: {ids:?}");

    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["held"].as_u64(), Some(2), "the quantity is held once: {sale}");
    let orders = api.orders("idem-alice").await;
    assert_eq!(orders.len(), 1, "one order listed: {orders:?}");
    assert!(ids.contains(orders[0]["id"].as_str().expect("order id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_retry_returns_the_same_order() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 1, 600).await;

    let first = api.buy("idem-carol", &sale_id, 1, Some("key-1")).await;
    let first_id = first.expect(201)["id"].clone();
    let again = api.buy("idem-carol", &sale_id, 1, Some("key-1")).await;
    assert!(matches!(again.status, 200 | 201), "retry: {} {}", again.status, again.text);
    assert_eq!(again.body["id"], first_id);

    let other_key = api.buy("idem-carol", &sale_id, 1, Some("key-2")).await;
    other_key.expect_error(409, "limit_reached");
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["held"].as_u64(), Some(1), "{sale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_from_another_user_is_another_order() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 2, 600).await;

    let alice = api.buy("idem-alice", &sale_id, 1, Some("shared-key")).await;
    let bob = api.buy("idem-bob", &sale_id, 1, Some("shared-key")).await;
    let alice_order = alice.expect(201);
    let bob_order = bob.expect(201);
    assert_ne!(alice_order["id"], bob_order["id"]);
    assert_eq!(bob_order["user_id"].as_str(), Some("idem-bob"));

    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["held"].as_u64(), Some(2), "{sale}");
    assert_eq!(api.orders("idem-alice").await.len(), 1);
    assert_eq!(api.orders("idem-bob").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_twice_sells_once_and_cancel_returns_units() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 2, 600).await;

    let paid = api.buy("idem-dora", &sale_id, 2, Some("dora-1")).await;
    let paid_id = paid.expect(201)["id"].as_str().expect("order id").to_string();
    for _ in 0..2 {
        let reply = api.pay("idem-dora", &paid_id).await;
        assert_eq!(reply.expect(200)["status"], "paid", "{}", reply.text);
    }
    let cancelled = api.buy("idem-erin", &sale_id, 1, Some("erin-1")).await;
    let cancelled_id = cancelled.expect(201)["id"].as_str().expect("order id").to_string();
    let reply = api.cancel("idem-erin", &cancelled_id).await;
    assert_eq!(reply.expect(200)["status"], "cancelled", "{}", reply.text);

    let sale = api.assert_consistent(&sale_id).await;
    let counts = (sale["available"].as_u64(), sale["held"].as_u64(), sale["sold"].as_u64());
    assert_eq!(counts, (Some(8), Some(0), Some(2)), "{sale}");
    api.buy("idem-dora", &sale_id, 1, Some("dora-2")).await.expect_error(409, "limit_reached");
}
