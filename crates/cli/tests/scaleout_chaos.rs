//! Scale-out mode as a black box: three `stampede serve` replicas on one Redis + one Postgres.
//! Under load, a replica, Redis and Postgres are crashed and restarted; afterwards every
//! acknowledged change must be in Postgres exactly once, and the replicas must agree.
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::services::{Backends, OwnPostgres, OwnRedis, Replicas, Router};
use common::{count, unique, wait_for, Api, Reply};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use tokio::sync::Barrier;

const REPLICAS: usize = 3;
const BUYERS: usize = 24;
/// The stock of each sale: the small one sells out early and stays contended (cancellations put
/// units back), the big ones last through most of the chaos.
const STOCKS: [u64; 3] = [400, 400, 150];
/// Pause of each buyer between two purchases, so the stock lasts through most of the chaos.
const PACE: Duration = Duration::from_millis(150);
/// Per-request limit; a replica gives up on Redis after 5 s and answers 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// Tries of one request during the chaos, each on the next replica.
const CHAOS_ATTEMPTS: usize = 8;
/// Tries of a request left unresolved by the chaos, once everything runs again.
const SETTLED_ATTEMPTS: usize = 20;
/// How long the system gets to become consistent after the chaos.
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_acknowledged_order_lands_in_postgres_once() {
    let started = Instant::now();
    let redis_dir = TempDir::new().expect("redis dir");
    let pg_dir = OwnPostgres::temp_dir();
    let mut redis = OwnRedis::start(redis_dir.path()).await;
    let mut postgres = OwnPostgres::start(pg_dir.path()).await;
    let backends = Backends {
        redis_url: redis.url(),
        postgres_url: postgres.create_database("stampede_chaos").await,
        namespace: unique("chaos"),
    };
    let mut replicas = Replicas::start(REPLICAS, &backends).await;
    let router = replicas.router();
    let mut sales = Vec::new();
    for stock in STOCKS {
        sales.push(replicas.api(0).sale_with(stock, 1, 600).await);
    }
    let sales = Arc::new(sales);

    // Load on every replica, round-robin, for the whole chaos sequence.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let buyers: Vec<_> = (0..BUYERS)
        .map(|worker| {
            let buyer = Buyer { router: router.clone(), sales: sales.clone(), worker, stats: stats.clone() };
            tokio::spawn(buyer.run(stop.clone()))
        })
        .collect();

    let pause = || tokio::time::sleep(Duration::from_millis(1000));
    let mark = |event: &str| eprintln!("chaos: {event} at {:?}", started.elapsed());
    pause().await;
    mark("kill -9 replica 1");
    replicas.kill9(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicas.restart(1).await;
    mark("replica 1 listening again");
    pause().await;
    mark("kill -9 redis");
    redis.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    mark("redis answering again");
    pause().await;
    mark("postgres immediate stop");
    postgres.restart().await;
    mark("postgres started again");
    pause().await;
    mark("load stops");
    stop.store(true, Ordering::SeqCst);

    let mut log = Log::default();
    for buyer in buyers {
        log.merge(buyer.await.expect("buyer task panicked"));
    }
    let chaos_done = started.elapsed();
    assert!(log.unexpected.is_empty(), "unexpected answers under chaos: {:#?}", log.unexpected);
    let unresolved = (log.pending_buys.len(), log.pending_steps.len());
    resolve_pending(&router, &mut log, &stats).await;
    eprintln!(
        "chaos: {} acknowledged orders, {} sold out, {} unresolved buys and {} unresolved pay/cancel retried \
         afterwards, retries: {} transport errors, {} 503, {} other 5xx; load ran {chaos_done:?}",
        log.orders.len(),
        log.sold_out,
        unresolved.0,
        unresolved.1,
        stats.transport.load(Ordering::Relaxed),
        stats.unavailable.load(Ordering::Relaxed),
        stats.other_5xx.load(Ordering::Relaxed),
    );
    for sale_id in sales.iter() {
        assert!(log.orders.values().any(|order| &order.sale_id == sale_id), "no order acknowledged in {sale_id}");
    }

    // Settle: the ledger drains each sale's stream into Postgres; wait until it agrees.
    let settling = Instant::now();
    let mut ledgers = HashMap::new();
    for sale_id in sales.iter() {
        ledgers.insert(sale_id.clone(), settled_ledger(&router, sale_id).await);
    }
    eprintln!("chaos: consistent after {:?}", settling.elapsed());

    let rows = order_rows(&backends.postgres_url).await;
    assert_orders_match_postgres(&log.orders, &rows);
    for (sale_id, stock) in sales.iter().zip(STOCKS) {
        assert_sale_totals(sale_id, stock, &ledgers[sale_id], &log.orders, &rows);
    }

    let output = replicas.reconcile().await;
    assert!(
        output.status.success(),
        "stampede reconcile exits 0 on consistent backends, got {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("stampede reconcile:\n{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("chaos test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_every_replica_makes_one_order() {
    const ROUNDS: usize = 20;
    let backends = Backends::shared().await;
    let replicas = Replicas::start(REPLICAS, &backends).await;
    // A limit well above the rounds, so a duplicate shows as an extra order, not as a 409.
    let sale_id = replicas.api(0).sale_with(100, 3 * ROUNDS as u64, 600).await;
    let user = unique("same-key");
    let apis: Vec<Api> = (0..REPLICAS).map(|index| replicas.api(index)).collect();
    for api in &apis {
        // Connections open before the first round, so each round's three requests leave together.
        api.send(api.request(Method::GET, "/healthz")).await.expect(200);
    }

    let mut order_ids = HashSet::new();
    for round in 0..ROUNDS {
        let key = format!("round-{round}");
        let barrier = Arc::new(Barrier::new(REPLICAS));
        let sends: Vec<_> = apis
            .iter()
            .cloned()
            .map(|api| {
                let (barrier, user, sale_id, key) = (barrier.clone(), user.clone(), sale_id.clone(), key.clone());
                tokio::spawn(async move {
                    let request = api.buy_request(&user, &sale_id, 1, Some(&key));
                    barrier.wait().await;
                    api.send(request).await
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for send in sends {
            let reply = send.await.expect("purchase task panicked");
            assert!(matches!(reply.status, 200 | 201), "round {round}: {} {}", reply.status, reply.text);
            ids.insert(reply.body["id"].as_str().expect("order id").to_string());
        }
        assert_eq!(ids.len(), 1, "round {round}: one key made several orders: {ids:?}");
        order_ids.extend(ids);
    }
    assert_eq!(order_ids.len(), ROUNDS, "every round made its own order");

    let orders = replicas.api(1).orders(&user).await;
    let listed: HashSet<String> = orders.iter().map(|order| order["id"].as_str().expect("id").to_string()).collect();
    assert_eq!(orders.len(), ROUNDS, "the user has exactly one order per key: {orders:?}");
    assert_eq!(listed, order_ids, "GET /v1/orders lists the acknowledged orders");

    let sale = replicas.api(2).assert_consistent(&sale_id).await;
    assert_eq!(count(&sale, "held"), ROUNDS as u64, "{sale}");
    let rows = order_rows(&backends.postgres_url).await;
    let mine: Vec<&OrderRow> = rows.iter().filter(|row| row.user_id == user.as_bytes()).collect();
    assert_eq!(mine.len(), ROUNDS, "Postgres has one row per key: {mine:?}");
    let keys: HashSet<_> = mine.iter().map(|row| row.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), ROUNDS, "one row per key in Postgres: {mine:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_made_on_one_replica_is_visible_on_another() {
    let backends = Backends::shared().await;
    let replicas = Replicas::start(REPLICAS, &backends).await;
    let (a, b, c) = (replicas.api(0), replicas.api(1), replicas.api(2));
    let sale_id = a.sale_with(10, 1, 600).await;
    let user = unique("visible");

    let bought = a.buy(&user, &sale_id, 1, Some("visible-1")).await;
    let order = bought.expect(201).clone();
    let order_id = order["id"].as_str().expect("order id").to_string();
    assert_eq!(order["status"], "held", "{order}");
    let on_a = a.sale(&sale_id).await;
    assert_eq!((count(&on_a, "available"), count(&on_a, "held"), count(&on_a, "sold")), (9, 1, 0), "{on_a}");

    for (name, api) in [("B", &b), ("C", &c)] {
        let seen = api.order(&user, &order_id).await;
        assert_eq!(seen.expect(200), &order, "replica {name} sees the order as made on A");
        let sale = api.sale(&sale_id).await;
        assert_eq!(sale, on_a, "replica {name} sees the sale as A does");
        let retried = api.buy(&user, &sale_id, 1, Some("visible-1")).await;
        assert!(matches!(retried.status, 200 | 201), "replica {name}: {}", retried.text);
        assert_eq!(retried.body["id"], order["id"], "replica {name} knows the key used on A");
    }

    let paid = b.pay(&user, &order_id).await;
    assert_eq!(paid.expect(200)["status"], "paid", "{}", paid.text);
    let on_c = c.order(&user, &order_id).await;
    assert_eq!(on_c.expect(200)["status"], "paid", "replica C sees the payment made on B");
    let again = c.pay(&user, &order_id).await;
    assert_eq!(again.expect(200)["status"], "paid", "paying again on C is idempotent");
    let sale = c.sale(&sale_id).await;
    assert_eq!((count(&sale, "available"), count(&sale, "held"), count(&sale, "sold")), (9, 0, 1), "{sale}");
    assert_eq!(a.sale(&sale_id).await, sale, "A sees the sale as C does");
    let other = c.order("somebody-else", &order_id).await;
    other.expect_error(404, "not_found");
    a.assert_consistent(&sale_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_one_replica_see_changes_made_on_another() {
    let backends = Backends::shared().await;
    let replicas = Replicas::start(REPLICAS, &backends).await;
    let (a, b, c) = (replicas.api(0), replicas.api(1), replicas.api(2));
    let sale_id = a.sale_with(10, 1, 600).await;
    let auction = a.auction_with(json!({})).await;
    let auction_id = auction["id"].as_str().expect("auction id").to_string();
    let alice = unique("alice");

    let mut sale_stream = RawStream::open(&b, &format!("/v1/sales/{sale_id}/events")).await;
    let mut auction_stream = RawStream::open(&b, &format!("/v1/auctions/{auction_id}/events")).await;
    let mut alice_stream = RawStream::open(&b, &format!("/v1/me/events?access_token={}", b.token(&alice))).await;
    sale_stream.until("\"available\":10").await;
    alice_stream.until("\"type\":\"orders\"").await;

    a.buy(&alice, &sale_id, 1, None).await.expect(201);
    sale_stream.until("\"available\":9").await;
    alice_stream.until("\"type\":\"hold_created\"").await;

    c.bid(&alice, &auction_id, 5_000, None).await.expect(201);
    auction_stream.until(&format!("\"leader_id\":\"{alice}\"")).await;
    c.bid(&unique("bob"), &auction_id, 9_000, None).await.expect(201);
    alice_stream.until("\"type\":\"outbid\"").await;
}

/// An event stream read as raw text: enough to wait for a change to show up.
struct RawStream {
    response: reqwest::Response,
    seen: String,
}

impl RawStream {
    async fn open(api: &Api, path: &str) -> RawStream {
        let response = reqwest::Client::new().get(api.url(path)).send().await.expect("open stream");
        assert_eq!(response.status(), 200, "GET {path}");
        RawStream { response, seen: String::new() }
    }

    /// Reads until `text` has appeared since the last match, within 10 s.
    async fn until(&mut self, text: &str) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while !self.seen.contains(text) {
                let chunk = self.response.chunk().await.expect("read stream").expect("stream still open");
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(found.is_ok(), "{text} did not arrive; got {}", self.seen);
        let end = self.seen.find(text).map_or(0, |at| at + text.len());
        self.seen.drain(..end);
    }
}

// ---------------------------------------------------------------------------------------------
// The load of the chaos test

/// A request a buyer made; replayed as is (same user, same key) on any replica.
#[derive(Clone, Debug)]
enum Call {
    Buy { user: String, sale_id: String, key: String },
    Pay { user: String, order_id: String },
    Cancel { user: String, order_id: String },
}

impl Call {
    fn request(&self, api: &Api) -> RequestBuilder {
        match self {
            Call::Buy { user, sale_id, key } => api.buy_request(user, sale_id, 1, Some(key)),
            Call::Pay { user, order_id } => api
                .user(user, Method::POST, &format!("/v1/orders/{order_id}/pay"))
                .json(&json!({ "payment_ref": format!("ref-{order_id}") })),
            Call::Cancel { user, order_id } => {
                api.user(user, Method::POST, &format!("/v1/orders/{order_id}/cancel")).json(&json!({}))
            }
        }
    }

    /// The order status a 200 to this call means.
    fn status(&self) -> &'static str {
        match self {
            Call::Buy { .. } => "held",
            Call::Pay { .. } => "paid",
            Call::Cancel { .. } => "cancelled",
        }
    }
}

#[derive(Default)]
struct Stats {
    transport: AtomicUsize,
    unavailable: AtomicUsize,
    other_5xx: AtomicUsize,
}

/// Sends `call` to replica `first`, then to the next ones, while the answer is a transport
/// error (refused, reset, timed out) or a 5xx; `None` when every try failed that way.
async fn send_with_retries(
    router: &Router,
    call: &Call,
    first: usize,
    attempts: usize,
    stats: &Stats,
) -> Option<Reply> {
    for attempt in 0..attempts {
        let api = router.api(first + attempt);
        match api.try_send(call.request(&api).timeout(REQUEST_TIMEOUT)).await {
            Ok(reply) if reply.status < 500 => return Some(reply),
            Ok(reply) if reply.status == 503 => stats.unavailable.fetch_add(1, Ordering::Relaxed),
            Ok(_) => stats.other_5xx.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.transport.fetch_add(1, Ordering::Relaxed),
        };
        let backoff = Duration::from_millis(50 << attempt.min(4));
        tokio::time::sleep(backoff).await;
    }
    None
}

/// An order acknowledged to its buyer, with the last status acknowledged for it.
#[derive(Clone, Debug)]
struct Acked {
    user: String,
    key: String,
    sale_id: String,
    status: &'static str,
}

#[derive(Default)]
struct Log {
    /// By order id.
    orders: HashMap<String, Acked>,
    sold_out: usize,
    /// Purchases whose every try failed: they may or may not exist until retried.
    pending_buys: Vec<Call>,
    /// Pay or cancel calls whose every try failed, with their order id.
    pending_steps: Vec<(String, Call)>,
    unexpected: Vec<String>,
}

impl Log {
    fn merge(&mut self, other: Log) {
        self.orders.extend(other.orders);
        self.sold_out += other.sold_out;
        self.pending_buys.extend(other.pending_buys);
        self.pending_steps.extend(other.pending_steps);
        self.unexpected.extend(other.unexpected);
    }

    /// Records the answer to a purchase.
    fn bought(&mut self, call: &Call, reply: &Reply) -> Option<String> {
        let Call::Buy { user, sale_id, key } = call else { unreachable!("not a purchase: {call:?}") };
        if reply.status == 409 && reply.code() == "sold_out" {
            self.sold_out += 1;
            return None;
        }
        let order_id = reply.body["id"].as_str();
        let good = matches!(reply.status, 200 | 201)
            && reply.body["status"] == "held"
            && reply.body["sale_id"].as_str() == Some(sale_id)
            && order_id.is_some();
        if !good {
            self.unexpected.push(format!("{call:?} -> {} {}", reply.status, reply.text));
            return None;
        }
        let order_id = order_id.expect("checked").to_string();
        let acked = Acked { user: user.clone(), key: key.clone(), sale_id: sale_id.clone(), status: "held" };
        if let Some(previous) = self.orders.insert(order_id.clone(), acked) {
            self.unexpected.push(format!("{call:?} got order {order_id}, already acknowledged for {previous:?}"));
        }
        Some(order_id)
    }

    /// Records the answer to a pay or cancel call.
    fn stepped(&mut self, order_id: &str, call: &Call, reply: &Reply) {
        let good =
            reply.status == 200 && reply.body["status"] == call.status() && reply.body["id"].as_str() == Some(order_id);
        match self.orders.get_mut(order_id) {
            Some(order) if good => order.status = call.status(),
            _ => self.unexpected.push(format!("{call:?} -> {} {}", reply.status, reply.text)),
        }
    }
}

struct Buyer {
    router: Router,
    sales: Arc<Vec<String>>,
    worker: usize,
    stats: Arc<Stats>,
}

impl Buyer {
    /// A new user per purchase, one key each, a pause after each.
    async fn run(self, stop: Arc<AtomicBool>) -> Log {
        let mut log = Log::default();
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            self.purchase(n, &mut log).await;
            tokio::time::sleep(PACE).await;
        }
        log
    }

    /// Buys on replica `worker + n` (retrying on the next ones); two in 8 orders are then paid,
    /// one in 8 cancelled, on another replica.
    async fn purchase(&self, n: usize, log: &mut Log) {
        let user = format!("chaos-{}-{n}", self.worker);
        let replica = self.worker + n;
        let sale_id = self.sales[replica % self.sales.len()].clone();
        let buy = Call::Buy { key: format!("{user}-key"), user: user.clone(), sale_id };
        let Some(reply) = send_with_retries(&self.router, &buy, replica, CHAOS_ATTEMPTS, &self.stats).await else {
            log.pending_buys.push(buy);
            return;
        };
        let Some(order_id) = log.bought(&buy, &reply) else { return };
        let step = match n % 8 {
            0 | 3 => Call::Pay { user, order_id: order_id.clone() },
            5 => Call::Cancel { user, order_id: order_id.clone() },
            _ => return,
        };
        match send_with_retries(&self.router, &step, replica + 1, CHAOS_ATTEMPTS, &self.stats).await {
            Some(reply) => log.stepped(&order_id, &step, &reply),
            None => log.pending_steps.push((order_id, step)),
        }
    }
}

/// Retries what the chaos left unanswered, now that every service runs again: afterwards the
/// log knows the final state of every order that exists.
async fn resolve_pending(router: &Router, log: &mut Log, stats: &Stats) {
    for (index, buy) in std::mem::take(&mut log.pending_buys).into_iter().enumerate() {
        let reply = send_with_retries(router, &buy, index, SETTLED_ATTEMPTS, stats).await;
        let reply = reply.unwrap_or_else(|| panic!("{buy:?} still fails after the chaos"));
        log.bought(&buy, &reply);
    }
    for (index, (order_id, step)) in std::mem::take(&mut log.pending_steps).into_iter().enumerate() {
        let reply = send_with_retries(router, &step, index, SETTLED_ATTEMPTS, stats).await;
        let reply = reply.unwrap_or_else(|| panic!("{step:?} still fails after the chaos"));
        log.stepped(&order_id, &step, &reply);
    }
    assert!(log.unexpected.is_empty(), "unexpected answers to retries after the chaos: {:#?}", log.unexpected);
}

/// Polls the admin ledger (which drains the sale's stream into Postgres) on each replica in
/// turn until it reports itself consistent; returns it.
async fn settled_ledger(router: &Router, sale_id: &str) -> Value {
    let mut turn = 0usize;
    let last = Arc::new(Mutex::new(String::new()));
    let settled = wait_for(SETTLE, || {
        turn += 1;
        let api = router.api(turn);
        let request = api.admin(Method::GET, &format!("/v1/admin/sales/{sale_id}/ledger")).timeout(REQUEST_TIMEOUT);
        let last = last.clone();
        async move {
            let seen = match api.try_send(request).await {
                Ok(reply) if reply.status == 200 && reply.body["consistent"] == json!(true) => return Some(reply.body),
                Ok(reply) => format!("{} {}", reply.status, reply.text),
                Err(error) => error.to_string(),
            };
            *last.lock().unwrap_or_else(PoisonError::into_inner) = seen;
            None
        }
    })
    .await;
    let last = last.lock().unwrap_or_else(PoisonError::into_inner).clone();
    settled.unwrap_or_else(|| panic!("sale {sale_id} not consistent within {SETTLE:?}; last ledger: {last}"))
}

// ---------------------------------------------------------------------------------------------
// Postgres, read directly

#[derive(Debug, Clone)]
struct OrderRow {
    sale_id: String,
    seq: i32,
    user_id: Vec<u8>,
    quantity: i32,
    status: String,
    idempotency_key: Option<Vec<u8>>,
}

type RawRow = (String, i32, Vec<u8>, i32, String, Option<Vec<u8>>);

async fn order_rows(postgres_url: &str) -> Vec<OrderRow> {
    let mut conn = PgConnection::connect(postgres_url).await.expect("connect to the system of record");
    let rows: Vec<RawRow> = sqlx::query_as(
        "SELECT sale_id, seq, user_id, quantity, status, idempotency_key FROM orders ORDER BY sale_id, seq",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read orders");
    conn.close().await.ok();
    rows.into_iter()
        .map(|(sale_id, seq, user_id, quantity, status, idempotency_key)| OrderRow {
            sale_id,
            seq,
            user_id,
            quantity,
            status,
            idempotency_key,
        })
        .collect()
}

/// `o_<sale suffix>_<seq in hex>` -> (sale id, seq): the engine's id scheme, which this test
/// needs to find an order's row.
fn order_key(order_id: &str) -> (String, i32) {
    let rest = order_id.strip_prefix("o_").unwrap_or_else(|| panic!("order id {order_id}"));
    let (suffix, seq) = rest.rsplit_once('_').unwrap_or_else(|| panic!("order id {order_id}"));
    let seq = u32::from_str_radix(seq, 16).unwrap_or_else(|_| panic!("order id {order_id}"));
    (format!("s_{suffix}"), i32::try_from(seq).expect("seq fits a Postgres INTEGER"))
}

/// Every acknowledged order is in Postgres once, as acknowledged; nothing else is; no
/// (user, key) pair has two orders.
fn assert_orders_match_postgres(orders: &HashMap<String, Acked>, rows: &[OrderRow]) {
    let mut by_key: HashMap<(String, i32), Vec<&OrderRow>> = HashMap::new();
    for row in rows {
        by_key.entry((row.sale_id.clone(), row.seq)).or_default().push(row);
    }
    let mut problems = Vec::new();
    let mut expected = HashSet::new();
    for (order_id, acked) in orders {
        let key = order_key(order_id);
        expected.insert(key.clone());
        match by_key.get(&key).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{order_id} ({acked:?}) is not in Postgres")),
            Some([row]) => {
                let same = row.user_id == acked.user.as_bytes()
                    && row.status == acked.status
                    && row.quantity == 1
                    && row.idempotency_key.as_deref() == Some(acked.key.as_bytes())
                    && row.sale_id == acked.sale_id;
                if !same {
                    problems.push(format!("{order_id}: acknowledged {acked:?}, Postgres has {row:?}"));
                }
            }
            Some(several) => problems.push(format!("{order_id} is in Postgres {} times: {several:?}", several.len())),
        }
    }
    for row in rows {
        if !expected.contains(&(row.sale_id.clone(), row.seq)) {
            problems.push(format!("Postgres has an order nobody was told about: {row:?}"));
        }
    }
    let mut keys = HashMap::new();
    for row in rows {
        if let Some(key) = &row.idempotency_key {
            if let Some(first) = keys.insert((row.user_id.clone(), key.clone()), row) {
                problems.push(format!("two orders share (user, key): {first:?} and {row:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in Postgres ({} rows, {} acknowledged orders), e.g.:\n{}",
        problems.len(),
        rows.len(),
        orders.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Per sale: Postgres, the live (Redis) counters and the acknowledgements tell the same story,
/// and nothing is oversold.
fn assert_sale_totals(sale_id: &str, stock: u64, ledger: &Value, orders: &HashMap<String, Acked>, rows: &[OrderRow]) {
    let units = |status: &str| -> i64 {
        rows.iter()
            .filter(|row| row.sale_id == sale_id && row.status == status)
            .map(|row| i64::from(row.quantity))
            .sum()
    };
    let acked = |status: &str| -> i64 {
        orders.values().filter(|order| order.sale_id == sale_id && order.status == status).count() as i64
    };
    let (held, paid) = (units("held"), units("paid"));
    assert!(held + paid <= stock as i64, "{sale_id} oversold: {held} held + {paid} paid > {stock}");
    assert_eq!((held, paid), (acked("held"), acked("paid")), "{sale_id}: Postgres vs acknowledged held, paid");
    assert_eq!(units("cancelled"), acked("cancelled"), "{sale_id}: Postgres vs acknowledged cancellations");
    assert_eq!(ledger["consistent"], json!(true), "{ledger}");
    let live = &ledger["live"];
    assert_eq!((live["held"].as_i64(), live["sold"].as_i64()), (Some(held), Some(paid)), "{sale_id} live: {ledger}");
    let store = &ledger["store"];
    assert_eq!((store["held"].as_i64(), store["sold"].as_i64()), (Some(held), Some(paid)), "{sale_id} store: {ledger}");
}

// ---------------------------------------------------------------------------------------------
// Traffic defense across replicas: limits and bans live in the shared Redis.

/// Two replicas with the limits on (the harness turns them off) and `env` on top.
async fn defended_replicas(env: &[(&str, &str)]) -> Replicas {
    let backends = Backends::shared().await;
    let mut all = vec![("STAMPEDE_LIMITS", "on")];
    all.extend_from_slice(env);
    Replicas::start_with_env(2, &backends, &all).await
}

/// The request as relayed by a proxy that saw `client`.
fn relayed(request: RequestBuilder, client: &str) -> RequestBuilder {
    request.header("X-Forwarded-For", client)
}

fn assert_refused_as(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!((reply.status, reply.code()), (status, code), "{what}: {}", reply.text);
    assert!(reply.headers.contains_key("retry-after"), "{what}: Retry-After missing: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_burst_split_across_replicas_is_limited_in_total() {
    // One request a second: the burst of 4 only refills if the six arrive a second apart.
    let replicas = defended_replicas(&[("STAMPEDE_RATE_USER", "1:4")]).await;
    let (a, b) = (replicas.api(0), replicas.api(1));
    let sale_id = a.sale_with(100, 10, 600).await;
    let user = unique("split-burst");

    let sends: Vec<_> = (0..6)
        .map(|n| {
            let api = if n % 2 == 0 { a.clone() } else { b.clone() };
            let request = api.buy_request(&user, &sale_id, 1, None);
            tokio::spawn(async move { api.send(request).await })
        })
        .collect();
    let mut replies = Vec::new();
    for send in sends {
        replies.push(send.await.expect("purchase task panicked"));
    }
    let seen: Vec<(u16, &str)> = replies.iter().map(|reply| (reply.status, reply.code())).collect();
    let limited: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 429).collect();
    assert_eq!(limited.len(), 2, "the limits let through the burst of 4 in total: {seen:?}");
    for reply in limited {
        assert_refused_as(reply, 429, "rate_limited", "past the shared burst");
    }
    // A request let through may still owe work when a concurrent one of the same user was
    // refused just before its risk was read; nothing else may come back.
    let through = |answer: &&(u16, &str)| matches!(answer, (201, _) | (403, "proof_of_work_required"));
    assert_eq!(seen.iter().filter(through).count(), 4, "{seen:?}");
    let created = seen.iter().filter(|(status, _)| *status == 201).count() as u64;
    let sale = b.assert_consistent(&sale_id).await;
    assert_eq!(count(&sale, "held"), created, "{sale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_triggered_on_one_replica_is_enforced_on_another() {
    // Each request from its own address, so the user crosses the threshold, not an address.
    let replicas =
        defended_replicas(&[("STAMPEDE_BAN_THRESHOLD", "5"), ("STAMPEDE_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let (a, b) = (replicas.api(0), replicas.api(1));
    let sale_id = a.sale_with(100, 10, 600).await;
    let mallory = unique("mallory");

    let mut replies = Vec::new();
    for n in 0..6 {
        replies.push(a.send(relayed(a.buy_request(&mallory, &sale_id, 1, None), &format!("10.0.0.{n}"))).await);
    }
    let seen: Vec<(u16, &str)> = replies.iter().map(|reply| (reply.status, reply.code())).collect();
    assert_eq!(&seen[..2], &[(201, ""), (201, "")], "{seen:?}");
    assert!(seen[2..5].iter().all(|&answer| answer == (403, "proof_of_work_required")), "{seen:?}");
    assert_refused_as(&replies[5], 403, "banned", "crossing the threshold on A");

    let on_b = b.send(relayed(b.buy_request(&mallory, &sale_id, 1, None), "10.0.1.1")).await;
    assert_refused_as(&on_b, 403, "banned", "the same user on B");
    let waitlist = b.user(&mallory, Method::POST, &format!("/v1/sales/{sale_id}/waitlist")).json(&json!({}));
    assert_refused_as(&b.send(relayed(waitlist, "10.0.1.2")).await, 403, "banned", "joining the waitlist on B");
    let other = b.send(relayed(b.buy_request(&unique("alice"), &sale_id, 1, None), "10.0.1.3")).await;
    assert_eq!(other.status, 201, "another user on B is not affected: {}", other.text);
    let listed = b.banned_subjects().await;
    assert_eq!(listed, vec![format!("user:{mallory}")], "B lists the ban made on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_ban_placed_on_one_replica_is_listed_and_lifted_on_another() {
    let replicas = defended_replicas(&[]).await;
    let (a, b) = (replicas.api(0), replicas.api(1));
    let sale_id = a.sale_with(100, 10, 600).await;
    let bob = unique("bob");
    let subject = format!("user:{bob}");

    let placed = a.ban(json!({ "subject": subject, "seconds": 600, "reason": "chargebacks" })).await;
    assert_eq!(placed.expect(201)["subject"], json!(subject), "{}", placed.text);
    let on_b = b.bans().await;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(
        (on_b[0]["subject"].as_str(), on_b[0]["reason"].as_str()),
        (Some(subject.as_str()), Some("chargebacks"))
    );
    assert_refused_as(&b.buy(&bob, &sale_id, 1, None).await, 403, "banned", "bob on B");
    assert_refused_as(&a.buy(&bob, &sale_id, 1, None).await, 403, "banned", "bob on A");

    b.lift_ban(&subject).await.expect(204);
    assert!(a.bans().await.is_empty(), "A no longer lists the ban lifted on B");
    a.lift_ban(&subject).await.expect_error(404, "not_found");
    // Refused twice within the window, bob owes proof of work; a challenge from A passes on B.
    let proof = a.solved_challenge(Some(&bob)).await;
    let bought = b.send(b.buy_request(&bob, &sale_id, 1, None).header("Stampede-Pow", proof)).await;
    assert_eq!(bought.status, 201, "bob buys again once the ban is lifted: {}", bought.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_room_is_shared_by_every_replica() {
    let backends = Backends::shared().await;
    let replicas = Replicas::start(REPLICAS, &backends).await;
    let (a, b, c) = (replicas.api(0), replicas.api(1), replicas.api(2));
    let body = json!({ "name": "room sale", "stock": 5, "price_cents": 100, "waiting_room": { "max_active": 1 } });
    let sale_id = a.create_sale(body).await["id"].as_str().expect("sale id").to_string();
    let (first, second) = (unique("first"), unique("second"));
    let queue = format!("/v1/sales/{sale_id}/queue");
    let join = |api: Api, user: String| {
        let path = queue.clone();
        async move { api.send(api.user(&user, Method::POST, &path)).await }
    };
    let first_ticket = join(a.clone(), first.clone()).await.expect(201)["ticket"].as_str().expect("ticket").to_string();
    let second_ticket =
        join(b.clone(), second.clone()).await.expect(201)["ticket"].as_str().expect("ticket").to_string();
    let again = join(c.clone(), first.clone()).await;
    assert_eq!(again.expect(200)["ticket"], first_ticket.as_str(), "one ticket per user everywhere");
    let standing = |api: Api, user: String, ticket: String| {
        let path = format!("/v1/sales/{sale_id}/queue/{ticket}");
        async move { api.send(api.user(&user, Method::GET, &path)).await.expect(200).clone() }
    };
    let admitted = wait_for(Duration::from_secs(10), || async {
        let body = standing(b.clone(), first.clone(), first_ticket.clone()).await;
        (body["status"] == "admitted").then_some(body)
    })
    .await
    .expect("the first in line is let in");
    let waiting = standing(c.clone(), second.clone(), second_ticket.clone()).await;
    assert_eq!((waiting["status"].as_str(), waiting["position"].as_u64()), (Some("waiting"), Some(1)), "{waiting}");
    let pass = admitted["pass"].as_str().expect("pass");
    let bought = c.send(c.buy_request(&first, &sale_id, 1, None).header("Stampede-Pass", pass)).await;
    bought.expect(201);
    let refused = c.send(c.buy_request(&second, &sale_id, 1, None).header("Stampede-Pass", pass)).await;
    refused.expect_error(403, "pass_required");
    wait_for(Duration::from_secs(10), || async {
        let body = standing(a.clone(), second.clone(), second_ticket.clone()).await;
        (body["status"] == "admitted").then_some(())
    })
    .await
    .expect("the purchase on one replica frees the place for the next, seen on another");
}
