//! Live auctions: create (admin), read, bid (proxy maximum), buy now.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::{Ladder, Timestamp};
use stampede_engine::{AuctionView, BidCommand, NewAuction};
use utoipa::ToSchema;

use crate::auth::{Admin, User};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{IdempotencyHeader, JsonBody, PathId};
use crate::sales::parse_time;
use crate::AppState;

/// Amounts above this are refused: far beyond any lot, and exact in every backend's arithmetic.
const MAX_CENTS: i64 = 1_000_000_000_000;
const MAX_WINDOW_SECONDS: u32 = 7 * 24 * 3600;
const MAX_EXTENSIONS: u32 = 10_000;

#[derive(Deserialize, ToSchema)]
pub struct CreateAuction {
    /// 1 to 200 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    /// The marketplace seller, who may not bid; `house` if absent.
    seller_id: Option<String>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    starting_price_cents: i64,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    reserve_price_cents: Option<i64>,
    /// At least the starting and reserve prices.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    buy_now_price_cents: Option<i64>,
    /// RFC 3339; now if absent.
    starts_at: Option<String>,
    /// RFC 3339, in the future and after `starts_at`.
    ends_at: String,
    /// A bid this close to the end extends it; 120 if absent.
    #[schema(maximum = 604800)]
    soft_close_seconds: Option<u32>,
    /// By how much; 120 if absent.
    #[schema(minimum = 1, maximum = 604800)]
    extend_seconds: Option<u32>,
    #[schema(maximum = 10000)]
    max_extensions: Option<u32>,
    /// `[[from_cents, increment_cents], ...]`; the standard ladder when absent.
    #[schema(value_type = Option<Vec<Vec<i64>>>)]
    increments: Option<Vec<(i64, i64)>>,
    /// How long the winner has to pay; a day if absent.
    #[schema(minimum = 1, maximum = 604800)]
    payment_seconds: Option<u32>,
}

fn cents(field: &str, value: i64) -> Result<i64, ApiError> {
    if (1..=MAX_CENTS).contains(&value) {
        return Ok(value);
    }
    Err(ApiError::invalid(format!("{field}: must be between 1 and {MAX_CENTS}")))
}

fn seconds(field: &str, value: Option<u32>, default: u32, min: u32) -> Result<u32, ApiError> {
    let value = value.unwrap_or(default);
    if (min..=MAX_WINDOW_SECONDS).contains(&value) {
        return Ok(value);
    }
    Err(ApiError::invalid(format!("{field}: must be between {min} and {MAX_WINDOW_SECONDS}")))
}

impl CreateAuction {
    fn into_new(self, now: Timestamp) -> Result<NewAuction, ApiError> {
        let title = self.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > 200 {
            return Err(ApiError::invalid("title: must be 1 to 200 characters"));
        }
        let seller_id = self.seller_id.unwrap_or_else(|| "house".to_owned());
        if seller_id.is_empty() || seller_id.len() > 256 {
            return Err(ApiError::invalid("seller_id: must be 1 to 256 bytes"));
        }
        let starting_price_cents = cents("starting_price_cents", self.starting_price_cents)?;
        let reserve_price_cents = self.reserve_price_cents.map(|c| cents("reserve_price_cents", c)).transpose()?;
        let buy_now_price_cents = self.buy_now_price_cents.map(|c| cents("buy_now_price_cents", c)).transpose()?;
        let floor = reserve_price_cents.unwrap_or(starting_price_cents).max(starting_price_cents);
        if buy_now_price_cents.is_some_and(|price| price < floor) {
            return Err(ApiError::invalid("buy_now_price_cents: must be at least the starting and reserve prices"));
        }
        let starts_at = parse_time("starts_at", self.starts_at)?;
        let ends_at = parse_time("ends_at", Some(self.ends_at))?.unwrap_or(now);
        if ends_at <= starts_at.unwrap_or(now).max(now) {
            return Err(ApiError::invalid("ends_at: must be in the future and after starts_at"));
        }
        let soft_close_seconds = seconds("soft_close_seconds", self.soft_close_seconds, 120, 0)?;
        let extend_seconds = seconds("extend_seconds", self.extend_seconds, 120, 1)?;
        if self.max_extensions.is_some_and(|cap| cap > MAX_EXTENSIONS) {
            return Err(ApiError::invalid(format!("max_extensions: must be at most {MAX_EXTENSIONS}")));
        }
        let ladder = match self.increments {
            Some(steps) if steps.iter().any(|&(from, step)| from > MAX_CENTS || step > MAX_CENTS) => {
                return Err(ApiError::invalid(format!("increments: amounts must be at most {MAX_CENTS}")));
            }
            Some(steps) => Ladder::new(steps)?,
            None => Ladder::standard(),
        };
        Ok(NewAuction {
            title,
            seller_id,
            starting_price_cents,
            reserve_price_cents,
            buy_now_price_cents,
            starts_at,
            ends_at,
            soft_close_seconds,
            extend_seconds,
            max_extensions: self.max_extensions,
            ladder,
            payment_seconds: seconds("payment_seconds", self.payment_seconds, 24 * 3600, 1)?,
        })
    }
}

/// What anyone sees of an auction: never the bidders' maxima, never the reserve amount.
#[derive(Serialize, ToSchema)]
pub struct AuctionBody {
    id: String,
    title: String,
    seller_id: String,
    /// `scheduled`, `live` or `ended`.
    status: &'static str,
    starting_price_cents: i64,
    current_price_cents: i64,
    leader_id: Option<String>,
    bid_count: u32,
    starts_at: String,
    ends_at: String,
    extensions: u32,
    reserve_met: bool,
    has_reserve: bool,
    min_next_bid_cents: i64,
    buy_now_price_cents: Option<i64>,
    soft_close_seconds: u32,
    extend_seconds: u32,
    max_extensions: Option<u32>,
    winner_id: Option<String>,
    order_id: Option<String>,
    version: u64,
}

impl From<AuctionView> for AuctionBody {
    fn from(view: AuctionView) -> Self {
        Self {
            id: view.id,
            title: view.title,
            seller_id: view.seller_id,
            status: view.status.as_str(),
            starting_price_cents: view.starting_price_cents,
            current_price_cents: view.current_price_cents,
            leader_id: view.leader_id,
            bid_count: view.bid_count,
            starts_at: view.starts_at.to_rfc3339(),
            ends_at: view.ends_at.to_rfc3339(),
            extensions: view.extensions,
            reserve_met: view.reserve_met,
            has_reserve: view.has_reserve,
            min_next_bid_cents: view.min_next_bid_cents,
            buy_now_price_cents: view.buy_now_price_cents,
            soft_close_seconds: view.soft_close_seconds,
            extend_seconds: view.extend_seconds,
            max_extensions: view.max_extensions,
            winner_id: view.winner_id,
            order_id: view.order_id,
            version: view.version,
        }
    }
}

#[utoipa::path(
    post, path = "/v1/auctions", tag = "auctions", operation_id = "create_auction",
    request_body = CreateAuction,
    responses(
        (status = 201, description = "The auction", body = AuctionBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
    ),
    security(("admin" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody<CreateAuction>,
) -> Result<(StatusCode, Json<AuctionBody>), ApiError> {
    let now = Timestamp::now();
    let auction = body.into_new(now)?;
    let view = state.backend.create_auction(auction, now).await?;
    state.board.note(crate::board::Noted::Auction(view.id.as_str().into()));
    Ok((StatusCode::CREATED, Json(view.into())))
}

#[utoipa::path(
    get, path = "/v1/auctions/{id}", tag = "auctions", operation_id = "get_auction",
    params(("id" = String, Path, description = "Auction id")),
    responses(
        (status = 200, description = "The auction; bidders' maxima and the reserve stay hidden", body = AuctionBody),
        (status = 404, description = "`not_found`: no such auction", body = ErrorBody),
    ),
)]
pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> Result<Json<AuctionBody>, ApiError> {
    Ok(Json(state.backend.auction(&id, Timestamp::now()).await?.into()))
}

#[derive(Deserialize, ToSchema)]
pub struct PlaceBid {
    /// The most the bidder will pay; proxy bidding pays just enough to lead.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    max_amount_cents: i64,
}

#[derive(Serialize, ToSchema)]
pub struct BidBody {
    id: String,
    /// `leading` or `outbid`.
    status: &'static str,
    current_price_cents: i64,
    leader_id: String,
}

#[utoipa::path(
    post, path = "/v1/auctions/{id}/bids", tag = "auctions", operation_id = "bid",
    params(
        ("id" = String, Path, description = "Auction id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: a repeat gives the same bid back"),
        ("Stampede-Pow" = Option<String>, Header, description = "`<challenge>:<nonce>`, when proof of work is asked"),
    ),
    request_body = PlaceBid,
    responses(
        (status = 201, description = "The bid", body = BidBody),
        (status = 200, description = "The bid an earlier request with the same `Idempotency-Key` made", body = BidBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, description = "`forbidden` (the seller bid on their own lot), `banned` (with `Retry-After`) or `proof_of_work_required`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until a ban ends"))),
        (status = 404, description = "`not_found`: no such auction", body = ErrorBody),
        (status = 409, description = "`bid_too_low` (the message says the minimum), `auction_not_live` or `idempotency_key_reused`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn bid(
    State(state): State<AppState>,
    User(user): User,
    PathId(auction_id): PathId,
    IdempotencyHeader(key): IdempotencyHeader,
    JsonBody(body): JsonBody<PlaceBid>,
) -> Result<(StatusCode, Json<BidBody>), ApiError> {
    let answer = async {
        let max_amount_cents = cents("max_amount_cents", body.max_amount_cents)?;
        let command = BidCommand { auction_id, user, max_amount_cents, idempotency_key: key };
        Ok::<_, ApiError>(state.backend.bid(command, Timestamp::now()).await?)
    }
    .await;
    state.telemetry.bid(match &answer {
        Ok(result) if !result.created => "replayed",
        Ok(result) => result.status.as_str(),
        Err(error) => error.code,
    });
    let result = answer?;
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    let body = BidBody {
        id: result.id,
        status: result.status.as_str(),
        current_price_cents: result.current_price_cents,
        leader_id: result.leader_id,
    };
    Ok((status, Json(body)))
}

#[utoipa::path(
    post, path = "/v1/auctions/{id}/buy-now", tag = "auctions", operation_id = "buy_now",
    params(
        ("id" = String, Path, description = "Auction id"),
        ("Stampede-Pow" = Option<String>, Header, description = "`<challenge>:<nonce>`, when proof of work is asked"),
    ),
    responses(
        (status = 200, description = "The auction, ended with the caller as winner", body = AuctionBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, description = "`forbidden` (the seller), `banned` (with `Retry-After`) or `proof_of_work_required`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until a ban ends"))),
        (status = 404, description = "`not_found`: no such auction", body = ErrorBody),
        (status = 409, description = "`buy_now_unavailable` or `auction_not_live`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn buy_now(
    State(state): State<AppState>,
    User(user): User,
    PathId(auction_id): PathId,
) -> Result<Json<AuctionBody>, ApiError> {
    Ok(Json(state.backend.buy_now(&auction_id, &user, Timestamp::now()).await?.into()))
}
