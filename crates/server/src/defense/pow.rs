//! Proof of work: a hashcash-style puzzle a suspicious client must solve before a mutating
//! request is taken. The server hands out a signed challenge (`GET /v1/challenge`); the client
//! finds a nonce such that SHA-256 of `<challenge>:<nonce>` starts with `difficulty` zero bits
//! and sends `Stampede-Pow: <challenge>:<nonce>`. Challenges are signed, so any replica can check
//! one without shared state; each may be used once (recorded until it expires) and for 300 s.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stampede_core::Timestamp;

/// How long a challenge may be used.
pub const CHALLENGE_SECONDS: u32 = 300;
/// Bits asked of a client with no risk signal: about 65,000 hashes, well under a second even in
/// a browser, and a real cost for a bot sending thousands of requests.
pub const BASE_DIFFICULTY: u8 = 16;
/// No client is asked for more: 2^24 hashes is tens of seconds in a browser.
pub const MAX_DIFFICULTY: u8 = 24;
const VERSION: &str = "p1";

type HmacSha256 = Hmac<Sha256>;

/// A challenge as handed out: the token the client hashes, its difficulty and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub token: String,
    pub difficulty: u8,
    pub expires_at: Timestamp,
}

/// A challenge the client solved, checked but not yet spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// Unique per challenge: what is recorded as spent.
    pub id: String,
    pub difficulty: u8,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("the proof-of-work header is malformed")]
    Malformed,
    #[error("the challenge was not issued by this server")]
    Forged,
    #[error("the challenge expired")]
    Expired,
    #[error("the nonce does not solve the challenge")]
    Unsolved,
    #[error("the challenge is easier than required")]
    TooEasy,
}

/// Signs and checks challenges with the server's secret.
pub struct Puzzles {
    key: Vec<u8>,
}

impl Puzzles {
    pub fn new(secret: &str) -> Self {
        // A key of its own, derived from the server secret, so a challenge is never a valid
        // signature of anything else.
        let key = Sha256::new().chain_update(b"stampede proof of work\0").chain_update(secret).finalize().to_vec();
        Self { key }
    }

    pub fn issue(&self, difficulty: u8, now: Timestamp) -> Challenge {
        let difficulty = difficulty.min(MAX_DIFFICULTY);
        let expires_at = now.plus_seconds(CHALLENGE_SECONDS);
        let id = stampede_engine::ids::random_token(16);
        let body = format!("{VERSION}.{id}.{}.{difficulty}", expires_at.0);
        let token = format!("{body}.{}", hex::encode(self.sign(&body)));
        Challenge { token, difficulty, expires_at }
    }

    /// Checks a `Stampede-Pow` header value: signature, expiry, the work, and that the
    /// challenge asked at least `required` bits.
    pub fn check(&self, header: &str, required: u8, now: Timestamp) -> Result<Solved, PowError> {
        let (token, nonce) = header.rsplit_once(':').ok_or(PowError::Malformed)?;
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(PowError::Malformed);
        }
        let (body, mac) = token.rsplit_once('.').ok_or(PowError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| PowError::Malformed)?;
        let mut verifier = HmacSha256::new_from_slice(&self.key).map_err(|_| PowError::Forged)?;
        verifier.update(body.as_bytes());
        verifier.verify_slice(&mac).map_err(|_| PowError::Forged)?;
        let solved = parse_body(body)?;
        if now >= solved.expires_at {
            return Err(PowError::Expired);
        }
        if solved.difficulty < required {
            return Err(PowError::TooEasy);
        }
        if leading_zero_bits(&Sha256::digest(header.as_bytes())) < u32::from(solved.difficulty) {
            return Err(PowError::Unsolved);
        }
        Ok(solved)
    }

    fn sign(&self, body: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

fn parse_body(body: &str) -> Result<Solved, PowError> {
    let mut fields = body.split('.');
    let (Some(VERSION), Some(id), Some(expires), Some(difficulty), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PowError::Malformed);
    };
    let expires_at = Timestamp(expires.parse().map_err(|_| PowError::Malformed)?);
    let difficulty = difficulty.parse().map_err(|_| PowError::Malformed)?;
    Ok(Solved { id: id.to_owned(), difficulty, expires_at })
}

fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for &byte in hash {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

/// Finds a nonce for `token` (what a client does); for tests and the load generator.
pub fn solve(token: &str, difficulty: u8) -> String {
    (0u64..)
        .map(|nonce| format!("{token}:{nonce}"))
        .find(|candidate| leading_zero_bits(&Sha256::digest(candidate.as_bytes())) >= u32::from(difficulty))
        .expect("some nonce solves any difficulty up to 256 bits")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    #[test]
    fn a_solved_challenge_checks_out() {
        let puzzles = Puzzles::new("secret");
        let challenge = puzzles.issue(8, NOW);
        let header = solve(&challenge.token, 8);
        let solved = puzzles.check(&header, 8, NOW.plus_seconds(10)).expect("valid");
        assert_eq!((solved.difficulty, solved.expires_at), (8, NOW.plus_seconds(CHALLENGE_SECONDS)));
        assert!(challenge.token.contains(&solved.id));
    }

    #[test]
    fn forged_expired_unsolved_and_easy_challenges_fail() {
        let puzzles = Puzzles::new("secret");
        let challenge = puzzles.issue(8, NOW);
        let header = solve(&challenge.token, 8);
        let other = Puzzles::new("another secret");
        assert_eq!(other.check(&header, 8, NOW), Err(PowError::Forged));
        assert_eq!(puzzles.check(&header, 8, NOW.plus_seconds(CHALLENGE_SECONDS)), Err(PowError::Expired));
        assert_eq!(puzzles.check(&header, 9, NOW), Err(PowError::TooEasy));
        let raised = header.replacen(".8.", ".20.", 1);
        assert_eq!(puzzles.check(&raised, 8, NOW), Err(PowError::Forged), "the difficulty is signed");
        let unsolved = (0..)
            .map(|n| format!("{}:{n}", challenge.token))
            .find(|h| leading_zero_bits(&Sha256::digest(h.as_bytes())) < 8)
            .expect("most nonces fail");
        assert_eq!(puzzles.check(&unsolved, 8, NOW), Err(PowError::Unsolved));
        for bad in ["", "x", "p1.a.b.c.d:1", &format!("{}:", challenge.token)] {
            assert!(puzzles.check(bad, 0, NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn leading_zero_bits_count_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0, 0b0001_0000, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }
}
