//! Closed-loop load: a fixed number of connection tasks, each sending its next request as soon
//! as the previous response has been read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::conn::{self, Conn};
use crate::report::{Report, Tally};
use crate::workload::Workload;
use crate::{LoadError, Phase};

/// A request the server has not answered by then counts as an io error, so a stuck server
/// cannot hold a phase open for longer than this past its end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a failed reconnect, so a server that refuses connections is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// When a task records and when it stops; shared by all tasks of a phase.
#[derive(Clone, Copy)]
struct Window {
    record_from: Instant,
    end: Instant,
}

struct Worker {
    id: usize,
    addr: SocketAddr,
    window: Window,
    workload: Arc<Workload>,
    tally: Tally,
    seq: u64,
}

/// Runs `workload` over `phase.connections` connections and reports the measured window.
/// Connection `i` goes to `addrs[i % addrs.len()]`, spreading the load over replicas.
pub(crate) async fn run_phase(
    name: &str,
    addrs: &[SocketAddr],
    phase: &Phase,
    workload: Workload,
) -> Result<Report, LoadError> {
    if phase.connections == 0 {
        return Err(LoadError::InvalidScenario("connections must be at least 1"));
    }
    // Connecting up front keeps connection set-up out of the window and reports a wrong
    // address as an error instead of a phase full of io errors.
    if addrs.is_empty() {
        return Err(LoadError::InvalidScenario("at least one server address is needed"));
    }
    let conns = connect_all(addrs, phase.connections).await?;
    let ok_status = workload.ok_status();
    let window = start_window(phase);
    let workload = Arc::new(workload);
    let mut workers = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let worker = Worker::new(id, addrs[id % addrs.len()], window, Arc::clone(&workload));
        workers.spawn(worker.run(conn));
    }
    let tally = join_all(&mut workers).await?;
    let elapsed = Instant::now().saturating_duration_since(window.record_from);
    Ok(tally.into_report(name, ok_status, elapsed))
}

pub(crate) async fn connect_all(addrs: &[SocketAddr], count: usize) -> Result<Vec<Conn>, LoadError> {
    let mut conns = Vec::with_capacity(count);
    for id in 0..count {
        conns.push(conn::connect(addrs[id % addrs.len()]).await?);
    }
    Ok(conns)
}

fn start_window(phase: &Phase) -> Window {
    let record_from = Instant::now() + phase.warmup;
    Window { record_from, end: record_from + phase.duration }
}

/// Dropping the `JoinSet` on an early return aborts the remaining tasks, so none outlive us.
async fn join_all(workers: &mut JoinSet<Tally>) -> Result<Tally, LoadError> {
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let tally = joined.map_err(LoadError::Worker)?;
        total.merge(&tally);
    }
    Ok(total)
}

impl Worker {
    fn new(id: usize, addr: SocketAddr, window: Window, workload: Arc<Workload>) -> Self {
        Self { id, addr, window, workload, tally: Tally::default(), seq: 0 }
    }

    async fn run(mut self, mut conn: Conn) -> Tally {
        while Instant::now() < self.window.end {
            if conn.is_open() {
                self.exchange(&mut conn).await;
                continue;
            }
            match conn::connect(self.addr).await {
                Ok(fresh) => conn = fresh,
                Err(_) => self.reconnect_failed().await,
            }
        }
        self.tally
    }

    async fn exchange(&mut self, conn: &mut Conn) {
        // A keep-alive connection the server closed between requests shows up here; that is
        // a reason to reconnect, not a failed request.
        let ready = timeout(REQUEST_TIMEOUT, conn.ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            conn.close();
            return;
        }
        let prepared = self.workload.prepared_request(conn, self.id, self.seq).await;
        self.seq += 1;
        let Ok(request) = prepared else {
            // The preparation (a proof-of-work challenge) failed: a request that got no answer.
            conn.close();
            if Instant::now() >= self.window.record_from {
                self.tally.record_io_error();
            }
            return;
        };
        let started = Instant::now();
        let outcome = timeout(REQUEST_TIMEOUT, conn.send(request)).await;
        let measured = started >= self.window.record_from;
        match outcome {
            Ok(Ok(status)) if measured => self.tally.record(status, started.elapsed()),
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                conn.close();
                if measured {
                    self.tally.record_io_error();
                }
            }
        }
    }

    async fn reconnect_failed(&mut self) {
        if Instant::now() >= self.window.record_from {
            self.tally.record_io_error();
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
