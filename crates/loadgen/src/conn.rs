//! One keep-alive HTTP/1.1 connection, driven inline by the task that owns it.
//!
//! hyper's usual pattern spawns the connection future as its own task; here the owning task
//! polls it alongside each request instead, which saves a cross-task wake-up per response on a
//! machine whose cores the server under test also needs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::LoadError;

pub(crate) type Body = Full<Bytes>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Body>>>;

pub(crate) struct Conn {
    sender: SendRequest<Body>,
    /// `None` once the connection has finished; the sender is then useless.
    driver: Option<Driver>,
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Conn, LoadError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| LoadError::ConnectTimeout { addr })?
        .map_err(|source| LoadError::Connect { addr, source })?;
    // Requests are small and latency is what we measure, so Nagle must not batch them.
    stream.set_nodelay(true).map_err(|source| LoadError::Connect { addr, source })?;
    let (sender, driver) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|source| LoadError::Handshake { addr, source })?;
    Ok(Conn { sender, driver: Some(Box::pin(driver)) })
}

impl Conn {
    pub(crate) fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    pub(crate) fn close(&mut self) {
        self.driver = None;
    }

    /// Waits until the connection can take a request; fails if the server closed it meanwhile.
    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        let Conn { sender, driver } = self;
        drive(driver, sender.ready()).await
    }

    /// Sends `request` and reads the whole response body, discarding it.
    pub(crate) async fn send(&mut self, request: Request<Body>) -> hyper::Result<StatusCode> {
        let response = self.sender.send_request(request);
        let work = async move {
            let response = response.await?;
            let status = response.status();
            drain(response.into_body()).await?;
            Ok(status)
        };
        drive(&mut self.driver, work).await
    }

    /// Sends `request` and returns the status with the collected body.
    pub(crate) async fn fetch(&mut self, request: Request<Body>) -> hyper::Result<(StatusCode, Bytes)> {
        let response = self.sender.send_request(request);
        let work = async move {
            let response = response.await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok((status, body))
        };
        drive(&mut self.driver, work).await
    }
}

/// Polls `work` and the connection together until `work` completes.
async fn drive<T>(driver: &mut Option<Driver>, work: impl Future<Output = hyper::Result<T>>) -> hyper::Result<T> {
    let mut work = pin!(work);
    if let Some(connection) = driver.as_mut() {
        tokio::select! {
            biased;
            result = &mut work => return result,
            _ = connection => {}
        }
        // The connection may finish in the same poll that delivered our response. Dropping it
        // closes its channels, so `work` now resolves promptly with the response or an error.
        *driver = None;
    }
    work.await
}

async fn drain(mut body: Incoming) -> hyper::Result<()> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}
