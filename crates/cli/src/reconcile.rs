//! `stampede reconcile`: compares the scale-out mode's Redis counters with its Postgres orders
//! for every sale, prints a report and fails when anything differs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use stampede_engine::{Backend, RedisTarget, ScaleOut, ScaleOutOptions};

use crate::config::{self, StoreArgs};

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// TOML config file (the keys of `serve`; only the store's are used).
    #[arg(long, env = "STAMPEDE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Returns whether every sale matched.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<bool> {
    let store = config::resolve_store(args.config.as_deref(), args.store)?
        .context("reconcile needs the scale-out store: --redis and --postgres")?;
    let options = ScaleOutOptions {
        redis: RedisTarget { urls: store.redis_urls, cluster: store.redis_cluster },
        postgres_url: store.postgres,
        namespace: store.namespace,
    };
    let backend = ScaleOut::open(options).await.context("connecting to Redis and Postgres")?;
    let report = backend.reconcile().await;
    backend.shutdown().await;
    let report = report.context("reconciling")?;

    println!(
        "{:<22} {:>9} {:>27} {:>27} {:>15} {:>15} {:>15}  result",
        "sale",
        "stock",
        "redis avail/held/sold",
        "postgres avail/held/sold",
        "orders r/p",
        "cancelled r/p",
        "expired r/p"
    );
    let mut mismatches = 0;
    for sale in &report {
        let (ledger, live, stored) = (&sale.ledger, sale.ledger.live, sale.ledger.store);
        let matched = sale.matches();
        mismatches += usize::from(!matched);
        println!(
            "{:<22} {:>9} {:>27} {:>27} {:>15} {:>15} {:>15}  {}",
            ledger.sale_id,
            ledger.stock,
            format!("{}/{}/{}", live.available, live.held, live.sold),
            format!("{}/{}/{}", stored.available, stored.held, stored.sold),
            format!("{}/{}", sale.redis_orders, ledger.orders),
            format!("{}/{}", sale.redis_cancelled, ledger.cancelled),
            format!("{}/{}", sale.redis_expired, ledger.expired),
            if matched { "ok" } else { "MISMATCH" },
        );
    }
    println!("{} sales, {} mismatched", report.len(), mismatches);
    Ok(mismatches == 0)
}
