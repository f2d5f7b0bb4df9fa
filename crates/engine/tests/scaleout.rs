//! The backend conformance suite against the scale-out backend: real Redis (a single node, and
//! a 3-master Redis Cluster) and real Postgres, as started by `scripts/test` (or given with
//! `STAMPEDE_TEST_REDIS_URL`, `STAMPEDE_TEST_REDIS_CLUSTER_URLS`, `STAMPEDE_TEST_POSTGRES_URL`).
//! Each test gets its own key namespace and its own database; a restart opens a new backend on
//! the same Redis and Postgres, as a new replica would.

use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};
use stampede_engine::conformance::Harness;
use stampede_engine::{ids, Backend, RedisTarget, ScaleOut, ScaleOutOptions};

/// The value of a service variable. Without it the suite cannot run: fail loudly rather than
/// pass without testing anything.
fn service(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with scripts/test, which starts private Redis and Postgres")
    })
}

/// A fresh database on the test Postgres; returns its URL.
async fn fresh_database() -> String {
    let admin = service("STAMPEDE_TEST_POSTGRES_URL");
    let name = format!("stampede_test_{}", ids::random_token(12));
    let mut conn = PgConnection::connect(&admin).await.expect("connect to the test postgres");
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    conn.close().await.ok();
    let (base, _) = admin.rsplit_once('/').expect("postgres url with a database path");
    format!("{base}/{name}")
}

struct ScaleOutHarness {
    options: ScaleOutOptions,
    backend: Arc<ScaleOut>,
}

impl ScaleOutHarness {
    async fn start(redis: RedisTarget) -> Self {
        let options = ScaleOutOptions {
            redis,
            postgres_url: fresh_database().await,
            namespace: format!("t{}", ids::random_token(10)),
        };
        let backend = ScaleOut::open(options.clone()).await.expect("open scale-out backend");
        Self { options, backend }
    }

    async fn single() -> Self {
        Self::start(RedisTarget { urls: vec![service("STAMPEDE_TEST_REDIS_URL")], cluster: false }).await
    }

    async fn cluster() -> Self {
        let urls = service("STAMPEDE_TEST_REDIS_CLUSTER_URLS").split(',').map(str::to_owned).collect();
        Self::start(RedisTarget { urls, cluster: true }).await
    }
}

impl Harness for ScaleOutHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    async fn restart(&mut self) {
        self.backend.shutdown().await;
        self.backend = ScaleOut::open(self.options.clone()).await.expect("reopen scale-out backend");
    }
}

mod single_node {
    use super::ScaleOutHarness;
    stampede_engine::backend_conformance!(ScaleOutHarness::single);
}

mod cluster {
    use super::ScaleOutHarness;
    stampede_engine::backend_conformance!(ScaleOutHarness::cluster);
}

/// Redis forgets scripts on a restart or failover (and on SCRIPT FLUSH): the backend loads
/// them again on NOSCRIPT and the step still happens exactly once.
#[tokio::test]
async fn scripts_are_loaded_again_after_redis_forgets_them() {
    use stampede_core::{Quantity, Timestamp, UserId};
    use stampede_engine::{NewSale, PurchaseCommand};

    let harness = ScaleOutHarness::single().await;
    let backend = harness.backend().await;
    let now = Timestamp(1_800_000_000_000);
    let sale = NewSale {
        name: "flushed".to_owned(),
        stock: 5,
        price_cents: 100,
        starts_at: None,
        ends_at: None,
        per_user_limit: 5,
        hold_seconds: 60,
        stock_buckets: 1,
    };
    let sale_id = backend.create_sale(sale, now).await.expect("create sale").id;
    let client = redis::Client::open(service("STAMPEDE_TEST_REDIS_URL")).expect("redis url");
    let mut redis = client.get_multiplexed_async_connection().await.expect("connect to redis");
    for round in 1..=2 {
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut redis).await.expect("script flush");
        let command = PurchaseCommand {
            sale_id: sale_id.clone(),
            user: UserId::new("alice").expect("user"),
            quantity: Quantity::new(1).expect("quantity"),
            idempotency_key: None,
        };
        backend.purchase(command, now).await.expect("purchase after SCRIPT FLUSH");
        assert_eq!(backend.sale(&sale_id, now).await.expect("sale").held, round);
    }
    let ledger = backend.ledger(&sale_id).await.expect("ledger");
    assert!(ledger.consistent(), "{ledger:?}");
}

/// Several replicas' sinks and ledger drains write overlapping order rows at once (the held
/// and the paid version of one order can reach different sinks): they must never deadlock in
/// Postgres, so no ledger call fails while the load runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sinks_and_ledger_drains_do_not_conflict() {
    use stampede_core::{Quantity, Timestamp, UserId};
    use stampede_engine::{NewSale, PurchaseCommand};

    let first = ScaleOutHarness::single().await;
    let mut replicas = vec![first.backend.clone()];
    for _ in 0..2 {
        replicas.push(ScaleOut::open(first.options.clone()).await.expect("open another replica"));
    }
    let now = Timestamp::now();
    let sale = NewSale {
        name: "contended".to_owned(),
        stock: 100_000,
        price_cents: 100,
        starts_at: None,
        ends_at: None,
        per_user_limit: 1,
        hold_seconds: 600,
        stock_buckets: 1,
    };
    let sale_id = replicas[0].create_sale(sale, now).await.expect("create sale").id;
    let mut tasks = Vec::new();
    for worker in 0..12usize {
        let (replicas, sale_id) = (replicas.clone(), sale_id.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..60usize {
                let user = UserId::new(&format!("buyer-{worker}-{i}")).expect("user");
                let command = PurchaseCommand {
                    sale_id: sale_id.clone(),
                    user: user.clone(),
                    quantity: Quantity::new(1).expect("quantity"),
                    idempotency_key: None,
                };
                let order = replicas[i % 3].purchase(command, Timestamp::now()).await.expect("purchase").order;
                replicas[(i + 1) % 3].pay(&order.id, &user, None, Timestamp::now()).await.expect("pay");
            }
        }));
    }
    let mut ledgers = Vec::new();
    for reader in 0..3usize {
        let (replicas, sale_id) = (replicas.clone(), sale_id.clone());
        ledgers.push(tokio::spawn(async move {
            for _ in 0..15 {
                replicas[reader].ledger(&sale_id).await.expect("ledger during the load");
            }
        }));
    }
    for task in tasks.into_iter().chain(ledgers) {
        task.await.expect("task");
    }
    let ledger = replicas[2].ledger(&sale_id).await.expect("ledger");
    assert!(ledger.consistent(), "{ledger:?}");
    assert_eq!((ledger.live.sold, ledger.orders), (720, 720));
    for replica in replicas {
        replica.shutdown().await;
    }
}

mod stock_buckets {
    //! A hot sale's stock split over several buckets (own keys, own cluster slots): users buy
    //! from their home bucket, an empty bucket refills from the others, and the sale as a whole
    //! behaves like one: every unit sold, none oversold, limits and keys per user.

    use std::sync::Arc;

    use stampede_core::{IdempotencyKey, OrderStatus, Quantity, SaleError, Timestamp, UserId};
    use stampede_engine::scaleout::home_bucket;
    use stampede_engine::{Backend, EngineError, NewSale, PurchaseCommand};

    use super::ScaleOutHarness;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn sale(stock: u32, per_user_limit: u32, buckets: u32) -> NewSale {
        NewSale {
            name: "hot sku".to_owned(),
            stock,
            price_cents: 100,
            starts_at: None,
            ends_at: None,
            per_user_limit,
            hold_seconds: 600,
            stock_buckets: buckets,
        }
    }

    fn buy(sale_id: &str, user: &str, quantity: u32, key: Option<&str>) -> PurchaseCommand {
        PurchaseCommand {
            sale_id: sale_id.to_owned(),
            user: UserId::new(user).expect("user"),
            quantity: Quantity::new(i64::from(quantity)).expect("quantity"),
            idempotency_key: key.map(|key| IdempotencyKey::new(key).expect("key")),
        }
    }

    /// Users whose home bucket is `bucket` (of `buckets`).
    fn homed_at(bucket: u32, buckets: u32, count: usize) -> Vec<String> {
        (0..).map(|n| format!("buyer-{n}")).filter(|u| home_bucket(u, buckets) == bucket).take(count).collect()
    }

    async fn race(backend: &Arc<dyn Backend>, sale_id: &str, users: &[String]) -> (usize, usize) {
        let tasks: Vec<_> = users
            .iter()
            .map(|user| {
                let (backend, command) = (backend.clone(), buy(sale_id, user, 1, None));
                tokio::spawn(async move { backend.purchase(command, NOW).await })
            })
            .collect();
        let (mut held, mut sold_out) = (0, 0);
        for task in tasks {
            match task.await.expect("task") {
                Ok(result) => {
                    assert!(result.created);
                    held += 1;
                }
                Err(EngineError::Sale(SaleError::SoldOut)) => sold_out += 1,
                Err(other) => panic!("unexpected purchase error {other:?}"),
            }
        }
        (held, sold_out)
    }

    /// The sale's units as expected, both ledgers agreeing, and `orders` orders made in all.
    async fn assert_whole(backend: &Arc<dyn Backend>, sale_id: &str, available: u32, held: u32, orders: i64) {
        let view = backend.sale(sale_id, NOW).await.expect("sale");
        assert_eq!((view.available, view.held, view.sold), (available, held, 0), "{view:?}");
        let ledger = backend.ledger(sale_id).await.expect("ledger");
        assert!(ledger.consistent(), "{ledger:?}");
        assert_eq!(ledger.orders, orders);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_herd_buys_every_unit_of_a_bucketed_sale_and_no_more() {
        let harness = ScaleOutHarness::cluster().await;
        let backend: Arc<dyn Backend> = harness.backend.clone();
        let sale_id = backend.create_sale(sale(203, 1, 4), NOW).await.expect("create sale").id;
        let users: Vec<String> = (0..300).map(|n| format!("herd-{n}")).collect();
        assert_eq!(race(&backend, &sale_id, &users).await, (203, 97));
        assert_whole(&backend, &sale_id, 0, 203, 203).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn buyers_of_one_bucket_get_the_stock_of_the_others() {
        let harness = ScaleOutHarness::cluster().await;
        let backend: Arc<dyn Backend> = harness.backend.clone();
        let sale_id = backend.create_sale(sale(100, 1, 4), NOW).await.expect("create sale").id;
        let users = homed_at(0, 4, 130);
        assert_eq!(race(&backend, &sale_id, &users).await, (100, 30), "nothing left unsold while stock remains");
        assert_whole(&backend, &sale_id, 0, 100, 100).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn limits_keys_and_order_steps_work_across_buckets() {
        let harness = ScaleOutHarness::cluster().await;
        let backend: Arc<dyn Backend> = harness.backend.clone();
        let sale_id = backend.create_sale(sale(40, 2, 4), NOW).await.expect("create sale").id;
        let mut made = Vec::new();
        for bucket in 0..4 {
            let user = &homed_at(bucket, 4, 1)[0];
            let first = backend.purchase(buy(&sale_id, user, 1, Some("k1")), NOW).await.expect("first");
            let replay = backend.purchase(buy(&sale_id, user, 1, Some("k1")), NOW).await.expect("replay");
            assert_eq!((replay.order.id.as_str(), replay.created), (first.order.id.as_str(), false));
            backend.purchase(buy(&sale_id, user, 1, Some("k2")), NOW).await.expect("second");
            let third = backend.purchase(buy(&sale_id, user, 1, Some("k3")), NOW).await;
            assert!(matches!(third, Err(EngineError::Sale(SaleError::LimitReached))), "{third:?}");
            made.push((UserId::new(user).expect("user"), first.order));
        }
        for (user, order) in &made {
            assert_eq!(&backend.order(&order.id, user).await.expect("get order"), order);
            assert_eq!(backend.orders_of(user).await.expect("orders of").len(), 2);
        }
        let (payer, paid) = &made[1];
        let paid = backend.pay(&paid.id, payer, None, NOW).await.expect("pay");
        assert_eq!(paid.status, OrderStatus::Paid);
        let (canceller, cancelled) = &made[2];
        backend.cancel(&cancelled.id, canceller, NOW).await.expect("cancel");
        let (stranger, _) = &made[3];
        let foreign = backend.order(&made[0].1.id, stranger).await;
        assert!(matches!(foreign, Err(EngineError::Sale(SaleError::OrderNotFound))), "{foreign:?}");
        let view = backend.sale(&sale_id, NOW).await.expect("sale");
        assert_eq!((view.available, view.held, view.sold), (33, 6, 1));
        assert!(backend.ledger(&sale_id).await.expect("ledger").consistent());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn units_released_in_one_bucket_reach_a_waitlist_in_another() {
        let harness = ScaleOutHarness::cluster().await;
        let backend: Arc<dyn Backend> = harness.backend.clone();
        let sale_id = backend.create_sale(sale(4, 1, 2), NOW).await.expect("create sale").id;
        let zero = homed_at(0, 2, 3);
        let one = homed_at(1, 2, 2);
        let mut holds = Vec::new();
        for user in [&zero[0], &zero[1], &one[0], &one[1]] {
            let order = backend.purchase(buy(&sale_id, user, 1, None), NOW).await.expect("purchase").order;
            holds.push((UserId::new(user).expect("user"), order));
        }
        let waiter = UserId::new(&zero[2]).expect("user");
        let one_unit = Quantity::new(1).expect("quantity");
        assert_eq!(backend.join_waitlist(&sale_id, &waiter, one_unit, NOW).await.expect("join"), 1);
        // A buyer homed in the other bucket gives a unit back; the sweep moves it to the waiter.
        let (user, order) = &holds[3];
        backend.cancel(&order.id, user, NOW).await.expect("cancel");
        backend.expire_due(NOW).await.expect("sweep");
        let granted = backend.orders_of(&waiter).await.expect("orders of waiter");
        assert_eq!(granted.len(), 1, "{granted:?}");
        assert_eq!(granted[0].status, OrderStatus::Held);
        assert_whole(&backend, &sale_id, 0, 4, 5).await;
    }

    /// A replica that dies between lending units and their arrival leaves a loan behind; the
    /// sweep completes it, so the units are sold, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_transfer_cut_short_is_completed_by_the_sweep() {
        let harness = ScaleOutHarness::cluster().await;
        let backend: Arc<dyn Backend> = harness.backend.clone();
        let sale_id = backend.create_sale(sale(20, 1, 2), NOW).await.expect("create sale").id;
        let source = format!("{sale_id}.1");
        let names = ["cfg", "ctr", "orders", "units", "useq", "keys", "due", "wl", "wlu", "events", "outbox", "inbox"];
        let keys: Vec<String> =
            names.iter().map(|name| format!("{}:{{{source}}}:{name}", harness.options.namespace)).collect();
        let script =
            [include_str!("../src/scaleout/lua/sale.lua"), include_str!("../src/scaleout/lua/transfer_out.lua")]
                .join("\n");
        let urls: Vec<String> = harness.options.redis.urls.clone();
        let client = redis::cluster::ClusterClient::new(urls).expect("cluster client");
        let mut redis = client.get_async_connection().await.expect("connect to the cluster");
        let lent: Vec<String> = redis::Script::new(&script)
            .key(&keys)
            .arg("lost-transfer")
            .arg(&sale_id)
            .arg(6)
            .arg(NOW.0 - 60_000)
            .invoke_async(&mut redis)
            .await
            .expect("lend units");
        assert_eq!(lent, ["ok", "6"]);
        assert_whole(&backend, &sale_id, 20, 0, 0).await;
        backend.expire_due(NOW).await.expect("sweep");
        backend.expire_due(NOW).await.expect("second sweep changes nothing");
        let users = homed_at(0, 2, 25);
        assert_eq!(race(&backend, &sale_id, &users).await, (20, 5));
        assert_whole(&backend, &sale_id, 0, 20, 20).await;
    }
}

/// Sweeps skip buckets with nothing due, yet a hold made between sweeps, even by a replica
/// whose clock is a second behind, still expires at the first sweep after its deadline.
#[tokio::test]
async fn holds_made_between_sweeps_expire_on_time() {
    use stampede_core::{OrderStatus, Quantity, Timestamp, UserId};
    use stampede_engine::{NewSale, PurchaseCommand};

    let harness = ScaleOutHarness::single().await;
    let sweeper = harness.backend.clone();
    let buyer = ScaleOut::open(harness.options.clone()).await.expect("second replica");
    let t0 = 1_800_000_000_000;
    let sale = NewSale {
        name: "short holds".to_owned(),
        stock: 10,
        price_cents: 100,
        starts_at: Some(Timestamp(t0 - 5_000)),
        ends_at: None,
        per_user_limit: 1,
        hold_seconds: 3,
        stock_buckets: 1,
    };
    let sale_id = sweeper.create_sale(sale, Timestamp(t0)).await.expect("create sale").id;
    let mut holds = Vec::new();
    let mut now = t0;
    while now <= t0 + 12_000 {
        // Every 4 s, shortly after a sweep found the sale empty, someone buys through the other
        // replica, whose clock runs 1 s behind: the hold is due sooner than a sweep that trusts
        // its own clock would expect.
        if (now - t0) % 4_000 == 300 {
            let user = UserId::new(&format!("buyer-{}", holds.len())).expect("user");
            let command = PurchaseCommand {
                sale_id: sale_id.clone(),
                user: user.clone(),
                quantity: Quantity::new(1).expect("quantity"),
                idempotency_key: None,
            };
            let order = buyer.purchase(command, Timestamp(now - 1_000)).await.expect("purchase").order;
            holds.push((user, order));
        }
        sweeper.expire_due(Timestamp(now)).await.expect("sweep");
        for (user, order) in &holds {
            let status = sweeper.order(&order.id, user).await.expect("order").status;
            let due = now >= order.expires_at.0;
            assert_eq!(status == OrderStatus::Expired, due, "at {} ms: {order:?} is {status:?}", now - t0);
        }
        now += 100;
    }
    assert_eq!(holds.len(), 3);
    buyer.shutdown().await;
}
