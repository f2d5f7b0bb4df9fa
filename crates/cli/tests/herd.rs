//! Thundering herd: many distinct users race for little stock; nothing is oversold.
mod common;

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use common::{for_each_concurrent, Api, Reply, Server};

const CONCURRENCY: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_users_race_for_five_hundred_units() {
    let server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(500, 1, 600).await;

    let attempts: Vec<(String, u64)> = (0..5000).map(|i| (format!("herd-a-{i}"), 1)).collect();
    let replies = race(&api, &sale_id, attempts).await;

    let won = successes(&replies);
    assert_eq!(won.len(), 500, "exactly the stock is sold");
    assert_only_sold_out_otherwise(&replies);
    assert_distinct_order_ids(&won);
    assert_orders_belong_to_buyers(&replies, 1);

    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(
        (sale["available"].as_u64(), sale["held"].as_u64(), sale["sold"].as_u64()),
        (Some(0), Some(500), Some(0)),
        "{sale}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_holds_under_duplicate_requests() {
    let server = Server::start().await;
    let api = server.api().clone();
    let sale_id = api.sale_with(600, 3, 600).await;

    // Every third user fires two concurrent requests for 2 units; 2 + 2 > limit 3, so at most
    // one of them may win. Demand (about 2,660 units) far exceeds the 600 in stock.
    let users: Vec<String> = (0..1000).map(|i| format!("herd-b-{i}")).collect();
    let attempts: Vec<(String, u64)> = users
        .iter()
        .enumerate()
        .flat_map(|(i, user)| std::iter::repeat_n((user.clone(), 2), if i % 3 == 0 { 2 } else { 1 }))
        .collect();
    let replies = race(&api, &sale_id, attempts).await;

    let won = successes(&replies);
    assert_eq!(won.len() * 2, 600, "held units == stock when demand exceeds stock");
    for (_, reply) in &replies {
        let allowed =
            reply.status == 201 || (reply.status == 409 && matches!(reply.code(), "sold_out" | "limit_reached"));
        assert!(allowed, "unexpected reply {} {}", reply.status, reply.text);
    }
    assert_distinct_order_ids(&won);
    assert_orders_belong_to_buyers(&replies, 2);

    let held_by_user = held_units_per_user(&api, &sale_id, users).await;
    for (user, held) in &held_by_user {
        assert!(*held <= 3, "user {user} holds {held} units, over the limit of 3");
    }
    assert_eq!(held_by_user.values().sum::<u64>(), 600, "orders listed per user add up to the stock");

    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!((sale["available"].as_u64(), sale["held"].as_u64()), (Some(0), Some(600)), "{sale}");
}

/// Fires every (user, quantity) attempt with its own Idempotency-Key, `CONCURRENCY` at a time.
async fn race(api: &Api, sale_id: &str, attempts: Vec<(String, u64)>) -> Vec<(String, Reply)> {
    let api = api.clone();
    let sale_id = sale_id.to_string();
    let numbered: Vec<(usize, (String, u64))> = attempts.into_iter().enumerate().collect();
    for_each_concurrent(numbered, CONCURRENCY, move |(n, (user, quantity))| {
        let api = api.clone();
        let sale_id = sale_id.clone();
        async move {
            let key = format!("{user}-attempt-{n}");
            let reply = api.buy(&user, &sale_id, quantity, Some(&key)).await;
            (user, reply)
        }
    })
    .await
}

fn successes(replies: &[(String, Reply)]) -> Vec<&Value> {
    replies.iter().filter(|(_, reply)| reply.status == 201).map(|(_, reply)| &reply.body).collect()
}

fn assert_only_sold_out_otherwise(replies: &[(String, Reply)]) {
    for (_, reply) in replies.iter().filter(|(_, reply)| reply.status != 201) {
        reply.expect_error(409, "sold_out");
    }
}

fn assert_distinct_order_ids(orders: &[&Value]) {
    let ids: HashSet<&str> = orders.iter().map(|order| order["id"].as_str().expect("order id")).collect();
    assert_eq!(ids.len(), orders.len(), "order ids must be distinct");
}

fn assert_orders_belong_to_buyers(replies: &[(String, Reply)], quantity: u64) {
    for (user, reply) in replies.iter().filter(|(_, reply)| reply.status == 201) {
        let order = &reply.body;
        assert_eq!(order["user_id"].as_str(), Some(user.as_str()), "{order}");
        assert_eq!(order["quantity"].as_u64(), Some(quantity), "{order}");
        assert_eq!(order["status"].as_str(), Some("held"), "{order}");
    }
}

/// Held units of this sale per user, as each user sees them in GET /v1/orders.
async fn held_units_per_user(api: &Api, sale_id: &str, users: Vec<String>) -> HashMap<String, u64> {
    let api = api.clone();
    let sale_id = sale_id.to_string();
    let counted = for_each_concurrent(users, CONCURRENCY, move |user| {
        let api = api.clone();
        let sale_id = sale_id.clone();
        async move {
            let orders = api.orders(&user).await;
            let held: u64 = orders
                .iter()
                .filter(|order| order["sale_id"].as_str() == Some(&sale_id) && order["status"].as_str() == Some("held"))
                .map(|order| order["quantity"].as_u64().expect("order quantity"))
                .sum();
            (user, held)
        }
    })
    .await;
    counted.into_iter().collect()
}
