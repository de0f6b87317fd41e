//! The call's TCP-based paths, as tokio tasks that only move bytes: ICE-TCP
//! connections to the SFU (RFC 4571 frames) and the transports under TURN
//! relays (a connected UDP socket, or a TCP stream, through the proxy and
//! TLS when asked). Everything they receive reaches the engine as a
//! [`NetEvent`]; the engine's sans-IO state decides what to send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use parley_proto::ice_tcp;

use super::turn::{TurnTransport, TurnUrl};
use crate::net::NetworkOptions;

/// Frames queued for one connection; more are dropped as a full socket
/// buffer drops datagrams.
const WRITE_QUEUE: usize = 1024;
const READ_CHUNK: usize = 16 * 1024;

/// What the network tasks report to the engine.
#[derive(Debug)]
pub enum NetEvent {
    /// One RFC 4571 frame from the ICE-TCP connection to `remote`.
    TcpFrame {
        remote: SocketAddr,
        data: Vec<u8>,
    },
    TcpClosed {
        remote: SocketAddr,
        reason: String,
    },
    /// The transport of relay `index` is up.
    TurnConnected {
        index: usize,
        local: SocketAddr,
        server: SocketAddr,
        writer: TurnWriter,
        /// Time spent connecting (resolve, TCP, proxy, TLS).
        took: Duration,
    },
    /// Bytes from relay `index`'s server (a datagram, or a stream chunk).
    TurnData {
        index: usize,
        data: Vec<u8>,
    },
    TurnClosed {
        index: usize,
        reason: String,
    },
}

/// Where a relay's bytes to its server go.
#[derive(Debug, Clone)]
pub enum TurnWriter {
    Udp(Arc<UdpSocket>),
    Stream(mpsc::Sender<Vec<u8>>),
}

impl TurnWriter {
    /// Sends without waiting; a full queue or buffer drops, like the network.
    pub fn send(&self, data: Vec<u8>) {
        match self {
            Self::Udp(socket) => {
                let _ = socket.try_send(&data);
            }
            Self::Stream(queue) => {
                let _ = queue.try_send(data);
            }
        }
    }
}

/// Writes everything queued to `writer`, in order, until the queue closes
/// or a write fails.
fn spawn_writer<W>(mut writer: W, mut queue: mpsc::Receiver<Vec<u8>>) -> tokio::task::JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(bytes) = queue.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    })
}

/// Opens an ICE-TCP connection to `remote` in the background; frames
/// (already carrying their RFC 4571 length) queued on the returned sender
/// are written once it is up.
pub fn connect_ice_tcp(
    remote: SocketAddr,
    events: mpsc::Sender<NetEvent>,
) -> mpsc::Sender<Vec<u8>> {
    let (queue, frames) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    tokio::spawn(async move {
        let connected =
            tokio::time::timeout(crate::net::CONNECT_TIMEOUT, TcpStream::connect(remote)).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                let reason = format!("connecting: {err}");
                let _ = events.send(NetEvent::TcpClosed { remote, reason }).await;
                return;
            }
            Err(_) => {
                let reason = "connecting: no answer".to_owned();
                let _ = events.send(NetEvent::TcpClosed { remote, reason }).await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = stream.into_split();
        let writing = spawn_writer(writer, frames);
        let reason = loop {
            let mut header = [0u8; 2];
            if let Err(err) = reader.read_exact(&mut header).await {
                break format!("closed: {err}");
            }
            let Some(len) = ice_tcp::frame_len(header) else {
                break "a frame length out of bounds".to_owned();
            };
            let mut data = vec![0u8; len];
            if let Err(err) = reader.read_exact(&mut data).await {
                break format!("closed mid-frame: {err}");
            }
            if events
                .send(NetEvent::TcpFrame { remote, data })
                .await
                .is_err()
            {
                break "the call ended".to_owned();
            }
        };
        writing.abort();
        let _ = events.send(NetEvent::TcpClosed { remote, reason }).await;
    });
    queue
}

/// Connects relay `index`'s transport in the background and reports it.
pub fn connect_turn(
    index: usize,
    url: TurnUrl,
    network: NetworkOptions,
    events: mpsc::Sender<NetEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let result = match url.transport {
            TurnTransport::Udp => connect_udp(index, &url, &events).await,
            TurnTransport::Tcp => match network.connect_tcp(&url.host, url.port).await {
                Ok(stream) => run_stream(index, stream, started, &events).await,
                Err(reason) => Err(reason),
            },
            TurnTransport::Tls => connect_tls(index, &url, &network, started, &events).await,
        };
        if let Err(reason) = result {
            let _ = events.send(NetEvent::TurnClosed { index, reason }).await;
        }
    })
}

async fn connect_udp(
    index: usize,
    url: &TurnUrl,
    events: &mpsc::Sender<NetEvent>,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let server = tokio::time::timeout(
        crate::net::CONNECT_TIMEOUT,
        tokio::net::lookup_host(url.host_port()),
    )
    .await
    .map_err(|_| format!("resolving {}: timed out", url.host))?
    .map_err(|e| format!("resolving {}: {e}", url.host))?
    .next()
    .ok_or_else(|| format!("resolving {}: no address", url.host))?;
    let any: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await.map_err(|e| e.to_string())?;
    // Connected, so the local address names the interface the route uses.
    socket
        .connect(server)
        .await
        .map_err(|e| format!("no route to {server}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let socket = Arc::new(socket);
    let writer = TurnWriter::Udp(Arc::clone(&socket));
    let took = started.elapsed();
    if events
        .send(NetEvent::TurnConnected {
            index,
            local,
            server,
            writer,
            took,
        })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match socket.recv(&mut buf).await {
            Ok(len) => {
                let data = buf[..len].to_vec();
                if events
                    .send(NetEvent::TurnData { index, data })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            // ICMP unreachable and the like: the relay's own timeouts decide.
            Err(err) => tracing::debug!(%err, "TURN UDP receive error"),
        }
    }
}

async fn connect_tls(
    index: usize,
    url: &TurnUrl,
    network: &NetworkOptions,
    started: tokio::time::Instant,
    events: &mpsc::Sender<NetEvent>,
) -> Result<(), String> {
    let tls = network.tls_config()?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| format!("TLS name {}: {e}", url.host))?;
    let stream = network.connect_tcp(&url.host, url.port).await?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let server = stream.peer_addr().map_err(|e| e.to_string())?;
    let handshake = TlsConnector::from(tls).connect(name, stream);
    let stream = tokio::time::timeout(crate::net::CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("TLS handshake with {}: timed out", url.host_port()))?
        .map_err(|e| format!("TLS handshake with {}: {e}", url.host_port()))?;
    run_split(index, stream, local, server, started, events).await
}

async fn run_stream(
    index: usize,
    stream: TcpStream,
    started: tokio::time::Instant,
    events: &mpsc::Sender<NetEvent>,
) -> Result<(), String> {
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let server = stream.peer_addr().map_err(|e| e.to_string())?;
    run_split(index, stream, local, server, started, events).await
}

/// Reports the stream as connected, then moves bytes both ways until it closes.
async fn run_split<S>(
    index: usize,
    stream: S,
    local: SocketAddr,
    server: SocketAddr,
    started: tokio::time::Instant,
    events: &mpsc::Sender<NetEvent>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (queue, outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writing = spawn_writer(writer, outgoing);
    let connected = NetEvent::TurnConnected {
        index,
        local,
        server,
        writer: TurnWriter::Stream(queue),
        took: started.elapsed(),
    };
    if events.send(connected).await.is_err() {
        writing.abort();
        return Ok(());
    }
    let mut buf = vec![0u8; READ_CHUNK];
    let result = loop {
        match reader.read(&mut buf).await {
            Ok(0) => break Err("closed by the server".to_owned()),
            Ok(len) => {
                let data = buf[..len].to_vec();
                if events
                    .send(NetEvent::TurnData { index, data })
                    .await
                    .is_err()
                {
                    break Ok(());
                }
            }
            Err(err) => break Err(err.to_string()),
        }
    };
    writing.abort();
    result
}
