//! Stampede's domain: flash sales, holds, orders and the waitlist.
//!
//! Everything here is pure: no I/O, no clocks. Every operation takes `now` explicitly so the
//! engine, the tests and the property tests drive time themselves.

pub mod auction;
pub mod room;
pub mod sale;
pub mod types;

pub use auction::{
    Auction, AuctionConfig, AuctionError, AuctionStatus, Bid, BidOutcome, BidSeq, BidStatus, EndReason, Ladder, Outcome,
};
pub use room::{Place, Room, RoomConfig, RoomError, RoomMode, RoomSettings, RoomState, Ticket, TicketSeq};
pub use sale::{
    Order, OrderSeq, OrderStatus, PurchaseOutcome, Sale, SaleConfig, SaleError, SaleStatus, Touched, WaitlistEntry,
    WaitlistStatus,
};
pub use types::{IdempotencyKey, Quantity, Timestamp, UserId, ValidationError};
