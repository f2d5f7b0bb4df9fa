//! The backend port: every decision the server needs, each one atomic and durable on return.

use async_trait::async_trait;
use stampede_core::{
    Auction, AuctionConfig, AuctionError, AuctionStatus, BidStatus, IdempotencyKey, Ladder, Order, OrderStatus,
    Quantity, RoomSettings, Sale, SaleConfig, SaleError, SaleStatus, Timestamp, UserId,
};

use crate::ids;

/// Why a backend call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Sale(#[from] SaleError),
    #[error("sale not found")]
    SaleNotFound,
    #[error(transparent)]
    Auction(#[from] AuctionError),
    #[error("auction not found")]
    AuctionNotFound,
    #[error(transparent)]
    Room(#[from] stampede_core::RoomError),
    #[error("username taken")]
    UsernameTaken,
    /// The durable store cannot take writes right now; nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// The store or the hot state cannot be reached (or answered nonsense): nothing was changed
/// that the caller is told about.
pub(crate) fn unavailable(error: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(error.to_string())
}

/// Views with their creation times, newest first; equal times by id, so the order is stable.
pub(crate) fn newest_first<T>(mut listed: Vec<(Timestamp, T)>, id: impl Fn(&T) -> &str) -> Vec<T> {
    listed.sort_by(|(a_created, a), (b_created, b)| b_created.cmp(a_created).then_with(|| id(a).cmp(id(b))));
    listed.into_iter().map(|(_, view)| view).collect()
}

/// One backend: hot state plus its durable store. Every method that changes state returns only
/// after the change is durable.
#[async_trait]
pub trait Backend: Send + Sync {
    async fn create_sale(&self, sale: NewSale, now: Timestamp) -> Result<SaleView, EngineError>;
    async fn sale(&self, sale_id: &str, now: Timestamp) -> Result<SaleView, EngineError>;
    /// Every sale made by `create_sale`, newest first (equal creation times by id). The sale an
    /// auction's lot becomes is not listed: it is reached through its auction.
    async fn list_sales(&self, now: Timestamp) -> Result<Vec<SaleView>, EngineError>;
    async fn purchase(&self, command: PurchaseCommand, now: Timestamp) -> Result<PurchaseResult, EngineError>;
    /// The caller's order; another user's order is `OrderNotFound`.
    async fn order(&self, order_id: &str, user: &UserId) -> Result<OrderView, EngineError>;
    /// Any order, whoever placed it: for operators, never for users.
    async fn any_order(&self, order_id: &str) -> Result<OrderView, EngineError>;
    /// The caller's orders, newest first.
    async fn orders_of(&self, user: &UserId) -> Result<Vec<OrderView>, EngineError>;
    async fn pay(
        &self,
        order_id: &str,
        user: &UserId,
        payment_ref: Option<String>,
        now: Timestamp,
    ) -> Result<OrderView, EngineError>;
    async fn cancel(&self, order_id: &str, user: &UserId, now: Timestamp) -> Result<OrderView, EngineError>;
    /// Joins the sale's waitlist; returns the 1-based place.
    async fn join_waitlist(
        &self,
        sale_id: &str,
        user: &UserId,
        quantity: Quantity,
        now: Timestamp,
    ) -> Result<u32, EngineError>;
    /// Ends every hold due at `now`; returns how many holds expired.
    async fn expire_due(&self, now: Timestamp) -> Result<usize, EngineError>;
    async fn create_auction(&self, auction: NewAuction, now: Timestamp) -> Result<AuctionView, EngineError>;
    async fn auction(&self, auction_id: &str, now: Timestamp) -> Result<AuctionView, EngineError>;
    /// Every auction, newest first (equal creation times by id).
    async fn list_auctions(&self, now: Timestamp) -> Result<Vec<AuctionView>, EngineError>;
    /// One bid, resolved against the others (proxy bidding) and durable on return.
    async fn bid(&self, command: BidCommand, now: Timestamp) -> Result<BidResult, EngineError>;
    /// Ends the auction at once with `user` as the winner, while buy-now is offered.
    async fn buy_now(&self, auction_id: &str, user: &UserId, now: Timestamp) -> Result<AuctionView, EngineError>;
    /// Ends every auction due at `now`; each winner gets its order (a hold to pay) in the same
    /// step. Returns how many auctions ended.
    async fn close_due_auctions(&self, now: Timestamp) -> Result<usize, EngineError>;
    /// Live counters next to the durable store's totals.
    async fn ledger(&self, sale_id: &str) -> Result<Ledger, EngineError>;
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, EngineError>;
    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, EngineError>;
    /// Follows every change made from now on, by any replica.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<crate::changes::Change>;
    /// Whether the durable store is taking writes.
    async fn ready(&self) -> bool;
    /// Stops taking work and makes everything acknowledged so far durable.
    async fn shutdown(&self);
}

#[derive(Debug, Clone)]
pub struct NewSale {
    pub name: String,
    pub stock: u32,
    pub price_cents: i64,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub per_user_limit: u32,
    pub hold_seconds: u32,
    /// Scale-out mode: split the stock over this many Redis keys (and cluster slots) so one hot
    /// sale is not bound to one Redis node; 1 keeps it whole. The embedded mode ignores it.
    pub stock_buckets: u32,
    pub room: Option<RoomSettings>,
    pub proof_of_work: bool,
}

impl NewSale {
    pub fn into_config(self, now: Timestamp) -> SaleConfig {
        SaleConfig {
            name: self.name,
            stock: self.stock,
            price_cents: self.price_cents,
            starts_at: self.starts_at.unwrap_or(now),
            ends_at: self.ends_at,
            per_user_limit: self.per_user_limit,
            hold_seconds: self.hold_seconds,
            created_at: now,
            room: self.room,
            proof_of_work: self.proof_of_work,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PurchaseCommand {
    pub sale_id: String,
    pub user: UserId,
    pub quantity: Quantity,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Debug, Clone)]
pub struct PurchaseResult {
    pub order: OrderView,
    /// False when an earlier request with the same idempotency key made the order.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleView {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub stock: u32,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    pub per_user_limit: u32,
    pub hold_seconds: u32,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub status: SaleStatus,
    pub waitlisted: u32,
    pub room: Option<RoomSettings>,
    pub proof_of_work: bool,
}

impl SaleView {
    pub fn of(id: &str, sale: &Sale, now: Timestamp) -> Self {
        let config = sale.config();
        Self {
            id: id.to_owned(),
            name: config.name.clone(),
            price_cents: config.price_cents,
            stock: config.stock,
            available: sale.available(),
            held: sale.held(),
            sold: sale.sold(),
            per_user_limit: config.per_user_limit,
            hold_seconds: config.hold_seconds,
            starts_at: config.starts_at,
            ends_at: config.ends_at,
            status: sale.status(now),
            waitlisted: sale.waiting_count(),
            room: config.room.clone(),
            proof_of_work: config.proof_of_work,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: u32,
    pub status: OrderStatus,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub payment_ref: Option<String>,
}

impl OrderView {
    pub fn of(sale_id: &str, order: &Order) -> Self {
        Self {
            id: ids::order_id(sale_id, order.seq),
            sale_id: sale_id.to_owned(),
            user_id: order.user.as_str().to_owned(),
            quantity: order.quantity,
            status: order.status,
            expires_at: order.expires_at,
            created_at: order.created_at,
            updated_at: order.updated_at,
            payment_ref: order.payment_ref.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    pub available: i64,
    pub held: i64,
    pub sold: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    pub sale_id: String,
    pub stock: u32,
    /// The hot state's counters.
    pub live: LedgerCounts,
    /// Totals by state from the durable store (`available` derived as stock - held - sold).
    pub store: LedgerCounts,
    pub cancelled: i64,
    pub expired: i64,
    pub orders: i64,
}

impl Ledger {
    /// `available + held + sold == stock` in both views, none negative, and both views agree.
    pub fn consistent(&self) -> bool {
        let stock = i64::from(self.stock);
        let balanced =
            |c: &LedgerCounts| c.available >= 0 && c.held >= 0 && c.sold >= 0 && c.available + c.held + c.sold == stock;
        balanced(&self.live) && balanced(&self.store) && self.live == self.store
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewAuction {
    pub title: String,
    pub seller_id: String,
    pub starting_price_cents: i64,
    pub reserve_price_cents: Option<i64>,
    pub buy_now_price_cents: Option<i64>,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Timestamp,
    pub soft_close_seconds: u32,
    pub extend_seconds: u32,
    pub max_extensions: Option<u32>,
    pub ladder: Ladder,
    /// How long the winner has to pay: the hold time of the order the win creates.
    pub payment_seconds: u32,
}

impl NewAuction {
    pub fn into_config(self, now: Timestamp) -> (AuctionConfig, u32) {
        let config = AuctionConfig {
            title: self.title,
            seller_id: self.seller_id,
            starting_price_cents: self.starting_price_cents,
            reserve_price_cents: self.reserve_price_cents,
            buy_now_price_cents: self.buy_now_price_cents,
            starts_at: self.starts_at.unwrap_or(now),
            ends_at: self.ends_at,
            soft_close_seconds: self.soft_close_seconds,
            extend_seconds: self.extend_seconds,
            max_extensions: self.max_extensions,
            ladder: self.ladder,
            created_at: now,
        };
        (config, self.payment_seconds)
    }
}

/// An auction as anyone may see it: never the maxima, never the reserve amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuctionView {
    pub id: String,
    pub title: String,
    pub seller_id: String,
    pub status: AuctionStatus,
    pub starting_price_cents: i64,
    pub current_price_cents: i64,
    pub leader_id: Option<String>,
    pub bid_count: u32,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub extensions: u32,
    pub reserve_met: bool,
    pub has_reserve: bool,
    pub min_next_bid_cents: i64,
    /// Set while buy-now is offered.
    pub buy_now_price_cents: Option<i64>,
    pub soft_close_seconds: u32,
    pub extend_seconds: u32,
    pub max_extensions: Option<u32>,
    pub winner_id: Option<String>,
    /// The winner's order (a hold to pay), once the auction ended with a winner.
    pub order_id: Option<String>,
    pub version: u64,
}

impl AuctionView {
    pub fn of(id: &str, auction: &Auction, now: Timestamp) -> Self {
        let config = auction.config();
        let winner = auction.outcome().and_then(|outcome| outcome.winner.as_ref());
        Self {
            id: id.to_owned(),
            title: config.title.clone(),
            seller_id: config.seller_id.clone(),
            status: auction.status(now),
            starting_price_cents: config.starting_price_cents,
            current_price_cents: auction.outcome().map_or(auction.current_price_cents(), |o| o.price_cents),
            leader_id: auction.leader().map(|user| user.as_str().to_owned()),
            bid_count: auction.bid_count(),
            starts_at: config.starts_at,
            ends_at: auction.outcome().map_or(auction.ends_at(), |o| o.ended_at),
            extensions: auction.extensions(),
            reserve_met: auction.reserve_met(),
            has_reserve: config.reserve_price_cents.is_some(),
            min_next_bid_cents: auction.min_next_bid_cents(),
            buy_now_price_cents: config.buy_now_price_cents.filter(|_| auction.buy_now_offered(now)),
            soft_close_seconds: config.soft_close_seconds,
            extend_seconds: config.extend_seconds,
            max_extensions: config.max_extensions,
            winner_id: winner.map(|user| user.as_str().to_owned()),
            order_id: winner.map(|_| ids::lot_order_id(id)),
            version: auction.version(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BidCommand {
    pub auction_id: String,
    pub user: UserId,
    pub max_amount_cents: i64,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The answer to a bid, as given when it was accepted (and replayed for a repeated key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidResult {
    pub id: String,
    pub status: BidStatus,
    pub current_price_cents: i64,
    pub leader_id: String,
    /// False when an earlier request with the same idempotency key placed the bid.
    pub created: bool,
}
