//! The SQLite side of the embedded backend: schema, batch writes and the start-up load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use stampede_core::{
    AuctionConfig, Bid, BidStatus, EndReason, IdempotencyKey, Ladder, Order, OrderStatus, Outcome, SaleConfig,
    Timestamp, UserId, WaitlistEntry, WaitlistStatus,
};

use super::batch;
use super::journal::Record;
use crate::backend::UserRecord;
use crate::rooms;

/// Everything stored, grouped by sale, as read at start-up.
#[derive(Default)]
pub(crate) struct Loaded {
    pub sales: Vec<StoredSale>,
    pub users: Vec<UserRecord>,
    /// The row key the next new order gets.
    pub next_order_key: u64,
    pub auctions: Vec<StoredAuction>,
}

pub(crate) struct StoredAuction {
    pub id: String,
    pub config: AuctionConfig,
    pub payment_seconds: u32,
    pub ends_at: Timestamp,
    pub extensions: u32,
    pub outcome: Option<Outcome>,
    /// In seq order.
    pub bids: Vec<Bid>,
}

pub(crate) struct StoredSale {
    pub id: String,
    pub config: SaleConfig,
    pub orders: Vec<Order>,
    /// Row key of each order, parallel to `orders`.
    pub order_keys: Vec<u64>,
    pub waitlist: Vec<WaitlistEntry>,
}

/// Totals by order status for one sale, read from the store.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StoreTotals {
    pub held: i64,
    pub paid: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub orders: i64,
}

/// Connects and brings the schema up to date.
pub(crate) async fn open(path: &Path, synchronous_full: bool) -> Result<SqliteConnection, sqlx::Error> {
    let mut conn = connect(path, synchronous_full).await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
    Ok(conn)
}

async fn connect(path: &Path, synchronous_full: bool) -> Result<SqliteConnection, sqlx::Error> {
    let synchronous = if synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5));
    SqliteConnection::connect_with(&options).await
}

/// The writer's connection: reopened after any failed write, so a broken connection (or a
/// statement cache left mid-way by an error) heals on the next attempt.
pub(crate) struct Store {
    path: PathBuf,
    synchronous_full: bool,
    conn: Option<SqliteConnection>,
}

/// A commit takes milliseconds; one that takes this long is treated as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    pub(crate) fn new(path: PathBuf, synchronous_full: bool, conn: SqliteConnection) -> Self {
        Self { path, synchronous_full, conn: Some(conn) }
    }

    /// The open connection, taken out: it goes back only after a successful call.
    async fn take_connection(&mut self) -> Result<SqliteConnection, sqlx::Error> {
        match self.conn.take() {
            Some(conn) => Ok(conn),
            None => connect(&self.path, self.synchronous_full).await,
        }
    }

    pub(crate) async fn write(&mut self, records: &[Record]) -> Result<(), sqlx::Error> {
        let mut conn = self.take_connection().await?;
        let written = tokio::time::timeout(WRITE_TIMEOUT, write(&mut conn, records)).await;
        let written = written.unwrap_or(Err(sqlx::Error::PoolTimedOut));
        if written.is_ok() {
            self.conn = Some(conn);
        }
        written
    }

    /// A second connection inside a read transaction that sees exactly what is committed now.
    /// The totals are read there, so the scan does not hold up the commits after it.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot, sqlx::Error> {
        let mut conn = connect(&self.path, self.synchronous_full).await?;
        sqlx::query("BEGIN").execute(&mut conn).await?;
        // A WAL read transaction takes its snapshot at its first read.
        sqlx::query("SELECT count(*) FROM sales").fetch_one(&mut conn).await?;
        Ok(Snapshot { conn })
    }

    pub(crate) async fn close(self) {
        if let Some(conn) = self.conn {
            if let Err(error) = conn.close().await {
                tracing::warn!(%error, "closing the journal database failed");
            }
        }
    }
}

pub(crate) struct Snapshot {
    conn: SqliteConnection,
}

impl Snapshot {
    /// The sale's totals by order status, as of the snapshot.
    pub(crate) async fn totals(mut self, sale_id: &str) -> Result<StoreTotals, sqlx::Error> {
        let totals = probe(&mut self.conn, sale_id).await;
        let _ = self.conn.close().await;
        totals
    }
}

/// Writes one batch as one transaction (one fsync) in one statement round trip, whose text
/// depends only on the batch's shape and so stays prepared (see `batch`). Each
/// hop to the database thread costs a scheduler wake-up, which on a busy machine is worth far
/// more than parsing the JSON.
async fn write(conn: &mut SqliteConnection, records: &[Record]) -> Result<(), sqlx::Error> {
    let query = batch::Rows::of(records).map_err(|e| sqlx::Error::Encode(Box::new(e)))?.query()?;
    let written = query.execute(&mut *conn).await;
    if written.is_err() {
        // A statement failed inside the explicit transaction: leave no transaction open.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    written.map(drop)
}

async fn probe(conn: &mut SqliteConnection, sale_id: &str) -> Result<StoreTotals, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT status, COALESCE(SUM(quantity), 0), COUNT(*) FROM orders WHERE sale_id = ? GROUP BY status",
    )
    .bind(sale_id)
    .fetch_all(conn)
    .await?;
    let mut totals = StoreTotals::default();
    for row in rows {
        let status: String = row.try_get(0)?;
        let units: i64 = row.try_get(1)?;
        totals.orders += row.try_get::<i64, _>(2)?;
        match OrderStatus::parse(&status) {
            Some(OrderStatus::Held) => totals.held += units,
            Some(OrderStatus::Paid) => totals.paid += units,
            Some(OrderStatus::Cancelled) => totals.cancelled += units,
            Some(OrderStatus::Expired) => totals.expired += units,
            None => return Err(corrupt(format!("unknown order status {status:?}"))),
        }
    }
    Ok(totals)
}

fn corrupt(message: String) -> sqlx::Error {
    sqlx::Error::Protocol(format!("stored data is corrupt: {message}"))
}

pub(crate) async fn load(conn: &mut SqliteConnection) -> Result<Loaded, sqlx::Error> {
    let mut sales = BTreeMap::new();
    for row in sqlx::query(
        "SELECT id, name, stock, price_cents, starts_at, ends_at, per_user_limit, hold_seconds, created_at, room, \
         proof_of_work FROM sales",
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let id: String = row.try_get(0)?;
        let config = SaleConfig {
            name: row.try_get(1)?,
            stock: row.try_get(2)?,
            price_cents: row.try_get(3)?,
            starts_at: Timestamp(row.try_get(4)?),
            ends_at: row.try_get::<Option<i64>, _>(5)?.map(Timestamp),
            per_user_limit: row.try_get(6)?,
            hold_seconds: row.try_get(7)?,
            created_at: Timestamp(row.try_get(8)?),
            room: match row.try_get::<Option<String>, _>(9)? {
                Some(text) => Some(rooms::settings_from_json(&text).ok_or_else(|| corrupt(format!("room {text:?}")))?),
                None => None,
            },
            proof_of_work: row.try_get(10)?,
        };
        sales.insert(
            id.clone(),
            StoredSale { id, config, orders: Vec::new(), order_keys: Vec::new(), waitlist: Vec::new() },
        );
    }
    let next_order_key = load_orders(conn, &mut sales).await?;
    load_waitlist(conn, &mut sales).await?;
    let users = load_users(conn).await?;
    let auctions = load_auctions(conn).await?;
    Ok(Loaded { sales: sales.into_values().collect(), users, next_order_key, auctions })
}

async fn load_orders(
    conn: &mut SqliteConnection,
    sales: &mut BTreeMap<String, StoredSale>,
) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT key, sale_id, seq, user_id, quantity, status, created_at, expires_at, updated_at, idempotency_key, \
         payment_ref FROM orders ORDER BY key",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut next_key = 1;
    for row in rows {
        let key: i64 = row.try_get(0)?;
        let key = u64::try_from(key).map_err(|_| corrupt(format!("order key {key}")))?;
        next_key = next_key.max(key + 1);
        let sale_id: String = row.try_get(1)?;
        let order = order_of(&row)?;
        let sale = sales.get_mut(&sale_id).ok_or_else(|| corrupt(format!("order of unknown sale {sale_id}")))?;
        sale.orders.push(order);
        sale.order_keys.push(key);
    }
    for sale in sales.values_mut() {
        sort_by_seq(sale);
    }
    Ok(next_key)
}

/// Keys follow creation order, so this is nearly always sorted already.
fn sort_by_seq(sale: &mut StoredSale) {
    if sale.orders.is_sorted_by_key(|order| order.seq) {
        return;
    }
    let mut pairs: Vec<_> = sale.orders.drain(..).zip(sale.order_keys.drain(..)).collect();
    pairs.sort_by_key(|(order, _)| order.seq);
    (sale.orders, sale.order_keys) = pairs.into_iter().unzip();
}

fn order_of(row: &sqlx::sqlite::SqliteRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get(5)?;
    let user: String = row.try_get(3)?;
    let key: Option<String> = row.try_get(9)?;
    Ok(Order {
        seq: row.try_get(2)?,
        user: UserId::new(&user).map_err(|e| corrupt(e.to_string()))?,
        quantity: row.try_get(4)?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt(format!("order status {status:?}")))?,
        created_at: Timestamp(row.try_get(6)?),
        expires_at: Timestamp(row.try_get(7)?),
        updated_at: Timestamp(row.try_get(8)?),
        idempotency_key: key.map(|k| IdempotencyKey::new(&k)).transpose().map_err(|e| corrupt(e.to_string()))?,
        payment_ref: row.try_get(10)?,
    })
}

async fn load_waitlist(
    conn: &mut SqliteConnection,
    sales: &mut BTreeMap<String, StoredSale>,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sale_id, position, user_id, quantity, joined_at, status, order_seq FROM waitlist \
         ORDER BY sale_id, position",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let sale_id: String = row.try_get(0)?;
        let user: String = row.try_get(2)?;
        let status: String = row.try_get(5)?;
        let order_seq: Option<u32> = row.try_get(6)?;
        let status = match (status.as_str(), order_seq) {
            ("waiting", _) => WaitlistStatus::Waiting,
            ("granted", Some(seq)) => WaitlistStatus::Granted(seq),
            ("dropped", _) => WaitlistStatus::Dropped,
            _ => return Err(corrupt(format!("waitlist status {status:?}"))),
        };
        let entry = WaitlistEntry {
            position: row.try_get(1)?,
            user: UserId::new(&user).map_err(|e| corrupt(e.to_string()))?,
            quantity: row.try_get(3)?,
            joined_at: Timestamp(row.try_get(4)?),
            status,
        };
        let sale = sales.get_mut(&sale_id).ok_or_else(|| corrupt(format!("waitlist of unknown sale {sale_id}")))?;
        sale.waitlist.push(entry);
    }
    Ok(())
}

async fn load_users(conn: &mut SqliteConnection) -> Result<Vec<UserRecord>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, username, password_hash, created_at FROM users").fetch_all(conn).await?;
    rows.into_iter()
        .map(|row| {
            Ok(UserRecord {
                id: row.try_get(0)?,
                username: row.try_get(1)?,
                password_hash: row.try_get(2)?,
                created_at: Timestamp(row.try_get(3)?),
            })
        })
        .collect()
}

async fn load_auctions(conn: &mut SqliteConnection) -> Result<Vec<StoredAuction>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, title, seller_id, starting_price_cents, reserve_price_cents, buy_now_price_cents, starts_at, \
         scheduled_end, soft_close_seconds, extend_seconds, max_extensions, ladder, payment_seconds, created_at, \
         ends_at, extensions, ended_at, end_reason, winner_id, final_price_cents FROM auctions ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut auctions = BTreeMap::new();
    for row in rows {
        let auction = auction_of(&row)?;
        auctions.insert(auction.id.clone(), auction);
    }
    let bids = sqlx::query(
        "SELECT auction_id, seq, user_id, max_amount_cents, placed_at, idempotency_key, status, price_after_cents, \
         leader_after FROM bids ORDER BY auction_id, seq",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in bids {
        let auction_id: String = row.try_get(0)?;
        let auction =
            auctions.get_mut(&auction_id).ok_or_else(|| corrupt(format!("bid on unknown auction {auction_id}")))?;
        auction.bids.push(bid_of(&row)?);
    }
    Ok(auctions.into_values().collect())
}

fn user_id(text: &str) -> Result<UserId, sqlx::Error> {
    UserId::new(text).map_err(|e| corrupt(e.to_string()))
}

fn auction_of(row: &sqlx::sqlite::SqliteRow) -> Result<StoredAuction, sqlx::Error> {
    let ladder: String = row.try_get(11)?;
    let steps: Vec<(i64, i64)> = serde_json::from_str(&ladder).map_err(|e| corrupt(e.to_string()))?;
    let config = AuctionConfig {
        title: row.try_get(1)?,
        seller_id: row.try_get(2)?,
        starting_price_cents: row.try_get(3)?,
        reserve_price_cents: row.try_get(4)?,
        buy_now_price_cents: row.try_get(5)?,
        starts_at: Timestamp(row.try_get(6)?),
        ends_at: Timestamp(row.try_get(7)?),
        soft_close_seconds: row.try_get(8)?,
        extend_seconds: row.try_get(9)?,
        max_extensions: row.try_get(10)?,
        ladder: Ladder::new(steps).map_err(|e| corrupt(e.to_string()))?,
        created_at: Timestamp(row.try_get(13)?),
    };
    let ended_at: Option<i64> = row.try_get(16)?;
    let reason: Option<String> = row.try_get(17)?;
    let winner: Option<String> = row.try_get(18)?;
    let outcome = match (ended_at, reason) {
        (Some(ended_at), Some(reason)) => Some(Outcome {
            ended_at: Timestamp(ended_at),
            reason: EndReason::parse(&reason).ok_or_else(|| corrupt(format!("end reason {reason:?}")))?,
            winner: winner.as_deref().map(user_id).transpose()?,
            price_cents: row.try_get::<Option<i64>, _>(19)?.unwrap_or(config.starting_price_cents),
        }),
        _ => None,
    };
    Ok(StoredAuction {
        id: row.try_get(0)?,
        config,
        payment_seconds: row.try_get(12)?,
        ends_at: Timestamp(row.try_get(14)?),
        extensions: row.try_get(15)?,
        outcome,
        bids: Vec::new(),
    })
}

fn bid_of(row: &sqlx::sqlite::SqliteRow) -> Result<Bid, sqlx::Error> {
    let user: String = row.try_get(2)?;
    let key: Option<String> = row.try_get(5)?;
    let status: String = row.try_get(6)?;
    let leader: String = row.try_get(8)?;
    Ok(Bid {
        seq: row.try_get(1)?,
        user: user_id(&user)?,
        max_amount_cents: row.try_get(3)?,
        placed_at: Timestamp(row.try_get(4)?),
        idempotency_key: key.map(|k| IdempotencyKey::new(&k)).transpose().map_err(|e| corrupt(e.to_string()))?,
        status: BidStatus::parse(&status).ok_or_else(|| corrupt(format!("bid status {status:?}")))?,
        price_after_cents: row.try_get(7)?,
        leader_after: user_id(&leader)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sale_config() -> SaleConfig {
        SaleConfig {
            name: "batch sizes".to_owned(),
            stock: 10_000,
            price_cents: 100,
            starts_at: Timestamp(0),
            ends_at: None,
            per_user_limit: 1,
            hold_seconds: 60,
            created_at: Timestamp(0),
            room: None,
            proof_of_work: false,
        }
    }

    /// A store in `dir` holding one sale.
    async fn store_with_sale(dir: &Path, sale_id: &Arc<str>) -> Store {
        let path = dir.join("store.db");
        let conn = open(&path, false).await.expect("open");
        let mut store = Store::new(path, false, conn);
        store.write(&[Record::Sale { id: sale_id.clone(), config: sale_config() }]).await.expect("sale");
        store
    }

    /// What the store in `dir` holds once closed and opened again.
    async fn reopened(store: Store, dir: &Path) -> Loaded {
        store.close().await;
        let mut conn = open(&dir.join("store.db"), false).await.expect("reopen");
        load(&mut conn).await.expect("load")
    }

    fn order(seq: u32, status: OrderStatus, at: i64) -> Order {
        Order {
            seq,
            user: UserId::new(&format!("user-{seq}")).expect("user id"),
            quantity: 1 + seq % 3,
            status,
            created_at: Timestamp(1_000 + i64::from(seq)),
            expires_at: Timestamp(61_000 + i64::from(seq)),
            updated_at: Timestamp(at),
            idempotency_key: seq.is_multiple_of(2).then(|| IdempotencyKey::new(&format!("key-{seq}")).expect("key")),
            payment_ref: (status == OrderStatus::Paid).then(|| format!("pay-{seq}")),
        }
    }

    /// Batches of every size around the bound order slots (and past the largest, where the rest
    /// goes through JSON) store every order once, in its latest state, with every field intact.
    #[tokio::test]
    async fn batches_of_any_size_store_every_order_in_its_latest_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sale_id: Arc<str> = Arc::from("s_batches");
        let mut store = store_with_sale(dir.path(), &sale_id).await;

        let largest = *batch::ORDER_SLOTS.last().expect("slots");
        let mut sizes = vec![1];
        for slots in batch::ORDER_SLOTS {
            sizes.extend([slots - 1, slots, slots + 1]);
        }
        sizes.push(2 * largest + 5);
        let mut expected = Vec::new();
        let mut seq = 0;
        for size in sizes {
            let mut records = Vec::new();
            for _ in 0..size {
                let held = order(seq, OrderStatus::Held, 1_000);
                records.push(Record::Order { sale_id: sale_id.clone(), key: u64::from(seq), order: held.clone() });
                expected.push(held);
                seq += 1;
            }
            // The same order twice in one batch: the later state is the one stored.
            let paid = order(seq - 1, OrderStatus::Paid, 2_000);
            records.push(Record::Order { sale_id: sale_id.clone(), key: u64::from(seq - 1), order: paid.clone() });
            *expected.last_mut().expect("an order") = paid;
            store.write(&records).await.expect("batch");
        }
        let loaded = reopened(store, dir.path()).await;
        let sale = loaded.sales.iter().find(|sale| sale.id == *sale_id).expect("the sale");
        assert_eq!(sale.orders, expected);
        assert_eq!(sale.order_keys, (0..u64::from(seq)).collect::<Vec<_>>());
        assert_eq!(loaded.next_order_key, u64::from(seq));
    }

    /// Every mix of record kinds in one batch (each mix is a different transaction text, with
    /// only the statements it needs) is stored whole.
    #[tokio::test]
    async fn batches_of_every_shape_store_every_record() {
        use stampede_core::{AuctionConfig, Ladder, WaitlistEntry, WaitlistStatus};

        let dir = tempfile::tempdir().expect("temp dir");
        let home: Arc<str> = Arc::from("s_home");
        let mut store = store_with_sale(dir.path(), &home).await;

        let largest = *batch::ORDER_SLOTS.last().expect("slots");
        let (mut sales, mut users, mut orders, mut waitlist, mut auctions) = (1, 0, 0, 0, 0);
        let mut batches = 0;
        for with_sale_and_user in [false, true] {
            for order_count in [0, 3, largest + 2] {
                for with_waitlist in [false, true] {
                    for with_auction in [false, true] {
                        let mut records = Vec::new();
                        batches += 1;
                        if with_sale_and_user {
                            let id = Arc::from(format!("s_{batches}").as_str());
                            records.push(Record::Sale { id, config: sale_config() });
                            records.push(Record::User(UserRecord {
                                id: format!("u_{batches}"),
                                username: format!("name{batches}"),
                                password_hash: "hash".to_owned(),
                                created_at: Timestamp(5),
                            }));
                            sales += 1;
                            users += 1;
                        }
                        for _ in 0..order_count {
                            let key = orders;
                            let seq = u32::try_from(key).expect("seq");
                            records.push(Record::Order {
                                sale_id: home.clone(),
                                key,
                                order: order(seq, OrderStatus::Held, 9),
                            });
                            orders += 1;
                        }
                        if with_waitlist {
                            let entry = WaitlistEntry {
                                position: waitlist,
                                user: UserId::new(&format!("waiter-{waitlist}")).expect("user id"),
                                quantity: 1,
                                joined_at: Timestamp(7),
                                status: WaitlistStatus::Waiting,
                            };
                            records.push(Record::Waitlist { sale_id: home.clone(), entry });
                            waitlist += 1;
                        }
                        if with_auction {
                            let id: Arc<str> = Arc::from(format!("a_{batches}").as_str());
                            let config = AuctionConfig {
                                title: "lot".to_owned(),
                                seller_id: "seller".to_owned(),
                                starting_price_cents: 100,
                                reserve_price_cents: None,
                                buy_now_price_cents: None,
                                starts_at: Timestamp(0),
                                ends_at: Timestamp(60_000),
                                soft_close_seconds: 0,
                                extend_seconds: 0,
                                max_extensions: None,
                                ladder: Ladder::standard(),
                                created_at: Timestamp(0),
                            };
                            records.push(Record::Auction { id: id.clone(), config, payment_seconds: 60 });
                            records.push(Record::AuctionState {
                                id,
                                ends_at: Timestamp(90_000),
                                extensions: 1,
                                outcome: None,
                            });
                            auctions += 1;
                        }
                        store.write(&records).await.expect("batch");
                    }
                }
            }
        }
        let loaded = reopened(store, dir.path()).await;
        assert_eq!(loaded.sales.len(), sales);
        assert_eq!(loaded.users.len(), users);
        assert_eq!(loaded.auctions.len(), auctions);
        assert!(loaded.auctions.iter().all(|auction| auction.ends_at == Timestamp(90_000) && auction.extensions == 1));
        let home = loaded.sales.iter().find(|sale| sale.id == *home).expect("the home sale");
        assert_eq!(home.orders.len() as u64, orders);
        assert_eq!(home.waitlist.len() as u32, waitlist);
    }
}
