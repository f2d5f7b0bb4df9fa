//! `/metrics` through the real binary: after a scripted run of purchases, payments,
//! cancellations and expiries, the scraped counters say exactly what happened.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{unique, wait_for, Reply, Server};
use reqwest::Method;
use serde_json::json;

/// The samples of a scrape: `name{labels}` → value.
async fn scrape(server: &Server) -> HashMap<String, f64> {
    let api = server.api();
    let reply = api.send(api.request(Method::GET, "/metrics")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let content_type = reply.headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    reply
        .text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number: {line}")))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

fn units(samples: &HashMap<String, f64>, sale: &str) -> [f64; 3] {
    ["available", "held", "sold"]
        .map(|state| value(samples, &format!("stampede_sale_units{{sale=\"{sale}\",state=\"{state}\"}}")))
}

fn created(reply: &Reply) -> String {
    reply.expect(201)["id"].as_str().expect("order id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_a_scripted_run() {
    let server = Server::start().await;
    let api = server.api();
    // 5 units, 2 per user, holds of 3 s (time enough to pay one on a busy machine).
    let sale = api.sale_with(5, 2, 3).await;
    let (alice, bob, carol, dave) = (unique("alice"), unique("bob"), unique("carol"), unique("dave"));

    let paid = created(&api.buy(&alice, &sale, 2, Some("k1")).await);
    api.buy(&alice, &sale, 2, Some("k1")).await.expect(200);
    api.buy(&alice, &sale, 1, None).await.expect_error(409, "limit_reached");
    let cancelled = created(&api.buy(&bob, &sale, 1, None).await);
    let expiring = created(&api.buy(&carol, &sale, 2, None).await);
    api.buy(&dave, &sale, 1, None).await.expect_error(409, "sold_out");
    api.buy(&dave, &sale, 3, None).await.expect_error(400, "invalid_request");
    api.pay(&alice, &paid).await.expect(200);
    api.cancel(&bob, &cancelled).await.expect(200);
    let orders = api.send(api.user(&dave, Method::GET, "/v1/orders")).await;
    orders.expect(200);
    let missing = api.send(api.request(Method::GET, "/no/such/route")).await;
    missing.expect_error(404, "not_found");

    // Carol's hold expires; the board shows the units back.
    let expired = wait_for(Duration::from_secs(10), || async {
        let order = api.order(&carol, &expiring).await;
        (order.expect(200)["status"] == "expired").then_some(())
    })
    .await;
    assert!(expired.is_some(), "the hold did not expire");
    let samples = wait_for(Duration::from_secs(3), || async {
        let samples = scrape(&server).await;
        (units(&samples, &sale) == [3.0, 0.0, 2.0]).then_some(samples)
    })
    .await
    .expect("the sale's units reach 3 available, 0 held, 2 sold");

    let purchases = |outcome: &str| value(&samples, &format!("stampede_purchases_total{{outcome=\"{outcome}\"}}"));
    assert_eq!(purchases("held"), 3.0, "alice, bob, carol");
    assert_eq!(purchases("replayed"), 1.0);
    assert_eq!(purchases("limit_reached"), 1.0);
    assert_eq!(purchases("sold_out"), 1.0);
    assert_eq!(purchases("invalid_request"), 1.0);
    assert_eq!(value(&samples, "stampede_hold_expiries_total"), 1.0);

    let requests = |route: &str, method: &str, status: u16| {
        value(
            &samples,
            &format!("stampede_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"),
        )
    };
    let orders_route = "/v1/sales/{id}/orders";
    assert_eq!(requests(orders_route, "POST", 201), 3.0);
    assert_eq!(requests(orders_route, "POST", 200), 1.0);
    assert_eq!(requests(orders_route, "POST", 409), 2.0);
    assert_eq!(requests(orders_route, "POST", 400), 1.0);
    assert_eq!(requests("/v1/orders/{id}/pay", "POST", 200), 1.0);
    assert_eq!(requests("/v1/orders/{id}/cancel", "POST", 200), 1.0);
    assert_eq!(requests("/v1/orders", "GET", 200), 1.0);
    assert_eq!(requests("unmatched", "GET", 404), 1.0);
    assert_eq!(requests("/v1/sales", "POST", 201), 1.0);
    let latency_count = value(
        &samples,
        &format!("stampede_http_request_duration_seconds_count{{route=\"{orders_route}\",status=\"201\"}}"),
    );
    assert_eq!(latency_count, 3.0, "one latency sample per answer");

    // The journal committed every change: at least one commit, and as many records as changes
    // (sale, 3 holds, payment, cancellation, expiry), however they were batched.
    assert!(value(&samples, "stampede_journal_commit_records_count") >= 1.0);
    assert!(value(&samples, "stampede_journal_commit_records_sum") >= 7.0, "{samples:?}");
    assert_eq!(value(&samples, "stampede_stream_subscribers"), 0.0);
    assert!(!samples.keys().any(|series| series.contains(&alice)), "no user ever appears in a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auctions_rooms_streams_and_refusals_are_counted() {
    let server = Server::start_with_env(&[("STAMPEDE_LIMITS", "on"), ("STAMPEDE_RATE_USER", "1:2")]).await;
    let api = server.api();
    let auction = api.auction_with(json!({})).await;
    let auction_id = auction["id"].as_str().expect("auction id").to_owned();
    let (ann, ben) = (unique("ann"), unique("ben"));
    api.bid(&ann, &auction_id, 20_000, None).await.expect(201);
    api.bid(&ben, &auction_id, 30_000, None).await.expect(201);
    api.bid(&ben, &auction_id, 1, None).await.expect_error(409, "bid_too_low");
    // Cal has a burst of 2 and one more a second: of 8 bids at once some are refused before
    // they reach the auction (rate limited, or asked for proof of work once refused), the rest
    // are too low. Whatever the split, the counters must say the same.
    let cal = unique("cal");
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let (api, auction_id, cal) = (api.clone(), auction_id.clone(), cal.clone());
            tokio::spawn(async move { api.bid(&cal, &auction_id, 1, None).await })
        })
        .collect();
    let mut seen = HashMap::<String, f64>::new();
    for send in sends {
        let reply = send.await.expect("bid task");
        *seen.entry(reply.code().to_owned()).or_default() += 1.0;
    }
    let limited = seen.get("rate_limited").copied().unwrap_or(0.0);
    let proof = seen.get("proof_of_work_required").copied().unwrap_or(0.0);
    let too_low = seen.get("bid_too_low").copied().unwrap_or(0.0);
    assert!(limited >= 1.0, "8 bids at once pass a burst of 2: {seen:?}");
    assert_eq!(limited + proof + too_low, 8.0, "{seen:?}");

    let placed = api.ban(json!({ "subject": "ip:198.51.100.7", "seconds": 60, "reason": "scraping" })).await;
    placed.expect(201);

    let room_sale = api
        .create_sale(json!({"name": "queued", "stock": 10, "price_cents": 100, "waiting_room": {"mode": "fifo"}}))
        .await;
    let room_sale = room_sale["id"].as_str().expect("sale id").to_owned();
    let joined = api.send(api.user(&ann, Method::POST, &format!("/v1/sales/{room_sale}/queue")).json(&json!({}))).await;
    assert_eq!(joined.status, 201, "{}", joined.text);

    // An open stream, held (unread) until the scrape saw it.
    let stream = api.request(Method::GET, &format!("/v1/auctions/{auction_id}/events")).send().await;
    let stream = stream.expect("auction stream");
    assert_eq!(stream.status(), 200);
    let samples = wait_for(Duration::from_secs(5), || async {
        let samples = scrape(&server).await;
        let ready = value(&samples, &format!("stampede_auction_bids_total{{auction=\"{auction_id}\"}}")) == 2.0
            && value(&samples, "stampede_stream_subscribers") == 1.0;
        ready.then_some(samples)
    })
    .await
    .expect("the auction's bids and the open stream show up");
    drop(stream);

    let bids = |outcome: &str| value(&samples, &format!("stampede_bids_total{{outcome=\"{outcome}\"}}"));
    assert_eq!((bids("leading"), bids("outbid"), bids("bid_too_low")), (2.0, 0.0, 1.0 + too_low), "{samples:?}");
    let refused = |reason: &str| value(&samples, &format!("stampede_defense_refusals_total{{reason=\"{reason}\"}}"));
    assert_eq!((refused("rate_limited"), refused("proof_of_work_required")), (limited, proof), "{seen:?}");
    assert_eq!(value(&samples, "stampede_bans_active"), 1.0, "the admin's ban");
    let price = value(&samples, &format!("stampede_auction_price_cents{{auction=\"{auction_id}\"}}"));
    assert!(price > 20_000.0, "ben leads one increment over ann: {price}");
    let queued =
        |state: &str| value(&samples, &format!("stampede_queue_users{{sale=\"{room_sale}\",state=\"{state}\"}}"));
    assert_eq!(queued("waiting") + queued("active"), 1.0, "ann is in the room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_means_no_metrics_endpoint() {
    let server = Server::start_with_env(&[("STAMPEDE_METRICS", "off")]).await;
    let api = server.api();
    let reply = api.send(api.request(Method::GET, "/metrics")).await;
    reply.expect_error(404, "not_found");
    api.send(api.request(Method::GET, "/healthz")).await.expect(200);
}
