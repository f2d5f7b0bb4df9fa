use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::LoadError;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// Mints an HS256 JWT `{sub, exp}` that the server accepts as `user`.
///
/// HMAC signing accepts keys of any length and the claims always serialize, so the fallible
/// path cannot be reached; an empty string would be rejected by the server as 401 rather than
/// crash the generator. Use [`try_mint_token`] to see the error instead.
pub fn mint_token(secret: &str, user: &str, ttl_secs: u64) -> String {
    try_mint_token(secret, user, ttl_secs).unwrap_or_default()
}

pub fn try_mint_token(secret: &str, user: &str, ttl_secs: u64) -> Result<String, LoadError> {
    let key = EncodingKey::from_secret(secret.as_bytes());
    let claims = Claims { sub: user, exp: unix_now().saturating_add(ttl_secs) };
    jsonwebtoken::encode(&Header::default(), &claims, &key).map_err(LoadError::Token)
}

fn unix_now() -> u64 {
    // A clock before 1970 only makes tokens look expired; the server will say so with 401.
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Decoded {
        sub: String,
        exp: u64,
    }

    fn decode(token: &str, secret: &str) -> jsonwebtoken::errors::Result<Decoded> {
        let key = DecodingKey::from_secret(secret.as_bytes());
        let validation = Validation::new(Algorithm::HS256);
        jsonwebtoken::decode::<Decoded>(token, &key, &validation).map(|data| data.claims)
    }

    #[test]
    fn token_carries_sub_and_exp() {
        let before = unix_now();
        let token = mint_token("s3cret", "user-42", 600);
        let claims = decode(&token, "s3cret").expect("token verifies with the same secret");
        assert_eq!(claims.sub, "user-42");
        assert!(claims.exp >= before + 600);
        assert!(claims.exp <= unix_now() + 600);
    }

    #[test]
    fn token_is_signed_hs256() {
        let token = mint_token("s3cret", "user-42", 600);
        let header = jsonwebtoken::decode_header(&token).expect("header decodes");
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn token_rejected_with_other_secret() {
        let token = mint_token("s3cret", "user-42", 600);
        assert!(decode(&token, "other").is_err());
    }
}
