//! Limits kept in this process: each subject's state in a sharded map, so requests of
//! different subjects take different locks and memory stays bounded by the recently active.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use stampede_core::{Timestamp, UserId};

use super::window::{Arrival, Gcra, Window};
use super::{Ban, Limits, Policy, Request, Risk, Rules, Subject, Verdict};
use crate::backend::EngineError;

/// Limits for one process (the embedded mode, and the test fake).
pub struct MemoryLimits {
    rules: Rules,
    users: Table<UserId, SubjectState>,
    ips: Table<IpAddr, SubjectState>,
    sales: Table<Box<str>, Arrival>,
    tokens: Table<Box<str>, Timestamp>,
}

impl MemoryLimits {
    pub fn new(policy: Policy) -> Self {
        Self {
            rules: Rules::of(&policy),
            users: Table::new(),
            ips: Table::new(),
            sales: Table::new(),
            tokens: Table::new(),
        }
    }

    /// Runs `f` on the subject's state; creates it first when `create`, else None if absent.
    fn on_subject<R>(
        &self,
        subject: &Subject,
        at: &Moment,
        create: bool,
        f: impl FnOnce(&mut SubjectState) -> R,
    ) -> Option<R> {
        match subject {
            Subject::User(user) => {
                let mut shard = self.users.lock(user);
                let make = || (user.clone(), SubjectState::new(at));
                if create {
                    Some(shard.with(user, at, make, f))
                } else {
                    shard.with_existing(user, f)
                }
            }
            Subject::Ip(ip) => {
                let mut shard = self.ips.lock(ip);
                let make = || (*ip, SubjectState::new(at));
                if create {
                    Some(shard.with(ip, at, make, f))
                } else {
                    shard.with_existing(ip, f)
                }
            }
        }
    }

    fn admit_user(&self, user: &UserId, at: &Moment) -> Verdict {
        let make = || (user.clone(), SubjectState::new(at));
        let subject = || Subject::User(user.clone());
        self.users.lock(user).with(user, at, make, |state| state.admit(&self.rules, self.rules.user, at, subject))
    }

    fn admit_ip(&self, ip: IpAddr, at: &Moment) -> Verdict {
        let make = || (ip, SubjectState::new(at));
        let subject = || Subject::Ip(ip);
        self.ips.lock(&ip).with(&ip, at, make, |state| state.admit(&self.rules, self.rules.ip, at, subject))
    }

    fn admit_sale(&self, sale: &str, gcra: Gcra, at: &Moment) -> Verdict {
        let make = || (Box::from(sale), Arrival::NEW);
        let step = |arrival: &mut Arrival| gcra.step(arrival, at.us);
        match self.sales.lock(sale).with(sale, at, make, step) {
            Ok(()) => Verdict::Allowed,
            Err(retry_after) => Verdict::Limited { retry_after },
        }
    }

    fn active_bans(&self, at: &Moment) -> Vec<Ban> {
        let mut bans = Vec::new();
        for shard in self.users.shards.iter() {
            collect_bans(&crate::lock(shard).entries, at, &mut bans);
        }
        for shard in self.ips.shards.iter() {
            collect_bans(&crate::lock(shard).entries, at, &mut bans);
        }
        bans
    }
}

fn collect_bans<K>(entries: &HashMap<K, SubjectState>, at: &Moment, bans: &mut Vec<Ban>) {
    bans.extend(entries.values().filter_map(|state| state.current_ban(at)).cloned());
}

#[async_trait]
impl Limits for MemoryLimits {
    async fn admit(&self, request: &Request<'_>, now: Timestamp) -> Result<Verdict, EngineError> {
        let at = Moment::of(&self.rules, now);
        let mut verdict = Verdict::Allowed;
        if let Some(user) = request.user {
            verdict = verdict.and(self.admit_user(user, &at));
        }
        verdict = verdict.and(self.admit_ip(request.ip, &at));
        if let (Some(sale), Some(gcra)) = (request.sale, self.rules.sale) {
            verdict = verdict.and(self.admit_sale(sale, gcra, &at));
        }
        Ok(verdict)
    }

    async fn ban_of(&self, subject: &Subject, now: Timestamp) -> Result<Option<Ban>, EngineError> {
        let at = Moment::of(&self.rules, now);
        Ok(self.on_subject(subject, &at, false, |state| state.current_ban(&at).cloned()).flatten())
    }

    async fn ban(&self, ban: Ban, now: Timestamp) -> Result<(), EngineError> {
        let at = Moment::of(&self.rules, now);
        let subject = ban.subject.clone();
        self.on_subject(&subject, &at, true, |state| state.ban = Some(ban));
        Ok(())
    }

    async fn lift(&self, subject: &Subject, now: Timestamp) -> Result<bool, EngineError> {
        let at = Moment::of(&self.rules, now);
        let lifted = self.on_subject(subject, &at, false, |state| {
            state.window.forgive_requests();
            state.ban.take()
        });
        Ok(lifted.flatten().is_some_and(|ban| ban.until > now))
    }

    async fn bans(&self, now: Timestamp) -> Result<Vec<Ban>, EngineError> {
        let mut bans = self.active_bans(&Moment::of(&self.rules, now));
        bans.sort_by_cached_key(|ban| (ban.until, ban.subject.to_string()));
        Ok(bans)
    }

    async fn spend_once(&self, token: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool, EngineError> {
        if expires_at <= now {
            return Ok(false);
        }
        let at = Moment::of(&self.rules, now);
        let make = || (Box::from(token), Timestamp(i64::MIN));
        let spend = |until: &mut Timestamp| {
            let fresh = *until <= now;
            if fresh {
                *until = expires_at;
            }
            fresh
        };
        Ok(self.tokens.lock(token).with(token, &at, make, spend))
    }

    async fn risk(&self, subject: &Subject, now: Timestamp) -> Result<Risk, EngineError> {
        let at = Moment::of(&self.rules, now);
        Ok(self.on_subject(subject, &at, false, |state| state.window.totals(at.bucket)).unwrap_or_default())
    }
}

/// `now` in the units the state is kept in.
struct Moment {
    now: Timestamp,
    us: i64,
    bucket: i64,
}

impl Moment {
    fn of(rules: &Rules, now: Timestamp) -> Self {
        Self { now, us: now.0.saturating_mul(1000), bucket: rules.bucket(now) }
    }
}

/// A user's or an IP's state.
struct SubjectState {
    arrival: Arrival,
    window: Window,
    ban: Option<Ban>,
}

impl SubjectState {
    fn new(at: &Moment) -> Self {
        Self { arrival: Arrival::NEW, window: Window::new(at.bucket), ban: None }
    }

    fn current_ban(&self, at: &Moment) -> Option<&Ban> {
        self.ban.as_ref().filter(|ban| ban.until > at.now)
    }

    /// One request of this subject: the steps of the module documentation, in one lock scope.
    fn admit(&mut self, rules: &Rules, gcra: Option<Gcra>, at: &Moment, subject: impl FnOnce() -> Subject) -> Verdict {
        if let Some(ban) = self.current_ban(at).cloned() {
            self.window.count_refused(at.bucket);
            return Verdict::Banned(ban);
        }
        let requests = self.window.count_request(at.bucket);
        if rules.threshold > 0 && requests > rules.threshold {
            let ban = Ban { subject: subject(), until: at.now.plus_millis(rules.ban_ms), reason: rules.reason.clone() };
            self.ban = Some(ban.clone());
            self.window.forgive_requests();
            self.window.count_refused(at.bucket);
            return Verdict::Banned(ban);
        }
        let Some(gcra) = gcra else { return Verdict::Allowed };
        match gcra.step(&mut self.arrival, at.us) {
            Ok(()) => Verdict::Allowed,
            Err(retry_after) => {
                self.window.count_refused(at.bucket);
                Verdict::Limited { retry_after }
            }
        }
    }
}

/// State that can be dropped once it no longer changes any answer.
trait Expires {
    fn is_spent(&self, at: &Moment) -> bool;
}

impl Expires for SubjectState {
    fn is_spent(&self, at: &Moment) -> bool {
        self.arrival.is_spent(at) && self.window.is_idle(at.bucket) && self.current_ban(at).is_none()
    }
}

impl Expires for Arrival {
    fn is_spent(&self, at: &Moment) -> bool {
        self.tat_us <= at.us
    }
}

impl Expires for Timestamp {
    fn is_spent(&self, at: &Moment) -> bool {
        *self <= at.now
    }
}

const SHARDS: usize = 64;
/// A shard is pruned when it has grown to twice its size after the last pruning (and to at
/// least this): amortised O(1) per new entry, and at most twice the live entries kept.
const FIRST_PRUNE: usize = 64;

/// A map split into shards by key hash, each behind a std `Mutex`: every critical section is a
/// lookup and a few integer operations, never held across an `.await`, so a blocking lock is
/// cheaper than an async one; the shards keep requests of different subjects apart.
struct Table<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
}

struct Shard<K, V> {
    entries: HashMap<K, V>,
    prune_at: usize,
}

impl<K: Hash + Eq, V: Expires> Table<K, V> {
    fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { entries: HashMap::new(), prune_at: FIRST_PRUNE }));
        Self { shards: shards.collect(), hasher: RandomState::new() }
    }

    fn lock<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        crate::lock(&self.shards[index])
    }
}

impl<K: Hash + Eq, V: Expires> Shard<K, V> {
    /// Runs `f` on the entry of `key`, made by `make` when there is none.
    fn with<Q, R>(&mut self, key: &Q, at: &Moment, make: impl FnOnce() -> (K, V), f: impl FnOnce(&mut V) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(value) = self.entries.get_mut(key) {
            return f(value);
        }
        self.prune_if_grown(at);
        let (key, mut value) = make();
        let result = f(&mut value);
        self.entries.insert(key, value);
        result
    }

    fn with_existing<Q, R>(&mut self, key: &Q, f: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get_mut(key).map(f)
    }

    fn prune_if_grown(&mut self, at: &Moment) {
        if self.entries.len() < self.prune_at {
            return;
        }
        self.entries.retain(|_, value| !value.is_spent(at));
        self.prune_at = (self.entries.len() * 2).max(FIRST_PRUNE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_subjects_are_pruned_as_a_shard_grows() {
        let limits = MemoryLimits::new(Policy::default());
        let t0 = Timestamp(1_800_000_000_000);
        for i in 0..5_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            limits.admit(&Request { user: None, ip, sale: None }, t0).await.unwrap();
        }
        let later = t0.plus_seconds(60);
        for i in 0..5_000u32 {
            let ip = IpAddr::from((i + 1_000_000).to_be_bytes());
            limits.admit(&Request { user: None, ip, sale: None }, later).await.unwrap();
        }
        let kept: usize = limits.ips.shards.iter().map(|shard| crate::lock(shard).entries.len()).sum();
        assert!(kept < 8_000, "idle entries of the first wave must go, {kept} kept");
    }
}
