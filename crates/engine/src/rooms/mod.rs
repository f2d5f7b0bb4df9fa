//! Waiting rooms: the port that keeps each sale's queue (in this process for the embedded mode),
//! and a sale's room settings as the stores keep them (JSON, the same text in SQLite and Redis).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stampede_core::{RoomConfig, RoomMode, RoomSettings, RoomState, TicketSeq, Timestamp, UserId};

use crate::backend::EngineError;

pub mod conformance;
mod memory;
mod redis;

pub use self::memory::MemoryRooms;
pub use self::redis::RedisRooms;

#[derive(Serialize, Deserialize)]
struct RoomRecord {
    mode: String,
    opens_at: Option<i64>,
    admit_per_minute: u32,
    max_active: u32,
    pass_seconds: u32,
}

pub fn settings_to_json(settings: &RoomSettings) -> String {
    let record = RoomRecord {
        mode: settings.mode.as_str().to_owned(),
        opens_at: settings.opens_at.map(|at| at.0),
        admit_per_minute: settings.admit_per_minute,
        max_active: settings.max_active,
        pass_seconds: settings.pass_seconds,
    };
    serde_json::to_string(&record).unwrap_or_default()
}

pub fn settings_from_json(text: &str) -> Option<RoomSettings> {
    let record: RoomRecord = serde_json::from_str(text).ok()?;
    Some(RoomSettings {
        mode: RoomMode::parse(&record.mode)?,
        opens_at: record.opens_at.map(Timestamp),
        admit_per_minute: record.admit_per_minute,
        max_active: record.max_active,
        pass_seconds: record.pass_seconds,
    })
}

/// Where a ticket stands, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Waiting { ahead: u32, order_known: bool, eta_seconds: u64 },
    Admitted { admitted_at: Timestamp, pass_expires_at: Timestamp },
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub ticket: String,
    pub standing: Standing,
    /// False when the user already had a ticket (one per user and sale).
    pub new: bool,
}

/// A room at a glance, for admins, the dashboard and the queue page.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSummary {
    pub state: RoomState,
    pub waiting: u32,
    pub active: u32,
    pub admitted: u32,
    pub rate_per_second: f64,
}

/// The waiting rooms port: one per sale that has one, created on first use from the sale's
/// settings (`config`, which every call passes: the rooms keep no copy of the sale).
#[async_trait]
pub trait Rooms: Send + Sync {
    async fn join(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Joined, EngineError>;
    /// The standing of the caller's ticket; another user's ticket is unknown.
    async fn standing(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        ticket: &str,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Standing, EngineError>;
    /// One pacing step of one room; returns who was let in and when their pass ends.
    async fn admit_due(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        buyable: u32,
        now: Timestamp,
    ) -> Result<Vec<(UserId, Timestamp)>, EngineError>;
    /// The user bought (or left): their place goes to the next.
    async fn finish(&self, sale_id: &str, user: &UserId) -> Result<(), EngineError>;
    async fn set_state(&self, sale_id: &str, config: &RoomConfig, state: RoomState) -> Result<(), EngineError>;
    async fn summary(&self, sale_id: &str, config: &RoomConfig, now: Timestamp) -> Result<RoomSummary, EngineError>;
    /// Sales whose rooms exist here (someone joined or an admin set a state).
    async fn sales(&self) -> Result<Vec<String>, EngineError>;
    /// The user's ticket in the sale's room, if they have one.
    async fn ticket_of(&self, sale_id: &str, user: &UserId) -> Result<Option<String>, EngineError>;
}

/// `q_<sale suffix>_<seq in hex>`.
pub fn ticket_id(sale_id: &str, seq: TicketSeq) -> String {
    format!("q_{}_{seq:x}", sale_id.strip_prefix("s_").unwrap_or(sale_id))
}

/// The seq a ticket id names, if it is one of this sale's.
pub fn ticket_seq(sale_id: &str, ticket: &str) -> Option<TicketSeq> {
    let rest = ticket.strip_prefix("q_")?;
    let (suffix, seq) = rest.rsplit_once('_')?;
    let same_sale = sale_id.strip_prefix("s_") == Some(suffix);
    same_sale.then(|| u32::from_str_radix(seq, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_json() {
        let settings = RoomSettings {
            mode: RoomMode::Shuffled,
            opens_at: Some(Timestamp(1_800_000_000_123)),
            admit_per_minute: 600,
            max_active: 50,
            pass_seconds: 120,
        };
        assert_eq!(settings_from_json(&settings_to_json(&settings)), Some(settings));
        assert_eq!(settings_from_json("{\"mode\":\"bogus\"}"), None);
    }
}
