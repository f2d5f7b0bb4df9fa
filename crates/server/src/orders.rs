//! Orders: read, list, pay, cancel. Only the owner sees or changes an order.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::Timestamp;
use stampede_engine::OrderView;

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathId};
use crate::AppState;

#[derive(Serialize)]
pub struct OrderBody {
    id: String,
    sale_id: String,
    user_id: String,
    quantity: u32,
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

#[derive(Serialize)]
pub struct OrderList {
    orders: Vec<OrderBody>,
}

pub async fn get(
    State(state): State<AppState>,
    User(user): User,
    PathId(id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.backend.order(&id, &user).await?.into()))
}

pub async fn list(State(state): State<AppState>, User(user): User) -> Result<Json<OrderList>, ApiError> {
    let orders = state.backend.orders_of(&user).await?;
    Ok(Json(OrderList { orders: orders.into_iter().map(OrderBody::from).collect() }))
}

#[derive(Deserialize)]
pub struct PayBody {
    payment_ref: Option<String>,
}

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

pub async fn cancel(
    State(state): State<AppState>,
    User(user): User,
    PathId(id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.backend.cancel(&id, &user, Timestamp::now()).await?.into()))
}
