//! Proof of work as a client does it: fetch a challenge (`GET /v1/challenge`), find a nonce such
//! that SHA-256 of `<challenge>:<nonce>` starts with `difficulty` zero bits, and send
//! `Stampede-Pow: <challenge>:<nonce>` with the request.
//!
//! Solving is pure CPU work (about 2^difficulty hashes), so callers on the async threads run it
//! through `spawn_blocking`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::http::HeaderValue;
use hyper::{Request, StatusCode, Uri};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::conn::{self, Conn};
use crate::scenario::unexpected_status;
use crate::{workload, LoadError, Target};

/// The header a solved challenge travels in.
pub const POW_HEADER: &str = "stampede-pow";

/// A challenge as the server hands it out.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Challenge {
    #[serde(rename = "challenge")]
    pub token: String,
    pub difficulty: u8,
}

/// How fast this machine solves the server's challenges on one thread.
#[derive(Clone, Debug)]
pub struct SolveReport {
    pub solved: u64,
    /// Hashes tried over all solves.
    pub hashes: u64,
    /// Time spent solving only (fetching the challenges is not in it).
    pub solving: Duration,
    /// Difficulty of the challenges the server gave (the last one; they do not change for a
    /// quiet client).
    pub difficulty: u8,
}

impl SolveReport {
    pub fn solves_per_second(&self) -> f64 {
        self.solved as f64 / self.solving.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn hashes_per_second(&self) -> f64 {
        self.hashes as f64 / self.solving.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Solves measured together on one blocking thread, so each fetch is not a thread hand-off.
const SOLVES_PER_BATCH: usize = 8;

/// The nonce solving `token` at `difficulty` and how many hashes finding it took.
///
/// The SHA-256 state after `<challenge>:` is computed once and cloned for each nonce, so a try
/// costs the compression of the last block or two only.
pub fn solve(token: &str, difficulty: u8) -> (u64, u64) {
    let prefix = Sha256::new().chain_update(token.as_bytes()).chain_update(b":");
    let mut digits = [0; 20];
    for nonce in 0u64.. {
        let hash = prefix.clone().chain_update(decimal(nonce, &mut digits)).finalize();
        if leading_zero_bits(&hash) >= u32::from(difficulty) {
            return (nonce, nonce + 1);
        }
    }
    unreachable!("2^64 nonces cover any difficulty the server asks (at most 256 bits)")
}

/// `<challenge>:<nonce>`, ready for the `Stampede-Pow` header.
pub fn proof(token: &str, nonce: u64) -> Result<HeaderValue, LoadError> {
    HeaderValue::try_from(format!("{token}:{nonce}")).map_err(|_| LoadError::InvalidHeader { what: "proof of work" })
}

/// Fetches a challenge, as `authorization` (the user the proof is for; the difficulty follows
/// that user's risk) or anonymously.
pub(crate) async fn fetch_challenge(
    conn: &mut Conn,
    host: &HeaderValue,
    authorization: Option<&HeaderValue>,
) -> Result<Challenge, LoadError> {
    const WHAT: &str = "challenge";
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = Uri::from_static("/v1/challenge");
    request.headers_mut().insert(HOST, host.clone());
    if let Some(authorization) = authorization {
        request.headers_mut().insert(AUTHORIZATION, authorization.clone());
    }
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, conn.fetch(request))
        .await
        .map_err(|_| LoadError::RequestTimeout { what: WHAT })?
        .map_err(|source| LoadError::Request { what: WHAT, source })?;
    if status != StatusCode::OK {
        return Err(unexpected_status(WHAT, status, &body));
    }
    serde_json::from_slice(&body).map_err(|source| LoadError::InvalidResponse { what: WHAT, source })
}

/// Fetches a challenge for `authorization` and solves it off the async threads: the value of
/// the `Stampede-Pow` header.
pub(crate) async fn prove(
    conn: &mut Conn,
    host: &HeaderValue,
    authorization: &HeaderValue,
) -> Result<HeaderValue, LoadError> {
    let challenge = fetch_challenge(conn, host, Some(authorization)).await?;
    let solving = tokio::task::spawn_blocking(move || {
        let (nonce, _) = solve(&challenge.token, challenge.difficulty);
        proof(&challenge.token, nonce)
    });
    solving.await.map_err(LoadError::Worker)?
}

/// Fetches anonymous challenges from the server and solves them on one blocking thread for
/// `duration`; only the solving is timed.
pub async fn solve_rate(target: &Target, duration: Duration) -> Result<SolveReport, LoadError> {
    let host = workload::host_header(target.addr)?;
    let mut conn = conn::connect(target.addr).await?;
    let mut report = SolveReport { solved: 0, hashes: 0, solving: Duration::ZERO, difficulty: 0 };
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let mut batch = Vec::with_capacity(SOLVES_PER_BATCH);
        for _ in 0..SOLVES_PER_BATCH {
            batch.push(fetch_challenge(&mut conn, &host, None).await?);
        }
        let solving = tokio::task::spawn_blocking(move || solve_batch(&batch));
        let (difficulty, hashes, took) = solving.await.map_err(LoadError::Worker)?;
        report.solved += SOLVES_PER_BATCH as u64;
        report.hashes += hashes;
        report.solving += took;
        report.difficulty = difficulty;
    }
    Ok(report)
}

fn solve_batch(batch: &[Challenge]) -> (u8, u64, Duration) {
    let started = std::time::Instant::now();
    let mut hashes = 0;
    let mut difficulty = 0;
    for challenge in batch {
        hashes += solve(&challenge.token, challenge.difficulty).1;
        difficulty = challenge.difficulty;
    }
    (difficulty, hashes, started.elapsed())
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

/// The decimal digits of `value`, written at the end of `buffer` (room for any `u64`) without
/// allocating.
fn decimal(mut value: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_bits_of(header: &str) -> u32 {
        leading_zero_bits(&Sha256::digest(header.as_bytes()))
    }

    #[test]
    fn solutions_have_the_asked_leading_zero_bits() {
        for difficulty in [0, 1, 8, 12] {
            let token = format!("p1.abc.1800000000000.{difficulty}.00ff");
            let (nonce, hashes) = solve(&token, difficulty);
            assert_eq!(hashes, nonce + 1);
            let header = proof(&token, nonce).expect("valid header");
            assert!(zero_bits_of(header.to_str().expect("ascii")) >= u32::from(difficulty));
            if nonce > 0 {
                assert!(zero_bits_of(&format!("{token}:{}", nonce - 1)) < u32::from(difficulty), "the first solution");
            }
        }
    }

    #[test]
    fn decimal_digits_match_formatting() {
        let mut buffer = [0; 20];
        for value in [0, 7, 10, 99, 12_345, u64::MAX] {
            assert_eq!(decimal(value, &mut buffer), value.to_string().as_bytes());
        }
    }

    #[test]
    fn leading_zero_bits_count_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0, 0b0001_0000, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }

    #[test]
    fn challenges_parse_from_the_server_body() {
        let body =
            r#"{"challenge":"p1.x.1.16.ab","difficulty":16,"expires_at":"2030-01-01T00:00:00Z","algorithm":"sha256"}"#;
        let challenge: Challenge = serde_json::from_str(body).expect("parses");
        assert_eq!(challenge, Challenge { token: "p1.x.1.16.ab".to_owned(), difficulty: 16 });
    }
}
