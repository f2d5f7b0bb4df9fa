//! The defense's own endpoints: proof-of-work challenges, and the admin's view of bans.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::Timestamp;
use stampede_engine::limits::{Ban, Risk, Subject};
use utoipa::ToSchema;

use super::client_ip::ClientIp;
use super::guard::{caller, difficulty, subject_of, NEW_ACCOUNT_BITS};
use super::pow::BASE_DIFFICULTY;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId};
use crate::AppState;

const MAX_BAN_SECONDS: u64 = 365 * 24 * 3600;

#[derive(Serialize, ToSchema)]
pub struct ChallengeBody {
    challenge: String,
    difficulty: u8,
    expires_at: String,
    algorithm: &'static str,
}

/// `GET /v1/challenge`: a puzzle as hard as the caller's risk asks (the base difficulty for a
/// quiet client, so one can be solved ahead of need).
#[utoipa::path(
    get, path = "/v1/challenge", tag = "defense", operation_id = "challenge",
    responses((status = 200, description = "A challenge: find a nonce so that SHA-256 of `<challenge>:<nonce>` starts with `difficulty` zero bits, then send `Stampede-Pow: <challenge>:<nonce>`", body = ChallengeBody)),
    security((), ("user" = [])),
)]
pub async fn challenge(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
) -> Json<ChallengeBody> {
    let now = Timestamp::now();
    let (user, new_account) = caller(&state, &headers, now).unzip();
    let subject = subject_of(user, ip);
    let risk = match &state.limits {
        Some(limits) => limits.risk(&subject, now).await.unwrap_or_default(),
        None => Risk::default(),
    };
    let extra = if new_account == Some(true) { NEW_ACCOUNT_BITS } else { 0 };
    let bits = difficulty(risk, state.policy.ban_threshold).max(BASE_DIFFICULTY) + extra;
    let challenge = state.puzzles.issue(bits, now);
    Json(ChallengeBody {
        challenge: challenge.token,
        difficulty: challenge.difficulty,
        expires_at: challenge.expires_at.to_rfc3339(),
        algorithm: "sha256: leading zero bits of SHA-256(\"<challenge>:<nonce>\")",
    })
}

#[derive(Serialize, ToSchema)]
pub struct BanBody {
    /// `user:<id>` or `ip:<address>`.
    subject: String,
    until: String,
    reason: String,
}

impl From<Ban> for BanBody {
    fn from(ban: Ban) -> Self {
        Self { subject: ban.subject.to_string(), until: ban.until.to_rfc3339(), reason: ban.reason }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BanList {
    /// Soonest expiry first.
    bans: Vec<BanBody>,
}

fn limits_of(state: &AppState) -> Result<&dyn stampede_engine::limits::Limits, ApiError> {
    state
        .limits
        .as_deref()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "limits_off", "limits are off on this server"))
}

fn subject(text: &str) -> Result<Subject, ApiError> {
    text.parse().map_err(|_| ApiError::invalid("subject: must be user:<id> or ip:<address>"))
}

/// `GET /v1/admin/bans`: bans in force, soonest expiry first.
#[utoipa::path(
    get, path = "/v1/admin/bans", tag = "defense", operation_id = "list_bans",
    responses(
        (status = 200, description = "Bans in force", body = BanList),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
        (status = 409, description = "`limits_off`: the server runs with limits off", body = ErrorBody),
    ),
    security(("admin" = [])),
)]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<BanList>, ApiError> {
    let bans = limits_of(&state)?.bans(Timestamp::now()).await?;
    Ok(Json(BanList { bans: bans.into_iter().map(BanBody::from).collect() }))
}

#[derive(Deserialize, ToSchema)]
pub struct NewBan {
    /// `user:<id>` or `ip:<address>`.
    subject: String,
    /// The server's ban duration if absent.
    #[schema(minimum = 1, maximum = 31536000)]
    seconds: Option<u64>,
    /// At most 200 characters.
    reason: Option<String>,
}

/// `POST /v1/admin/bans {"subject","seconds"?,"reason"?}`: bans (or re-bans) a user or address.
#[utoipa::path(
    post, path = "/v1/admin/bans", tag = "defense", operation_id = "ban",
    request_body = NewBan,
    responses(
        (status = 201, description = "The ban", body = BanBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
        (status = 409, description = "`limits_off`: the server runs with limits off", body = ErrorBody),
    ),
    security(("admin" = [])),
)]
pub async fn ban(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody<NewBan>,
) -> Result<(StatusCode, Json<BanBody>), ApiError> {
    let subject = subject(&body.subject)?;
    let default_seconds = state.policy.ban_duration.as_secs();
    let seconds = body.seconds.unwrap_or(default_seconds);
    if seconds == 0 || seconds > MAX_BAN_SECONDS {
        return Err(ApiError::invalid(format!("seconds: must be between 1 and {MAX_BAN_SECONDS}")));
    }
    let reason = body.reason.unwrap_or_else(|| "banned by an admin".to_owned());
    if reason.chars().count() > 200 {
        return Err(ApiError::invalid("reason: at most 200 characters"));
    }
    let now = Timestamp::now();
    let until = Timestamp(now.0 + i64::try_from(seconds * 1000).unwrap_or(i64::MAX));
    let ban = Ban { subject, until, reason };
    limits_of(&state)?.ban(ban.clone(), now).await?;
    Ok((StatusCode::CREATED, Json(ban.into())))
}

/// `DELETE /v1/admin/bans/{subject}`: lifts a ban; 404 when none is in force.
#[utoipa::path(
    delete, path = "/v1/admin/bans/{subject}", tag = "defense", operation_id = "lift_ban",
    params(("subject" = String, Path, description = "`user:<id>` or `ip:<address>`")),
    responses(
        (status = 204, description = "The ban is lifted"),
        (status = 400, response = crate::openapi::InvalidRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
        (status = 404, description = "`not_found`: no ban in force for this subject", body = ErrorBody),
        (status = 409, description = "`limits_off`: the server runs with limits off", body = ErrorBody),
    ),
    security(("admin" = [])),
)]
pub async fn lift(State(state): State<AppState>, _admin: Admin, PathId(text): PathId) -> Result<StatusCode, ApiError> {
    let subject = subject(&text)?;
    match limits_of(&state)?.lift(&subject, Timestamp::now()).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("ban")),
    }
}
