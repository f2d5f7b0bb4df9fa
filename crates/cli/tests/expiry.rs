//! Holds expire on the wall clock (this drives the real binary, so real time is used, in
//! short waits), release their units to the waitlist, and survive restarts and kill -9.
mod common;

use std::time::Duration;

use serde_json::Value;

use common::{wait_for, Api, Server};

/// The contract releases an expired hold within 1 s of `expires_at`; allow a little more.
const EXPIRY_GRACE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_hold_expires_and_its_units_return() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(5, 1, 1).await;

    let order = api.buy("exp-ann", &sale_id, 1, Some("ann-1")).await;
    let order_id = order.expect(201)["id"].as_str().expect("order id").to_string();
    assert_eq!(api.sale(&sale_id).await["held"].as_u64(), Some(1));

    let expired = wait_for_status(api, "exp-ann", &order_id, "expired", Duration::from_secs(1) + EXPIRY_GRACE).await;
    assert_eq!(expired["status"], "expired", "the hold expires: {expired}");
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!((sale["available"].as_u64(), sale["held"].as_u64()), (Some(5), Some(0)), "{sale}");

    api.pay("exp-ann", &order_id).await.expect_error(409, "hold_expired");
    let after_pay = api.assert_consistent(&sale_id).await;
    assert_eq!(after_pay["sold"].as_u64(), Some(0), "an expired hold is never sold: {after_pay}");
}

/// `hold_seconds` is per sale, so the waitlisted user's fresh hold is as long as the first:
/// 3 s leaves room to observe it and restart before it expires in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_units_go_to_the_waitlist_and_survive_restart() {
    let mut server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(1, 1, 3).await;

    let first = api.buy("exp-alice", &sale_id, 1, Some("alice-1")).await;
    let first_id = first.expect(201)["id"].as_str().expect("order id").to_string();
    api.buy("exp-bob", &sale_id, 1, Some("bob-1")).await.expect_error(409, "sold_out");
    let queued = api.waitlist("exp-bob", &sale_id).await;
    assert_eq!(queued.expect(201)["position"].as_u64(), Some(1), "{}", queued.text);

    let limit = Duration::from_secs(3) + EXPIRY_GRACE;
    let bob_hold = wait_for(limit, || held_order_of(&api, "exp-bob", &sale_id)).await;
    let bob_hold = bob_hold.expect("bob never got a hold from the waitlist");
    assert_eq!(api.order("exp-alice", &first_id).await.expect(200)["status"], "expired");
    assert_handed_over(&api, &sale_id).await;

    server.restart().await;
    let api = server.api().clone();
    assert_eq!(api.order("exp-alice", &first_id).await.expect(200)["status"], "expired");
    let bob_id = bob_hold["id"].as_str().expect("order id");
    assert_eq!(api.order("exp-bob", bob_id).await.expect(200)["status"], "held", "bob's hold survives restart");
    assert_handed_over(&api, &sale_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_lapsed_while_the_server_was_down_is_expired_at_start() {
    let mut server = Server::start().await;
    let sale_id = server.api().sale_with(3, 1, 2).await;
    let order = server.api().buy("exp-carl", &sale_id, 1, Some("carl-1")).await;
    let order_id = order.expect(201)["id"].as_str().expect("order id").to_string();

    server.kill9().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await;

    let api = server.api();
    assert_eq!(api.order("exp-carl", &order_id).await.expect(200)["status"], "expired");
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!((sale["available"].as_u64(), sale["held"].as_u64()), (Some(3), Some(0)), "{sale}");
}

async fn wait_for_status(api: &Api, user: &str, order_id: &str, status: &str, limit: Duration) -> Value {
    let reached = wait_for(limit, || async {
        let order = api.order(user, order_id).await.expect(200).clone();
        (order["status"] == status).then_some(order)
    })
    .await;
    match reached {
        Some(order) => order,
        None => api.order(user, order_id).await.expect(200).clone(),
    }
}

async fn held_order_of(api: &Api, user: &str, sale_id: &str) -> Option<Value> {
    let orders = api.orders(user).await;
    orders.into_iter().find(|order| order["sale_id"].as_str() == Some(sale_id) && order["status"] == "held")
}

/// The single unit moved from the expired hold to the waitlisted user's hold.
async fn assert_handed_over(api: &Api, sale_id: &str) {
    let sale = api.assert_consistent(sale_id).await;
    assert_eq!((sale["available"].as_u64(), sale["held"].as_u64()), (Some(0), Some(1)), "{sale}");
}
