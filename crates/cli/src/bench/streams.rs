//! `stampede bench --scenario streams`: N idle subscribers to one sale's or auction's events;
//! the server's memory per stream, then rounds of one change each and how long it takes to
//! reach every subscriber.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use stampede_loadgen::histogram::Histogram;
use stampede_loadgen::{SourceAddresses, StreamReport, StreamScenario, StreamTopic, Target, Transport};

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Idle subscribers to open.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    #[arg(long, value_enum, default_value_t = TransportArg::Sse)]
    transport: TransportArg,
    /// Whose events to follow; each round buys one unit of the sale or bids on the auction.
    #[arg(long, value_enum, default_value_t = TopicArg::Sale)]
    topic: TopicArg,
    /// Changes sent, one at a time, each waited for at every subscriber.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Milliseconds between one round's end and the next change.
    #[arg(long, default_value_t = 500)]
    round_gap_ms: u64,
    /// Seconds a round waits for the change to reach every subscriber.
    #[arg(long, default_value_t = 10)]
    delivery_timeout: u64,
    /// Subscribers being opened at once.
    #[arg(long, default_value_t = 512)]
    open_concurrency: usize,
    /// First local address to connect from (default 127.0.0.2 when the server is on loopback;
    /// otherwise the kernel chooses).
    #[arg(long)]
    source_from: Option<Ipv4Addr>,
    /// Connections per source address before moving to the next (below the ephemeral port
    /// range, 28,232 ports by default on Linux).
    #[arg(long, default_value_t = 25_000)]
    per_source: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Sse,
    Ws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TopicArg {
    Sale,
    Auction,
}

pub async fn run(target: &Target, args: &StreamArgs, server_pid: Option<u32>) -> anyhow::Result<()> {
    let scenario = StreamScenario {
        subscribers: args.subscribers,
        transport: match args.transport {
            TransportArg::Sse => Transport::Sse,
            TransportArg::Ws => Transport::WebSocket,
        },
        topic: match args.topic {
            TopicArg::Sale => StreamTopic::Sale,
            TopicArg::Auction => StreamTopic::Auction,
        },
        rounds: args.rounds,
        round_gap: Duration::from_millis(args.round_gap_ms),
        open_concurrency: args.open_concurrency,
        sources: sources(target, args),
        server_pid,
        delivery_timeout: Duration::from_secs(args.delivery_timeout),
    };
    if let Some(limit) = server_pid.and_then(stampede_loadgen::process::open_files_limit) {
        println!("server open-files limit: {limit}");
    }
    let report = stampede_loadgen::streams(target, &scenario).await.context("streams scenario")?;
    print_report(&scenario, &report);
    Ok(())
}

fn sources(target: &Target, args: &StreamArgs) -> Option<SourceAddresses> {
    let loopback = matches!(target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
    let first = args.source_from.or(loopback.then_some(Ipv4Addr::new(127, 0, 0, 2)))?;
    Some(SourceAddresses { first, per_address: args.per_source })
}

fn print_report(scenario: &StreamScenario, report: &StreamReport) {
    println!(
        "streams ({:?}, {:?}): {} of {} subscribers opened in {:.1}s ({} failed, {} not started){}",
        scenario.transport,
        scenario.topic,
        report.opened,
        report.subscribers,
        report.open_time.as_secs_f64(),
        report.failed,
        report.not_started,
        report.first_error.as_ref().map(|error| format!("; first error: {error}")).unwrap_or_default(),
    );
    print_memory(report);
    for (index, round) in report.rounds.iter().enumerate() {
        println!(
            "round {}: change answered in {}, reached {}/{} (early {}): {}",
            index + 1,
            human(round.change),
            round.reached,
            round.expected,
            round.early,
            percentiles(&round.delivery),
        );
    }
    let expected: usize = report.rounds.iter().map(|round| round.expected).sum();
    let delivery = report.delivery();
    println!("all rounds: reached {}/{expected}: {}", delivery.count(), percentiles(&delivery));
}

fn print_memory(report: &StreamReport) {
    let (Some(before), Some(after)) = (report.server_rss_before_kib, report.server_rss_after_kib) else {
        println!("server RSS not read (no --server-pid)");
        return;
    };
    let per_connection = report.kib_per_connection().unwrap_or(f64::NAN);
    println!(
        "server RSS {before} KiB -> {after} KiB with {} streams open: {per_connection:.2} KiB per connection; \
         generator RSS {} KiB",
        report.opened,
        report.own_rss_kib.unwrap_or(0),
    );
}

fn percentiles(latencies: &Histogram) -> String {
    format!(
        "delivery p50 {} p99 {} p99.9 {} max {}",
        human(latencies.quantile(0.50)),
        human(latencies.quantile(0.99)),
        human(latencies.quantile(0.999)),
        human(latencies.max()),
    )
}

fn human(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1_000 {
        format!("{micros}µs")
    } else {
        format!("{:.2}ms", duration.as_secs_f64() * 1e3)
    }
}
