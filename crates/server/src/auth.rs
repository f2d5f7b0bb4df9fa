//! Bearer tokens: HS256 user JWTs (`sub`, `exp`) and the admin token.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use stampede_core::{Timestamp, UserId};

use crate::error::ApiError;
use crate::AppState;

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    admin_token: String,
    session_ttl_seconds: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// When the account was made (Unix seconds): session tokens of built-in accounts carry it,
    /// and a shop minting its own tokens may; a new account is one risk signal of the defense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account_created: Option<i64>,
}

/// What a verified token says beyond the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenFacts {
    pub account_created: Option<Timestamp>,
}

impl Auth {
    pub fn new(jwt_secret: &str, admin_token: &str, session_ttl_seconds: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            validation,
            admin_token: admin_token.to_owned(),
            session_ttl_seconds,
        }
    }

    /// The user a token speaks for, if it is a valid, unexpired HS256 token with a `sub`.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        self.verify_with_facts(token).map(|(user, _)| user)
    }

    pub fn verify_with_facts(&self, token: &str) -> Option<(UserId, TokenFacts)> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let facts =
            TokenFacts { account_created: data.claims.account_created.map(|s| Timestamp(s.saturating_mul(1000))) };
        Some((UserId::new(&data.claims.sub).ok()?, facts))
    }

    pub fn is_admin(&self, token: &str) -> bool {
        constant_time_eq(token.as_bytes(), self.admin_token.as_bytes())
    }

    /// A session token for a built-in account made at `account_created`.
    pub fn mint(&self, user_id: &str, account_created: Timestamp) -> Result<(String, Timestamp), ApiError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let exp = now + self.session_ttl_seconds;
        let claims = Claims { sub: user_id.to_owned(), exp, account_created: Some(account_created.0 / 1000) };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|error| {
            tracing::error!(%error, "signing a session token failed");
            ApiError::internal()
        })?;
        let expires_at = Timestamp(i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1000));
        Ok((token, expires_at))
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

pub(crate) fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A request made by a user with a valid token.
pub struct User(pub UserId);

/// The user of a token an earlier layer (the guard) verified already.
#[derive(Clone)]
pub(crate) struct VerifiedUser(pub UserId);

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(VerifiedUser(user)) = parts.extensions.get::<VerifiedUser>() {
            return Ok(User(user.clone()));
        }
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        state.auth.verify(token).map(User).ok_or_else(ApiError::unauthorized)
    }
}

/// A user on a stream route: the token comes in the `Authorization` header or, for clients
/// that cannot set headers (browser `EventSource` and `WebSocket`), as `?access_token=`.
pub struct StreamUser(pub UserId);

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        stream_user(state, &parts.headers, parts.uri.query()).map(StreamUser)
    }
}

/// The user of a stream request: a bearer token, or `access_token` in the query.
pub(crate) fn stream_user(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> Result<UserId, ApiError> {
    let token = stream_token(headers, query).ok_or_else(ApiError::unauthorized)?;
    state.auth.verify(token).ok_or_else(ApiError::unauthorized)
}

/// The token of a request from a client that may not be able to set headers (browser
/// `EventSource` and `WebSocket`): the bearer token, else `access_token` in the query.
pub(crate) fn stream_token<'a>(headers: &'a axum::http::HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let from_query = || query?.split('&').find_map(|pair| pair.strip_prefix("access_token="));
    bearer_in(headers).or_else(from_query)
}

/// Whether `token` is the admin token: a user's token is forbidden, anything else unauthorized.
pub(crate) fn check_admin(state: &AppState, token: &str) -> Result<(), ApiError> {
    if state.auth.is_admin(token) {
        return Ok(());
    }
    if state.auth.verify(token).is_some() {
        return Err(ApiError::forbidden());
    }
    Err(ApiError::unauthorized())
}

/// A request made with the admin token. A user token here is forbidden, anything else
/// unauthorized.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        check_admin(state, token).map(|()| Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_others_do_not() {
        let auth = Auth::new("secret-one", "admin", 60);
        let (token, _) = auth.mint("u_1", Timestamp(1_800_000_000_000)).unwrap();
        let (_, facts) = auth.verify_with_facts(&token).unwrap();
        assert_eq!(facts.account_created, Some(Timestamp(1_800_000_000_000)));
        assert_eq!(auth.verify(&token).unwrap().as_str(), "u_1");
        let other = Auth::new("secret-two", "admin", 60);
        assert!(other.verify(&token).is_none());
        assert!(auth.verify("abc.def.ghi").is_none());
    }

    #[test]
    fn admin_token_compare() {
        let auth = Auth::new("s", "the-admin-token", 60);
        assert!(auth.is_admin("the-admin-token"));
        assert!(!auth.is_admin("the-admin-tokeN"));
        assert!(!auth.is_admin("the-admin"));
    }
}
