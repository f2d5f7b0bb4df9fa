//! Rooms in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stampede_core::{Place, Room, RoomConfig, RoomError, RoomState, Timestamp, UserId};

use super::{ticket_id, ticket_seq, Joined, RoomSummary, Rooms, Standing};
use crate::backend::EngineError;
use crate::lock;

/// Rooms in this process: the embedded mode. A restart empties them (people join again; passes
/// already given stay valid, being signed, not stored).
#[derive(Default)]
pub struct MemoryRooms {
    // std Mutex over the map (rooms are added rarely) and one per room: a join or a pacing
    // step is a few map operations, never held across an await.
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
}

impl MemoryRooms {
    fn room(&self, sale_id: &str, config: &RoomConfig) -> Arc<Mutex<Room>> {
        let mut rooms = lock(&self.rooms);
        rooms.entry(sale_id.to_owned()).or_insert_with(|| Arc::new(Mutex::new(Room::new(config.clone())))).clone()
    }

    fn existing(&self, sale_id: &str) -> Option<Arc<Mutex<Room>>> {
        lock(&self.rooms).get(sale_id).cloned()
    }
}

fn standing_of(room: &Room, place: Place, now: Timestamp) -> Standing {
    match place {
        Place::Waiting { ahead, order_known } => {
            Standing::Waiting { ahead, order_known, eta_seconds: room.eta_seconds(ahead, now) }
        }
        Place::Admitted { at, pass_expires_at } => Standing::Admitted { admitted_at: at, pass_expires_at },
        Place::Finished => Standing::Finished,
    }
}

#[async_trait]
impl Rooms for MemoryRooms {
    async fn join(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Joined, EngineError> {
        let room = self.room(sale_id, config);
        let mut room = lock(&room);
        room.catch_up(now);
        let (seq, new) = room.join(user, now)?;
        let standing = standing_of(&room, room.place(seq, now)?, now);
        Ok(Joined { ticket: ticket_id(sale_id, seq), standing, new })
    }

    async fn standing(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        ticket: &str,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Standing, EngineError> {
        let seq = ticket_seq(sale_id, ticket).ok_or(RoomError::UnknownTicket)?;
        let room = self.room(sale_id, config);
        let mut room = lock(&room);
        room.catch_up(now);
        let owned = room.ticket(seq).is_some_and(|found| &found.user == user);
        if !owned {
            return Err(RoomError::UnknownTicket.into());
        }
        Ok(standing_of(&room, room.place(seq, now)?, now))
    }

    async fn admit_due(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        buyable: u32,
        now: Timestamp,
    ) -> Result<Vec<(UserId, Timestamp)>, EngineError> {
        let room = self.room(sale_id, config);
        let mut room = lock(&room);
        let pass_ends = now.plus_seconds(config.pass_seconds);
        let admitted = room.admit_due(now, buyable);
        Ok(admitted.iter().filter_map(|&seq| room.ticket(seq)).map(|ticket| (ticket.user.clone(), pass_ends)).collect())
    }

    async fn finish(&self, sale_id: &str, user: &UserId) -> Result<(), EngineError> {
        if let Some(room) = self.existing(sale_id) {
            lock(&room).finish(user);
        }
        Ok(())
    }

    async fn set_state(&self, sale_id: &str, config: &RoomConfig, state: RoomState) -> Result<(), EngineError> {
        lock(&self.room(sale_id, config)).set_state(state);
        Ok(())
    }

    async fn summary(&self, sale_id: &str, config: &RoomConfig, now: Timestamp) -> Result<RoomSummary, EngineError> {
        let room = self.room(sale_id, config);
        let mut room = lock(&room);
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let admitted = room.tickets().iter().filter(|ticket| ticket.admitted_at.is_some()).count();
        Ok(RoomSummary {
            state: room.state(),
            waiting: count(room.waiting_count()),
            active: count(room.active_count(now)),
            admitted: count(admitted),
            rate_per_second: room.measured_rate(now),
        })
    }

    async fn sales(&self) -> Result<Vec<String>, EngineError> {
        Ok(lock(&self.rooms).keys().cloned().collect())
    }

    async fn ticket_of(&self, sale_id: &str, user: &UserId) -> Result<Option<String>, EngineError> {
        let Some(room) = self.existing(sale_id) else { return Ok(None) };
        let seq = lock(&room).ticket_of(user).map(|ticket| ticket.seq);
        Ok(seq.map(|seq| ticket_id(sale_id, seq)))
    }
}
