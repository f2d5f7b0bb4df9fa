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

/// Most changes a follower takes in one wake-up, so its timers still run during a long burst.
pub const BURST_LIMIT: usize = 1024;

/// `first` (just received) followed by the changes already waiting on `feed`, at most
/// [`BURST_LIMIT`] in all: a burst costs its follower one wake-up instead of one per change.
/// A lag or a closed feed found on the way ends the burst as the item `recv` would have given.
pub fn burst(
    first: Result<Change, broadcast::error::RecvError>,
    feed: &mut broadcast::Receiver<Change>,
) -> impl Iterator<Item = Result<Change, broadcast::error::RecvError>> + '_ {
    use broadcast::error::{RecvError, TryRecvError};
    let mut ended = first.is_err();
    let rest = std::iter::from_fn(move || {
        if ended {
            return None;
        }
        match feed.try_recv() {
            Ok(change) => Some(Ok(change)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Lagged(missed)) => {
                ended = true;
                Some(Err(RecvError::Lagged(missed)))
            }
            Err(TryRecvError::Closed) => {
                ended = true;
                Some(Err(RecvError::Closed))
            }
        }
    });
    std::iter::once(first).chain(rest).take(BURST_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use broadcast::error::RecvError;

    fn sale(id: &str) -> Change {
        Change::Sale { sale_id: Arc::from(id) }
    }

    #[tokio::test]
    async fn a_burst_takes_what_is_waiting_and_stops_at_the_limit() {
        let feed = feed();
        let mut follower = feed.subscribe();
        for n in 0..BURST_LIMIT + 5 {
            feed.send(sale(&n.to_string())).unwrap();
        }
        let first = follower.recv().await;
        let taken: Vec<_> = burst(first, &mut follower).collect();
        assert_eq!(taken.len(), BURST_LIMIT);
        assert_eq!(taken[0], Ok(sale("0")));
        assert_eq!(taken[BURST_LIMIT - 1], Ok(sale(&(BURST_LIMIT - 1).to_string())));
        // The rest is still there for the next wake-up, in order.
        let first = follower.recv().await;
        let rest: Vec<_> = burst(first, &mut follower).collect();
        assert_eq!(rest.len(), 5);
        assert_eq!(rest[0], Ok(sale(&BURST_LIMIT.to_string())));
    }

    #[tokio::test]
    async fn a_burst_ends_with_a_lag_or_the_end_of_the_feed() {
        let (feed, mut follower) = broadcast::channel(2);
        feed.send(sale("a")).unwrap();
        let first = follower.recv().await;
        for n in 0..3 {
            feed.send(sale(&n.to_string())).unwrap();
        }
        let taken: Vec<_> = burst(first, &mut follower).collect();
        assert_eq!(taken, vec![Ok(sale("a")), Err(RecvError::Lagged(1))]);

        let first = follower.recv().await;
        drop(feed);
        let taken: Vec<_> = burst(first, &mut follower).collect();
        assert_eq!(taken, vec![Ok(sale("1")), Ok(sale("2")), Err(RecvError::Closed)]);
        // An error received first is the whole burst.
        let first = follower.recv().await;
        assert_eq!(burst(first, &mut follower).collect::<Vec<_>>(), vec![Err(RecvError::Closed)]);
    }
}
