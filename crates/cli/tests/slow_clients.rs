//! A client that never finishes its request headers loses its connection; others are served.
//! Its own test binary: the header deadline is set through the environment the server inherits.

mod common;

use std::time::Duration;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    std::env::set_var("STAMPEDE_HEADER_TIMEOUT_MS", "300");
    let server = Server::start().await;
    let api = server.api().clone();
    let addr = api.url("").trim_start_matches("http://").to_string();

    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: stampede\r\nX-Slow: ").await.expect("send part of the head");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    let closed = read.expect("the server closes the stalled connection well before 10 s");
    closed.expect("read until the server closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "unexpected answer: {text}");

    let healthy = api.send(api.request(reqwest::Method::GET, "/healthz")).await;
    assert_eq!(healthy.status, 200, "the server still answers others");
}
