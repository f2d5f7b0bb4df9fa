//! Operations endpoints, the admin ledger, and the JSON answers for unknown routes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use stampede_engine::LedgerCounts;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::PathId;
use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.backend.ready().await {
        return Ok(Json(json!({"status": "ready"})));
    }
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the durable store is not taking writes"))
}

#[derive(Serialize)]
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

#[derive(Serialize)]
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
    consistent: bool,
}

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
