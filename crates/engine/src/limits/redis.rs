//! Limits shared by every replica through Redis (a single node or a Cluster). Each subject is
//! one hash, hash-tagged `{<ns>:user:<id>}`, `{<ns>:ip:<addr>}` or `{<ns>:sale:<id>}`, changed
//! by one call of `lua/subject.lua`; a request's subjects are called concurrently. Bans are
//! also listed in `{<ns>:bans}`, a sorted set by expiry in its own slot, which only `bans()`
//! reads: the subject's hash is the truth, the index an address book (a missed index write
//! hides a ban from the list, never from enforcement). Spent tokens are `<ns>:once:<token>`.
//!
//! Every decision compares stored times with the `now` passed in; keys also get a relative TTL
//! (from that `now`) a little longer than any stored time matters, which only frees memory, so
//! nothing needs pruning and no clock is read.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{AsyncCommands, RedisResult, Script};
use stampede_core::{Timestamp, UserId};

use super::window::Gcra;
use super::{Ban, Limits, Policy, Request, Risk, Rules, Subject, Verdict};
use crate::backend::{unavailable, EngineError};
use crate::scaleout::conn::RedisConn;
use crate::scaleout::RedisTarget;

/// Limits for replicas sharing one Redis namespace.
pub struct RedisLimits {
    redis: RedisConn,
    namespace: String,
    rules: Rules,
    script: Script,
}

impl RedisLimits {
    /// Connects; every instance opened on the same target and namespace shares the limits.
    pub async fn open(target: &RedisTarget, namespace: &str, policy: Policy) -> Result<Self, EngineError> {
        Ok(Self {
            redis: RedisConn::connect(target).await.map_err(unavailable)?,
            namespace: namespace.to_owned(),
            rules: Rules::of(&policy),
            script: Script::new(include_str!("lua/subject.lua")),
        })
    }

    fn subject_key(&self, subject: &Subject) -> String {
        format!("{{{}:{subject}}}", self.namespace)
    }

    fn sale_key(&self, sale: &str) -> String {
        format!("{{{}:sale:{sale}}}", self.namespace)
    }

    fn index_key(&self) -> String {
        format!("{{{}:bans}}", self.namespace)
    }

    /// One call of the subject script; its reply as strings.
    async fn call(&self, key: &str, op: &str, now: Timestamp, args: &[String]) -> Result<Vec<String>, EngineError> {
        let mut invocation = self.script.key(key);
        invocation.arg(op).arg(now.0);
        for arg in args {
            invocation.arg(arg);
        }
        invocation.invoke_async(&mut self.redis.clone()).await.map_err(unavailable)
    }

    /// One subject's step of a request: `subject` None for a sale (GCRA only, never banned).
    async fn admit_one(
        &self,
        key: String,
        subject: Option<Subject>,
        gcra: Option<Gcra>,
        now: Timestamp,
    ) -> Result<Verdict, EngineError> {
        let rules = &self.rules;
        let gcra = gcra.unwrap_or(Gcra { interval_us: 0, tolerance_us: 0 });
        let bucket_ms = if subject.is_some() { rules.bucket_ms } else { 0 };
        let window_ms = if subject.is_some() { rules.window_ms } else { 0 };
        let args = [
            gcra.interval_us.to_string(),
            gcra.tolerance_us.to_string(),
            bucket_ms.to_string(),
            rules.threshold.to_string(),
            rules.ban_ms.to_string(),
            rules.reason.clone(),
            window_ms.to_string(),
        ];
        let reply = self.call(&key, "admit", now, &args).await?;
        match (reply.first().map(String::as_str), subject) {
            (Some("allowed"), _) => Ok(Verdict::Allowed),
            (Some("limited"), _) => Ok(Verdict::Limited { retry_after: Duration::from_micros(number(&reply, 1)?) }),
            (Some("banned"), Some(subject)) => {
                let ban = Ban { subject, until: Timestamp(number(&reply, 1)?), reason: text(&reply, 2) };
                if text(&reply, 3) == "1" {
                    self.index(&ban, now).await;
                }
                Ok(Verdict::Banned(ban))
            }
            _ => Err(unavailable(format!("unexpected limits script reply {reply:?}"))),
        }
    }

    /// Lists a ban in the index (and drops expired entries). A failure is logged, not returned:
    /// the ban is in force either way.
    async fn index(&self, ban: &Ban, now: Timestamp) {
        let mut pipe = redis::pipe();
        let index = self.index_key();
        pipe.zrembyscore(&index, "-inf", now.0).ignore().zadd(&index, ban.subject.to_string(), ban.until.0).ignore();
        if let Err(error) = pipe.query_async::<()>(&mut self.redis.clone()).await {
            tracing::warn!(%error, subject = %ban.subject, "ban not listed in the ban index");
        }
    }

    /// The subject's ban in force and its risk, read only.
    async fn peek(&self, subject: &Subject, now: Timestamp) -> Result<(Option<Ban>, Risk), EngineError> {
        let reply = self.call(&self.subject_key(subject), "peek", now, &[self.rules.bucket_ms.to_string()]).await?;
        let until = number::<i64>(&reply, 0)?;
        let risk = Risk { requests: number(&reply, 2)?, refused: number(&reply, 3)? };
        let ban =
            (until > now.0).then(|| Ban { subject: subject.clone(), until: Timestamp(until), reason: text(&reply, 1) });
        Ok((ban, risk))
    }
}

fn text(reply: &[String], index: usize) -> String {
    reply.get(index).cloned().unwrap_or_default()
}

fn number<T: std::str::FromStr>(reply: &[String], index: usize) -> Result<T, EngineError> {
    let field = reply.get(index).map(String::as_str).unwrap_or_default();
    field.parse().map_err(|_| unavailable(format!("limits script reply {reply:?}: field {index} is not a number")))
}

#[async_trait]
impl Limits for RedisLimits {
    async fn admit(&self, request: &Request<'_>, now: Timestamp) -> Result<Verdict, EngineError> {
        let user = async {
            let Some(user) = request.user else { return Ok(Verdict::Allowed) };
            let subject = Subject::User(UserId::clone(user));
            self.admit_one(self.subject_key(&subject), Some(subject), self.rules.user, now).await
        };
        let subject = Subject::Ip(request.ip);
        let ip = self.admit_one(self.subject_key(&subject), Some(subject), self.rules.ip, now);
        let sale = async {
            let (Some(sale), Some(gcra)) = (request.sale, self.rules.sale) else { return Ok(Verdict::Allowed) };
            self.admit_one(self.sale_key(sale), None, Some(gcra), now).await
        };
        let (user, ip, sale) = tokio::join!(user, ip, sale);
        Ok(user?.and(ip?).and(sale?))
    }

    async fn ban_of(&self, subject: &Subject, now: Timestamp) -> Result<Option<Ban>, EngineError> {
        Ok(self.peek(subject, now).await?.0)
    }

    async fn ban(&self, ban: Ban, now: Timestamp) -> Result<(), EngineError> {
        let args = [ban.until.0.to_string(), ban.reason.clone(), self.rules.window_ms.to_string()];
        self.call(&self.subject_key(&ban.subject), "ban", now, &args).await?;
        self.index(&ban, now).await;
        Ok(())
    }

    async fn lift(&self, subject: &Subject, now: Timestamp) -> Result<bool, EngineError> {
        let reply = self.call(&self.subject_key(subject), "lift", now, &[]).await?;
        let mut conn = self.redis.clone();
        let unlisted: RedisResult<i64> = conn.zrem(self.index_key(), subject.to_string()).await;
        if let Err(error) = unlisted {
            tracing::warn!(%error, %subject, "lifted ban left in the ban index");
        }
        Ok(text(&reply, 0) == "1")
    }

    async fn bans(&self, now: Timestamp) -> Result<Vec<Ban>, EngineError> {
        let mut conn = self.redis.clone();
        let listed: Vec<String> =
            conn.zrangebyscore(self.index_key(), format!("({}", now.0), "+inf").await.map_err(unavailable)?;
        let subjects: Vec<Subject> = listed.iter().filter_map(|member| member.parse().ok()).collect();
        let mut bans = Vec::with_capacity(subjects.len());
        for ban in join_all(subjects.iter().map(|subject| self.ban_of(subject, now))).await {
            bans.extend(ban?);
        }
        bans.sort_by_cached_key(|ban| (ban.until, ban.subject.to_string()));
        Ok(bans)
    }

    async fn spend_once(&self, token: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool, EngineError> {
        if expires_at <= now {
            return Ok(false);
        }
        let key = format!("{}:once:{token}", self.namespace);
        let reply = self.call(&key, "spend", now, &[expires_at.0.to_string()]).await?;
        Ok(text(&reply, 0) == "1")
    }

    async fn risk(&self, subject: &Subject, now: Timestamp) -> Result<Risk, EngineError> {
        Ok(self.peek(subject, now).await?.1)
    }
}
