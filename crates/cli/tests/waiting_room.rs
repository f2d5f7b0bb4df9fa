//! The waiting room as a black box: room settings, tickets from waiting to admitted to finished,
//! passes on purchases, the admission order (FIFO and the documented shuffle), the pace, sold-out
//! stops, admin states, the `admitted` event and proof of work on a sale.
//!
//! Timing: the server lets people in every 100 ms, so the tests wait (bounded) for the standing
//! they expect. Where nobody may be let in, they watch for a window of several ticks; a server
//! that lets someone in then fails the test.
mod common;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{parse_rfc3339, rfc3339_after, unique, wait_for, Api, Reply, Server};

const PASS_HEADER: &str = "Stampede-Pass";
const POW_HEADER: &str = "Stampede-Pow";
/// How long a test waits for someone to be let in; far above the 100 ms tick.
const ADMIT_LIMIT: Duration = Duration::from_secs(10);
/// How long a test watches for nobody being let in: ten ticks.
const QUIET_WINDOW: Duration = Duration::from_secs(1);

/// A live sale with a room; `room` is the `waiting_room` object, `extra` goes on top of the sale.
async fn room_sale(api: &Api, stock: u64, room: Value, extra: Value) -> String {
    let mut body = json!({
        "name": "room sale",
        "stock": stock,
        "price_cents": 1999,
        "per_user_limit": 1,
        "hold_seconds": 300,
        "waiting_room": room,
    });
    for (field, value) in extra.as_object().expect("extra is a JSON object") {
        body[field] = value.clone();
    }
    let sale = api.create_sale(body).await;
    sale["id"].as_str().expect("sale id").to_string()
}

/// A live FIFO room sale with `room` settings, paused so that nobody is let in until the test
/// opens it.
async fn paused_sale(api: &Api, stock: u64, room: Value) -> String {
    let sale_id = room_sale(api, stock, room, json!({})).await;
    set_state(api, &sale_id, "paused").await.expect(200);
    sale_id
}

async fn join(api: &Api, user: &str, sale_id: &str) -> Reply {
    api.send(api.user(user, Method::POST, &format!("/v1/sales/{sale_id}/queue")).json(&json!({}))).await
}

/// Joins and expects a new ticket; returns its body.
async fn joined(api: &Api, user: &str, sale_id: &str) -> Value {
    join(api, user, sale_id).await.expect(201).clone()
}

fn ticket_id(ticket: &Value) -> String {
    ticket["ticket"].as_str().unwrap_or_else(|| panic!("no ticket id: {ticket}")).to_string()
}

async fn standing_reply(api: &Api, user: &str, sale_id: &str, ticket: &str) -> Reply {
    api.send(api.user(user, Method::GET, &format!("/v1/sales/{sale_id}/queue/{ticket}"))).await
}

async fn standing(api: &Api, user: &str, sale_id: &str, ticket: &str) -> Value {
    standing_reply(api, user, sale_id, ticket).await.expect(200).clone()
}

async fn summary(api: &Api, sale_id: &str) -> Value {
    api.send(api.request(Method::GET, &format!("/v1/sales/{sale_id}/queue"))).await.expect(200).clone()
}

async fn set_state(api: &Api, sale_id: &str, state: &str) -> Reply {
    let request = api.admin(Method::POST, &format!("/v1/admin/sales/{sale_id}/queue"));
    api.send(request.json(&json!({ "state": state }))).await
}

/// Waits (bounded) until the ticket is admitted; returns its body with the pass.
async fn admitted(api: &Api, user: &str, sale_id: &str, ticket: &str) -> Value {
    let found = wait_for(ADMIT_LIMIT, || async {
        let body = standing(api, user, sale_id, ticket).await;
        (body["status"] == "admitted").then_some(body)
    })
    .await;
    found.unwrap_or_else(|| panic!("{user} was not admitted within {ADMIT_LIMIT:?}"))
}

fn pass_of(ticket: &Value) -> String {
    ticket["pass"].as_str().unwrap_or_else(|| panic!("no pass: {ticket}")).to_string()
}

async fn buy_with(api: &Api, user: &str, sale_id: &str, pass: &str) -> Reply {
    api.send(api.buy_request(user, sale_id, 1, None).header(PASS_HEADER, pass)).await
}

/// Watches the tickets for `QUIET_WINDOW` and fails as soon as one is not waiting.
async fn assert_all_stay_waiting(api: &Api, sale_id: &str, tickets: &[(String, String)], why: &str) {
    let deadline = Instant::now() + QUIET_WINDOW;
    while Instant::now() < deadline {
        for (user, ticket) in tickets {
            let body = standing(api, user, sale_id, ticket).await;
            assert_eq!(body["status"], "waiting", "{why}: {user} must still wait: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until exactly one of `tickets` is admitted; returns its index. Fails when
/// more than one is admitted at once.
async fn the_one_admitted(api: &Api, sale_id: &str, tickets: &[(String, String)]) -> (usize, Value) {
    let found = wait_for(ADMIT_LIMIT, || async {
        let mut admitted = Vec::new();
        for (index, (user, ticket)) in tickets.iter().enumerate() {
            let body = standing(api, user, sale_id, ticket).await;
            if body["status"] == "admitted" {
                admitted.push((index, body));
            }
        }
        assert!(admitted.len() <= 1, "max_active 1 but several admitted: {admitted:?}");
        admitted.pop()
    })
    .await;
    found.unwrap_or_else(|| panic!("nobody was admitted within {ADMIT_LIMIT:?}"))
}

/// Seconds from now until an RFC 3339 time.
fn seconds_until(text: &str) -> i64 {
    (parse_rfc3339(text) - chrono::Utc::now()).num_seconds()
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The documented shuffle of join order `0..n`: Fisher-Yates from the end on SplitMix64.
fn documented_shuffle(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        let bound = u64::try_from(i + 1).expect("index fits u64");
        let j = usize::try_from(splitmix64(&mut state) % bound).expect("index fits usize");
        order.swap(i, j);
    }
    order
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_settings_are_validated_and_shown_on_the_sale() {
    let server = Server::start().await;
    let api = server.api();
    let invalid = [
        (json!({ "mode": "lottery" }), "waiting_room.mode"),
        (json!({ "mode": "fifo", "opens_at": rfc3339_after(Duration::from_secs(10)) }), "waiting_room.opens_at"),
        (json!({ "admit_per_minute": 0 }), "waiting_room.admit_per_minute"),
        (json!({ "max_active": 0 }), "waiting_room.max_active"),
        (json!({ "pass_seconds": 0 }), "waiting_room.pass_seconds"),
        (json!({ "pass_seconds": 3601 }), "waiting_room.pass_seconds"),
    ];
    for (room, field) in invalid {
        let body = json!({ "name": "bad room", "stock": 5, "price_cents": 100, "waiting_room": room });
        let reply = api.send(api.admin(Method::POST, "/v1/sales").json(&body)).await;
        reply.expect_error(400, "invalid_request");
        assert!(reply.message().contains(field), "the error names {field}: {}", reply.text);
    }

    let defaults = room_sale(api, 5, json!({}), json!({})).await;
    let sale = api.sale(&defaults).await;
    let room = &sale["waiting_room"];
    assert_eq!(room["mode"], "fifo", "{sale}");
    assert_eq!(room["admit_per_minute"], 600, "{sale}");
    assert_eq!(room["max_active"], 500, "{sale}");
    assert_eq!(room["pass_seconds"], 300, "{sale}");
    assert!(room["opens_at"].is_null(), "no opens_at given: {sale}");
    assert_eq!(sale["proof_of_work"], false, "{sale}");

    let opens_at = rfc3339_after(Duration::from_secs(60));
    let room = json!({
        "mode": "shuffled", "opens_at": opens_at, "admit_per_minute": 120, "max_active": 7, "pass_seconds": 3600,
    });
    let starts_at = rfc3339_after(Duration::from_secs(120));
    let shuffled = room_sale(api, 5, room, json!({ "starts_at": starts_at, "proof_of_work": true })).await;
    let sale = api.sale(&shuffled).await;
    let room = &sale["waiting_room"];
    assert_eq!(room["mode"], "shuffled", "{sale}");
    assert_eq!(room["admit_per_minute"], 120, "{sale}");
    assert_eq!(room["max_active"], 7, "{sale}");
    assert_eq!(room["pass_seconds"], 3600, "{sale}");
    let shown = parse_rfc3339(room["opens_at"].as_str().expect("opens_at shown"));
    assert!((shown - parse_rfc3339(&opens_at)).num_milliseconds().abs() < 1000, "opens_at kept: {sale}");
    assert_eq!(sale["proof_of_work"], true, "{sale}");

    let plain = api.sale_with(5, 1, 300).await;
    assert!(api.sale(&plain).await["waiting_room"].is_null(), "a plain sale has no room");
    join(api, "plain-user", &plain).await.expect_error(404, "not_found");
    let summary = api.send(api.request(Method::GET, &format!("/v1/sales/{plain}/queue"))).await;
    summary.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_goes_from_waiting_to_admitted_to_finished() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 5, json!({ "pass_seconds": 300 })).await;
    let user = unique("flow");

    let ticket = joined(api, &user, &sale_id).await;
    assert_eq!(ticket["status"], "waiting", "{ticket}");
    assert_eq!(ticket["position"], 1, "{ticket}");
    assert_eq!(ticket["order_known"], true, "a FIFO room knows the order: {ticket}");
    assert_eq!(ticket["odds"], "fair", "{ticket}");
    assert!(ticket["eta_seconds"].is_u64(), "{ticket}");
    let id = ticket_id(&ticket);
    let again = join(api, &user, &sale_id).await;
    assert_eq!(ticket_id(again.expect(200)), id, "joining again gives the same ticket");
    assert_eq!(standing(api, &user, &sale_id, &id).await["status"], "waiting");
    standing_reply(api, "someone-else", &sale_id, &id).await.expect_error(404, "not_found");

    set_state(api, &sale_id, "open").await.expect(200);
    let admitted = admitted(api, &user, &sale_id, &id).await;
    assert_eq!(admitted["ticket"], id.as_str(), "{admitted}");
    let left = seconds_until(admitted["pass_expires_at"].as_str().expect("pass_expires_at"));
    assert!((240..=300).contains(&left), "a pass lasts pass_seconds: {left} s left: {admitted}");
    assert_eq!(join(api, &user, &sale_id).await.expect(200)["status"], "admitted");

    let order = buy_with(api, &user, &sale_id, &pass_of(&admitted)).await;
    order.expect(201);
    assert_eq!(standing(api, &user, &sale_id, &id).await["status"], "finished", "buying finishes the ticket");
    api.assert_consistent(&sale_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_need_a_valid_pass_of_that_user_for_that_sale() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = room_sale(api, 5, json!({}), json!({})).await;
    let other_sale = room_sale(api, 5, json!({}), json!({})).await;
    let (alice, bob) = (unique("alice"), unique("bob"));

    let alice_ticket = ticket_id(&joined(api, &alice, &sale_id).await);
    let bob_ticket = ticket_id(&joined(api, &bob, &sale_id).await);
    let elsewhere = ticket_id(&joined(api, &alice, &other_sale).await);
    let alice_pass = pass_of(&admitted(api, &alice, &sale_id, &alice_ticket).await);
    let bob_pass = pass_of(&admitted(api, &bob, &sale_id, &bob_ticket).await);
    let other_pass = pass_of(&admitted(api, &alice, &other_sale, &elsewhere).await);

    let bare = api.buy(&alice, &sale_id, 1, None).await;
    bare.expect_error(403, "pass_required");
    buy_with(api, &alice, &sale_id, "not-a-pass").await.expect_error(403, "pass_required");
    buy_with(api, &alice, &sale_id, &bob_pass).await.expect_error(403, "pass_required");
    buy_with(api, &alice, &sale_id, &other_pass).await.expect_error(403, "pass_required");
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["available"], 5, "refused purchases take nothing: {sale}");

    buy_with(api, &alice, &sale_id, &alice_pass).await.expect(201);
    buy_with(api, &alice, &other_sale, &other_pass).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_lets_people_in_one_at_a_time_in_join_order() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 10, json!({ "mode": "fifo", "max_active": 1 })).await;
    let mut tickets = Vec::new();
    for n in 0..4 {
        let user = unique(&format!("fifo{n}"));
        let ticket = joined(api, &user, &sale_id).await;
        assert_eq!(ticket["position"], n + 1, "positions follow the join order: {ticket}");
        tickets.push((user, ticket_id(&ticket)));
    }
    set_state(api, &sale_id, "open").await.expect(200);

    let mut remaining = tickets.clone();
    for expected in &tickets {
        let (index, body) = the_one_admitted(api, &sale_id, &remaining).await;
        assert_eq!(&remaining[index], expected, "admitted out of join order");
        let (user, ticket) = remaining.remove(index);
        for (place, (other, other_ticket)) in remaining.iter().enumerate() {
            let waiting = standing(api, other, &sale_id, other_ticket).await;
            assert_eq!(waiting["status"], "waiting", "max_active 1: {waiting}");
            assert_eq!(waiting["position"], place + 1, "{waiting}");
        }
        buy_with(api, &user, &sale_id, &pass_of(&body)).await.expect(201);
        assert_eq!(standing(api, &user, &sale_id, &ticket).await["status"], "finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pace_limits_how_many_are_let_in() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 10, json!({ "admit_per_minute": 60 })).await;
    let mut tickets = Vec::new();
    for n in 0..5 {
        let user = unique(&format!("pace{n}"));
        tickets.push((user.clone(), ticket_id(&joined(api, &user, &sale_id).await)));
    }
    let opened = Instant::now();
    set_state(api, &sale_id, "open").await.expect(200);

    let all_in = wait_for(Duration::from_secs(20), || async {
        let mut count = 0u64;
        for (user, ticket) in &tickets {
            count += u64::from(standing(api, user, &sale_id, ticket).await["status"] == "admitted");
        }
        // One a second, plus at most one second of unused pace kept while paused.
        let allowed = 2 + opened.elapsed().as_secs();
        assert!(count <= allowed, "{count} admitted {:?} after opening at 60 a minute", opened.elapsed());
        (count == 5).then_some(())
    })
    .await;
    assert!(all_in.is_some(), "everyone is let in eventually");
    assert!(
        opened.elapsed() >= Duration::from_millis(2500),
        "five at 60 a minute take seconds: {:?}",
        opened.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_is_let_in_while_sold_out_until_a_hold_is_cancelled() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 1, json!({ "max_active": 1 })).await;
    let mut tickets = Vec::new();
    for n in 0..3 {
        let user = unique(&format!("sold{n}"));
        tickets.push((user.clone(), joined(api, &user, &sale_id).await));
    }
    assert_eq!(tickets[0].1["odds"], "fair", "first for the last unit: {}", tickets[0].1);
    assert_eq!(tickets[2].1["odds"], "unlikely", "two ahead for one unit: {}", tickets[2].1);
    let tickets: Vec<(String, String)> = tickets.iter().map(|(user, body)| (user.clone(), ticket_id(body))).collect();
    set_state(api, &sale_id, "open").await.expect(200);

    let (first, first_ticket) = &tickets[0];
    let pass = pass_of(&admitted(api, first, &sale_id, first_ticket).await);
    let order = buy_with(api, first, &sale_id, &pass).await;
    let order_id = order.expect(201)["id"].as_str().expect("order id").to_string();
    assert_all_stay_waiting(api, &sale_id, &tickets[1..], "sold out").await;

    api.cancel(first, &order_id).await.expect(200);
    let (second, second_ticket) = &tickets[1];
    let body = admitted(api, second, &sale_id, second_ticket).await;
    assert_eq!(standing(api, &tickets[2].0, &sale_id, &tickets[2].1).await["status"], "waiting");
    buy_with(api, second, &sale_id, &pass_of(&body)).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pass_frees_the_place_and_buys_nothing() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 5, json!({ "max_active": 1, "pass_seconds": 1 })).await;
    let (slow, next) = (unique("slow"), unique("next"));
    let slow_ticket = ticket_id(&joined(api, &slow, &sale_id).await);
    let next_ticket = ticket_id(&joined(api, &next, &sale_id).await);
    set_state(api, &sale_id, "open").await.expect(200);

    let slow_pass = pass_of(&admitted(api, &slow, &sale_id, &slow_ticket).await);
    let next_pass = pass_of(&admitted(api, &next, &sale_id, &next_ticket).await);
    let late = buy_with(api, &slow, &sale_id, &slow_pass).await;
    late.expect_error(403, "pass_required");
    buy_with(api, &next, &sale_id, &next_pass).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_pause_admit_all_and_close_the_room() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = room_sale(api, 10, json!({ "admit_per_minute": 1 }), json!({})).await;

    let paused = set_state(api, &sale_id, "paused").await;
    assert_eq!(paused.expect(200)["state"], "paused", "{}", paused.text);
    let mut tickets = Vec::new();
    for n in 0..4 {
        let user = unique(&format!("admin{n}"));
        tickets.push((user.clone(), ticket_id(&joined(api, &user, &sale_id).await)));
    }
    assert_all_stay_waiting(api, &sale_id, &tickets, "paused").await;
    let glance = summary(api, &sale_id).await;
    assert_eq!(glance["state"], "paused", "{glance}");
    assert_eq!(glance["waiting"], 4, "{glance}");

    let all = set_state(api, &sale_id, "admit_all").await;
    assert_eq!(all.expect(200)["state"], "admit_all", "{}", all.text);
    for (user, ticket) in &tickets {
        admitted(api, user, &sale_id, ticket).await;
    }

    let closed = set_state(api, &sale_id, "closed").await;
    assert_eq!(closed.expect(200)["state"], "closed", "{}", closed.text);
    join(api, &unique("late"), &sale_id).await.expect_error(409, "queue_closed");
    assert_eq!(summary(api, &sale_id).await["state"], "closed");

    set_state(api, &sale_id, "sideways").await.expect_error(400, "invalid_request");
    let request = api.user("not-admin", Method::POST, &format!("/v1/admin/sales/{sale_id}/queue"));
    let forbidden = api.send(request.json(&json!({ "state": "open" }))).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_lets_nobody_in() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 10, json!({})).await;
    let user = unique("shut");
    let tickets = vec![(user.clone(), ticket_id(&joined(api, &user, &sale_id).await))];
    set_state(api, &sale_id, "closed").await.expect(200);
    assert_all_stay_waiting(api, &sale_id, &tickets, "closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_before_the_room_opens_is_refused() {
    let server = Server::start().await;
    let api = server.api();
    let starts_at = rfc3339_after(Duration::from_secs(120));
    let fifo = room_sale(api, 5, json!({}), json!({ "starts_at": starts_at })).await;
    join(api, "early", &fifo).await.expect_error(409, "queue_not_open");

    let room = json!({ "mode": "shuffled", "opens_at": rfc3339_after(Duration::from_secs(60)) });
    let shuffled = room_sale(api, 5, room, json!({ "starts_at": starts_at })).await;
    join(api, "early", &shuffled).await.expect_error(409, "queue_not_open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffled_pre_queue_is_let_in_in_the_documented_order() {
    const PEOPLE: usize = 8;
    let server = Server::start().await;
    let api = server.api();
    let starts_at = rfc3339_after(Duration::from_secs(4));
    let room = json!({ "mode": "shuffled", "opens_at": rfc3339_after(Duration::ZERO), "max_active": 1 });
    let sale_id = room_sale(api, 10, room, json!({ "starts_at": starts_at })).await;

    let mut tickets = Vec::new();
    for n in 0..PEOPLE {
        let user = unique(&format!("shuffle{n}"));
        let ticket = joined(api, &user, &sale_id).await;
        assert_eq!(ticket["status"], "waiting", "{ticket}");
        assert_eq!(ticket["order_known"], false, "the order is drawn at the start: {ticket}");
        tickets.push((user, ticket_id(&ticket)));
    }
    let before = summary(api, &sale_id).await;
    assert!(before["seed"].is_null(), "the seed is secret before the start: {before}");
    let commitment = before["seed_commitment"].as_str().expect("seed_commitment").to_string();
    let is_hex = commitment.len() == 64 && commitment.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    assert!(is_hex, "a lowercase SHA-256 hex commitment: {before}");
    assert_eq!(before["mode"], "shuffled", "{before}");

    let revealed = wait_for(Duration::from_secs(15), || async {
        let glance = summary(api, &sale_id).await;
        glance["seed"].as_str().map(str::to_string)
    })
    .await;
    let seed_text = revealed.expect("the seed is revealed after the start");
    let seed: u64 = seed_text.parse().unwrap_or_else(|_| panic!("the seed is a decimal u64: {seed_text}"));
    assert_eq!(sha256_hex(&seed_text), commitment, "the seed matches its commitment");

    let expected: Vec<usize> = documented_shuffle(PEOPLE, seed);
    let mut remaining: Vec<(usize, (String, String))> = tickets.into_iter().enumerate().collect();
    let mut order = Vec::new();
    while !remaining.is_empty() {
        let pairs: Vec<(String, String)> = remaining.iter().map(|(_, pair)| pair.clone()).collect();
        let (index, body) = the_one_admitted(api, &sale_id, &pairs).await;
        let (joined_as, (user, _)) = remaining.remove(index);
        order.push(joined_as);
        buy_with(api, &user, &sale_id, &pass_of(&body)).await.expect(201);
    }
    assert_eq!(order, expected, "admission follows the documented shuffle of the join order (seed {seed})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_announced_on_my_events() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 5, json!({})).await;
    let user = unique("heard");
    let path = format!("/v1/me/events?access_token={}", api.token(&user));
    let mut events = Events::open(api, &path).await;
    let ticket = ticket_id(&joined(api, &user, &sale_id).await);
    set_state(api, &sale_id, "open").await.expect(200);

    let event = events.until_named("admitted").await;
    assert_eq!(event["type"], "admitted", "{event}");
    assert_eq!(event["sale_id"], sale_id.as_str(), "{event}");
    let body = admitted(api, &user, &sale_id, &ticket).await;
    assert!(event["pass_expires_at"].is_string(), "{event}");
    let pass = event["pass"].as_str().expect("the event carries the pass");
    buy_with(api, &user, &sale_id, pass).await.expect(201);
    assert_eq!(standing(api, &user, &sale_id, &ticket).await["status"], "finished", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_of_work_sale_asks_every_buyer_for_work() {
    let env = [("STAMPEDE_LIMITS", "on"), ("STAMPEDE_RATE_IP", "0"), ("STAMPEDE_BAN_THRESHOLD", "0")];
    let server = Server::start_with_env(&env).await;
    let api = server.api();
    let body =
        json!({ "name": "pow sale", "stock": 5, "price_cents": 100, "per_user_limit": 1, "proof_of_work": true });
    let sale_id = api.create_sale(body).await["id"].as_str().expect("sale id").to_string();
    let plain = api.sale_with(5, 1, 300).await;
    let user = unique("worker");

    let bare = api.buy(&user, &sale_id, 1, None).await;
    bare.expect_error(403, "proof_of_work_required");
    api.buy(&user, &plain, 1, None).await.expect(201);

    let proof = api.solved_challenge(Some(&user)).await;
    let solved = api.send(api.buy_request(&user, &sale_id, 1, None).header(POW_HEADER, proof)).await;
    solved.expect(201);
}

/// A `/v1/me/events` stream read incrementally; its own client, as the shared one has a total
/// request time limit.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(api: &Api, path: &str) -> Events {
        let client = reqwest::Client::builder().build().expect("build stream client");
        let response = client.get(api.url(path)).headers(HeaderMap::new()).send().await.expect("stream request");
        assert_eq!(response.status(), 200, "GET {path} opens a stream");
        Events { response, buffer: String::new() }
    }

    /// The data of the first event named `name`, within `ADMIT_LIMIT`.
    async fn until_named(&mut self, name: &str) -> Value {
        let read = tokio::time::timeout(ADMIT_LIMIT, async {
            loop {
                if let Some(data) = self.take_named(name) {
                    return data;
                }
                let chunk = self.response.chunk().await.expect("read stream").expect("stream ended early");
                self.buffer.push_str(std::str::from_utf8(&chunk).expect("events are UTF-8"));
            }
        })
        .await;
        read.unwrap_or_else(|_| panic!("no {name} event within {ADMIT_LIMIT:?}"))
    }

    fn take_named(&mut self, name: &str) -> Option<Value> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let event = block.lines().find_map(|line| line.strip_prefix("event:")).map(str::trim);
            if event != Some(name) {
                continue;
            }
            let data: Vec<&str> = block.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim).collect();
            return Some(serde_json::from_str(&data.join("\n")).expect("event data is JSON"));
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_people_hear_their_position_as_it_changes() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 5, json!({ "max_active": 1 })).await;
    let (first, second) = (unique("ahead"), unique("behind"));
    let first_ticket = ticket_id(&joined(api, &first, &sale_id).await);
    let ticket = ticket_id(&joined(api, &second, &sale_id).await);
    let path = format!("/v1/me/events?access_token={}", api.token(&second));
    let mut events = Events::open(api, &path).await;

    let event = events.until_named("queue_position").await;
    assert_eq!((event["type"].as_str(), event["position"].as_u64()), (Some("queue_position"), Some(2)), "{event}");
    assert_eq!((event["sale_id"].as_str(), event["ticket"].as_str()), (Some(sale_id.as_str()), Some(ticket.as_str())));
    set_state(api, &sale_id, "open").await.expect(200);
    let pass = pass_of(&admitted(api, &first, &sale_id, &first_ticket).await);
    let moved = events.until_named("queue_position").await;
    assert_eq!(moved["position"].as_u64(), Some(1), "{moved}");
    buy_with(api, &first, &sale_id, &pass).await.expect(201);
    let event = events.until_named("admitted").await;
    assert_eq!(event["sale_id"], sale_id.as_str(), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_page_is_served_self_contained() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = paused_sale(api, 5, json!({})).await;
    let reply = api.send(api.request(Method::GET, &format!("/rooms/{sale_id}"))).await;
    assert_eq!(reply.status, 200);
    let content_type = reply.headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for needed in ["/v1/me/events", "Stampede-Pass", "Stampede-Pow", "/v1/challenge", "function sha256"] {
        assert!(reply.text.contains(needed), "the page uses {needed}");
    }
    assert!(!reply.text.contains("http://") && !reply.text.contains("https://"), "no outside resources");
}
