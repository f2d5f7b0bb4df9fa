//! The connection loop: at most `max_connections` open at once (the next waits in the kernel
//! backlog), a deadline for reading each request's headers (slow or idle clients cannot hold a
//! slot forever), and a graceful stop that lets in-flight requests finish. A connection whose
//! first request is an event stream is served by `streams::raw`, everything else by hyper.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::streams::raw::{self, First};
use crate::AppState;

/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub(crate) async fn run(
    listener: TcpListener,
    state: AppState,
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = crate::app(state.clone());
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(MAX_HEAD_BYTES);
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &permits) => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer, permit) = accepted;
        let (state, app, http, mut stopping) = (state.clone(), app.clone(), http.clone(), stopping.clone());
        tokio::spawn(async move {
            let _slot = permit;
            // A connection that has not sent its first request yet is closed at shutdown.
            let first = tokio::select! {
                first = raw::first_request(&stream, header_read_timeout) => first,
                _ = stopping.changed() => return,
            };
            match first {
                First::Silent => return,
                First::Stream => return raw::serve(state, stream, peer).await,
                First::Http => {}
            }
            let connection = http.serve_connection(TokioIo::new(stream), with_peer(app, &state, peer)).with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    // Closes idle connections, lets the others finish their request, and waits for all: each
    // connection holds a permit until it is gone.
    let _ = stop.send(true);
    let all = u32::try_from(max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// The app, with the connection's peer address in every request's extensions; under sustained
/// overload, requests that may be shed are refused here, before routing.
fn with_peer(
    app: Router,
    state: &AppState,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    let app = TowerToHyperService::new(app);
    let state = state.clone();
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let call = match crate::telemetry::refuse_early(&state, &request) {
            Some(refused) => Err(refused),
            None => {
                request.extensions_mut().insert(ConnectInfo(peer));
                Ok(hyper::service::Service::call(&app, request))
            }
        };
        async move {
            match call {
                Ok(call) => call.await,
                Err(refused) => Ok(refused),
            }
        }
    })
}

async fn accept(listener: &TcpListener, permits: &Arc<Semaphore>) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            // The semaphore is never closed; wait and retry rather than end the server.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer, permit);
            }
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
