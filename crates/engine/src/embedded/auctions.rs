//! Auctions in the embedded backend: one lock per auction (a single writer), each step
//! journaled in its lock scope and durable before the caller hears of it. A win creates the
//! lot's sale with the winner's hold in the same step and the same journal append, so the
//! close and the order are durable together or not at all.

use std::sync::{Arc, Mutex, PoisonError};

use stampede_core::{
    Auction, AuctionConfig, BidOutcome, Outcome, Quantity, Sale, SaleConfig, Timestamp, Touched, UserId,
};

use super::journal::{Lsn, Record};
use super::store::StoredAuction;
use super::{Embedded, OrderMeta, SaleShard, SaleSlot};
use crate::backend::{newest_first, unavailable, AuctionView, BidCommand, BidResult, EngineError, NewAuction};
use crate::changes::Change;
use crate::{ids, lock};

pub(crate) struct AuctionSlot {
    id: Arc<str>,
    payment_seconds: u32,
    // std Mutex: one bid is a few comparisons; never held across an await.
    state: Mutex<AuctionShard>,
}

struct AuctionShard {
    auction: Auction,
    /// Journal position of the auction's latest change.
    lsn: Lsn,
}

/// What one auction step changed, to journal and announce.
#[derive(Default)]
struct Effects {
    records: Vec<Record>,
    changes: Vec<Change>,
    lot: Option<Arc<SaleSlot>>,
}

impl Embedded {
    pub(super) fn restore_auctions(&self, stored: Vec<StoredAuction>) -> Result<(), EngineError> {
        let mut auctions = self.auctions.write().unwrap_or_else(PoisonError::into_inner);
        for stored in stored {
            let id: Arc<str> = Arc::from(stored.id.as_str());
            let auction =
                Auction::restore(stored.config, stored.bids, stored.ends_at, stored.extensions, stored.outcome)
                    .ok_or_else(|| unavailable(format!("stored bids of auction {id} are not in sequence")))?;
            let state = Mutex::new(AuctionShard { auction, lsn: 0 });
            auctions.insert(id.clone(), Arc::new(AuctionSlot { id, payment_seconds: stored.payment_seconds, state }));
        }
        Ok(())
    }

    fn auction_slot(&self, auction_id: &str) -> Result<Arc<AuctionSlot>, EngineError> {
        let auctions = self.auctions.read().unwrap_or_else(PoisonError::into_inner);
        auctions.get(auction_id).cloned().ok_or(EngineError::AuctionNotFound)
    }

    fn all_auctions(&self) -> Vec<Arc<AuctionSlot>> {
        self.auctions.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    pub(super) async fn create_auction_now(&self, new: NewAuction, now: Timestamp) -> Result<AuctionView, EngineError> {
        let id: Arc<str> = Arc::from(ids::new_auction_id());
        let (config, payment_seconds) = new.into_config(now);
        let auction = Auction::new(config.clone());
        let view = AuctionView::of(&id, &auction, now);
        let lsn = {
            let mut auctions = self.auctions.write().unwrap_or_else(PoisonError::into_inner);
            let lsn = self
                .journal
                .append([Record::Auction { id: id.clone(), config, payment_seconds }, state_record(&id, &auction)]);
            let state = Mutex::new(AuctionShard { auction, lsn });
            auctions.insert(id.clone(), Arc::new(AuctionSlot { id, payment_seconds, state }));
            lsn
        };
        self.journal.wait_durable(lsn).await?;
        Ok(view)
    }

    /// The auction as of its latest durable change.
    pub(super) async fn auction_now(&self, auction_id: &str, now: Timestamp) -> Result<AuctionView, EngineError> {
        let slot = self.auction_slot(auction_id)?;
        let (view, lsn) = {
            let shard = lock(&slot.state);
            (AuctionView::of(&slot.id, &shard.auction, now), shard.lsn)
        };
        self.journal.wait_durable(lsn).await?;
        Ok(view)
    }

    /// Every auction as of its latest durable change, newest first.
    pub(super) async fn list_auctions_now(&self, now: Timestamp) -> Result<Vec<AuctionView>, EngineError> {
        let mut listed = Vec::new();
        let mut newest_change = 0;
        for slot in self.all_auctions() {
            let shard = lock(&slot.state);
            newest_change = newest_change.max(shard.lsn);
            listed.push((shard.auction.config().created_at, AuctionView::of(&slot.id, &shard.auction, now)));
        }
        self.journal.wait_durable(newest_change).await?;
        Ok(newest_first(listed, |auction| &auction.id))
    }

    pub(super) async fn bid_now(&self, command: BidCommand, now: Timestamp) -> Result<BidResult, EngineError> {
        let slot = self.auction_slot(&command.auction_id)?;
        let (outcome, lsn) = self.auction_step(&slot, now, |auction| {
            auction.place_bid(&command.user, command.max_amount_cents, command.idempotency_key, now)
        });
        self.journal.wait_durable(lsn).await?;
        let outcome = outcome?;
        let shard = lock(&slot.state);
        let bid = shard.auction.bid(outcome.seq()).ok_or(EngineError::AuctionNotFound)?;
        Ok(BidResult {
            id: ids::bid_id(&slot.id, bid.seq),
            status: bid.status,
            current_price_cents: bid.price_after_cents,
            leader_id: bid.leader_after.as_str().to_owned(),
            created: matches!(outcome, BidOutcome::Accepted(_)),
        })
    }

    pub(super) async fn buy_now_now(
        &self,
        auction_id: &str,
        user: &UserId,
        now: Timestamp,
    ) -> Result<AuctionView, EngineError> {
        let slot = self.auction_slot(auction_id)?;
        let (bought, lsn) = self.auction_step(&slot, now, |auction| auction.buy_now(user, now));
        self.journal.wait_durable(lsn).await?;
        bought?;
        let shard = lock(&slot.state);
        Ok(AuctionView::of(&slot.id, &shard.auction, now))
    }

    pub(super) async fn close_due_auctions_now(&self, now: Timestamp) -> Result<usize, EngineError> {
        let mut closed = 0;
        let mut last_lsn = 0;
        for slot in self.all_auctions() {
            let (ended, lsn) = self.auction_step(&slot, now, |auction| auction.close_if_due(now).is_some());
            closed += usize::from(ended);
            last_lsn = last_lsn.max(lsn);
        }
        self.journal.wait_durable(last_lsn).await?;
        Ok(closed)
    }

    /// Runs one step on an auction under its lock. If it changed the auction, the new bid, the
    /// new state and (for a win) the lot's sale and hold are journaled in one append, in the
    /// same lock scope, and announced.
    fn auction_step<T>(&self, slot: &AuctionSlot, now: Timestamp, decide: impl FnOnce(&mut Auction) -> T) -> (T, Lsn) {
        let mut shard = lock(&slot.state);
        let (version, bids, leader) =
            (shard.auction.version(), shard.auction.bid_count(), shard.auction.leader().cloned());
        let outcome = decide(&mut shard.auction);
        if shard.auction.version() == version {
            return (outcome, shard.lsn);
        }
        let effects = self.effects(slot, &shard.auction, bids, leader, now);
        let lsn = self.journal.append(effects.records);
        shard.lsn = lsn;
        if let Some(lot) = effects.lot {
            lock(&lot.state).meta[0].lsn = lsn;
            let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
            sales.insert(lot.id.clone(), lot);
        }
        for change in effects.changes {
            let _ = self.changes.send(change);
        }
        (outcome, lsn)
    }

    fn effects(
        &self,
        slot: &AuctionSlot,
        auction: &Auction,
        bids_before: u32,
        leader_before: Option<UserId>,
        now: Timestamp,
    ) -> Effects {
        let mut effects = Effects::default();
        let new_bids = auction.bids().iter().skip(bids_before as usize);
        effects.records.extend(new_bids.map(|bid| Record::Bid { auction_id: slot.id.clone(), bid: bid.clone() }));
        effects.records.push(state_record(&slot.id, auction));
        effects.changes.push(Change::Auction { auction_id: slot.id.clone() });
        let winner = auction.outcome().and_then(|outcome| outcome.winner.clone());
        let leader_now = winner.as_ref().or(auction.leader());
        if let Some(previous) = leader_before.filter(|previous| Some(previous) != leader_now) {
            effects.changes.push(Change::Outbid { user: previous, auction_id: slot.id.clone() });
        }
        if let (Some(outcome), Some(winner)) = (auction.outcome(), winner) {
            self.settle(slot, auction.config(), outcome, winner, now, &mut effects);
        }
        effects
    }

    /// The winner's order: the lot becomes a one-unit sale held for the winner, open only for
    /// the payment window, so nobody else can buy the unit if the hold runs out.
    fn settle(
        &self,
        slot: &AuctionSlot,
        config: &AuctionConfig,
        outcome: &Outcome,
        winner: UserId,
        now: Timestamp,
        effects: &mut Effects,
    ) {
        let lot_id: Arc<str> = Arc::from(ids::lot_sale_id(&slot.id));
        let sale_config = SaleConfig {
            name: config.title.clone(),
            stock: 1,
            price_cents: outcome.price_cents,
            starts_at: now.min(outcome.ended_at),
            ends_at: Some(now.plus_seconds(slot.payment_seconds)),
            per_user_limit: 1,
            hold_seconds: slot.payment_seconds,
            created_at: now,
            room: None,
            proof_of_work: false,
        };
        let mut sale = Sale::new(sale_config.clone());
        let mut touched = Touched::default();
        if let Err(error) = sale.purchase(&winner, Quantity::ONE, None, now, &mut touched) {
            tracing::error!(%error, auction = %slot.id, "the won lot could not be held for its winner");
            return;
        }
        let key = self.next_order_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let order = sale.order(0).cloned();
        effects.records.push(Record::Sale { id: lot_id.clone(), config: sale_config });
        effects.records.extend(order.map(|order| Record::Order { sale_id: lot_id.clone(), key, order }));
        let order_id = ids::order_id(&lot_id, 0);
        effects.changes.push(Change::Sale { sale_id: lot_id.clone() });
        effects.changes.push(Change::Order { user: winner.clone(), order_id: order_id.clone() });
        effects.changes.push(Change::AuctionWon { user: winner, auction_id: slot.id.clone(), order_id });
        let shard = SaleShard { sale, meta: vec![OrderMeta { key, lsn: 0 }] };
        effects.lot = Some(Arc::new(SaleSlot { id: lot_id, state: Mutex::new(shard) }));
    }
}

fn state_record(id: &Arc<str>, auction: &Auction) -> Record {
    Record::AuctionState {
        id: id.clone(),
        ends_at: auction.ends_at(),
        extensions: auction.extensions(),
        outcome: auction.outcome().cloned(),
    }
}
