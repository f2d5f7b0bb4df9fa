//! One journal batch as SQL parameters: a JSON array of rows per table, written by one fixed
//! multi-statement transaction.

use std::collections::HashSet;

use stampede_core::{IdempotencyKey, Order, WaitlistStatus};

use super::journal::Record;

/// Parameters in order: sales, users, orders, waitlist entries, each a JSON array of rows whose
/// items are read by index. Orders and waitlist entries are upserts: their latest state wins.
/// Anonymous `?` only: in a multi-statement query the driver hands arguments out in order, and
/// numbered `?N` placeholders would be counted against that order.
pub(crate) const WRITE_SQL: &str = "\
BEGIN IMMEDIATE;
INSERT OR IGNORE INTO sales (id, name, stock, price_cents, starts_at, ends_at, per_user_limit, hold_seconds, \
created_at)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8
    FROM json_each(?);
INSERT OR IGNORE INTO users (id, username, password_hash, created_at)
    SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?);
INSERT INTO orders (key, sale_id, seq, user_id, quantity, status, created_at, expires_at, updated_at, \
idempotency_key, payment_ref)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, \
value->>9, value->>10
    FROM json_each(?) WHERE true
    ON CONFLICT (key) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
        expires_at = excluded.expires_at, payment_ref = excluded.payment_ref;
INSERT INTO waitlist (sale_id, position, user_id, quantity, joined_at, status, order_seq)
    SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?) WHERE true
    ON CONFLICT (sale_id, position) DO UPDATE SET status = excluded.status, order_seq = excluded.order_seq;
COMMIT;";

type SaleRow<'a> = (&'a str, &'a str, u32, i64, i64, Option<i64>, u32, u32, i64);
type UserRow<'a> = (&'a str, &'a str, &'a str, i64);
type OrderRow<'a> = (u64, &'a str, u32, &'a str, u32, &'a str, i64, i64, i64, Option<&'a str>, Option<&'a str>);
type WaitlistRow<'a> = (&'a str, u32, &'a str, u32, i64, &'a str, Option<u32>);

/// The four JSON parameters of `WRITE_SQL`.
pub(crate) struct Rows {
    pub sales: String,
    pub users: String,
    pub orders: String,
    pub waitlist: String,
}

impl Rows {
    pub(crate) fn of(records: &[Record]) -> Result<Self, serde_json::Error> {
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
                Record::Order { .. } | Record::Probe { .. } => {}
            }
        }
        Ok(Self {
            sales: serde_json::to_string(&sales)?,
            users: serde_json::to_string(&users)?,
            orders: serde_json::to_string(&latest_orders(records))?,
            waitlist: serde_json::to_string(&waitlist)?,
        })
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
