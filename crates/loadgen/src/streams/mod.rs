//! Live-stream fan-out: many idle subscribers to one sale's or auction's events, the server's
//! memory per open stream, and how long one change takes to reach all of them.
//!
//! Subscribers open with bounded concurrency (each holds a permit until its first message, the
//! current state, has arrived). Then each round arms the board, sends one change (a purchase or
//! a bid) and waits until every live subscriber has its next message or the delivery timeout
//! passes. Latency is from just before the change request is sent to the subscriber's read of
//! the message, so it includes the change itself, the server's coalescing tick and fan-out, and
//! the generator's own queue of readable sockets.

mod board;
mod scan;
mod subscriber;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::http::HeaderValue;
use hyper::{Method, Request, StatusCode, Uri};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};

use self::board::Board;
use self::subscriber::Plan;
use crate::auction::{auction_uri, bid_uri, create_auction};
use crate::conn::{self, Body};
use crate::histogram::Histogram;
use crate::scenario::{create_sales, mint_user_tokens, run_id, unexpected_status};
use crate::workload;
use crate::{process, LoadError, PurchaseScenario, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Sse,
    WebSocket,
}

/// What the subscribers follow, and so what each round changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamTopic {
    /// A sale's events; each round buys one unit.
    Sale,
    /// An auction's events; each round places a higher bid.
    Auction,
}

/// Local addresses to connect from: `per_address` connections from `first`, then from the next
/// address, and so on. One address reaches one server address through at most one ephemeral
/// port range of connections.
#[derive(Clone, Copy, Debug)]
pub struct SourceAddresses {
    pub first: Ipv4Addr,
    pub per_address: usize,
}

#[derive(Clone, Debug)]
pub struct StreamScenario {
    pub subscribers: usize,
    pub transport: Transport,
    pub topic: StreamTopic,
    pub rounds: usize,
    /// Pause between a round's end and the next change; above the server's 100 ms coalescing
    /// so every round is a snapshot of its own.
    pub round_gap: Duration,
    /// Subscribers being opened at once.
    pub open_concurrency: usize,
    /// `None` lets the kernel pick the source address.
    pub sources: Option<SourceAddresses>,
    /// To read the server's memory before and after opening (Linux `/proc`).
    pub server_pid: Option<u32>,
    /// How long a round waits for every subscriber to get the change.
    pub delivery_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct StreamReport {
    pub subscribers: usize,
    pub opened: usize,
    pub failed: usize,
    /// Subscribers never attempted because opening ran out of time.
    pub not_started: usize,
    pub first_error: Option<String>,
    pub open_time: Duration,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub own_rss_kib: Option<u64>,
    pub rounds: Vec<Round>,
}

/// One change and its delivery.
#[derive(Clone, Debug)]
pub struct Round {
    /// Subscribers connected when the change was sent.
    pub expected: usize,
    /// Subscribers that got a message after the change was sent, within the timeout.
    pub reached: usize,
    /// Messages that arrived between arming and sending: not caused by this change.
    pub early: usize,
    /// Latency of the change request itself.
    pub change: Duration,
    /// From sending the change to each subscriber's message.
    pub delivery: Histogram,
}

/// Descriptors kept free for the change requests and the runtime.
const SPARE_FILES: u64 = 64;
/// Lets the server's allocator and the kernel settle before memory is read.
const SETTLE: Duration = Duration::from_secs(2);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a round checks whether every subscriber has the change.
const POLL: Duration = Duration::from_millis(5);
const TOKEN_TTL_SECS: u64 = 6 * 3600;
const AUCTION_START_CENTS: i64 = 1_000;

pub async fn streams(target: &Target, scenario: &StreamScenario) -> Result<StreamReport, LoadError> {
    validate(scenario)?;
    let limit = process::raise_open_files_limit();
    let wanted = scenario.subscribers as u64 + SPARE_FILES;
    if limit < wanted {
        return Err(LoadError::OpenFilesLimit { wanted, limit });
    }
    let subject = Subject::create(target, scenario).await?;
    let plan = Arc::new(Plan::new(target.addr, scenario.transport, &subject.events_path, scenario.sources));
    let board = Arc::new(Board::new(scenario.subscribers));
    let server_rss_before_kib = scenario.server_pid.and_then(process::rss_kib);
    let mut subscribers = JoinSet::new();
    let started = Instant::now();
    let spawned = open_all(&mut subscribers, &plan, &board, scenario).await;
    let open_time = started.elapsed();
    sleep(SETTLE).await;
    let server_rss_after_kib = scenario.server_pid.and_then(process::rss_kib);
    let rounds = run_rounds(target, &subject, &board, scenario).await;
    let own_rss_kib = process::own_rss_kib();
    stop_all(subscribers).await?;
    Ok(StreamReport {
        subscribers: scenario.subscribers,
        opened: board.opened_count(),
        failed: board.failed_count(),
        not_started: scenario.subscribers - spawned,
        first_error: board.first_error(),
        open_time,
        server_rss_before_kib,
        server_rss_after_kib,
        own_rss_kib,
        rounds: rounds?,
    })
}

impl StreamReport {
    /// Server memory growth per opened stream, in KiB.
    pub fn kib_per_connection(&self) -> Option<f64> {
        let grown = self.server_rss_after_kib?.saturating_sub(self.server_rss_before_kib?);
        (self.opened > 0).then(|| grown as f64 / self.opened as f64)
    }

    /// Every round's delivery latencies together.
    pub fn delivery(&self) -> Histogram {
        let mut all = Histogram::new();
        for round in &self.rounds {
            all.merge(&round.delivery);
        }
        all
    }
}

fn validate(scenario: &StreamScenario) -> Result<(), LoadError> {
    if scenario.subscribers == 0 || scenario.open_concurrency == 0 {
        return Err(LoadError::InvalidScenario("subscribers and open concurrency must be at least 1"));
    }
    let Some(sources) = scenario.sources else { return Ok(()) };
    if sources.per_address == 0 {
        return Err(LoadError::InvalidScenario("connections per source address must be at least 1"));
    }
    if process::ephemeral_ports().is_some_and(|ports| sources.per_address > ports) {
        return Err(LoadError::InvalidScenario("more connections per source address than ephemeral ports"));
    }
    let addresses = scenario.subscribers.div_ceil(sources.per_address) as u64;
    let last = u64::from(u32::from(sources.first)) + addresses - 1;
    let same_network = last >> 24 == u64::from(u32::from(sources.first)) >> 24;
    if !same_network {
        return Err(LoadError::InvalidScenario("source addresses run past the first one's /8"));
    }
    Ok(())
}

/// Spawns the subscribers, at most `open_concurrency` opening at once, and waits until all
/// have opened or failed. Returns how many were started within the time allowed.
async fn open_all(set: &mut JoinSet<()>, plan: &Arc<Plan>, board: &Arc<Board>, scenario: &StreamScenario) -> usize {
    let gate = Arc::new(Semaphore::new(scenario.open_concurrency));
    let deadline = Instant::now() + open_budget(scenario.subscribers);
    let mut spawned = 0;
    for index in 0..scenario.subscribers {
        let Ok(Ok(permit)) = timeout_at(deadline, Arc::clone(&gate).acquire_owned()).await else { break };
        set.spawn(subscriber::run(index, Arc::clone(plan), Arc::clone(board), permit));
        spawned += 1;
    }
    let all = u32::try_from(scenario.open_concurrency).unwrap_or(u32::MAX);
    let _ = timeout_at(deadline, gate.acquire_many(all)).await;
    spawned
}

/// A minute, plus a millisecond per subscriber (100k open in well under that here).
fn open_budget(subscribers: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(subscribers as u64)
}

/// Aborts every subscriber (closing its connection) and reports a panicked one as an error.
async fn stop_all(mut subscribers: JoinSet<()>) -> Result<(), LoadError> {
    subscribers.abort_all();
    while let Some(joined) = subscribers.join_next().await {
        match joined {
            Err(error) if error.is_panic() => return Err(LoadError::Worker(error)),
            Ok(()) | Err(_) => {}
        }
    }
    Ok(())
}

async fn run_rounds(
    target: &Target,
    subject: &Subject,
    board: &Board,
    scenario: &StreamScenario,
) -> Result<Vec<Round>, LoadError> {
    let mut rounds = Vec::with_capacity(scenario.rounds);
    for round in 0..scenario.rounds {
        let gap = if round == 0 { Duration::ZERO } else { scenario.round_gap };
        sleep(gap + phase_jitter()).await;
        rounds.push(run_round(target, subject, board, round, scenario.delivery_timeout).await?);
    }
    Ok(rounds)
}

/// The server sends at most one snapshot per 100 ms tick. Rounds that each start right after
/// the previous one's delivery would all land at the same phase of that tick and measure the
/// same part of the wait; a pseudo-random extra pause of up to one tick samples all of it.
fn phase_jitter() -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.subsec_nanos()).unwrap_or(0);
    Duration::from_millis(u64::from(nanos % 100))
}

async fn run_round(
    target: &Target,
    subject: &Subject,
    board: &Board,
    round: usize,
    delivery_timeout: Duration,
) -> Result<Round, LoadError> {
    const WHAT: &str = "change";
    let mut conn = conn::connect(target.addr).await?;
    let request = subject.change(round);
    let expected = board.live();
    board.arm();
    let sent = Instant::now();
    let (status, body) = timeout(SETUP_TIMEOUT, conn.fetch(request))
        .await
        .map_err(|_| LoadError::RequestTimeout { what: WHAT })?
        .map_err(|source| LoadError::Request { what: WHAT, source })?;
    let change = sent.elapsed();
    if status != StatusCode::CREATED {
        return Err(unexpected_status(WHAT, status, &body));
    }
    let deadline = sent + delivery_timeout;
    while board.reached() < board.live() && Instant::now() < deadline {
        sleep(POLL).await;
    }
    let delivery = board.delivery_since(sent);
    Ok(Round {
        expected,
        reached: delivery.latencies.count() as usize,
        early: delivery.early,
        change,
        delivery: delivery.latencies,
    })
}

/// The sale or auction followed, and how to change it.
struct Subject {
    events_path: String,
    change_uri: Uri,
    host: HeaderValue,
    /// One user per round, so every change is a new buyer or bidder.
    tokens: Vec<HeaderValue>,
    topic: StreamTopic,
}

impl Subject {
    async fn create(target: &Target, scenario: &StreamScenario) -> Result<Self, LoadError> {
        let tokens = mint_user_tokens(&target.jwt_secret, scenario.rounds.max(1), TOKEN_TTL_SECS).await?;
        let host = workload::host_header(target.addr)?;
        let (events_path, change_uri) = match scenario.topic {
            StreamTopic::Sale => {
                let sale = PurchaseScenario {
                    sales: 1,
                    stock_per_sale: 1_000_000,
                    users: tokens.len(),
                    quantity: 1,
                    per_user_limit: 1,
                    idempotency_keys: false,
                    stock_buckets: 1,
                    pow: false,
                };
                let id = create_sales(target, &sale, &run_id()).await?.remove(0);
                let orders = workload::order_uri(&id)?;
                (orders.path().replace("/orders", "/events"), orders)
            }
            StreamTopic::Auction => {
                let mut conn = conn::connect(target.addr).await?;
                let id = create_auction(&mut conn, target, AUCTION_START_CENTS).await?;
                (auction_uri(&id, "/events")?.path().to_owned(), bid_uri(&id)?)
            }
        };
        Ok(Self { events_path, change_uri, host, tokens, topic: scenario.topic })
    }

    /// Round `round`'s purchase, or a bid above every earlier round's.
    fn change(&self, round: usize) -> Request<Body> {
        let body = match self.topic {
            StreamTopic::Sale => Bytes::from_static(br#"{"quantity":1}"#),
            StreamTopic::Auction => {
                let max = AUCTION_START_CENTS * (round as i64 + 2);
                Bytes::from(format!(r#"{{"max_amount_cents":{max}}}"#))
            }
        };
        let mut request = workload::json_request(Method::POST, self.change_uri.clone(), &self.host, body);
        request.headers_mut().insert(AUTHORIZATION, self.tokens[round % self.tokens.len()].clone());
        request
    }
}
