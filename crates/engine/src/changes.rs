//! The change feed: every state change announces itself here, in decision order per sale or
//! auction. Streams, and later metrics and fraud detection, follow it; nothing polls the store to
//! learn what changed.
//!
//! A change names what changed, not its new state: a follower that cares reads the current state
//! (coalescing bursts for free), and one that does not care pays nothing.

use std::sync::Arc;

use stampede_core::UserId;
use tokio::sync::broadcast;

/// Changes a slow follower may fall behind by before it is told it lagged (and must resync).
pub const FEED_CAPACITY: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A sale's counters, status or waitlist changed.
    Sale { sale_id: Arc<str> },
    /// An order was created or changed status (held, paid, cancelled, expired).
    Order { user: UserId, order_id: String },
    /// An auction's price, leader, end or status changed.
    Auction { auction_id: Arc<str> },
    /// `user` led the auction and no longer does.
    Outbid { user: UserId, auction_id: Arc<str> },
    /// The auction ended with `user` as the winner; the order is the hold to pay.
    AuctionWon { user: UserId, auction_id: Arc<str>, order_id: String },
}

/// A new feed. Sending on a feed nobody follows is free and never fails the step.
pub fn feed() -> broadcast::Sender<Change> {
    broadcast::channel(FEED_CAPACITY).0
}
