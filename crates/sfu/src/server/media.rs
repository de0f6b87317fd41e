//! The media port's driver: binds one UDP socket per served address (all on
//! the same port) and, for ICE-TCP, a TCP listener beside each; hands every
//! datagram to the core's task, and sends what the core transmits. No media
//! logic lives here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use str0m::net::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::actor::Datagram;
use super::ice_tcp::{self, TcpConnections};
use crate::config::MediaSettings;

/// Largest datagram read; anything bigger is not WebRTC media.
const MAX_DATAGRAM: usize = 2048;
/// Socket buffers sized for bursts of many subscribers' video (the OS may cap
/// them lower, e.g. at `net.core.rmem_max`).
const SOCKET_BUFFER: usize = 8 << 20;

/// Binds a non-blocking UDP socket with large send and receive buffers.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A smaller buffer than asked for is fine; the bind is what matters.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// The bound media sockets, keyed by the address clients are told about.
#[derive(Debug, Clone, Default)]
pub struct MediaSockets {
    by_advertised: HashMap<SocketAddr, Arc<UdpSocket>>,
    tcp_advertised: Vec<SocketAddr>,
    tcp: TcpConnections,
}

/// What [`bind`] made: the sockets, and the ICE-TCP listeners to start.
#[derive(Debug)]
pub struct BoundMedia {
    pub sockets: MediaSockets,
    tcp_listeners: Vec<(SocketAddr, TcpListener)>,
}

impl MediaSockets {
    /// The host candidates every session offers.
    pub fn advertised(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.by_advertised.keys().copied().collect();
        // Loopback last: a client on another machine should try real addresses first.
        addrs.sort_by_key(|a| (a.ip().is_loopback(), *a));
        addrs
    }

    /// The passive ICE-TCP candidates every session offers.
    pub fn tcp_advertised(&self) -> Vec<SocketAddr> {
        let mut addrs = self.tcp_advertised.clone();
        addrs.sort_by_key(|a| (a.ip().is_loopback(), *a));
        addrs
    }

    /// Sends without waiting; a full socket buffer drops the datagram as the
    /// network would, and congestion control sees it as loss.
    pub fn send(&self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if proto == Protocol::Tcp {
            self.tcp.send(destination, data);
            return;
        }
        if let Some(socket) = self.by_advertised.get(&source)
            && let Err(err) = socket.try_send_to(data, destination)
            && err.kind() != std::io::ErrorKind::WouldBlock
        {
            tracing::debug!(%destination, %err, "media send failed");
        }
    }
}

/// Every non-link-local address of every interface that is up.
fn interface_ips() -> anyhow::Result<Vec<IpAddr>> {
    let interfaces = if_addrs::get_if_addrs().context("listing network interfaces")?;
    Ok(interfaces
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        })
        .collect())
}

/// Binds the media port on every configured address.
pub fn bind(settings: &MediaSettings) -> anyhow::Result<BoundMedia> {
    let ips = if settings.ips.is_empty() {
        interface_ips()?
    } else {
        settings.ips.clone()
    };
    let mut port = settings.udp_port;
    let mut tcp_port = settings.tcp_port;
    let mut sockets = MediaSockets::default();
    let mut tcp_listeners = Vec::new();
    for ip in ips {
        let socket = match bind_udp(SocketAddr::new(ip, port)) {
            Ok(socket) => socket,
            // An interface address that cannot be bound (e.g. IPv6 disabled) is skipped.
            Err(err) if settings.ips.is_empty() => {
                tracing::warn!(%ip, %err, "not serving media on this address");
                continue;
            }
            Err(err) => return Err(err).with_context(|| format!("binding UDP {ip}:{port}")),
        };
        let local = socket.local_addr()?;
        // With port 0, every later address uses the port the first one got.
        port = local.port();
        let advertised = SocketAddr::new(settings.public_ip.unwrap_or(ip), port);
        sockets.by_advertised.insert(advertised, Arc::new(socket));
        if let Some(wanted) = tcp_port {
            let listener = ice_tcp::bind(SocketAddr::new(ip, wanted))
                .with_context(|| format!("binding ICE-TCP {ip}:{wanted}"))?;
            let bound = listener.local_addr()?.port();
            tcp_port = Some(bound);
            let advertised = SocketAddr::new(settings.public_ip.unwrap_or(ip), bound);
            sockets.tcp_advertised.push(advertised);
            tcp_listeners.push((advertised, listener));
        }
    }
    if sockets.by_advertised.is_empty() {
        anyhow::bail!("no address to serve media on");
    }
    Ok(BoundMedia {
        sockets,
        tcp_listeners,
    })
}

/// Starts accepting ICE-TCP connections.
pub fn spawn_tcp_listeners(
    bound: &mut BoundMedia,
    datagrams: &mpsc::Sender<Datagram>,
) -> Vec<JoinHandle<()>> {
    bound
        .tcp_listeners
        .drain(..)
        .map(|(advertised, listener)| {
            ice_tcp::spawn_listener(
                advertised,
                listener,
                bound.sockets.tcp.clone(),
                datagrams.clone(),
            )
        })
        .collect()
}

/// One task per socket, reading datagrams into the core's event queue.
pub fn spawn_readers(
    sockets: &MediaSockets,
    datagrams: &mpsc::Sender<Datagram>,
) -> Vec<JoinHandle<()>> {
    sockets
        .by_advertised
        .iter()
        .map(|(advertised, socket)| {
            let (advertised, socket, datagrams) =
                (*advertised, Arc::clone(socket), datagrams.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let (len, source) = match socket.recv_from(&mut buf).await {
                        Ok(received) => received,
                        Err(err) => {
                            // ICMP port-unreachable and the like surface here; keep reading.
                            tracing::debug!(%err, "media receive error");
                            continue;
                        }
                    };
                    let datagram = Datagram {
                        proto: Protocol::Udp,
                        source,
                        destination: advertised,
                        data: buf[..len].to_vec(),
                    };
                    // When the core is behind, the datagram is dropped, as a
                    // congested router would.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = datagrams.try_send(datagram)
                    {
                        return;
                    }
                }
            })
        })
        .collect()
}
