//! The hub's one task: follows the change feed, coalesces snapshots per tick, turns order and
//! auction changes into personal events, and beats the heartbeat.

use std::collections::HashSet;

use serde::Serialize;
use stampede_core::{OrderStatus, Timestamp, UserId};
use stampede_engine::{Change, OrderView};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};

use super::hub::{Topic, COALESCE, HEARTBEAT, RESYNC};
use super::snapshot;
use crate::auctions::AuctionBody;
use crate::orders::OrderBody;
use crate::AppState;

/// One personal event: `type` says which, and the fields it concerns are set.
#[derive(Serialize)]
struct Personal<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    auction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auction: Option<AuctionBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<OrderBody>,
}

impl Personal<'_> {
    const NONE: Personal<'static> = Personal { kind: "", auction_id: None, auction: None, order: None };
}

/// A hold's "expiring" warning comes this long before its end (or at half its time if shorter).
const EXPIRY_WARNING_MS: i64 = 60_000;

/// Runs until `stop` turns true or the backend's feed closes.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut changes = state.backend.changes();
    let mut coalesce = interval(COALESCE);
    let mut resync = interval(RESYNC);
    let mut heartbeat = interval(HEARTBEAT);
    for ticker in [&mut coalesce, &mut resync, &mut heartbeat] {
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    let mut dirty = HashSet::new();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => on_change(&state, change, &mut dirty).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "streams fell behind the change feed; resending every followed state");
                    dirty.extend(state.hub.followed());
                }
                Err(RecvError::Closed) => return,
            },
            _ = coalesce.tick() => {
                refresh(&state, dirty.drain()).await;
                warn_expiring(&state).await;
            }
            _ = resync.tick() => refresh(&state, state.hub.followed()).await,
            _ = heartbeat.tick() => state.hub.beat(),
            _ = stop.changed() => return,
        }
    }
}

async fn on_change(state: &AppState, change: Change, dirty: &mut HashSet<Topic>) {
    match change {
        Change::Sale { sale_id } => mark(state, Topic::Sale(sale_id), dirty),
        Change::Auction { auction_id } => mark(state, Topic::Auction(auction_id), dirty),
        Change::Order { user, order_id } => order_changed(state, &user, &order_id).await,
        Change::Outbid { user, auction_id } => {
            if !state.hub.follows_personal(&user) {
                return;
            }
            let Some(auction) = snapshot::auction_body(state, &auction_id).await else { return };
            state.hub.publish_personal(
                &user,
                "outbid",
                &Personal { kind: "outbid", auction: Some(auction), ..Personal::NONE },
            );
        }
        Change::AuctionWon { user, auction_id, order_id } => {
            let Some(order) = followed_order(state, &user, &order_id).await else { return };
            let order = Some(OrderBody::from(order));
            let body = Personal { kind: "auction_won", auction_id: Some(&auction_id), order, ..Personal::NONE };
            state.hub.publish_personal(&user, "auction_won", &body);
        }
    }
}

fn mark(state: &AppState, topic: Topic, dirty: &mut HashSet<Topic>) {
    if state.hub.is_followed(&topic) {
        dirty.insert(topic);
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

/// The order as its owner sees it, if the owner follows their events here.
async fn followed_order(state: &AppState, user: &UserId, order_id: &str) -> Option<OrderView> {
    if !state.hub.follows_personal(user) {
        return None;
    }
    state.backend.order(order_id, user).await.ok()
}

async fn order_changed(state: &AppState, user: &UserId, order_id: &str) {
    let Some(order) = followed_order(state, user, order_id).await else { return };
    let kind = match order.status {
        OrderStatus::Held => "hold_created",
        OrderStatus::Paid => "order_paid",
        OrderStatus::Cancelled => "order_cancelled",
        OrderStatus::Expired => "hold_expired",
    };
    if order.status == OrderStatus::Held {
        let lead = EXPIRY_WARNING_MS.min((order.expires_at.0 - order.created_at.0) / 2);
        state.hub.warn_at(Timestamp(order.expires_at.0 - lead), user.clone(), order.id.clone());
    }
    state.hub.publish_personal(user, kind, &Personal { kind, order: Some(OrderBody::from(order)), ..Personal::NONE });
}

async fn warn_expiring(state: &AppState) {
    for (user, order_id) in state.hub.due_warnings(Timestamp::now()) {
        let Some(order) = followed_order(state, &user, &order_id).await else { continue };
        if order.status != OrderStatus::Held {
            continue;
        }
        let body = Personal { kind: "hold_expiring", order: Some(OrderBody::from(order)), ..Personal::NONE };
        state.hub.publish_personal(&user, "hold_expiring", &body);
    }
}
