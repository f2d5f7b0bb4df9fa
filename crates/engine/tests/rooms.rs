//! The rooms conformance suite against every implementation: in memory, and through real Redis
//! (a single node, and a 3-master Redis Cluster) as started by `scripts/test` (or given with
//! `STAMPEDE_TEST_REDIS_URL`, `STAMPEDE_TEST_REDIS_CLUSTER_URLS`). Each Redis test gets its own
//! key namespace; a replica is a second instance opened on the same namespace.

use std::sync::Arc;

use stampede_engine::rooms::conformance::Harness;
use stampede_engine::rooms::{MemoryRooms, RedisRooms, Rooms};
use stampede_engine::{ids, RedisTarget};

/// The value of a service variable. Without it the suite cannot run: fail loudly rather than
/// pass without testing anything.
fn service(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with scripts/test, which starts private Redis")
    })
}

struct MemoryHarness(Arc<MemoryRooms>);

impl Harness for MemoryHarness {
    async fn open() -> Self {
        Self(Arc::new(MemoryRooms::default()))
    }

    fn rooms(&self) -> Arc<dyn Rooms> {
        self.0.clone()
    }

    /// One process has one instance: its "replica" is itself.
    async fn replica(&self) -> Arc<dyn Rooms> {
        self.0.clone()
    }
}

struct RedisHarness {
    target: RedisTarget,
    namespace: String,
    rooms: Arc<RedisRooms>,
}

impl RedisHarness {
    async fn start(target: RedisTarget) -> Self {
        let namespace = format!("t{}", ids::random_token(10));
        let rooms = Arc::new(RedisRooms::open(&target, &namespace).await.expect("open redis rooms"));
        Self { target, namespace, rooms }
    }

    async fn replica(&self) -> Arc<dyn Rooms> {
        Arc::new(RedisRooms::open(&self.target, &self.namespace).await.expect("open replica"))
    }
}

struct SingleNode(RedisHarness);

impl Harness for SingleNode {
    async fn open() -> Self {
        let target = RedisTarget { urls: vec![service("STAMPEDE_TEST_REDIS_URL")], cluster: false };
        Self(RedisHarness::start(target).await)
    }

    fn rooms(&self) -> Arc<dyn Rooms> {
        self.0.rooms.clone()
    }

    async fn replica(&self) -> Arc<dyn Rooms> {
        self.0.replica().await
    }
}

struct Cluster(RedisHarness);

impl Harness for Cluster {
    async fn open() -> Self {
        let urls = service("STAMPEDE_TEST_REDIS_CLUSTER_URLS").split(',').map(str::to_owned).collect();
        Self(RedisHarness::start(RedisTarget { urls, cluster: true }).await)
    }

    fn rooms(&self) -> Arc<dyn Rooms> {
        self.0.rooms.clone()
    }

    async fn replica(&self) -> Arc<dyn Rooms> {
        self.0.replica().await
    }
}

mod memory {
    use super::MemoryHarness;
    stampede_engine::rooms_conformance!(MemoryHarness);
}

mod single_node {
    use super::SingleNode;
    stampede_engine::rooms_conformance!(SingleNode);
}

mod cluster {
    use super::Cluster;
    stampede_engine::rooms_conformance!(Cluster);
}
