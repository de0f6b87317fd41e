//! ICE-TCP's passive side (RFC 6544): a TCP listener beside every media
//! socket. Each connection carries RFC 4571 frames (a 16-bit length, then one
//! STUN, DTLS, RTP or RTCP packet) that reach the core as datagrams tagged
//! TCP; the core's TCP transmits go back as frames on the connection they are
//! addressed to. No media logic lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use parley_proto::ice_tcp;
use parley_proto::limits::MAX_ICE_TCP_FRAME;
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::actor::Datagram;

/// Open ICE-TCP connections at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection must send its first frame (a STUN binding request) this soon.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// ICE consent checks arrive every few seconds; this long without a frame
/// means the peer is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames waiting to be written on one connection; more are dropped, as a
/// full socket buffer drops datagrams, and congestion control sees the loss.
const WRITE_QUEUE: usize = 1024;

/// The open connections by remote address, shared by the accept loops (which
/// add and remove them) and the core's task (which writes to them).
#[derive(Debug, Clone, Default)]
pub struct TcpConnections {
    writers: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
}

impl TcpConnections {
    /// Queues one frame for the connection from `destination`; dropped when
    /// there is no such connection or its queue is full.
    pub fn send(&self, destination: SocketAddr, data: &[u8]) {
        let writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = writers.get(&destination)
            && let Some(frame) = ice_tcp::frame(data)
        {
            let _ = writer.try_send(frame);
        }
    }

    fn admit(&self, remote: SocketAddr, writer: mpsc::Sender<Vec<u8>>) -> bool {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        if writers.len() >= MAX_CONNECTIONS {
            return false;
        }
        writers.insert(remote, writer);
        true
    }

    fn forget(&self, remote: SocketAddr) {
        self.writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&remote);
    }
}

/// Binds a TCP listener for ICE-TCP.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener`, whose address clients know as `advertised`.
pub fn spawn_listener(
    advertised: SocketAddr,
    listener: TcpListener,
    connections: TcpConnections,
    datagrams: mpsc::Sender<Datagram>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%err, "ICE-TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (writer, queue) = mpsc::channel(WRITE_QUEUE);
            if !connections.admit(remote, writer) {
                tracing::warn!(%remote, "too many ICE-TCP connections; closing a new one");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (connections, datagrams) = (connections.clone(), datagrams.clone());
            tokio::spawn(async move {
                serve(stream, remote, advertised, queue, &datagrams).await;
                connections.forget(remote);
            });
        }
    })
}

async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    advertised: SocketAddr,
    mut queue: mpsc::Receiver<Vec<u8>>,
    datagrams: &mpsc::Sender<Datagram>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut first = true;
    let mut buf = vec![0u8; MAX_ICE_TCP_FRAME];
    loop {
        let wait = if first {
            FIRST_FRAME_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        let frame = tokio::time::timeout(wait, read_frame(&mut reader, &mut buf)).await;
        let len = match frame {
            Ok(Ok(len)) => len,
            Ok(Err(reason)) => {
                tracing::debug!(%remote, reason, "ICE-TCP connection closed");
                break;
            }
            Err(_) => {
                tracing::debug!(%remote, "ICE-TCP connection idle; closing");
                break;
            }
        };
        first = false;
        let datagram = Datagram {
            proto: Protocol::Tcp,
            source: remote,
            destination: advertised,
            data: buf[..len].to_vec(),
        };
        // A core that is behind drops the frame, as it would a datagram.
        if let Err(mpsc::error::TrySendError::Closed(_)) = datagrams.try_send(datagram) {
            break;
        }
    }
    writing.abort();
}

/// Reads one RFC 4571 frame into `buf`, returning its length.
async fn read_frame(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut [u8],
) -> Result<usize, &'static str> {
    let mut header = [0u8; 2];
    reader
        .read_exact(&mut header)
        .await
        .map_err(|_| "closed by the peer")?;
    let len = ice_tcp::frame_len(header).ok_or("frame length out of bounds")?;
    reader
        .read_exact(&mut buf[..len])
        .await
        .map_err(|_| "closed mid-frame")?;
    Ok(len)
}
