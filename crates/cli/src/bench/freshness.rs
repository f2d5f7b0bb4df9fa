//! `stampede bench --scenario freshness`: how far the dashboard is behind while the server runs
//! at its peak purchase rate. The purchase phase (closed loop, `--connections`) runs as usual;
//! on a thread of its own, a probe buys one unit of a sale of its own every 100 ms and follows
//! the dashboard's stream (`/v1/admin/dashboard/events`, what the page draws from). Freshness
//! of probe `k` is the time from its purchase's answer to the first dashboard event whose
//! ledger for the probe sale counts `k` units taken. The page then draws on its next animation
//! frame (≤ 16 ms at 60 Hz), which is not included.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use stampede_loadgen::histogram::Histogram;
use stampede_loadgen::{PurchaseScenario, Target};

const PROBE_EVERY: Duration = Duration::from_millis(100);

pub async fn run(target: &Target, phase: &stampede_loadgen::Phase, scenario: &PurchaseScenario) -> anyhow::Result<()> {
    let base = format!("http://{}", target.addr);
    let client = reqwest::Client::new();
    let sale: Value = client
        .post(format!("{base}/v1/sales"))
        .bearer_auth(&target.admin_token)
        .json(&json!({"name": "freshness probe", "stock": 1_000_000, "price_cents": 100, "per_user_limit": 1}))
        .send()
        .await
        .context("create the probe sale")?
        .error_for_status()?
        .json()
        .await?;
    let sale_id = sale["id"].as_str().context("probe sale id")?.to_owned();
    let probing = phase.warmup + phase.duration;
    let probe = {
        let (base, sale_id, target) = (base.clone(), sale_id.clone(), target.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(probe(&base, &target, &sale_id, probing))
        })
    };
    let purchases = stampede_loadgen::purchases(target, phase, scenario).await.context("purchase phase")?;
    println!("{}", purchases.line());
    let freshness = probe.join().map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
    println!(
        "dashboard freshness at {:.0} purchases/s: {} probes, p50 {:?} p99 {:?} max {:?} (from the purchase's answer \
         to the dashboard event showing it)",
        purchases.ok_per_second(),
        freshness.count(),
        freshness.quantile(0.50),
        freshness.quantile(0.99),
        freshness.max(),
    );
    println!(
        "summary scenario=freshness purchases_rps={:.0} probes={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        purchases.ok_per_second(),
        freshness.count(),
        freshness.quantile(0.50).as_secs_f64() * 1e3,
        freshness.quantile(0.99).as_secs_f64() * 1e3,
        freshness.max().as_secs_f64() * 1e3,
    );
    Ok(())
}

/// Buys every `PROBE_EVERY` for `probing` while following the dashboard; the freshness of each.
async fn probe(base: &str, target: &Target, sale_id: &str, probing: Duration) -> anyhow::Result<Histogram> {
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{base}/v1/admin/dashboard/events"))
        .bearer_auth(&target.admin_token)
        .send()
        .await
        .context("open the dashboard stream")?
        .error_for_status()?;
    // When the dashboard first showed `k` units taken of the probe sale, for every k.
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let watcher = {
        let (seen, sale_id) = (seen.clone(), sale_id.to_owned());
        tokio::spawn(async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                let at = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    if let Some(taken) = taken_in(&event, &sale_id) {
                        let mut seen = seen.lock().expect("seen");
                        while (seen.len() as u64) < taken {
                            seen.push(at);
                        }
                    }
                }
            }
        })
    };
    let mut acked = Vec::new();
    let started = Instant::now();
    let mut next = tokio::time::Instant::now();
    while started.elapsed() < probing {
        next += PROBE_EVERY;
        let user = format!("freshness-probe-{}", acked.len());
        let token = stampede_loadgen::mint_token(&target.jwt_secret, &user, 3600);
        let answer = client
            .post(format!("{base}/v1/sales/{sale_id}/orders"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .context("probe purchase")?;
        if answer.status() != reqwest::StatusCode::CREATED {
            bail!("probe purchase answered {}", answer.status());
        }
        acked.push(Instant::now());
        tokio::time::sleep_until(next).await;
    }
    // The last probes' events arrive within a tick or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.abort();
    let seen = seen.lock().expect("seen").clone();
    if seen.len() < acked.len() {
        bail!("the dashboard showed {} of {} probe purchases", seen.len(), acked.len());
    }
    let mut histogram = Histogram::default();
    for (acked, seen) in acked.iter().zip(&seen) {
        histogram.record(seen.saturating_duration_since(*acked));
    }
    Ok(histogram)
}

/// Units taken (held + sold) of `sale_id` in one SSE event of the dashboard, if it lists it.
fn taken_in(event: &str, sale_id: &str) -> Option<u64> {
    let data = event.lines().find_map(|line| line.strip_prefix("data: "))?;
    let body: Value = serde_json::from_str(data).ok()?;
    let sale = body["sales"].as_array()?.iter().find(|sale| sale["id"] == sale_id)?;
    Some(sale["held"].as_u64()? + sale["sold"].as_u64()?)
}
