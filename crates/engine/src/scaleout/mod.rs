//! The scale-out backend: hot state in Redis (a single node or a Redis Cluster), Postgres as the
//! system of record, and no state in the replica itself, so any number of replicas can serve
//! any request.
//!
//! Every decision is one Lua script over the keys of one sale (one hash tag, one cluster slot):
//! it checks, changes the counters and the order, and appends the change to the sale's stream,
//! all or nothing. There is no dual write: the order sink moves stream entries to Postgres
//! afterwards, idempotently. With Redis running `appendonly yes` + `appendfsync always`, a script's
//! effects are on disk before its reply, so an acknowledged change survives `kill -9` of a
//! replica, of Redis and of Postgres.

mod conn;
mod keys;
mod records;
mod scripts;
mod sink;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{AsyncCommands, ErrorKind, RedisResult, ServerErrorKind};
use stampede_core::{Quantity, SaleError, SaleStatus, Timestamp, UserId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::conn::RedisConn;
pub use self::conn::RedisTarget;
pub use self::keys::home_bucket;

use self::keys::Keys;
use self::records::{OrderRecord, SaleRecord};
use self::scripts::{SaleScript, Scripts};
use self::sink::Sink;
use self::store::Store;
use crate::backend::{
    unavailable, Backend, EngineError, Ledger, LedgerCounts, NewSale, NewUser, OrderView, PurchaseCommand,
    PurchaseResult, SaleView, UserRecord,
};
use crate::{ids, lock};

#[derive(Debug, Clone)]
pub struct ScaleOutOptions {
    pub redis: RedisTarget,
    pub postgres_url: String,
    /// Prefix of every Redis key, so several deployments (or test runs) can share a Redis.
    pub namespace: String,
}

pub struct ScaleOut {
    redis: RedisConn,
    store: Store,
    keys: Keys,
    scripts: Scripts,
    /// Sale configurations never change once created: cached per replica.
    sales: RwLock<HashMap<String, Arc<SaleRecord>>>,
    sink: Arc<Sink>,
    sink_task: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    closed: AtomicBool,
    /// Per bucket: when this replica last swept it, and when it next needs a sweep.
    sweeps: Mutex<HashMap<String, (i64, i64)>>,
}

/// How many due holds one expiry script ends at most, so a long backlog never blocks a sale.
const EXPIRE_BATCH: usize = 500;
/// Replica clocks may differ by this much without delaying an expiry.
const CLOCK_SKEW_ALLOWANCE_MS: i64 = 2_000;
/// A bucket is swept at least this often, whatever its holds.
const MAX_SWEEP_GAP_MS: i64 = 10_000;
/// A transfer between buckets not confirmed after this long is finished by the sweep.
const TRANSFER_GRACE_MS: i64 = 5_000;
/// Refills one purchase may trigger before it gives up (others keep taking what it brings).
const MAX_REFILLS: u32 = 1_000;
/// Most buckets a sale's stock may be split into.
pub const MAX_STOCK_BUCKETS: u32 = 64;

fn script_error(code: &str) -> EngineError {
    let error = match code {
        "sale_not_found" => return EngineError::SaleNotFound,
        "sold_out" => SaleError::SoldOut,
        "limit_reached" => SaleError::LimitReached,
        "not_live" => SaleError::NotLive,
        "invalid_quantity" => SaleError::InvalidQuantity,
        "order_not_found" => SaleError::OrderNotFound,
        "hold_expired" => SaleError::HoldExpired,
        "order_cancelled" => SaleError::OrderCancelled,
        "order_paid" => SaleError::OrderPaid,
        "stock_available" => SaleError::StockAvailable,
        "already_waitlisted" => SaleError::AlreadyWaitlisted,
        other => return unavailable(format!("unexpected script answer {other:?}")),
    };
    EngineError::Sale(error)
}

/// A script's answer: `[outcome, payload]`, or the error it names.
fn answer(reply: RedisResult<Vec<String>>) -> Result<(String, String), EngineError> {
    let mut reply = reply.map_err(unavailable)?.into_iter();
    let (outcome, payload) = (reply.next().unwrap_or_default(), reply.next().unwrap_or_default());
    if outcome == "err" {
        return Err(script_error(&payload));
    }
    Ok((outcome, payload))
}

fn order_view(sale_id: &str, json: &str) -> Result<OrderView, EngineError> {
    OrderRecord::parse(json)
        .and_then(|order| order.view(sale_id))
        .ok_or_else(|| unavailable(format!("malformed order in sale {sale_id}")))
}

impl ScaleOut {
    /// Connects to Redis and Postgres (running Postgres migrations) and starts the order sink.
    pub async fn open(options: ScaleOutOptions) -> Result<Arc<Self>, EngineError> {
        let redis = RedisConn::connect(&options.redis).await.map_err(|e| unavailable(format!("redis: {e}")))?;
        let store = Store::connect(&options.postgres_url).await.map_err(|e| unavailable(format!("postgres: {e}")))?;
        let keys = Keys::new(&options.namespace);
        let consumer = format!("replica-{}", ids::random_token(12));
        // The sink reads streams in big batches: on a connection of its own, so request replies
        // never queue behind them.
        let sink_redis = RedisConn::connect(&options.redis).await.map_err(|e| unavailable(format!("redis: {e}")))?;
        let sink = Arc::new(Sink {
            redis: sink_redis,
            store: store.clone(),
            keys: keys.clone(),
            consumer,
            quiet: Mutex::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn({
            let sink = sink.clone();
            async move { sink.run(stopped).await }
        });
        Ok(Arc::new(Self {
            redis,
            store,
            keys,
            scripts: Scripts::new(),
            sales: RwLock::default(),
            sink,
            sink_task: Mutex::new(Some((stop, task))),
            closed: AtomicBool::new(false),
            sweeps: Mutex::default(),
        }))
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the backend is shut down"));
        }
        Ok(())
    }

    /// Sale ids become parts of Redis keys (and their hash tag): anything not shaped like one
    /// we hand out is not a sale, and never reaches Redis.
    fn check_sale_id(sale_id: &str) -> Result<(), EngineError> {
        if ids::is_sale_id(sale_id) {
            Ok(())
        } else {
            Err(EngineError::SaleNotFound)
        }
    }

    fn conn(&self) -> RedisConn {
        self.redis.clone()
    }

    async fn run(&self, script: &SaleScript, sale_id: &str, args: &[&[u8]]) -> Result<(String, String), EngineError> {
        self.eval(script, sale_id, args, None).await
    }

    /// Runs a sale script. With `participant`, also records that the user takes part in the
    /// sale (so listing their orders never misses one) before the result is reported: on a
    /// single node in the same pipeline, so one write and one fsync carry both; on a cluster,
    /// where the two keys live in different slots, as a concurrent command. Either way an
    /// acknowledged order is always listed; an order whose note failed is reported as failed
    /// (its retry with the same key returns it and writes the note).
    async fn run_for(
        &self,
        script: &SaleScript,
        sale_id: &str,
        args: &[&[u8]],
        participant: Option<&UserId>,
    ) -> Result<(String, String), EngineError> {
        let Some(user) = participant else { return self.eval(script, sale_id, args, None).await };
        let user_sales = self.keys.user_sales(user.as_str());
        if !self.redis.is_cluster() {
            return self.eval(script, sale_id, args, Some(&user_sales)).await;
        }
        let mut conn = self.conn();
        let note = conn.sadd::<_, _, i64>(&user_sales, keys::sale_of_bucket(sale_id));
        let (noted, reply) = tokio::join!(note, self.eval(script, sale_id, args, None));
        noted.map_err(unavailable)?;
        reply
    }

    /// Runs a sale script by hash, loading it when the node does not know it (NOSCRIPT: after
    /// a restart or failover), and sending it whole if the node forgot it again meanwhile.
    /// `user_sales`: a participant note to send in the same pipeline, before the script.
    async fn eval(
        &self,
        script: &SaleScript,
        sale_id: &str,
        args: &[&[u8]],
        user_sales: Option<&[u8]>,
    ) -> Result<(String, String), EngineError> {
        let mut conn = self.conn();
        let keys = self.keys.sale(sale_id);
        let call = |command: &str, script_arg: &str| {
            let mut call = redis::cmd(command);
            call.arg(script_arg).arg(keys.len()).arg(&keys[..]);
            for arg in args {
                call.arg(*arg);
            }
            call
        };
        let mut attempt = 0;
        loop {
            let eval = match attempt {
                0 | 1 => call("EVALSHA", script.script.get_hash()),
                _ => call("EVAL", &script.code),
            };
            let reply: RedisResult<Vec<String>> = match user_sales {
                Some(user_sales) => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("SADD").arg(user_sales).arg(keys::sale_of_bucket(sale_id)).ignore().add_command(eval);
                    pipe.query_async::<(Vec<String>,)>(&mut conn).await.map(|(reply,)| reply)
                }
                None => eval.query_async(&mut conn).await,
            };
            match reply {
                Err(error) if attempt < 2 && error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    if attempt == 0 {
                        script.script.prepare_invoke().load_async(&mut conn).await.map_err(unavailable)?;
                    }
                    attempt += 1;
                }
                reply => return answer(reply),
            }
        }
    }

    async fn config(&self, sale_id: &str) -> Result<Arc<SaleRecord>, EngineError> {
        Self::check_sale_id(sale_id)?;
        if let Some(sale) = self.sales.read().unwrap_or_else(PoisonError::into_inner).get(sale_id) {
            return Ok(sale.clone());
        }
        let key = self.keys.sale_key(sale_id, keys::CFG);
        let fields: HashMap<String, String> = self.conn().hgetall(&key).await.map_err(unavailable)?;
        let number = |name: &str| fields.get(name).and_then(|value| value.parse::<i64>().ok());
        let record = || {
            Some(SaleRecord {
                id: sale_id.to_owned(),
                name: fields.get("name")?.clone(),
                stock: u32::try_from(number("stock")?).ok()?,
                price: number("price")?,
                limit: u32::try_from(number("limit")?).ok()?,
                hold_ms: number("hold_ms")?,
                starts: number("starts")?,
                ends: number("ends")?,
                created: number("created")?,
                buckets: number("buckets").map_or(Some(1), |n| u32::try_from(n).ok())?.max(1),
            })
        };
        let sale = Arc::new(record().ok_or(EngineError::SaleNotFound)?);
        self.sales.write().unwrap_or_else(PoisonError::into_inner).insert(sale_id.to_owned(), sale.clone());
        Ok(sale)
    }

    /// The live counters of a sale, summed over its buckets: available (units lent between
    /// buckets included), held, sold, waiting. Exact when no transfer is under way.
    async fn counters(&self, sale: &SaleRecord) -> Result<[i64; 4], EngineError> {
        let ids = sale.bucket_ids();
        let mut counters = [0; 4];
        for bucket in join_all(ids.iter().map(|id| self.bucket_counters(id))).await {
            let [available, lent, held, sold, waiting] = bucket?;
            for (total, value) in counters.iter_mut().zip([available + lent, held, sold, waiting]) {
                *total += value;
            }
        }
        Ok(counters)
    }

    /// One bucket's available, lent, held, sold, waiting.
    async fn bucket_counters(&self, bucket_id: &str) -> Result<[i64; 5], EngineError> {
        self.bucket_numbers(bucket_id, ["available", "lent", "held", "sold", "waiting"]).await
    }

    /// Fields of one bucket's counters hash (absent ones 0).
    async fn bucket_numbers<const N: usize>(
        &self,
        bucket_id: &str,
        fields: [&str; N],
    ) -> Result<[i64; N], EngineError> {
        let key = self.keys.sale_key(bucket_id, keys::CTR);
        let values: Vec<Option<i64>> =
            redis::cmd("HMGET").arg(&key).arg(&fields).query_async(&mut self.conn()).await.map_err(unavailable)?;
        let mut numbers = [0; N];
        for (slot, value) in numbers.iter_mut().zip(values) {
            *slot = value.unwrap_or(0);
        }
        Ok(numbers)
    }

    /// Moves free units from the richest other bucket into `home`, so a buyer there is not
    /// told "sold out" while stock remains elsewhere. Takes half of that bucket's free units
    /// (at least `want`), so a busy bucket refills rarely. Returns whether units arrived.
    async fn rebalance_into(
        &self,
        sale: &SaleRecord,
        home: u32,
        want: u32,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        let others: Vec<u32> = (0..sale.buckets).filter(|&index| index != home).collect();
        let ids: Vec<String> = others.iter().map(|&index| keys::bucket_id(&sale.id, index)).collect();
        let counters = join_all(ids.iter().map(|id| self.bucket_counters(id))).await;
        let mut candidates = Vec::new();
        for (id, counters) in ids.iter().zip(counters) {
            let [available, _, _, _, waiting] = counters?;
            if available > 0 && waiting == 0 {
                candidates.push((available, id));
            }
        }
        candidates.sort_by(|a, b| b.cmp(a));
        let destination = keys::bucket_id(&sale.id, home);
        for (available, source) in candidates {
            let units = (available / 2).max(i64::from(want)).to_string();
            let transfer = ids::random_token(16);
            let now_text = now.0.to_string();
            let args: [&[u8]; 4] = [transfer.as_bytes(), destination.as_bytes(), units.as_bytes(), now_text.as_bytes()];
            let (_, lent) = self.run(&self.scripts.transfer_out, source, &args).await?;
            if lent == "0" {
                continue;
            }
            self.complete_transfer(source, &destination, &transfer, &lent, now).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Receives lent units at the destination (once per transfer id), then clears the loan.
    /// Safe to repeat: the recovery sweep finishes transfers a crashed replica left half done.
    async fn complete_transfer(
        &self,
        source: &str,
        destination: &str,
        transfer: &str,
        units: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let now = now.0.to_string();
        let args: [&[u8]; 3] = [transfer.as_bytes(), units.as_bytes(), now.as_bytes()];
        self.run(&self.scripts.transfer_in, destination, &args).await?;
        self.run(&self.scripts.transfer_done, source, &[transfer.as_bytes()]).await?;
        Ok(())
    }

    /// Finishes transfers that were lent but not confirmed for a while (their replica died
    /// between the two steps).
    async fn recover_transfers(&self, bucket_id: &str, now: Timestamp) -> Result<(), EngineError> {
        let outbox = self.keys.sale_key(bucket_id, keys::OUTBOX);
        let loans: HashMap<String, String> = self.conn().hgetall(&outbox).await.map_err(unavailable)?;
        for (transfer, loan) in loans {
            let mut parts = loan.splitn(3, ':');
            let (Some(destination), Some(units), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let stale = at.parse::<i64>().is_ok_and(|at| now.0 - at >= TRANSFER_GRACE_MS);
            if stale {
                self.complete_transfer(bucket_id, destination, &transfer, units, now).await?;
            }
        }
        Ok(())
    }

    /// For a sale split into buckets: finishes stale transfers and moves free units to buckets
    /// where users wait, so released units reach waitlists in every bucket.
    async fn balance_sale(&self, sale_id: &str, now: Timestamp) -> Result<(), EngineError> {
        let sale = self.config(sale_id).await?;
        let buckets = sale.bucket_ids();
        for bucket_id in &buckets {
            self.recover_transfers(bucket_id, now).await?;
        }
        for (index, bucket_id) in (0..).zip(&buckets) {
            let [available, _, _, _, waiting] = self.bucket_counters(bucket_id).await?;
            if waiting > 0 && available == 0 {
                self.rebalance_into(&sale, index, 1, now).await?;
            }
        }
        Ok(())
    }

    async fn order_step(
        &self,
        script: &SaleScript,
        order_id: &str,
        user: &UserId,
        extra: &[&[u8]],
        now: Timestamp,
    ) -> Result<OrderView, EngineError> {
        self.check_open()?;
        let (bucket_id, seq) = self.locate_order(order_id).await?;
        let seq = seq.to_string();
        let now = now.0.to_string();
        let mut args: Vec<&[u8]> = vec![seq.as_bytes(), user.as_str().as_bytes(), now.as_bytes()];
        args.extend_from_slice(extra);
        let (_, json) = self.run(script, &bucket_id, &args).await?;
        order_view(keys::sale_of_bucket(&bucket_id), &json)
    }

    /// The bucket holding an order, and its seq.
    async fn locate_order(&self, order_id: &str) -> Result<(String, u32), EngineError> {
        let (sale_id, seq) = ids::parse_order_id(order_id).ok_or(SaleError::OrderNotFound)?;
        let sale = match self.config(&sale_id).await {
            Err(EngineError::SaleNotFound) => return Err(SaleError::OrderNotFound.into()),
            other => other?,
        };
        Ok((keys::bucket_id(&sale_id, seq % sale.buckets), seq))
    }

    /// Every bucket of every sale.
    async fn bucket_ids(&self) -> Result<Vec<String>, EngineError> {
        self.conn().smembers(self.keys.sales()).await.map_err(unavailable)
    }

    async fn sale_ids(&self) -> Result<Vec<String>, EngineError> {
        let mut buckets = self.bucket_ids().await?;
        buckets.retain(|bucket_id| keys::sale_of_bucket(bucket_id) == bucket_id);
        Ok(buckets)
    }

    /// Ends the due holds of one bucket. A bucket swept recently and holding nothing due is
    /// skipped until its earliest deadline, or until a hold made since could be due: no sooner
    /// than the sale's hold time after the sweep, less an allowance for replica clock skew, and
    /// at most [`MAX_SWEEP_GAP_MS`] later (so skew beyond the allowance delays, never loses, an
    /// expiry). Many quiet sales then cost few scripts.
    async fn expire_bucket(&self, bucket_id: &str, now: Timestamp) -> Result<usize, EngineError> {
        let planned = lock(&self.sweeps).get(bucket_id).copied();
        if planned.is_some_and(|(swept, next)| swept <= now.0 && now.0 < next) {
            return Ok(0);
        }
        let (now_text, most) = (now.0.to_string(), EXPIRE_BATCH.to_string());
        let mut total = 0;
        let earliest = loop {
            let (_, reply) = self.run(&self.scripts.expire, bucket_id, &[now_text.as_bytes(), most.as_bytes()]).await?;
            let (expired, earliest) = reply.split_once(':').ok_or_else(|| unavailable("malformed expiry answer"))?;
            let expired: usize = expired.parse().map_err(unavailable)?;
            total += expired;
            if expired < EXPIRE_BATCH {
                break earliest.parse::<f64>().map_err(unavailable)? as i64;
            }
        };
        let sale = match self.config(keys::sale_of_bucket(bucket_id)).await {
            Ok(sale) => sale,
            Err(EngineError::SaleNotFound) => return Ok(total),
            Err(error) => return Err(error),
        };
        let horizon = now.0 + (sale.hold_ms - CLOCK_SKEW_ALLOWANCE_MS).clamp(0, MAX_SWEEP_GAP_MS);
        let next = if earliest >= 0 { earliest.min(horizon) } else { horizon };
        lock(&self.sweeps).insert(bucket_id.to_owned(), (now.0, next));
        Ok(total)
    }

    /// The orders of one user in one sale: all in the user's home bucket.
    async fn orders_in_sale(&self, sale_id: &str, user: &UserId) -> Result<Vec<OrderView>, EngineError> {
        let sale = self.config(sale_id).await?;
        let bucket_id = keys::bucket_id(sale_id, keys::home_bucket(user.as_str(), sale.buckets));
        let useq = self.keys.sale_key(&bucket_id, keys::USEQ);
        let seqs: Option<String> = self.conn().hget(&useq, user.as_str()).await.map_err(unavailable)?;
        let Some(seqs) = seqs else { return Ok(Vec::new()) };
        let seqs: Vec<&str> = seqs.split(',').collect();
        let orders = self.keys.sale_key(&bucket_id, keys::ORDERS);
        let jsons: Vec<Option<String>> =
            redis::cmd("HMGET").arg(&orders).arg(&seqs).query_async(&mut self.conn()).await.map_err(unavailable)?;
        jsons.into_iter().flatten().map(|json| order_view(sale_id, &json)).collect()
    }
}

/// One sale compared across Redis and Postgres.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// Live counters (Redis) next to the store's totals (Postgres), after draining the stream.
    pub ledger: Ledger,
    /// Orders made and units cancelled / expired according to Redis.
    pub redis_orders: i64,
    pub redis_cancelled: i64,
    pub redis_expired: i64,
}

impl Reconciliation {
    pub fn matches(&self) -> bool {
        self.ledger.consistent()
            && self.redis_orders == self.ledger.orders
            && self.redis_cancelled == self.ledger.cancelled
            && self.redis_expired == self.ledger.expired
    }
}

impl ScaleOut {
    /// Compares every sale's Redis counters with its orders in Postgres, after moving whatever
    /// is still in the sales' streams to Postgres. On a quiet system every sale matches.
    pub async fn reconcile(&self) -> Result<Vec<Reconciliation>, EngineError> {
        let mut sale_ids = self.sale_ids().await?;
        sale_ids.sort();
        let mut report = Vec::with_capacity(sale_ids.len());
        for sale_id in sale_ids {
            let ledger = match self.ledger(&sale_id).await {
                Ok(ledger) => ledger,
                // Listed while its creation was under way (or failed): not a sale yet.
                Err(EngineError::SaleNotFound) => continue,
                Err(error) => return Err(error),
            };
            let sale = self.config(&sale_id).await?;
            let mut totals = [0i64; 3];
            for bucket_id in sale.bucket_ids() {
                let numbers = self.bucket_numbers(&bucket_id, ["seq", "cancelled", "expired"]).await?;
                for (total, value) in totals.iter_mut().zip(numbers) {
                    *total += value;
                }
            }
            let [redis_orders, redis_cancelled, redis_expired] = totals;
            report.push(Reconciliation { ledger, redis_orders, redis_cancelled, redis_expired });
        }
        Ok(report)
    }
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

#[async_trait]
impl Backend for ScaleOut {
    async fn create_sale(&self, sale: NewSale, now: Timestamp) -> Result<SaleView, EngineError> {
        self.check_open()?;
        let id = ids::new_sale_id();
        let buckets = sale.stock_buckets.clamp(1, MAX_STOCK_BUCKETS);
        let config = sale.into_config(now);
        let record = SaleRecord {
            id: id.clone(),
            name: config.name,
            stock: config.stock,
            price: config.price_cents,
            limit: config.per_user_limit,
            hold_ms: i64::from(config.hold_seconds) * 1000,
            starts: config.starts_at.0,
            ends: config.ends_at.map_or(-1, |end| end.0),
            created: now.0,
            buckets,
        };
        let buckets = record.bucket_ids();
        // Listed first, so the jobs that visit every bucket (sink, expiry) never miss one.
        let _: i64 = self.conn().sadd(self.keys.sales(), &buckets).await.map_err(unavailable)?;
        let json = serde_json::to_string(&record).map_err(unavailable)?;
        // Bucket 0 last: the sale exists for readers once its bucket 0 does, by then whole.
        for index in (0..record.buckets).rev() {
            let share = record.stock / record.buckets + u32::from(index < record.stock % record.buckets);
            let (index_text, share) = (index.to_string(), share.to_string());
            let args: [&[u8]; 3] = [json.as_bytes(), index_text.as_bytes(), share.as_bytes()];
            self.run(&self.scripts.create_sale, &buckets[index as usize], &args).await?;
        }
        let record = Arc::new(record);
        self.sales.write().unwrap_or_else(PoisonError::into_inner).insert(id.clone(), record.clone());
        self.sale(&id, now).await
    }

    async fn sale(&self, sale_id: &str, now: Timestamp) -> Result<SaleView, EngineError> {
        self.check_open()?;
        let sale = self.config(sale_id).await?;
        let [available, held, sold, waiting] = self.counters(&sale).await?;
        let ends_at = (sale.ends >= 0).then_some(Timestamp(sale.ends));
        // Nothing is for new buyers while anyone waits: released units are the waitlist's.
        let buyable = if waiting > 0 { 0 } else { count(available) };
        Ok(SaleView {
            id: sale.id.clone(),
            name: sale.name.clone(),
            price_cents: sale.price,
            stock: sale.stock,
            available: count(available),
            held: count(held),
            sold: count(sold),
            per_user_limit: sale.limit,
            hold_seconds: u32::try_from(sale.hold_ms / 1000).unwrap_or(0),
            starts_at: Timestamp(sale.starts),
            ends_at,
            status: SaleStatus::at(Timestamp(sale.starts), ends_at, buyable, now),
            waitlisted: count(waiting),
        })
    }

    async fn purchase(&self, command: PurchaseCommand, now: Timestamp) -> Result<PurchaseResult, EngineError> {
        self.check_open()?;
        let sale = self.config(&command.sale_id).await?;
        let home = keys::home_bucket(command.user.as_str(), sale.buckets);
        let bucket_id = keys::bucket_id(&sale.id, home);
        let quantity = command.quantity.get().to_string();
        let key = command.idempotency_key.as_ref().map_or("", |key| key.as_str());
        let now_text = now.0.to_string();
        let args: [&[u8]; 4] =
            [command.user.as_str().as_bytes(), quantity.as_bytes(), key.as_bytes(), now_text.as_bytes()];
        let mut refills = 0;
        let mut others_empty = false;
        loop {
            match self.run_for(&self.scripts.purchase, &bucket_id, &args, Some(&command.user)).await {
                Ok((outcome, json)) => {
                    let order = order_view(&sale.id, &json)?;
                    return Ok(PurchaseResult { order, created: outcome == "created" });
                }
                // The home bucket is empty: bring units over from another, as long as any has
                // some. Each refill moves at least one unit, so this ends; the bound is a guard.
                // When the others are empty too, one last try: a concurrent refill may have
                // brought units home meanwhile.
                Err(EngineError::Sale(SaleError::SoldOut))
                    if sale.buckets > 1 && !others_empty && refills < MAX_REFILLS =>
                {
                    refills += 1;
                    others_empty = !self.rebalance_into(&sale, home, command.quantity.get(), now).await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn order(&self, order_id: &str, user: &UserId) -> Result<OrderView, EngineError> {
        self.check_open()?;
        let (bucket_id, seq) = self.locate_order(order_id).await?;
        let key = self.keys.sale_key(&bucket_id, keys::ORDERS);
        let json: Option<String> = self.conn().hget(&key, seq).await.map_err(unavailable)?;
        let order = order_view(keys::sale_of_bucket(&bucket_id), &json.ok_or(SaleError::OrderNotFound)?)?;
        if order.user_id != user.as_str() {
            return Err(SaleError::OrderNotFound.into());
        }
        Ok(order)
    }

    async fn orders_of(&self, user: &UserId) -> Result<Vec<OrderView>, EngineError> {
        self.check_open()?;
        let sale_ids: Vec<String> =
            self.conn().smembers(self.keys.user_sales(user.as_str())).await.map_err(unavailable)?;
        let per_sale = join_all(sale_ids.iter().map(|sale_id| self.orders_in_sale(sale_id, user))).await;
        let mut orders = Vec::new();
        for sale_orders in per_sale {
            orders.extend(sale_orders?);
        }
        // Newest first; orders made in the same millisecond by creation order within a sale.
        let seq = |order: &OrderView| ids::parse_order_id(&order.id).map_or(0, |(_, seq)| seq);
        orders.sort_by(|a, b| (b.created_at, &b.sale_id, seq(b)).cmp(&(a.created_at, &a.sale_id, seq(a))));
        Ok(orders)
    }

    async fn pay(
        &self,
        order_id: &str,
        user: &UserId,
        payment_ref: Option<String>,
        now: Timestamp,
    ) -> Result<OrderView, EngineError> {
        let has_ref: &[u8] = if payment_ref.is_some() { b"1" } else { b"0" };
        let payment_ref = payment_ref.unwrap_or_default();
        self.order_step(&self.scripts.pay, order_id, user, &[has_ref, payment_ref.as_bytes()], now).await
    }

    async fn cancel(&self, order_id: &str, user: &UserId, now: Timestamp) -> Result<OrderView, EngineError> {
        self.order_step(&self.scripts.cancel, order_id, user, &[], now).await
    }

    async fn join_waitlist(
        &self,
        sale_id: &str,
        user: &UserId,
        quantity: Quantity,
        now: Timestamp,
    ) -> Result<u32, EngineError> {
        self.check_open()?;
        let sale = self.config(sale_id).await?;
        let home = keys::home_bucket(user.as_str(), sale.buckets);
        if sale.buckets > 1 {
            // Units free in another bucket are for buying, not waiting: bring them over first,
            // and the script answers "stock available".
            let [available, _, _, waiting] = self.counters(&sale).await?;
            if available > 0 && waiting == 0 {
                self.rebalance_into(&sale, home, quantity.get(), now).await?;
            }
        }
        let quantity = quantity.get().to_string();
        let now = now.0.to_string();
        let args: [&[u8]; 3] = [user.as_str().as_bytes(), quantity.as_bytes(), now.as_bytes()];
        let bucket_id = keys::bucket_id(sale_id, home);
        let (_, place) = self.run_for(&self.scripts.join_waitlist, &bucket_id, &args, Some(user)).await?;
        place.parse().map_err(unavailable)
    }

    async fn expire_due(&self, now: Timestamp) -> Result<usize, EngineError> {
        self.check_open()?;
        let buckets = self.bucket_ids().await?;
        let results = join_all(buckets.iter().map(|bucket_id| self.expire_bucket(bucket_id, now))).await;
        let mut total = 0;
        for result in results {
            total += result?;
        }
        // Sales split into buckets: those with a bucket other than their bucket 0.
        let mut split: Vec<&str> = buckets
            .iter()
            .map(|bucket_id| keys::sale_of_bucket(bucket_id))
            .zip(&buckets)
            .filter(|(sale_id, bucket_id)| sale_id != bucket_id)
            .map(|(sale_id, _)| sale_id)
            .collect();
        split.sort_unstable();
        split.dedup();
        for sale_id in split {
            self.balance_sale(sale_id, now).await?;
        }
        Ok(total)
    }

    async fn ledger(&self, sale_id: &str) -> Result<Ledger, EngineError> {
        self.check_open()?;
        let sale = self.config(sale_id).await?;
        for bucket_id in sale.bucket_ids() {
            self.sink.drain_bucket(&bucket_id).await.map_err(unavailable)?;
        }
        let [available, held, sold, _] = self.counters(&sale).await?;
        let totals = self.store.totals(sale_id).await.map_err(unavailable)?;
        let stock = i64::from(sale.stock);
        Ok(Ledger {
            sale_id: sale_id.to_owned(),
            stock: sale.stock,
            live: LedgerCounts { available, held, sold },
            store: LedgerCounts { available: stock - totals.held - totals.paid, held: totals.held, sold: totals.paid },
            cancelled: totals.cancelled,
            expired: totals.expired,
            orders: totals.orders,
        })
    }

    async fn create_user(&self, user: NewUser) -> Result<UserRecord, EngineError> {
        self.check_open()?;
        let created = self.store.create_user(ids::new_user_id(), user, Timestamp::now()).await.map_err(unavailable)?;
        created.ok_or(EngineError::UsernameTaken)
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, EngineError> {
        self.check_open()?;
        self.store.find_user(username).await.map_err(unavailable)
    }

    async fn ready(&self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut self.conn()).await;
        pong.is_ok()
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let task = lock(&self.sink_task).take();
        if let Some((stop, task)) = task {
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.store.close().await;
    }
}
