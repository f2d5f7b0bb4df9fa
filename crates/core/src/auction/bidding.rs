//! The steps that change an auction: bidding with proxy resolution, buy-now and closing.

use super::{Auction, AuctionError, AuctionStatus, Bid, BidOutcome, BidSeq, BidStatus, EndReason, Leader, Outcome};
use crate::types::{IdempotencyKey, Timestamp, UserId};

impl Auction {
    /// Places a bid with this maximum, or returns the bid an earlier request with the same
    /// idempotency key made. The replay comes first so a retry after the close, or after the
    /// minimum moved past the amount, still gets its original answer.
    pub fn place_bid(
        &mut self,
        user: &UserId,
        max_amount_cents: i64,
        key: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<BidOutcome, AuctionError> {
        if let Some(seq) = self.earlier_bid(user, key.as_ref(), max_amount_cents)? {
            return Ok(BidOutcome::Replayed(seq));
        }
        if !self.takes_bids(now) {
            return Err(AuctionError::NotLive);
        }
        if self.is_seller(user) {
            return Err(AuctionError::SellerMayNotBid);
        }
        let minimum_cents = self.minimum_for(user);
        if max_amount_cents < minimum_cents {
            return Err(AuctionError::BidTooLow { minimum_cents });
        }
        let seq = self.bids.len() as BidSeq;
        let status = self.resolve(user, max_amount_cents, seq);
        // `resolve` always leaves a leader; the fallback only keeps this free of `unwrap`.
        let leader_after = self.leader.as_ref().map_or(user, |leader| &leader.user).clone();
        self.remember(Bid {
            seq,
            user: user.clone(),
            max_amount_cents,
            placed_at: now,
            idempotency_key: key,
            status,
            price_after_cents: self.price_cents,
            leader_after,
        });
        self.extend_if_closing(now);
        self.check_proxy();
        Ok(BidOutcome::Accepted(seq))
    }

    /// The earlier bid of this user under this key: the same bid again, or a misuse of the key.
    fn earlier_bid(
        &self,
        user: &UserId,
        key: Option<&IdempotencyKey>,
        max_amount_cents: i64,
    ) -> Result<Option<BidSeq>, AuctionError> {
        let Some(key) = key else {
            return Ok(None);
        };
        let Some(&seq) = self.by_key.get(&(user.clone(), key.clone())) else {
            return Ok(None);
        };
        match self.bids.get(seq as usize) {
            Some(bid) if bid.max_amount_cents == max_amount_cents => Ok(Some(seq)),
            Some(_) | None => Err(AuctionError::KeyReused),
        }
    }

    /// Bids are taken before the start too (pre-bids), until the end or an earlier buy-now.
    fn takes_bids(&self, now: Timestamp) -> bool {
        match self.status(now) {
            AuctionStatus::Scheduled | AuctionStatus::Live => true,
            AuctionStatus::Ended => false,
        }
    }

    fn is_seller(&self, user: &UserId) -> bool {
        user.as_str() == self.config.seller_id
    }

    /// The lowest maximum this user may bid now. The leader competes only with themselves, so
    /// they must raise their own maximum, and also reach the general minimum (which is above
    /// their maximum when a tie left the price at it).
    fn minimum_for(&self, user: &UserId) -> i64 {
        let next = self.min_next_bid_cents();
        match &self.leader {
            Some(leader) if &leader.user == user => next.max(leader.max_cents.saturating_add(1)),
            Some(_) | None => next,
        }
    }

    /// Applies one bid to the proxy state and returns the bidder's status after it. No checks:
    /// `place_bid` made them, and `restore` replays bids that passed them once.
    pub(super) fn resolve(&mut self, user: &UserId, max_cents: i64, seq: BidSeq) -> BidStatus {
        let challenger = Leader { user: user.clone(), max_cents, seq };
        let (status, price) = match self.leader.take() {
            None => {
                self.leader = Some(challenger);
                (BidStatus::Leading, self.config.starting_price_cents)
            }
            Some(mut leader) if &leader.user == user => {
                // Raising one's own maximum bids against nobody: the price stays.
                leader.max_cents = leader.max_cents.max(max_cents);
                self.leader = Some(leader);
                (BidStatus::Leading, self.price_cents)
            }
            Some(leader) if max_cents > leader.max_cents => {
                self.raise_second(leader.max_cents);
                self.leader = Some(challenger);
                (BidStatus::Leading, self.proxy_price())
            }
            Some(leader) => {
                self.raise_second(max_cents);
                self.leader = Some(leader);
                (BidStatus::Outbid, self.proxy_price())
            }
        };
        self.price_cents = self.with_reserve(price);
        status
    }

    fn raise_second(&mut self, max_cents: i64) {
        self.second_max_cents = Some(self.second_max_cents.map_or(max_cents, |second| second.max(max_cents)));
    }

    /// The leader pays one increment (at the runner-up's maximum) over the runner-up's maximum,
    /// never more than their own maximum and never less than the starting price.
    fn proxy_price(&self) -> i64 {
        let starting = self.config.starting_price_cents;
        let (Some(leader), Some(second)) = (&self.leader, self.second_max_cents) else {
            return starting;
        };
        let over_second = second.saturating_add(self.config.ladder.increment_at(second));
        over_second.min(leader.max_cents).max(starting)
    }

    /// A leader whose maximum meets the reserve pays at least the reserve: otherwise the lot
    /// would sell below it although the bidder agreed to more. Never above their maximum.
    fn with_reserve(&self, price: i64) -> i64 {
        match (self.config.reserve_price_cents, &self.leader) {
            (Some(reserve), Some(leader)) if leader.max_cents >= reserve => price.max(reserve).min(leader.max_cents),
            (Some(_), Some(_)) | (Some(_), None) | (None, _) => price,
        }
    }

    pub(super) fn remember(&mut self, bid: Bid) {
        if let Some(key) = &bid.idempotency_key {
            self.by_key.insert((bid.user.clone(), key.clone()), bid.seq);
        }
        self.bids.push(bid);
        self.version += 1;
    }

    /// Soft close: a bid in the last moments pushes the end out, so nobody wins by sniping in
    /// the final second. Not before the start (the end is far off then), and only while the
    /// cap allows; an extension counts only if the end actually moved.
    fn extend_if_closing(&mut self, now: Timestamp) {
        let window_ms = i64::from(self.config.soft_close_seconds) * 1000;
        let started = now >= self.config.starts_at;
        let closing = self.ends_at.0.saturating_sub(now.0) <= window_ms;
        let allowed = self.config.max_extensions.is_none_or(|cap| self.extensions < cap);
        if window_ms == 0 || !started || !closing || !allowed {
            return;
        }
        let extended = self.ends_at.max(now.plus_seconds(self.config.extend_seconds));
        if extended > self.ends_at {
            self.ends_at = extended;
            self.extensions += 1;
        }
    }

    /// Buys the lot at the buy-now price and ends the auction at once, with the buyer as winner.
    pub fn buy_now(&mut self, user: &UserId, now: Timestamp) -> Result<(), AuctionError> {
        match self.status(now) {
            AuctionStatus::Live => {}
            AuctionStatus::Scheduled | AuctionStatus::Ended => return Err(AuctionError::NotLive),
        }
        if self.is_seller(user) {
            return Err(AuctionError::SellerMayNotBid);
        }
        let offered = self.buy_now_offered(now);
        let Some(price_cents) = self.config.buy_now_price_cents.filter(|_| offered) else {
            return Err(AuctionError::BuyNowUnavailable);
        };
        let reason = EndReason::BoughtNow;
        self.finish(Outcome { ended_at: now, reason, winner: Some(user.clone()), price_cents });
        Ok(())
    }

    /// Ends the auction if its end has come and it has not ended yet: the leader wins at the
    /// current price if the reserve is met. Returns the outcome only when this call set it.
    pub fn close_if_due(&mut self, now: Timestamp) -> Option<&Outcome> {
        if self.outcome.is_some() || now < self.ends_at {
            return None;
        }
        let winner = self.leader.as_ref().filter(|_| self.reserve_met()).map(|leader| leader.user.clone());
        let reason = EndReason::Closed;
        self.finish(Outcome { ended_at: self.ends_at, reason, winner, price_cents: self.price_cents });
        self.outcome.as_ref()
    }

    pub(super) fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.version += 1;
    }

    /// The proxy invariants: the leader holds the highest maximum and pays within it.
    fn check_proxy(&self) {
        if let Some(leader) = &self.leader {
            let leading_bid = self.bids.get(leader.seq as usize);
            debug_assert!(leading_bid.is_some_and(|bid| bid.user == leader.user), "leader without their bid");
            debug_assert!(self.second_max_cents.is_none_or(|second| second <= leader.max_cents), "second above leader");
            debug_assert!(self.price_cents <= leader.max_cents, "price above the leader's maximum");
            debug_assert!(self.price_cents >= self.config.starting_price_cents, "price below the start");
        }
    }
}
