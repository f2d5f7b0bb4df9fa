//! What the scripts store and put on the streams, as JSON: sales, orders, waitlist entries,
//! auctions and bids.

use serde::{Deserialize, Serialize};
use stampede_core::{AuctionConfig, OrderStatus, Timestamp};

use super::keys;
use crate::backend::OrderView;
use crate::ids;

/// A sale's configuration, as handed to the create script and announced on its stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaleRecord {
    pub id: String,
    pub name: String,
    pub stock: u32,
    pub price: i64,
    pub limit: u32,
    pub hold_ms: i64,
    pub starts: i64,
    /// -1: no end.
    pub ends: i64,
    pub created: i64,
    /// Stock buckets (1: the sale is one set of keys).
    #[serde(default = "one")]
    pub buckets: u32,
    /// The waiting room's settings as JSON (`rooms::settings_to_json`), if the sale has one.
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub pow: bool,
}

fn one() -> u32 {
    1
}

impl SaleRecord {
    /// The ids of the sale's buckets, bucket 0 (the sale id itself) first.
    pub fn bucket_ids(&self) -> Vec<String> {
        (0..self.buckets).map(|index| keys::bucket_id(&self.id, index)).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderRecord {
    pub seq: u32,
    pub u: String,
    pub q: u32,
    pub s: String,
    pub c: i64,
    pub e: i64,
    pub up: i64,
    pub v: i32,
    pub k: Option<String>,
    pub p: Option<String>,
}

impl OrderRecord {
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    pub fn view(&self, sale_id: &str) -> Option<OrderView> {
        Some(OrderView {
            id: ids::order_id(sale_id, self.seq),
            sale_id: sale_id.to_owned(),
            user_id: self.u.clone(),
            quantity: self.q,
            status: OrderStatus::parse(&self.s)?,
            expires_at: Timestamp(self.e),
            created_at: Timestamp(self.c),
            updated_at: Timestamp(self.up),
            payment_ref: self.p.clone(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WaitlistRecord {
    pub pos: u32,
    pub u: String,
    pub q: u32,
    pub j: i64,
    /// w(aiting), g(ranted), d(ropped).
    pub s: String,
    pub g: Option<u32>,
    pub v: i32,
}

impl WaitlistRecord {
    pub fn status(&self) -> &'static str {
        match self.s.as_str() {
            "w" => "waiting",
            "g" => "granted",
            _ => "dropped",
        }
    }
}

/// One stream entry of a sale.
#[derive(Debug, Clone)]
pub enum Event {
    Sale(SaleRecord),
    Order(String, OrderRecord),
    Waitlist(String, WaitlistRecord),
    Auction(Box<AuctionRow>),
    Bid(BidRecord),
}

impl Event {
    /// Decodes an entry's `t` (type) and `j` (JSON) fields; `None` for anything malformed.
    pub fn decode(sale_id: &str, kind: &str, json: &str) -> Option<Self> {
        match kind {
            "s" => serde_json::from_str(json).ok().map(Event::Sale),
            "o" => OrderRecord::parse(json).map(|order| Event::Order(sale_id.to_owned(), order)),
            "w" => serde_json::from_str(json).ok().map(|entry| Event::Waitlist(sale_id.to_owned(), entry)),
            "A" => serde_json::from_str(json).ok().map(|row| Event::Auction(Box::new(row))),
            "b" => BidRecord::parse(json).map(Event::Bid),
            _ => None,
        }
    }
}

/// An auction's configuration as created: handed to the create script, stored with the
/// auction and carried by every row of it on the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuctionConfigRecord {
    pub id: String,
    pub title: String,
    pub seller: String,
    pub start: i64,
    pub reserve: Option<i64>,
    pub buy_now: Option<i64>,
    pub starts: i64,
    /// The scheduled end (soft close may move the actual end later).
    pub ends: i64,
    pub soft: u32,
    pub extend: u32,
    pub max_ext: Option<u32>,
    /// `(from, increment)` steps.
    pub ladder: Vec<(i64, i64)>,
    /// Seconds the winner has to pay.
    pub payment: u32,
    pub created: i64,
}

impl AuctionConfigRecord {
    pub fn of(id: &str, config: &AuctionConfig, payment_seconds: u32) -> Self {
        Self {
            id: id.to_owned(),
            title: config.title.clone(),
            seller: config.seller_id.clone(),
            start: config.starting_price_cents,
            reserve: config.reserve_price_cents,
            buy_now: config.buy_now_price_cents,
            starts: config.starts_at.0,
            ends: config.ends_at.0,
            soft: config.soft_close_seconds,
            extend: config.extend_seconds,
            max_ext: config.max_extensions,
            ladder: config.ladder.steps().to_vec(),
            payment: payment_seconds,
            created: config.created_at.0,
        }
    }
}

/// How an auction ended.
#[derive(Debug, Clone, Deserialize)]
pub struct OutcomeRecord {
    pub at: i64,
    /// closed | bought_now
    pub r: String,
    pub w: Option<String>,
    pub p: i64,
}

/// An auction's whole row after one change: configuration and state, versioned.
#[derive(Debug, Clone, Deserialize)]
pub struct AuctionRow {
    pub cfg: AuctionConfigRecord,
    pub ends: i64,
    pub ext: u32,
    pub price: i64,
    pub leader: Option<String>,
    pub n: u32,
    pub v: i64,
    pub o: Option<OutcomeRecord>,
}

/// One accepted bid as recorded: the answer it got, replayed for idempotent retries.
#[derive(Debug, Clone, Deserialize)]
pub struct BidRecord {
    /// The auction id.
    pub a: String,
    pub seq: u32,
    pub u: String,
    /// The bidder's maximum.
    pub m: i64,
    pub t: i64,
    pub k: Option<String>,
    /// leading | outbid, right after this bid
    pub s: String,
    /// Price and leader right after this bid.
    pub p: i64,
    pub l: String,
}

impl BidRecord {
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}
