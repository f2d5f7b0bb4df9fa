//! The limits port: keyed rate limits, automatic and admin bans, single-use tokens and risk
//! signals for the traffic defense, with one implementation per deployment: [`MemoryLimits`]
//! (one process) and [`RedisLimits`] (shared by every replica on one Redis namespace).
//!
//! Every mutating request makes one [`Limits::admit`] call. Each subject of the request (its
//! user, its IP, and its sale when the sale quota is set) is judged on its own, in one atomic
//! step per subject: a banned subject refuses the request; otherwise the request is counted in
//! the subject's sliding window (crossing [`Policy::ban_threshold`] bans the subject at once and
//! refuses the request); otherwise the subject's GCRA decides. The request's verdict is the
//! first ban found (user before IP), else `Limited` with the longest `retry_after`, else
//! `Allowed`. Subjects are independent: a request refused by its IP's limit still spent a cell
//! of its user's limit, as with independent limiters anywhere. Sales are never banned.
//!
//! Time is always the `now` passed in (milliseconds): nothing here reads a clock, so tests
//! drive expiry with explicit times and replicas agree as far as their clocks do.
//!
//! ## GCRA
//! Each subject keeps one theoretical arrival time (TAT, microseconds). A request is allowed
//! when `max(tat, now) + interval - now <= interval * burst`, which then becomes the new TAT; a
//! refused request leaves the TAT alone and is told the excess as `retry_after`. So `burst`
//! requests pass at one instant and one more every `interval = 1 s / per_second`. This is
//! written out by hand (`window.rs`) rather than taken from `governor`: governor's limiters
//! read time from their `Clock` inside `check_key`, with no way to pass an instant per call, and
//! its keyed store without extra features is one global `Mutex<HashMap>`; the subject state
//! (window, ban) must live in our own sharded map anyway, so the TAT is one more field of the
//! same entry (one lookup per subject), and the Redis script runs the very same arithmetic.
//!
//! ## Sliding window
//! A ring of 10 buckets of `ban_window / 10` each: the count covers the current bucket and the
//! nine before it, so a request is forgotten between `0.9 × ban_window` and `ban_window` after it
//! was made. It never counts a request older than the window (no ban for requests spread beyond
//! it); at worst it misses the oldest tenth. The same ring counts refused requests for
//! [`Limits::risk`].
//!
//! ## Cost on the hot path
//! Memory: per subject one hash of its key, one (usually uncontended) `std::sync::Mutex` out of
//! 64 shards, one map lookup and a few integer operations; no allocation beyond the boxed future
//! of `async_trait`, unless the subject is new or the request is refused as banned (the ban is
//! cloned into the verdict). Entries are pruned as their shard grows (amortised O(1), no
//! background task): an entry is dropped once its window, its GCRA state and its ban have all
//! run out. Redis: one `EVALSHA` per subject, the subjects' calls concurrent, so one round trip
//! of latency per request; keys expire on their own.

pub mod conformance;
mod memory;
mod redis;
mod window;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use stampede_core::{Timestamp, UserId};

pub use self::memory::MemoryLimits;
pub use self::redis::RedisLimits;
use crate::backend::EngineError;

/// A GCRA rate: `per_second` requests a second on average, up to `burst` at one instant.
/// `per_second == 0` means unlimited; a `burst` below 1 counts as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

impl Quota {
    pub const UNLIMITED: Quota = Quota { per_second: 0, burst: 0 };
}

/// What the limits enforce; the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub user: Quota,
    pub ip: Quota,
    pub sale: Quota,
    /// More than this many mutating requests of one subject within `ban_window` ban it; 0 turns
    /// automatic bans off (requests are still counted for [`Limits::risk`]).
    pub ban_threshold: u32,
    pub ban_window: Duration,
    pub ban_duration: Duration,
}

/// Defaults, chosen for a flash sale:
/// - user 10/s, burst 20: a person buying, paying or bidding rarely makes more than a few
///   mutating requests a second; the burst absorbs double clicks and client retries.
/// - IP 50/s, burst 100: several people share one address (offices, carrier NAT), so the IP
///   limit is a coarse backstop against one host spraying many accounts.
/// - sale unlimited: stock, holds and the waiting room already bound what a sale takes; a
///   per-sale rate is for operators who want to pace a particular sale.
/// - 50 requests in 10 s, then 10 minutes banned (issue 6): sustained 5 mutating requests a
///   second for 10 s is a bot, while a person stays far below it.
impl Default for Policy {
    fn default() -> Self {
        Self {
            user: Quota { per_second: 10, burst: 20 },
            ip: Quota { per_second: 50, burst: 100 },
            sale: Quota::UNLIMITED,
            ban_threshold: 50,
            ban_window: Duration::from_secs(10),
            ban_duration: Duration::from_secs(600),
        }
    }
}

/// Who can be banned. Written `user:<id>` or `ip:<address>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(UserId),
    Ip(IpAddr),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user) => write!(f, "user:{user}"),
            Self::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject must be user:<id> or ip:<address>")]
pub struct SubjectParseError;

impl FromStr for Subject {
    type Err = SubjectParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some(("user", id)) => UserId::new(id).map(Self::User).map_err(|_| SubjectParseError),
            Some(("ip", address)) => address.parse().map(Self::Ip).map_err(|_| SubjectParseError),
            _ => Err(SubjectParseError),
        }
    }
}

/// A ban in force until `until` (exclusive), automatic or an admin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub subject: Subject,
    pub until: Timestamp,
    pub reason: String,
}

/// One mutating request, as far as the limits care.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub user: Option<&'a UserId>,
    pub ip: IpAddr,
    pub sale: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Banned(Ban),
    Limited { retry_after: Duration },
}

impl Verdict {
    /// The request's verdict from its subjects' verdicts: the first ban, else the longest wait.
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Self::Banned(ban), _) | (_, Self::Banned(ban)) => Self::Banned(ban),
            (Self::Limited { retry_after: a }, Self::Limited { retry_after: b }) => {
                Self::Limited { retry_after: a.max(b) }
            }
            (limited @ Self::Limited { .. }, Self::Allowed) | (Self::Allowed, limited) => limited,
        }
    }
}

/// A subject's recent behaviour, for proof-of-work difficulty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Risk {
    /// Mutating requests counted in the sliding window.
    pub requests: u32,
    /// Requests refused (limited or banned) by this subject's own limit or ban in the window.
    pub refused: u32,
}

/// The limits port; see the module documentation for the semantics of `admit`.
///
/// Deviation from the first sketch: `ban`, `lift` and `spend_once` take `now` too, because the
/// Redis implementation sets time-to-live values from it (relative, so no clock is read there).
#[async_trait]
pub trait Limits: Send + Sync {
    /// One mutating request: refused if the user or the IP is banned; counted in each subject's
    /// sliding window (crossing the threshold bans that subject at once, and this request is
    /// refused as banned); then the GCRA limits of user, IP and sale (if given): `Limited` with
    /// the longest `retry_after`.
    async fn admit(&self, request: &Request<'_>, now: Timestamp) -> Result<Verdict, EngineError>;
    /// Read-only check for non-mutating endpoints that must still refuse banned subjects.
    async fn ban_of(&self, subject: &Subject, now: Timestamp) -> Result<Option<Ban>, EngineError>;
    /// An admin ban; replaces the subject's current ban.
    async fn ban(&self, ban: Ban, now: Timestamp) -> Result<(), EngineError>;
    /// Lifts the subject's ban; true if a ban was in force at `now`.
    async fn lift(&self, subject: &Subject, now: Timestamp) -> Result<bool, EngineError>;
    /// Bans in force at `now`, soonest expiry first.
    async fn bans(&self, now: Timestamp) -> Result<Vec<Ban>, EngineError>;
    /// Marks a single-use token (a proof-of-work challenge id) spent until `expires_at`. False if
    /// it was spent already, or if `expires_at` has passed (an expired token is never good).
    async fn spend_once(&self, token: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool, EngineError>;
    /// The subject's risk signals in the current window.
    async fn risk(&self, subject: &Subject, now: Timestamp) -> Result<Risk, EngineError>;
}

/// The policy in the units the implementations compute with.
#[derive(Debug, Clone)]
struct Rules {
    user: Option<window::Gcra>,
    ip: Option<window::Gcra>,
    sale: Option<window::Gcra>,
    threshold: u32,
    bucket_ms: i64,
    window_ms: i64,
    ban_ms: i64,
    reason: String,
}

impl Rules {
    fn of(policy: &Policy) -> Self {
        let window_ms = millis(policy.ban_window).max(1);
        Self {
            user: window::Gcra::of(policy.user),
            ip: window::Gcra::of(policy.ip),
            sale: window::Gcra::of(policy.sale),
            threshold: policy.ban_threshold,
            bucket_ms: (window_ms / window::BUCKETS as i64).max(1),
            window_ms,
            ban_ms: millis(policy.ban_duration),
            reason: format!(
                "automatic: more than {} requests in {} s",
                policy.ban_threshold,
                policy.ban_window.as_secs_f64()
            ),
        }
    }

    fn bucket(&self, now: Timestamp) -> i64 {
        now.0.div_euclid(self.bucket_ms)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_through_text() {
        for text in ["user:u_1", "ip:1.2.3.4", "ip:::1", "user:a:b"] {
            let subject: Subject = text.parse().expect(text);
            assert_eq!(subject.to_string(), text);
        }
        for bad in ["", "user:", "ip:nope", "group:x", "u_1"] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_combine_to_the_first_ban_else_the_longest_wait() {
        let ban = |id: &str| Ban { subject: "user:x".parse().unwrap(), until: Timestamp(1), reason: id.to_owned() };
        let wait = |ms| Verdict::Limited { retry_after: Duration::from_millis(ms) };
        assert_eq!(Verdict::Allowed.and(Verdict::Allowed), Verdict::Allowed);
        assert_eq!(Verdict::Allowed.and(wait(5)), wait(5));
        assert_eq!(wait(5).and(wait(9)).and(Verdict::Allowed), wait(9));
        assert_eq!(wait(5).and(Verdict::Banned(ban("b"))), Verdict::Banned(ban("b")));
        assert_eq!(Verdict::Banned(ban("a")).and(Verdict::Banned(ban("b"))), Verdict::Banned(ban("a")));
    }

    #[test]
    fn default_reason_names_the_threshold() {
        assert_eq!(Rules::of(&Policy::default()).reason, "automatic: more than 50 requests in 10 s");
    }
}
