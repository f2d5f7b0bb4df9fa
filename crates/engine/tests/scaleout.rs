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
