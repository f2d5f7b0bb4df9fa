//! Listing every sale for operators: the sales list in Redis names them, each is read like a
//! single sale. A sale listed but not yet created (the list is written first) is left out.

use futures_util::future::join_all;
use stampede_core::Timestamp;

use super::ScaleOut;
use crate::backend::{newest_first, Backend, EngineError, SaleView};
use crate::ids;

impl ScaleOut {
    pub(super) async fn list_sales_now(&self, now: Timestamp) -> Result<Vec<SaleView>, EngineError> {
        self.check_open()?;
        let mut sale_ids = self.sale_ids().await?;
        sale_ids.retain(|sale_id| ids::is_sale_id(sale_id) && !ids::is_lot_sale_id(sale_id));
        let found = join_all(sale_ids.iter().map(|sale_id| self.dated_sale(sale_id, now))).await;
        let mut listed = Vec::with_capacity(found.len());
        for sale in found {
            match sale {
                Ok(dated) => listed.push(dated),
                Err(EngineError::SaleNotFound) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(newest_first(listed, |sale| &sale.id))
    }

    /// A sale's view with its creation time.
    async fn dated_sale(&self, sale_id: &str, now: Timestamp) -> Result<(Timestamp, SaleView), EngineError> {
        let created = Timestamp(self.config(sale_id).await?.created);
        Ok((created, self.sale(sale_id, now).await?))
    }
}
