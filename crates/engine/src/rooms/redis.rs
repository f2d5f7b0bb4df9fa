//! Rooms shared by every replica through Redis (a single node or a Cluster). All keys of one
//! sale's room share the hash tag `{<ns>:room:<sale>}`, so each operation is one call of
//! `lua/room.lua`, atomic. Sales with rooms are listed in `{<ns>:rooms}`, a set in its own slot
//! that only `sales()` reads, written after the call that created a room.
//!
//! The pre-queue shuffle is SplitMix64 on 64-bit integers, which Lua's doubles cannot do: a
//! room due for it answers `unshuffled`, the order is computed here with the core's [`shuffle`]
//! from the room's seed (so every replica computes the same one) and applied by a script that
//! only writes it while the room is still unshuffled and unchanged; then the operation is
//! retried. Every order-dependent operation goes through this, so none sees an unshuffled room
//! after the start.
//!
//! Room keys have no TTL: like `MemoryRooms`, a room lives as long as its namespace.

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use stampede_core::room::shuffle;
use stampede_core::{RoomConfig, RoomError, RoomState, Timestamp, UserId};

use super::{ticket_id, ticket_seq, Joined, RoomSummary, Rooms, Standing};
use crate::backend::{unavailable, EngineError};
use crate::scaleout::conn::RedisConn;
use crate::scaleout::RedisTarget;

/// Rooms for replicas sharing one Redis namespace.
pub struct RedisRooms {
    redis: RedisConn,
    namespace: String,
    script: Script,
}

/// A reply of the room script without its leading "created" flag.
type Reply = Vec<String>;

/// Shuffle attempts before giving up: each retry means a join raced in before the start.
const SHUFFLE_ATTEMPTS: usize = 8;
const ROOM_KEYS: [&str; 9] = ["room", "users", "who", "rank", "admitted", "finished", "queue", "live", "recent"];

impl RedisRooms {
    /// Connects; every instance opened on the same target and namespace shares the rooms.
    pub async fn open(target: &RedisTarget, namespace: &str) -> Result<Self, EngineError> {
        Ok(Self {
            redis: RedisConn::connect(target).await.map_err(unavailable)?,
            namespace: namespace.to_owned(),
            script: Script::new(include_str!("lua/room.lua")),
        })
    }

    fn sales_key(&self) -> String {
        format!("{{{}:rooms}}", self.namespace)
    }

    /// One script call; lists the room in `sales()` when the call created it.
    async fn call(
        &self,
        sale_id: &str,
        config: Option<&RoomConfig>,
        op: &str,
        now: Timestamp,
        args: &[String],
    ) -> Result<Reply, EngineError> {
        let tag = format!("{{{}:room:{sale_id}}}", self.namespace);
        let mut invocation = self.script.prepare_invoke();
        for name in ROOM_KEYS {
            invocation.key(format!("{tag}:{name}"));
        }
        invocation.arg(op).arg(now.0);
        for arg in config_args(config) {
            invocation.arg(arg);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut reply: Vec<String> = invocation.invoke_async(&mut self.redis.clone()).await.map_err(unavailable)?;
        if reply.is_empty() {
            return Err(unavailable("empty room script reply"));
        }
        if reply.remove(0) == "1" {
            let mut conn = self.redis.clone();
            let () = conn.sadd(self.sales_key(), sale_id).await.map_err(unavailable)?;
        }
        Ok(reply)
    }

    /// A call of an order-dependent operation, shuffling the pre-queue first when it is due.
    async fn ordered(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        op: &str,
        now: Timestamp,
        args: &[String],
    ) -> Result<Reply, EngineError> {
        for _ in 0..SHUFFLE_ATTEMPTS {
            let reply = self.call(sale_id, Some(config), op, now, args).await?;
            if text(&reply, 0) != "unshuffled" {
                return Ok(reply);
            }
            let pre_queue: u32 = number(&reply, 1)?;
            let mut order: Vec<u32> = (0..pre_queue).collect();
            shuffle(&mut order, config.seed);
            let mut shuffle_args = vec![pre_queue.to_string()];
            shuffle_args.extend(order.iter().map(u32::to_string));
            self.call(sale_id, Some(config), "shuffle", now, &shuffle_args).await?;
        }
        Err(unavailable(format!("room of sale {sale_id} kept changing while being shuffled")))
    }
}

fn config_args(config: Option<&RoomConfig>) -> [String; 6] {
    let Some(config) = config else { return Default::default() };
    [
        config.mode.as_str().to_owned(),
        config.opens_at.0.to_string(),
        config.starts_at.0.to_string(),
        config.admit_per_minute.to_string(),
        config.max_active.to_string(),
        config.pass_seconds.to_string(),
    ]
}

fn state_name(state: RoomState) -> &'static str {
    match state {
        RoomState::Open => "open",
        RoomState::Paused => "paused",
        RoomState::AdmitAll => "admit_all",
        RoomState::Closed => "closed",
    }
}

fn parse_state(name: &str) -> Result<RoomState, EngineError> {
    match name {
        "open" => Ok(RoomState::Open),
        "paused" => Ok(RoomState::Paused),
        "admit_all" => Ok(RoomState::AdmitAll),
        "closed" => Ok(RoomState::Closed),
        other => Err(unavailable(format!("unknown room state {other:?}"))),
    }
}

/// The refusals the script answers with instead of `ok`.
fn refusal(reply: &Reply) -> Result<(), EngineError> {
    match text(reply, 0) {
        "ok" => Ok(()),
        "closed" => Err(RoomError::Closed.into()),
        "not_open" => Err(RoomError::NotOpen.into()),
        "unknown" => Err(RoomError::UnknownTicket.into()),
        _ => Err(unavailable(format!("unexpected room script reply {reply:?}"))),
    }
}

fn text(reply: &[String], index: usize) -> &str {
    reply.get(index).map(String::as_str).unwrap_or_default()
}

fn number<T: std::str::FromStr>(reply: &[String], index: usize) -> Result<T, EngineError> {
    text(reply, index)
        .parse()
        .map_err(|_| unavailable(format!("room script reply {reply:?}: field {index} is not a number")))
}

/// Admissions per second over the last minute, the configured pace before any
/// (`Room::measured_rate`): `recent` admissions in the window, the oldest remembered at `front`.
fn measured_rate(config: &RoomConfig, recent: u64, front: i64, now: Timestamp) -> f64 {
    if recent == 0 {
        return f64::from(config.admit_per_minute) / 60.0;
    }
    let since = (now.0 - front).max(1_000);
    recent as f64 * 1000.0 / since as f64
}

/// The place the script describes from `index` on, as `Room::place` and `Room::eta_seconds`.
fn standing_at(reply: &Reply, index: usize, config: &RoomConfig, now: Timestamp) -> Result<Standing, EngineError> {
    match text(reply, index) {
        "finished" => Ok(Standing::Finished),
        "admitted" => {
            let at = Timestamp(number(reply, index + 1)?);
            Ok(Standing::Admitted { admitted_at: at, pass_expires_at: at.plus_seconds(config.pass_seconds) })
        }
        "waiting" => {
            let ahead: u32 = number(reply, index + 1)?;
            let rate = measured_rate(config, number(reply, index + 3)?, number(reply, index + 4)?, now);
            let until_start = u64::try_from((config.starts_at.0 - now.0).max(0) / 1000).unwrap_or(0);
            let eta_seconds = until_start + (f64::from(ahead) / rate.max(f64::MIN_POSITIVE)).ceil() as u64;
            Ok(Standing::Waiting { ahead, order_known: text(reply, index + 2) == "1", eta_seconds })
        }
        _ => Err(unavailable(format!("unexpected room script reply {reply:?}"))),
    }
}

#[async_trait]
impl Rooms for RedisRooms {
    async fn join(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Joined, EngineError> {
        let reply = self.ordered(sale_id, config, "join", now, &[user.as_str().to_owned()]).await?;
        refusal(&reply)?;
        let seq = number(&reply, 1)?;
        let standing = standing_at(&reply, 3, config, now)?;
        Ok(Joined { ticket: ticket_id(sale_id, seq), standing, new: text(&reply, 2) == "1" })
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
        let args = [seq.to_string(), user.as_str().to_owned()];
        let reply = self.ordered(sale_id, config, "standing", now, &args).await?;
        refusal(&reply)?;
        standing_at(&reply, 1, config, now)
    }

    async fn admit_due(
        &self,
        sale_id: &str,
        config: &RoomConfig,
        buyable: u32,
        now: Timestamp,
    ) -> Result<Vec<(UserId, Timestamp)>, EngineError> {
        let reply = self.ordered(sale_id, config, "admit", now, &[buyable.to_string()]).await?;
        refusal(&reply)?;
        let pass_ends = now.plus_seconds(config.pass_seconds);
        let mut admitted = Vec::with_capacity(reply.len().saturating_sub(1));
        for name in &reply[1..] {
            let user = UserId::new(name).map_err(|_| unavailable(format!("bad user id {name:?} in room")))?;
            admitted.push((user, pass_ends));
        }
        Ok(admitted)
    }

    async fn finish(&self, sale_id: &str, user: &UserId) -> Result<(), EngineError> {
        let reply = self.call(sale_id, None, "finish", Timestamp(0), &[user.as_str().to_owned()]).await?;
        refusal(&reply)
    }

    async fn set_state(&self, sale_id: &str, config: &RoomConfig, state: RoomState) -> Result<(), EngineError> {
        let args = [state_name(state).to_owned()];
        let reply = self.call(sale_id, Some(config), "state", Timestamp(0), &args).await?;
        refusal(&reply)
    }

    async fn summary(&self, sale_id: &str, config: &RoomConfig, now: Timestamp) -> Result<RoomSummary, EngineError> {
        let reply = self.call(sale_id, Some(config), "summary", now, &[]).await?;
        refusal(&reply)?;
        Ok(RoomSummary {
            state: parse_state(text(&reply, 1))?,
            waiting: number(&reply, 2)?,
            active: number(&reply, 3)?,
            admitted: number(&reply, 4)?,
            rate_per_second: measured_rate(config, number(&reply, 5)?, number(&reply, 6)?, now),
        })
    }

    async fn sales(&self) -> Result<Vec<String>, EngineError> {
        let mut conn = self.redis.clone();
        conn.smembers(self.sales_key()).await.map_err(unavailable)
    }

    async fn ticket_of(&self, sale_id: &str, user: &UserId) -> Result<Option<String>, EngineError> {
        let reply = self.call(sale_id, None, "ticket_of", Timestamp(0), &[user.as_str().to_owned()]).await?;
        refusal(&reply)?;
        let Some(seq) = reply.get(1) else { return Ok(None) };
        let seq = seq.parse().map_err(|_| unavailable(format!("bad ticket seq {seq:?} in room")))?;
        Ok(Some(ticket_id(sale_id, seq)))
    }
}
