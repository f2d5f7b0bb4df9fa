//! Waiting-room load: one sale with a FIFO room, joined once by each of many distinct users
//! (the "admission decision": the answer to a join is where the user stands), then standing
//! polls (`GET /v1/sales/{id}/queue/{ticket}`) for random joined users.
//!
//! Both phases are closed loop over keep-alive connections, like every other scenario. The
//! join phase is not timed by a window: it ends when every user has had one join answered (or
//! failed), so the queue holds exactly the users counted when the caller reads server memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::http::HeaderValue;
use hyper::{Method, Request, StatusCode, Uri};
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::conn::{self, Body, Conn};
use crate::report::Tally;
use crate::runner::connect_all;
use crate::scenario::{mint_user_tokens, run_id, unexpected_status};
use crate::workload;
use crate::{LoadError, Phase, Report, Target};

/// One waiting-room sale and how fast it lets people in.
#[derive(Clone, Debug)]
pub struct QueueScenario {
    /// Distinct users; each joins exactly once.
    pub users: usize,
    pub stock: u32,
    pub admit_per_minute: u32,
    pub max_active: u32,
    pub pass_seconds: u32,
}

/// The room sale created for a run, with every user's token minted already.
pub struct QueueRoom {
    pub sale_id: String,
    host: HeaderValue,
    join_uri: Uri,
    tokens: Vec<HeaderValue>,
}

/// The join phase: one join per user.
#[derive(Clone, Debug)]
pub struct JoinRun {
    /// Every join answered, whatever its status; `ok` are the 201s (new tickets).
    pub report: Report,
    /// Users holding a ticket afterwards.
    pub joined: usize,
    /// Joins answered `waiting` and `admitted` (the room lets a few in during the phase).
    pub waiting: u64,
    pub admitted: u64,
    /// Largest `position` any join was told.
    pub max_position: u32,
    /// `(user, ticket)` of every user holding a ticket, in no particular order.
    pub tickets: Vec<(usize, String)>,
}

/// The standing-poll phase.
#[derive(Clone, Debug)]
pub struct PollRun {
    pub report: Report,
    pub waiting: u64,
    pub admitted: u64,
}

/// A request the server has not answered by then counts as an io error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Consecutive failed reconnects (about 5 s) after which a join task gives up.
const MAX_FAILED_RECONNECTS: u32 = 250;
const TOKEN_MARGIN: Duration = Duration::from_secs(3600);
const PRICE_CENTS: u64 = 1000;

#[derive(Deserialize)]
struct CreatedSale {
    id: String,
}

/// The part of a ticket answer the generator checks.
#[derive(Deserialize)]
struct TicketAnswer {
    ticket: String,
    status: String,
    #[serde(default)]
    position: Option<u32>,
}

/// Mints a token per user (off the clock), then creates the room sale.
pub async fn queue_room(target: &Target, scenario: &QueueScenario, ttl: Duration) -> Result<QueueRoom, LoadError> {
    if scenario.users == 0 {
        return Err(LoadError::InvalidScenario("users must be at least 1"));
    }
    let tokens = mint_user_tokens(&target.jwt_secret, scenario.users, (ttl + TOKEN_MARGIN).as_secs()).await?;
    let host = workload::host_header(target.addr)?;
    let sale_id = create_room_sale(target, &host, scenario).await?;
    let join_uri = sale_uri(&sale_id, "/queue")?;
    Ok(QueueRoom { sale_id, host, join_uri, tokens })
}

async fn create_room_sale(target: &Target, host: &HeaderValue, scenario: &QueueScenario) -> Result<String, LoadError> {
    const WHAT: &str = "room sale creation";
    let body = serde_json::json!({
        "name": format!("loadgen queue {}", run_id()),
        "stock": scenario.stock,
        "price_cents": PRICE_CENTS,
        "waiting_room": {
            "mode": "fifo",
            "admit_per_minute": scenario.admit_per_minute,
            "max_active": scenario.max_active,
            "pass_seconds": scenario.pass_seconds,
        },
    });
    let mut request =
        workload::json_request(Method::POST, Uri::from_static("/v1/sales"), host, Bytes::from(body.to_string()));
    request.headers_mut().insert(AUTHORIZATION, workload::bearer(&target.admin_token, "admin token")?);
    let mut conn = conn::connect(target.addr).await?;
    let (status, body) = timeout(SETUP_TIMEOUT, conn.fetch(request))
        .await
        .map_err(|_| LoadError::RequestTimeout { what: WHAT })?
        .map_err(|source| LoadError::Request { what: WHAT, source })?;
    if status != StatusCode::CREATED {
        return Err(unexpected_status(WHAT, status, &body));
    }
    let sale: CreatedSale =
        serde_json::from_slice(&body).map_err(|source| LoadError::InvalidResponse { what: WHAT, source })?;
    Ok(sale.id)
}

/// `/v1/sales/{id}{suffix}`, the id percent-encoded.
fn sale_uri(sale_id: &str, suffix: &str) -> Result<Uri, LoadError> {
    let path = format!("/v1/sales/{}{suffix}", workload::encode_segment(sale_id));
    path.parse().map_err(|_| LoadError::InvalidSaleId(sale_id.to_owned()))
}

impl QueueRoom {
    pub fn users(&self) -> usize {
        self.tokens.len()
    }

    fn join_request(&self, user: usize) -> Request<Body> {
        let mut request =
            workload::json_request(Method::POST, self.join_uri.clone(), &self.host, Bytes::from_static(b"{}"));
        request.headers_mut().insert(AUTHORIZATION, self.tokens[user].clone());
        request
    }

    fn standing_request(&self, user: usize, uri: &Uri) -> Request<Body> {
        let mut request = workload::json_request(Method::GET, uri.clone(), &self.host, Bytes::new());
        request.headers_mut().insert(AUTHORIZATION, self.tokens[user].clone());
        request
    }
}

/// What one join task saw.
#[derive(Default)]
struct JoinTally {
    tally: Tally,
    waiting: u64,
    admitted: u64,
    max_position: u32,
    tickets: Vec<(usize, String)>,
}

/// Every user joins once over `connections` closed-loop connections; ends when all have been
/// answered. Latency is the join's round trip, i.e. the admission decision as the user sees it.
pub async fn queue_joins(target: &Target, connections: usize, room: Arc<QueueRoom>) -> Result<JoinRun, LoadError> {
    if connections == 0 {
        return Err(LoadError::InvalidScenario("connections must be at least 1"));
    }
    let addrs = target.addrs();
    let conns = connect_all(&addrs, connections).await?;
    let next_user = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let addr = addrs[id % addrs.len()];
        tasks.spawn(join_worker(addr, conn, Arc::clone(&room), Arc::clone(&next_user)));
    }
    let mut total = JoinTally::default();
    while let Some(joined) = tasks.join_next().await {
        let part = joined.map_err(LoadError::Worker)?;
        total.tally.merge(&part.tally);
        total.waiting += part.waiting;
        total.admitted += part.admitted;
        total.max_position = total.max_position.max(part.max_position);
        total.tickets.extend(part.tickets);
    }
    let report = total.tally.into_report("queue joins", StatusCode::CREATED, started.elapsed());
    Ok(JoinRun {
        report,
        joined: total.tickets.len(),
        waiting: total.waiting,
        admitted: total.admitted,
        max_position: total.max_position,
        tickets: total.tickets,
    })
}

async fn join_worker(
    addr: std::net::SocketAddr,
    mut conn: Conn,
    room: Arc<QueueRoom>,
    next_user: Arc<AtomicUsize>,
) -> JoinTally {
    let mut seen = JoinTally::default();
    let mut failed_reconnects = 0;
    loop {
        if !conn.is_open() || !matches!(timeout(REQUEST_TIMEOUT, conn.ready()).await, Ok(Ok(()))) {
            match conn::connect(addr).await {
                Ok(fresh) => {
                    failed_reconnects = 0;
                    conn = fresh;
                }
                // A server that stays away ends this task instead of spinning until it is back.
                Err(_) if failed_reconnects >= MAX_FAILED_RECONNECTS => return seen,
                Err(_) => {
                    failed_reconnects += 1;
                    seen.tally.record_io_error();
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
            continue;
        }
        let user = next_user.fetch_add(1, Ordering::Relaxed);
        if user >= room.users() {
            return seen;
        }
        let started = Instant::now();
        match timeout(REQUEST_TIMEOUT, conn.fetch(room.join_request(user))).await {
            Ok(Ok((status, body))) => {
                seen.tally.record(status, started.elapsed());
                if status.is_success() {
                    seen.note(user, &body);
                }
            }
            Ok(Err(_)) | Err(_) => {
                conn.close();
                seen.tally.record_io_error();
            }
        }
    }
}

impl JoinTally {
    fn note(&mut self, user: usize, body: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<TicketAnswer>(body) else { return };
        match answer.status.as_str() {
            "waiting" => self.waiting += 1,
            "admitted" => self.admitted += 1,
            _ => {}
        }
        self.max_position = self.max_position.max(answer.position.unwrap_or(0));
        self.tickets.push((user, answer.ticket));
    }
}

/// Standing polls for random joined users over `phase.connections` connections for
/// `phase.warmup + phase.duration`; only the measured window is reported.
pub async fn queue_polls(
    target: &Target,
    phase: &Phase,
    room: Arc<QueueRoom>,
    joins: &JoinRun,
) -> Result<PollRun, LoadError> {
    if phase.connections == 0 {
        return Err(LoadError::InvalidScenario("connections must be at least 1"));
    }
    if joins.tickets.is_empty() {
        return Err(LoadError::InvalidScenario("no user holds a ticket to poll"));
    }
    // Every poll's URI is built before the clock starts.
    let polls = joins
        .tickets
        .iter()
        .map(|(user, ticket)| {
            Ok((*user, sale_uri(&room.sale_id, &format!("/queue/{}", workload::encode_segment(ticket)))?))
        })
        .collect::<Result<Vec<(usize, Uri)>, LoadError>>()?;
    let polls = Arc::new(polls);
    let addrs = target.addrs();
    let conns = connect_all(&addrs, phase.connections).await?;
    let record_from = Instant::now() + phase.warmup;
    let end = record_from + phase.duration;
    let mut tasks = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let worker = PollWorker { addr: addrs[id % addrs.len()], room: Arc::clone(&room), polls: Arc::clone(&polls) };
        tasks.spawn(worker.run(conn, seed(id), record_from, end));
    }
    let (mut tally, mut waiting, mut admitted) = (Tally::default(), 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (part, part_waiting, part_admitted) = joined.map_err(LoadError::Worker)?;
        tally.merge(&part);
        waiting += part_waiting;
        admitted += part_admitted;
    }
    let elapsed = Instant::now().saturating_duration_since(record_from);
    Ok(PollRun { report: tally.into_report("queue standings", StatusCode::OK, elapsed), waiting, admitted })
}

struct PollWorker {
    addr: std::net::SocketAddr,
    room: Arc<QueueRoom>,
    polls: Arc<Vec<(usize, Uri)>>,
}

impl PollWorker {
    async fn run(self, mut conn: Conn, mut rng: u64, record_from: Instant, end: Instant) -> (Tally, u64, u64) {
        let (mut tally, mut waiting, mut admitted) = (Tally::default(), 0, 0);
        while Instant::now() < end {
            let measured = Instant::now() >= record_from;
            if !conn.is_open() || !matches!(timeout(REQUEST_TIMEOUT, conn.ready()).await, Ok(Ok(()))) {
                match conn::connect(self.addr).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => {
                        if measured {
                            tally.record_io_error();
                        }
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                }
                continue;
            }
            let pick = usize::try_from(splitmix(&mut rng) % self.polls.len() as u64).unwrap_or(0);
            let (user, uri) = &self.polls[pick];
            let started = Instant::now();
            let measured = started >= record_from;
            match timeout(REQUEST_TIMEOUT, conn.fetch(self.room.standing_request(*user, uri))).await {
                Ok(Ok((status, body))) if measured => {
                    tally.record(status, started.elapsed());
                    if status.is_success() {
                        match serde_json::from_slice::<TicketAnswer>(&body).map(|answer| answer.status) {
                            Ok(status) if status == "waiting" => waiting += 1,
                            Ok(status) if status == "admitted" => admitted += 1,
                            _ => {}
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    conn.close();
                    if measured {
                        tally.record_io_error();
                    }
                }
            }
        }
        (tally, waiting, admitted)
    }
}

fn seed(worker: usize) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or(0);
    (nanos as u64) ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// SplitMix64: good enough to pick users uniformly, and no dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> QueueRoom {
        QueueRoom {
            sale_id: "s 1".to_owned(),
            host: HeaderValue::from_static("127.0.0.1:1"),
            join_uri: sale_uri("s 1", "/queue").expect("uri"),
            tokens: vec![HeaderValue::from_static("Bearer t0"), HeaderValue::from_static("Bearer t1")],
        }
    }

    #[test]
    fn join_and_standing_requests_carry_the_users_token() {
        let room = room();
        let join = room.join_request(1);
        assert_eq!(join.method(), Method::POST);
        assert_eq!(join.uri().path(), "/v1/sales/s%201/queue");
        assert_eq!(join.headers()[AUTHORIZATION], "Bearer t1");
        let uri = sale_uri("s 1", "/queue/t-9").expect("uri");
        let standing = room.standing_request(0, &uri);
        assert_eq!(standing.method(), Method::GET);
        assert_eq!(standing.uri().path(), "/v1/sales/s%201/queue/t-9");
        assert_eq!(standing.headers()[AUTHORIZATION], "Bearer t0");
    }

    #[test]
    fn join_answers_are_tallied_by_status_and_position() {
        let mut seen = JoinTally::default();
        seen.note(0, br#"{"ticket":"a","status":"waiting","position":7,"eta_seconds":1}"#);
        seen.note(1, br#"{"ticket":"b","status":"admitted","pass":"p"}"#);
        seen.note(2, b"not json");
        assert_eq!((seen.waiting, seen.admitted, seen.max_position), (1, 1, 7));
        assert_eq!(seen.tickets, vec![(0, "a".to_owned()), (1, "b".to_owned())]);
    }

    #[test]
    fn picks_spread_over_all_users() {
        let mut rng = 1;
        let mut hits = [0u32; 4];
        for _ in 0..4000 {
            hits[(splitmix(&mut rng) % 4) as usize] += 1;
        }
        assert!(hits.iter().all(|&count| (800..1200).contains(&count)), "{hits:?}");
    }
}
