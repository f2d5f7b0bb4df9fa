//! The order sink: moves every sale's (and auction's) stream into Postgres. Each replica runs one as a member
//! of the sale streams' consumer group `sink`: it reads new entries, writes them in one
//! idempotent transaction, then acknowledges and deletes them. Entries a dead replica read but
//! never acknowledged are claimed by the others once idle for [`CLAIM_IDLE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply,
};
use redis::AsyncCommands;
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::RedisConn;
use super::keys::{self, Keys};
use super::records::Event;
use super::store::Store;
use crate::ids;

pub const GROUP: &str = "sink";
const POLL: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Empty reads after which a bucket counts as quiet, and how often quiet buckets are read.
const QUIET_AFTER: u32 = 10;
const QUIET_EVERY: u64 = 25;
const BATCH: usize = 2000;
/// An entry read but not acknowledged for this long belongs to a replica presumed dead.
const CLAIM_IDLE: Duration = Duration::from_secs(30);
const CLAIM_EVERY: Duration = Duration::from_secs(5);

pub struct Sink {
    pub redis: RedisConn,
    pub store: Store,
    pub keys: Keys,
    /// This replica's name in the consumer group; new per process.
    pub consumer: String,
    /// Consecutive empty reads per bucket, and passes made: quiet buckets (ended sales, sales
    /// nobody buys from) are read only every [`QUIET_EVERY`] passes, so many sales do not mean
    /// many reads every pass.
    pub quiet: Mutex<(HashMap<String, u32>, u64)>,
}

/// Entries read from one bucket's stream.
struct Read {
    bucket_id: String,
    entries: Vec<StreamId>,
}

impl Sink {
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_claim = Instant::now();
        // While Redis or Postgres is away, passes back off (up to MAX_BACKOFF) and the failure
        // is logged once, not every pass.
        let mut delay = POLL;
        let mut failing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            let claim = last_claim.elapsed() >= CLAIM_EVERY;
            if claim {
                last_claim = Instant::now();
            }
            match self.pass(claim).await {
                Ok(_) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(down_for = ?since.elapsed(), "order sink: writing to Postgres again");
                    }
                    delay = POLL;
                }
                Err(error) => {
                    if failing_since.is_none() {
                        tracing::warn!(%error, "order sink: pass failed; entries stay in the streams and are retried");
                        failing_since = Some(Instant::now());
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Hand over what is ready now; anything left stays in the streams for the next reader.
        if let Err(error) = self.pass(false).await {
            tracing::warn!(%error, "order sink: last pass failed; entries stay in the streams");
        }
    }

    /// Every bucket of every sale, and the stream of every auction (its lot sale's), once.
    async fn streams(&self) -> Result<Vec<String>, String> {
        let (mut sales, mut auctions) = (self.redis.clone(), self.redis.clone());
        let (sales, auctions) =
            tokio::join!(sales.smembers::<_, Vec<String>>(self.keys.sales()), auctions.smembers(self.keys.auctions()));
        let mut buckets = sales.map_err(|e| e.to_string())?;
        let auctions: Vec<String> = auctions.map_err(|e| e.to_string())?;
        buckets.extend(auctions.iter().map(|auction_id| ids::lot_sale_id(auction_id)));
        buckets.sort_unstable();
        buckets.dedup();
        Ok(buckets)
    }

    /// One round over every stream: read, write to Postgres, acknowledge. Returns entries moved.
    pub async fn pass(&self, claim: bool) -> Result<usize, String> {
        let mut buckets = self.streams().await?;
        {
            let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
            quiet.1 += 1;
            let (empty_reads, passes) = (&quiet.0, quiet.1);
            if !claim && passes % QUIET_EVERY != 0 {
                buckets.retain(|bucket_id| empty_reads.get(bucket_id).is_none_or(|&n| n < QUIET_AFTER));
            }
        }
        let reads = join_all(buckets.iter().map(|bucket_id| self.read_bucket(bucket_id, claim))).await;
        let reads: Vec<Read> = reads.into_iter().flatten().collect();
        {
            let mut quiet = self.quiet.lock().unwrap_or_else(PoisonError::into_inner);
            for read in &reads {
                if read.entries.is_empty() {
                    *quiet.0.entry(read.bucket_id.clone()).or_insert(0) += 1;
                } else {
                    quiet.0.remove(&read.bucket_id);
                }
            }
        }
        let reads: Vec<Read> = reads.into_iter().filter(|read| !read.entries.is_empty()).collect();
        if reads.is_empty() {
            return Ok(0);
        }
        let events: Vec<Event> =
            reads.iter().flat_map(|read| decode(keys::sale_of_bucket(&read.bucket_id), &read.entries)).collect();
        let started = std::time::Instant::now();
        if let Err(error) = self.store.write(&events).await {
            metrics::counter!(crate::telemetry::SINK_FAILURES).increment(1);
            return Err(error.to_string());
        }
        metrics::histogram!(crate::telemetry::SINK_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::SINK_BATCH).record(events.len() as f64);
        let acks = reads.iter().map(|read| self.acknowledge(read));
        let moved = join_all(acks).await.into_iter().sum();
        Ok(moved)
    }

    /// This consumer's unacknowledged entries first (a failed write), then new ones, then (when
    /// `claim`) entries idle too long at other consumers. A sale whose stream or group does not
    /// exist yet (its creation is under way) reads as nothing.
    async fn read_bucket(&self, bucket_id: &str, claim: bool) -> Option<Read> {
        let key = self.keys.sale_key(bucket_id, keys::EVENTS);
        let mut redis = self.redis.clone();
        let options = StreamReadOptions::default().group(GROUP, &self.consumer).count(BATCH);
        let mut entries = Vec::new();
        for start in ["0", ">"] {
            let reply: StreamReadReply = redis.xread_options(&[&key], &[start], &options).await.ok()?;
            entries.extend(reply.keys.into_iter().flat_map(|stream| stream.ids));
            if !entries.is_empty() {
                break;
            }
        }
        if claim && entries.len() < BATCH {
            let options = StreamAutoClaimOptions::default().count(BATCH - entries.len());
            let idle = CLAIM_IDLE.as_millis() as u64;
            let claimed: Option<StreamAutoClaimReply> =
                redis.xautoclaim_options(&key, GROUP, &self.consumer, idle, "0-0", options).await.ok();
            entries.extend(claimed.into_iter().flat_map(|reply| reply.claimed));
        }
        Some(Read { bucket_id: bucket_id.to_owned(), entries })
    }

    async fn acknowledge(&self, read: &Read) -> usize {
        let key = self.keys.sale_key(&read.bucket_id, keys::EVENTS);
        let ids: Vec<&str> = read.entries.iter().map(|entry| entry.id.as_str()).collect();
        let mut redis = self.redis.clone();
        // Written to Postgres already: a failed ack only means the entries are written again.
        let acked: redis::RedisResult<usize> = redis.xack(&key, GROUP, &ids).await;
        if let Err(error) = acked {
            tracing::warn!(%error, bucket = %read.bucket_id, "order sink: acknowledging failed");
            return 0;
        }
        let _: redis::RedisResult<usize> = redis.xdel(&key, &ids).await;
        ids.len()
    }

    /// Writes everything still in one bucket's stream to Postgres (without acknowledging: the
    /// group's readers do that), so the store is at least as new as the stream was.
    pub async fn drain_bucket(&self, bucket_id: &str) -> Result<(), String> {
        let sale_id = keys::sale_of_bucket(bucket_id);
        let key = self.keys.sale_key(bucket_id, keys::EVENTS);
        let mut redis = self.redis.clone();
        let mut start = "-".to_owned();
        loop {
            let reply: StreamRangeReply =
                redis.xrange_count(&key, &start, "+", BATCH).await.map_err(|e| e.to_string())?;
            let Some(last) = reply.ids.last() else { return Ok(()) };
            start = format!("({}", last.id);
            let full = reply.ids.len() == BATCH;
            self.store.write(&decode(sale_id, &reply.ids)).await.map_err(|e| e.to_string())?;
            if !full {
                return Ok(());
            }
        }
    }
}

fn decode(sale_id: &str, entries: &[StreamId]) -> Vec<Event> {
    let field = |entry: &StreamId, name: &str| -> Option<String> {
        entry.map.get(name).and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
    };
    entries
        .iter()
        .filter_map(|entry| {
            let event = Event::decode(sale_id, &field(entry, "t")?, &field(entry, "j")?);
            if event.is_none() {
                tracing::error!(sale = sale_id, id = %entry.id, "order sink: malformed stream entry skipped");
            }
            event
        })
        .collect()
}
