//! One idle subscriber: a raw TCP connection, a hand-written HTTP/1.1 request (an upgrade
//! request for WebSocket) and a small read buffer, so the generator's memory per stream stays
//! far below what it measures on the server.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;

use super::board::Board;
use super::scan::{Scanner, SseScanner, WsScanner};
use super::{SourceAddresses, Transport};

/// Connect, request, response head and the first message (the current state) must fit in this.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Big enough for a response head; messages are counted, never kept, so any size passes.
const READ_BUFFER: usize = 512;
/// Any valid key will do: the generator does not check the server's accept hash.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What every subscriber of a run does, built once.
pub(super) struct Plan {
    pub(super) server: SocketAddr,
    pub(super) transport: Transport,
    pub(super) request: Box<[u8]>,
    pub(super) sources: Option<SourceAddresses>,
}

impl Plan {
    pub(super) fn new(server: SocketAddr, transport: Transport, path: &str, sources: Option<SourceAddresses>) -> Self {
        let request = match transport {
            Transport::Sse => format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n"),
            Transport::WebSocket => format!(
                "GET {path}/ws HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        };
        Self { server, transport, request: request.into_bytes().into_boxed_slice(), sources }
    }

    fn source(&self, index: usize) -> Option<Ipv4Addr> {
        let sources = self.sources?;
        let offset = u32::try_from(index / sources.per_address.max(1)).ok()?;
        u32::from(sources.first).checked_add(offset).map(Ipv4Addr::from)
    }

    fn scanner(&self) -> Scanner {
        match self.transport {
            Transport::Sse => Scanner::Sse(SseScanner::default()),
            Transport::WebSocket => Scanner::Ws(WsScanner::default()),
        }
    }

    fn success_status(&self) -> &'static [u8] {
        match self.transport {
            Transport::Sse => b"200",
            Transport::WebSocket => b"101",
        }
    }
}

/// Opens subscriber `index`, hands `permit` back once it has the first message (or failed),
/// then records every later message's arrival until the stream ends or the task is aborted.
pub(super) async fn run(index: usize, plan: Arc<Plan>, board: Arc<Board>, permit: OwnedSemaphorePermit) {
    let mut buffer = [0; READ_BUFFER];
    let opened = timeout(OPEN_TIMEOUT, open(index, &plan, &board, &mut buffer)).await;
    drop(permit);
    let (stream, mut scanner) = match opened {
        Ok(Ok(open)) => open,
        Ok(Err(error)) => return board.failed(error),
        Err(_) => return board.failed("no first message within the open timeout".to_owned()),
    };
    board.opened();
    loop {
        match read_some(&stream, &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) if scanner.feed(&buffer[..read]) > 0 => board.arrived(index),
            Ok(_) => {}
        }
    }
    board.dropped();
}

async fn open(index: usize, plan: &Plan, board: &Board, buffer: &mut [u8]) -> Result<(TcpStream, Scanner), String> {
    let stream = connect(plan, index).await.map_err(|error| format!("connect: {error}"))?;
    write_all(&stream, &plan.request).await.map_err(|error| format!("write: {error}"))?;
    let (filled, body_start) = read_head(&stream, buffer).await?;
    check_status(&buffer[..body_start], plan.success_status())?;
    let mut scanner = plan.scanner();
    let mut messages = scanner.feed(&buffer[body_start..filled]);
    while messages == 0 {
        let read = read_some(&stream, buffer).await.map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("closed before the first message".to_owned());
        }
        messages = scanner.feed(&buffer[..read]);
    }
    board.arrived(index);
    Ok((stream, scanner))
}

async fn connect(plan: &Plan, index: usize) -> io::Result<TcpStream> {
    let socket = match plan.server {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = plan.source(index) {
        // Lets `connect` pick the port per (source, destination) pair, so one source address
        // serves a whole ephemeral port range of connections to the one server address.
        bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(source.into(), 0))?;
    }
    let stream = socket.connect(plan.server).await?;
    // Closing with a reset leaves no TIME_WAIT behind to use up the next run's ports.
    stream.set_zero_linger()?;
    Ok(stream)
}

fn bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: the descriptor is open for the life of `socket`, and the option value is a valid
    // c_int whose size is passed alongside it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&enable).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads until the end of the response head; returns the bytes read and where the body starts.
async fn read_head(stream: &TcpStream, buffer: &mut [u8]) -> Result<(usize, usize), String> {
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            return Err("response head larger than the read buffer".to_owned());
        }
        let read = read_some(stream, &mut buffer[filled..]).await.map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("closed before the response head".to_owned());
        }
        filled += read;
        if let Some(end) = buffer[..filled].windows(4).position(|window| window == b"\r\n\r\n") {
            return Ok((filled, end + 4));
        }
    }
}

fn check_status(head: &[u8], expected: &[u8]) -> Result<(), String> {
    let status_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
    let status = status_line.split(|&byte| byte == b' ').nth(1);
    if status == Some(expected) {
        return Ok(());
    }
    Err(format!("answered {}", String::from_utf8_lossy(status_line)))
}

/// tokio's `io-util` feature is not in the workspace, so this is raw readiness I/O.
async fn read_some(stream: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_is_checked() {
        assert!(check_status(b"HTTP/1.1 200 OK\r\ncontent-type: x\r\n\r\n", b"200").is_ok());
        assert!(check_status(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", b"101").is_ok());
        let refused = check_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", b"200");
        assert_eq!(refused, Err("answered HTTP/1.1 503 Service Unavailable".to_owned()));
    }

    #[test]
    fn sources_advance_one_address_per_block() {
        let server: SocketAddr = "127.0.0.1:80".parse().expect("addr");
        let sources = SourceAddresses { first: Ipv4Addr::new(127, 0, 0, 2), per_address: 10 };
        let plan = Plan::new(server, Transport::Sse, "/v1/sales/s/events", Some(sources));
        assert_eq!(plan.source(0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(plan.source(9), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(plan.source(25), Some(Ipv4Addr::new(127, 0, 0, 4)));
        let ws = Plan::new(server, Transport::WebSocket, "/v1/sales/s/events", None);
        assert!(std::str::from_utf8(&ws.request).expect("ascii").starts_with("GET /v1/sales/s/events/ws HTTP/1.1\r\n"));
        assert_eq!(ws.source(3), None);
    }
}
