use std::net::SocketAddr;

/// Why a load phase could not run. Failures of individual requests during a phase are counted
/// in the `Report` instead; these errors abort the phase.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid scenario: {0}")]
    InvalidScenario(&'static str),
    #[error("connect to {addr} failed")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("http handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{what} request failed")]
    Request {
        what: &'static str,
        #[source]
        source: hyper::Error,
    },
    #[error("{what} request timed out")]
    RequestTimeout { what: &'static str },
    #[error("{what} answered {status}: {body}")]
    UnexpectedStatus { what: &'static str, status: u16, body: String },
    #[error("{what} answered with an unreadable body")]
    InvalidResponse {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is not a valid http header value")]
    InvalidHeader { what: &'static str },
    #[error("sale id {0:?} does not form a valid request path")]
    InvalidSaleId(String),
    #[error("token signing failed")]
    Token(#[source] jsonwebtoken::errors::Error),
    #[error("open-files limit is {limit}, below the {wanted} the subscribers need (raise the hard limit)")]
    OpenFilesLimit { wanted: u64, limit: u64 },
    #[error("load worker task failed")]
    Worker(#[source] tokio::task::JoinError),
}
