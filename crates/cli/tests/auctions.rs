//! Live auctions through HTTP: validation, proxy bidding on the standard ladder, idempotent
//! bids, buy-now, closing on the wall clock with an order for the winner, soft close, racing
//! bidders, kill -9, and that no bidder's maximum is ever shown.
mod common;

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use common::{for_each_concurrent, parse_rfc3339, rfc3339_after, wait_for, Api, Server};

/// The server closes due auctions every 100 ms; allow for a loaded machine.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// The standard ladder: `(from_cents, increment_cents)`.
const LADDER: [(i64, i64); 10] = [
    (0, 5),
    (100, 25),
    (500, 50),
    (2_500, 100),
    (10_000, 250),
    (25_000, 500),
    (50_000, 1_000),
    (100_000, 2_500),
    (250_000, 5_000),
    (500_000, 10_000),
];

fn increment_at(price: i64) -> i64 {
    LADDER.iter().rev().find(|&&(from, _)| from <= price).map_or(5, |&(_, step)| step)
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_string()
}

/// Every number anywhere in `value`: where a hidden maximum would show if it leaked.
fn numbers_in(value: &Value) -> Vec<i64> {
    match value {
        Value::Number(number) => number.as_i64().into_iter().collect(),
        Value::Array(items) => items.iter().flat_map(numbers_in).collect(),
        Value::Object(fields) => fields.values().flat_map(numbers_in).collect(),
        Value::Null | Value::Bool(_) | Value::String(_) => Vec::new(),
    }
}

/// Whether `text` has `number` standing alone (as a JSON number or inside a string), not as
/// part of a longer number or of a random id.
fn mentions(text: &str, number: i64) -> bool {
    let digits = number.to_string();
    let bytes = text.as_bytes();
    text.match_indices(&digits).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + digits.len()).copied();
        [before, after].iter().all(|byte| !byte.is_some_and(|b| b.is_ascii_alphanumeric()))
    })
}

fn assert_hidden(text: &str, max_cents: i64, what: &str) {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let leaked = numbers_in(&value).contains(&max_cents) || mentions(text, max_cents);
    assert!(!leaked, "{what} reveals the maximum {max_cents}: {text}");
}

/// `(status, current_price_cents, leader_id)` of a bid reply, after checking it was accepted.
fn accepted(reply: &common::Reply) -> (String, i64, String) {
    let body = reply.expect(201);
    let status = body["status"].as_str().expect("bid status").to_string();
    let price = body["current_price_cents"].as_i64().expect("price");
    (status, price, body["leader_id"].as_str().expect("leader").to_string())
}

fn owned(status: &str, price: i64, leader: &str) -> (String, i64, String) {
    (status.to_string(), price, leader.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_auction_shows_its_public_state() {
    let server = Server::start().await;
    let api = server.api();
    let ends_at = rfc3339_after(Duration::from_secs(3600));
    let body = json!({"title": "Lamp", "starting_price_cents": 1500, "ends_at": ends_at, "buy_now_price_cents": 9000});
    let created = api.create_auction(body).await;

    assert!(created["id"].as_str().is_some_and(|id| !id.is_empty()), "{created}");
    let expected = [
        ("title", json!("Lamp")),
        ("seller_id", json!("house")),
        ("status", json!("live")),
        ("starting_price_cents", json!(1500)),
        ("current_price_cents", json!(1500)),
        ("leader_id", Value::Null),
        ("bid_count", json!(0)),
        ("extensions", json!(0)),
        ("reserve_met", json!(true)),
        ("has_reserve", json!(false)),
        ("min_next_bid_cents", json!(1500)),
        ("buy_now_price_cents", json!(9000)),
        ("soft_close_seconds", json!(120)),
        ("extend_seconds", json!(120)),
        ("winner_id", Value::Null),
        ("order_id", Value::Null),
    ];
    for (field, value) in expected {
        assert_eq!(created[field], value, "field {field} of {created}");
    }
    assert_eq!(parse_rfc3339(created["ends_at"].as_str().expect("ends_at")), parse_rfc3339(&ends_at));
    assert_eq!(api.auction(&id_of(&created)).await, created, "GET shows what POST returned");

    let later = rfc3339_after(Duration::from_secs(600));
    let scheduled = api.auction_with(json!({"starts_at": later, "reserve_price_cents": 5000})).await;
    assert_eq!(scheduled["status"], "scheduled", "{scheduled}");
    assert_eq!((scheduled["has_reserve"].clone(), scheduled["reserve_met"].clone()), (json!(true), json!(false)));
    assert_hidden(&scheduled.to_string(), 5000, "a new auction");

    let unknown = api.send(api.request(Method::GET, "/v1/auctions/a_nonexistent")).await;
    unknown.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_auction_needs_the_admin_token() {
    let server = Server::start().await;
    let api = server.api();
    let body =
        json!({"title": "Lamp", "starting_price_cents": 1500, "ends_at": rfc3339_after(Duration::from_secs(60))});
    let as_user = api.user("auc-user", Method::POST, "/v1/auctions").json(&body);
    api.send(as_user).await.expect_error(403, "forbidden");
    let anonymous = api.request(Method::POST, "/v1/auctions").json(&body);
    api.send(anonymous).await.expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_auctions_are_refused_naming_the_field() {
    let server = Server::start().await;
    let api = server.api();
    let soon = rfc3339_after(Duration::from_secs(600));
    let later = rfc3339_after(Duration::from_secs(1200));
    let past = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
    let cases = [
        ("title", json!({"title": ""})),
        ("title", json!({"title": "   "})),
        ("starting_price_cents", json!({"starting_price_cents": 0})),
        ("starting_price_cents", json!({"starting_price_cents": -5})),
        ("starting_price_cents", json!({"starting_price_cents": 1_000_000_000_001_i64})),
        ("starting_price_cents", json!({"starting_price_cents": "ten"})),
        ("reserve_price_cents", json!({"reserve_price_cents": 0})),
        ("buy_now_price_cents", json!({"buy_now_price_cents": 999})),
        ("buy_now_price_cents", json!({"reserve_price_cents": 5000, "buy_now_price_cents": 4000})),
        ("ends_at", json!({"ends_at": Value::Null})),
        ("ends_at", json!({"ends_at": past})),
        ("ends_at", json!({"ends_at": "tomorrow"})),
        ("ends_at", json!({"starts_at": later, "ends_at": soon})),
        ("increments", json!({"increments": []})),
        ("increments", json!({"increments": [[10, 5]]})),
        ("increments", json!({"increments": [[0, 5], [100, 10], [100, 20]]})),
        ("increments", json!({"increments": [[0, 5], [200, 10], [100, 20]]})),
        ("increments", json!({"increments": [[0, 0]]})),
    ];
    for (field, overrides) in cases {
        let mut body = json!({"title": "Lamp", "starting_price_cents": 1000, "ends_at": soon});
        for (name, value) in overrides.as_object().expect("object") {
            match value {
                Value::Null => body.as_object_mut().expect("object").remove(name),
                other => body.as_object_mut().expect("object").insert(name.clone(), other.clone()),
            };
        }
        let reply = api.send(api.admin(Method::POST, "/v1/auctions").json(&body)).await;
        reply.expect_error(400, "invalid_request");
        assert!(reply.message().contains(field), "the message for {body} names {field}: {}", reply.text);
    }
}

/// Bids on the standard ladder from 10.00: each step's price is one increment (taken at the
/// runner-up's maximum) over the runner-up's maximum, capped at the leader's own maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bidding_prices_follow_the_ladder() {
    let server = Server::start().await;
    let api = server.api();
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);

    let low = api.bid("auc-alice", &auction_id, 999, None).await;
    low.expect_error(409, "bid_too_low");
    assert!(low.message().contains("1000"), "the message names the minimum 1000: {}", low.text);

    let steps = [
        ("auc-alice", 5000, owned("leading", 1000, "auc-alice")),
        ("auc-bob", 2000, owned("outbid", 2050, "auc-alice")),
        ("auc-bob", 6000, owned("leading", 5100, "auc-bob")),
        ("auc-carol", 6000, owned("outbid", 6000, "auc-bob")),
        ("auc-bob", 8000, owned("leading", 6000, "auc-bob")),
    ];
    for (user, max_cents, expected) in steps {
        let reply = api.bid(user, &auction_id, max_cents, None).await;
        assert_eq!(accepted(&reply), expected, "{user} bidding up to {max_cents}: {}", reply.text);
    }
    let auction = api.auction(&auction_id).await;
    assert_eq!(auction["min_next_bid_cents"], 6100, "one increment over 60.00: {auction}");

    let under = api.bid("auc-alice", &auction_id, 6050, None).await;
    under.expect_error(409, "bid_too_low");
    assert!(under.message().contains("6100"), "the message names the minimum 6100: {}", under.text);

    let reply = api.bid("auc-alice", &auction_id, 7000, None).await;
    assert_eq!(accepted(&reply), owned("outbid", 7100, "auc-bob"), "{}", reply.text);
    let auction = api.auction(&auction_id).await;
    let state = (&auction["current_price_cents"], &auction["leader_id"], &auction["bid_count"]);
    assert_eq!(state, (&json!(7100), &json!("auc-bob"), &json!(6)), "{auction}");
    assert_eq!(auction["min_next_bid_cents"], 7200, "{auction}");
    assert_hidden(&auction.to_string(), 8000, "the auction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_who_meets_the_reserve_pays_at_least_the_reserve() {
    let server = Server::start().await;
    let api = server.api();
    let auction = api.auction_with(json!({"starting_price_cents": 1000, "reserve_price_cents": 12345})).await;
    let auction_id = id_of(&auction);

    let first = api.bid("auc-alice", &auction_id, 5000, None).await;
    assert_eq!(accepted(&first), owned("leading", 1000, "auc-alice"));
    let below = api.auction(&auction_id).await;
    assert_eq!(below["reserve_met"], false, "{below}");
    assert_hidden(&below.to_string(), 12345, "an auction below its reserve");

    let second = api.bid("auc-bob", &auction_id, 20000, None).await;
    assert_eq!(accepted(&second), owned("leading", 12345, "auc-bob"), "{}", second.text);
    let met = api.auction(&auction_id).await;
    assert_eq!((met["reserve_met"].clone(), met["current_price_cents"].clone()), (json!(true), json!(12345)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidder_maximum_is_never_shown() {
    let server = Server::start().await;
    let api = server.api();
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);

    let alice = api.bid("auc-alice", &auction_id, 987_654, Some("alice-1")).await;
    assert_eq!(accepted(&alice), owned("leading", 1000, "auc-alice"));
    let bob = api.bid("auc-bob", &auction_id, 5000, None).await;
    assert_eq!(accepted(&bob), owned("outbid", 5100, "auc-alice"));
    let carol = api.bid("auc-carol", &auction_id, 400_000, None).await;
    assert_eq!(accepted(&carol), owned("outbid", 405_000, "auc-alice"));
    let replay = api.bid("auc-alice", &auction_id, 987_654, Some("alice-1")).await;

    for (what, text) in [("bob's bid", &bob.text), ("carol's bid", &carol.text), ("alice's replay", &replay.text)] {
        assert_hidden(text, 987_654, what);
    }
    let auction = api.auction(&auction_id).await;
    assert_hidden(&auction.to_string(), 987_654, "the auction");
    assert_hidden(&auction.to_string(), 400_000, "the auction");
    let low = api.bid("auc-dave", &auction_id, 405_000, None).await;
    low.expect_error(409, "bid_too_low");
    assert_hidden(&low.text, 987_654, "a refused bid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_bid_key_returns_the_original_bid() {
    let server = Server::start().await;
    let api = server.api();
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);

    let first = api.bid("auc-alice", &auction_id, 3000, Some("bid-1")).await;
    let original = first.expect(201).clone();
    api.bid("auc-bob", &auction_id, 4000, None).await.expect(201);
    let again = api.bid("auc-alice", &auction_id, 3000, Some("bid-1")).await;
    assert_eq!(again.expect(200), &original, "a replay answers as the first time");
    let reused = api.bid("auc-alice", &auction_id, 3500, Some("bid-1")).await;
    reused.expect_error(409, "idempotency_key_reused");
    let other_user = api.bid("auc-carol", &auction_id, 5000, Some("bid-1")).await;
    assert_ne!(other_user.expect(201)["id"], original["id"], "the key is per user");

    let auction = api.auction(&auction_id).await;
    assert_eq!(auction["bid_count"], 3, "replays and refusals are not bids: {auction}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_place_one_bid() {
    let server = Server::start().await;
    let api = server.api().clone();
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 1000})).await);

    let shared = (api.clone(), auction_id.clone());
    let replies = for_each_concurrent((0..16).collect(), 16, move |_: usize| {
        let (api, auction_id) = shared.clone();
        async move { api.bid("auc-racer", &auction_id, 2500, Some("same-key")).await }
    })
    .await;

    let ids: HashSet<String> = replies.iter().map(|reply| id_of(&reply.body)).collect();
    assert_eq!(ids.len(), 1, "every retry returns the same bid: {ids:?}");
    let created = replies.iter().filter(|reply| reply.status == 201).count();
    let replayed = replies.iter().filter(|reply| reply.status == 200).count();
    assert_eq!((created, replayed), (1, 15), "one 201, the rest 200: {replies:?}");
    let auction = api.auction(&auction_id).await;
    assert_eq!((auction["bid_count"].clone(), auction["leader_id"].clone()), (json!(1), json!("auc-racer")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seller_may_not_bid_on_their_lot() {
    let server = Server::start().await;
    let api = server.api();
    let lot = api.auction_with(json!({"seller_id": "auc-seller", "buy_now_price_cents": 5000})).await;
    let auction_id = id_of(&lot);
    assert_eq!(lot["seller_id"], "auc-seller");

    api.bid("auc-seller", &auction_id, 2000, None).await.expect_error(403, "forbidden");
    api.buy_now("auc-seller", &auction_id).await.expect_error(403, "forbidden");
    let anonymous = api.request(Method::POST, &format!("/v1/auctions/{auction_id}/bids"));
    api.send(anonymous.json(&json!({"max_amount_cents": 2000}))).await.expect_error(401, "unauthorized");
    let auction = api.auction(&auction_id).await;
    assert_eq!((auction["bid_count"].clone(), auction["status"].clone()), (json!(0), json!("live")), "{auction}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_now_ends_the_auction_with_the_buyer_as_winner() {
    let server = Server::start().await;
    let api = server.api();
    let auction_id = id_of(&api.auction_with(json!({"buy_now_price_cents": 7500})).await);

    let bought = api.buy_now("auc-buyer", &auction_id).await;
    let auction = bought.expect(200).clone();
    let outcome = (&auction["status"], &auction["winner_id"]);
    assert_eq!(outcome, (&json!("ended"), &json!("auc-buyer")), "{auction}");
    assert_eq!(api.auction(&auction_id).await["winner_id"], "auc-buyer");

    api.buy_now("auc-other", &auction_id).await.expect_error(409, "auction_not_live");
    api.bid("auc-other", &auction_id, 9000, None).await.expect_error(409, "auction_not_live");
    let order_id =
        wait_for(CLOSE_LIMIT, || async { api.auction(&auction_id).await["order_id"].as_str().map(str::to_string) })
            .await
            .expect("the buyer gets an order");
    assert_eq!(api.order("auc-buyer", &order_id).await.expect(200)["status"], "held");
    api.order("auc-other", &order_id).await.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_now_is_withdrawn_once_bidding_shows_the_lot_is_worth_it() {
    let server = Server::start().await;
    let api = server.api();
    let plain = id_of(&api.auction_with(json!({"buy_now_price_cents": 7500})).await);
    api.bid("auc-alice", &plain, 1000, None).await.expect(201);
    assert_eq!(api.auction(&plain).await["buy_now_price_cents"], Value::Null);
    api.buy_now("auc-bob", &plain).await.expect_error(409, "buy_now_unavailable");

    let reserved = id_of(&api.auction_with(json!({"reserve_price_cents": 5000, "buy_now_price_cents": 7500})).await);
    api.bid("auc-alice", &reserved, 2000, None).await.expect(201);
    assert_eq!(api.auction(&reserved).await["buy_now_price_cents"], 7500, "still offered below the reserve");
    api.bid("auc-carol", &reserved, 6000, None).await.expect(201);
    let met = api.auction(&reserved).await;
    assert_eq!((met["reserve_met"].clone(), met["buy_now_price_cents"].clone()), (json!(true), Value::Null));
    api.buy_now("auc-bob", &reserved).await.expect_error(409, "buy_now_unavailable");

    let without = id_of(&api.auction_with(json!({})).await);
    api.buy_now("auc-bob", &without).await.expect_error(409, "buy_now_unavailable");
    let missing = api.buy_now("auc-bob", "a_nonexistent").await;
    missing.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_auction_closes_and_its_winner_pays() {
    let server = Server::start().await;
    let api = server.api();
    let ends_at = rfc3339_after(Duration::from_secs(2));
    let auction_id = id_of(&api.auction_with(json!({"ends_at": ends_at, "soft_close_seconds": 0})).await);
    api.bid("auc-alice", &auction_id, 3000, None).await.expect(201);
    api.bid("auc-bob", &auction_id, 2000, None).await.expect(201);

    let closed = wait_for(CLOSE_LIMIT, || async {
        let auction = api.auction(&auction_id).await;
        auction["order_id"].is_string().then_some(auction)
    })
    .await
    .expect("the auction closes with an order for its winner");
    let outcome = (&closed["status"], &closed["winner_id"], &closed["current_price_cents"]);
    assert_eq!(outcome, (&json!("ended"), &json!("auc-alice"), &json!(2050)), "{closed}");
    assert_eq!(parse_rfc3339(closed["ends_at"].as_str().expect("ends_at")), parse_rfc3339(&ends_at));

    let order_id = closed["order_id"].as_str().expect("order id");
    let order = api.order("auc-alice", order_id).await;
    assert_eq!(order.expect(200)["status"], "held", "{}", order.text);
    api.order("auc-bob", order_id).await.expect_error(404, "not_found");
    api.pay("auc-bob", order_id).await.expect_error(404, "not_found");
    let paid = api.pay("auc-alice", order_id).await;
    assert_eq!(paid.expect(200)["status"], "paid", "{}", paid.text);
    api.bid("auc-carol", &auction_id, 9000, None).await.expect_error(409, "auction_not_live");
}

/// The window is larger than the time left, so every bid falls in it, whatever the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_in_the_soft_close_window_moves_the_end() {
    let server = Server::start().await;
    let api = server.api();
    let ends_at = rfc3339_after(Duration::from_secs(600));
    let settings = json!({"ends_at": ends_at, "soft_close_seconds": 3600, "extend_seconds": 1200, "max_extensions": 1});
    let auction_id = id_of(&api.auction_with(settings).await);

    let before = chrono::Utc::now();
    api.bid("auc-alice", &auction_id, 2000, None).await.expect(201);
    let after = chrono::Utc::now();
    let extended = api.auction(&auction_id).await;
    let new_end = parse_rfc3339(extended["ends_at"].as_str().expect("ends_at"));
    let window = chrono::Duration::seconds(1200);
    let slack = chrono::Duration::milliseconds(5);
    assert!(new_end >= before + window - slack && new_end <= after + window + slack, "now + 1200 s: {extended}");
    assert_eq!(extended["extensions"], 1, "{extended}");

    api.bid("auc-bob", &auction_id, 3000, None).await.expect(201);
    let capped = api.auction(&auction_id).await;
    assert_eq!((capped["ends_at"].clone(), capped["extensions"].clone()), (extended["ends_at"].clone(), json!(1)));

    let calm = id_of(&api.auction_with(json!({"ends_at": ends_at, "soft_close_seconds": 60})).await);
    api.bid("auc-alice", &calm, 2000, None).await.expect(201);
    let unmoved = api.auction(&calm).await;
    assert_eq!(parse_rfc3339(unmoved["ends_at"].as_str().expect("ends_at")), parse_rfc3339(&ends_at));
    assert_eq!(unmoved["extensions"], 0, "{unmoved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bidders_settle_on_the_highest_accepted_maximum() {
    let server = Server::start().await;
    let api = server.api().clone();
    let auction_id = id_of(&api.auction_with(json!({"starting_price_cents": 100})).await);

    let maxima: Vec<i64> = (0..30).map(|i| 100_003 + (i * 7_919) % 30 * 3_001).collect();
    let shared = (api.clone(), auction_id.clone());
    let replies = for_each_concurrent(maxima.clone().into_iter().enumerate().collect(), 30, move |(i, max)| {
        let (api, auction_id) = shared.clone();
        async move { (format!("auc-racer-{i}"), max, api.bid(&format!("auc-racer-{i}"), &auction_id, max, None).await) }
    })
    .await;

    let mut accepted_bids = Vec::new();
    for (user, max, reply) in &replies {
        match reply.status {
            201 => accepted_bids.push((*max, user.clone())),
            _ => assert_eq!(reply.code(), "bid_too_low", "{user} bidding {max}: {} {}", reply.status, reply.text),
        }
    }
    accepted_bids.sort();
    let (top, winner) = accepted_bids.last().cloned().expect("at least the first bid is accepted");
    let price = match accepted_bids.len() {
        1 => 100,
        n => {
            let second = accepted_bids[n - 2].0;
            top.min(second + increment_at(second))
        }
    };
    let auction = api.auction(&auction_id).await;
    assert_eq!(auction["bid_count"], accepted_bids.len(), "every 201 is a bid: {auction}");
    assert_eq!(auction["leader_id"], json!(winner), "the highest accepted maximum leads: {auction}");
    assert_eq!(auction["current_price_cents"], price, "accepted: {accepted_bids:?}, auction: {auction}");
    for (max, _) in &accepted_bids {
        if *max != price {
            assert_hidden(&auction.to_string(), *max, "the auction after the race");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_auctions_and_their_hidden_maxima() {
    let mut server = Server::start().await;
    let auction_id = id_of(&server.api().auction_with(json!({"starting_price_cents": 1000})).await);
    let first = bid_then(server.api(), "auc-alice", &auction_id, 5000, "alice-1").await;
    bid_then(server.api(), "auc-bob", &auction_id, 2000, "bob-1").await;
    let before = server.api().auction(&auction_id).await;

    server.kill9().await;
    server.restart().await;
    let api = server.api();
    assert_eq!(api.auction(&auction_id).await, before, "the auction is as it was");
    let replay = api.bid("auc-alice", &auction_id, 5000, Some("alice-1")).await;
    assert_eq!(replay.expect(200), &first, "a bid's key survives the crash");

    let carol = api.bid("auc-carol", &auction_id, 4000, None).await;
    assert_eq!(accepted(&carol), owned("outbid", 4100, "auc-alice"), "alice's 50.00 maximum survives");
    let dave = api.bid("auc-dave", &auction_id, 6000, None).await;
    assert_eq!(accepted(&dave), owned("leading", 5100, "auc-dave"), "{}", dave.text);
    assert_eq!(api.auction(&auction_id).await["bid_count"], 4);
}

async fn bid_then(api: &Api, user: &str, auction_id: &str, max_cents: i64, key: &str) -> Value {
    let reply = api.bid(user, auction_id, max_cents, Some(key)).await;
    reply.expect(201).clone()
}
