//! What the sale scripts store and put on the streams, as JSON: sales, orders, waitlist entries.

use serde::{Deserialize, Serialize};
use stampede_core::{OrderStatus, Timestamp};

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
}

impl Event {
    /// Decodes an entry's `t` (type) and `j` (JSON) fields; `None` for anything malformed.
    pub fn decode(sale_id: &str, kind: &str, json: &str) -> Option<Self> {
        match kind {
            "s" => serde_json::from_str(json).ok().map(Event::Sale),
            "o" => OrderRecord::parse(json).map(|order| Event::Order(sale_id.to_owned(), order)),
            "w" => serde_json::from_str(json).ok().map(|entry| Event::Waitlist(sale_id.to_owned(), entry)),
            _ => None,
        }
    }
}
