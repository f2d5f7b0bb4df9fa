//! The limits conformance suite against every implementation: in memory, and through real
//! Redis (a single node, and a 3-master Redis Cluster) as started by `scripts/test` (or given
//! with `STAMPEDE_TEST_REDIS_URL`, `STAMPEDE_TEST_REDIS_CLUSTER_URLS`). Each Redis test gets its
//! own key namespace; a replica is a second instance opened on the same namespace.

use std::sync::Arc;

use stampede_engine::limits::conformance::Harness;
use stampede_engine::{ids, Limits, MemoryLimits, Policy, RedisLimits, RedisTarget};

/// The value of a service variable. Without it the suite cannot run: fail loudly rather than
/// pass without testing anything.
fn service(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with scripts/test, which starts private Redis")
    })
}

struct MemoryHarness(Arc<MemoryLimits>);

impl Harness for MemoryHarness {
    async fn open(policy: Policy) -> Self {
        Self(Arc::new(MemoryLimits::new(policy)))
    }

    fn limits(&self) -> Arc<dyn Limits> {
        self.0.clone()
    }

    /// One process has one instance: its "replica" is itself.
    async fn replica(&self) -> Arc<dyn Limits> {
        self.0.clone()
    }
}

struct RedisHarness {
    target: RedisTarget,
    namespace: String,
    policy: Policy,
    limits: Arc<RedisLimits>,
}

impl RedisHarness {
    async fn start(target: RedisTarget, policy: Policy) -> Self {
        let namespace = format!("t{}", ids::random_token(10));
        let limits = Arc::new(RedisLimits::open(&target, &namespace, policy.clone()).await.expect("open redis limits"));
        Self { target, namespace, policy, limits }
    }
}

struct SingleNode(RedisHarness);

impl Harness for SingleNode {
    async fn open(policy: Policy) -> Self {
        let target = RedisTarget { urls: vec![service("STAMPEDE_TEST_REDIS_URL")], cluster: false };
        Self(RedisHarness::start(target, policy).await)
    }

    fn limits(&self) -> Arc<dyn Limits> {
        self.0.limits.clone()
    }

    async fn replica(&self) -> Arc<dyn Limits> {
        let h = &self.0;
        Arc::new(RedisLimits::open(&h.target, &h.namespace, h.policy.clone()).await.expect("open replica"))
    }
}

struct Cluster(RedisHarness);

impl Harness for Cluster {
    async fn open(policy: Policy) -> Self {
        let urls = service("STAMPEDE_TEST_REDIS_CLUSTER_URLS").split(',').map(str::to_owned).collect();
        Self(RedisHarness::start(RedisTarget { urls, cluster: true }, policy).await)
    }

    fn limits(&self) -> Arc<dyn Limits> {
        self.0.limits.clone()
    }

    async fn replica(&self) -> Arc<dyn Limits> {
        let h = &self.0;
        Arc::new(RedisLimits::open(&h.target, &h.namespace, h.policy.clone()).await.expect("open replica"))
    }
}

mod memory {
    use super::MemoryHarness;
    stampede_engine::limits_conformance!(MemoryHarness);
}

mod single_node {
    use super::SingleNode;
    stampede_engine::limits_conformance!(SingleNode);
}

mod cluster {
    use super::Cluster;
    stampede_engine::limits_conformance!(Cluster);
}
