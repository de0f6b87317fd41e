//! Server-reflexive candidate discovery, sans-IO: one STUN binding request
//! per (socket, STUN server) pair of the same address family, retransmitted a
//! few times, answered by the address the server saw (XOR-MAPPED-ADDRESS).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::XorMappedAddress;
use stun_types::message::{BINDING, Message, MessageClass, MessageWriteVec, TransactionId};
use stun_types::prelude::*;

/// When each attempt is sent, after the first.
const RETRANSMITS: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(750)];

#[derive(Debug)]
struct Probe {
    base: SocketAddr,
    server: SocketAddr,
    transaction: TransactionId,
    attempts: usize,
    next_send: Option<Instant>,
}

/// A reflexive address found for one of our sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reflexive {
    pub mapped: SocketAddr,
    pub base: SocketAddr,
}

#[derive(Debug, Default)]
pub struct StunDiscovery {
    probes: Vec<Probe>,
}

/// `host:port` of a `stun:` URL (RFC 7064); the port defaults to 3478.
pub fn stun_host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("stun:")?;
    let rest = rest.split('?').next()?;
    if rest.is_empty() {
        return None;
    }
    let has_port = match rest.rfind(']') {
        Some(bracket) => rest[bracket..].contains(':'),
        None => rest.matches(':').count() == 1,
    };
    Some(if has_port {
        rest.to_owned()
    } else {
        format!("{rest}:3478")
    })
}

impl StunDiscovery {
    pub fn new(bases: &[SocketAddr], servers: &[SocketAddr], now: Instant) -> Self {
        let probes = bases
            .iter()
            .flat_map(|base| servers.iter().map(move |server| (*base, *server)))
            .filter(|(base, server)| base.is_ipv4() == server.is_ipv4())
            .filter(|(base, server)| !base.ip().is_loopback() || server.ip().is_loopback())
            .map(|(base, server)| Probe {
                base,
                server,
                transaction: TransactionId::generate(),
                attempts: 0,
                next_send: Some(now),
            })
            .collect();
        Self { probes }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes.iter().filter_map(|p| p.next_send).min()
    }

    /// The next request due: (from socket, to server, bytes).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let probe = self
            .probes
            .iter_mut()
            .find(|p| p.next_send.is_some_and(|t| t <= now))?;
        probe.next_send = RETRANSMITS.get(probe.attempts).map(|delay| now + *delay);
        probe.attempts += 1;
        let request = Message::builder(
            stun_types::message::MessageType::from_class_method(MessageClass::Request, BINDING),
            probe.transaction,
            MessageWriteVec::new(),
        );
        Some((probe.base, probe.server, request.finish()))
    }

    /// Whether a datagram from `source` is for us (a STUN server's answer).
    pub fn expects(&self, source: SocketAddr) -> bool {
        self.probes.iter().any(|p| p.server == source)
    }

    /// A datagram from a STUN server to `base`; returns what it revealed.
    pub fn handle_response(
        &mut self,
        source: SocketAddr,
        base: SocketAddr,
        data: &[u8],
    ) -> Option<Reflexive> {
        let message = Message::from_bytes(data).ok()?;
        let index = self.probes.iter().position(|p| {
            p.server == source && p.base == base && p.transaction == message.transaction_id()
        })?;
        if !message.has_class(MessageClass::Success) {
            self.probes.remove(index);
            return None;
        }
        let mapped = message
            .attribute::<XorMappedAddress>()
            .ok()?
            .addr(message.transaction_id());
        self.probes.remove(index);
        Some(Reflexive { mapped, base })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            stun_host_port("stun:stun.example.com").as_deref(),
            Some("stun.example.com:3478")
        );
        assert_eq!(
            stun_host_port("stun:1.2.3.4:19302").as_deref(),
            Some("1.2.3.4:19302")
        );
        assert_eq!(
            stun_host_port("stun:[2001:db8::1]").as_deref(),
            Some("[2001:db8::1]:3478")
        );
        assert_eq!(stun_host_port("turn:x:3478"), None);
        assert_eq!(stun_host_port("stun:"), None);
    }

    #[test]
    fn a_binding_answer_reveals_the_mapped_address() {
        let now = Instant::now();
        let base: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let server: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::2]:5000".parse().unwrap();
        let mut discovery = StunDiscovery::new(&[base, v6], &[server], now);
        let (from, to, request) = discovery.poll_transmit(now).unwrap();
        assert_eq!((from, to), (base, server));
        assert!(
            discovery.poll_transmit(now).is_none(),
            "no IPv6 → IPv4 probe"
        );

        let request = Message::from_bytes(&request).unwrap();
        let mapped: SocketAddr = "203.0.113.7:61000".parse().unwrap();
        let mut answer = Message::builder_success(&request, MessageWriteVec::new());
        answer
            .add_attribute(&XorMappedAddress::new(mapped, request.transaction_id()))
            .unwrap();
        let answer = answer.finish();
        assert!(discovery.expects(server));
        assert_eq!(
            discovery.handle_response(server, base, &answer),
            Some(Reflexive { mapped, base })
        );
        assert!(discovery.poll_timeout().is_none(), "done");
    }

    #[test]
    fn unanswered_requests_are_retried_then_abandoned() {
        let now = Instant::now();
        let base: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let server: SocketAddr = "198.51.100.1:3478".parse().unwrap();
        let mut discovery = StunDiscovery::new(&[base], &[server], now);
        let mut sent = 0;
        let mut t = now;
        while let Some(at) = discovery.poll_timeout() {
            t = t.max(at);
            while discovery.poll_transmit(t).is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, 3);
        assert!(
            discovery
                .handle_response(server, base, &[0u8; 20])
                .is_none(),
            "garbage is ignored"
        );
    }
}
