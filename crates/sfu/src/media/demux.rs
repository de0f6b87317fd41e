//! Demultiplexing one UDP port among all peers, in O(1) per datagram.
//!
//! Once a peer's remote address is known, datagrams from it go to that peer
//! by a hash lookup. Before that, only a STUN request can introduce an
//! address: its USERNAME is `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2),
//! and our ufrag names the peer. Nothing asks every peer in turn. Anything
//! else — unknown sources, bytes that are neither STUN, DTLS nor RTP/RTCP
//! (RFC 7983), truncated or malformed STUN — is dropped and counted.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use str0m::net::Protocol;
use stun_types::attribute::Username;
use stun_types::message::Message;

/// Remote addresses one peer may use at once (its candidate pairs).
pub const MAX_ADDRESSES_PER_PEER: usize = 8;

/// What a datagram is, by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    /// RTP or RTCP (str0m tells them apart).
    Rtp,
    Unknown,
}

pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => Kind::Rtp,
        _ => Kind::Unknown,
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// Not STUN, DTLS or RTP/RTCP.
    NotMedia,
    /// From an address no peer uses, and not a STUN request naming one.
    UnknownSource,
    /// STUN that does not parse, or has no USERNAME.
    BadStun,
    /// The peer already uses as many addresses as allowed.
    TooManyAddresses,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<P> {
    Peer(P),
    Drop(Dropped),
}

/// See the module docs. `P` identifies a peer (its connection id).
#[derive(Debug)]
pub struct Demux<P> {
    by_address: HashMap<(Protocol, SocketAddr), P>,
    by_ufrag: HashMap<String, P>,
    addresses: HashMap<P, Vec<(Protocol, SocketAddr)>>,
    dropped: HashMap<Dropped, u64>,
}

impl<P> Default for Demux<P> {
    fn default() -> Self {
        Self {
            by_address: HashMap::new(),
            by_ufrag: HashMap::new(),
            addresses: HashMap::new(),
            dropped: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq + Hash> Demux<P> {
    /// A peer whose ICE credentials use `local_ufrag` on our side.
    pub fn add_peer(&mut self, local_ufrag: &str, peer: P) {
        self.by_ufrag.insert(local_ufrag.to_owned(), peer);
        self.addresses.entry(peer).or_default();
    }

    /// Forgets the peer, its ufrag and all its addresses.
    pub fn remove_peer(&mut self, peer: P) {
        self.by_ufrag.retain(|_, p| *p != peer);
        for address in self.addresses.remove(&peer).unwrap_or_default() {
            self.by_address.remove(&address);
        }
    }

    /// Datagrams dropped so far, by reason.
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }

    /// Over TCP, `from` is the connection's remote address, so one peer's
    /// UDP and TCP paths never share an entry.
    pub fn route(&mut self, proto: Protocol, from: SocketAddr, datagram: &[u8]) -> Route<P> {
        let route = self.decide((proto, from), datagram);
        if let Route::Drop(reason) = route {
            *self.dropped.entry(reason).or_default() += 1;
        }
        route
    }

    fn decide(&mut self, from: (Protocol, SocketAddr), datagram: &[u8]) -> Route<P> {
        let kind = classify(datagram);
        if kind == Kind::Unknown {
            return Route::Drop(Dropped::NotMedia);
        }
        if let Some(peer) = self.by_address.get(&from) {
            return Route::Peer(*peer);
        }
        if kind != Kind::Stun {
            return Route::Drop(Dropped::UnknownSource);
        }
        let Some(local_ufrag) = stun_local_ufrag(datagram) else {
            return Route::Drop(Dropped::BadStun);
        };
        let Some(&peer) = self.by_ufrag.get(&local_ufrag) else {
            return Route::Drop(Dropped::UnknownSource);
        };
        // The peer's ICE agent checks the message integrity; binding the
        // address here only decides who gets to check it.
        let addresses = self.addresses.entry(peer).or_default();
        if addresses.len() >= MAX_ADDRESSES_PER_PEER {
            return Route::Drop(Dropped::TooManyAddresses);
        }
        addresses.push(from);
        self.by_address.insert(from, peer);
        Route::Peer(peer)
    }
}

/// Our ufrag from a STUN request's USERNAME (`ours:theirs`).
fn stun_local_ufrag(datagram: &[u8]) -> Option<String> {
    let message = Message::from_bytes(datagram).ok()?;
    let username = message.attribute::<Username>().ok()?;
    let (ours, _theirs) = username.username().split_once(':')?;
    Some(ours.to_owned())
}

#[cfg(test)]
mod tests {
    use stun_types::message::{BINDING, MessageWrite, MessageWriteVec};
    use stun_types::prelude::*;

    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut message = Message::builder_request(BINDING, MessageWriteVec::new());
        message
            .add_attribute(&Username::new(username).unwrap())
            .unwrap();
        message.finish()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    const RTP: [u8; 12] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];

    #[test]
    fn first_byte_classification() {
        assert_eq!(classify(&binding_request("a:b")), Kind::Stun);
        assert_eq!(classify(&[22, 254, 253]), Kind::Dtls);
        assert_eq!(classify(&RTP), Kind::Rtp);
        assert_eq!(
            classify(&[0x80, 200, 0, 6]),
            Kind::Rtp,
            "RTCP sender report"
        );
        assert_eq!(classify(&[200, 0]), Kind::Unknown, "not RTP version 2");
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&[64]), Kind::Unknown);
    }

    #[test]
    fn a_stun_request_binds_the_address_then_everything_from_it_routes() {
        let mut demux = Demux::default();
        demux.add_peer("sfuA", 1u64);
        demux.add_peer("sfuB", 2u64);
        assert_eq!(
            demux.route(Protocol::Udp, addr(5000), &RTP),
            Route::Drop(Dropped::UnknownSource)
        );
        assert_eq!(
            demux.route(Protocol::Udp, addr(5000), &binding_request("sfuB:cli")),
            Route::Peer(2)
        );
        assert_eq!(demux.route(Protocol::Udp, addr(5000), &RTP), Route::Peer(2));
        assert_eq!(
            demux.route(Protocol::Udp, addr(5000), &[22, 254, 253, 0]),
            Route::Peer(2)
        );
        assert_eq!(
            demux.route(Protocol::Udp, addr(6000), &binding_request("sfuA:x")),
            Route::Peer(1)
        );
        assert_eq!(
            demux.route(Protocol::Udp, addr(7000), &binding_request("nobody:x")),
            Route::Drop(Dropped::UnknownSource)
        );
        assert_eq!(demux.dropped(Dropped::UnknownSource), 2);
    }

    #[test]
    fn garbage_is_dropped_and_counted_even_from_known_addresses() {
        let mut demux = Demux::default();
        demux.add_peer("sfuA", 1u64);
        demux.route(Protocol::Udp, addr(5000), &binding_request("sfuA:cli"));
        assert_eq!(
            demux.route(Protocol::Udp, addr(5000), &[64, 1, 2, 3]),
            Route::Drop(Dropped::NotMedia)
        );
        let mut truncated = binding_request("sfuA:cli");
        truncated.truncate(10);
        assert_eq!(
            demux.route(Protocol::Udp, addr(5001), &truncated),
            Route::Drop(Dropped::BadStun)
        );
        let no_username = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        assert_eq!(
            demux.route(Protocol::Udp, addr(5001), &no_username),
            Route::Drop(Dropped::BadStun)
        );
        assert_eq!(
            demux.route(Protocol::Udp, addr(5001), &binding_request("no-colon")),
            Route::Drop(Dropped::BadStun)
        );
        for len in 0..40 {
            let noise: Vec<u8> = (0..len).map(|i| (i * 37 + 3) as u8).collect();
            let _ = demux.route(Protocol::Udp, addr(9999), &noise);
        }
        assert_eq!(
            demux.route(Protocol::Udp, addr(5000), &RTP),
            Route::Peer(1),
            "the call goes on"
        );
    }

    #[test]
    fn addresses_per_peer_are_capped_and_removal_forgets_everything() {
        let mut demux = Demux::default();
        demux.add_peer("sfuA", 1u64);
        for port in 0..MAX_ADDRESSES_PER_PEER as u16 {
            assert_eq!(
                demux.route(Protocol::Udp, addr(port), &binding_request("sfuA:c")),
                Route::Peer(1)
            );
        }
        assert_eq!(
            demux.route(Protocol::Udp, addr(100), &binding_request("sfuA:c")),
            Route::Drop(Dropped::TooManyAddresses)
        );
        demux.remove_peer(1);
        assert_eq!(
            demux.route(Protocol::Udp, addr(0), &RTP),
            Route::Drop(Dropped::UnknownSource)
        );
        assert_eq!(
            demux.route(Protocol::Udp, addr(0), &binding_request("sfuA:c")),
            Route::Drop(Dropped::UnknownSource)
        );
    }

    #[test]
    fn a_tcp_connection_is_bound_apart_from_udp_on_the_same_address() {
        let mut demux = Demux::default();
        demux.add_peer("sfuA", 1u64);
        demux.add_peer("sfuB", 2u64);
        demux.route(Protocol::Udp, addr(5000), &binding_request("sfuA:c"));
        assert_eq!(
            demux.route(Protocol::Tcp, addr(5000), &RTP),
            Route::Drop(Dropped::UnknownSource),
            "a UDP binding does not admit TCP from the same address"
        );
        assert_eq!(
            demux.route(Protocol::Tcp, addr(5000), &binding_request("sfuB:c")),
            Route::Peer(2)
        );
        assert_eq!(demux.route(Protocol::Udp, addr(5000), &RTP), Route::Peer(1));
        assert_eq!(demux.route(Protocol::Tcp, addr(5000), &RTP), Route::Peer(2));
    }
}
