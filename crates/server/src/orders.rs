//! Orders: read, list, pay, cancel. Only the owner sees or changes an order.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::Timestamp;
use stampede_engine::OrderView;
use utoipa::ToSchema;

use crate::auth::User;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId};
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct OrderBody {
    id: String,
    sale_id: String,
    user_id: String,
    quantity: u32,
    /// `held`, then `paid`, `cancelled` or `expired`.
    status: &'static str,
    expires_at: String,
    created_at: String,
    updated_at: String,
    payment_ref: Option<String>,
}

impl From<OrderView> for OrderBody {
    fn from(order: OrderView) -> Self {
        Self {
            id: order.id,
            sale_id: order.sale_id,
            user_id: order.user_id,
            quantity: order.quantity,
            status: order.status.as_str(),
            expires_at: order.expires_at.to_rfc3339(),
            created_at: order.created_at.to_rfc3339(),
            updated_at: order.updated_at.to_rfc3339(),
            payment_ref: order.payment_ref,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrderList {
    /// Newest first.
    orders: Vec<OrderBody>,
}

#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders", operation_id = "get_order",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, description = "`not_found`: no such order, or another user's", body = ErrorBody),
    ),
    security(("user" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    User(user): User,
    PathId(id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.backend.order(&id, &user).await?.into()))
}

#[utoipa::path(
    get, path = "/v1/orders", tag = "orders", operation_id = "list_orders",
    responses(
        (status = 200, description = "The caller's orders", body = OrderList),
        (status = 401, response = crate::openapi::Unauthorized),
    ),
    security(("user" = [])),
)]
pub async fn list(State(state): State<AppState>, User(user): User) -> Result<Json<OrderList>, ApiError> {
    let orders = state.backend.orders_of(&user).await?;
    Ok(Json(OrderList { orders: orders.into_iter().map(OrderBody::from).collect() }))
}

#[derive(Deserialize, ToSchema)]
pub struct PayBody {
    /// The payment provider's reference, at most 256 bytes.
    payment_ref: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/pay", tag = "orders", operation_id = "pay_order",
    params(("id" = String, Path, description = "Order id")),
    request_body(content = PayBody, description = "May be empty"),
    responses(
        (status = 200, description = "The order, `paid` (idempotent)", body = OrderBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Guarded),
        (status = 404, description = "`not_found`: no such order, or another user's", body = ErrorBody),
        (status = 409, description = "`hold_expired` or `order_cancelled`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn pay(
    State(state): State<AppState>,
    User(user): User,
    PathId(id): PathId,
    JsonBody(body): JsonBody<PayBody>,
) -> Result<Json<OrderBody>, ApiError> {
    if body.payment_ref.as_ref().is_some_and(|r| r.len() > 256) {
        return Err(ApiError::invalid("payment_ref: must be at most 256 bytes"));
    }
    let order = state.backend.pay(&id, &user, body.payment_ref, Timestamp::now()).await?;
    Ok(Json(order.into()))
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders", operation_id = "cancel_order",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order, `cancelled`; its units go back", body = OrderBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Guarded),
        (status = 404, description = "`not_found`: no such order, or another user's", body = ErrorBody),
        (status = 409, description = "`order_paid` or `hold_expired`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    User(user): User,
    PathId(id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.backend.cancel(&id, &user, Timestamp::now()).await?.into()))
}
