//! The expiry job: ends holds whose deadline has passed, so their units go back within a tick,
//! and closes auctions whose end has passed, so each winner gets its order within a tick.

use std::sync::Arc;
use std::time::Duration;

use stampede_core::Timestamp;
use tokio::sync::watch;

use crate::backend::Backend;

/// How often due holds are looked for; the API promises units back within 1 s.
pub const TICK: Duration = Duration::from_millis(100);

/// Runs until `shutdown` turns true.
pub async fn run(backend: Arc<dyn Backend>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Timestamp::now();
        match backend.expire_due(now).await {
            Ok(0) => {}
            Ok(expired) => {
                metrics::counter!(crate::telemetry::HOLD_EXPIRIES).increment(expired as u64);
                tracing::debug!(expired, "holds expired");
            }
            Err(error) => tracing::warn!(%error, "expiring holds failed"),
        }
        match backend.close_due_auctions(now).await {
            Ok(0) => {}
            Ok(closed) => {
                metrics::counter!(crate::telemetry::AUCTIONS_CLOSED).increment(closed as u64);
                tracing::debug!(closed, "auctions closed");
            }
            Err(error) => tracing::warn!(%error, "closing auctions failed"),
        }
    }
}
