//! The SQLite side of the embedded backend: schema, batch writes and the start-up load.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use stampede_core::{IdempotencyKey, Order, OrderStatus, SaleConfig, Timestamp, UserId, WaitlistEntry, WaitlistStatus};

use super::journal::Record;
use crate::backend::UserRecord;

/// Everything stored, grouped by sale, as read at start-up.
#[derive(Default)]
pub(crate) struct Loaded {
    pub sales: Vec<StoredSale>,
    pub users: Vec<UserRecord>,
}

pub(crate) struct StoredSale {
    pub id: String,
    pub config: SaleConfig,
    pub orders: Vec<Order>,
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

pub(crate) async fn open(path: &Path, synchronous_full: bool) -> Result<SqliteConnection, sqlx::Error> {
    let synchronous = if synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&options).await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
    Ok(conn)
}

/// Writes one batch in one transaction (one fsync).
pub(crate) async fn write(conn: &mut SqliteConnection, records: &[Record]) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    for record in records {
        match record {
            Record::Sale { id, config } => insert_sale(&mut tx, id, config).await?,
            Record::User(user) => insert_user(&mut tx, user).await?,
            Record::Waitlist { sale_id, entry } => upsert_waitlist(&mut tx, sale_id, entry).await?,
            Record::Order { .. } | Record::Probe { .. } => {}
        }
    }
    upsert_orders(&mut tx, records).await?;
    tx.commit().await
}

async fn insert_sale(conn: &mut SqliteConnection, id: &str, config: &SaleConfig) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR IGNORE INTO sales (id, name, stock, price_cents, starts_at, ends_at, per_user_limit, \
         hold_seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(&config.name)
    .bind(config.stock)
    .bind(config.price_cents)
    .bind(config.starts_at.0)
    .bind(config.ends_at.map(|t| t.0))
    .bind(config.per_user_limit)
    .bind(config.hold_seconds)
    .bind(config.created_at.0)
    .execute(conn)
    .await
    .map(drop)
}

async fn insert_user(conn: &mut SqliteConnection, user: &UserRecord) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)")
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.created_at.0)
        .execute(conn)
        .await
        .map(drop)
}

async fn upsert_waitlist(conn: &mut SqliteConnection, sale_id: &str, entry: &WaitlistEntry) -> Result<(), sqlx::Error> {
    let (status, order_seq) = match entry.status {
        WaitlistStatus::Waiting => ("waiting", None),
        WaitlistStatus::Granted(seq) => ("granted", Some(seq)),
        WaitlistStatus::Dropped => ("dropped", None),
    };
    sqlx::query(
        "INSERT INTO waitlist (sale_id, position, user_id, quantity, joined_at, status, order_seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (sale_id, position) DO UPDATE SET status = excluded.status, order_seq = excluded.order_seq",
    )
    .bind(sale_id)
    .bind(entry.position)
    .bind(entry.user.as_str())
    .bind(entry.quantity)
    .bind(entry.joined_at.0)
    .bind(status)
    .bind(order_seq)
    .execute(conn)
    .await
    .map(drop)
}

/// Rows per statement at most; batches are cut into power-of-two chunks so that only a handful
/// of statement texts exist and all of them stay prepared.
const ORDER_CHUNK: usize = 64;

/// All order changes of the batch, latest state of each order only, in a few multi-row upserts.
async fn upsert_orders(conn: &mut SqliteConnection, records: &[Record]) -> Result<(), sqlx::Error> {
    let mut seen = HashSet::new();
    let mut rows: Vec<(&str, &Order)> = Vec::new();
    for record in records.iter().rev() {
        let Record::Order { sale_id, order } = record else { continue };
        if seen.insert((sale_id.as_ref(), order.seq)) {
            rows.push((sale_id, order));
        }
    }
    let mut rest = &rows[..];
    while !rest.is_empty() {
        let size = chunk_size(rest.len());
        let (chunk, tail) = rest.split_at(size);
        let mut query = sqlx::query(order_upsert_sql(size));
        for (sale_id, order) in chunk {
            query = query
                .bind(*sale_id)
                .bind(order.seq)
                .bind(order.user.as_str())
                .bind(order.quantity)
                .bind(order.status.as_str())
                .bind(order.created_at.0)
                .bind(order.expires_at.0)
                .bind(order.updated_at.0)
                .bind(order.idempotency_key.as_ref().map(IdempotencyKey::as_str))
                .bind(order.payment_ref.as_deref());
        }
        query.execute(&mut *conn).await?;
        rest = tail;
    }
    Ok(())
}

fn chunk_size(rows: usize) -> usize {
    if rows >= ORDER_CHUNK {
        ORDER_CHUNK
    } else {
        1 << rows.ilog2()
    }
}

/// The upsert for `rows` rows (a power of two up to `ORDER_CHUNK`), built once per size.
fn order_upsert_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let sizes = (0..=ORDER_CHUNK.ilog2()).map(|power| 1usize << power);
        sizes
            .map(|size| {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; size].join(", ");
                format!(
                    "INSERT INTO orders (sale_id, seq, user_id, quantity, status, created_at, expires_at, updated_at, \
                     idempotency_key, payment_ref) VALUES {values} \
                     ON CONFLICT (sale_id, seq) DO UPDATE SET status = excluded.status, \
                     updated_at = excluded.updated_at, expires_at = excluded.expires_at, \
                     payment_ref = excluded.payment_ref"
                )
            })
            .collect()
    });
    &all[rows.ilog2() as usize]
}

pub(crate) async fn probe(conn: &mut SqliteConnection, sale_id: &str) -> Result<StoreTotals, sqlx::Error> {
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
        "SELECT id, name, stock, price_cents, starts_at, ends_at, per_user_limit, hold_seconds, created_at FROM sales",
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
        };
        sales.insert(id.clone(), StoredSale { id, config, orders: Vec::new(), waitlist: Vec::new() });
    }
    load_orders(conn, &mut sales).await?;
    load_waitlist(conn, &mut sales).await?;
    let users = load_users(conn).await?;
    Ok(Loaded { sales: sales.into_values().collect(), users })
}

async fn load_orders(conn: &mut SqliteConnection, sales: &mut BTreeMap<String, StoredSale>) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sale_id, seq, user_id, quantity, status, created_at, expires_at, updated_at, idempotency_key, \
         payment_ref FROM orders ORDER BY sale_id, seq",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let sale_id: String = row.try_get(0)?;
        let status: String = row.try_get(4)?;
        let user: String = row.try_get(2)?;
        let key: Option<String> = row.try_get(8)?;
        let order = Order {
            seq: row.try_get(1)?,
            user: UserId::new(&user).map_err(|e| corrupt(e.to_string()))?,
            quantity: row.try_get(3)?,
            status: OrderStatus::parse(&status).ok_or_else(|| corrupt(format!("order status {status:?}")))?,
            created_at: Timestamp(row.try_get(5)?),
            expires_at: Timestamp(row.try_get(6)?),
            updated_at: Timestamp(row.try_get(7)?),
            idempotency_key: key.map(|k| IdempotencyKey::new(&k)).transpose().map_err(|e| corrupt(e.to_string()))?,
            payment_ref: row.try_get(9)?,
        };
        let sale = sales.get_mut(&sale_id).ok_or_else(|| corrupt(format!("order of unknown sale {sale_id}")))?;
        sale.orders.push(order);
    }
    Ok(())
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
