//! Operations endpoints, the admin ledger, and the JSON answers for unknown routes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use stampede_engine::LedgerCounts;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathId;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    /// `ok` (alive) or `ready` (backends reachable).
    status: &'static str,
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses((status = 200, description = "The process is alive: `{\"status\": \"ok\"}`", body = StatusBody)),
)]
pub async fn healthz() -> Json<StatusBody> {
    Json(StatusBody { status: "ok" })
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses(
        (status = 200, description = "The backends are reachable: `{\"status\": \"ready\"}`", body = StatusBody),
        (status = 503, description = "`unavailable`: the durable store is not taking writes", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<StatusBody>, ApiError> {
    if state.backend.ready().await {
        return Ok(Json(StatusBody { status: "ready" }));
    }
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the durable store is not taking writes"))
}

#[derive(Serialize, ToSchema)]
#[schema(as = LedgerCounts)]
struct Counts {
    available: i64,
    held: i64,
    sold: i64,
}

impl From<LedgerCounts> for Counts {
    fn from(c: LedgerCounts) -> Self {
        Self { available: c.available, held: c.held, sold: c.sold }
    }
}

/// A sale's totals by state, from the durable store.
#[derive(Serialize, ToSchema)]
pub struct LedgerBody {
    sale_id: String,
    stock: u32,
    available: i64,
    held: i64,
    sold: i64,
    cancelled: i64,
    expired: i64,
    orders: i64,
    store: Counts,
    live: Counts,
    /// `available + held + sold == stock`, and the store agrees with the live counters.
    consistent: bool,
}

#[utoipa::path(
    get, path = "/v1/admin/sales/{id}/ledger", tag = "operations", operation_id = "sale_ledger",
    params(("id" = String, Path, description = "Sale id")),
    responses(
        (status = 200, description = "The ledger", body = LedgerBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
        (status = 404, description = "`not_found`: no such sale", body = ErrorBody),
    ),
    security(("admin" = [])),
)]
pub async fn ledger(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<Json<LedgerBody>, ApiError> {
    let ledger = state.backend.ledger(&id).await?;
    let consistent = ledger.consistent();
    Ok(Json(LedgerBody {
        sale_id: ledger.sale_id,
        stock: ledger.stock,
        available: ledger.store.available,
        held: ledger.store.held,
        sold: ledger.store.sold,
        cancelled: ledger.cancelled,
        expired: ledger.expired,
        orders: ledger.orders,
        store: ledger.store.into(),
        live: ledger.live.into(),
        consistent,
    }))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}
