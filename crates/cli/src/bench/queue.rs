//! `stampede bench --scenario queue`: one sale with a FIFO waiting room. After the healthz
//! baseline, each of `--users` distinct users joins once (closed loop): joins per second and
//! the join's latency, which is the admission decision (the answer says where the user stands);
//! server RSS before and after gives the memory per queued user. Then standing polls for random
//! joined users over the measured window.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use stampede_loadgen::{JoinRun, Phase, PollRun, QueueScenario, Report, Target};

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Stock of the waiting-room sale.
    #[arg(long, default_value_t = 1_000)]
    room_stock: u32,
    /// People the room lets in per minute.
    #[arg(long, default_value_t = 600)]
    admit_per_minute: u32,
    /// Most people holding a pass at once.
    #[arg(long, default_value_t = 100)]
    max_active: u32,
    /// How long a pass lasts, in seconds.
    #[arg(long, default_value_t = 300)]
    pass_seconds: u32,
}

/// Target from the issue: the admission decision (join) answered within 5 ms at p99.
const JOIN_P99_TARGET: Duration = Duration::from_millis(5);

pub async fn run(
    target: &Target,
    phase: &Phase,
    users: usize,
    args: &QueueArgs,
    server_pid: Option<u32>,
) -> anyhow::Result<()> {
    let baseline = super::baseline(target, phase).await?;
    let scenario = QueueScenario {
        users,
        stock: args.room_stock,
        admit_per_minute: args.admit_per_minute,
        max_active: args.max_active,
        pass_seconds: args.pass_seconds,
    };
    let started = std::time::Instant::now();
    let room = stampede_loadgen::queue_room(target, &scenario, phase.warmup + phase.duration)
        .await
        .context("room sale creation")?;
    println!(
        "room sale {} (fifo, admit {}/min, max active {}, stock {}); {} user tokens minted in {:.1}s",
        room.sale_id,
        args.admit_per_minute,
        args.max_active,
        args.room_stock,
        room.users(),
        started.elapsed().as_secs_f64()
    );
    let room = Arc::new(room);
    let rss_before = server_pid.and_then(stampede_loadgen::process::rss_kib);
    let joins =
        stampede_loadgen::queue_joins(target, phase.connections, Arc::clone(&room)).await.context("join phase")?;
    let rss_after = server_pid.and_then(stampede_loadgen::process::rss_kib);
    println!("{}", joins.report.line());
    print_joins(&joins, phase.connections);
    print_memory(rss_before, rss_after, joins.joined);
    let polls = stampede_loadgen::queue_polls(target, phase, room, &joins).await.context("standing polls")?;
    println!("{}", polls.report.line());
    print_summary(&baseline, &joins, &polls, rss_before, rss_after);
    Ok(())
}

fn print_joins(joins: &JoinRun, connections: usize) {
    let report = &joins.report;
    let verdict = if report.p99 < JOIN_P99_TARGET { "met" } else { "MISSED" };
    println!(
        "joins: {} users joined in {:.1}s over {connections} connections = {:.0} joins/s; admission decision p50 {:?} \
         p99 {:?} p99.9 {:?} (target p99 < {:?}: {verdict}); answered waiting {}, admitted {}; last position {}",
        joins.joined,
        report.elapsed.as_secs_f64(),
        report.rps,
        report.p50,
        report.p99,
        report.p999,
        JOIN_P99_TARGET,
        joins.waiting,
        joins.admitted,
        joins.max_position,
    );
}

fn print_memory(before: Option<u64>, after: Option<u64>, joined: usize) {
    let (Some(before), Some(after)) = (before, after) else {
        println!("server RSS not read (no --server-pid)");
        return;
    };
    println!(
        "server RSS {before} KiB -> {after} KiB after {joined} queued users: {:.0} bytes per queued user",
        per_user(before, after, joined)
    );
}

fn per_user(before_kib: u64, after_kib: u64, joined: usize) -> f64 {
    if joined == 0 {
        return f64::NAN;
    }
    after_kib.saturating_sub(before_kib) as f64 * 1024.0 / joined as f64
}

fn print_summary(baseline: &Report, joins: &JoinRun, polls: &PollRun, before: Option<u64>, after: Option<u64>) {
    println!(
        "standings: {:.0}/s p50 {:?} p99 {:?} p99.9 {:?}; answered waiting {}, admitted {}",
        polls.report.rps, polls.report.p50, polls.report.p99, polls.report.p999, polls.waiting, polls.admitted,
    );
    let bytes_per_user = match (before, after) {
        (Some(before), Some(after)) => format!("{:.0}", per_user(before, after, joins.joined)),
        _ => "na".to_owned(),
    };
    println!(
        "summary scenario=queue users={} joined={} join_rps={:.0} join_p50_ms={:.3} join_p99_ms={:.3} \
         join_p999_ms={:.3} join_non_2xx={} join_io_errors={} rss_before_kib={} rss_after_kib={} \
         bytes_per_user={bytes_per_user} poll_rps={:.0} poll_p50_ms={:.3} poll_p99_ms={:.3} poll_non_2xx={} \
         healthz_rps={:.0} healthz_p99_ms={:.3}",
        joins.report.requests + joins.report.io_errors,
        joins.joined,
        joins.report.rps,
        ms(joins.report.p50),
        ms(joins.report.p99),
        ms(joins.report.p999),
        joins.report.errors,
        joins.report.io_errors,
        before.map_or("na".to_owned(), |kib| kib.to_string()),
        after.map_or("na".to_owned(), |kib| kib.to_string()),
        polls.report.rps,
        ms(polls.report.p50),
        ms(polls.report.p99),
        polls.report.errors,
        baseline.rps,
        ms(baseline.p99),
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
