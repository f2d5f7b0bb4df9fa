//! Sales split into stock buckets (see `lua/sale.lua`): their counters, the transfers that move
//! free units between buckets, and the expiry sweep of each bucket.

use std::collections::HashMap;

use futures_util::future::join_all;
use redis::AsyncCommands;
use stampede_core::Timestamp;

use super::keys;
use super::records::SaleRecord;
use super::ScaleOut;
use crate::backend::{unavailable, EngineError};
use crate::{ids, lock};

/// How many due holds one expiry script ends at most, so a long backlog never blocks a sale.
const EXPIRE_BATCH: usize = 500;
/// Replica clocks may differ by this much without delaying an expiry.
const CLOCK_SKEW_ALLOWANCE_MS: i64 = 2_000;
/// A bucket is swept at least this often, whatever its holds.
const MAX_SWEEP_GAP_MS: i64 = 10_000;
/// A transfer between buckets not confirmed after this long is finished by the sweep.
const TRANSFER_GRACE_MS: i64 = 5_000;

impl ScaleOut {
    /// The live counters of a sale, summed over its buckets: available (units lent between
    /// buckets included), held, sold, waiting. Exact when no transfer is under way.
    pub(super) async fn counters(&self, sale: &SaleRecord) -> Result<[i64; 4], EngineError> {
        let ids = sale.bucket_ids();
        let mut counters = [0; 4];
        for bucket in join_all(ids.iter().map(|id| self.bucket_counters(id))).await {
            let [available, lent, held, sold, waiting] = bucket?;
            for (total, value) in counters.iter_mut().zip([available + lent, held, sold, waiting]) {
                *total += value;
            }
        }
        Ok(counters)
    }

    /// One bucket's available, lent, held, sold, waiting.
    pub(super) async fn bucket_counters(&self, bucket_id: &str) -> Result<[i64; 5], EngineError> {
        self.bucket_numbers(bucket_id, ["available", "lent", "held", "sold", "waiting"]).await
    }

    /// Fields of one bucket's counters hash (absent ones 0).
    pub(super) async fn bucket_numbers<const N: usize>(
        &self,
        bucket_id: &str,
        fields: [&str; N],
    ) -> Result<[i64; N], EngineError> {
        let key = self.keys.sale_key(bucket_id, keys::CTR);
        let values: Vec<Option<i64>> =
            redis::cmd("HMGET").arg(&key).arg(&fields).query_async(&mut self.conn()).await.map_err(unavailable)?;
        let mut numbers = [0; N];
        for (slot, value) in numbers.iter_mut().zip(values) {
            *slot = value.unwrap_or(0);
        }
        Ok(numbers)
    }

    /// Moves free units from the richest other bucket into `home`, so a buyer there is not
    /// told "sold out" while stock remains elsewhere. Takes half of that bucket's free units
    /// (at least `want`), so a busy bucket refills rarely. Returns whether units arrived.
    pub(super) async fn rebalance_into(
        &self,
        sale: &SaleRecord,
        home: u32,
        want: u32,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        let others: Vec<u32> = (0..sale.buckets).filter(|&index| index != home).collect();
        let ids: Vec<String> = others.iter().map(|&index| keys::bucket_id(&sale.id, index)).collect();
        let counters = join_all(ids.iter().map(|id| self.bucket_counters(id))).await;
        let mut candidates = Vec::new();
        for (id, counters) in ids.iter().zip(counters) {
            let [available, _, _, _, waiting] = counters?;
            if available > 0 && waiting == 0 {
                candidates.push((available, id));
            }
        }
        candidates.sort_by(|a, b| b.cmp(a));
        let destination = keys::bucket_id(&sale.id, home);
        for (available, source) in candidates {
            let units = (available / 2).max(i64::from(want)).to_string();
            let transfer = ids::random_token(16);
            let now_text = now.0.to_string();
            let args: [&[u8]; 4] = [transfer.as_bytes(), destination.as_bytes(), units.as_bytes(), now_text.as_bytes()];
            let (_, lent) = self.run(&self.scripts.transfer_out, source, &args).await?;
            if lent == "0" {
                continue;
            }
            self.complete_transfer(source, &destination, &transfer, &lent, now).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Receives lent units at the destination (once per transfer id), then clears the loan.
    /// Safe to repeat: the recovery sweep finishes transfers a crashed replica left half done.
    pub(super) async fn complete_transfer(
        &self,
        source: &str,
        destination: &str,
        transfer: &str,
        units: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let now = now.0.to_string();
        let args: [&[u8]; 3] = [transfer.as_bytes(), units.as_bytes(), now.as_bytes()];
        self.run(&self.scripts.transfer_in, destination, &args).await?;
        self.run(&self.scripts.transfer_done, source, &[transfer.as_bytes()]).await?;
        Ok(())
    }

    /// Finishes transfers that were lent but not confirmed for a while (their replica died
    /// between the two steps).
    pub(super) async fn recover_transfers(&self, bucket_id: &str, now: Timestamp) -> Result<(), EngineError> {
        let outbox = self.keys.sale_key(bucket_id, keys::OUTBOX);
        let loans: HashMap<String, String> = self.conn().hgetall(&outbox).await.map_err(unavailable)?;
        for (transfer, loan) in loans {
            let mut parts = loan.splitn(3, ':');
            let (Some(destination), Some(units), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let stale = at.parse::<i64>().is_ok_and(|at| now.0 - at >= TRANSFER_GRACE_MS);
            if stale {
                self.complete_transfer(bucket_id, destination, &transfer, units, now).await?;
            }
        }
        Ok(())
    }

    /// For a sale split into buckets: finishes stale transfers and moves free units to buckets
    /// where users wait, so released units reach waitlists in every bucket.
    pub(super) async fn balance_sale(&self, sale_id: &str, now: Timestamp) -> Result<(), EngineError> {
        let sale = self.config(sale_id).await?;
        let buckets = sale.bucket_ids();
        for bucket_id in &buckets {
            self.recover_transfers(bucket_id, now).await?;
        }
        for (index, bucket_id) in (0..).zip(&buckets) {
            let [available, _, _, _, waiting] = self.bucket_counters(bucket_id).await?;
            if waiting > 0 && available == 0 {
                self.rebalance_into(&sale, index, 1, now).await?;
            }
        }
        Ok(())
    }

    /// Ends the due holds of one bucket. A bucket swept recently and holding nothing due is
    /// skipped until its earliest deadline, or until a hold made since could be due: no sooner
    /// than the sale's hold time after the sweep, less an allowance for replica clock skew, and
    /// at most [`MAX_SWEEP_GAP_MS`] later (so skew beyond the allowance delays, never loses, an
    /// expiry). Many quiet sales then cost few scripts.
    pub(super) async fn expire_bucket(&self, bucket_id: &str, now: Timestamp) -> Result<usize, EngineError> {
        let planned = lock(&self.sweeps).get(bucket_id).copied();
        if planned.is_some_and(|(swept, next)| swept <= now.0 && now.0 < next) {
            return Ok(0);
        }
        let (now_text, most) = (now.0.to_string(), EXPIRE_BATCH.to_string());
        let mut total = 0;
        let earliest = loop {
            let (_, reply) = self.run(&self.scripts.expire, bucket_id, &[now_text.as_bytes(), most.as_bytes()]).await?;
            let (expired, earliest) = reply.split_once(':').ok_or_else(|| unavailable("malformed expiry answer"))?;
            let expired: usize = expired.parse().map_err(unavailable)?;
            total += expired;
            if expired < EXPIRE_BATCH {
                break earliest.parse::<f64>().map_err(unavailable)? as i64;
            }
        };
        let sale = match self.config(keys::sale_of_bucket(bucket_id)).await {
            Ok(sale) => sale,
            Err(EngineError::SaleNotFound) => return Ok(total),
            Err(error) => return Err(error),
        };
        let horizon = now.0 + (sale.hold_ms - CLOCK_SKEW_ALLOWANCE_MS).clamp(0, MAX_SWEEP_GAP_MS);
        let next = if earliest >= 0 { earliest.min(horizon) } else { horizon };
        lock(&self.sweeps).insert(bucket_id.to_owned(), (now.0, next));
        Ok(total)
    }
}
