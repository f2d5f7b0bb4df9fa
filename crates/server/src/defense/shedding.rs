//! Load shedding: a bound on requests in flight and on how long one may wait for a place. A
//! request that cannot start in time is answered `503 overloaded` with `Retry-After` at once, so
//! the requests that are admitted keep their latency and goodput holds under overload instead of
//! every request slowing down together.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::AppState;

pub struct Shedder {
    in_flight: Semaphore,
    max_wait: Duration,
}

impl Shedder {
    pub fn new(max_in_flight: usize, max_wait: Duration) -> Self {
        Self { in_flight: Semaphore::new(max_in_flight.max(1)), max_wait }
    }
}

pub async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let shedder = &state.shedder;
    let permit = match shedder.in_flight.try_acquire() {
        Ok(permit) => permit,
        Err(_) => match tokio::time::timeout(shedder.max_wait, shedder.in_flight.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                state.telemetry.refused("overloaded");
                return ApiError::overloaded("the server is at capacity, retry shortly").into_response();
            }
        },
    };
    let response = next.run(request).await;
    drop(permit);
    response
}
