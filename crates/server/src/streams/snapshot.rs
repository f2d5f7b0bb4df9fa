//! The state a topic stream carries: the same JSON as the resource's GET.

use stampede_core::Timestamp;

use super::hub::{Frame, Topic};
use crate::auctions::AuctionBody;
use crate::sales::SaleBody;
use crate::AppState;

/// The topic's current state as a frame, or None when it cannot be read now.
pub async fn of(state: &AppState, topic: &Topic) -> Option<Frame> {
    match topic {
        Topic::Sale(sale_id) => {
            let sale = state.backend.sale(sale_id, Timestamp::now()).await.ok()?;
            Some(Frame::snapshot("sale", &SaleBody::from(sale)))
        }
        Topic::Auction(auction_id) => Some(Frame::snapshot("auction", &auction_body(state, auction_id).await?)),
    }
}

pub async fn auction_body(state: &AppState, auction_id: &str) -> Option<AuctionBody> {
    let auction = state.backend.auction(auction_id, Timestamp::now()).await.ok()?;
    Some(AuctionBody::from(auction))
}
