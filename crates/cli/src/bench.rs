//! `stampede bench`: drives a running server and reports throughput and latency, always next
//! to a `GET /healthz` baseline taken in the same run on the same server. The `streams`
//! scenario instead reports the server's memory per open stream and the fan-out latency of one
//! change; `overload` offers purchases open loop at a multiple of the measured peak; `pow`
//! measures what solving the server's proof-of-work challenges costs a client; `queue` fills
//! one waiting room with distinct users and reports the join latency and memory per queued user.

mod bids;
mod freshness;
mod overload;
mod pow;
mod queue;
mod streams;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use stampede_loadgen::{Phase, PurchaseScenario, Report, Target};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure after the healthz baseline.
    #[arg(long, value_enum, default_value_t = Scenario::Purchases)]
    scenario: Scenario,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Another replica of the same scale-out deployment (repeatable): connections are spread
    /// over --addr and these, round robin.
    #[arg(long = "replica")]
    replicas: Vec<SocketAddr>,
    /// The server's JWT secret (to mint user tokens).
    #[arg(long, env = "STAMPEDE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// The server's admin token (to create the sales).
    #[arg(long, env = "STAMPEDE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per phase, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Sales the buyers are spread over (1 = one hot SKU).
    #[arg(long, default_value_t = 1)]
    sales: usize,
    /// Stock of each sale.
    #[arg(long, default_value_t = 10_000_000)]
    stock: u32,
    /// Distinct users (each buys at most once unless the run wraps around).
    #[arg(long, default_value_t = 2_000_000)]
    users: usize,
    /// Split each sale's stock over this many buckets (scale-out mode, for hot sales on a
    /// Redis Cluster).
    #[arg(long, default_value_t = 1)]
    stock_buckets: u32,
    /// Send a unique Idempotency-Key with every purchase.
    #[arg(long)]
    idempotency_keys: bool,
    /// Fetch and solve a proof-of-work challenge (GET /v1/challenge) before each purchase.
    #[arg(long)]
    pow: bool,
    /// Process id of the server, to report its memory (Linux).
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    bids: bids::BidArgs,
    #[command(flatten)]
    streams: streams::StreamArgs,
    #[command(flatten)]
    overload: overload::OverloadArgs,
    #[command(flatten)]
    queue: queue::QueueArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Purchases from distinct users on hot sales.
    Purchases,
    /// Bids from distinct bidders on one hot auction.
    Bids,
    /// Idle live-stream subscribers: memory per stream, fan-out latency of a change.
    Streams,
    /// The purchase peak (closed loop), then purchases offered open loop beyond it.
    Overload,
    /// Proof-of-work challenges from the server solved on one thread: the cost to a client.
    Pow,
    /// One waiting room joined once by each of --users users, then standing polls.
    Queue,
    /// Purchases at the peak while a probe times how far the dashboard's stream is behind.
    Freshness,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let target = Target {
        addr: args.addr,
        replicas: args.replicas.clone(),
        jwt_secret: args.jwt_secret.clone(),
        admin_token: args.admin_token.clone(),
    };
    let phase = Phase {
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
        warmup: Duration::from_secs(args.warmup),
    };
    match args.scenario {
        Scenario::Purchases => purchases(&target, &phase, &args).await,
        Scenario::Bids => bids::run(&target, &phase, &args.bids).await,
        Scenario::Streams => streams::run(&target, &args.streams, args.server_pid).await,
        Scenario::Overload => {
            overload::run(&target, &phase, &purchase_scenario(&args), &args.overload, args.server_pid).await
        }
        Scenario::Pow => pow::run(&target, phase.duration).await,
        Scenario::Queue => queue::run(&target, &phase, args.users, &args.queue, args.server_pid).await,
        Scenario::Freshness => freshness::run(&target, &phase, &purchase_scenario(&args)).await,
    }
}

/// The same-run `GET /healthz` baseline every throughput figure is compared with.
async fn baseline(target: &Target, phase: &Phase) -> anyhow::Result<Report> {
    let baseline = stampede_loadgen::healthz(target, phase).await.context("healthz phase")?;
    println!("{}", baseline.line());
    Ok(baseline)
}

async fn purchases(target: &Target, phase: &Phase, args: &BenchArgs) -> anyhow::Result<()> {
    let baseline = baseline(target, phase).await?;
    let rss_before = args.server_pid.and_then(stampede_loadgen::process::rss_kib);
    let scenario = purchase_scenario(args);
    let purchases = stampede_loadgen::purchases(target, phase, &scenario).await.context("purchase phase")?;
    println!("{}", purchases.line());
    print_summary(&baseline, &purchases);
    if let (Some(before), Some(after)) = (rss_before, args.server_pid.and_then(stampede_loadgen::process::rss_kib)) {
        print_memory(before, after, &purchases);
    }
    Ok(())
}

fn purchase_scenario(args: &BenchArgs) -> PurchaseScenario {
    PurchaseScenario {
        sales: args.sales,
        stock_per_sale: args.stock,
        users: args.users,
        quantity: 1,
        per_user_limit: 1,
        idempotency_keys: args.idempotency_keys,
        stock_buckets: args.stock_buckets,
        pow: args.pow,
    }
}

fn print_summary(baseline: &Report, purchases: &Report) {
    println!(
        "ratio purchases/healthz = {:.2}  (purchases {:.0}/s p50 {:?} p99 {:?} p99.9 {:?}; healthz {:.0}/s p50 {:?} p99 {:?})",
        purchases.ratio_to(baseline),
        purchases.rps,
        purchases.p50,
        purchases.p99,
        purchases.p999,
        baseline.rps,
        baseline.p50,
        baseline.p99,
    );
    println!(
        "summary scenario=purchases rps={:.0} ok_rps={:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} non_2xx={} \
         io_errors={} healthz_rps={:.0} healthz_p99_ms={:.3}",
        purchases.rps,
        purchases.ok_per_second(),
        purchases.p50.as_secs_f64() * 1e3,
        purchases.p99.as_secs_f64() * 1e3,
        purchases.p999.as_secs_f64() * 1e3,
        purchases.errors,
        purchases.io_errors,
        baseline.rps,
        baseline.p99.as_secs_f64() * 1e3,
    );
}

/// Memory growth per held order; warm-up holds are not in `ok`, so this is an upper bound.
fn print_memory(before_kib: u64, after_kib: u64, purchases: &Report) {
    let grown = after_kib.saturating_sub(before_kib);
    let per_million_mib = if purchases.ok > 0 { grown as f64 / 1024.0 * 1e6 / purchases.ok as f64 } else { f64::NAN };
    println!(
        "server RSS {before_kib} KiB -> {after_kib} KiB after {} holds: about {per_million_mib:.0} MiB per 1M held orders",
        purchases.ok
    );
}
