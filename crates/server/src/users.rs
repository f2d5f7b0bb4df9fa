//! Built-in accounts: sign-up and sign-in. Password hashing (argon2id) runs on the blocking
//! pool, a few at a time, so a burst of sign-ups cannot starve the request threads or memory.

use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_engine::NewUser;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::AppState;

/// How long a sign-up or sign-in waits for a hashing slot before answering 503.
const HASH_WAIT: Duration = Duration::from_secs(3);

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3 to 64 characters of `A-Z a-z 0-9 _ . -`.
    #[schema(pattern = "^[A-Za-z0-9_.-]{3,64}$")]
    username: String,
    #[schema(min_length = 8, max_length = 256)]
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserBody {
    id: String,
    username: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionBody {
    /// A user JWT for `Authorization: Bearer`.
    token: String,
    expires_at: String,
}

fn validate(credentials: &Credentials) -> Result<(), ApiError> {
    let name = &credentials.username;
    let name_ok = (3..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err(ApiError::invalid("username: 3 to 64 characters of A-Z a-z 0-9 _ . -"));
    }
    if !(8..=256).contains(&credentials.password.chars().count()) {
        return Err(ApiError::invalid("password: must be 8 to 256 characters"));
    }
    Ok(())
}

/// Runs CPU-heavy password work on the blocking pool under the hashing permit.
async fn hashing<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let permit = tokio::time::timeout(HASH_WAIT, state.hashing.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| ApiError::overloaded("too many sign-ins at once, retry shortly"))?;
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await;
    result.map_err(|error| {
        tracing::error!(%error, "password hashing task failed");
        ApiError::internal()
    })
}

#[utoipa::path(
    post, path = "/v1/users", tag = "accounts", operation_id = "sign_up",
    request_body = Credentials,
    responses(
        (status = 201, description = "The account", body = UserBody),
        (status = 400, response = crate::openapi::InvalidRequest),
        (status = 403, response = crate::openapi::Guarded),
        (status = 409, description = "`username_taken`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
)]
pub async fn sign_up(
    State(state): State<AppState>,
    JsonBody(credentials): JsonBody<Credentials>,
) -> Result<(StatusCode, Json<UserBody>), ApiError> {
    validate(&credentials)?;
    if state.backend.find_user(&credentials.username).await?.is_some() {
        return Err(stampede_engine::EngineError::UsernameTaken.into());
    }
    let password = credentials.password;
    let hash = hashing(&state, move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(|error| {
        tracing::error!(%error, "hashing a password failed");
        ApiError::internal()
    })?;
    let user = state.backend.create_user(NewUser { username: credentials.username, password_hash: hash }).await?;
    Ok((StatusCode::CREATED, Json(UserBody { id: user.id, username: user.username })))
}

#[utoipa::path(
    post, path = "/v1/sessions", tag = "accounts", operation_id = "sign_in",
    request_body = Credentials,
    responses(
        (status = 200, description = "A session token", body = SessionBody),
        (status = 401, description = "`invalid_credentials`: unknown user or wrong password", body = ErrorBody),
        (status = 403, response = crate::openapi::Guarded),
        (status = 429, response = crate::openapi::RateLimited),
    ),
)]
pub async fn sign_in(
    State(state): State<AppState>,
    JsonBody(credentials): JsonBody<Credentials>,
) -> Result<Json<SessionBody>, ApiError> {
    let user = state.backend.find_user(&credentials.username).await?;
    // Unknown users are checked against a dummy hash too, so both failures take the same time.
    let stored = user.as_ref().map_or_else(|| state.dummy_hash.clone(), |u| u.password_hash.clone());
    let password = credentials.password;
    let matches = hashing(&state, move || {
        PasswordHash::new(&stored)
            .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await?;
    let Some(user) = user.filter(|_| matches) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong username or password"));
    };
    let (token, expires_at) = state.auth.mint(&user.id, user.created_at)?;
    Ok(Json(SessionBody { token, expires_at: expires_at.to_rfc3339() }))
}

/// A hash of a random password, used to spend the same time on unknown usernames.
pub fn dummy_hash() -> String {
    let salt = SaltString::generate(&mut OsRng);
    let password = stampede_engine::ids::random_token(24);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}
