//! `stampede bench --scenario bids`: one hot auction, distinct bidders, each bid meant to be
//! accepted; accepted bids per second next to the same-run healthz baseline.

use anyhow::Context;
use clap::Args;
use stampede_loadgen::{BidRun, BidScenario, Phase, Report, Target};

#[derive(Debug, Args)]
pub struct BidArgs {
    /// Distinct bidders (pre-minted tokens), taking turns.
    #[arg(long, default_value_t = 200_000)]
    bidders: usize,
    /// Starting price of the auction, in cents.
    #[arg(long, default_value_t = 1_000)]
    starting_price_cents: i64,
    /// Increments between consecutive bids' maxima (at least 2: a bid overtaken by one later
    /// bid is still accepted).
    #[arg(long, default_value_t = 2)]
    bid_spacing: u32,
}

pub async fn run(target: &Target, phase: &Phase, args: &BidArgs) -> anyhow::Result<()> {
    let baseline = super::baseline(target, phase).await?;
    let scenario =
        BidScenario { users: args.bidders, starting_price_cents: args.starting_price_cents, spacing: args.bid_spacing };
    let run = stampede_loadgen::bids(target, phase, &scenario).await.context("bid phase")?;
    println!("{}", run.report.line());
    print_summary(&baseline, &run);
    Ok(())
}

fn print_summary(baseline: &Report, run: &BidRun) {
    let bids = &run.report;
    let rejected = bids.by_status.get(&409).copied().unwrap_or(0);
    println!(
        "ratio accepted bids/healthz = {:.2}, all answers/healthz = {:.2}: accepted {:.0}/s ({} accepted, {rejected} \
         bid_too_low = {:.1}%); all bids {:.0}/s p50 {:?} p99 {:?} p99.9 {:?}; healthz {:.0}/s p50 {:?} p99 {:?}",
        bids.ok_per_second() / baseline.rps,
        bids.ratio_to(baseline),
        bids.ok_per_second(),
        bids.ok,
        percent(rejected, bids.requests),
        bids.rps,
        bids.p50,
        bids.p99,
        bids.p999,
        baseline.rps,
        baseline.p50,
        baseline.p99,
    );
    println!(
        "auction {}: {} accepted bids in the whole run (warm-up included), price now {} cents",
        run.auction_id, run.bid_count, run.current_price_cents
    );
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 * 100.0 / whole as f64
}
