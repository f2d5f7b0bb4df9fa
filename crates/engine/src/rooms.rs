//! Waiting rooms as the stores keep them: a sale's room settings as JSON, the same text in
//! SQLite and in Redis.

use serde::{Deserialize, Serialize};
use stampede_core::{RoomMode, RoomSettings, Timestamp};

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
