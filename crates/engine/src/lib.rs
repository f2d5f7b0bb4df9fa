//! The hot path of Stampede: the [`Backend`] port, its implementations and background jobs.
//!
//! Backends are sibling modules behind one trait, chosen once at start-up. The embedded backend
//! keeps hot state in memory and makes every change durable in SQLite before it is reported;
//! the scale-out backend keeps it in Redis, decided by Lua scripts, with Postgres as the record.

pub mod backend;
pub mod changes;
pub mod conformance;
pub mod embedded;
pub mod expiry;
pub mod ids;
pub mod limits;
pub mod rooms;
pub mod scaleout;
pub mod telemetry;

pub use backend::{
    AuctionView, Backend, BidCommand, BidResult, EngineError, Ledger, LedgerCounts, NewAuction, NewSale, NewUser,
    OrderView, PurchaseCommand, PurchaseResult, SaleView, UserRecord,
};
pub use changes::Change;
pub use embedded::{Embedded, EmbeddedOptions};
pub use limits::{Ban, Limits, MemoryLimits, Policy, Quota, RedisLimits, Risk, Subject, Verdict};
pub use scaleout::{Reconciliation, RedisTarget, ScaleOut, ScaleOutOptions};

/// Locks a std mutex, carrying on after a panic elsewhere: every step leaves the state whole
/// before anything that can panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
