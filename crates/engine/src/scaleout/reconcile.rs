//! Reconciliation: Redis's counters next to Postgres's orders, sale by sale.

use super::{auctions, ScaleOut};
use crate::backend::{Backend, EngineError, Ledger};

/// One sale compared across Redis and Postgres.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// Live counters (Redis) next to the store's totals (Postgres), after draining the stream.
    pub ledger: Ledger,
    /// Orders made and units cancelled / expired according to Redis.
    pub redis_orders: i64,
    pub redis_cancelled: i64,
    pub redis_expired: i64,
}

impl Reconciliation {
    pub fn matches(&self) -> bool {
        self.ledger.consistent()
            && self.redis_orders == self.ledger.orders
            && self.redis_cancelled == self.ledger.cancelled
            && self.redis_expired == self.ledger.expired
    }
}

impl ScaleOut {
    /// Compares every sale's Redis counters with its orders in Postgres, after moving whatever
    /// is still in the sales' (and auctions') streams to Postgres. On a quiet system every sale
    /// matches.
    pub async fn reconcile(&self) -> Result<Vec<Reconciliation>, EngineError> {
        auctions::drain_all(self).await?;
        let mut sale_ids = self.sale_ids().await?;
        sale_ids.sort();
        let mut report = Vec::with_capacity(sale_ids.len());
        for sale_id in sale_ids {
            let ledger = match self.ledger(&sale_id).await {
                Ok(ledger) => ledger,
                // Listed while its creation was under way (or failed): not a sale yet.
                Err(EngineError::SaleNotFound) => continue,
                Err(error) => return Err(error),
            };
            let sale = self.config(&sale_id).await?;
            let mut totals = [0i64; 3];
            for bucket_id in sale.bucket_ids() {
                let numbers = self.bucket_numbers(&bucket_id, ["seq", "cancelled", "expired"]).await?;
                for (total, value) in totals.iter_mut().zip(numbers) {
                    *total += value;
                }
            }
            let [redis_orders, redis_cancelled, redis_expired] = totals;
            report.push(Reconciliation { ledger, redis_orders, redis_cancelled, redis_expired });
        }
        Ok(report)
    }
}
