//! The guard in front of every mutating endpoint: bans, rate limits and, for clients whose
//! behaviour looks automated, proof of work. Off entirely with `STAMPEDE_LIMITS=off`.
//!
//! The limits are a port (`stampede_engine::limits::Limits`): in memory for one process, in
//! Redis when replicas must share counters and bans. When the limits cannot be reached the guard
//! lets requests through and logs it: refusing every buyer because the abuse counters are down
//! would be the outage the defense exists to prevent.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stampede_core::{Timestamp, UserId};
use stampede_engine::limits::{self, Ban, Limits, Risk, Subject, Verdict};

use super::client_ip::client_ip;
use super::pow::{PowError, BASE_DIFFICULTY, MAX_DIFFICULTY};
use crate::auth::{bearer_in, TokenFacts, VerifiedUser};
use crate::error::ApiError;
use crate::AppState;

/// Header carrying a solved challenge: `<challenge>:<nonce>`.
pub const POW_HEADER: &str = "stampede-pow";
/// An account younger than this counts as new: when work is asked of it, more is asked.
const NEW_ACCOUNT_MS: i64 = 24 * 3600 * 1000;
pub const NEW_ACCOUNT_BITS: u8 = 2;

/// The user of the request's bearer token, and whether their account is new.
pub(crate) fn caller(state: &AppState, headers: &axum::http::HeaderMap, now: Timestamp) -> Option<(UserId, bool)> {
    let (user, facts) = bearer_in(headers).and_then(|token| state.auth.verify_with_facts(token))?;
    Some((user, is_new(facts, now)))
}

/// Whether a token's account is new (made within the last day). Unknown age is not new.
pub fn is_new(facts: TokenFacts, now: Timestamp) -> bool {
    facts.account_created.is_some_and(|created| now.0 - created.0 < NEW_ACCOUNT_MS)
}

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limits) = state.limits.clone() else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let now = Timestamp::now();
    if let Err(refusal) = check(&state, &*limits, &mut parts, now).await {
        state.telemetry.refused(refusal.code);
        return refusal.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

async fn check(state: &AppState, limits: &dyn Limits, parts: &mut Parts, now: Timestamp) -> Result<(), ApiError> {
    let ip = client_ip(parts, &state.settings.trusted_proxies).0;
    let (user, new_account) = caller(state, &parts.headers, now).unzip();
    let new_account = new_account.unwrap_or(false);
    if let Some(user) = &user {
        // The handler's extractor takes it from here instead of verifying the token again.
        parts.extensions.insert(VerifiedUser(user.clone()));
    }
    let sale = sale_of(parts.uri.path());
    let request = limits::Request { user: user.as_ref(), ip, sale };
    match limits.admit(&request, now).await {
        Ok(Verdict::Allowed) => {}
        Ok(Verdict::Banned(ban)) => return Err(banned(&ban)),
        Ok(Verdict::Limited { retry_after }) => return Err(rate_limited(retry_after)),
        Err(error) => {
            tracing::warn!(%error, "limits unreachable, letting the request through");
            return Ok(());
        }
    }
    let subject = subject_of(user, ip);
    let required = required_work(limits, &subject, state, now).await;
    if required == 0 {
        return Ok(());
    }
    let required = if new_account { (required + NEW_ACCOUNT_BITS).min(MAX_DIFFICULTY) } else { required };
    prove_work(state, limits, &parts.headers, required, now).await?;
    parts.extensions.insert(WorkProven);
    Ok(())
}

/// Marks a request whose proof of work the guard checked (and spent) already.
#[derive(Clone, Copy)]
pub struct WorkProven;

/// The sale a purchase-like path is about, for the per-sale limit.
fn sale_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/sales/")?;
    rest.split('/').next().filter(|id| !id.is_empty())
}

/// Bits of proof of work the subject owes now; 0 when its behaviour looks human.
async fn required_work(limits: &dyn Limits, subject: &Subject, state: &AppState, now: Timestamp) -> u8 {
    let risk = match limits.risk(subject, now).await {
        Ok(risk) => risk,
        Err(error) => {
            tracing::warn!(%error, "risk unavailable");
            return 0;
        }
    };
    difficulty(risk, state.policy.ban_threshold)
}

/// The difficulty for a risk: none for a quiet client; from the base upward for one that was
/// refused recently or is past half the ban threshold, more the further it goes.
pub fn difficulty(risk: Risk, ban_threshold: u32) -> u8 {
    let busy = ban_threshold > 0 && risk.requests * 2 > ban_threshold;
    if risk.refused == 0 && !busy {
        return 0;
    }
    let refusals = u8::try_from(risk.refused.min(4)).unwrap_or(4);
    (BASE_DIFFICULTY + 2 * refusals + if busy { 2 } else { 0 }).min(MAX_DIFFICULTY)
}

pub(crate) async fn prove_work(
    state: &AppState,
    limits: &dyn Limits,
    headers: &axum::http::HeaderMap,
    required: u8,
    now: Timestamp,
) -> Result<(), ApiError> {
    let header = headers.get(POW_HEADER).and_then(|value| value.to_str().ok());
    let Some(header) = header else {
        return Err(work_required(required, "send a solved challenge from GET /v1/challenge in Stampede-Pow"));
    };
    let solved = state.puzzles.check(header, required, now).map_err(|error| match error {
        PowError::TooEasy => work_required(required, "the challenge is easier than now required"),
        PowError::Malformed | PowError::Forged | PowError::Expired | PowError::Unsolved => {
            work_required(required, &error.to_string())
        }
    })?;
    match limits.spend_once(&solved.id, solved.expires_at, now).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(work_required(required, "the challenge was used already")),
        Err(error) => {
            tracing::warn!(%error, "limits unreachable, accepting the proof of work unspent");
            Ok(())
        }
    }
}

fn work_required(difficulty: u8, why: &str) -> ApiError {
    let message = format!("proof of work of {difficulty} bits required: {why}");
    ApiError::new(StatusCode::FORBIDDEN, "proof_of_work_required", message)
}

pub fn banned(ban: &Ban) -> ApiError {
    let message = format!("banned until {}: {}", ban.until.to_rfc3339(), ban.reason);
    let mut error = ApiError::new(StatusCode::FORBIDDEN, "banned", message);
    error.retry_after = Some(seconds_until(ban.until, Timestamp::now()));
    error
}

fn rate_limited(retry_after: std::time::Duration) -> ApiError {
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests, slow down");
    error.retry_after = Some(u32::try_from(retry_after.as_millis().div_ceil(1000).max(1)).unwrap_or(u32::MAX));
    error
}

fn seconds_until(until: Timestamp, now: Timestamp) -> u32 {
    let millis = (until.0 - now.0).max(0);
    u32::try_from(((millis + 999) / 1000).max(1)).unwrap_or(u32::MAX)
}

/// The subject a user token (or else the address) stands for, for admin and challenge use.
pub fn subject_of(user: Option<UserId>, ip: std::net::IpAddr) -> Subject {
    user.map_or(Subject::Ip(ip), Subject::User)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_clients_owe_no_work_and_risky_ones_more_with_risk() {
        assert_eq!(difficulty(Risk { requests: 5, refused: 0 }, 50), 0);
        assert_eq!(difficulty(Risk { requests: 26, refused: 0 }, 50), BASE_DIFFICULTY + 2);
        assert_eq!(difficulty(Risk { requests: 1, refused: 1 }, 50), BASE_DIFFICULTY + 2);
        assert_eq!(difficulty(Risk { requests: 40, refused: 3 }, 50), BASE_DIFFICULTY + 8);
        assert_eq!(difficulty(Risk { requests: 1000, refused: 1000 }, 50), MAX_DIFFICULTY);
        assert_eq!(difficulty(Risk { requests: 1000, refused: 0 }, 0), 0, "no threshold: rate alone asks nothing");
    }

    #[test]
    fn accounts_made_within_a_day_are_new() {
        let now = Timestamp(1_800_000_000_000);
        let made = |ago_ms: i64| TokenFacts { account_created: Some(Timestamp(now.0 - ago_ms)) };
        assert!(is_new(made(3_600_000), now));
        assert!(!is_new(made(NEW_ACCOUNT_MS), now));
        assert!(!is_new(TokenFacts::default(), now), "tokens without the claim are not judged new");
    }

    #[test]
    fn the_sale_comes_from_sale_paths_only() {
        assert_eq!(sale_of("/v1/sales/s_1/orders"), Some("s_1"));
        assert_eq!(sale_of("/v1/sales/s_1/waitlist"), Some("s_1"));
        assert_eq!(sale_of("/v1/orders/o_1/pay"), None);
        assert_eq!(sale_of("/v1/sales/"), None);
    }
}
