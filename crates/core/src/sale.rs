//! One flash sale: its stock ledger, its orders and its waitlist, as one state machine.
//!
//! Invariant (checked by `debug_assert` after every step and by the property tests):
//! `available + held + sold == stock`, and every user's held + paid units stay within
//! `per_user_limit`. Every method is one atomic step: the caller holds the only `&mut`.

use std::collections::{HashMap, VecDeque};

use crate::types::{IdempotencyKey, Quantity, Timestamp, UserId};

/// Index of an order inside its sale.
pub type OrderSeq = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleConfig {
    pub name: String,
    pub stock: u32,
    pub price_cents: i64,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub per_user_limit: u32,
    pub hold_seconds: u32,
    pub created_at: Timestamp,
    /// Buyers queue in a waiting room and buy with a pass from it.
    pub room: Option<crate::room::RoomSettings>,
    /// Every purchase needs a solved proof-of-work challenge.
    pub proof_of_work: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleStatus {
    Scheduled,
    Live,
    SoldOut,
    Ended,
}

impl SaleStatus {
    /// The status of a sale with this window and this many units a new buyer could take.
    pub fn at(starts_at: Timestamp, ends_at: Option<Timestamp>, buyable: u32, now: Timestamp) -> Self {
        if now < starts_at {
            SaleStatus::Scheduled
        } else if ends_at.is_some_and(|end| now >= end) {
            SaleStatus::Ended
        } else if buyable == 0 {
            SaleStatus::SoldOut
        } else {
            SaleStatus::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SaleStatus::Scheduled => "scheduled",
            SaleStatus::Live => "live",
            SaleStatus::SoldOut => "sold_out",
            SaleStatus::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Held,
    Paid,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Held => "held",
            OrderStatus::Paid => "paid",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "held" => Some(OrderStatus::Held),
            "paid" => Some(OrderStatus::Paid),
            "cancelled" => Some(OrderStatus::Cancelled),
            "expired" => Some(OrderStatus::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub seq: OrderSeq,
    pub user: UserId,
    pub quantity: u32,
    pub status: OrderStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub updated_at: Timestamp,
    pub idempotency_key: Option<IdempotencyKey>,
    pub payment_ref: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitlistStatus {
    Waiting,
    /// Served: the entry became the order with this seq.
    Granted(OrderSeq),
    /// Could no longer be served (the user reached the per-user limit meanwhile).
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub position: u32,
    pub user: UserId,
    pub quantity: u32,
    pub joined_at: Timestamp,
    pub status: WaitlistStatus,
}

/// Why a step was refused. Each maps to one API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaleError {
    #[error("the sale is sold out")]
    SoldOut,
    #[error("the per-user limit of this sale is reached")]
    LimitReached,
    #[error("the sale is not live")]
    NotLive,
    #[error("quantity must be between 1 and the per-user limit")]
    InvalidQuantity,
    #[error("order not found")]
    OrderNotFound,
    #[error("the hold has expired")]
    HoldExpired,
    #[error("the order was cancelled")]
    OrderCancelled,
    #[error("the order is paid and cannot be cancelled")]
    OrderPaid,
    #[error("units are available: buy instead of joining the waitlist")]
    StockAvailable,
    #[error("already on the waitlist of this sale")]
    AlreadyWaitlisted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseOutcome {
    Created(OrderSeq),
    /// The same user repeated an idempotency key: the original order.
    Existing(OrderSeq),
}

impl PurchaseOutcome {
    pub fn seq(self) -> OrderSeq {
        match self {
            PurchaseOutcome::Created(seq) | PurchaseOutcome::Existing(seq) => seq,
        }
    }
}

/// What one step changed, so the caller can make exactly that durable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub orders: Vec<OrderSeq>,
    pub waitlist: Vec<u32>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.waitlist.is_empty()
    }
}

/// One user's part in a sale: held + paid units and the orders they made.
#[derive(Debug, Clone)]
struct Buyer {
    units: u32,
    /// The first order inline: most buyers make exactly one.
    first: OrderSeq,
    more: Vec<OrderSeq>,
}

#[derive(Debug, Clone)]
pub struct Sale {
    config: SaleConfig,
    available: u32,
    held: u32,
    sold: u32,
    orders: Vec<Order>,
    buyers: HashMap<UserId, Buyer>,
    by_key: HashMap<(UserId, IdempotencyKey), OrderSeq>,
    /// Holds by deadline, so the front is due first. Callers read the clock before taking the
    /// sale, so `now` may step back a little: holds are inserted in place, almost always last.
    expiry_queue: VecDeque<(Timestamp, OrderSeq)>,
    waitlist: Vec<WaitlistEntry>,
    /// Index into `waitlist` of the first entry that may still be waiting.
    waitlist_head: usize,
}

impl Sale {
    pub fn new(config: SaleConfig) -> Self {
        Self {
            available: config.stock,
            held: 0,
            sold: 0,
            orders: Vec::new(),
            buyers: HashMap::new(),
            by_key: HashMap::new(),
            expiry_queue: VecDeque::new(),
            waitlist: Vec::new(),
            waitlist_head: 0,
            config,
        }
    }

    /// Rebuilds a sale from its stored orders and waitlist (in seq / position order).
    /// Returns `None` when the stored data breaks the ledger (more units than stock).
    pub fn restore(config: SaleConfig, orders: Vec<Order>, waitlist: Vec<WaitlistEntry>) -> Option<Self> {
        let mut sale = Sale::new(config);
        for order in orders {
            if order.seq as usize != sale.orders.len() {
                return None;
            }
            let live_units = matches!(order.status, OrderStatus::Held | OrderStatus::Paid);
            let units = if live_units { order.quantity } else { 0 };
            sale.available = sale.available.checked_sub(units)?;
            sale.add_to_buyer(&order.user, order.seq, units);
            match order.status {
                OrderStatus::Held => {
                    sale.held += order.quantity;
                    sale.expiry_queue.push_back((order.expires_at, order.seq));
                }
                OrderStatus::Paid => sale.sold += order.quantity,
                OrderStatus::Cancelled | OrderStatus::Expired => {}
            }
            if let Some(key) = &order.idempotency_key {
                sale.by_key.insert((order.user.clone(), key.clone()), order.seq);
            }
            sale.orders.push(order);
        }
        sale.expiry_queue.make_contiguous().sort();
        sale.waitlist = waitlist;
        sale.advance_waitlist_head();
        sale.check_ledger();
        Some(sale)
    }

    pub fn config(&self) -> &SaleConfig {
        &self.config
    }

    pub fn available(&self) -> u32 {
        self.available
    }

    pub fn held(&self) -> u32 {
        self.held
    }

    pub fn sold(&self) -> u32 {
        self.sold
    }

    pub fn order(&self, seq: OrderSeq) -> Option<&Order> {
        self.orders.get(seq as usize)
    }

    pub fn orders(&self) -> &[Order] {
        &self.orders
    }

    pub fn waitlist_entry(&self, position: u32) -> Option<&WaitlistEntry> {
        self.waitlist.get(position as usize)
    }

    pub fn units_of(&self, user: &UserId) -> u32 {
        self.buyers.get(user).map_or(0, |buyer| buyer.units)
    }

    /// The user's orders in this sale, oldest first.
    pub fn orders_of<'a>(&'a self, user: &UserId) -> impl Iterator<Item = &'a Order> + 'a {
        let seqs = self.buyers.get(user).map(|buyer| (buyer.first, buyer.more.as_slice()));
        let (first, more) = seqs.map_or((None, &[][..]), |(first, more)| (Some(first), more));
        first.into_iter().chain(more.iter().copied()).map(|seq| &self.orders[seq as usize])
    }

    pub fn status(&self, now: Timestamp) -> SaleStatus {
        SaleStatus::at(self.config.starts_at, self.config.ends_at, self.buyable(), now)
    }

    fn in_window(&self, now: Timestamp) -> bool {
        let ended = self.config.ends_at.is_some_and(|end| now >= end);
        now >= self.config.starts_at && !ended
    }

    /// Takes `quantity` units for `user` as a hold, or returns the order an earlier request
    /// with the same idempotency key made.
    pub fn purchase(
        &mut self,
        user: &UserId,
        quantity: Quantity,
        key: Option<IdempotencyKey>,
        now: Timestamp,
        touched: &mut Touched,
    ) -> Result<PurchaseOutcome, SaleError> {
        if let Some(key) = &key {
            if let Some(&seq) = self.by_key.get(&(user.clone(), key.clone())) {
                return Ok(PurchaseOutcome::Existing(seq));
            }
        }
        let units = quantity.get();
        if units > self.config.per_user_limit {
            return Err(SaleError::InvalidQuantity);
        }
        if !self.in_window(now) {
            return Err(SaleError::NotLive);
        }
        if self.units_of(user) + units > self.config.per_user_limit {
            return Err(SaleError::LimitReached);
        }
        if self.buyable() < units {
            return Err(SaleError::SoldOut);
        }
        let seq = self.create_hold(user.clone(), units, key, now);
        touched.orders.push(seq);
        self.check_ledger();
        Ok(PurchaseOutcome::Created(seq))
    }

    fn create_hold(&mut self, user: UserId, units: u32, key: Option<IdempotencyKey>, now: Timestamp) -> OrderSeq {
        let seq = self.orders.len() as OrderSeq;
        let expires_at = now.plus_seconds(self.config.hold_seconds);
        self.available -= units;
        self.held += units;
        self.add_to_buyer(&user, seq, units);
        if let Some(key) = &key {
            self.by_key.insert((user.clone(), key.clone()), seq);
        }
        let queue = &mut self.expiry_queue;
        let at = queue.partition_point(|&(deadline, _)| deadline <= expires_at);
        queue.insert(at, (expires_at, seq));
        self.orders.push(Order {
            seq,
            user,
            quantity: units,
            status: OrderStatus::Held,
            created_at: now,
            expires_at,
            updated_at: now,
            idempotency_key: key,
            payment_ref: None,
        });
        seq
    }

    fn add_to_buyer(&mut self, user: &UserId, seq: OrderSeq, units: u32) {
        self.buyers
            .entry(user.clone())
            .and_modify(|buyer| buyer.more.push(seq))
            .or_insert(Buyer { units: 0, first: seq, more: Vec::new() })
            .units += units;
    }

    /// Owner lookup: another user's order is reported as not found.
    fn owned(&self, seq: OrderSeq, user: &UserId) -> Result<&Order, SaleError> {
        match self.orders.get(seq as usize) {
            Some(order) if &order.user == user => Ok(order),
            _ => Err(SaleError::OrderNotFound),
        }
    }

    /// Pays a hold. Paying a paid order again is a no-op; a hold past its deadline expires
    /// here, in the same step, so pay and expiry can never both win.
    pub fn pay(
        &mut self,
        seq: OrderSeq,
        user: &UserId,
        payment_ref: Option<String>,
        now: Timestamp,
        touched: &mut Touched,
    ) -> Result<(), SaleError> {
        let order = self.owned(seq, user)?;
        match order.status {
            OrderStatus::Paid => return Ok(()),
            OrderStatus::Cancelled => return Err(SaleError::OrderCancelled),
            OrderStatus::Expired => return Err(SaleError::HoldExpired),
            OrderStatus::Held => {}
        }
        if now >= order.expires_at {
            self.end_hold(seq, OrderStatus::Expired, now, touched);
            return Err(SaleError::HoldExpired);
        }
        let order = &mut self.orders[seq as usize];
        order.status = OrderStatus::Paid;
        order.payment_ref = payment_ref;
        order.updated_at = now;
        let units = order.quantity;
        self.held -= units;
        self.sold += units;
        touched.orders.push(seq);
        self.serve_waitlist(now, touched);
        self.check_ledger();
        Ok(())
    }

    /// Cancels a hold and gives its units back. Cancelling twice is a no-op.
    pub fn cancel(
        &mut self,
        seq: OrderSeq,
        user: &UserId,
        now: Timestamp,
        touched: &mut Touched,
    ) -> Result<(), SaleError> {
        let order = self.owned(seq, user)?;
        match order.status {
            OrderStatus::Cancelled => return Ok(()),
            OrderStatus::Paid => return Err(SaleError::OrderPaid),
            OrderStatus::Expired => return Err(SaleError::HoldExpired),
            OrderStatus::Held => {}
        }
        if now >= order.expires_at {
            self.end_hold(seq, OrderStatus::Expired, now, touched);
            return Err(SaleError::HoldExpired);
        }
        self.end_hold(seq, OrderStatus::Cancelled, now, touched);
        Ok(())
    }

    /// Expires every hold whose deadline is at or before `now`.
    pub fn expire_due(&mut self, now: Timestamp, touched: &mut Touched) {
        while let Some(&(deadline, seq)) = self.expiry_queue.front() {
            if deadline > now {
                break;
            }
            self.expiry_queue.pop_front();
            let still_held = self.orders[seq as usize].status == OrderStatus::Held;
            if still_held {
                self.end_hold(seq, OrderStatus::Expired, now, touched);
            }
        }
    }

    /// The earliest deadline among the holds, if any (may be of a hold already ended).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.expiry_queue.front().map(|&(deadline, _)| deadline)
    }

    fn end_hold(&mut self, seq: OrderSeq, status: OrderStatus, now: Timestamp, touched: &mut Touched) {
        let order = &mut self.orders[seq as usize];
        debug_assert_eq!(order.status, OrderStatus::Held);
        order.status = status;
        order.updated_at = now;
        let units = order.quantity;
        let user = order.user.clone();
        self.held -= units;
        if let Some(buyer) = self.buyers.get_mut(&user) {
            buyer.units -= units;
        }
        touched.orders.push(seq);
        self.release(units, now, touched);
        self.check_ledger();
    }

    /// Returns units to the sale: the waitlist, first come first served, before `available`.
    fn release(&mut self, units: u32, now: Timestamp, touched: &mut Touched) {
        self.available += units;
        self.serve_waitlist(now, touched);
    }

    fn check_ledger(&self) {
        debug_assert_eq!(
            u64::from(self.available) + u64::from(self.held) + u64::from(self.sold),
            u64::from(self.config.stock),
            "ledger broken"
        );
    }
}

#[cfg(test)]
mod tests;
mod waitlist;
