//! Group commit: every state change is appended here (under its sale's lock, so the order per
//! sale is the order of decisions) and one writer task makes whole batches durable in one
//! SQLite transaction. Callers wait for the durable watermark to pass their sequence number.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stampede_core::{AuctionConfig, Bid, Order, Outcome, SaleConfig, Timestamp, WaitlistEntry};
use tokio::sync::{oneshot, Notify};

use super::store::{Store, StoreTotals};
use crate::backend::{EngineError, UserRecord};
use crate::lock;

/// Position of an append in the journal; durable once the watermark reaches it.
pub(crate) type Lsn = u64;

pub(crate) enum Record {
    Sale {
        id: Arc<str>,
        config: SaleConfig,
    },
    /// `key` is the order's row key in the store.
    Order {
        sale_id: Arc<str>,
        key: u64,
        order: Order,
    },
    Waitlist {
        sale_id: Arc<str>,
        entry: WaitlistEntry,
    },
    User(UserRecord),
    Auction {
        id: Arc<str>,
        config: AuctionConfig,
        payment_seconds: u32,
    },
    /// The parts of an auction that change; the latest per auction wins.
    AuctionState {
        id: Arc<str>,
        ends_at: Timestamp,
        extensions: u32,
        outcome: Option<Outcome>,
    },
    Bid {
        auction_id: Arc<str>,
        bid: Bid,
    },
    /// Reads the store's totals for a sale after everything appended before it is durable.
    Probe {
        sale_id: Arc<str>,
        reply: oneshot::Sender<Result<StoreTotals, EngineError>>,
    },
}

/// How far the journal is durable, and who waits for more. Each waiter is woken once, when
/// its own position is reached (not on every commit).
#[derive(Default)]
struct Watermark {
    durable: Lsn,
    stopped: bool,
    waiters: Vec<(Lsn, oneshot::Sender<()>)>,
}

pub(crate) struct Journal {
    // std Mutex: held only to push or swap a Vec, never across an await.
    queue: Mutex<Queue>,
    wake: Notify,
    // std Mutex: a check-and-register or a drain, never across an await.
    watermark: Mutex<Watermark>,
    healthy: AtomicBool,
    commits: AtomicU64,
    committed_records: AtomicU64,
}

#[derive(Default)]
struct Queue {
    last_lsn: Lsn,
    records: Vec<Record>,
    closing: bool,
}

impl Journal {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::default(),
            wake: Notify::new(),
            watermark: Mutex::default(),
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            committed_records: AtomicU64::new(0),
        })
    }

    /// Appends records as one step and returns its sequence number.
    /// After `close` nothing is taken: the records are dropped (a probe's reply with them) and
    /// the returned position is never reached, so the caller's wait fails instead of hanging.
    pub(crate) fn append(&self, records: impl IntoIterator<Item = Record>) -> Lsn {
        let lsn = {
            let mut queue = lock(&self.queue);
            if queue.closing {
                return Lsn::MAX;
            }
            queue.records.extend(records);
            queue.last_lsn += 1;
            queue.last_lsn
        };
        self.wake.notify_one();
        lsn
    }

    /// The latest sequence number handed out: waiting for it covers everything appended so far.
    pub(crate) fn last_lsn(&self) -> Lsn {
        lock(&self.queue).last_lsn
    }

    pub(crate) async fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        let stopped = || EngineError::Unavailable("journal stopped".into());
        let reached = {
            let mut watermark = lock(&self.watermark);
            if watermark.durable >= lsn {
                return Ok(());
            }
            if watermark.stopped {
                return Err(stopped());
            }
            let (reached, receiver) = oneshot::channel();
            watermark.waiters.push((lsn, reached));
            receiver
        };
        // The sender is dropped without a send only when the writer stops first.
        reached.await.map_err(|_| stopped())
    }

    /// Marks everything up to `lsn` durable and wakes exactly the waiters it covers.
    fn advance(&self, lsn: Lsn) {
        let mut watermark = lock(&self.watermark);
        watermark.durable = watermark.durable.max(lsn);
        let durable = watermark.durable;
        let mut index = 0;
        while index < watermark.waiters.len() {
            if watermark.waiters[index].0 <= durable {
                let (_, reached) = watermark.waiters.swap_remove(index);
                let _ = reached.send(());
            } else {
                index += 1;
            }
        }
    }

    fn stop(&self) {
        let mut watermark = lock(&self.watermark);
        watermark.stopped = true;
        watermark.waiters.clear();
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Asks the writer to write what is queued and stop.
    pub(crate) fn close(&self) {
        lock(&self.queue).closing = true;
        self.wake.notify_one();
    }

    fn is_closing(&self) -> bool {
        lock(&self.queue).closing
    }

    fn take(&self) -> (Vec<Record>, Lsn, bool) {
        let mut queue = lock(&self.queue);
        let records = std::mem::take(&mut queue.records);
        (records, queue.last_lsn, queue.closing)
    }
}

/// Starts the single writer on a thread of its own, with a one-thread runtime. On the request
/// runtime it would share its workers' queues with the requests it makes durable: each time
/// SQLite's thread hands a commit back, the writer would wait behind request tasks (thousands
/// of them under overload) before it could wake that commit's requests and start the next. On
/// its own thread the OS schedules it like any other: at the purchase peak a commit took
/// 0.39–0.52 ms instead of 0.52–0.58 ms (docs/benchmarks.md).
pub(crate) fn start_writer(journal: Arc<Journal>, store: Store) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("stampede-journal".into())
        .spawn(move || runtime.block_on(run_writer(journal, store)))
}

/// The single writer: batches everything queued since its last commit into one transaction.
async fn run_writer(journal: Arc<Journal>, mut store: Store) {
    loop {
        let (batch, last_lsn, closing) = journal.take();
        if batch.is_empty() {
            journal.advance(last_lsn);
            if closing {
                break;
            }
            journal.wake.notified().await;
            continue;
        }
        if write_batch(&journal, &mut store, batch).await.is_err() {
            break;
        }
        journal.advance(last_lsn);
    }
    journal.stop();
    tracing::info!(
        commits = journal.commits.load(Ordering::Relaxed),
        records = journal.committed_records.load(Ordering::Relaxed),
        "journal writer stopped"
    );
    store.close().await;
}

async fn write_batch(journal: &Journal, store: &mut Store, batch: Vec<Record>) -> Result<(), Abandoned> {
    let mut pending = Vec::with_capacity(batch.len());
    for record in batch {
        match record {
            Record::Probe { sale_id, reply } => {
                commit_until_done(journal, store, &mut pending).await?;
                answer_probe(store, sale_id, reply).await;
            }
            other => pending.push(other),
        }
    }
    commit_until_done(journal, store, &mut pending).await
}

/// Retries until the records are committed: they are already decided in memory, so giving up
/// would lose the decision. Requests waiting on them time out with 503 meanwhile.
/// Takes a snapshot of what is committed now and reads the totals from it on the side: the
/// scan may be long, and the writer goes on committing meanwhile.
async fn answer_probe(store: &Store, sale_id: Arc<str>, reply: oneshot::Sender<Result<StoreTotals, EngineError>>) {
    let unavailable = |error: sqlx::Error| EngineError::Unavailable(error.to_string());
    match store.snapshot().await {
        Ok(snapshot) => {
            tokio::spawn(async move {
                let totals = snapshot.totals(&sale_id).await;
                let _ = reply.send(totals.map_err(unavailable));
            });
        }
        Err(error) => {
            let _ = reply.send(Err(unavailable(error)));
        }
    }
}

/// Only when the server is stopping and the store has refused writes this long are the records
/// given up; none of them was acknowledged, since nothing after a failed commit is.
const GIVE_UP_WHEN_CLOSING: Duration = Duration::from_secs(5);

/// The records were not committed and never will be by this writer.
struct Abandoned;

async fn commit_until_done(journal: &Journal, store: &mut Store, pending: &mut Vec<Record>) -> Result<(), Abandoned> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut backoff = Duration::from_millis(50);
    let first_failure = Instant::now();
    loop {
        let started = Instant::now();
        match store.write(pending).await {
            Ok(()) => {
                metrics::histogram!(crate::telemetry::JOURNAL_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::histogram!(crate::telemetry::JOURNAL_BATCH).record(pending.len() as f64);
                break;
            }
            Err(error) => {
                metrics::counter!(crate::telemetry::JOURNAL_FAILURES).increment(1);
                journal.healthy.store(false, Ordering::Relaxed);
                tracing::error!(%error, records = pending.len(), "journal commit failed, retrying");
                if journal.is_closing() && first_failure.elapsed() >= GIVE_UP_WHEN_CLOSING {
                    tracing::error!(records = pending.len(), "stopping with unwritten, unacknowledged changes");
                    return Err(Abandoned);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    journal.healthy.store(true, Ordering::Relaxed);
    journal.commits.fetch_add(1, Ordering::Relaxed);
    journal.committed_records.fetch_add(pending.len() as u64, Ordering::Relaxed);
    pending.clear();
    Ok(())
}
