//! One journal batch as SQL parameters, written by one multi-statement transaction whose text
//! depends only on the batch's shape, so it stays prepared. Orders, the rows of the hot path, are
//! bound as plain parameters into a `VALUES` list of fixed size (unused slots are NULL and
//! filtered out), which SQLite takes about eight times faster than extracting the same rows from
//! JSON; the rest of a larger batch, and every other table, travel as a JSON array of rows whose
//! items are read by index.

use std::collections::HashSet;
use std::sync::OnceLock;

use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use stampede_core::{IdempotencyKey, Order, UserId, WaitlistStatus};

use super::journal::Record;

/// Sizes of the `VALUES` list for orders: a batch binds its first orders into the smallest that
/// holds them (or the largest), so that at most about half the slots go unused and a quiet server
/// does not bind hundreds of NULLs per commit. Each size is one more prepared statement.
pub(crate) const ORDER_SLOTS: [usize; 5] = [8, 16, 32, 64, 128];
/// Columns of an order row.
const ORDER_COLUMNS: usize = 11;

const SALES_AND_USERS: &str = "\
INSERT OR IGNORE INTO sales (id, name, stock, price_cents, starts_at, ends_at, per_user_limit, hold_seconds, \
created_at, room, proof_of_work)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, \
value->>9, value->>10
    FROM json_each(?);
INSERT OR IGNORE INTO users (id, username, password_hash, created_at)
    SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?);
";

const ORDER_INSERT: &str = "INSERT INTO orders (key, sale_id, seq, user_id, quantity, status, created_at, \
expires_at, updated_at, idempotency_key, payment_ref)";
const ORDER_UPSERT: &str = "ON CONFLICT (key) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
        expires_at = excluded.expires_at, payment_ref = excluded.payment_ref;
";

const ORDERS_FROM_JSON: &str = "\
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, \
value->>9, value->>10
    FROM json_each(?) WHERE true
";

const WAITLIST: &str = "\
INSERT INTO waitlist (sale_id, position, user_id, quantity, joined_at, status, order_seq)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?) WHERE true
    ON CONFLICT (sale_id, position) DO UPDATE SET status = excluded.status, order_seq = excluded.order_seq;
";

/// The auction statements: three more parameters, new auctions, auction states (at most one per
/// auction) and bids. Auctions are inserted before their states.
const AUCTIONS: &str = "\
INSERT OR IGNORE INTO auctions (id, title, seller_id, starting_price_cents, reserve_price_cents, buy_now_price_cents, \
starts_at, scheduled_end, soft_close_seconds, extend_seconds, max_extensions, ladder, payment_seconds, created_at, \
ends_at, extensions)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, \
value->>9, value->>10, value->>11, value->>12, value->>13, value->>7, 0
    FROM json_each(?);
UPDATE auctions SET ends_at = s.value->>1, extensions = s.value->>2, ended_at = s.value->>3, \
end_reason = s.value->>4, winner_id = s.value->>5, final_price_cents = s.value->>6
    FROM json_each(?) AS s WHERE auctions.id = s.value->>0;
INSERT OR IGNORE INTO bids (auction_id, seq, user_id, max_amount_cents, placed_at, idempotency_key, status, \
price_after_cents, leader_after)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8
    FROM json_each(?);
";

/// The optional statements of a batch's transaction: each one runs only when the batch has rows
/// for it, since every statement of a multi-statement query is one more step on SQLite's thread
/// and one more result handed back to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// New sales and new users (two statements).
    pub sales_and_users: bool,
    /// Orders in the `VALUES` slots.
    pub orders: bool,
    /// Orders beyond the largest `VALUES` list, as JSON.
    pub more_orders: bool,
    pub waitlist: bool,
    /// New auctions, auction states and bids (three statements).
    pub auctions: bool,
}

const SHAPES: usize = 1 << 5;

impl Shape {
    fn index(self) -> usize {
        [self.sales_and_users, self.orders, self.more_orders, self.waitlist, self.auctions]
            .iter()
            .enumerate()
            .map(|(bit, &on)| usize::from(on) << bit)
            .sum()
    }
}

/// The transaction for a batch of this shape with `ORDER_SLOTS[size]` order slots. Parameters in
/// order, each group only when its statement is in: sales (JSON) and users (JSON), the order
/// slots (11 each), the remaining orders (JSON), waitlist entries (JSON), then auctions, their
/// states and bids (JSON each). Orders and waitlist entries are upserts: their latest state
/// wins. Anonymous `?` only: in a multi-statement query the driver hands arguments out in
/// order, and numbered `?N` placeholders would be counted against that order. Each text is
/// built once, when a batch of its shape first comes, and stays prepared.
pub(crate) fn write_sql(size: usize, shape: Shape) -> &'static str {
    static SQL: [[OnceLock<String>; SHAPES]; ORDER_SLOTS.len()] =
        [const { [const { OnceLock::new() }; SHAPES] }; ORDER_SLOTS.len()];
    let size = size.min(ORDER_SLOTS.len() - 1);
    SQL[size][shape.index()].get_or_init(|| build_sql(ORDER_SLOTS[size], shape))
}

fn build_sql(slots: usize, shape: Shape) -> String {
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    if shape.sales_and_users {
        sql.push_str(SALES_AND_USERS);
    }
    if shape.orders {
        let row = format!("({})", ["?"; ORDER_COLUMNS].join(","));
        let rows = vec![row; slots].join(",");
        // Unused slots are all NULL; `column1` is the key, never NULL in a real row.
        sql.push_str(&format!(
            "{ORDER_INSERT}\n    SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT NULL\n    {ORDER_UPSERT}"
        ));
    }
    if shape.more_orders {
        sql.push_str(&format!("{ORDER_INSERT}\n{ORDERS_FROM_JSON}    {ORDER_UPSERT}"));
    }
    if shape.waitlist {
        sql.push_str(WAITLIST);
    }
    if shape.auctions {
        sql.push_str(AUCTIONS);
    }
    sql.push_str("COMMIT;");
    sql
}

type SaleRow<'a> = (&'a str, &'a str, u32, i64, i64, Option<i64>, u32, u32, i64, Option<String>, bool);
type UserRow<'a> = (&'a str, &'a str, &'a str, i64);
pub(crate) type OrderRow<'a> =
    (u64, &'a str, u32, &'a str, u32, &'a str, i64, i64, i64, Option<&'a str>, Option<&'a str>);
type WaitlistRow<'a> = (&'a str, u32, &'a str, u32, i64, &'a str, Option<u32>);

/// The parameters of `write_sql`.
pub(crate) struct Rows<'a> {
    /// New sales and new users (JSON each), when there is either.
    pub sales_and_users: Option<(String, String)>,
    /// Orders in their latest state, each once.
    pub orders: Vec<OrderRow<'a>>,
    pub waitlist: Option<String>,
    pub auctions: Option<AuctionRows>,
}

pub(crate) struct AuctionRows {
    pub auctions: String,
    pub states: String,
    pub bids: String,
}

impl<'a> Rows<'a> {
    pub(crate) fn of(records: &'a [Record]) -> Result<Self, serde_json::Error> {
        let mut sales: Vec<SaleRow> = Vec::new();
        let mut users: Vec<UserRow> = Vec::new();
        let mut waitlist: Vec<WaitlistRow> = Vec::new();
        for record in records {
            match record {
                Record::Sale { id, config } => sales.push((
                    id,
                    &config.name,
                    config.stock,
                    config.price_cents,
                    config.starts_at.0,
                    config.ends_at.map(|t| t.0),
                    config.per_user_limit,
                    config.hold_seconds,
                    config.created_at.0,
                    config.room.as_ref().map(crate::rooms::settings_to_json),
                    config.proof_of_work,
                )),
                Record::User(user) => users.push((&user.id, &user.username, &user.password_hash, user.created_at.0)),
                Record::Waitlist { sale_id, entry } => {
                    let (status, order_seq) = match entry.status {
                        WaitlistStatus::Waiting => ("waiting", None),
                        WaitlistStatus::Granted(seq) => ("granted", Some(seq)),
                        WaitlistStatus::Dropped => ("dropped", None),
                    };
                    let user = entry.user.as_str();
                    waitlist.push((
                        sale_id,
                        entry.position,
                        user,
                        entry.quantity,
                        entry.joined_at.0,
                        status,
                        order_seq,
                    ));
                }
                Record::Order { .. }
                | Record::Probe { .. }
                | Record::Auction { .. }
                | Record::AuctionState { .. }
                | Record::Bid { .. } => {}
            }
        }
        let sales_and_users = if sales.is_empty() && users.is_empty() {
            None
        } else {
            Some((serde_json::to_string(&sales)?, serde_json::to_string(&users)?))
        };
        let waitlist = if waitlist.is_empty() { None } else { Some(serde_json::to_string(&waitlist)?) };
        Ok(Self { sales_and_users, orders: latest_orders(records), waitlist, auctions: auction_rows(records)? })
    }

    /// The statement for this batch with every parameter bound.
    pub(crate) fn query(self) -> Result<Query<'a, Sqlite, SqliteArguments<'a>>, sqlx::Error> {
        let encode = |error: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Encode(error);
        let size = ORDER_SLOTS.iter().position(|&slots| self.orders.len() <= slots).unwrap_or(ORDER_SLOTS.len() - 1);
        let slots = ORDER_SLOTS[size];
        let bound = self.orders.len().min(slots);
        let shape = Shape {
            sales_and_users: self.sales_and_users.is_some(),
            orders: bound > 0,
            more_orders: self.orders.len() > bound,
            waitlist: self.waitlist.is_some(),
            auctions: self.auctions.is_some(),
        };
        let mut query = sqlx::query(write_sql(size, shape));
        if let Some((sales, users)) = self.sales_and_users {
            query = query.bind(sales).bind(users);
        }
        for row in &self.orders[..bound] {
            let &(
                key,
                sale_id,
                seq,
                user,
                quantity,
                status,
                created_at,
                expires_at,
                updated_at,
                idempotency_key,
                payment_ref,
            ) = row;
            let key = i64::try_from(key).map_err(|error| encode(Box::new(error)))?;
            query = query
                .bind(key)
                .bind(sale_id)
                .bind(seq)
                .bind(user)
                .bind(quantity)
                .bind(status)
                .bind(created_at)
                .bind(expires_at)
                .bind(updated_at)
                .bind(idempotency_key)
                .bind(payment_ref);
        }
        if shape.orders {
            for _ in bound * ORDER_COLUMNS..slots * ORDER_COLUMNS {
                query = query.bind(None::<i64>);
            }
        }
        if shape.more_orders {
            let rest = serde_json::to_string(&self.orders[bound..]).map_err(|error| encode(Box::new(error)))?;
            query = query.bind(rest);
        }
        if let Some(waitlist) = self.waitlist {
            query = query.bind(waitlist);
        }
        if let Some(auctions) = self.auctions {
            query = query.bind(auctions.auctions).bind(auctions.states).bind(auctions.bids);
        }
        Ok(query)
    }
}

/// Each order once, in its latest state, so the upsert never meets the same key twice.
fn latest_orders(records: &[Record]) -> Vec<OrderRow<'_>> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for record in records.iter().rev() {
        let Record::Order { sale_id, key, order } = record else { continue };
        if seen.insert(*key) {
            rows.push(order_row(*key, sale_id, order));
        }
    }
    rows
}

fn order_row<'a>(key: u64, sale_id: &'a str, order: &'a Order) -> OrderRow<'a> {
    (
        key,
        sale_id,
        order.seq,
        order.user.as_str(),
        order.quantity,
        order.status.as_str(),
        order.created_at.0,
        order.expires_at.0,
        order.updated_at.0,
        order.idempotency_key.as_ref().map(IdempotencyKey::as_str),
        order.payment_ref.as_deref(),
    )
}

type AuctionRow<'a> =
    (&'a str, &'a str, &'a str, i64, Option<i64>, Option<i64>, i64, i64, u32, u32, Option<u32>, String, u32, i64);
type AuctionStateRow<'a> = (&'a str, i64, u32, Option<i64>, Option<&'static str>, Option<&'a str>, Option<i64>);
type BidRow<'a> = (&'a str, u32, &'a str, i64, i64, Option<&'a str>, &'static str, i64, &'a str);

/// The auction parameters, or None when the batch has no auction record.
fn auction_rows(records: &[Record]) -> Result<Option<AuctionRows>, serde_json::Error> {
    let mut auctions: Vec<AuctionRow> = Vec::new();
    let mut bids: Vec<BidRow> = Vec::new();
    for record in records {
        match record {
            Record::Auction { id, config, payment_seconds } => auctions.push((
                id,
                &config.title,
                &config.seller_id,
                config.starting_price_cents,
                config.reserve_price_cents,
                config.buy_now_price_cents,
                config.starts_at.0,
                config.ends_at.0,
                config.soft_close_seconds,
                config.extend_seconds,
                config.max_extensions,
                serde_json::to_string(config.ladder.steps())?,
                *payment_seconds,
                config.created_at.0,
            )),
            Record::Bid { auction_id, bid } => bids.push((
                auction_id,
                bid.seq,
                bid.user.as_str(),
                bid.max_amount_cents,
                bid.placed_at.0,
                bid.idempotency_key.as_ref().map(IdempotencyKey::as_str),
                bid.status.as_str(),
                bid.price_after_cents,
                bid.leader_after.as_str(),
            )),
            Record::Sale { .. }
            | Record::Order { .. }
            | Record::Waitlist { .. }
            | Record::User(_)
            | Record::AuctionState { .. }
            | Record::Probe { .. } => {}
        }
    }
    let states = latest_auction_states(records);
    if auctions.is_empty() && states.is_empty() && bids.is_empty() {
        return Ok(None);
    }
    Ok(Some(AuctionRows {
        auctions: serde_json::to_string(&auctions)?,
        states: serde_json::to_string(&states)?,
        bids: serde_json::to_string(&bids)?,
    }))
}

/// Each auction's state once, its latest: an UPDATE meeting one row twice picks either.
fn latest_auction_states(records: &[Record]) -> Vec<AuctionStateRow<'_>> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for record in records.iter().rev() {
        let Record::AuctionState { id, ends_at, extensions, outcome } = record else { continue };
        if !seen.insert(id) {
            continue;
        }
        let outcome = outcome.as_ref();
        rows.push((
            &**id,
            ends_at.0,
            *extensions,
            outcome.map(|o| o.ended_at.0),
            outcome.map(|o| o.reason.as_str()),
            outcome.and_then(|o| o.winner.as_ref()).map(UserId::as_str),
            outcome.map(|o| o.price_cents),
        ));
    }
    rows
}
