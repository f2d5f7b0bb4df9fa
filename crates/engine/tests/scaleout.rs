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
        room: None,
        proof_of_work: false,
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
        room: None,
        proof_of_work: false,
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
            room: None,
            proof_of_work: false,
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
        room: None,
        proof_of_work: false,
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

mod auctions {
    //! Auctions on Redis: the scripts decide exactly as the core state machine does, wins
    //! reach Postgres as ordinary orders, bids racing through two replicas leave a state their
    //! replay reproduces, and every replica hears every other's changes.

    use std::sync::Arc;
    use std::time::Duration;

    use sqlx::{Connection, PgConnection, Row};
    use stampede_core::{
        Auction, AuctionError, Bid, BidOutcome, BidStatus, IdempotencyKey, Ladder, OrderStatus, Quantity, Timestamp,
        UserId,
    };
    use stampede_engine::{
        ids, AuctionView, Backend, BidCommand, BidResult, Change, EngineError, NewAuction, NewSale, PurchaseCommand,
        ScaleOut,
    };
    use tokio::sync::broadcast;

    use super::ScaleOutHarness;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("user")
    }

    fn spec() -> NewAuction {
        NewAuction {
            title: "scale-out lot".to_owned(),
            seller_id: "seller".to_owned(),
            starting_price_cents: 1_000,
            reserve_price_cents: None,
            buy_now_price_cents: None,
            starts_at: None,
            ends_at: T0.plus_seconds(600),
            soft_close_seconds: 60,
            extend_seconds: 30,
            max_extensions: Some(5),
            ladder: Ladder::standard(),
            payment_seconds: 3_600,
        }
    }

    fn command(auction_id: &str, who: &UserId, max: i64, key: Option<String>) -> BidCommand {
        BidCommand {
            auction_id: auction_id.to_owned(),
            user: who.clone(),
            max_amount_cents: max,
            idempotency_key: key.map(|key| IdempotencyKey::new(&key).expect("key")),
        }
    }

    /// A small deterministic generator: the same seed gives the same run, so a failure repeats.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n.max(1)
        }
    }

    /// The answer the core auction gives to a bid, shaped as the backend gives it.
    fn core_bid(
        auction: &mut Auction,
        id: &str,
        command: &BidCommand,
        now: Timestamp,
    ) -> Result<BidResult, AuctionError> {
        let key = command.idempotency_key.clone();
        let outcome = auction.place_bid(&command.user, command.max_amount_cents, key, now)?;
        let bid = auction.bid(outcome.seq()).expect("the bid placed");
        Ok(BidResult {
            id: ids::bid_id(id, bid.seq),
            status: bid.status,
            current_price_cents: bid.price_after_cents,
            leader_id: bid.leader_after.as_str().to_owned(),
            created: matches!(outcome, BidOutcome::Accepted(_)),
        })
    }

    fn same<T: PartialEq + std::fmt::Debug>(got: Result<T, EngineError>, want: Result<T, AuctionError>, what: &str) {
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
            (Err(EngineError::Auction(got)), Err(want)) => assert_eq!(got, want, "{what}"),
            (got, want) => panic!("{what}: scale-out gave {got:?}, the core {want:?}"),
        }
    }

    /// Configurations that between them exercise every rule: reserve, buy-now, hard close,
    /// pre-bids, a custom ladder, capped and uncapped soft close.
    fn variants() -> Vec<NewAuction> {
        let mut reserve_and_buy_now = spec();
        reserve_and_buy_now.reserve_price_cents = Some(5_000);
        reserve_and_buy_now.buy_now_price_cents = Some(8_000);
        let mut hard_close = spec();
        hard_close.buy_now_price_cents = Some(3_000);
        hard_close.soft_close_seconds = 0;
        let mut pre_bids = spec();
        pre_bids.starts_at = Some(T0.plus_seconds(120));
        pre_bids.ladder = Ladder::new(vec![(0, 1), (50, 7), (1_000, 100), (4_000, 333)]).expect("ladder");
        pre_bids.starting_price_cents = 10;
        pre_bids.soft_close_seconds = 120;
        pre_bids.extend_seconds = 120;
        pre_bids.max_extensions = None;
        let mut reserve_only = spec();
        reserve_only.reserve_price_cents = Some(30_000);
        reserve_only.max_extensions = Some(0);
        vec![spec(), reserve_and_buy_now, hard_close, pre_bids, reserve_only]
    }

    /// Random bids (ties, raises, too-low amounts, the seller, reused keys), buy-now attempts
    /// and sweeps, each sent to scale-out and to the core auction: every answer and every view
    /// must agree.
    async fn mirror_the_core(harness: ScaleOutHarness, seed: u64) {
        let backend = harness.backend.clone();
        let mut rng = Lcg(seed);
        let names = ["ann", "ben", "cat", "dan", "seller"];
        for spec in variants() {
            let (config, _) = spec.clone().into_config(T0);
            let created = backend.create_auction(spec, T0).await.expect("create");
            let id = created.id.clone();
            let mut core = Auction::new(config);
            assert_eq!(created, AuctionView::of(&id, &core, T0));
            let mut maxima: Vec<i64> = Vec::new();
            let mut now = T0;
            for step in 0..90 {
                now = now.plus_millis(rng.below(20_000) as i64);
                let who = user(names[rng.below(5) as usize]);
                let what = format!("seed {seed} step {step} at {}", now.0 - T0.0);
                match rng.below(12) {
                    0..=8 => {
                        let minimum = core.min_next_bid_cents();
                        let increment = Ladder::standard().increment_at(minimum);
                        let max = match rng.below(5) {
                            0 => minimum - 1 - rng.below(increment as u64) as i64,
                            1 if !maxima.is_empty() => maxima[rng.below(maxima.len() as u64) as usize],
                            2 => minimum + rng.below(40_000) as i64,
                            _ => minimum + increment * rng.below(4) as i64,
                        };
                        let key = (rng.below(3) == 0).then(|| format!("k{}", rng.below(3)));
                        let command = command(&id, &who, max, key);
                        let want = core_bid(&mut core, &id, &command, now);
                        if want.as_ref().is_ok_and(|bid| bid.created) {
                            maxima.push(max);
                        }
                        same(backend.bid(command, now).await, want, &what);
                    }
                    9 => {
                        let want = core.buy_now(&who, now).map(|()| AuctionView::of(&id, &core, now));
                        same(backend.buy_now(&id, &who, now).await, want, &what);
                    }
                    _ => {
                        let want = usize::from(core.close_if_due(now).is_some());
                        assert_eq!(backend.close_due_auctions(now).await.expect("sweep"), want, "{what}");
                    }
                }
                assert_eq!(backend.auction(&id, now).await.expect("get"), AuctionView::of(&id, &core, now), "{what}");
            }
        }
        let report = harness.backend.reconcile().await.expect("reconcile");
        assert!(report.iter().all(|sale| sale.matches()), "{report:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_decide_as_the_core_does() {
        for seed in 1..=3 {
            mirror_the_core(ScaleOutHarness::single().await, seed).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_decide_as_the_core_does_on_a_cluster() {
        mirror_the_core(ScaleOutHarness::cluster().await, 7).await;
    }

    async fn postgres(harness: &ScaleOutHarness) -> PgConnection {
        PgConnection::connect(&harness.options.postgres_url).await.expect("connect to the test database")
    }

    /// A win made by one replica's sweep is an ordinary order of the lot's sale: in Postgres
    /// with the auction and its bids, payable through another replica, and reconciled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_won_lot_reaches_postgres_and_reconciles() {
        let harness = ScaleOutHarness::cluster().await;
        let other = ScaleOut::open(harness.options.clone()).await.expect("second replica");
        let backend = harness.backend.clone();
        let id = backend.create_auction(spec(), T0).await.expect("create").id;
        let (alice, bob) = (user("alice"), user("bob"));
        backend.bid(command(&id, &alice, 4_000, None), T0.plus_seconds(1)).await.expect("bid");
        other.bid(command(&id, &bob, 3_000, Some("b1".to_owned())), T0.plus_seconds(2)).await.expect("bid");
        assert_eq!(other.close_due_auctions(T0.plus_seconds(601)).await.expect("close"), 1);
        assert_eq!(backend.close_due_auctions(T0.plus_seconds(602)).await.expect("close"), 0);
        let lot = ids::lot_sale_id(&id);
        let order_id = ids::lot_order_id(&id);
        let orders = backend.orders_of(&alice).await.expect("orders of the winner");
        assert_eq!(orders.iter().map(|order| order.id.as_str()).collect::<Vec<_>>(), [order_id.as_str()]);
        assert!(other.orders_of(&bob).await.expect("orders of the loser").is_empty());

        let report = backend.reconcile().await.expect("reconcile");
        let won = report.iter().find(|sale| sale.ledger.sale_id == lot).expect("the lot is reconciled");
        assert!(won.matches(), "{won:?}");
        assert_eq!((won.ledger.store.held, won.ledger.orders), (1, 1));
        let mut pg = postgres(&harness).await;
        let row = sqlx::query("SELECT user_id, status, expires_at FROM orders WHERE sale_id = $1 AND seq = 0")
            .bind(&lot)
            .fetch_one(&mut pg)
            .await
            .expect("the winner's order in postgres");
        assert_eq!(row.get::<Vec<u8>, _>("user_id"), b"alice");
        assert_eq!(row.get::<String, _>("status"), "held");
        assert_eq!(row.get::<i64, _>("expires_at"), T0.plus_seconds(601 + 3_600).0);
        let row = sqlx::query(
            "SELECT winner_id, final_price_cents, end_reason, bid_count, version, \
             (SELECT COUNT(*) FROM bids WHERE auction_id = $1) AS bids FROM auctions WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(&mut pg)
        .await
        .expect("the auction in postgres");
        assert_eq!(row.get::<Option<Vec<u8>>, _>("winner_id").as_deref(), Some(&b"alice"[..]));
        assert_eq!(row.get::<Option<i64>, _>("final_price_cents"), Some(3_100));
        assert_eq!(row.get::<Option<String>, _>("end_reason").as_deref(), Some("closed"));
        assert_eq!(
            (row.get::<i32, _>("bid_count"), row.get::<i64, _>("bids"), row.get::<i64, _>("version")),
            (2, 2, 4)
        );

        let paid = other.pay(&order_id, &alice, None, T0.plus_seconds(700)).await.expect("pay through the other");
        assert_eq!(paid.status, OrderStatus::Paid);
        let report = other.reconcile().await.expect("reconcile");
        let won = report.iter().find(|sale| sale.ledger.sale_id == lot).expect("the lot is reconciled");
        assert!(won.matches() && won.ledger.store.sold == 1, "{won:?}");
        other.shutdown().await;
    }

    /// Bids from many tasks through two replicas, with retries of the same key: whatever order
    /// Redis took them in, replaying the accepted bids (as stored in Postgres) through the core
    /// auction gives every recorded answer and the state the backend shows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_bids_on_two_replicas_replay_to_the_same_state() {
        let harness = ScaleOutHarness::cluster().await;
        let replicas: Vec<Arc<ScaleOut>> =
            vec![harness.backend.clone(), ScaleOut::open(harness.options.clone()).await.expect("second replica")];
        let mut auction = spec();
        auction.reserve_price_cents = Some(20_000);
        let (config, _) = auction.clone().into_config(T0);
        let id = replicas[0].create_auction(auction, T0).await.expect("create").id;
        let base = T0.plus_seconds(560);
        let tasks: Vec<_> = (0..16u64)
            .map(|task| {
                let (replicas, id) = (replicas.clone(), id.clone());
                tokio::spawn(async move {
                    let mut rng = Lcg(task + 100);
                    let who = user(&format!("racer{task}"));
                    for round in 0..12u64 {
                        let view = replicas[0].auction(&id, base).await.expect("get");
                        let max = view.min_next_bid_cents + rng.below(3_000) as i64;
                        let key = format!("r{round}");
                        let now = base.plus_millis((round * 2_000 + rng.below(1_000)) as i64);
                        for attempt in 0..2 {
                            let replica = &replicas[((task + round + attempt) % 2) as usize];
                            match replica.bid(command(&id, &who, max, Some(key.clone())), now).await {
                                Ok(_) | Err(EngineError::Auction(AuctionError::BidTooLow { .. })) => {}
                                Err(error) => panic!("bid failed: {error:?}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("bidder");
        }
        replicas[1].reconcile().await.expect("drain the streams");
        let mut pg = postgres(&harness).await;
        let rows = sqlx::query(
            "SELECT seq, user_id, max_amount_cents, placed_at, idempotency_key, status, price_after_cents, \
             leader_after FROM bids WHERE auction_id = $1 ORDER BY seq",
        )
        .bind(&id)
        .fetch_all(&mut pg)
        .await
        .expect("bids");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
        let stored: Vec<Bid> = rows
            .iter()
            .map(|row| Bid {
                seq: row.get::<i32, _>("seq") as u32,
                user: user(&text(row.get("user_id"))),
                max_amount_cents: row.get("max_amount_cents"),
                placed_at: Timestamp(row.get("placed_at")),
                idempotency_key: row
                    .get::<Option<Vec<u8>>, _>("idempotency_key")
                    .map(|key| IdempotencyKey::new(&text(key)).expect("key")),
                status: BidStatus::parse(&row.get::<String, _>("status")).expect("status"),
                price_after_cents: row.get("price_after_cents"),
                leader_after: user(&text(row.get("leader_after"))),
            })
            .collect();
        assert!(stored.len() > 16, "only {} bids accepted", stored.len());
        let mut replay = Auction::new(config.clone());
        for bid in &stored {
            let outcome = replay.place_bid(&bid.user, bid.max_amount_cents, bid.idempotency_key.clone(), bid.placed_at);
            assert_eq!(outcome, Ok(BidOutcome::Accepted(bid.seq)), "{bid:?}");
            assert_eq!(replay.bid(bid.seq), Some(bid), "the recorded answer");
        }
        let now = base.plus_seconds(30);
        let shown = replicas[1].auction(&id, now).await.expect("get");
        assert_eq!(shown, AuctionView::of(&id, &replay, now));
        let restored = Auction::restore(config, stored, replay.ends_at(), replay.extensions(), None).expect("restore");
        assert_eq!(shown, AuctionView::of(&id, &restored, now));
        assert!(shown.extensions > 0, "the race ran in the soft-close window: {shown:?}");
        for replica in &replicas[1..] {
            replica.shutdown().await;
        }
    }

    /// Waits (bounded) until `wanted` has been seen, returning everything received until then.
    async fn until(changes: &mut broadcast::Receiver<Change>, wanted: impl Fn(&Change) -> bool) -> Vec<Change> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let change = changes.recv().await.expect("the feed");
                let done = wanted(&change);
                seen.push(change);
                if done {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "the expected change never came; saw {seen:?}");
        seen
    }

    /// Each replica's followers hear the changes made through every other replica, and their
    /// own replica's changes once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_replica_hears_every_change() {
        for harness in [ScaleOutHarness::single().await, ScaleOutHarness::cluster().await] {
            let (first, second) =
                (harness.backend.clone(), ScaleOut::open(harness.options.clone()).await.expect("second replica"));
            let (mut heard_first, mut heard_second) = (first.changes(), second.changes());
            let sale = NewSale {
                name: "heard".to_owned(),
                stock: 5,
                price_cents: 100,
                starts_at: None,
                ends_at: None,
                per_user_limit: 1,
                hold_seconds: 60,
                stock_buckets: 1,
                room: None,
                proof_of_work: false,
            };
            let sale_id = first.create_sale(sale, T0).await.expect("create sale").id;
            let buy = |who: &str| PurchaseCommand {
                sale_id: sale_id.clone(),
                user: user(who),
                quantity: Quantity::new(1).expect("quantity"),
                idempotency_key: None,
            };
            let own = first.purchase(buy("ann"), T0).await.expect("purchase").order;
            let theirs = second.purchase(buy("ben"), T0).await.expect("purchase").order;
            let is_order = |id: &str| {
                let id = id.to_owned();
                move |change: &Change| matches!(change, Change::Order { order_id, .. } if *order_id == id)
            };
            let seen = until(&mut heard_first, is_order(&theirs.id)).await;
            assert_eq!(seen.iter().filter(|change| is_order(&own.id)(change)).count(), 1, "{seen:?}");
            let seen = until(&mut heard_second, is_order(&theirs.id)).await;
            assert!(seen.iter().any(is_order(&own.id)), "{seen:?}");
            assert!(seen.iter().any(|change| matches!(change, Change::Sale { sale_id: s } if **s == *sale_id)));

            let id = second.create_auction(spec(), T0).await.expect("create auction").id;
            second.bid(command(&id, &user("ann"), 2_000, None), T0).await.expect("bid");
            first.bid(command(&id, &user("ben"), 5_000, None), T0).await.expect("bid");
            let outbid = |change: &Change| matches!(change, Change::Outbid { user, .. } if user.as_str() == "ann");
            until(&mut heard_second, outbid).await;
            assert_eq!(first.close_due_auctions(T0.plus_seconds(600)).await.expect("close"), 1);
            let won = until(&mut heard_second, |change| matches!(change, Change::AuctionWon { .. })).await;
            let lot_order = ids::lot_order_id(&id);
            let winner = user("ben");
            assert!(won
                .iter()
                .any(|change| *change == Change::Order { user: winner.clone(), order_id: lot_order.clone() }));
            let expected = Change::AuctionWon { user: winner, auction_id: Arc::from(id.as_str()), order_id: lot_order };
            assert_eq!(won.last(), Some(&expected));
            second.shutdown().await;
        }
    }

    /// A Redis of this test's own, so killing its connections disturbs no other test.
    struct PrivateRedis {
        url: String,
        _server: tokio::process::Child,
        _dir: tempfile::TempDir,
    }

    async fn private_redis() -> PrivateRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("port").port();
        let server = tokio::process::Command::new(super::service("STAMPEDE_TEST_REDIS_SERVER"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let url = format!("redis://127.0.0.1:{port}/");
        let client = redis::Client::open(url.as_str()).expect("url");
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return PrivateRedis { url, _server: server, _dir: dir };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the private redis-server did not come up");
    }

    /// A replica whose feed subscription is cut subscribes again and hears the others' changes
    /// from then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_feed_subscribes_again_after_its_connection_is_cut() {
        let redis = private_redis().await;
        let harness =
            ScaleOutHarness::start(super::RedisTarget { urls: vec![redis.url.clone()], cluster: false }).await;
        let other = ScaleOut::open(harness.options.clone()).await.expect("second replica");
        let mut heard = harness.backend.changes();
        let id = other.create_auction(spec(), T0).await.expect("create auction").id;
        let client = redis::Client::open(redis.url.as_str()).expect("url");
        let mut admin = client.get_multiplexed_async_connection().await.expect("connect");
        let killed: i64 =
            redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut admin).await.expect("kill");
        assert_eq!(killed, 2, "one subscription per replica");
        // Bids until one is heard: those made while the follower reconnects are missed.
        let mut heard_one = false;
        for attempt in 0..100 {
            let bidder = user(&format!("bidder{attempt}"));
            let minimum = other.auction(&id, T0).await.expect("get").min_next_bid_cents;
            other.bid(command(&id, &bidder, minimum, None), T0).await.expect("bid");
            let auction_changed = tokio::time::timeout(Duration::from_millis(100), async {
                loop {
                    if let Change::Auction { .. } = heard.recv().await.expect("the feed") {
                        return;
                    }
                }
            });
            if auction_changed.await.is_ok() {
                heard_one = true;
                break;
            }
        }
        assert!(heard_one, "the replica never heard the other again");
        other.shutdown().await;
        harness.backend.shutdown().await;
    }

    /// Malformed and unknown auction ids never reach Redis as keys, and are not found.
    #[tokio::test]
    async fn malformed_auction_ids_are_not_found() {
        let harness = ScaleOutHarness::single().await;
        let backend = harness.backend.clone();
        for id in ["", "a_", "a_{x}", "s_abc", "a_zzzzzzzzzzzzzzzz"] {
            let got = backend.auction(id, T0).await;
            assert!(matches!(got, Err(EngineError::AuctionNotFound)), "{id:?}: {got:?}");
            let bid = backend.bid(command(id, &user("ann"), 5_000, None), T0).await;
            assert!(matches!(bid, Err(EngineError::AuctionNotFound)), "{id:?}: {bid:?}");
        }
    }
}
