//! Personal events: a user's orders, outbids and wins, read from the backend as they change
//! and sent to that user's streams, plus the "expiring" warning before a hold ends.
//!
//! Reading an order waits until its change is durable (a hold is announced only once it is
//! acknowledged), so reads run concurrently, but they are published in the order the changes
//! came: a user sees `hold_created` before `order_paid`.

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::Serialize;
use stampede_core::{OrderStatus, Timestamp, UserId};
use stampede_engine::{Change, OrderView};
use tokio::sync::mpsc;
use tokio::time::{interval, MissedTickBehavior};

use super::hub::COALESCE;
use super::snapshot;
use crate::auctions::AuctionBody;
use crate::orders::OrderBody;
use crate::AppState;

/// Reads in flight at once.
const CONCURRENT_READS: usize = 64;
/// A hold's "expiring" warning comes this long before its end (or at half its time if shorter).
const EXPIRY_WARNING_MS: i64 = 60_000;

/// One personal event: `type` says which, and the fields it concerns are set.
#[derive(Serialize)]
struct Personal {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    auction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auction: Option<AuctionBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<OrderBody>,
}

impl Personal {
    fn about_order(kind: &'static str, order: OrderView) -> Self {
        Self { kind, auction_id: None, auction: None, order: Some(order.into()) }
    }
}

type Read = Pin<Box<dyn Future<Output = Option<(UserId, Personal)>> + Send>>;

/// Runs until `changes` closes and every read in flight is published.
pub async fn run(state: AppState, mut changes: mpsc::Receiver<Change>) {
    let mut reads: FuturesOrdered<Read> = FuturesOrdered::new();
    let mut warnings = interval(COALESCE);
    warnings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut open = true;
    while open || !reads.is_empty() {
        tokio::select! {
            change = changes.recv(), if open && reads.len() < CONCURRENT_READS => match change {
                Some(change) => reads.push_back(Box::pin(read(state.clone(), change))),
                None => open = false,
            },
            Some(done) = reads.next(), if !reads.is_empty() => {
                if let Some((user, event)) = done {
                    publish(&state, &user, &event);
                }
            }
            _ = warnings.tick(), if open => warn_expiring(&state).await,
        }
    }
}

fn publish(state: &AppState, user: &UserId, event: &Personal) {
    state.hub.publish_personal(user, event.kind, event);
}

async fn read(state: AppState, change: Change) -> Option<(UserId, Personal)> {
    match change {
        Change::Order { user, order_id } => {
            let order = state.backend.order(&order_id, &user).await.ok()?;
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
            Some((user, Personal::about_order(kind, order)))
        }
        Change::Outbid { user, auction_id } => {
            let auction = snapshot::auction_body(&state, &auction_id).await?;
            Some((user, Personal { kind: "outbid", auction_id: None, auction: Some(auction), order: None }))
        }
        Change::AuctionWon { user, auction_id, order_id } => {
            let order = state.backend.order(&order_id, &user).await.ok()?;
            let mut event = Personal::about_order("auction_won", order);
            event.auction_id = Some(auction_id.to_string());
            Some((user, event))
        }
        Change::Sale { .. } | Change::Auction { .. } => None,
    }
}

async fn warn_expiring(state: &AppState) {
    for (user, order_id) in state.hub.due_warnings(Timestamp::now()) {
        if !state.hub.follows_personal(&user) {
            continue;
        }
        let Ok(order) = state.backend.order(&order_id, &user).await else { continue };
        if order.status == OrderStatus::Held {
            publish(state, &user, &Personal::about_order("hold_expiring", order));
        }
    }
}
