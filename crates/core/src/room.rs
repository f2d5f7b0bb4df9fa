//! A sale's waiting room: who waits, in what order, and who is let in when.
//!
//! People join; the room lets them in at a measured pace (`admit_per_minute`) while fewer than
//! `max_active` admitted people are still shopping (admitted, not finished, pass not expired),
//! and only while the sale has units a new buyer could take. In `Fifo` mode the order is the
//! order of arrival. In `Shuffled` mode the room opens before the sale starts (a pre-queue):
//! everyone who joins before the start is shuffled at the start with a seed fixed when the room
//! was made (its hash is published when the room opens, the seed itself at the start, so anyone
//! can check the order: [`shuffle`]); later arrivals queue behind them in arrival order.
//!
//! Pure state: the caller passes `now` and the sale's buyable units; nothing here reads a
//! clock. Every method is one atomic step: the caller holds the only `&mut`.

use std::collections::{HashMap, VecDeque};

use crate::types::{Timestamp, UserId};

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    Fifo,
    Shuffled,
}

/// How a sale's waiting room is set up, as stored with the sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    pub mode: RoomMode,
    /// When joining opens (a shuffled pre-queue opens before the start); the sale's start if
    /// not set.
    pub opens_at: Option<Timestamp>,
    pub admit_per_minute: u32,
    pub max_active: u32,
    pub pass_seconds: u32,
}

impl RoomSettings {
    /// The room of a sale starting at `starts_at`, shuffling with `seed`.
    pub fn config(&self, starts_at: Timestamp, seed: u64) -> RoomConfig {
        RoomConfig {
            mode: self.mode,
            opens_at: self.opens_at.unwrap_or(starts_at).min(starts_at),
            starts_at,
            admit_per_minute: self.admit_per_minute,
            max_active: self.max_active,
            pass_seconds: self.pass_seconds,
            seed,
        }
    }
}

impl RoomMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Fifo => "fifo",
            RoomMode::Shuffled => "shuffled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fifo" => Some(RoomMode::Fifo),
            "shuffled" => Some(RoomMode::Shuffled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub mode: RoomMode,
    /// When joining opens: before `starts_at` only in `Shuffled` mode.
    pub opens_at: Timestamp,
    /// The sale's start: nobody is let in before it, and a pre-queue is shuffled at it.
    pub starts_at: Timestamp,
    pub admit_per_minute: u32,
    pub max_active: u32,
    /// How long a pass lets its holder buy; an unused pass frees its place when it expires.
    pub pass_seconds: u32,
    /// The shuffle seed (secret until `starts_at`).
    pub seed: u64,
}

/// What an admin has set the room to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomState {
    /// Letting people in at the configured pace.
    Open,
    /// Nobody is let in; people may still join and keep their place.
    Paused,
    /// Everyone waiting is let in at once, and everyone who joins after.
    AdmitAll,
    /// Maintenance: nobody may join or is let in.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("the waiting room is not open yet")]
    NotOpen,
    #[error("the waiting room is closed")]
    Closed,
    #[error("no such ticket")]
    UnknownTicket,
}

/// Index of a ticket in join order.
pub type TicketSeq = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub seq: TicketSeq,
    pub user: UserId,
    pub joined_at: Timestamp,
    pub admitted_at: Option<Timestamp>,
    /// The holder bought (or gave up): their place is free for the next.
    pub finished: bool,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `ahead` people are still waiting before this one; `order_known` is false in a pre-queue
    /// before the shuffle (every place there is as good as any other until the start).
    Waiting {
        ahead: u32,
        order_known: bool,
    },
    Admitted {
        at: Timestamp,
        pass_expires_at: Timestamp,
    },
    Finished,
}

/// Admissions remembered for the measured rate.
const RATE_WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub struct Room {
    config: RoomConfig,
    state: RoomState,
    tickets: Vec<Ticket>,
    by_user: HashMap<UserId, TicketSeq>,
    /// Ticket seqs in the order they are let in; `rank[seq]` is a ticket's index here.
    order: Vec<TicketSeq>,
    rank: Vec<u32>,
    /// `order[..next]` have been let in, in admission order (so by admission time).
    next: usize,
    /// `order[..lapsed]` have passes that expired: a prefix, since admission times only grow.
    lapsed: usize,
    /// Finished tickets among `order[lapsed..next]`.
    finished_live: usize,
    shuffled: bool,
    /// Admissions the pace allows that have not been used yet (fractional), and when that was.
    allowance: f64,
    paced_at: Timestamp,
    recent: VecDeque<Timestamp>,
}

impl Room {
    pub fn new(config: RoomConfig) -> Self {
        let paced_at = config.starts_at;
        let shuffled = config.mode == RoomMode::Fifo;
        Self {
            config,
            state: RoomState::Open,
            tickets: Vec::new(),
            by_user: HashMap::new(),
            order: Vec::new(),
            rank: Vec::new(),
            next: 0,
            lapsed: 0,
            finished_live: 0,
            shuffled,
            allowance: 0.0,
            paced_at,
            recent: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    pub fn state(&self) -> RoomState {
        self.state
    }

    pub fn set_state(&mut self, state: RoomState) {
        self.state = state;
    }

    pub fn ticket(&self, seq: TicketSeq) -> Option<&Ticket> {
        self.tickets.get(seq as usize)
    }

    pub fn ticket_of(&self, user: &UserId) -> Option<&Ticket> {
        self.by_user.get(user).and_then(|&seq| self.ticket(seq))
    }

    /// Tickets in join order (for checking a shuffle).
    pub fn tickets(&self) -> &[Ticket] {
        &self.tickets
    }

    /// The seed, once the start has revealed it.
    pub fn revealed_seed(&self, now: Timestamp) -> Option<u64> {
        (now >= self.config.starts_at).then_some(self.config.seed)
    }

    /// Brings the room up to `now`: a pre-queue due for its shuffle is shuffled. Every step that
    /// changes the room does this itself; call it before reading places at a new time.
    pub fn catch_up(&mut self, now: Timestamp) {
        self.shuffle_if_due(now);
    }

    /// Joins (or returns the caller's existing ticket: one per user). Returns the ticket and
    /// whether it is new.
    pub fn join(&mut self, user: &UserId, now: Timestamp) -> Result<(TicketSeq, bool), RoomError> {
        if let Some(&seq) = self.by_user.get(user) {
            return Ok((seq, false));
        }
        if self.state == RoomState::Closed {
            return Err(RoomError::Closed);
        }
        if now < self.config.opens_at {
            return Err(RoomError::NotOpen);
        }
        self.shuffle_if_due(now);
        let seq = u32::try_from(self.tickets.len()).unwrap_or(u32::MAX);
        self.tickets.push(Ticket { seq, user: user.clone(), joined_at: now, admitted_at: None, finished: false });
        self.by_user.insert(user.clone(), seq);
        self.rank.push(u32::try_from(self.order.len()).unwrap_or(u32::MAX));
        self.order.push(seq);
        Ok((seq, true))
    }

    pub fn place(&self, seq: TicketSeq, now: Timestamp) -> Result<Place, RoomError> {
        let ticket = self.ticket(seq).ok_or(RoomError::UnknownTicket)?;
        if ticket.finished {
            return Ok(Place::Finished);
        }
        if let Some(at) = ticket.admitted_at {
            return Ok(Place::Admitted { at, pass_expires_at: at.plus_seconds(self.config.pass_seconds) });
        }
        let order_known = self.shuffled || now >= self.config.starts_at;
        let rank = self.rank[seq as usize] as usize;
        let ahead = if order_known { rank.saturating_sub(self.next) } else { self.waiting_count() - 1 };
        Ok(Place::Waiting { ahead: u32::try_from(ahead).unwrap_or(u32::MAX), order_known })
    }

    /// People waiting (joined, not let in yet).
    pub fn waiting_count(&self) -> usize {
        self.order.len() - self.next
    }

    /// Admitted people still shopping at `now` (not finished, pass not expired).
    pub fn active_count(&mut self, now: Timestamp) -> usize {
        let pass_ms = i64::from(self.config.pass_seconds) * 1000;
        while self.lapsed < self.next {
            let ticket = &self.tickets[self.order[self.lapsed] as usize];
            if ticket.admitted_at.is_some_and(|at| now.0 < at.0 + pass_ms) {
                break;
            }
            self.finished_live -= usize::from(ticket.finished);
            self.lapsed += 1;
        }
        self.next - self.lapsed - self.finished_live
    }

    /// The holder of `user`'s ticket bought or left: their place goes to the next.
    pub fn finish(&mut self, user: &UserId) {
        let Some(&seq) = self.by_user.get(user) else { return };
        let ticket = &mut self.tickets[seq as usize];
        if ticket.finished {
            return;
        }
        ticket.finished = true;
        let rank = self.rank[seq as usize] as usize;
        if (self.lapsed..self.next).contains(&rank) {
            self.finished_live += 1;
        }
    }

    /// Lets people in as the pace, the active cap, the state and the stock allow. `buyable` is
    /// how many units a new buyer could still take: none, and nobody is let in (they would find
    /// the sale sold out); units come back when holds expire, and admissions resume. Returns
    /// the tickets let in.
    pub fn admit_due(&mut self, now: Timestamp, buyable: u32) -> Vec<TicketSeq> {
        self.shuffle_if_due(now);
        let elapsed_ms = (now.0 - self.paced_at.0).max(0);
        self.paced_at = now.max(self.paced_at);
        if now < self.config.starts_at || matches!(self.state, RoomState::Paused | RoomState::Closed) {
            return Vec::new();
        }
        let per_ms = f64::from(self.config.admit_per_minute) / 60_000.0;
        // Unused pace is kept for at most one second's worth: a quiet minute is no burst later.
        let cap = (per_ms * 1000.0).max(1.0);
        self.allowance = (self.allowance + per_ms * elapsed_ms as f64).min(cap);
        let waiting = self.waiting_count();
        let count = match (buyable, self.state) {
            (0, _) => 0,
            (_, RoomState::AdmitAll) => waiting,
            _ => {
                let room_left = (self.config.max_active as usize).saturating_sub(self.active_count(now));
                (self.allowance as usize).min(room_left).min(waiting)
            }
        };
        let admitted: Vec<TicketSeq> = self.order[self.next..self.next + count].to_vec();
        for &seq in &admitted {
            let ticket = &mut self.tickets[seq as usize];
            ticket.admitted_at = Some(now);
            // Left before their turn: let in (the order is kept) but not shopping.
            self.finished_live += usize::from(ticket.finished);
            self.recent.push_back(now);
        }
        self.next += count;
        self.allowance = (self.allowance - count as f64).max(0.0);
        while self.recent.front().is_some_and(|at| now.0 - at.0 > RATE_WINDOW_MS) {
            self.recent.pop_front();
        }
        admitted
    }

    /// Admissions per second over the last minute; the configured pace before any.
    pub fn measured_rate(&self, now: Timestamp) -> f64 {
        let recent = self.recent.iter().filter(|at| now.0 - at.0 <= RATE_WINDOW_MS).count();
        if recent == 0 {
            return f64::from(self.config.admit_per_minute) / 60.0;
        }
        let since = self.recent.front().map_or(RATE_WINDOW_MS, |first| (now.0 - first.0).max(1_000));
        recent as f64 * 1000.0 / since as f64
    }

    /// Seconds until `ahead` more people are let in at the measured rate.
    pub fn eta_seconds(&self, ahead: u32, now: Timestamp) -> u64 {
        let rate = self.measured_rate(now).max(f64::MIN_POSITIVE);
        let until_start = u64::try_from((self.config.starts_at.0 - now.0).max(0) / 1000).unwrap_or(0);
        until_start + (f64::from(ahead) / rate).ceil() as u64
    }

    fn shuffle_if_due(&mut self, now: Timestamp) {
        if self.shuffled || now < self.config.starts_at {
            return;
        }
        self.shuffled = true;
        let pre_queue = self.order.len();
        shuffle(&mut self.order[..pre_queue], self.config.seed);
        for (index, &seq) in self.order.iter().enumerate() {
            self.rank[seq as usize] = u32::try_from(index).unwrap_or(u32::MAX);
        }
    }
}

/// The shuffle of a pre-queue, documented so anyone can check it: Fisher–Yates from the end,
/// `j = next() % (i + 1)` for `i = n-1 down to 1`, where `next()` is SplitMix64 seeded with
/// `seed` (state += 0x9E3779B97F4A7C15; z = state; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9;
/// z = (z ^ z>>27) * 0x94D049BB133111EB; z ^ z>>31).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
