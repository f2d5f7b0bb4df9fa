//! Load generator for the Stampede HTTP API.
//!
//! Closed-loop and connection-bound: each of `Phase::connections` tasks owns one keep-alive
//! HTTP/1.1 connection and sends its next request as soon as the previous response is read.
//! Purchases can also be offered open-loop (`OpenLoop`: a fixed rate, whatever the server does)
//! for overload tests, and can carry a solved proof-of-work challenge each (`pow`).
//! Latencies go into a fixed-size log-linear histogram per task, merged when the phase ends.
//! Scenarios: `healthz` (the baseline), `purchases`, `bids` (one hot auction), and `streams`
//! (idle live-stream subscribers: server memory per stream and fan-out latency of one change),
//! and `queue` (one waiting room joined once by each of many users, then standing polls).

mod auction;
mod conn;
mod error;
pub mod histogram;
mod open_loop;
pub mod pow;
pub mod process;
mod queue;
mod report;
mod runner;
mod scenario;
mod streams;
mod token;
mod workload;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

pub use auction::{bids, BidRun, BidScenario};
pub use error::LoadError;
pub use open_loop::{OpenLoop, OpenLoopReport};
pub use queue::{queue_joins, queue_polls, queue_room, JoinRun, PollRun, QueueRoom, QueueScenario};
pub use report::Report;
pub use scenario::{healthz, purchases, purchases_open_loop, PurchaseScenario};
pub use streams::{streams, Round, SourceAddresses, StreamReport, StreamScenario, StreamTopic, Transport};
pub use token::{mint_token, try_mint_token};

/// The server under test and the secrets needed to act as its users and its admin.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// More replicas of the same deployment: connections are spread over `addr` and these.
    pub replicas: Vec<SocketAddr>,
    pub jwt_secret: String,
    pub admin_token: String,
}

impl Target {
    pub fn addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.addr).chain(self.replicas.iter().copied()).collect()
    }
}

/// Shape of one measured run.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Concurrent connections, each with exactly one request in flight.
    pub connections: usize,
    /// Measured window, after warm-up.
    pub duration: Duration,
    /// Load applied before measuring, to fill caches and pools; excluded from the report.
    pub warmup: Duration,
}
