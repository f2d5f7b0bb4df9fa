//! The live board: what the dashboard shows and what `/metrics` reports per sale and auction.
//!
//! One task per process follows the change feed. Changes name what changed; the board reads the
//! current state of each changed sale and auction once per tick (so a burst of purchases costs
//! one read per sale per tick), turns order and auction changes into lines of an event log (at
//! most `LOG_PER_TICK` resolved per tick, the rest counted), and once a second takes the
//! request figures from the telemetry into a five-minute history. Every tick it publishes one
//! pre-encoded JSON frame for the dashboard streams.
//!
//! Every `LIST_EVERY_TICKS` (and at start) the board also lists all sales and auctions, so it
//! shows those made before it started or on other replicas, and forgets them `FORGET_AFTER`
//! after they ended (sold-out sales stay: held units may come back).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use stampede_core::{AuctionStatus, Timestamp, UserId};
use stampede_engine::changes::burst;
use stampede_engine::{AuctionView, Change, SaleView};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::time::{interval, MissedTickBehavior};

use crate::{lock, AppState};

/// How often the board refreshes and publishes: the dashboard is at most this much (plus one
/// read) behind.
pub const TICK: Duration = Duration::from_millis(250);
const TICKS_PER_SECOND: u32 = 4;
/// Seconds of request history kept for the charts.
pub const HISTORY_SECONDS: usize = 300;
/// Order and auction changes turned into log lines per tick; the rest are counted.
const LOG_PER_TICK: usize = 50;
/// Log lines kept for a dashboard that connects.
const LOG_KEPT: usize = 200;
const FORGET_AFTER: i64 = 10 * 60 * 1000;
/// Ticks between full listings (5 s).
const LIST_EVERY_TICKS: u32 = 20;

#[derive(Default)]
pub struct Board {
    state: Mutex<BoardState>,
    frames: Frames,
    /// Sales and auctions made here since the last tick: creation is not a change on the feed.
    noted: Mutex<Vec<Noted>>,
}

pub enum Noted {
    Sale(Arc<str>),
    Auction(Arc<str>),
}

struct Frames(broadcast::Sender<Arc<str>>);

impl Default for Frames {
    fn default() -> Self {
        Self(broadcast::channel(16).0)
    }
}

#[derive(Default)]
struct BoardState {
    /// By id, so every listing of them is in the same order.
    sales: BTreeMap<Arc<str>, SaleView>,
    auctions: BTreeMap<Arc<str>, AuctionView>,
    history: VecDeque<Point>,
    log: VecDeque<LogLine>,
}

/// One second of the charts.
#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    /// Unix milliseconds at the end of the second.
    t: i64,
    #[serde(flatten)]
    second: crate::telemetry::Second,
}

#[derive(Debug, Clone, Serialize)]
struct LogLine {
    t: i64,
    kind: &'static str,
    text: String,
}

impl Board {
    /// Follows the dashboard: the full state now, then one frame per tick.
    pub(crate) fn follow(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let receiver = self.frames.0.subscribe();
        let state = lock(&self.state);
        let now = Timestamp::now();
        let body = json!({
            "history": state.history,
            "log": state.log,
            "sales": sales_json(&state.sales),
            "auctions": auctions_json(&state.auctions, now),
            "now": now.0,
        });
        (body.to_string(), receiver)
    }

    /// The per-sale and per-auction figures in the Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let state = lock(&self.state);
        let (sales, auctions) = (&state.sales, &state.auctions);
        out.push_str("# HELP stampede_sale_units Units of a sale by state (available, held, sold).\n");
        out.push_str("# TYPE stampede_sale_units gauge\n");
        for sale in sales.values() {
            for (units_state, units) in [("available", sale.available), ("held", sale.held), ("sold", sale.sold)] {
                let _ = writeln!(out, "stampede_sale_units{{sale=\"{}\",state=\"{units_state}\"}} {units}", sale.id);
            }
        }
        out.push_str("# HELP stampede_sale_waitlisted Users on a sale's waitlist.\n");
        out.push_str("# TYPE stampede_sale_waitlisted gauge\n");
        for sale in sales.values() {
            let _ = writeln!(out, "stampede_sale_waitlisted{{sale=\"{}\"}} {}", sale.id, sale.waitlisted);
        }
        out.push_str("# HELP stampede_auction_bids_total Bids accepted by an auction.\n");
        out.push_str("# TYPE stampede_auction_bids_total counter\n");
        for auction in auctions.values() {
            let _ = writeln!(out, "stampede_auction_bids_total{{auction=\"{}\"}} {}", auction.id, auction.bid_count);
        }
        out.push_str("# HELP stampede_auction_price_cents An auction's current price.\n");
        out.push_str("# TYPE stampede_auction_price_cents gauge\n");
        for auction in auctions.values() {
            let id = &auction.id;
            let _ = writeln!(out, "stampede_auction_price_cents{{auction=\"{id}\"}} {}", auction.current_price_cents);
        }
    }

    /// A sale or auction made by this server: on the board from the next tick.
    pub(crate) fn note(&self, noted: Noted) {
        lock(&self.noted).push(noted);
    }

    fn publish(&self, frame: String) {
        let _ = self.frames.0.send(Arc::from(frame));
    }
}

/// Runs until `stop` turns true or the backend's feed closes.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut changes = state.backend.changes();
    let mut ticker = interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending = Pending::default();
    let mut ticks = 0u32;
    'follow: loop {
        tokio::select! {
            change = changes.recv() => for change in burst(change, &mut changes) {
                match change {
                    Ok(change) => pending.add(change),
                    Err(RecvError::Lagged(missed)) => {
                        let board = lock(&state.board.state);
                        pending.sales.extend(board.sales.keys().cloned());
                        pending.auctions.extend(board.auctions.keys().cloned());
                        pending.skipped += missed as usize;
                    }
                    Err(RecvError::Closed) => break 'follow,
                }
            },
            _ = ticker.tick() => {
                ticks = ticks.wrapping_add(1);
                let second = ticks.is_multiple_of(TICKS_PER_SECOND).then(|| state.telemetry.take_second());
                if ticks.is_multiple_of(TICKS_PER_SECOND * 10) {
                    state.telemetry.upkeep();
                }
                let list = ticks % LIST_EVERY_TICKS == 1;
                tick(&state, std::mem::take(&mut pending), second, list).await;
            }
            _ = stop.changed() => break,
        }
    }
}

/// What changed since the last tick.
#[derive(Default)]
struct Pending {
    sales: HashSet<Arc<str>>,
    auctions: HashSet<Arc<str>>,
    /// Order changes to resolve into log lines, in arrival order.
    orders: Vec<(UserId, String)>,
    lines: Vec<(&'static str, String)>,
    /// Changes not turned into lines (beyond the per-tick budget, or missed).
    skipped: usize,
}

impl Pending {
    fn add(&mut self, change: Change) {
        match change {
            Change::Sale { sale_id } => {
                self.sales.insert(sale_id);
            }
            Change::Auction { auction_id } => {
                self.auctions.insert(auction_id);
            }
            Change::Order { user, order_id } => {
                if self.orders.len() < LOG_PER_TICK {
                    self.orders.push((user, order_id));
                } else {
                    self.skipped += 1;
                }
            }
            Change::Outbid { user, auction_id } => {
                self.lines.push(("outbid", format!("{user} was outbid on {auction_id}")));
            }
            Change::AuctionWon { user, auction_id, order_id } => {
                self.lines.push(("won", format!("{user} won {auction_id}; order {order_id} to pay")));
            }
        }
    }
}

async fn tick(state: &AppState, mut pending: Pending, second: Option<crate::telemetry::Second>, list: bool) {
    let now = Timestamp::now();
    // On a listing tick, what the listing read is not read again one by one.
    let (mut listed_sales, mut listed_auctions) = (HashMap::new(), HashMap::new());
    if list {
        for view in state.backend.list_sales(now).await.unwrap_or_default() {
            listed_sales.insert(Arc::from(view.id.as_str()), view);
        }
        for view in state.backend.list_auctions(now).await.unwrap_or_default() {
            listed_auctions.insert(Arc::from(view.id.as_str()), view);
        }
    }
    for noted in std::mem::take(&mut *lock(&state.board.noted)) {
        match noted {
            Noted::Sale(id) => pending.sales.insert(id),
            Noted::Auction(id) => pending.auctions.insert(id),
        };
    }
    let mut sales = Vec::with_capacity(pending.sales.len());
    for sale_id in pending.sales.iter().filter(|sale_id| !listed_sales.contains_key(*sale_id)) {
        if let Ok(view) = state.backend.sale(sale_id, now).await {
            sales.push((sale_id.clone(), view));
        }
    }
    // Changed auctions also make log lines, from the listed state where there is one.
    let mut auctions = Vec::with_capacity(pending.auctions.len());
    for auction_id in &pending.auctions {
        let view = match listed_auctions.get(auction_id) {
            Some(view) => Ok(view.clone()),
            None => state.backend.auction(auction_id, now).await,
        };
        if let Ok(view) = view {
            auctions.push((auction_id.clone(), view));
        }
    }
    let mut lines: Vec<LogLine> = Vec::new();
    for (user, order_id) in &pending.orders {
        if let Ok(order) = state.backend.order(order_id, user).await {
            let text = format!(
                "{} {}: {} × {} for {}",
                order.id,
                order.status.as_str(),
                order.quantity,
                order.sale_id,
                order.user_id
            );
            lines.push(LogLine { t: now.0, kind: "order", text });
        }
    }
    for (_, auction) in &auctions {
        let leader = auction.leader_id.as_deref().unwrap_or("nobody");
        let text = format!(
            "{} {}: {} by {leader}, {} bids",
            auction.id,
            auction.status.as_str(),
            money(auction.current_price_cents),
            auction.bid_count
        );
        lines.push(LogLine { t: now.0, kind: "auction", text });
    }
    lines.extend(pending.lines.into_iter().map(|(kind, text)| LogLine { t: now.0, kind, text }));
    if pending.skipped > 0 {
        let text = format!("… and {} more changes this tick", pending.skipped);
        lines.push(LogLine { t: now.0, kind: "note", text });
    }

    let frame = {
        let mut board = lock(&state.board.state);
        board.sales.extend(listed_sales);
        board.auctions.extend(listed_auctions);
        for (id, view) in sales {
            board.sales.insert(id, view);
        }
        for (id, view) in auctions {
            board.auctions.insert(id, view);
        }
        board.sales.retain(|_, sale| !sale.ends_at.is_some_and(|ends_at| over(ends_at, now)));
        board.auctions.retain(|_, auction| auction.status != AuctionStatus::Ended || !over(auction.ends_at, now));
        let point = second.map(|second| Point { t: now.0, second });
        if let Some(point) = point {
            board.history.push_back(point);
            while board.history.len() > HISTORY_SECONDS {
                board.history.pop_front();
            }
        }
        for line in &lines {
            board.log.push_back(line.clone());
        }
        while board.log.len() > LOG_KEPT {
            board.log.pop_front();
        }
        json!({
            "point": point,
            "log": lines,
            "sales": sales_json(&board.sales),
            "auctions": auctions_json(&board.auctions, now),
            "now": now.0,
        })
    };
    state.board.publish(frame.to_string());
}

fn over(ended_at: Timestamp, now: Timestamp) -> bool {
    now.0 - ended_at.0 > FORGET_AFTER
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

fn sales_json(sales: &BTreeMap<Arc<str>, SaleView>) -> Vec<serde_json::Value> {
    sales
        .values()
        .map(|sale| {
            json!({
                "id": sale.id, "name": sale.name, "status": sale.status.as_str(), "stock": sale.stock,
                "available": sale.available, "held": sale.held, "sold": sale.sold, "waitlisted": sale.waitlisted,
            })
        })
        .collect()
}

fn auctions_json(auctions: &BTreeMap<Arc<str>, AuctionView>, now: Timestamp) -> Vec<serde_json::Value> {
    auctions
        .values()
        .map(|auction| {
            let left_ms = if auction.status == AuctionStatus::Ended { 0 } else { (auction.ends_at.0 - now.0).max(0) };
            json!({
                "id": auction.id, "title": auction.title, "status": auction.status.as_str(),
                "price_cents": auction.current_price_cents, "leader_id": auction.leader_id,
                "bid_count": auction.bid_count, "reserve_met": auction.reserve_met, "left_ms": left_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_units_and_cents() {
        assert_eq!(money(123_456), "1234.56");
        assert_eq!(money(5), "0.05");
    }
}
