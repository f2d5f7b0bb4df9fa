//! One live auction: proxy bidding on a price ladder, a hidden reserve, buy-now and soft close,
//! as one state machine.
//!
//! Proxy bidding means a bid is the most the bidder is willing to pay, not the price: the
//! auction bids on their behalf, one increment at a time, so the leader pays one increment over
//! the runner-up's maximum and never more than their own. Only the leader's maximum and the
//! second-highest maximum matter for that, so that is all the state keeps besides the record of
//! bids. Every method is one atomic step: the caller holds the only `&mut`.

use std::collections::HashMap;

use crate::types::{IdempotencyKey, Timestamp, UserId};

mod bidding;
mod ladder;
#[cfg(test)]
mod tests;

pub use ladder::Ladder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuctionConfig {
    pub title: String,
    pub seller_id: String,
    /// At least 1 (validated at the edge, not here).
    pub starting_price_cents: i64,
    /// Hidden: never revealed, only whether it is met.
    pub reserve_price_cents: Option<i64>,
    pub buy_now_price_cents: Option<i64>,
    pub starts_at: Timestamp,
    /// The scheduled end; soft close may push the actual end later.
    pub ends_at: Timestamp,
    /// A bid this close to the end extends it; 0 = hard close.
    pub soft_close_seconds: u32,
    pub extend_seconds: u32,
    /// `None` = unlimited.
    pub max_extensions: Option<u32>,
    pub ladder: Ladder,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuctionStatus {
    Scheduled,
    Live,
    Ended,
}

impl AuctionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuctionStatus::Scheduled => "scheduled",
            AuctionStatus::Live => "live",
            AuctionStatus::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BidStatus {
    Leading,
    Outbid,
}

impl BidStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BidStatus::Leading => "leading",
            BidStatus::Outbid => "outbid",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "leading" => Some(BidStatus::Leading),
            "outbid" => Some(BidStatus::Outbid),
            _ => None,
        }
    }
}

/// Index of a bid inside its auction, 0-based in acceptance order.
pub type BidSeq = u32;

/// One accepted bid as recorded: the answer given when it was accepted, replayed for idempotent
/// retries. Later bids do not rewrite it: `status` is the bidder's status right after this bid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bid {
    pub seq: BidSeq,
    pub user: UserId,
    pub max_amount_cents: i64,
    pub placed_at: Timestamp,
    pub idempotency_key: Option<IdempotencyKey>,
    pub status: BidStatus,
    pub price_after_cents: i64,
    pub leader_after: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    Closed,
    BoughtNow,
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::BoughtNow => "bought_now",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "closed" => Some(EndReason::Closed),
            "bought_now" => Some(EndReason::BoughtNow),
            _ => None,
        }
    }
}

/// How the auction ended: `winner` is `None` when there was no bid or the reserve was not met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The end time for a close (bids were refused from then on, however late the close ran),
    /// the moment of purchase for buy-now.
    pub ended_at: Timestamp,
    pub reason: EndReason,
    pub winner: Option<UserId>,
    /// What the winner pays: the current price, or the buy-now price. Without a winner, the
    /// final current price.
    pub price_cents: i64,
}

/// Why a step was refused. Each maps to one API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuctionError {
    #[error("the auction is not live")]
    NotLive,
    #[error("the bid is below the minimum of {minimum_cents} cents")]
    BidTooLow { minimum_cents: i64 },
    #[error("the seller may not bid on their own lot")]
    SellerMayNotBid,
    #[error("buy-now is not offered")]
    BuyNowUnavailable,
    #[error("the idempotency key was used for a different bid")]
    KeyReused,
}

/// What `place_bid` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BidOutcome {
    Accepted(BidSeq),
    /// The same user repeated an idempotency key with the same amount: the original bid.
    Replayed(BidSeq),
}

impl BidOutcome {
    pub fn seq(&self) -> BidSeq {
        match self {
            BidOutcome::Accepted(seq) | BidOutcome::Replayed(seq) => *seq,
        }
    }
}

/// The highest bidder and their maximum. `seq` is the bid that made them the leader (ties go
/// to the earlier bid, so a leader only changes on a strictly higher maximum).
#[derive(Debug, Clone)]
struct Leader {
    user: UserId,
    max_cents: i64,
    seq: BidSeq,
}

#[derive(Debug, Clone)]
pub struct Auction {
    config: AuctionConfig,
    bids: Vec<Bid>,
    by_key: HashMap<(UserId, IdempotencyKey), BidSeq>,
    leader: Option<Leader>,
    /// The highest maximum among bids that do not lead (the runner-up's), if any.
    second_max_cents: Option<i64>,
    /// Kept rather than derived: a leader raising their own maximum must not move it.
    price_cents: i64,
    ends_at: Timestamp,
    extensions: u32,
    outcome: Option<Outcome>,
    version: u64,
}

impl Auction {
    pub fn new(config: AuctionConfig) -> Self {
        Self {
            bids: Vec::new(),
            by_key: HashMap::new(),
            leader: None,
            second_max_cents: None,
            price_cents: config.starting_price_cents,
            ends_at: config.ends_at,
            extensions: 0,
            outcome: None,
            version: 1,
            config,
        }
    }

    /// Rebuilds an auction from its stored bids (in seq order) and its stored end. The bids are
    /// replayed through the same resolution as live bids, without the time and amount checks
    /// they passed once, so the proxy state is exactly what it was. The version comes out the
    /// same too: one per bid, one for the outcome. Returns `None` when the seqs are not `0..n`.
    pub fn restore(
        config: AuctionConfig,
        bids: Vec<Bid>,
        ends_at: Timestamp,
        extensions: u32,
        outcome: Option<Outcome>,
    ) -> Option<Self> {
        let mut auction = Auction::new(config);
        for bid in bids {
            if bid.seq as usize != auction.bids.len() {
                return None;
            }
            auction.resolve(&bid.user, bid.max_amount_cents, bid.seq);
            auction.remember(bid);
        }
        auction.ends_at = ends_at;
        auction.extensions = extensions;
        if let Some(outcome) = outcome {
            auction.finish(outcome);
        }
        Some(auction)
    }

    pub fn config(&self) -> &AuctionConfig {
        &self.config
    }

    pub fn status(&self, now: Timestamp) -> AuctionStatus {
        if self.outcome.is_some() || now >= self.ends_at {
            AuctionStatus::Ended
        } else if now < self.config.starts_at {
            AuctionStatus::Scheduled
        } else {
            AuctionStatus::Live
        }
    }

    /// The current end, after any soft-close extensions.
    pub fn ends_at(&self) -> Timestamp {
        self.ends_at
    }

    pub fn extensions(&self) -> u32 {
        self.extensions
    }

    /// The starting price until the first bid.
    pub fn current_price_cents(&self) -> i64 {
        self.price_cents
    }

    pub fn leader(&self) -> Option<&UserId> {
        self.leader.as_ref().map(|leader| &leader.user)
    }

    pub fn bid_count(&self) -> u32 {
        self.bids.len() as u32
    }

    pub fn bids(&self) -> &[Bid] {
        &self.bids
    }

    pub fn bid(&self, seq: BidSeq) -> Option<&Bid> {
        self.bids.get(seq as usize)
    }

    /// True without a reserve; with one, whether the leader's maximum reaches it. Only this
    /// yes/no is ever shown, never the reserve itself.
    pub fn reserve_met(&self) -> bool {
        match (self.config.reserve_price_cents, &self.leader) {
            (None, _) => true,
            (Some(reserve), Some(leader)) => leader.max_cents >= reserve,
            (Some(_), None) => false,
        }
    }

    /// The lowest maximum a new bid may have: the starting price before the first bid, then
    /// one increment (taken at the current price) over the current price.
    pub fn min_next_bid_cents(&self) -> i64 {
        match self.leader {
            None => self.config.starting_price_cents,
            Some(_) => self.price_cents.saturating_add(self.config.ladder.increment_at(self.price_cents)),
        }
    }

    /// Buy-now is there while live and until bidding has shown the lot is worth the auction:
    /// before the first bid or, with a reserve, until the reserve is met.
    pub fn buy_now_offered(&self, now: Timestamp) -> bool {
        let bidding_open = self.leader.is_none() || (self.config.reserve_price_cents.is_some() && !self.reserve_met());
        let live = match self.status(now) {
            AuctionStatus::Live => true,
            AuctionStatus::Scheduled | AuctionStatus::Ended => false,
        };
        live && self.config.buy_now_price_cents.is_some() && bidding_open
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// A monotonically increasing version, +1 for every change (bid, extension, close), so
    /// watchers can tell a fresh view from a stale one. Starts at 1; a bid that also extends
    /// the end counts once.
    pub fn version(&self) -> u64 {
        self.version
    }
}
