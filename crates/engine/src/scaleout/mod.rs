//! The scale-out backend: hot state in Redis (a single node or a Redis Cluster), Postgres as the
//! system of record, and no state in the replica itself, so any number of replicas can serve
//! any request.
//!
//! Every decision is one Lua script over the keys of one sale or auction (one hash tag, one
//! cluster slot): it checks, changes the counters and the order, appends the change to the
//! stream and publishes it on the change feed, all or nothing. There is no dual write: the
//! order sink moves stream entries to Postgres afterwards, idempotently. With Redis running
//! `appendonly yes` + `appendfsync always`, a script's effects are on disk before its reply, so
//! an acknowledged change survives `kill -9` of a replica, of Redis and of Postgres.

mod auctions;
mod buckets;
pub(crate) mod conn;
mod feed;
mod keys;
mod listing;
mod reconcile;
mod records;
mod scripts;
mod sink;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{AsyncCommands, RedisResult};
use stampede_core::{Quantity, SaleError, SaleStatus, Timestamp, UserId};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use self::conn::RedisConn;
pub use self::conn::RedisTarget;
pub use self::keys::home_bucket;
pub use self::reconcile::Reconciliation;

use self::feed::Follower;
use self::keys::Keys;
use self::records::{OrderRecord, SaleRecord};
use self::scripts::{Scripts, StepScript};
use self::sink::Sink;
use self::store::Store;
use crate::backend::{
    unavailable, AuctionView, Backend, BidCommand, BidResult, EngineError, Ledger, LedgerCounts, NewAuction, NewSale,
    NewUser, OrderView, PurchaseCommand, PurchaseResult, SaleView, UserRecord,
};
use crate::changes::{self, Change};
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
    /// The order sink and the change feed follower; taken by `shutdown`.
    background: Mutex<Option<Background>>,
    /// This replica's name on the change feed (see `feed.rs`).
    origin: String,
    closed: AtomicBool,
    /// Per bucket: when this replica last swept it, and when it next needs a sweep.
    sweeps: Mutex<HashMap<String, (i64, i64)>>,
    changes: broadcast::Sender<Change>,
}

/// The replica's own tasks and how to stop them.
struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Refills one purchase may trigger before it gives up (others keep taking what it brings).
const MAX_REFILLS: u32 = 1_000;
/// Most buckets a sale's stock may be split into.
pub const MAX_STOCK_BUCKETS: u32 = 64;

fn order_view(sale_id: &str, json: &str) -> Result<OrderView, EngineError> {
    OrderRecord::parse(json)
        .and_then(|order| order.view(sale_id))
        .ok_or_else(|| unavailable(format!("malformed order in sale {sale_id}")))
}

impl ScaleOut {
    /// Connects to Redis and Postgres (running Postgres migrations), subscribes to the change
    /// feed and starts the order sink.
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
        let changes = changes::feed();
        let origin = format!("replica-{}", ids::random_token(12));
        let follower = Follower {
            urls: options.redis.urls.clone(),
            channel: keys.changes(),
            origin: origin.clone(),
            changes: changes.clone(),
        };
        let (stop, stopped) = watch::channel(false);
        let follow = follower.start(stopped.clone()).await.map_err(|e| unavailable(format!("redis: {e}")))?;
        let sink_task = tokio::spawn({
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
            background: Mutex::new(Some(Background { stop, tasks: vec![sink_task, follow] })),
            origin,
            closed: AtomicBool::new(false),
            sweeps: Mutex::default(),
            changes,
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
                room: fields.get("room").cloned(),
                pow: number("pow") == Some(1),
            })
        };
        let sale = Arc::new(record().ok_or(EngineError::SaleNotFound)?);
        self.sales.write().unwrap_or_else(PoisonError::into_inner).insert(sale_id.to_owned(), sale.clone());
        Ok(sale)
    }

    async fn order_step(
        &self,
        script: &StepScript,
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

    /// The orders of one user in one sale: all in the user's home bucket. None in a sale that
    /// does not exist (yet): the lot of an auction the user bid on and nobody has won.
    async fn orders_in_sale(&self, sale_id: &str, user: &UserId) -> Result<Vec<OrderView>, EngineError> {
        let sale = match self.config(sale_id).await {
            Err(EngineError::SaleNotFound) => return Ok(Vec::new()),
            sale => sale?,
        };
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
            room: config.room.as_ref().map(crate::rooms::settings_to_json),
            pow: config.proof_of_work,
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
            room: sale.room.as_deref().and_then(crate::rooms::settings_from_json),
            proof_of_work: sale.pow,
        })
    }

    async fn list_sales(&self, now: Timestamp) -> Result<Vec<SaleView>, EngineError> {
        self.list_sales_now(now).await
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

    async fn any_order(&self, order_id: &str) -> Result<OrderView, EngineError> {
        self.check_open()?;
        let (bucket_id, seq) = self.locate_order(order_id).await?;
        let key = self.keys.sale_key(&bucket_id, keys::ORDERS);
        let json: Option<String> = self.conn().hget(&key, seq).await.map_err(unavailable)?;
        order_view(keys::sale_of_bucket(&bucket_id), &json.ok_or(SaleError::OrderNotFound)?)
    }

    async fn order(&self, order_id: &str, user: &UserId) -> Result<OrderView, EngineError> {
        let order = self.any_order(order_id).await?;
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

    async fn create_auction(&self, auction: NewAuction, now: Timestamp) -> Result<AuctionView, EngineError> {
        self.check_open()?;
        auctions::create(self, auction, now).await
    }

    async fn auction(&self, auction_id: &str, now: Timestamp) -> Result<AuctionView, EngineError> {
        self.check_open()?;
        auctions::get(self, auction_id, now).await
    }

    async fn list_auctions(&self, now: Timestamp) -> Result<Vec<AuctionView>, EngineError> {
        self.check_open()?;
        auctions::list(self, now).await
    }

    async fn bid(&self, command: BidCommand, now: Timestamp) -> Result<BidResult, EngineError> {
        self.check_open()?;
        auctions::bid(self, command, now).await
    }

    async fn buy_now(&self, auction_id: &str, user: &UserId, now: Timestamp) -> Result<AuctionView, EngineError> {
        self.check_open()?;
        auctions::buy_now(self, auction_id, user, now).await
    }

    async fn close_due_auctions(&self, now: Timestamp) -> Result<usize, EngineError> {
        self.check_open()?;
        auctions::close_due(self, now).await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
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
        let background = lock(&self.background).take();
        if let Some(Background { stop, tasks }) = background {
            let _ = stop.send(true);
            for task in tasks {
                let _ = task.await;
            }
        }
        self.store.close().await;
    }
}
