//! TURN relays, sans-IO: one allocation on one TURN server, over UDP, TCP or
//! TLS, on `turn-client-proto`. The driver owns the socket or stream (and the
//! TLS and proxy layers under it) and moves bytes; this type turns str0m's
//! transmits from the relayed candidate into TURN messages, and the server's
//! bytes back into what peers sent.
//!
//! Over a stream, messages are framed here (STUN by its length field,
//! `ChannelData` by its length padded to 4 bytes, RFC 8656 §12.5) so every
//! message is seen whole: the server's error responses are read before the
//! TURN client consumes them, which is how a failed allocation is reported
//! with the server's own error code.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::attribute::ErrorCode;
use stun_types::message::{Message, MessageClass};
use turn_client_proto::api::{Transmit, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::client::TurnClient;
use turn_client_proto::prelude::*;
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::TransportType;
use turn_client_proto::udp::TurnClientUdp;
use turn_types::TurnCredentials;
use turn_types::message::{ALLOCATE, CREATE_PERMISSION, REFRESH};

/// An allocation not made this long after the first request has failed.
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Packets held per peer while its permission is being installed.
const PENDING_PER_PEER: usize = 64;
/// Bytes buffered from a stream without a complete message: more means the
/// other end does not speak TURN.
const MAX_STREAM_BUFFER: usize = 70_000;
/// Port of `turn:` URLs without one (RFC 7065).
const TURN_PORT: u16 = 3478;
/// Port of `turns:` URLs without one.
const TURNS_PORT: u16 = 5349;

/// How we reach the TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    Udp,
    Tcp,
    Tls,
}

impl TurnTransport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// A `turn:` or `turns:` URL (RFC 7065).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub host: String,
    pub port: u16,
    pub transport: TurnTransport,
}

impl TurnUrl {
    /// `host:port`, bracketed for IPv6, for resolving and connecting.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for TurnUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.transport {
            TurnTransport::Tls => "turns",
            _ => "turn",
        };
        write!(f, "{scheme}:{}", self.host_port())?;
        match self.transport {
            TurnTransport::Tcp => write!(f, "?transport=tcp"),
            TurnTransport::Udp | TurnTransport::Tls => Ok(()),
        }
    }
}

impl std::str::FromStr for TurnUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("TURN URL `{url}`: {why}");
        let (secure, rest) = if let Some(rest) = url.strip_prefix("turns:") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("turn:") {
            (false, rest)
        } else {
            return Err(bad("must start with turn: or turns:"));
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let transport = match (secure, query) {
            (true, "" | "transport=tcp") => TurnTransport::Tls,
            (true, _) => return Err(bad("turns: runs over TCP only (no DTLS)")),
            (false, "" | "transport=udp") => TurnTransport::Udp,
            (false, "transport=tcp") => TurnTransport::Tcp,
            (false, _) => return Err(bad("transport must be udp or tcp")),
        };
        let default_port = if secure { TURNS_PORT } else { TURN_PORT };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after the address")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad("bad host"));
        }
        Ok(Self {
            host,
            port,
            transport,
        })
    }
}

/// What happened on the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// Send these bytes to the TURN server (a datagram, or stream bytes).
    ToServer(Vec<u8>),
    /// The allocation exists: peers reach us at `relayed`.
    Allocated { relayed: SocketAddr },
    /// A peer's packet, relayed by the server.
    FromPeer { peer: SocketAddr, data: Vec<u8> },
    /// The relay cannot be used (any more); the reason is for people.
    Failed(String),
}

/// See the module docs.
#[derive(Debug)]
pub struct TurnRelay {
    client: TurnClient,
    transport: TurnTransport,
    /// `turn-client-proto` keeps its own time; ours maps onto it from here.
    epoch: Instant,
    stream: Option<Vec<u8>>,
    relayed: Option<SocketAddr>,
    /// Set once the relay failed; nothing more happens after that.
    failed: bool,
    allocate_by: Option<Instant>,
    /// The latest error response from the server, as `code reason`.
    last_error: Option<String>,
    /// Packets waiting for their peer's permission.
    pending: HashMap<IpAddr, VecDeque<(SocketAddr, Vec<u8>)>>,
    permissions_asked: HashSet<IpAddr>,
    channels_asked: HashSet<SocketAddr>,
    events: VecDeque<RelayEvent>,
    next_wakeup: Option<Instant>,
}

impl TurnRelay {
    /// Starts allocating on `server` from `local` (the socket's address, or
    /// the stream's local end).
    pub fn new(
        transport: TurnTransport,
        local: SocketAddr,
        server: SocketAddr,
        username: &str,
        password: &str,
        now: Instant,
    ) -> Self {
        let config = TurnConfig::new(TurnCredentials::new(username, password));
        let client = match transport {
            TurnTransport::Udp => TurnClient::Udp(TurnClientUdp::allocate(local, server, config)),
            TurnTransport::Tcp | TurnTransport::Tls => {
                TurnClient::Tcp(TurnClientTcp::allocate(local, server, config))
            }
        };
        let mut relay = Self {
            client,
            transport,
            epoch: now,
            stream: (transport != TurnTransport::Udp).then(Vec::new),
            relayed: None,
            failed: false,
            allocate_by: Some(now + ALLOCATE_TIMEOUT),
            last_error: None,
            pending: HashMap::new(),
            permissions_asked: HashSet::new(),
            channels_asked: HashSet::new(),
            events: VecDeque::new(),
            next_wakeup: Some(now),
        };
        relay.pump(now);
        relay
    }

    pub fn transport(&self) -> TurnTransport {
        self.transport
    }

    /// Our end of the connection to the TURN server.
    pub fn local(&self) -> SocketAddr {
        self.client.local_addr()
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    fn at(&self, now: Instant) -> turn_client_proto::stun::Instant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        turn_client_proto::stun::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    fn turn_to_std(&self, at: turn_client_proto::stun::Instant) -> Instant {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Bytes from the server: one datagram over UDP, any chunk of the
    /// stream over TCP or TLS.
    pub fn handle_server_data(&mut self, data: &[u8], now: Instant) {
        if self.failed {
            return;
        }
        match self.stream.as_mut() {
            None => self.receive_message(data.to_vec(), now),
            Some(buffer) => {
                buffer.extend_from_slice(data);
                while let Some(buffer) = self.stream.as_mut() {
                    match next_frame_len(buffer) {
                        Ok(Some(len)) => {
                            let mut message: Vec<u8> = buffer.drain(..len).collect();
                            // The TURN client's own stream buffer does not
                            // expect ChannelData padding: hand it the message alone.
                            message.truncate(unpadded_len(&message));
                            self.receive_message(message, now);
                        }
                        Ok(None) if buffer.len() > MAX_STREAM_BUFFER => {
                            self.fail("the TURN server sent an oversized message".into());
                            break;
                        }
                        Ok(None) => break,
                        Err(why) => {
                            self.fail(format!("the TURN server sent {why}"));
                            break;
                        }
                    }
                }
            }
        }
        self.pump(now);
    }

    fn receive_message(&mut self, message: Vec<u8>, now: Instant) {
        self.note_error_response(&message);
        let (server, local) = (self.client.remote_addr(), self.client.local_addr());
        let transport = match self.transport {
            TurnTransport::Udp => TransportType::Udp,
            TurnTransport::Tcp | TurnTransport::Tls => TransportType::Tcp,
        };
        let at = self.at(now);
        let transmit = Transmit {
            data: message,
            transport,
            from: server,
            to: local,
        };
        match self.client.recv(transmit, at) {
            TurnRecvRet::PeerData(data) => self.events.push_back(RelayEvent::FromPeer {
                peer: data.peer,
                data: data.data().to_vec(),
            }),
            TurnRecvRet::Handled | TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => {}
        }
        while let Some(data) = self.client.poll_recv(at) {
            self.events.push_back(RelayEvent::FromPeer {
                peer: data.peer,
                data: data.data().to_vec(),
            });
        }
    }

    /// Remembers the server's error responses to allocation requests (the
    /// TURN client's failure event does not carry them).
    fn note_error_response(&mut self, message: &[u8]) {
        let Ok(message) = Message::from_bytes(message) else {
            return;
        };
        if !message.has_class(MessageClass::Error) {
            return;
        }
        let method = message.method();
        if method != ALLOCATE && method != REFRESH && method != CREATE_PERMISSION {
            return;
        }
        if let Ok(error) = message.attribute::<ErrorCode>() {
            self.last_error = Some(format!("{} {}", error.code(), error.reason()));
        }
    }

    /// Sends `data` to `peer` through the relay, installing the peer's
    /// permission (and a channel) first when needed.
    pub fn send(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if self.failed || self.relayed.is_none() {
            return;
        }
        let at = self.at(now);
        if self.client.have_permission(TransportType::Udp, peer.ip()) {
            // The common case, once per packet: the TURN client has nothing
            // new to say unless a channel was just asked for.
            if self.send_now(peer, data, at) {
                self.pump(now);
            }
            return;
        }
        let queue = self.pending.entry(peer.ip()).or_default();
        if queue.len() < PENDING_PER_PEER {
            queue.push_back((peer, data.to_vec()));
        }
        self.ask_permission(peer.ip(), now);
        self.pump(now);
    }

    fn ask_permission(&mut self, peer: IpAddr, now: Instant) {
        if self.permissions_asked.insert(peer) {
            let at = self.at(now);
            if let Err(e) = self.client.create_permission(TransportType::Udp, peer, at) {
                tracing::debug!(%peer, "TURN permission not requested: {e}");
            }
        }
    }

    /// Returns true when it asked for a channel (whose request then needs sending).
    fn send_now(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        at: turn_client_proto::stun::Instant,
    ) -> bool {
        let asked_channel = self.channels_asked.insert(peer);
        if asked_channel && let Err(e) = self.client.bind_channel(TransportType::Udp, peer, at) {
            tracing::debug!(%peer, "TURN channel not bound: {e}");
        }
        match self.client.send_to(TransportType::Udp, peer, data, at) {
            Ok(Some(transmit)) => self.queue_for_server(transmit.build().data),
            Ok(None) => {}
            Err(e) => tracing::debug!(%peer, "not relayed: {e}"),
        }
        asked_channel
    }

    /// Queues one message for the server; over a stream, `ChannelData` is
    /// padded to a multiple of 4 bytes (RFC 8656 §12.5), which the TURN
    /// client does not do itself and servers rely on to find the next message.
    fn queue_for_server(&mut self, mut bytes: Vec<u8>) {
        if self.stream.is_some() && bytes.first().is_some_and(|b| b >> 6 == 1) {
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        self.events.push_back(RelayEvent::ToServer(bytes));
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if self.relayed.is_none() && self.allocate_by.is_some_and(|t| t <= now) {
            self.fail_allocation(&format!("no answer within {}s", ALLOCATE_TIMEOUT.as_secs()));
            return;
        }
        self.pump(now);
    }

    /// The stream or socket under the relay closed or failed.
    pub fn transport_failed(&mut self, reason: &str) {
        if !self.failed {
            self.fail(format!("connection to the TURN server lost: {reason}"));
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        [
            self.next_wakeup,
            self.allocate_by.filter(|_| self.relayed.is_none()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// The allocation failed: with the server's error when it sent one,
    /// else `otherwise`.
    fn fail_allocation(&mut self, otherwise: &str) {
        let why = self
            .last_error
            .take()
            .map_or_else(|| otherwise.to_owned(), |e| format!("refused: {e}"));
        self.fail(format!("allocation failed: {why}"));
    }

    fn fail(&mut self, reason: String) {
        self.failed = true;
        self.pending.clear();
        self.next_wakeup = None;
        self.events.push_back(RelayEvent::Failed(reason));
    }

    /// Moves the TURN client's transmits and events into ours.
    fn pump(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        let at = self.at(now);
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.client.poll_transmit(at) {
                progressed = true;
                let bytes = transmit.data.as_ref().to_vec();
                self.queue_for_server(bytes);
            }
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                self.handle_turn_event(event, at);
                if self.failed {
                    return;
                }
            }
            if !progressed {
                break;
            }
        }
        match self.client.poll(at) {
            TurnPollRet::WaitUntil(wake) => {
                self.next_wakeup = Some(self.turn_to_std(wake).max(now));
            }
            TurnPollRet::Closed => {
                let reason = self.last_error.take().map_or_else(
                    || "the TURN server closed the allocation".to_owned(),
                    |e| format!("the TURN server refused: {e}"),
                );
                self.fail(reason);
            }
            TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => {}
        }
    }

    fn handle_turn_event(&mut self, event: TurnEvent, at: turn_client_proto::stun::Instant) {
        match event {
            TurnEvent::AllocationCreated(TransportType::Udp, relayed) if self.relayed.is_none() => {
                self.relayed = Some(relayed);
                self.allocate_by = None;
                self.last_error = None;
                self.events.push_back(RelayEvent::Allocated { relayed });
            }
            TurnEvent::AllocationCreateFailed(_) if self.relayed.is_none() => {
                self.fail_allocation("no usable answer");
            }
            TurnEvent::PermissionCreated(_, peer) => {
                for (to, data) in self.pending.remove(&peer).unwrap_or_default() {
                    // Called from `pump`, whose loop sends any channel request.
                    let _ = self.send_now(to, &data, at);
                }
            }
            TurnEvent::PermissionCreateFailed(_, peer) => {
                self.pending.remove(&peer);
                self.permissions_asked.remove(&peer);
                tracing::warn!(%peer, error = ?self.last_error, "TURN server refused a permission");
            }
            TurnEvent::ChannelCreateFailed(_, peer) => {
                tracing::debug!(%peer, "TURN channel refused; sending indications instead");
            }
            other => tracing::trace!(?other, "TURN event"),
        }
    }
}

/// The length of the first whole message in a TURN stream, if it is all
/// there: STUN (first two bits 00) by its length field, `ChannelData` (01) by
/// its length padded to a multiple of 4.
fn next_frame_len(buffer: &[u8]) -> Result<Option<usize>, &'static str> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let declared = usize::from(u16::from_be_bytes([buffer[2], buffer[3]]));
    let len = match buffer[0] >> 6 {
        0 => 20 + declared,
        1 => 4 + declared.next_multiple_of(4),
        _ => return Err("bytes that are neither STUN nor ChannelData"),
    };
    Ok((buffer.len() >= len).then_some(len))
}

/// A framed message without `ChannelData` padding.
fn unpadded_len(message: &[u8]) -> usize {
    if message.len() >= 4 && message[0] >> 6 == 1 {
        4 + usize::from(u16::from_be_bytes([message[2], message[3]]))
    } else {
        message.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_follow_rfc_7065() {
        let parse = |s: &str| s.parse::<TurnUrl>();
        assert_eq!(
            parse("turn:turn.example.com").unwrap(),
            TurnUrl {
                host: "turn.example.com".into(),
                port: 3478,
                transport: TurnTransport::Udp
            }
        );
        let tcp = parse("turn:10.0.0.1:3479?transport=tcp").unwrap();
        assert_eq!((tcp.port, tcp.transport), (3479, TurnTransport::Tcp));
        let tls = parse("turns:turn.example.com:443?transport=tcp").unwrap();
        assert_eq!((tls.port, tls.transport), (443, TurnTransport::Tls));
        assert_eq!(parse("turns:t.example").unwrap().port, 5349);
        let v6 = parse("turn:[2001:db8::1]:3478").unwrap();
        assert_eq!(v6.host, "2001:db8::1");
        assert_eq!(v6.host_port(), "[2001:db8::1]:3478");
        assert_eq!(tls.to_string(), "turns:turn.example.com:443");
        assert_eq!(tcp.to_string(), "turn:10.0.0.1:3479?transport=tcp");
        for bad in [
            "stun:x",
            "turn:",
            "turn:x:port",
            "turns:x?transport=udp",
            "turn:x?transport=sctp",
            "turn:[::1",
            "turn:user@x",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn stream_frames_are_cut_whole() {
        // A STUN header with 8 bytes of attributes, then ChannelData of 5
        // bytes padded to 8.
        let mut stream = vec![0x01, 0x01, 0, 8];
        stream.extend([0u8; 16 + 8]);
        assert_eq!(next_frame_len(&stream), Ok(Some(28)));
        assert_eq!(next_frame_len(&stream[..27]), Ok(None));
        let channel = [0x40, 0x00, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(next_frame_len(&channel), Ok(Some(12)));
        assert_eq!(next_frame_len(&channel[..11]), Ok(None));
        assert_eq!(
            unpadded_len(&channel),
            9,
            "padding is cut before the TURN client sees it"
        );
        assert_eq!(unpadded_len(&stream[..28]), 28);
        assert!(next_frame_len(&[0x80, 0, 0, 0]).is_err());
        assert_eq!(next_frame_len(&[0, 1]), Ok(None));
    }

    #[test]
    fn an_unanswered_allocation_fails_after_its_timeout() {
        let now = Instant::now();
        let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let local: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        let mut relay = TurnRelay::new(TurnTransport::Udp, local, server, "u", "p", now);
        let first = relay.poll_event();
        assert!(
            matches!(first, Some(RelayEvent::ToServer(ref bytes)) if Message::from_bytes(bytes).is_ok_and(|m| m.method() == ALLOCATE)),
            "the first thing sent is an ALLOCATE request: {first:?}"
        );
        let mut at = now;
        while let Some(next) = relay.poll_timeout() {
            assert!(next >= at, "time never goes back");
            at = next;
            relay.handle_timeout(at);
            if at > now + Duration::from_secs(60) {
                break;
            }
        }
        let failure =
            std::iter::from_fn(|| relay.poll_event()).find(|e| matches!(e, RelayEvent::Failed(_)));
        assert_eq!(
            failure,
            Some(RelayEvent::Failed(
                "allocation failed: no answer within 5s".into()
            ))
        );
        assert!(at <= now + ALLOCATE_TIMEOUT + Duration::from_secs(1));
    }
}
