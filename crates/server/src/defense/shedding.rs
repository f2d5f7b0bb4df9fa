//! Load shedding: a bound on requests in flight and on how long one may wait for a place. A
//! request that cannot start in time is answered `503 overloaded` with `Retry-After` at once, so
//! the requests that are admitted keep their latency and goodput holds under overload instead of
//! every request slowing down together. The check runs in the first layer behind the router
//! (`telemetry::front`), for every route but the health check, metrics and the dashboard.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::ApiError;

pub struct Shedder {
    in_flight: Semaphore,
    max_wait: Duration,
}

impl Shedder {
    pub fn new(max_in_flight: usize, max_wait: Duration) -> Self {
        Self { in_flight: Semaphore::new(max_in_flight.max(1)), max_wait }
    }
}

impl Shedder {
    /// A place for one more request, waiting at most the queue bound; 503 `overloaded` when
    /// none came free in time.
    pub(crate) async fn place(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        if let Ok(permit) = self.in_flight.try_acquire() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.max_wait, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(ApiError::overloaded("the server is at capacity, retry shortly")),
        }
    }
}
