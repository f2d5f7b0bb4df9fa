//! Flash sales: create, read, buy (hold), join the waitlist.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::{Quantity, RoomMode, RoomSettings, Timestamp};
use stampede_engine::{EngineError, NewSale, PurchaseCommand, SaleView};
use std::sync::Arc;
use utoipa::ToSchema;

use crate::auth::{Admin, User};
use crate::defense::guard::{caller, prove_work, WorkProven, NEW_ACCOUNT_BITS};
use crate::defense::pow::BASE_DIFFICULTY;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{IdempotencyHeader, JsonBody, PathId};
use crate::orders::OrderBody;
use crate::queue;
use crate::AppState;

const MAX_HOLD_SECONDS: u32 = 7 * 24 * 3600;
const MAX_STOCK_BUCKETS: u32 = stampede_engine::scaleout::MAX_STOCK_BUCKETS;

#[derive(Deserialize, ToSchema)]
pub struct CreateSale {
    /// 1 to 200 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    stock: u32,
    #[schema(minimum = 0)]
    price_cents: i64,
    /// RFC 3339; now if absent.
    starts_at: Option<String>,
    /// RFC 3339, after `starts_at`; open-ended if absent.
    ends_at: Option<String>,
    /// Units one user may hold or have bought; 1 if absent.
    #[schema(minimum = 1)]
    per_user_limit: Option<u32>,
    /// How long a hold lasts unpaid; 600 if absent.
    #[schema(minimum = 1, maximum = 604800)]
    hold_seconds: Option<u32>,
    /// Scale-out mode: keys the stock is split over; 1 if absent.
    #[schema(minimum = 1)]
    stock_buckets: Option<u32>,
    waiting_room: Option<RoomBody>,
    /// Buyers must send a solved challenge (`Stampede-Pow`) with each purchase.
    #[serde(default)]
    proof_of_work: bool,
}

/// A sale's waiting room, as clients give and see it.
#[derive(Deserialize, Serialize, Clone, ToSchema)]
#[schema(as = WaitingRoomSettings)]
pub struct RoomBody {
    /// `fifo` (arrival order) or `shuffled` (a pre-queue shuffled at the start).
    #[serde(default = "fifo")]
    #[schema(examples("fifo", "shuffled"))]
    mode: String,
    /// When joining opens (before the start for a shuffled pre-queue); the start if absent.
    opens_at: Option<String>,
    #[serde(default = "default_admit_per_minute")]
    #[schema(minimum = 1, maximum = 1000000)]
    admit_per_minute: u32,
    #[serde(default = "default_max_active")]
    #[schema(minimum = 1, maximum = 1000000)]
    max_active: u32,
    #[serde(default = "default_pass_seconds")]
    #[schema(minimum = 1, maximum = 3600)]
    pass_seconds: u32,
}

fn fifo() -> String {
    "fifo".to_owned()
}

fn default_admit_per_minute() -> u32 {
    600
}

fn default_max_active() -> u32 {
    500
}

fn default_pass_seconds() -> u32 {
    300
}

impl RoomBody {
    fn settings(self) -> Result<RoomSettings, ApiError> {
        let mode = RoomMode::parse(&self.mode)
            .ok_or_else(|| ApiError::invalid("waiting_room.mode: must be fifo or shuffled"))?;
        let opens_at = parse_time("waiting_room.opens_at", self.opens_at)?;
        if mode == RoomMode::Fifo && opens_at.is_some() {
            return Err(ApiError::invalid("waiting_room.opens_at: only a shuffled room opens before the start"));
        }
        if self.admit_per_minute == 0 || self.admit_per_minute > 1_000_000 {
            return Err(ApiError::invalid("waiting_room.admit_per_minute: must be between 1 and 1000000"));
        }
        if self.max_active == 0 || self.max_active > 1_000_000 {
            return Err(ApiError::invalid("waiting_room.max_active: must be between 1 and 1000000"));
        }
        if self.pass_seconds == 0 || self.pass_seconds > 3_600 {
            return Err(ApiError::invalid("waiting_room.pass_seconds: must be between 1 and 3600"));
        }
        let (admit_per_minute, max_active, pass_seconds) = (self.admit_per_minute, self.max_active, self.pass_seconds);
        Ok(RoomSettings { mode, opens_at, admit_per_minute, max_active, pass_seconds })
    }

    fn of(settings: RoomSettings) -> Self {
        Self {
            mode: settings.mode.as_str().to_owned(),
            opens_at: settings.opens_at.map(Timestamp::to_rfc3339),
            admit_per_minute: settings.admit_per_minute,
            max_active: settings.max_active,
            pass_seconds: settings.pass_seconds,
        }
    }
}

/// A sale; at every instant `available + held + sold == stock`.
#[derive(Serialize, ToSchema)]
pub struct SaleBody {
    id: String,
    name: String,
    price_cents: i64,
    stock: u32,
    available: u32,
    held: u32,
    sold: u32,
    per_user_limit: u32,
    hold_seconds: u32,
    starts_at: String,
    ends_at: Option<String>,
    /// `scheduled`, `live`, `sold_out` or `ended`.
    status: &'static str,
    waitlisted: u32,
    waiting_room: Option<RoomBody>,
    proof_of_work: bool,
}

impl From<SaleView> for SaleBody {
    fn from(sale: SaleView) -> Self {
        Self {
            id: sale.id,
            name: sale.name,
            price_cents: sale.price_cents,
            stock: sale.stock,
            available: sale.available,
            held: sale.held,
            sold: sale.sold,
            per_user_limit: sale.per_user_limit,
            hold_seconds: sale.hold_seconds,
            starts_at: sale.starts_at.to_rfc3339(),
            ends_at: sale.ends_at.map(Timestamp::to_rfc3339),
            status: sale.status.as_str(),
            waitlisted: sale.waitlisted,
            waiting_room: sale.room.map(RoomBody::of),
            proof_of_work: sale.proof_of_work,
        }
    }
}

pub(crate) fn parse_time(field: &str, text: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(&t).ok_or_else(|| ApiError::invalid(format!("{field}: not an RFC 3339 time")))
    })
    .transpose()
}

impl TryFrom<CreateSale> for NewSale {
    type Error = ApiError;

    fn try_from(body: CreateSale) -> Result<Self, ApiError> {
        let name = body.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::invalid("name: must be 1 to 200 characters"));
        }
        if body.price_cents < 0 {
            return Err(ApiError::invalid("price_cents: must not be negative"));
        }
        let per_user_limit = body.per_user_limit.unwrap_or(1);
        if per_user_limit == 0 {
            return Err(ApiError::invalid("per_user_limit: must be at least 1"));
        }
        let hold_seconds = body.hold_seconds.unwrap_or(600);
        if hold_seconds == 0 || hold_seconds > MAX_HOLD_SECONDS {
            return Err(ApiError::invalid("hold_seconds: must be between 1 and 604800"));
        }
        let stock_buckets = body.stock_buckets.unwrap_or(1);
        if stock_buckets == 0 || stock_buckets > MAX_STOCK_BUCKETS {
            return Err(ApiError::invalid(format!("stock_buckets: must be between 1 and {MAX_STOCK_BUCKETS}")));
        }
        let starts_at = parse_time("starts_at", body.starts_at)?;
        let ends_at = parse_time("ends_at", body.ends_at)?;
        if let (Some(start), Some(end)) = (starts_at, ends_at) {
            if end <= start {
                return Err(ApiError::invalid("ends_at: must be after starts_at"));
            }
        }
        Ok(NewSale {
            name,
            stock: body.stock,
            price_cents: body.price_cents,
            starts_at,
            ends_at,
            per_user_limit,
            hold_seconds,
            stock_buckets,
            room: body.waiting_room.map(RoomBody::settings).transpose()?,
            proof_of_work: body.proof_of_work,
        })
    }
}

#[utoipa::path(
    post, path = "/v1/sales", tag = "sales", operation_id = "create_sale",
    request_body = CreateSale,
    responses(
        (status = 201, description = "The sale", body = SaleBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
    ),
    security(("admin" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody<CreateSale>,
) -> Result<(StatusCode, Json<SaleBody>), ApiError> {
    let sale = NewSale::try_from(body)?;
    if sale.room.is_some() && state.rooms.is_none() {
        return Err(ApiError::invalid("waiting_room: waiting rooms are not available in scale-out mode yet"));
    }
    let view = state.backend.create_sale(sale, Timestamp::now()).await?;
    state.board.note(crate::board::Noted::Sale(Arc::from(view.id.as_str())));
    Ok((StatusCode::CREATED, Json(view.into())))
}

#[utoipa::path(
    get, path = "/v1/sales/{id}", tag = "sales", operation_id = "get_sale",
    params(("id" = String, Path, description = "Sale id")),
    responses(
        (status = 200, description = "The sale", body = SaleBody),
        (status = 404, description = "`not_found`: no such sale", body = ErrorBody),
    ),
)]
pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> Result<Json<SaleBody>, ApiError> {
    let view = state.backend.sale(&id, Timestamp::now()).await?;
    Ok(Json(view.into()))
}

#[derive(Deserialize, ToSchema)]
pub struct QuantityBody {
    /// 1 to the sale's `per_user_limit`; 1 if absent.
    quantity: Option<i64>,
}

impl QuantityBody {
    fn quantity(&self) -> Result<Quantity, ApiError> {
        Ok(self.quantity.map(Quantity::new).transpose()?.unwrap_or(Quantity::ONE))
    }
}

#[utoipa::path(
    post, path = "/v1/sales/{id}/orders", tag = "sales", operation_id = "purchase",
    params(
        ("id" = String, Path, description = "Sale id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: a repeat gives the same order back"),
        ("Stampede-Pass" = Option<String>, Header, description = "The waiting room's pass, on a sale with a waiting room"),
        ("Stampede-Pow" = Option<String>, Header, description = "`<challenge>:<nonce>`, a solved `GET /v1/challenge`, when proof of work is asked"),
    ),
    request_body(content = QuantityBody, description = "May be empty"),
    responses(
        (status = 201, description = "A hold, durable before the answer", body = OrderBody),
        (status = 200, description = "The order an earlier request with the same `Idempotency-Key` made", body = OrderBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, description = "`pass_required` (waiting room), `banned` (with `Retry-After`) or `proof_of_work_required`", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until a ban ends"))),
        (status = 404, description = "`not_found`: no such sale", body = ErrorBody),
        (status = 409, description = "`sold_out`, `limit_reached` or `sale_not_live`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn purchase(
    State(state): State<AppState>,
    User(user): User,
    PathId(sale_id): PathId,
    IdempotencyHeader(key): IdempotencyHeader,
    headers: HeaderMap,
    proven: Option<Extension<WorkProven>>,
    JsonBody(body): JsonBody<QuantityBody>,
) -> Result<(StatusCode, Json<OrderBody>), ApiError> {
    let answer: Result<(StatusCode, Json<OrderBody>), ApiError> = async {
        let defenses = match queue::defenses(&state, &sale_id).await {
            Ok(defenses) => Some(defenses),
            Err(EngineError::SaleNotFound) => None,
            Err(error) => return Err(error.into()),
        };
        if let Some(defenses) = &defenses {
            if defenses.room.is_some() {
                queue::check_pass(&state, &headers, &sale_id, &user)?;
            }
            if let (true, None, Some(limits)) = (defenses.proof_of_work, &proven, &state.limits) {
                let now = Timestamp::now();
                let new_account = caller(&state, &headers, now).is_some_and(|(_, new)| new);
                let bits = BASE_DIFFICULTY + if new_account { NEW_ACCOUNT_BITS } else { 0 };
                prove_work(&state, limits.as_ref(), &headers, bits, now).await?;
            }
        }
        let command = PurchaseCommand {
            sale_id: sale_id.clone(),
            user: user.clone(),
            quantity: body.quantity()?,
            idempotency_key: key,
        };
        let result = state.backend.purchase(command, Timestamp::now()).await?;
        let in_a_room = defenses.is_some_and(|defenses| defenses.room.is_some());
        if let (true, Some(rooms)) = (in_a_room, &state.rooms) {
            // The buyer is done: their place in the room goes to the next.
            rooms.finish(&sale_id, &user).await?;
        }
        let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
        Ok((status, Json(result.order.into())))
    }
    .await;
    state.telemetry.purchase(match &answer {
        Ok((StatusCode::CREATED, _)) => "held",
        Ok(_) => "replayed",
        Err(error) => error.code,
    });
    answer
}

#[derive(Serialize, ToSchema)]
pub struct WaitlistBody {
    position: u32,
}

#[utoipa::path(
    post, path = "/v1/sales/{id}/waitlist", tag = "sales", operation_id = "join_waitlist",
    params(("id" = String, Path, description = "Sale id")),
    request_body(content = QuantityBody, description = "May be empty"),
    responses(
        (status = 201, description = "The caller's place; released units come as fresh holds on `/v1/me/events`", body = WaitlistBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Guarded),
        (status = 404, description = "`not_found`: no such sale", body = ErrorBody),
        (status = 409, description = "`stock_available`, `already_waitlisted`, `limit_reached` or `sale_not_live`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn join_waitlist(
    State(state): State<AppState>,
    User(user): User,
    PathId(sale_id): PathId,
    JsonBody(body): JsonBody<QuantityBody>,
) -> Result<(StatusCode, Json<WaitlistBody>), ApiError> {
    let quantity = body.quantity()?;
    let position = state.backend.join_waitlist(&sale_id, &user, quantity, Timestamp::now()).await?;
    Ok((StatusCode::CREATED, Json(WaitlistBody { position })))
}
