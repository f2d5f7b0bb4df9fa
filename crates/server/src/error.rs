//! The one place where failures become HTTP answers: `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stampede_core::{AuctionError, RoomError, SaleError, ValidationError};
use stampede_engine::EngineError;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds; always set on 429 and 503.
    pub retry_after: Option<u32>,
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorFields<'a> {
    /// Stable snake_case identifier, e.g. `sold_out`, `invalid_request`.
    code: &'a str,
    /// Text for people; for `invalid_request` it names the field.
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let retry_after = matches!(status.as_u16(), 429 | 503).then_some(1);
        Self { status, code, message: message.into(), retry_after }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "not allowed with this token")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is larger than 64 KiB")
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    /// A failure whose detail belongs in the log, not in the answer.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorFields { code: self.code, message: &self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::invalid(error.to_string())
    }
}

impl From<SaleError> for ApiError {
    fn from(error: SaleError) -> Self {
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, error.to_string());
        match error {
            SaleError::SoldOut => conflict("sold_out"),
            SaleError::LimitReached => conflict("limit_reached"),
            SaleError::NotLive => conflict("sale_not_live"),
            SaleError::HoldExpired => conflict("hold_expired"),
            SaleError::OrderCancelled => conflict("order_cancelled"),
            SaleError::OrderPaid => conflict("order_paid"),
            SaleError::StockAvailable => conflict("stock_available"),
            SaleError::AlreadyWaitlisted => conflict("already_waitlisted"),
            SaleError::InvalidQuantity => {
                ApiError::invalid("quantity: must be between 1 and the sale's per_user_limit")
            }
            SaleError::OrderNotFound => ApiError::not_found("order"),
        }
    }
}

impl From<AuctionError> for ApiError {
    fn from(error: AuctionError) -> Self {
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, error.to_string());
        match error {
            AuctionError::NotLive => conflict("auction_not_live"),
            AuctionError::BidTooLow { .. } => conflict("bid_too_low"),
            AuctionError::BuyNowUnavailable => conflict("buy_now_unavailable"),
            AuctionError::KeyReused => conflict("idempotency_key_reused"),
            AuctionError::SellerMayNotBid => ApiError::new(StatusCode::FORBIDDEN, "forbidden", error.to_string()),
        }
    }
}

impl From<RoomError> for ApiError {
    fn from(error: RoomError) -> Self {
        match error {
            RoomError::NotOpen => ApiError::new(StatusCode::CONFLICT, "queue_not_open", error.to_string()),
            RoomError::Closed => ApiError::new(StatusCode::CONFLICT, "queue_closed", error.to_string()),
            RoomError::UnknownTicket => ApiError::not_found("ticket"),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Sale(sale) => sale.into(),
            EngineError::SaleNotFound => ApiError::not_found("sale"),
            EngineError::Auction(auction) => auction.into(),
            EngineError::AuctionNotFound => ApiError::not_found("auction"),
            EngineError::Room(room) => room.into(),
            EngineError::UsernameTaken => {
                ApiError::new(StatusCode::CONFLICT, "username_taken", "that username is taken")
            }
            EngineError::Unavailable(detail) => {
                tracing::error!(%detail, "backend unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable, retry shortly")
            }
        }
    }
}
