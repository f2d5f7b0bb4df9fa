//! The hub's task: follows the change feed, coalesces topic snapshots per tick, hands personal
//! changes to the personal-events task, and beats the heartbeat.

use std::collections::HashSet;

use stampede_engine::changes::burst;
use stampede_engine::Change;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, MissedTickBehavior};

use super::hub::{Topic, COALESCE, HEARTBEAT, RESYNC};
use super::{personal, snapshot};
use crate::AppState;

/// Personal changes waiting to be turned into events; beyond this they are dropped (and the
/// client gets the current state of its orders when it reconnects).
const PERSONAL_QUEUE: usize = 16_384;

/// Runs until `stop` turns true or the backend's feed closes.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut changes = state.backend.changes();
    let (personal_changes, personal_queue) = mpsc::channel(PERSONAL_QUEUE);
    let personal = tokio::spawn(personal::run(state.clone(), personal_queue));
    let mut coalesce = interval(COALESCE);
    let mut resync = interval(RESYNC);
    let mut heartbeat = interval(HEARTBEAT);
    for ticker in [&mut coalesce, &mut resync, &mut heartbeat] {
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut dirty = HashSet::new();
    'follow: loop {
        tokio::select! {
            change = changes.recv() => for change in burst(change, &mut changes) {
                match change {
                    Ok(change) => on_change(&state, change, &mut dirty, &personal_changes),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "streams fell behind the change feed; resending every followed state");
                        dirty.extend(state.hub.followed());
                    }
                    Err(RecvError::Closed) => break 'follow,
                }
            },
            _ = coalesce.tick() => refresh(&state, dirty.drain()).await,
            _ = resync.tick() => refresh(&state, state.hub.followed()).await,
            _ = heartbeat.tick() => state.hub.beat(),
            _ = stop.changed() => break,
        }
    }
    drop(personal_changes);
    if let Err(error) = personal.await {
        tracing::error!(%error, "the personal events task ended abnormally");
    }
}

fn on_change(state: &AppState, change: Change, dirty: &mut HashSet<Topic>, personal: &mpsc::Sender<Change>) {
    let (topic, user) = match &change {
        Change::Sale { sale_id } => (Some(Topic::Sale(sale_id.clone())), None),
        Change::Auction { auction_id } => (Some(Topic::Auction(auction_id.clone())), None),
        Change::Order { user, .. } | Change::Outbid { user, .. } | Change::AuctionWon { user, .. } => {
            (None, Some(user))
        }
    };
    if let Some(topic) = topic.filter(|topic| state.hub.is_followed(topic)) {
        dirty.insert(topic);
    }
    if user.is_some_and(|user| state.hub.follows_personal(user)) && personal.try_send(change).is_err() {
        tracing::warn!("personal events are falling behind; dropping one");
    }
}

async fn refresh(state: &AppState, topics: impl IntoIterator<Item = Topic>) {
    let topics: Vec<Topic> = topics.into_iter().collect();
    for topic in topics {
        if let Some(frame) = snapshot::of(state, &topic).await {
            state.hub.publish(&topic, frame);
        }
    }
}
