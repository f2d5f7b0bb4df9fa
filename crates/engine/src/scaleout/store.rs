//! Postgres, the system of record: sales, orders, waitlist entries, auctions and bids arrive
//! from the streams through the order sink; accounts are written directly (rare, not on the hot
//! path).

mod auctions;

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use stampede_core::Timestamp;

use super::records::{AuctionRow, BidRecord, Event, OrderRecord, SaleRecord, WaitlistRecord};
use crate::backend::{NewUser, UserRecord};

/// Units by order status, and orders of every status, as the store has them for one sale.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub held: i64,
    pub paid: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub orders: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and brings the schema up to date (migrations take a lock, so replicas starting
    /// together do not race).
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(5)).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes a batch of stream entries in one transaction. Idempotent: sales are inserted once,
    /// orders and waitlist entries only ever replaced by a newer version of themselves, so an
    /// entry written twice (a retry, or two replicas racing on a claimed entry) changes nothing.
    /// Rows go in key order, so concurrent writers (sinks of several replicas, a ledger drain)
    /// lock shared rows in the same order and cannot deadlock.
    pub async fn write(&self, events: &[Event]) -> Result<(), sqlx::Error> {
        let mut sales: Vec<&SaleRecord> = Vec::new();
        let mut orders: BTreeMap<(&str, u32), &OrderRecord> = BTreeMap::new();
        let mut entries: BTreeMap<(&str, u32), &WaitlistRecord> = BTreeMap::new();
        let mut auctions: BTreeMap<&str, &AuctionRow> = BTreeMap::new();
        let mut bids: BTreeMap<(&str, u32), &BidRecord> = BTreeMap::new();
        for event in events {
            match event {
                Event::Sale(sale) => sales.push(sale),
                Event::Order(sale_id, order) => {
                    let slot = orders.entry((sale_id.as_str(), order.seq)).or_insert(order);
                    if slot.v < order.v {
                        *slot = order;
                    }
                }
                Event::Waitlist(sale_id, entry) => {
                    let slot = entries.entry((sale_id.as_str(), entry.pos)).or_insert(entry);
                    if slot.v < entry.v {
                        *slot = entry;
                    }
                }
                Event::Auction(row) => {
                    let slot = auctions.entry(row.cfg.id.as_str()).or_insert(row);
                    if slot.v < row.v {
                        *slot = row;
                    }
                }
                Event::Bid(bid) => {
                    bids.insert((bid.a.as_str(), bid.seq), bid);
                }
            }
        }
        sales.sort_by(|a, b| a.id.cmp(&b.id));
        sales.dedup_by(|a, b| a.id == b.id);
        let mut tx = self.pool.begin().await?;
        for sale in sales {
            sqlx::query(
                "INSERT INTO sales (id, name, stock, price_cents, per_user_limit, hold_seconds, starts_at, ends_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&sale.id)
            .bind(sale.name.as_bytes())
            .bind(sale.stock as i32)
            .bind(sale.price)
            .bind(sale.limit as i32)
            .bind((sale.hold_ms / 1000) as i32)
            .bind(sale.starts)
            .bind((sale.ends >= 0).then_some(sale.ends))
            .bind(sale.created)
            .execute(&mut *tx)
            .await?;
        }
        if !orders.is_empty() {
            write_orders(&mut tx, orders).await?;
        }
        if !entries.is_empty() {
            write_waitlist(&mut tx, entries).await?;
        }
        if !auctions.is_empty() {
            auctions::write_auctions(&mut tx, auctions).await?;
        }
        if !bids.is_empty() {
            auctions::write_bids(&mut tx, bids).await?;
        }
        tx.commit().await
    }

    pub async fn totals(&self, sale_id: &str) -> Result<Totals, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT status, COALESCE(SUM(quantity), 0)::BIGINT AS units, COUNT(*) AS orders \
             FROM orders WHERE sale_id = $1 GROUP BY status",
        )
        .bind(sale_id)
        .fetch_all(&self.pool)
        .await?;
        let mut totals = Totals::default();
        for row in rows {
            let units: i64 = row.try_get("units")?;
            totals.orders += row.try_get::<i64, _>("orders")?;
            match row.try_get::<String, _>("status")?.as_str() {
                "held" => totals.held += units,
                "paid" => totals.paid += units,
                "cancelled" => totals.cancelled += units,
                _ => totals.expired += units,
            }
        }
        Ok(totals)
    }

    /// `None` when the username is taken.
    pub async fn create_user(
        &self,
        id: String,
        user: NewUser,
        now: Timestamp,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(&id)
        .bind(user.username.as_bytes())
        .bind(&user.password_hash)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok((inserted.rows_affected() == 1).then_some(UserRecord {
            id,
            username: user.username,
            password_hash: user.password_hash,
            created_at: now,
        }))
    }

    pub async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, sqlx::Error> {
        let row = sqlx::query("SELECT id, password_hash, created_at FROM users WHERE username = $1")
            .bind(username.as_bytes())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(UserRecord {
                id: row.try_get("id")?,
                username: username.to_owned(),
                password_hash: row.try_get("password_hash")?,
                created_at: Timestamp(row.try_get("created_at")?),
            })
        })
        .transpose()
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

async fn write_orders(tx: &mut Tx<'_>, orders: BTreeMap<(&str, u32), &OrderRecord>) -> Result<(), sqlx::Error> {
    let mut sale_ids = Vec::with_capacity(orders.len());
    let (mut seqs, mut users, mut quantities, mut statuses) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut created, mut expires, mut updated, mut keys, mut refs, mut versions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((sale_id, seq), order) in orders {
        sale_ids.push(sale_id.to_owned());
        seqs.push(seq as i32);
        users.push(order.u.as_bytes().to_vec());
        quantities.push(order.q as i32);
        statuses.push(order.s.clone());
        created.push(order.c);
        expires.push(order.e);
        updated.push(order.up);
        keys.push(order.k.as_ref().map(|key| key.as_bytes().to_vec()));
        refs.push(order.p.as_ref().map(|payment_ref| payment_ref.as_bytes().to_vec()));
        versions.push(order.v);
    }
    sqlx::query(
        "INSERT INTO orders (sale_id, seq, user_id, quantity, status, created_at, expires_at, updated_at, \
         idempotency_key, payment_ref, version) \
         SELECT * FROM UNNEST($1::TEXT[], $2::INT4[], $3::BYTEA[], $4::INT4[], $5::TEXT[], $6::INT8[], $7::INT8[], \
         $8::INT8[], $9::BYTEA[], $10::BYTEA[], $11::INT4[]) \
         ON CONFLICT (sale_id, seq) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, \
         payment_ref = EXCLUDED.payment_ref, version = EXCLUDED.version WHERE orders.version < EXCLUDED.version",
    )
    .bind(sale_ids)
    .bind(seqs)
    .bind(users)
    .bind(quantities)
    .bind(statuses)
    .bind(created)
    .bind(expires)
    .bind(updated)
    .bind(keys)
    .bind(refs)
    .bind(versions)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_waitlist(tx: &mut Tx<'_>, entries: BTreeMap<(&str, u32), &WaitlistRecord>) -> Result<(), sqlx::Error> {
    let (mut sale_ids, mut positions, mut users, mut quantities) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut joined, mut statuses, mut granted, mut versions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((sale_id, position), entry) in entries {
        sale_ids.push(sale_id.to_owned());
        positions.push(position as i32);
        users.push(entry.u.as_bytes().to_vec());
        quantities.push(entry.q as i32);
        joined.push(entry.j);
        statuses.push(entry.status());
        granted.push(entry.g.map(|seq| seq as i32));
        versions.push(entry.v);
    }
    sqlx::query(
        "INSERT INTO waitlist (sale_id, position, user_id, quantity, joined_at, status, granted_seq, version) \
         SELECT * FROM UNNEST($1::TEXT[], $2::INT4[], $3::BYTEA[], $4::INT4[], $5::INT8[], $6::TEXT[], $7::INT4[], \
         $8::INT4[]) \
         ON CONFLICT (sale_id, position) DO UPDATE SET status = EXCLUDED.status, granted_seq = EXCLUDED.granted_seq, \
         version = EXCLUDED.version WHERE waitlist.version < EXCLUDED.version",
    )
    .bind(sale_ids)
    .bind(positions)
    .bind(users)
    .bind(quantities)
    .bind(joined)
    .bind(statuses)
    .bind(granted)
    .bind(versions)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
