//! `stampede bench --scenario overload`: the unloaded peak (closed loop at `--connections`),
//! then purchases offered open loop at a multiple of that peak; goodput as a share of the peak,
//! the latency of accepted requests and the share shed with 503.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use stampede_loadgen::process::cpu_time;
use stampede_loadgen::{OpenLoop, OpenLoopReport, Phase, PurchaseScenario, Report, Target};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Args)]
pub struct OverloadArgs {
    /// Offered load as a multiple of the measured unloaded peak.
    #[arg(long, default_value_t = 3.0)]
    overload_factor: f64,
    /// Offer this many purchases per second instead of a multiple of the peak.
    #[arg(long)]
    offered_rate: Option<f64>,
    /// Connections in the open-loop pool (0 = enough for the offered rate at 150 ms each,
    /// within the open-files limit).
    #[arg(long, default_value_t = 0)]
    pool: usize,
}

/// Seconds a request may take under overload that the automatic pool still covers without
/// leaving due requests unsent: above the server's default 100 ms queue bound plus service.
const POOL_COVERS_SECONDS: f64 = 0.15;
const MIN_POOL: usize = 256;
/// Open files kept for everything but the pool's sockets.
const SPARE_FILES: u64 = 1_024;
const CPU_SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// CPU time of the server and of the generator at one moment.
struct CpuSample {
    at: Instant,
    server: Option<Duration>,
    generator: Option<Duration>,
}

/// Samples CPU time until stopped, so the cores each side used can be read over the measured
/// window afterwards.
struct CpuMonitor {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<CpuSample>>,
}

pub async fn run(
    target: &Target,
    phase: &Phase,
    scenario: &PurchaseScenario,
    args: &OverloadArgs,
    server_pid: Option<u32>,
) -> anyhow::Result<()> {
    let baseline = super::baseline(target, phase).await?;
    let peak = stampede_loadgen::purchases(target, phase, scenario).await.context("peak purchase phase")?;
    println!("peak {}", peak.line());
    let rate = args.offered_rate.unwrap_or(args.overload_factor * peak.ok_per_second());
    let open =
        OpenLoop { rate, connections: pool_size(args.pool, rate), duration: phase.duration, warmup: phase.warmup };
    let monitor = CpuMonitor::start(server_pid);
    let overload =
        stampede_loadgen::purchases_open_loop(target, &open, scenario).await.context("open-loop purchase phase")?;
    let samples = monitor.finish().await?;
    println!("{}", overload.line());
    print_cpu(&samples, overload.window_start, overload.elapsed);
    print_summary(&baseline, &peak, &overload);
    Ok(())
}

fn pool_size(asked: usize, rate: f64) -> usize {
    if asked > 0 {
        return asked;
    }
    let files = stampede_loadgen::process::raise_open_files_limit().saturating_sub(SPARE_FILES);
    let files = usize::try_from(files).unwrap_or(usize::MAX);
    // Leave ports for the server's other clients and for sockets still in TIME_WAIT.
    let ports = stampede_loadgen::process::ephemeral_ports().map_or(usize::MAX, |ports| ports / 2);
    let wanted = (rate * POOL_COVERS_SECONDS).ceil() as usize;
    wanted.max(MIN_POOL).min(files).min(ports)
}

fn print_summary(baseline: &Report, peak: &Report, overload: &OpenLoopReport) {
    let peak_goodput = peak.ok_per_second();
    let ratio = overload.goodput() / peak_goodput;
    let p99 = overload.accepted_from_due.quantile(0.99);
    let p99_send = overload.accepted_from_send.quantile(0.99);
    let shed_share = share(overload.shed, overload.answered());
    let unsent_share = share(overload.not_sent, overload.scheduled);
    println!(
        "goodput/peak = {ratio:.2} (target >= 0.9): goodput {:.0}/s at {:.0}/s offered ({:.1}x), peak {peak_goodput:.0}/s \
         (p50 {} p99 {}); accepted p99 {} from due, {} from send (target < 50 ms); shed {:.1}% of answers, not \
         sent {:.1}% of due; healthz {:.0}/s",
        overload.goodput(),
        overload.offered_rate,
        overload.offered_rate / peak_goodput,
        ms(peak.p50),
        ms(peak.p99),
        ms(p99),
        ms(p99_send),
        shed_share * 100.0,
        unsent_share * 100.0,
        baseline.rps,
    );
    println!(
        "summary scenario=overload peak_rps={peak_goodput:.0} offered_rps={:.0} pool={} goodput_rps={:.0} \
         goodput_ratio={ratio:.3} accepted_p50_ms={:.2} accepted_p99_ms={:.2} accepted_p99_send_ms={:.2} \
         shed_share={shed_share:.3} not_sent_share={unsent_share:.3} shed_p99_ms={:.2} io_errors={} healthz_rps={:.0}",
        overload.offered_rate,
        overload.connections,
        overload.goodput(),
        millis(overload.accepted_from_due.quantile(0.5)),
        millis(p99),
        millis(p99_send),
        millis(overload.shed_from_send.quantile(0.99)),
        overload.io_errors,
        baseline.rps,
    );
}

impl CpuMonitor {
    fn start(server_pid: Option<u32>) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval(CPU_SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => return samples,
                    _ = ticks.tick() => samples.push(CpuSample::take(server_pid)),
                }
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> anyhow::Result<Vec<CpuSample>> {
        // The task ends when the sender is used or dropped; an error here only means it already has.
        let _ = self.stop.send(());
        self.task.await.context("cpu sampling task")
    }
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> Self {
        Self { at: Instant::now(), server: server_pid.and_then(cpu_time), generator: cpu_time(std::process::id()) }
    }
}

/// Cores used by the server and the generator over the measured window (to the nearest samples).
fn print_cpu(samples: &[CpuSample], start: Instant, window: Duration) {
    let nearest =
        |at: Instant| samples.iter().min_by_key(|sample| if sample.at > at { sample.at - at } else { at - sample.at });
    let (Some(first), Some(last)) = (nearest(start), nearest(start + window)) else {
        return;
    };
    let wall = last.at.saturating_duration_since(first.at).as_secs_f64();
    let cores = |from: Option<Duration>, to: Option<Duration>| match (from, to) {
        (Some(from), Some(to)) if wall > 0.0 => format!("{:.2}", to.saturating_sub(from).as_secs_f64() / wall),
        _ => "?".to_owned(),
    };
    println!(
        "cpu over the open-loop window: server {} cores, generator {} cores (of {})",
        cores(first.server, last.server),
        cores(first.generator, last.generator),
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", millis(duration))
}
