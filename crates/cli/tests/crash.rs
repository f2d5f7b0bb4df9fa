//! kill -9 under load: every acknowledged order survives, nothing is double counted.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{for_each_concurrent, Api, Server};

const WORKERS: usize = 16;
const CYCLES: usize = 4;
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(700);
const BIG_STOCK: u64 = 10_000;
const SMALL_STOCK: u64 = 25;

/// A purchase the server answered 201 to; it must survive any crash.
#[derive(Clone, Debug)]
struct Acked {
    user: String,
    order_id: String,
    sale_id: String,
}

/// A purchase whose answer was lost to the crash; it may or may not exist.
#[derive(Clone, Debug)]
struct InFlight {
    user: String,
    key: String,
    sale_id: String,
}

enum Outcome {
    Acked(Acked),
    SoldOut,
    InFlight(InFlight),
    Unexpected(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_survive_repeated_kill_9() {
    let mut server = Server::start().await;
    let big = server.api().sale_with(BIG_STOCK, 1, 600).await;
    let small = server.api().sale_with(SMALL_STOCK, 1, 600).await;
    let sales = [big, small];
    let mut acked: Vec<Acked> = Vec::new();

    for cycle in 0..CYCLES {
        let outcomes = load_then_kill(&mut server, &sales, cycle).await;
        let in_flight = sort_outcomes(outcomes, &mut acked);
        server.restart().await;
        let api = server.api().clone();

        assert_acked_orders_held(&api, &acked).await;
        for sale_id in &sales {
            assert_held_within_bounds(&api, sale_id, &acked, &in_flight).await;
        }
        let resolved = retry_in_flight(&api, in_flight).await;
        acked.extend(resolved);
        for sale_id in &sales {
            let sale = api.assert_consistent(sale_id).await;
            let expected = acked_units(&acked, sale_id);
            assert_eq!(sale["held"].as_u64(), Some(expected), "after retries held == acknowledged units: {sale}");
        }
    }
    assert!(acked.iter().any(|order| order.sale_id == sales[0]), "no purchase was ever acknowledged");
    let small_sale = server.api().sale(&sales[1]).await;
    assert_eq!(small_sale["available"].as_u64(), Some(0), "the small sale sells out: {small_sale}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_orders() {
    let mut server = Server::start().await;
    let sale_id = server.api().sale_with(5, 1, 600).await;
    let order = server.api().buy("crash-term", &sale_id, 1, Some("term-1")).await;
    let order_id = order.expect(201)["id"].as_str().expect("order id").to_string();

    let status = server.terminate().await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    server.restart().await;
    let api = server.api();
    assert_eq!(api.order("crash-term", &order_id).await.expect(200)["status"], "held");
    let sale = api.assert_consistent(&sale_id).await;
    assert_eq!(sale["held"].as_u64(), Some(1), "{sale}");
}

/// Runs `WORKERS` buyers against the live server, then SIGKILLs it mid-load.
async fn load_then_kill(server: &mut Server, sales: &[String; 2], cycle: usize) -> Vec<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let buyer = Buyer { api: server.api().clone(), sales: sales.clone(), cycle, worker };
            tokio::spawn(buyer.run(Arc::clone(&stop)))
        })
        .collect();
    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    stop.store(true, Ordering::SeqCst);
    server.kill9().await;
    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.expect("buyer task panicked"));
    }
    outcomes
}

struct Buyer {
    api: Api,
    sales: [String; 2],
    cycle: usize,
    worker: usize,
}

impl Buyer {
    /// Distinct user and key per purchase; every fourth goes to the small sale.
    async fn run(self, stop: Arc<AtomicBool>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let user = format!("crash-{}-{}-{n}", self.cycle, self.worker);
            let sale_id = self.sales[usize::from(n.is_multiple_of(4))].clone();
            outcomes.push(self.buy_once(user, sale_id).await);
        }
        outcomes
    }

    async fn buy_once(&self, user: String, sale_id: String) -> Outcome {
        let key = format!("{user}-key");
        let reply = match self.api.try_buy(&user, &sale_id, 1, &key).await {
            Ok(reply) => reply,
            Err(_) => return Outcome::InFlight(InFlight { user, key, sale_id }),
        };
        if reply.status == 201 {
            let order_id = reply.body["id"].as_str().expect("order id").to_string();
            return Outcome::Acked(Acked { user, order_id, sale_id });
        }
        if reply.status == 409 && reply.code() == "sold_out" {
            return Outcome::SoldOut;
        }
        Outcome::Unexpected(format!("{} {}", reply.status, reply.text))
    }
}

fn sort_outcomes(outcomes: Vec<Outcome>, acked: &mut Vec<Acked>) -> Vec<InFlight> {
    let mut in_flight = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Acked(order) => acked.push(order),
            Outcome::SoldOut => {}
            Outcome::InFlight(request) => in_flight.push(request),
            Outcome::Unexpected(reply) => panic!("unexpected purchase reply: {reply}"),
        }
    }
    in_flight
}

async fn assert_acked_orders_held(api: &Api, acked: &[Acked]) {
    let api = api.clone();
    let failures = for_each_concurrent(acked.to_vec(), 32, move |order| {
        let api = api.clone();
        async move {
            let reply = api.order(&order.user, &order.order_id).await;
            let held = reply.status == 200
                && reply.body["status"].as_str() == Some("held")
                && reply.body["sale_id"].as_str() == Some(order.sale_id.as_str());
            (!held).then(|| format!("{order:?} -> {} {}", reply.status, reply.text))
        }
    })
    .await;
    let lost: Vec<String> = failures.into_iter().flatten().collect();
    assert!(lost.is_empty(), "{} acknowledged orders lost after kill -9, e.g. {:?}", lost.len(), lost.first());
}

/// Acknowledged units must be held; at most the in-flight ones may be held on top.
async fn assert_held_within_bounds(api: &Api, sale_id: &str, acked: &[Acked], in_flight: &[InFlight]) {
    let sale = api.assert_consistent(sale_id).await;
    let held = sale["held"].as_u64().expect("held");
    let floor = acked_units(acked, sale_id);
    let maybe = in_flight.iter().filter(|request| request.sale_id == sale_id).count() as u64;
    assert!(held >= floor, "held {held} < acknowledged {floor}: {sale}");
    assert!(held <= floor + maybe, "held {held} > acknowledged {floor} + in flight {maybe}: {sale}");
}

/// Retries each lost request with its key; returns the ones that now exist, after checking
/// that no key produced a second order.
async fn retry_in_flight(api: &Api, in_flight: Vec<InFlight>) -> Vec<Acked> {
    let api = api.clone();
    let resolved = for_each_concurrent(in_flight, 16, move |request| {
        let api = api.clone();
        async move { retry_one(&api, request).await }
    })
    .await;
    resolved.into_iter().flatten().collect()
}

async fn retry_one(api: &Api, request: InFlight) -> Option<Acked> {
    let reply = api.buy(&request.user, &request.sale_id, 1, Some(&request.key)).await;
    let orders = api.orders(&request.user).await;
    let for_sale: Vec<_> = orders.iter().filter(|order| order["sale_id"].as_str() == Some(&request.sale_id)).collect();
    assert!(for_sale.len() <= 1, "key {} produced {} orders: {orders:?}", request.key, for_sale.len());
    if reply.status == 409 && reply.code() == "sold_out" {
        assert!(for_sale.is_empty(), "sold_out on retry but an order exists for key {}: {orders:?}", request.key);
        return None;
    }
    assert!(matches!(reply.status, 200 | 201), "retry of {}: {} {}", request.key, reply.status, reply.text);
    let order_id = reply.body["id"].as_str().expect("order id").to_string();
    assert_eq!(for_sale.first().and_then(|order| order["id"].as_str()), Some(order_id.as_str()));
    Some(Acked { user: request.user, order_id, sale_id: request.sale_id })
}

fn acked_units(acked: &[Acked], sale_id: &str) -> u64 {
    acked.iter().filter(|order| order.sale_id == sale_id).count() as u64
}
