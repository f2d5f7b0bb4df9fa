//! Live-auction bidding load: many distinct bidders on one hot auction that never ends during
//! the run, each bid meant to be accepted.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::http::HeaderValue;
use hyper::{Method, Request, StatusCode, Uri};
use serde::Deserialize;

use crate::conn::{self, Body, Conn};
use crate::runner::run_phase;
use crate::scenario::{mint_user_tokens, run_id, unexpected_status};
use crate::workload::{self, Workload};
use crate::{LoadError, Phase, Report, Target};

/// One hot auction, bid on by `users` distinct bidders in turn.
#[derive(Clone, Debug)]
pub struct BidScenario {
    pub users: usize,
    pub starting_price_cents: i64,
    /// Increments between consecutive bids' maxima; see [`Bidding`] for why at least 2.
    pub spacing: u32,
}

/// The measured phase and the auction as the server saw it afterwards.
#[derive(Clone, Debug)]
pub struct BidRun {
    pub report: Report,
    pub auction_id: String,
    /// Accepted bids over the whole run, warm-up included.
    pub bid_count: u64,
    pub current_price_cents: i64,
}

/// The standard ladder (`from_cents`, `increment_cents`), sent with the auction so the generator
/// and the server agree on it by construction.
pub(crate) const LADDER: [(i64, i64); 10] = [
    (0, 5),
    (100, 25),
    (500, 50),
    (2_500, 100),
    (10_000, 250),
    (25_000, 500),
    (50_000, 1_000),
    (100_000, 2_500),
    (250_000, 5_000),
    (500_000, 10_000),
];

/// Far enough that the auction cannot end during any run; within the server's 7-day window.
const AUCTION_DAYS: i64 = 6;
const TOKEN_MARGIN: Duration = Duration::from_secs(3600);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct AuctionState {
    id: String,
    #[serde(default)]
    bid_count: u64,
    #[serde(default)]
    current_price_cents: i64,
}

/// Bid requests for one auction.
///
/// Every bid's maximum is `spacing` increments above the previous one sent. A bid the server
/// takes in sending order beats the leader; one overtaken by a single later bid still clears the
/// minimum that bid left (price = runner-up's maximum + one increment), as long as the spacing
/// is at least 2. A bid overtaken by two or more later ones is below the new runner-up and gets
/// 409 `bid_too_low` whatever the spacing, which is why the report counts 201 and 409 apart.
pub(crate) struct Bidding {
    pub(crate) host: HeaderValue,
    pub(crate) uri: Uri,
    pub(crate) tokens: Vec<HeaderValue>,
    pub(crate) next_user: AtomicUsize,
    pub(crate) next_max: AtomicI64,
    pub(crate) spacing: i64,
}

/// `GET /healthz` baseline is the caller's; this creates the auction and bids on it.
pub async fn bids(target: &Target, phase: &Phase, scenario: &BidScenario) -> Result<BidRun, LoadError> {
    if scenario.users == 0 {
        return Err(LoadError::InvalidScenario("users must be at least 1"));
    }
    if scenario.spacing < 2 {
        return Err(LoadError::InvalidScenario("bid spacing must be at least 2 increments"));
    }
    let ttl = phase.warmup + phase.duration + TOKEN_MARGIN;
    let tokens = mint_user_tokens(&target.jwt_secret, scenario.users, ttl.as_secs()).await?;
    let mut admin_conn = conn::connect(target.addr).await?;
    let auction_id = create_auction(&mut admin_conn, target, scenario.starting_price_cents).await?;
    let bidding = Bidding {
        host: workload::host_header(target.addr)?,
        uri: bid_uri(&auction_id)?,
        tokens,
        next_user: AtomicUsize::new(0),
        next_max: AtomicI64::new(scenario.starting_price_cents),
        spacing: i64::from(scenario.spacing),
    };
    let report = run_phase("bids", &target.addrs(), phase, Workload::Bid(bidding)).await?;
    let after = read_auction(&mut conn::connect(target.addr).await?, target, &auction_id).await?;
    Ok(BidRun { report, auction_id, bid_count: after.bid_count, current_price_cents: after.current_price_cents })
}

/// The increment that applies at `price_cents` on [`LADDER`].
pub(crate) fn increment_at(price_cents: i64) -> i64 {
    let step = LADDER.iter().rev().find(|(from, _)| *from <= price_cents);
    step.map_or(LADDER[0].1, |(_, increment)| *increment)
}

impl Bidding {
    pub(crate) fn request(&self) -> Request<Body> {
        let user = self.next_user.fetch_add(1, Ordering::Relaxed) % self.tokens.len();
        let body = Bytes::from(format!(r#"{{"max_amount_cents":{}}}"#, self.take_max()));
        let mut request = workload::json_request(Method::POST, self.uri.clone(), &self.host, body);
        request.headers_mut().insert(AUTHORIZATION, self.tokens[user].clone());
        request
    }

    fn take_max(&self) -> i64 {
        let raise = |max: i64| Some(max.saturating_add(self.spacing * increment_at(max)));
        // The closure never declines, so both arms carry the previous value.
        match self.next_max.fetch_update(Ordering::Relaxed, Ordering::Relaxed, raise) {
            Ok(previous) | Err(previous) => previous,
        }
    }
}

/// Creates an auction for one run. It ends days from now and `soft_close_seconds` is 0, so no
/// bid extends it.
pub(crate) async fn create_auction(
    conn: &mut Conn,
    target: &Target,
    starting_price_cents: i64,
) -> Result<String, LoadError> {
    let ends_at = chrono::Utc::now() + chrono::Duration::days(AUCTION_DAYS);
    let body = serde_json::json!({
        "title": format!("loadgen {}", run_id()),
        "starting_price_cents": starting_price_cents,
        "ends_at": ends_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "soft_close_seconds": 0,
        "increments": LADDER,
    });
    let uri = Uri::from_static("/v1/auctions");
    let request = admin_request(target, Method::POST, uri, Bytes::from(body.to_string()))?;
    let state = exchange(conn, "auction creation", request, StatusCode::CREATED).await?;
    Ok(state.id)
}

async fn read_auction(conn: &mut Conn, target: &Target, auction_id: &str) -> Result<AuctionState, LoadError> {
    let uri = auction_uri(auction_id, "")?;
    let request = admin_request(target, Method::GET, uri, Bytes::new())?;
    exchange(conn, "auction read", request, StatusCode::OK).await
}

fn admin_request(target: &Target, method: Method, uri: Uri, body: Bytes) -> Result<Request<Body>, LoadError> {
    let admin = workload::bearer(&target.admin_token, "admin token")?;
    let mut request = workload::json_request(method, uri, &workload::host_header(target.addr)?, body);
    request.headers_mut().insert(AUTHORIZATION, admin);
    Ok(request)
}

async fn exchange(
    conn: &mut Conn,
    what: &'static str,
    request: Request<Body>,
    expected: StatusCode,
) -> Result<AuctionState, LoadError> {
    let (status, body) = tokio::time::timeout(SETUP_TIMEOUT, conn.fetch(request))
        .await
        .map_err(|_| LoadError::RequestTimeout { what })?
        .map_err(|source| LoadError::Request { what, source })?;
    if status != expected {
        return Err(unexpected_status(what, status, &body));
    }
    serde_json::from_slice(&body).map_err(|source| LoadError::InvalidResponse { what, source })
}

pub(crate) fn bid_uri(auction_id: &str) -> Result<Uri, LoadError> {
    auction_uri(auction_id, "/bids")
}

/// `/v1/auctions/{id}{suffix}`, the id percent-encoded.
pub(crate) fn auction_uri(auction_id: &str, suffix: &str) -> Result<Uri, LoadError> {
    let path = format!("/v1/auctions/{}{suffix}", workload::encode_segment(auction_id));
    path.parse().map_err(|_| LoadError::InvalidSaleId(auction_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bidding(spacing: i64) -> Bidding {
        Bidding {
            host: HeaderValue::from_static("127.0.0.1:1"),
            uri: bid_uri("a").expect("uri"),
            tokens: vec![HeaderValue::from_static("Bearer t0"), HeaderValue::from_static("Bearer t1")],
            next_user: AtomicUsize::new(0),
            next_max: AtomicI64::new(90),
            spacing,
        }
    }

    #[test]
    fn ladder_matches_the_standard_steps() {
        assert_eq!(increment_at(0), 5);
        assert_eq!(increment_at(99), 5);
        assert_eq!(increment_at(100), 25);
        assert_eq!(increment_at(499_999), 5_000);
        assert_eq!(increment_at(10_000_000), 10_000);
    }

    #[test]
    fn maxima_rise_by_spacing_increments_across_the_ladder() {
        let bidding = bidding(2);
        let maxima: Vec<i64> = (0..4).map(|_| bidding.take_max()).collect();
        assert_eq!(maxima, vec![90, 100, 150, 200]);
    }

    #[test]
    fn bid_requests_rotate_bidders() {
        let bidding = bidding(3);
        let first = bidding.request();
        let second = bidding.request();
        assert_eq!(first.headers()[AUTHORIZATION], "Bearer t0");
        assert_eq!(second.headers()[AUTHORIZATION], "Bearer t1");
        assert_eq!(first.uri().path(), "/v1/auctions/a/bids");
        assert_eq!(first.method(), Method::POST);
    }
}
