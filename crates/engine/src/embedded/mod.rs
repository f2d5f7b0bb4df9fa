//! The embedded backend: hot state in memory, sharded by sale (one lock per sale, no global
//! lock on the purchase path), every change journaled to SQLite with group commit before the
//! call returns. On open, memory is rebuilt from SQLite and overdue holds are expired.

mod auctions;
mod batch;
mod journal;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use stampede_core::{Quantity, Sale, SaleError, Timestamp, Touched, UserId};
use tokio::sync::{broadcast, oneshot};

use self::journal::{Journal, Lsn, Record};
use crate::backend::{
    newest_first, unavailable, AuctionView, Backend, BidCommand, BidResult, EngineError, Ledger, LedgerCounts,
    NewAuction, NewSale, NewUser, OrderView, PurchaseCommand, PurchaseResult, SaleView, UserRecord,
};
use crate::changes::{self, Change};
use crate::{ids, lock};

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    /// fsync the WAL on every commit (survives power loss), not only process death.
    pub synchronous_full: bool,
}

pub struct Embedded {
    // std RwLock: sales are added rarely and looked up on every request; never held across await.
    sales: RwLock<HashMap<Arc<str>, Arc<SaleSlot>>>,
    // std RwLock, as for sales.
    auctions: RwLock<HashMap<Arc<str>, Arc<auctions::AuctionSlot>>>,
    users: Mutex<HashMap<String, UserRecord>>,
    journal: Arc<Journal>,
    writer: Mutex<Option<JoinHandle<()>>>,
    next_order_key: AtomicU64,
    changes: broadcast::Sender<Change>,
}

pub(crate) struct SaleSlot {
    id: Arc<str>,
    // std Mutex: each step is a few map operations; never held across an await.
    state: Mutex<SaleShard>,
}

struct SaleShard {
    sale: Sale,
    /// Storage facts of each order, by seq.
    meta: Vec<OrderMeta>,
}

#[derive(Debug, Clone, Copy, Default)]
struct OrderMeta {
    /// Row key in the store: handed out in creation order across all sales, so new rows always
    /// land at the end of the table and a commit dirties few pages however many sales sell.
    key: u64,
    /// Journal position of the order's latest change.
    lsn: Lsn,
}

impl Embedded {
    /// Opens (or creates) the store in `data_dir`, rebuilds memory from it and starts the
    /// journal writer.
    pub async fn open(options: EmbeddedOptions) -> Result<Arc<Self>, EngineError> {
        std::fs::create_dir_all(&options.data_dir).map_err(unavailable)?;
        let path = options.data_dir.join("stampede.db");
        let mut conn = store::open(&path, options.synchronous_full).await.map_err(unavailable)?;
        let mut loaded = store::load(&mut conn).await.map_err(unavailable)?;
        let journal = Journal::new();
        let engine = Arc::new(Self {
            sales: RwLock::default(),
            auctions: RwLock::default(),
            users: Mutex::default(),
            journal: journal.clone(),
            writer: Mutex::new(None),
            next_order_key: AtomicU64::new(loaded.next_order_key),
            changes: changes::feed(),
        });
        let stored_auctions = std::mem::take(&mut loaded.auctions);
        engine.restore(loaded)?;
        engine.restore_auctions(stored_auctions)?;
        let store = store::Store::new(path, options.synchronous_full, conn);
        *lock(&engine.writer) = Some(journal::start_writer(journal, store).map_err(unavailable)?);
        Ok(engine)
    }

    fn restore(&self, loaded: store::Loaded) -> Result<(), EngineError> {
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        for stored in loaded.sales {
            let id: Arc<str> = Arc::from(stored.id.as_str());
            let meta = stored.order_keys.iter().map(|&key| OrderMeta { key, lsn: 0 }).collect();
            let sale = Sale::restore(stored.config, stored.orders, stored.waitlist)
                .ok_or_else(|| unavailable(format!("stored orders of sale {id} exceed its stock")))?;
            let slot = Arc::new(SaleSlot { id: id.clone(), state: Mutex::new(SaleShard { sale, meta }) });
            sales.insert(id, slot);
        }
        let mut users = lock(&self.users);
        for user in loaded.users {
            users.insert(user.username.clone(), user);
        }
        Ok(())
    }

    fn slot(&self, sale_id: &str) -> Option<Arc<SaleSlot>> {
        let sales = self.sales.read().unwrap_or_else(PoisonError::into_inner);
        sales.get(sale_id).cloned()
    }

    fn all_slots(&self) -> Vec<Arc<SaleSlot>> {
        let sales = self.sales.read().unwrap_or_else(PoisonError::into_inner);
        sales.values().cloned().collect()
    }

    /// Runs one step on a sale under its lock and journals what it touched in the same lock
    /// scope, so the journal order per sale is the decision order.
    fn step<T>(&self, slot: &Arc<SaleSlot>, decide: impl FnOnce(&mut Sale, &mut Touched) -> T) -> (T, Lsn) {
        let mut touched = Touched::default();
        let mut shard = lock(&slot.state);
        let outcome = decide(&mut shard.sale, &mut touched);
        if touched.is_empty() {
            return (outcome, 0);
        }
        let shard = &mut *shard;
        while shard.meta.len() < shard.sale.orders().len() {
            let key = self.next_order_key.fetch_add(1, Ordering::Relaxed);
            shard.meta.push(OrderMeta { key, lsn: 0 });
        }
        let records = self.records_of(slot, shard, &touched);
        let lsn = self.journal.append(records);
        for &seq in &touched.orders {
            shard.meta[seq as usize].lsn = lsn;
        }
        self.announce(&slot.id, &shard.sale, &touched);
        (outcome, lsn)
    }

    /// Sent in the step's lock scope, so followers see a sale's changes in decision order.
    fn announce(&self, sale_id: &Arc<str>, sale: &Sale, touched: &Touched) {
        let _ = self.changes.send(Change::Sale { sale_id: sale_id.clone() });
        for order in touched.orders.iter().filter_map(|&seq| sale.order(seq)) {
            let order_id = ids::order_id(sale_id, order.seq);
            let _ = self.changes.send(Change::Order { user: order.user.clone(), order_id });
        }
    }

    fn records_of(&self, slot: &SaleSlot, shard: &SaleShard, touched: &Touched) -> Vec<Record> {
        let sale = &shard.sale;
        let orders = touched.orders.iter().filter_map(|&seq| {
            let order = sale.order(seq)?;
            let key = shard.meta[seq as usize].key;
            Some(Record::Order { sale_id: slot.id.clone(), key, order: order.clone() })
        });
        let waitlist = touched
            .waitlist
            .iter()
            .filter_map(|&pos| sale.waitlist_entry(pos))
            .map(|entry| Record::Waitlist { sale_id: slot.id.clone(), entry: entry.clone() });
        orders.chain(waitlist).collect()
    }

    /// The order's view once its latest change is durable.
    async fn durable_view(&self, slot: &SaleSlot, seq: u32) -> Result<OrderView, EngineError> {
        let (view, lsn) = {
            let shard = lock(&slot.state);
            let order = shard.sale.order(seq).ok_or(SaleError::OrderNotFound)?;
            (OrderView::of(&slot.id, order), shard.meta.get(seq as usize).map_or(0, |meta| meta.lsn))
        };
        self.journal.wait_durable(lsn).await?;
        Ok(view)
    }

    fn order_slot(&self, order_id: &str) -> Result<(Arc<SaleSlot>, u32), EngineError> {
        let (sale_id, seq) = ids::parse_order_id(order_id).ok_or(SaleError::OrderNotFound)?;
        let slot = self.slot(&sale_id).ok_or(SaleError::OrderNotFound)?;
        Ok((slot, seq))
    }

    /// Pay or cancel: one step on the order's sale, then the durable result.
    async fn change_order(
        &self,
        order_id: &str,
        change: impl FnOnce(&mut Sale, u32, &mut Touched) -> Result<(), SaleError>,
    ) -> Result<OrderView, EngineError> {
        let (slot, seq) = self.order_slot(order_id)?;
        let (outcome, lsn) = self.step(&slot, |sale, touched| change(sale, seq, touched));
        self.journal.wait_durable(lsn).await?;
        outcome?;
        self.durable_view(&slot, seq).await
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn create_sale(&self, new: NewSale, now: Timestamp) -> Result<SaleView, EngineError> {
        let id: Arc<str> = Arc::from(ids::new_sale_id());
        let config = new.into_config(now);
        let slot = Arc::new(SaleSlot {
            id: id.clone(),
            state: Mutex::new(SaleShard { sale: Sale::new(config.clone()), meta: Vec::new() }),
        });
        let view = SaleView::of(&id, &lock(&slot.state).sale, now);
        let lsn = {
            let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
            let lsn = self.journal.append([Record::Sale { id: id.clone(), config }]);
            sales.insert(id, slot);
            lsn
        };
        self.journal.wait_durable(lsn).await?;
        Ok(view)
    }

    async fn sale(&self, sale_id: &str, now: Timestamp) -> Result<SaleView, EngineError> {
        let slot = self.slot(sale_id).ok_or(EngineError::SaleNotFound)?;
        let shard = lock(&slot.state);
        Ok(SaleView::of(&slot.id, &shard.sale, now))
    }

    async fn list_sales(&self, now: Timestamp) -> Result<Vec<SaleView>, EngineError> {
        let mut listed = Vec::new();
        for slot in self.all_slots() {
            if ids::is_lot_sale_id(&slot.id) {
                continue;
            }
            let shard = lock(&slot.state);
            listed.push((shard.sale.config().created_at, SaleView::of(&slot.id, &shard.sale, now)));
        }
        Ok(newest_first(listed, |sale| &sale.id))
    }

    async fn purchase(&self, command: PurchaseCommand, now: Timestamp) -> Result<PurchaseResult, EngineError> {
        let slot = self.slot(&command.sale_id).ok_or(EngineError::SaleNotFound)?;
        let (outcome, _) = self.step(&slot, |sale, touched| {
            sale.purchase(&command.user, command.quantity, command.idempotency_key, now, touched)
        });
        // A refused purchase changes nothing; an accepted one (or a replay) is waited for by
        // `durable_view`, through the order's own journal position.
        let outcome = outcome?;
        let order = self.durable_view(&slot, outcome.seq()).await?;
        let created = matches!(outcome, stampede_core::PurchaseOutcome::Created(_));
        Ok(PurchaseResult { order, created })
    }

    async fn any_order(&self, order_id: &str) -> Result<OrderView, EngineError> {
        let (slot, seq) = self.order_slot(order_id)?;
        self.durable_view(&slot, seq).await
    }

    async fn order(&self, order_id: &str, user: &UserId) -> Result<OrderView, EngineError> {
        let view = self.any_order(order_id).await?;
        if view.user_id != user.as_str() {
            return Err(SaleError::OrderNotFound.into());
        }
        Ok(view)
    }

    async fn orders_of(&self, user: &UserId) -> Result<Vec<OrderView>, EngineError> {
        let mut found = Vec::new();
        let mut newest_change = 0;
        for slot in self.all_slots() {
            let shard = lock(&slot.state);
            for order in shard.sale.orders_of(user) {
                newest_change = newest_change.max(shard.meta.get(order.seq as usize).map_or(0, |meta| meta.lsn));
                found.push((order.created_at, order.seq, OrderView::of(&slot.id, order)));
            }
        }
        self.journal.wait_durable(newest_change).await?;
        found.sort_by_key(|&(created_at, seq, _)| std::cmp::Reverse((created_at, seq)));
        Ok(found.into_iter().map(|(_, _, view)| view).collect())
    }

    async fn pay(
        &self,
        order_id: &str,
        user: &UserId,
        payment_ref: Option<String>,
        now: Timestamp,
    ) -> Result<OrderView, EngineError> {
        self.change_order(order_id, |sale, seq, touched| sale.pay(seq, user, payment_ref, now, touched)).await
    }

    async fn cancel(&self, order_id: &str, user: &UserId, now: Timestamp) -> Result<OrderView, EngineError> {
        self.change_order(order_id, |sale, seq, touched| sale.cancel(seq, user, now, touched)).await
    }

    async fn join_waitlist(
        &self,
        sale_id: &str,
        user: &UserId,
        quantity: Quantity,
        now: Timestamp,
    ) -> Result<u32, EngineError> {
        let slot = self.slot(sale_id).ok_or(EngineError::SaleNotFound)?;
        let (outcome, lsn) = self.step(&slot, |sale, touched| sale.join_waitlist(user, quantity, now, touched));
        self.journal.wait_durable(lsn).await?;
        Ok(outcome?)
    }

    async fn expire_due(&self, now: Timestamp) -> Result<usize, EngineError> {
        let mut expired = 0;
        let mut last_lsn = 0;
        for slot in self.all_slots() {
            let (ended, lsn) = self.step(&slot, |sale, touched| {
                let orders_before = sale.orders().len();
                sale.expire_due(now, touched);
                // Touched also lists the holds the waitlist got: those are new, not expired.
                touched.orders.len() - (sale.orders().len() - orders_before)
            });
            expired += ended;
            last_lsn = last_lsn.max(lsn);
        }
        self.journal.wait_durable(last_lsn).await?;
        Ok(expired)
    }

    async fn create_auction(&self, auction: NewAuction, now: Timestamp) -> Result<AuctionView, EngineError> {
        self.create_auction_now(auction, now).await
    }

    async fn auction(&self, auction_id: &str, now: Timestamp) -> Result<AuctionView, EngineError> {
        self.auction_now(auction_id, now).await
    }

    async fn list_auctions(&self, now: Timestamp) -> Result<Vec<AuctionView>, EngineError> {
        self.list_auctions_now(now).await
    }

    async fn bid(&self, command: BidCommand, now: Timestamp) -> Result<BidResult, EngineError> {
        self.bid_now(command, now).await
    }

    async fn buy_now(&self, auction_id: &str, user: &UserId, now: Timestamp) -> Result<AuctionView, EngineError> {
        self.buy_now_now(auction_id, user, now).await
    }

    async fn close_due_auctions(&self, now: Timestamp) -> Result<usize, EngineError> {
        self.close_due_auctions_now(now).await
    }

    async fn ledger(&self, sale_id: &str) -> Result<Ledger, EngineError> {
        let slot = self.slot(sale_id).ok_or(EngineError::SaleNotFound)?;
        let (reply, answer) = oneshot::channel();
        let (stock, live) = {
            let shard = lock(&slot.state);
            let sale = &shard.sale;
            self.journal.append([Record::Probe { sale_id: slot.id.clone(), reply }]);
            let live = LedgerCounts {
                available: i64::from(sale.available()),
                held: i64::from(sale.held()),
                sold: i64::from(sale.sold()),
            };
            (sale.config().stock, live)
        };
        let totals = answer.await.map_err(|_| unavailable("journal stopped"))??;
        let store = LedgerCounts {
            available: i64::from(stock) - totals.held - totals.paid,
            held: totals.held,
            sold: totals.paid,
        };
        Ok(Ledger {
            sale_id: sale_id.to_owned(),
            stock,
            live,
            store,
            cancelled: totals.cancelled,
            expired: totals.expired,
            orders: totals.orders,
        })
    }

    async fn create_user(&self, new: NewUser) -> Result<UserRecord, EngineError> {
        let (record, lsn) = {
            let mut users = lock(&self.users);
            if users.contains_key(&new.username) {
                return Err(EngineError::UsernameTaken);
            }
            let record = UserRecord {
                id: ids::new_user_id(),
                username: new.username,
                password_hash: new.password_hash,
                created_at: Timestamp::now(),
            };
            users.insert(record.username.clone(), record.clone());
            let lsn = self.journal.append([Record::User(record.clone())]);
            (record, lsn)
        };
        self.journal.wait_durable(lsn).await?;
        Ok(record)
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, EngineError> {
        let user = lock(&self.users).get(username).cloned();
        if user.is_some() {
            // The account may have been created a moment ago and still be in flight.
            self.journal.wait_durable(self.journal.last_lsn()).await?;
        }
        Ok(user)
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn ready(&self) -> bool {
        self.journal.is_healthy() && lock(&self.writer).as_ref().is_some_and(|w| !w.is_finished())
    }

    async fn shutdown(&self) {
        self.journal.close();
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            match tokio::task::spawn_blocking(move || writer.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_panic)) => tracing::error!("journal writer ended abnormally"),
                Err(error) => tracing::error!(%error, "waiting for the journal writer failed"),
            }
        }
    }
}
