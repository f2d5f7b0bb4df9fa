//! `stampede bench --scenario pow`: what the proof of work costs a client on this machine:
//! challenges from the server solved on one thread.

use std::time::Duration;

use anyhow::Context;
use stampede_loadgen::Target;

pub async fn run(target: &Target, duration: Duration) -> anyhow::Result<()> {
    let report = stampede_loadgen::pow::solve_rate(target, duration).await.context("proof-of-work phase")?;
    let mean_hashes = report.hashes as f64 / report.solved.max(1) as f64;
    println!(
        "pow: {} challenges of {} bits solved in {:.2}s on one thread: {:.1} solves/s, {:.2} M hashes/s, {mean_hashes:.0} \
         hashes per solve on average (2^{} = {})",
        report.solved,
        report.difficulty,
        report.solving.as_secs_f64(),
        report.solves_per_second(),
        report.hashes_per_second() / 1e6,
        report.difficulty,
        1u64 << report.difficulty,
    );
    println!(
        "summary scenario=pow difficulty={} solves={} solves_per_second={:.1} mhashes_per_second={:.2}",
        report.difficulty,
        report.solved,
        report.solves_per_second(),
        report.hashes_per_second() / 1e6,
    );
    Ok(())
}
