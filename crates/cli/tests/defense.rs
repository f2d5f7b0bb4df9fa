//! Traffic defense as a black box: rate limits per user, address and sale, automatic and admin
//! bans, client addresses behind trusted proxies, proof of work, load shedding, and a bot swarm
//! that must not crowd out honest buyers. Every server here runs with `STAMPEDE_LIMITS=on`
//! (the harness turns them off by default) and small quotas, so each limit shows within a few
//! requests.
//!
//! Timing: a burst that must be cut at exactly its size is sent concurrently at a rate of one
//! request a second, so the burst only refills if the requests arrive more than a second
//! apart. Waits are bounded and follow what the server says (`Retry-After`, the ban list).
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use common::{for_each_concurrent, leading_zero_bits, parse_rfc3339, solve_pow, unique, wait_for, Api, Reply, Server};

const POW_HEADER: &str = "Stampede-Pow";
const PASSWORD: &str = "correct-horse-battery";

/// A server with the limits on and `env` on top.
async fn defended(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("STAMPEDE_LIMITS", "on")];
    all.extend_from_slice(env);
    Server::start_with_env(&all).await
}

/// The request as relayed by a proxy that saw `client`.
fn via(request: RequestBuilder, client: &str) -> RequestBuilder {
    request.header("X-Forwarded-For", client)
}

/// Sends every request at once, each on its own task; replies in request order.
async fn all_at_once(api: &Api, requests: Vec<RequestBuilder>) -> Vec<Reply> {
    let sends: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let api = api.clone();
            tokio::spawn(async move { api.send(request).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(sends.len());
    for send in sends {
        replies.push(send.await.expect("request task panicked"));
    }
    replies
}

fn summary(replies: &[Reply]) -> Vec<String> {
    replies.iter().map(|reply| format!("{} {}", reply.status, reply.code())).collect()
}

/// Asserts `passed` x 201 and `429 rate_limited` (with `Retry-After` >= 1) for the rest, for
/// a burst of distinct users (none of whom owes proof of work).
fn assert_cut_at(replies: &[Reply], passed: usize) {
    let created = replies.iter().filter(|reply| reply.status == 201).count();
    assert_eq!(created, passed, "exactly the burst passes: {:?}", summary(replies));
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        assert_rate_limited(reply);
    }
}

/// As `assert_cut_at` for a burst of one client: a request the limits let through may still be
/// asked for work, when a concurrent one of the same client was refused just before its risk
/// was read.
fn assert_one_clients_burst_cut_at(replies: &[Reply], passed: usize) {
    let limited = replies.iter().filter(|reply| reply.status == 429).count();
    assert_eq!(limited, replies.len() - passed, "exactly the burst passes the limits: {:?}", summary(replies));
    for reply in replies {
        match reply.status {
            201 => {}
            429 => assert_rate_limited(reply),
            _ => assert_work_required(reply, "let through by the limits while a concurrent request was refused"),
        }
    }
}

fn assert_rate_limited(reply: &Reply) {
    reply.expect_error(429, "rate_limited");
    assert!(reply.retry_after() >= 1, "Retry-After of a 429 is at least 1 s: {reply:?}");
}

fn assert_banned(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 403, "{what}: expected 403 banned, got {} {}", reply.status, reply.text);
    reply.expect_error(403, "banned");
    assert!(reply.message().contains("until"), "{what}: the message says until when: {}", reply.text);
    assert!(reply.retry_after() >= 1, "{what}: a ban carries Retry-After: {reply:?}");
}

fn assert_work_required(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 403, "{what}: expected 403 proof_of_work_required, got {} {}", reply.status, reply.text);
    reply.expect_error(403, "proof_of_work_required");
}

fn order_id(reply: &Reply) -> String {
    reply.expect(201)["id"].as_str().expect("order id").to_string()
}

fn sign_in_request(api: &Api, username: &str) -> RequestBuilder {
    api.request(Method::POST, "/v1/sessions").json(&json!({ "username": username, "password": PASSWORD }))
}

fn ban_of<'a>(bans: &'a [Value], subject: &str) -> Option<&'a Value> {
    bans.iter().find(|ban| ban["subject"].as_str() == Some(subject))
}

/// Seconds from now until an RFC 3339 time in a response.
fn seconds_until(text: &str) -> i64 {
    (parse_rfc3339(text) - chrono::Utc::now()).num_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_the_burst_is_rate_limited_until_retry_after() {
    let server = defended(&[("STAMPEDE_RATE_USER", "1:3")]).await;
    let api = server.api().clone();
    let sale_id = api.sale_with(100, 10, 600).await;
    let user = unique("burst");

    let replies = all_at_once(&api, (0..4).map(|_| api.buy_request(&user, &sale_id, 1, None)).collect()).await;
    let refused_at = Instant::now();
    assert_one_clients_burst_cut_at(&replies, 3);
    let limited = replies.iter().find(|reply| reply.status == 429).expect("one request limited");
    let retry_after = limited.retry_after();
    assert!((1..=2).contains(&retry_after), "one request a second: the next cell is at most 1 s away: {retry_after}");

    let neighbour = api.buy(&unique("neighbour"), &sale_id, 1, None).await;
    assert_eq!(neighbour.status, 201, "another user on the same address is not limited: {}", neighbour.text);

    // One refusal makes the user risky: the next request needs 16 + 2 bits of work.
    let challenge = api.challenge(Some(&user)).await;
    assert_eq!(challenge["difficulty"], json!(18), "one recent refusal asks 18 bits: {challenge}");
    let token = challenge["challenge"].as_str().expect("challenge token");
    let proof = solve_pow(token, 18).await;

    tokio::time::sleep_until((refused_at + Duration::from_secs(retry_after)).into()).await;
    let again = api.send(api.buy_request(&user, &sale_id, 1, None).header(POW_HEADER, proof)).await;
    assert_eq!(again.status, 201, "after Retry-After (and with the work done) the user buys again: {}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_limited_across_all_its_users() {
    let server = defended(&[("STAMPEDE_RATE_IP", "1:3")]).await;
    let api = server.api().clone();
    let sale_id = api.sale_with(100, 1, 600).await;

    // Five users with one request each: no user is near its own quota, the address is past its.
    let users: Vec<String> = (0..5).map(|_| unique("shared-ip")).collect();
    let requests = users.iter().map(|user| api.buy_request(user, &sale_id, 1, None)).collect();
    let replies = all_at_once(&api, requests).await;
    assert_cut_at(&replies, 3);

    let anonymous = api.challenge(None).await;
    assert_eq!(anonymous["difficulty"], json!(20), "two refusals of the address ask 20 bits: {anonymous}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_is_limited_on_its_own_paths_only() {
    let server = defended(&[("STAMPEDE_RATE_SALE", "1:3")]).await;
    let api = server.api().clone();
    let paced = api.sale_with(100, 1, 600).await;
    let other = api.sale_with(100, 1, 600).await;

    let buyers: Vec<String> = (0..5).map(|_| unique("paced")).collect();
    let requests = buyers.iter().map(|user| api.buy_request(user, &paced, 1, None)).collect();
    let replies = all_at_once(&api, requests).await;
    assert_cut_at(&replies, 3);

    let others: Vec<String> = (0..3).map(|_| unique("other-sale")).collect();
    let requests = others.iter().map(|user| api.buy_request(user, &other, 1, None)).collect();
    let replies = all_at_once(&api, requests).await;
    assert_cut_at(&replies, 3);

    // Paying is not a request on the sale's path, so the sale's quota does not apply to it.
    let held = first_held_order(&api, &buyers, &paced).await;
    let paid = api.pay(&held.0, &held.1).await;
    assert_eq!(paid.expect(200)["status"], "paid", "{}", paid.text);
    api.assert_consistent(&paced).await;
}

/// The first of `users` holding an order in `sale_id`: (user, order id).
async fn first_held_order(api: &Api, users: &[String], sale_id: &str) -> (String, String) {
    for user in users {
        let orders = api.orders(user).await;
        let held = orders.iter().find(|order| order["sale_id"] == sale_id && order["status"] == "held");
        if let Some(order) = held {
            return (user.clone(), order["id"].as_str().expect("order id").to_string());
        }
    }
    panic!("none of {users:?} holds an order in {sale_id}");
}

/// Every mutating endpoint, as `user` with a valid token.
fn every_mutating_request(api: &Api, user: &str, ids: &Ids) -> Vec<(&'static str, RequestBuilder)> {
    let credentials = json!({ "username": unique("while-banned"), "password": PASSWORD });
    vec![
        ("purchase", api.buy_request(user, &ids.sale, 1, None)),
        ("waitlist", api.user(user, Method::POST, &format!("/v1/sales/{}/waitlist", ids.sale)).json(&json!({}))),
        ("pay", api.user(user, Method::POST, &format!("/v1/orders/{}/pay", ids.order)).json(&json!({}))),
        ("cancel", api.user(user, Method::POST, &format!("/v1/orders/{}/cancel", ids.order)).json(&json!({}))),
        ("bid", api.bid_request(user, &ids.auction, 5_000, None)),
        ("buy-now", api.user(user, Method::POST, &format!("/v1/auctions/{}/buy-now", ids.auction)).json(&json!({}))),
        ("sign-up", api.user(user, Method::POST, "/v1/users").json(&credentials)),
        ("sign-in", api.user(user, Method::POST, "/v1/sessions").json(&credentials)),
    ]
}

/// What the banned user has: a sale, one of its orders, an auction.
struct Ids {
    sale: String,
    order: String,
    auction: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_the_threshold_is_banned_everywhere_until_an_admin_lifts_it() {
    // Each request comes from its own address through the trusted proxy, so only the user
    // crosses the threshold (an address would cross it too, sending all of them).
    let server = defended(&[("STAMPEDE_BAN_THRESHOLD", "5"), ("STAMPEDE_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let api = server.api().clone();
    let sale = api.sale_with(100, 10, 600).await;
    let auction = api.auction_with(json!({ "buy_now_price_cents": 100_000 })).await;
    let auction = auction["id"].as_str().expect("auction id").to_string();
    let mallory = unique("mallory");

    let mut replies = Vec::new();
    for n in 0..6 {
        replies.push(api.send(via(api.buy_request(&mallory, &sale, 1, None), &format!("10.0.0.{n}"))).await);
    }
    assert_eq!((replies[0].status, replies[1].status), (201, 201), "{:?}", summary(&replies));
    for (n, reply) in replies.iter().enumerate().take(5).skip(2) {
        assert_work_required(reply, &format!("request {} of 5 allowed, past half of them", n + 1));
    }
    assert_banned(&replies[5], "the request crossing the threshold");

    let ids = Ids { sale: sale.clone(), order: order_id(&replies[0]), auction: auction.clone() };
    for (n, (name, request)) in every_mutating_request(&api, &mallory, &ids).into_iter().enumerate() {
        let reply = api.send(via(request, &format!("10.0.1.{}", n + 1))).await;
        assert_banned(&reply, name);
    }

    let alice = unique("alice");
    let bought = api.send(via(api.buy_request(&alice, &sale, 1, None), "10.0.2.1")).await;
    assert_eq!(bought.status, 201, "another user is not affected: {}", bought.text);
    let bid = api.send(via(api.bid_request(&alice, &auction, 5_000, None), "10.0.2.2")).await;
    assert_eq!(bid.status, 201, "another user bids: {}", bid.text);

    let bans = api.bans().await;
    let subject = format!("user:{mallory}");
    let ban = ban_of(&bans, &subject).unwrap_or_else(|| panic!("{subject} is not listed: {bans:?}"));
    let left = seconds_until(ban["until"].as_str().expect("until"));
    assert!((570..=600).contains(&left), "banned for the default 600 s, {left} s left: {ban}");
    assert!(!ban["reason"].as_str().unwrap_or("").is_empty(), "a ban says why: {ban}");
    assert!(ban_of(&bans, &format!("user:{alice}")).is_none(), "{bans:?}");
    assert_eq!(bans.len(), 1, "only mallory is banned (no address crossed the threshold): {bans:?}");

    api.lift_ban(&subject).await.expect(204);
    assert!(ban_of(&api.bans().await, &subject).is_none(), "a lifted ban is no longer listed");
    api.lift_ban(&subject).await.expect_error(404, "not_found");

    // Lifted means allowed again: not refused as banned (proof of work may still be asked of
    // a user refused so recently).
    let after = api.send(via(api.buy_request(&mallory, &sale, 1, None), "10.0.3.1")).await;
    let allowed = after.status == 201 || after.code() == "proof_of_work_required";
    assert!(allowed, "after the admin lifted the ban the user is not banned again: {} {}", after.status, after.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_ban_expires_on_its_own() {
    // The ban (2 s) outlasts the window (1 s): once it expires the requests that caused it no
    // longer count, so the user is neither banned again nor asked for work.
    let server = defended(&[
        ("STAMPEDE_BAN_THRESHOLD", "3"),
        ("STAMPEDE_BAN_WINDOW_SECONDS", "1"),
        ("STAMPEDE_BAN_SECONDS", "2"),
        ("STAMPEDE_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let api = server.api().clone();
    let sale = api.sale_with(100, 10, 600).await;
    let eve = unique("eve");

    let requests = (0..4).map(|n| via(api.buy_request(&eve, &sale, 1, None), &format!("10.9.0.{n}"))).collect();
    let replies = all_at_once(&api, requests).await;
    let banned: Vec<&Reply> = replies.iter().filter(|reply| reply.code() == "banned").collect();
    assert_eq!(banned.len(), 1, "the fourth request of three allowed bans: {:?}", summary(&replies));
    for reply in replies.iter().filter(|reply| reply.code() != "banned") {
        assert!(reply.status == 201 || reply.code() == "proof_of_work_required", "{} {}", reply.status, reply.text);
    }
    let retry_after = banned[0].retry_after();
    assert!((1..=2).contains(&retry_after), "a 2 s ban says so in Retry-After: {retry_after}");
    let still = api.send(via(api.buy_request(&eve, &sale, 1, None), "10.9.1.1")).await;
    assert_banned(&still, "right after the ban");

    let subject = format!("user:{eve}");
    let expired = wait_for(Duration::from_secs(15), || {
        let api = api.clone();
        let subject = subject.clone();
        async move { (!api.banned_subjects().await.contains(&subject)).then_some(()) }
    })
    .await;
    assert!(expired.is_some(), "the 2 s ban of {subject} is still listed after 15 s");
    let after = api.send(via(api.buy_request(&eve, &sale, 1, None), "10.9.2.1")).await;
    assert_eq!(after.status, 201, "an expired ban no longer refuses: {}", after.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_are_separate_subjects_only_behind_a_trusted_proxy() {
    let trusted = defended(&[("STAMPEDE_RATE_IP", "1:2"), ("STAMPEDE_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let api = trusted.api().clone();
    let sale = api.sale_with(100, 1, 600).await;
    let requests = (0..3).map(|_| via(api.buy_request(&unique("proxied"), &sale, 1, None), "203.0.113.1")).collect();
    assert_cut_at(&all_at_once(&api, requests).await, 2);
    let elsewhere = api.send(via(api.buy_request(&unique("proxied"), &sale, 1, None), "203.0.113.2")).await;
    assert_eq!(elsewhere.status, 201, "another forwarded address has its own quota: {}", elsewhere.text);
    // The rightmost hop not in the trusted set is the client; what it claims before is ignored.
    let claimed = via(api.buy_request(&unique("proxied"), &sale, 1, None), "203.0.113.1, 203.0.113.3");
    let claimed = api.send(claimed).await;
    assert_eq!(claimed.status, 201, "the client is 203.0.113.3, not what it claims: {}", claimed.text);

    let direct = defended(&[("STAMPEDE_RATE_IP", "1:2")]).await;
    let api = direct.api().clone();
    let sale = api.sale_with(100, 1, 600).await;
    let requests =
        (1..=3).map(|n| via(api.buy_request(&unique("direct"), &sale, 1, None), &format!("203.0.113.{n}"))).collect();
    assert_cut_at(&all_at_once(&api, requests).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_banned_by_forwarded_address_only_behind_a_trusted_proxy() {
    let env = [("STAMPEDE_BAN_THRESHOLD", "3"), ("STAMPEDE_TRUSTED_PROXIES", "127.0.0.1")];
    let trusted = defended(&env).await;
    let api = trusted.api().clone();
    let stuffed = stuff_sign_ins(&api, &["198.51.100.1"; 4]).await;
    assert_banned(&stuffed[3], "the fourth sign-in from one address");
    let bans = api.banned_subjects().await;
    assert_eq!(bans, vec!["ip:198.51.100.1".to_string()], "the forwarded address is banned, not the proxy");

    let other = api.send(via(sign_in_request(&api, &unique("nobody")), "198.51.100.2")).await;
    other.expect_error(401, "invalid_credentials");
    let spoofed = api.send(via(sign_in_request(&api, &unique("nobody")), "198.51.100.2, 198.51.100.1")).await;
    assert_banned(&spoofed, "a banned client claiming another address first");
    let relayed = api.send(via(sign_in_request(&api, &unique("nobody")), "198.51.100.1, 198.51.100.3")).await;
    relayed.expect_error(401, "invalid_credentials");

    let direct = defended(&env[..1]).await;
    let api = direct.api().clone();
    let clients = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"];
    let stuffed = stuff_sign_ins(&api, &clients).await;
    assert_banned(&stuffed[3], "the fourth sign-in from one peer, whatever it forwards");
    assert_eq!(api.banned_subjects().await, vec!["ip:127.0.0.1".to_string()], "without trust the peer is banned");
    let other = api.send(via(sign_in_request(&api, &unique("nobody")), "198.51.100.9")).await;
    assert_banned(&other, "the peer, forwarding yet another address");
}

/// Sign-ins with wrong credentials relayed for each of `clients` in turn, threshold 3: the
/// first is answered, the next two need work, and the fourth crosses the threshold.
async fn stuff_sign_ins(api: &Api, clients: &[&str]) -> Vec<Reply> {
    let mut replies = Vec::new();
    for client in clients {
        replies.push(api.send(via(sign_in_request(api, &unique("nobody")), client)).await);
    }
    replies[0].expect_error(401, "invalid_credentials");
    assert_work_required(&replies[1], "second sign-in, past half the threshold");
    assert_work_required(&replies[2], "third sign-in, past half the threshold");
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refusal_only_a_fresh_solved_challenge_lets_a_request_through() {
    let server = defended(&[]).await;
    let api = server.api().clone();
    let sale = api.sale_with(100, 10, 600).await;
    let paula = unique("paula");

    let subject = format!("user:{paula}");
    api.ban(json!({ "subject": subject, "seconds": 600, "reason": "testing" })).await.expect(201);
    assert_banned(&api.buy(&paula, &sale, 1, None).await, "banned by an admin");
    api.lift_ban(&subject).await.expect(204);
    let buy = || api.buy_request(&paula, &sale, 1, None);

    let bare = api.send(buy()).await;
    assert_work_required(&bare, "no proof after a refusal");
    assert!(bare.message().contains("18"), "the message names the bits: {}", bare.text);

    let challenge = api.challenge(Some(&paula)).await;
    assert_eq!(challenge["difficulty"], json!(18), "{challenge}");
    assert!(!challenge["algorithm"].as_str().unwrap_or("").is_empty(), "{challenge}");
    let left = seconds_until(challenge["expires_at"].as_str().expect("expires_at"));
    assert!((270..=300).contains(&left), "a challenge is good for 300 s, {left} s left: {challenge}");
    let token = challenge["challenge"].as_str().expect("challenge token").to_string();

    let garbled = api.send(buy().header(POW_HEADER, "not a solution")).await;
    assert_work_required(&garbled, "a garbled header");
    let wrong_nonce = (0u64..)
        .map(|nonce| format!("{token}:{nonce}"))
        .find(|candidate| work_bits(candidate) < 18)
        .expect("most nonces fail");
    assert_work_required(&api.send(buy().header(POW_HEADER, wrong_nonce)).await, "a nonce that does not solve");
    let forged = solve_pow(&tamper(&token), 18).await;
    assert_work_required(&api.send(buy().header(POW_HEADER, forged)).await, "a solved but forged challenge");
    let easy = api.solved_challenge(Some(&unique("quiet"))).await;
    assert_work_required(&api.send(buy().header(POW_HEADER, easy)).await, "a solved 16-bit challenge");

    let proof = solve_pow(&token, 18).await;
    let solved = api.send(buy().header(POW_HEADER, &proof)).await;
    assert_eq!(solved.status, 201, "a solved challenge of the required difficulty passes: {}", solved.text);
    assert_work_required(&api.send(buy().header(POW_HEADER, &proof)).await, "the same challenge again");
}

/// Leading zero bits of SHA-256 of a `Stampede-Pow` value.
fn work_bits(header: &str) -> u32 {
    use sha2::Digest;
    leading_zero_bits(&sha2::Sha256::digest(header.as_bytes()))
}

/// The challenge with one character changed (a client cannot make its own).
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bans_need_the_admin_and_valid_subjects() {
    let server = defended(&[("STAMPEDE_BAN_SECONDS", "900")]).await;
    let api = server.api().clone();
    let user_token = api.token("not-an-admin");

    let list = api.send(api.request(Method::GET, "/v1/admin/bans")).await;
    list.expect_error(401, "unauthorized");
    let list = api.send(api.request(Method::GET, "/v1/admin/bans").bearer_auth(&user_token)).await;
    list.expect_error(403, "forbidden");
    assert_eq!(api.bans().await, Vec::<Value>::new(), "no bans yet");

    let body = json!({ "subject": "ip:198.51.100.7", "seconds": 60 });
    let anonymous = api.send(api.request(Method::POST, "/v1/admin/bans").json(&body)).await;
    anonymous.expect_error(401, "unauthorized");
    let as_user = api.send(api.request(Method::POST, "/v1/admin/bans").bearer_auth(&user_token).json(&body)).await;
    as_user.expect_error(403, "forbidden");
    for bad in [
        json!({ "subject": "nobody" }),
        json!({ "subject": "ip:not-an-address" }),
        json!({ "subject": "user:" }),
        json!({ "subject": "group:x" }),
        json!({ "subject": "ip:198.51.100.7", "seconds": 0 }),
        json!({ "subject": "ip:198.51.100.7", "seconds": "soon" }),
        json!({ "seconds": 60 }),
    ] {
        api.ban(bad.clone()).await.expect_error(400, "invalid_request");
    }
    let malformed =
        api.send(api.admin(Method::POST, "/v1/admin/bans").body("{").header("content-type", "application/json"));
    malformed.await.expect_error(400, "invalid_request");
    assert_eq!(api.bans().await, Vec::<Value>::new(), "refused bans are not placed");

    let placed = api.ban(json!({ "subject": "ip:198.51.100.7", "seconds": 60, "reason": "scraping" })).await;
    let placed = placed.expect(201).clone();
    assert_eq!((placed["subject"].as_str(), placed["reason"].as_str()), (Some("ip:198.51.100.7"), Some("scraping")));
    let left = seconds_until(placed["until"].as_str().expect("until"));
    assert!((30..=60).contains(&left), "banned for 60 s, {left} s left: {placed}");
    let user_subject = format!("user:{}", unique("fraudster"));
    let default_length = api.ban(json!({ "subject": user_subject })).await.expect(201).clone();
    let left = seconds_until(default_length["until"].as_str().expect("until"));
    assert!((870..=900).contains(&left), "STAMPEDE_BAN_SECONDS is the default length, {left} s left");

    let listed: HashSet<String> = api.banned_subjects().await.into_iter().collect();
    assert_eq!(listed, HashSet::from(["ip:198.51.100.7".to_string(), user_subject.clone()]));

    let lift_as_user =
        api.send(api.request(Method::DELETE, &format!("/v1/admin/bans/{user_subject}")).bearer_auth(&user_token));
    lift_as_user.await.expect_error(403, "forbidden");
    api.lift_ban("garbage").await.expect_error(400, "invalid_request");
    api.lift_ban("ip:198.51.100.8").await.expect_error(404, "not_found");
    api.lift_ban(&user_subject).await.expect(204);
    api.lift_ban(&user_subject).await.expect_error(404, "not_found");
    assert_eq!(api.banned_subjects().await, vec!["ip:198.51.100.7".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_limits_off_nothing_is_limited_and_bans_are_refused() {
    let server = Server::start_with_env(&[
        ("STAMPEDE_LIMITS", "off"),
        ("STAMPEDE_RATE_USER", "1:1"),
        ("STAMPEDE_RATE_IP", "1:1"),
        ("STAMPEDE_BAN_THRESHOLD", "2"),
    ])
    .await;
    let api = server.api().clone();
    let sale = api.sale_with(100, 40, 600).await;
    let user = unique("unlimited");

    let replies = all_at_once(&api, (0..30).map(|_| api.buy_request(&user, &sale, 1, None)).collect()).await;
    assert!(replies.iter().all(|reply| reply.status == 201), "{:?}", summary(&replies));
    for _ in 0..5 {
        api.send(sign_in_request(&api, &unique("nobody"))).await.expect_error(401, "invalid_credentials");
    }

    let list = api.send(api.admin(Method::GET, "/v1/admin/bans")).await;
    list.expect_error(409, "limits_off");
    api.ban(json!({ "subject": "ip:198.51.100.7" })).await.expect_error(409, "limits_off");
    api.lift_ban("ip:198.51.100.7").await.expect_error(409, "limits_off");
    api.assert_consistent(&sale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_bound_are_shed_but_health_checks_are_not() {
    const SIGN_UPS: usize = 24;
    let server = defended(&[("STAMPEDE_MAX_IN_FLIGHT", "1"), ("STAMPEDE_MAX_QUEUE_MS", "1")]).await;
    let api = server.api().clone();

    // Sign-ups hash a password (tens of ms each), so one in flight keeps the others waiting.
    let requests = (0..SIGN_UPS)
        .map(|_| {
            api.request(Method::POST, "/v1/users").json(&json!({ "username": unique("shed"), "password": PASSWORD }))
        })
        .collect();
    let burst = tokio::spawn({
        let api = api.clone();
        async move { all_at_once(&api, requests).await }
    });
    let mut health_checks = 0;
    while !burst.is_finished() || health_checks == 0 {
        let health = api.send(api.request(Method::GET, "/healthz")).await;
        assert_eq!(health.status, 200, "health checks are never shed: {}", health.text);
        health_checks += 1;
    }
    let replies = burst.await.expect("burst task panicked");

    let created = replies.iter().filter(|reply| reply.status == 201).count();
    let shed: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 503).collect();
    assert!(created >= 1, "the request in flight completes: {:?}", summary(&replies));
    assert!(!shed.is_empty(), "a burst over the bound is shed: {:?}", summary(&replies));
    assert_eq!(created + shed.len(), SIGN_UPS, "nothing but 201 and 503: {:?}", summary(&replies));
    for reply in shed {
        reply.expect_error(503, "overloaded");
        assert!(reply.retry_after() >= 1, "{reply:?}");
    }
    eprintln!("shedding: {created} created, {} shed, {health_checks} health checks", SIGN_UPS - created);

    let calm =
        api.request(Method::POST, "/v1/users").json(&json!({ "username": unique("calm"), "password": PASSWORD }));
    api.send(calm).await.expect(201);
}

/// A queue that stands longer than the queue bound is an overload, not a burst: requests are
/// then refused before routing, at once, with the same JSON error and `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_queue_is_refused_before_routing_with_the_same_error() {
    const CLIENTS: usize = 6;
    const FOR: Duration = Duration::from_millis(600);
    // Limits off: one address sending this fast would otherwise be asked for proof of work.
    let server = Server::start_with_env(&[
        ("STAMPEDE_LIMITS", "off"),
        ("STAMPEDE_MAX_IN_FLIGHT", "1"),
        ("STAMPEDE_MAX_QUEUE_MS", "20"),
    ])
    .await;
    let api = server.api().clone();

    // Each sign-up hashes a password (tens of ms) while holding the one place, and every client
    // sends its next one as soon as it has an answer, so someone is always waiting.
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| {
        let api = api.clone();
        tokio::spawn(async move {
            let mut replies = Vec::new();
            while started.elapsed() < FOR {
                let sign_up = api
                    .request(Method::POST, "/v1/users")
                    .json(&json!({ "username": unique("queue"), "password": PASSWORD }));
                replies.push(api.send(sign_up).await);
            }
            replies
        })
    });
    let mut replies = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        replies.extend(client.await.expect("client task panicked"));
    }
    let health = api.send(api.request(Method::GET, "/healthz")).await;
    assert_eq!(health.status, 200, "health checks are never shed: {}", health.text);

    let shed: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 503).collect();
    assert!(replies.iter().any(|reply| reply.status == 201), "{:?}", summary(&replies));
    assert!(replies.iter().all(|reply| matches!(reply.status, 201 | 503)), "{:?}", summary(&replies));
    for reply in &shed {
        reply.expect_error(503, "overloaded");
        assert!(reply.retry_after() >= 1, "{reply:?}");
    }
    let metrics = api.send(api.request(Method::GET, "/metrics")).await;
    let early: f64 = metrics
        .text
        .lines()
        .filter(|line| line.starts_with("stampede_http_requests_total{") && line.contains(r#"route="(shed)""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(early >= 1.0, "a standing queue refuses before routing: {} shed, metrics:\n{}", shed.len(), metrics.text);
    eprintln!("{} sign-ups, {} shed ({early} before routing)", replies.len(), shed.len());
}

const HONEST: usize = 40;
const BOTS: usize = 5;
const BOT_REQUESTS: usize = 40;
const SWARM_STOCK: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_swarm_is_stopped_while_honest_users_buy_and_nothing_is_oversold() {
    // Behind a load balancer: every honest user comes from an address of their own, the bots
    // share two, the credential stuffer has one.
    let server = defended(&[
        ("STAMPEDE_TRUSTED_PROXIES", "127.0.0.1"),
        ("STAMPEDE_RATE_USER", "2:4"),
        ("STAMPEDE_RATE_IP", "5:10"),
        ("STAMPEDE_BAN_THRESHOLD", "20"),
    ])
    .await;
    let api = server.api().clone();
    let sale = api.sale_with(SWARM_STOCK, 1, 600).await;

    let bots: Vec<(String, String)> = (0..BOTS).map(|n| (unique("bot"), format!("192.0.2.{}", 1 + n % 2))).collect();
    let hammering: Vec<_> = bots
        .iter()
        .map(|(bot, client)| tokio::spawn(hammer_purchases(api.clone(), sale.clone(), bot.clone(), client.clone())))
        .collect();
    let stuffing = tokio::spawn(stuff_credentials(api.clone(), "192.0.2.9"));
    let honest: Vec<(String, String)> =
        (0..HONEST).map(|n| (unique("honest"), format!("10.1.{}.{}", n / 200, n % 200 + 1))).collect();
    let buying = for_each_concurrent(honest.clone(), 8, {
        let (api, sale) = (api.clone(), sale.clone());
        move |(user, client)| buy_like_a_person(api.clone(), sale.clone(), user, client)
    });
    let outcomes = buying.await;

    let problems: Vec<&String> = outcomes.iter().filter_map(|outcome| outcome.as_ref().err()).collect();
    assert!(problems.is_empty(), "honest users were refused: {problems:#?}");
    let honest_paid = outcomes.iter().filter(|outcome| matches!(outcome, Ok(true))).count() as u64;

    let mut bot_holds = 0;
    for ((bot, _), task) in bots.iter().zip(hammering) {
        let replies = task.await.expect("bot task panicked");
        bot_holds += assert_bot_stopped(bot, &replies);
    }
    let stuffed = stuffing.await.expect("stuffer task panicked");
    for reply in &stuffed {
        let expected = matches!(
            (reply.status, reply.code()),
            (401, "invalid_credentials") | (429, "rate_limited") | (403, "proof_of_work_required" | "banned")
        );
        assert!(expected, "credential stuffer got {} {}", reply.status, reply.text);
    }
    assert_banned(stuffed.last().expect("stuffer replies"), "the credential stuffer in the end");

    let banned: HashSet<String> = api.banned_subjects().await.into_iter().collect();
    for subject in bots
        .iter()
        .map(|(bot, _)| format!("user:{bot}"))
        .chain(["192.0.2.1", "192.0.2.2", "192.0.2.9"].iter().map(|client| format!("ip:{client}")))
    {
        assert!(banned.contains(&subject), "{subject} is not banned: {banned:?}");
    }
    for (user, client) in &honest {
        let wrongly = banned.contains(&format!("user:{user}")) || banned.contains(&format!("ip:{client}"));
        assert!(!wrongly, "honest {user} at {client} is banned: {banned:?}");
    }

    let ledger_sale = api.assert_consistent(&sale).await;
    let (sold, held) = (ledger_sale["sold"].as_u64(), ledger_sale["held"].as_u64());
    assert_eq!((sold, held), (Some(honest_paid), Some(bot_holds)), "paid by honest users, held by bots: {ledger_sale}");
    assert_eq!(honest_paid + bot_holds, SWARM_STOCK, "demand exceeds stock, so all of it went: {ledger_sale}");
    assert!(honest_paid >= SWARM_STOCK - BOTS as u64, "bots hold at most one each: {honest_paid} honest buyers");
    eprintln!("swarm: {honest_paid} honest buyers, {bot_holds} bot holds, bans: {banned:?}");
}

/// One purchase (with its own key) and, when it holds, its payment. Ok(true): bought and
/// paid; Ok(false): sold out; Err: anything else.
async fn buy_like_a_person(api: Api, sale: String, user: String, client: String) -> Result<bool, String> {
    let request = api.buy_request(&user, &sale, 1, Some(&format!("{user}-once")));
    let bought = api.send(via(request, &client)).await;
    if bought.status == 409 && bought.code() == "sold_out" {
        return Ok(false);
    }
    if bought.status != 201 {
        return Err(format!("{user} buying: {} {}", bought.status, bought.text));
    }
    let order = bought.body["id"].as_str().unwrap_or_default();
    let pay = api.user(&user, Method::POST, &format!("/v1/orders/{order}/pay")).json(&json!({}));
    let paid = api.send(via(pay, &client)).await;
    if paid.status != 200 || paid.body["status"] != "paid" {
        return Err(format!("{user} paying: {} {}", paid.status, paid.text));
    }
    Ok(true)
}

/// Purchases in a tight loop, each with a new key, all from `client`.
async fn hammer_purchases(api: Api, sale: String, bot: String, client: String) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(BOT_REQUESTS);
    for n in 0..BOT_REQUESTS {
        let request = api.buy_request(&bot, &sale, 1, Some(&format!("{bot}-{n}")));
        replies.push(api.send(via(request, &client)).await);
    }
    replies
}

/// Sign-ins with guessed credentials in a tight loop, all from `client`.
async fn stuff_credentials(api: Api, client: &'static str) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(BOT_REQUESTS);
    for _ in 0..BOT_REQUESTS {
        replies.push(api.send(via(sign_in_request(&api, &unique("guess")), client)).await);
    }
    replies
}

/// A bot only ever got defense refusals or business answers, ended banned, and held at most
/// one unit; returns the units it holds.
fn assert_bot_stopped(bot: &str, replies: &[Reply]) -> u64 {
    for reply in replies {
        let expected = matches!(
            (reply.status, reply.code()),
            (201, _)
                | (409, "limit_reached" | "sold_out")
                | (429, "rate_limited")
                | (403, "proof_of_work_required" | "banned")
        );
        assert!(expected, "bot {bot} got {} {}", reply.status, reply.text);
    }
    assert_banned(replies.last().expect("bot replies"), &format!("bot {bot} in the end"));
    let holds = replies.iter().filter(|reply| reply.status == 201).count() as u64;
    assert!(holds <= 1, "bot {bot} holds {holds} units over its limit of one: {:?}", summary(replies));
    holds
}

/// A built-in account made minutes ago owes two more bits of work than a token that does not
/// say when its account was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_accounts_owe_more_work() {
    let server = defended(&[("STAMPEDE_RATE_IP", "0"), ("STAMPEDE_BAN_THRESHOLD", "0")]).await;
    let api = server.api();
    let username = unique("fresh");
    let created = api
        .send(api.request(Method::POST, "/v1/users").json(&json!({"username": username, "password": PASSWORD})))
        .await;
    created.expect(201);
    let session = api.send(sign_in_request(api, &username)).await;
    let token = session.expect(200)["token"].as_str().expect("session token").to_string();
    let challenge = api.send(api.request(Method::GET, "/v1/challenge").bearer_auth(&token)).await;
    assert_eq!(challenge.expect(200)["difficulty"], 18, "16 bits plus 2 for a new account");
    assert_eq!(api.challenge(Some(&unique("minted"))).await["difficulty"], 16, "no account age: the base");

    let body = json!({ "name": "pow sale", "stock": 5, "price_cents": 100, "proof_of_work": true });
    let sale_id = api.create_sale(body).await["id"].as_str().expect("sale id").to_string();
    let path = format!("/v1/sales/{sale_id}/orders");
    let easy = api.challenge(Some(&unique("minted"))).await;
    let easy = solve_pow(easy["challenge"].as_str().expect("token"), 16).await;
    let refused = api
        .send(api.request(Method::POST, &path).bearer_auth(&token).header("Stampede-Pow", easy).json(&json!({})))
        .await;
    refused.expect_error(403, "proof_of_work_required");
    let hard = api.send(api.request(Method::GET, "/v1/challenge").bearer_auth(&token)).await;
    let hard = solve_pow(hard.body["challenge"].as_str().expect("token"), 18).await;
    let bought = api
        .send(api.request(Method::POST, &path).bearer_auth(&token).header("Stampede-Pow", hard).json(&json!({})))
        .await;
    bought.expect(201);
}
