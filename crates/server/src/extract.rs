//! Request parsing at the edge: JSON bodies and headers become validated values or a 400/413.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use stampede_core::IdempotencyKey;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body of any content type; an empty body reads as `{}`. Errors name the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        parse_json(text).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." || path.is_empty() {
            ApiError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))?;
    Ok(value)
}

/// The one `{id}` of a route, with the API's JSON error when it is not valid UTF-8.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid(format!("id: {}", rejection.body_text())))?;
        Ok(PathId(id))
    }
}

/// The optional `Idempotency-Key` header, validated.
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyHeader(None));
        };
        let text = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key: must be visible ASCII"))?;
        Ok(IdempotencyHeader(Some(IdempotencyKey::new(text)?)))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[allow(dead_code)]
        stock: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let error = parse_json::<Body>(br#"{"stock":"lots"}"#).unwrap_err();
        assert!(error.message.starts_with("stock:"), "{}", error.message);
        let error = parse_json::<Body>(br#"{"stock":1} trailing"#).unwrap_err();
        assert_eq!(error.code, "invalid_request");
        assert!(parse_json::<Body>(br#"{"stock": "#).is_err());
    }
}
