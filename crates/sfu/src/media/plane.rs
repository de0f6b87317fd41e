//! The SFU's media plane, sans-IO: one ICE-lite str0m session per
//! participant, all on one UDP port, with RTP-level forwarding between them.
//!
//! Datagrams go in through [`MediaPlane::handle_datagram`], time through
//! [`MediaPlane::handle_timeout`]; datagrams to send and signaling messages
//! come out of [`MediaPlane::poll_output`]. Every str0m call runs under a
//! guard, so an error or panic in one peer drops that peer only.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_proto::{
    ErrorBody, ErrorCode, IceCandidate, ServerMessage, SpeakerLevel, TrackInfo, TrackKind,
};
use parley_proto::{codecs, limits};
use str0m::bwe::{Bitrate, BweKind};
use str0m::media::KeyframeRequestKind;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

use super::demux::{Demux, Dropped, Route};
use super::h264;
use super::peer::{AnswerError, Forwarded, Peer, PeerId, Published, Subscription, TrackKey};
use crate::forward::layer::{self, Layer, Request};
use crate::forward::rewrite::Replay;
use crate::forward::speakers::SpeakerDetector;
use crate::metrics::{DropLabels, Metrics};

/// How often layers, dynacast, speakers and timeouts are re-evaluated.
const TICK: Duration = Duration::from_millis(100);
/// Ticks brought forward by subscription updates come at most this often.
const EARLY_TICK_GAP: Duration = Duration::from_millis(20);
/// At most one keyframe request per layer this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// A layer with no packet for this long is not offered to subscribers.
const LAYER_STALE_AFTER: Duration = Duration::from_secs(1);
/// How long a connected peer may stay without ICE consent before it is dropped.
const DISCONNECTED_GRACE: Duration = Duration::from_secs(8);
/// Bandwidth kept for each audio track before video shares the estimate.
const AUDIO_RESERVE_BPS: u64 = 64_000;
/// What a layer is assumed to cost before it has been measured, lowest first.
const NOMINAL_LAYER_BPS: [u64; 3] = [160_000, 450_000, 1_700_000];

/// Settings of the media plane.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Host candidates handed to every peer (the UDP socket's addresses as
    /// clients should reach them).
    pub candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP candidates (RFC 6544), for clients that cannot use UDP.
    pub tcp_candidates: Vec<SocketAddr>,
    /// A peer that has not connected this long after its first offer is dropped.
    pub connect_timeout: Duration,
    /// Egress bandwidth assumed towards a new peer before TWCC has measured it.
    pub initial_estimate_bps: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            tcp_candidates: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            initial_estimate_bps: 2_500_000,
        }
    }
}

/// Something for the driver or the signaling core to do.
#[derive(Debug)]
pub enum MediaOutput {
    Transmit {
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
    /// A signaling message for one participant.
    Signal {
        room: String,
        participant: String,
        msg: ServerMessage,
    },
    /// A signaling message for everyone in a room.
    RoomSignal { room: String, msg: ServerMessage },
    /// The participant's media session failed and was removed.
    Failed {
        room: String,
        participant: String,
        reason: String,
    },
}

#[derive(Debug, Default)]
struct RoomMedia {
    peers: Vec<PeerId>,
    speakers: SpeakerDetector,
}

/// See the module docs.
#[derive(Debug)]
pub struct MediaPlane {
    config: MediaConfig,
    next_peer: u64,
    next_track: u64,
    peers: HashMap<PeerId, Peer>,
    participants: HashMap<(String, String), PeerId>,
    /// Who publishes each track.
    tracks: HashMap<TrackKey, PeerId>,
    rooms: HashMap<String, RoomMedia>,
    demux: Demux<PeerId>,
    outputs: VecDeque<MediaOutput>,
    dirty: Vec<PeerId>,
    next_tick: Option<Instant>,
    metrics: Metrics,
    events: Vec<Event>,
    last_tick: Option<Instant>,
    /// The latest time any input brought, for work that follows from calls
    /// without a time of their own (a participant removed by signaling).
    now: Instant,
}

/// Runs one str0m call; an error or a panic becomes the reason to drop the peer.
fn guarded<T>(call: impl FnOnce() -> Result<T, RtcError>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the media session panicked".to_owned()),
    }
}

impl MediaPlane {
    pub fn new(config: MediaConfig, metrics: Metrics, now: Instant) -> Self {
        Self {
            config,
            next_peer: 1,
            next_track: 1,
            peers: HashMap::new(),
            participants: HashMap::new(),
            tracks: HashMap::new(),
            rooms: HashMap::new(),
            demux: Demux::default(),
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            next_tick: None,
            metrics,
            now,
            events: Vec::new(),
            last_tick: None,
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn has_peer(&self, room: &str, participant: &str) -> bool {
        self.peer_id(room, participant).is_some()
    }

    pub fn poll_output(&mut self) -> Option<MediaOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.peers.values().map(|p| p.next_timeout).min();
        match (peers, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn peer_id(&self, room: &str, participant: &str) -> Option<PeerId> {
        self.participants
            .get(&(room.to_owned(), participant.to_owned()))
            .copied()
    }

    /// Starts a media session for a participant who just joined, offering it
    /// every track already published in the room.
    pub fn add_peer(&mut self, room: &str, participant: &str, can_subscribe: bool, now: Instant) {
        self.now = self.now.max(now);
        if self.peer_id(room, participant).is_some() {
            return;
        }
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_bwe(Some(Bitrate::bps(self.config.initial_estimate_bps)))
            .set_stats_interval(Some(Duration::from_secs(1)));
        config.codec_config().add_h264(
            codecs::H264_PT.into(),
            Some(codecs::H264_RTX_PT.into()),
            true,
            codecs::H264_PROFILE_LEVEL_ID,
        );
        let mut rtc = config.build(now);
        for address in &self.config.candidates {
            match Candidate::host(*address, "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(e) => tracing::warn!(%address, "unusable media address: {e}"),
            }
        }
        for address in &self.config.tcp_candidates {
            let candidate = Candidate::builder()
                .tcp()
                .host(*address)
                .tcptype(TcpType::Passive)
                .build();
            match candidate {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(e) => tracing::warn!(%address, "unusable ICE-TCP address: {e}"),
            }
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.demux.add_peer(&ufrag, id);
        let mut peer = Peer::new(
            room.to_owned(),
            participant.to_owned(),
            rtc,
            now,
            self.config.initial_estimate_bps,
        );
        peer.can_subscribe = can_subscribe;
        let room_media = self.rooms.entry(room.to_owned()).or_default();
        for other in room_media.peers.iter().filter(|_| can_subscribe) {
            let Some(publisher) = self.peers.get_mut(other) else {
                continue;
            };
            for (key, track) in &mut publisher.published {
                peer.subscriptions.insert(
                    *key,
                    Subscription::new(publisher.participant.clone(), &track.info),
                );
                peer.queue_subscribe(*key);
                track.subscribers.push(id);
            }
        }
        room_media.peers.push(id);
        self.peers.insert(id, peer);
        self.metrics.media_sessions.set(self.peers.len() as i64);
        self.participants
            .insert((room.to_owned(), participant.to_owned()), id);
        self.next_tick.get_or_insert(now + TICK);
        tracing::info!(room, participant, "media session started");
        self.renegotiate(id);
        self.drain(id, now);
    }

    /// Ends a participant's media session (it left, or was removed).
    pub fn remove_peer(&mut self, room: &str, participant: &str) {
        if let Some(id) = self.peer_id(room, participant) {
            self.drop_peer(id);
        }
    }

    /// Ends every media session (the server is shutting down).
    pub fn remove_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.drop_peer(id);
        }
        self.outputs.clear();
    }

    /// After a signaling resume: resends the offer still waiting for an answer
    /// and which layers to send, since either may have been lost with the connection.
    pub fn resend_state(&mut self, room: &str, participant: &str) {
        let Some(id) = self.peer_id(room, participant) else {
            return;
        };
        let peer = &self.peers[&id];
        let mut messages: Vec<ServerMessage> =
            peer.outstanding_offer().cloned().into_iter().collect();
        messages.extend(
            peer.published
                .values()
                .filter(|t| t.info.kind == TrackKind::Video && !t.info.layers.is_empty())
                .map(|t| ServerMessage::PublishLayers {
                    track_id: t.info.id.clone(),
                    active: t.active_rids(),
                }),
        );
        for msg in messages {
            self.signal(id, msg);
        }
    }

    /// A publisher muted or unmuted a track (a muted microphone is no speaker).
    pub fn set_muted(&mut self, room: &str, participant: &str, track_id: &str, muted: bool) {
        let Some(id) = self.peer_id(room, participant) else {
            return;
        };
        if let Some(track) = self
            .peers
            .get_mut(&id)
            .and_then(|p| p.published.values_mut().find(|t| t.info.id == track_id))
        {
            track.info.muted = muted;
        }
    }

    /// A participant with a media session published a track: receive it and
    /// offer it to everyone else in the room.
    pub fn publish(&mut self, room: &str, participant: &str, track: &TrackInfo, now: Instant) {
        self.now = self.now.max(now);
        let Some(id) = self.peer_id(room, participant) else {
            return;
        };
        let key = TrackKey(self.next_track);
        self.next_track += 1;
        let others: Vec<PeerId> = self.rooms[room]
            .peers
            .iter()
            .copied()
            .filter(|p| *p != id && self.peers[p].can_subscribe)
            .collect();
        let mut published = Published::new(track.clone());
        published.subscribers.clone_from(&others);
        let publisher = self.peers.get_mut(&id).expect("peer of a participant");
        publisher.published.insert(key, published);
        publisher.queue_publish(key);
        self.tracks.insert(key, id);
        for other in others {
            let subscriber = self.peers.get_mut(&other).expect("peer in room");
            subscriber
                .subscriptions
                .insert(key, Subscription::new(participant.to_owned(), track));
            subscriber.queue_subscribe(key);
            self.renegotiate(other);
            self.mark_dirty(other);
        }
        self.renegotiate(id);
        self.mark_dirty(id);
        self.drain_dirty(now);
    }

    /// A published track was withdrawn: stop its m-lines everywhere.
    pub fn unpublish(&mut self, room: &str, participant: &str, track_id: &str, now: Instant) {
        self.now = self.now.max(now);
        let Some(id) = self.peer_id(room, participant) else {
            return;
        };
        let publisher = self.peers.get_mut(&id).expect("peer of a participant");
        let Some(key) = publisher.published_key(track_id) else {
            return;
        };
        self.withdraw_track(id, key);
        self.drain_dirty(now);
    }

    fn withdraw_track(&mut self, owner: PeerId, key: TrackKey) {
        self.tracks.remove(&key);
        let Some(publisher) = self.peers.get_mut(&owner) else {
            return;
        };
        let Some(track) = publisher.published.remove(&key) else {
            return;
        };
        publisher.sources.retain(|_, s| s.key != key);
        if let Some(mid) = track.mid {
            publisher.published_mids.remove(&mid);
            publisher.queue_stop(mid);
            self.renegotiate(owner);
            self.mark_dirty(owner);
        }
        self.stop_subscriptions(key, &track.subscribers);
    }

    /// Stops the m-line of a withdrawn track at each of its subscribers.
    fn stop_subscriptions(&mut self, key: TrackKey, subscribers: &[PeerId]) {
        for &subscriber in subscribers {
            let Some(peer) = self.peers.get_mut(&subscriber) else {
                continue;
            };
            if let Some(sub) = peer.subscriptions.remove(&key)
                && let Some(mid) = sub.mid
            {
                peer.subscription_mids.remove(&mid);
                peer.queue_stop(mid);
                self.renegotiate(subscriber);
                self.mark_dirty(subscriber);
            }
        }
    }

    /// How a subscriber wants one remote track (its tile size, or paused).
    pub fn set_preference(
        &mut self,
        room: &str,
        participant: &str,
        publisher: &str,
        track_id: &str,
        request: Request,
        now: Instant,
    ) {
        self.now = self.now.max(now);
        let (Some(id), Some(owner)) = (
            self.peer_id(room, participant),
            self.peer_id(room, publisher),
        ) else {
            return;
        };
        let Some(key) = self.peers[&owner].published_key(track_id) else {
            return;
        };
        if let Some(sub) = self
            .peers
            .get_mut(&id)
            .and_then(|p| p.subscriptions.get_mut(&key))
        {
            tracing::debug!(
                participant,
                publisher,
                track_id,
                ?request,
                "subscription preference"
            );
            sub.request = request;
        }
        self.tick_soon(now);
    }

    /// The client's answer to our last offer.
    pub fn answer(
        &mut self,
        room: &str,
        participant: &str,
        sdp: &str,
        now: Instant,
    ) -> Result<(), ErrorBody> {
        self.now = self.now.max(now);
        let Some(id) = self.peer_id(room, participant) else {
            return Err(no_session());
        };
        let peer = self.peers.get_mut(&id).expect("peer of a participant");
        let Ok(outcome) = catch_unwind(AssertUnwindSafe(|| peer.accept_answer(sdp))) else {
            self.fail_peer(id, "the media session panicked on an answer".into());
            return Err(ErrorBody::new(ErrorCode::InvalidSdp, "answer not usable"));
        };
        match outcome {
            Ok(()) => {}
            Err(AnswerError::Malformed(malformed)) => return Err(malformed),
            Err(AnswerError::Rejected(rejected)) => {
                self.fail_peer(id, rejected.message.clone());
                return Err(rejected);
            }
        }
        self.renegotiate(id);
        self.mark_dirty(id);
        self.drain_dirty(now);
        Ok(())
    }

    /// A trickled candidate from the client: checked, then dropped. An
    /// ICE-lite server learns the client's addresses from its connectivity
    /// checks, and keeping trickled candidates would only let a client grow
    /// the session's candidate pairs.
    pub fn remote_candidate(
        &mut self,
        room: &str,
        participant: &str,
        candidate: &IceCandidate,
    ) -> Result<(), ErrorBody> {
        if self.peer_id(room, participant).is_none() {
            return Err(no_session());
        }
        if candidate.candidate.is_empty() {
            return Ok(());
        }
        Candidate::from_sdp_string(&candidate.candidate)
            .map_err(|e| ErrorBody::new(ErrorCode::InvalidSdp, format!("ICE candidate: {e}")))?;
        Ok(())
    }

    /// One datagram from the media port (over TCP: one RFC 4571 frame).
    pub fn handle_datagram(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        self.now = self.now.max(now);
        let id = match self.demux.route(proto, source, data) {
            Route::Peer(id) => id,
            Route::Drop(reason) => {
                self.count_drop(match reason {
                    Dropped::NotMedia => "not_media",
                    Dropped::UnknownSource => "unknown_source",
                    Dropped::BadStun => "bad_stun",
                    Dropped::TooManyAddresses => "too_many_addresses",
                });
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            self.count_drop("rejected");
            return;
        };
        let input = Input::Receive(now, receive);
        if !peer.rtc.accepts(&input) {
            self.count_drop("rejected");
            return;
        }
        if let Err(reason) = guarded(|| peer.rtc.handle_input(input)) {
            self.fail_peer(id, reason);
            return;
        }
        self.drain(id, now);
        self.drain_dirty(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if let Err(reason) = guarded(|| peer.rtc.handle_input(Input::Timeout(now))) {
                self.fail_peer(id, reason);
                continue;
            }
            self.drain(id, now);
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.last_tick = Some(now);
            self.tick(now);
            self.next_tick = (!self.peers.is_empty()).then(|| now + TICK);
        }
        self.drain_dirty(now);
    }

    /// Brings the next tick forward (a resized tile should be served
    /// quickly), but not closer than `EARLY_TICK_GAP` after the last one, so
    /// a stream of subscription updates cannot make every message a full pass.
    fn tick_soon(&mut self, now: Instant) {
        let earliest = self
            .last_tick
            .map_or(now, |last| (last + EARLY_TICK_GAP).max(now));
        self.next_tick = Some(self.next_tick.map_or(earliest, |t| t.min(earliest)));
    }

    fn count_drop(&self, reason: &'static str) {
        self.metrics
            .media_datagrams_dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    fn mark_dirty(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(id);
        }
    }

    fn drain_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.dirty = false;
                // Written packets and requests leave on str0m's next timeout
                // handling: give it one now, not a loop iteration later.
                if let Err(reason) = guarded(|| peer.rtc.handle_input(Input::Timeout(now))) {
                    self.fail_peer(id, reason);
                    continue;
                }
                self.drain(id, now);
            }
        }
    }

    /// Polls one peer until str0m has nothing more to say, then handles its events.
    fn drain(&mut self, id: PeerId, now: Instant) {
        // Reused from drain to drain: this runs for every datagram.
        let mut events = std::mem::take(&mut self.events);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let failure = loop {
            match guarded(|| peer.rtc.poll_output()) {
                Ok(Output::Transmit(t)) => self.outputs.push_back(MediaOutput::Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    data: t.contents.into(),
                }),
                Ok(Output::Timeout(at)) => {
                    peer.next_timeout = at;
                    break None;
                }
                Ok(Output::Event(event)) => events.push(event),
                Err(reason) => break Some(reason),
            }
        };
        if let Some(reason) = failure {
            self.fail_peer(id, reason);
            return;
        }
        for event in events.drain(..) {
            self.handle_event(id, event, now);
        }
        self.events = events;
    }

    fn handle_event(&mut self, id: PeerId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, &packet, now),
            Event::Connected => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.connected = true;
                    tracing::info!(
                        room = peer.room,
                        participant = peer.participant,
                        "media connected"
                    );
                }
            }
            Event::IceConnectionStateChange(state) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.disconnected_since = match state {
                        IceConnectionState::Disconnected => Some(now),
                        _ => None,
                    };
                }
            }
            Event::KeyframeRequest(request) => {
                let forwarded = self.peers.get(&id).and_then(|peer| {
                    let key = *peer.subscription_mids.get(&request.mid)?;
                    let ssrc = peer.subscriptions.get(&key)?.rewriter.forwarding()?;
                    Some((key, ssrc))
                });
                if let Some((key, ssrc)) = forwarded {
                    self.request_keyframe_by_ssrc(key, ssrc, now);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe,
            }) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    tracing::trace!(participant = peer.participant, %estimate, can_probe, "estimate");
                    peer.estimate_bps = estimate.as_u64();
                }
            }
            _ => {}
        }
    }

    /// Sends one received packet on to every subscriber of its track.
    fn forward(&mut self, publisher_id: PeerId, packet: &RtpPacket, now: Instant) {
        self.metrics.media_packets_received.inc();
        let ssrc = packet.header.ssrc;
        let Some(publisher) = self.peers.get_mut(&publisher_id) else {
            return;
        };
        let Some(source) = publisher.resolve_source(ssrc) else {
            return;
        };
        let Some(track) = publisher.published.get_mut(&source.key) else {
            return;
        };
        let kind = track.info.kind;
        let mut ext_vals = ExtensionValues::default();
        if kind == TrackKind::Audio {
            ext_vals.audio_level = packet.header.ext_vals.audio_level;
            ext_vals.voice_activity = packet.header.ext_vals.voice_activity;
        }
        let forwarded = Forwarded {
            ssrc: *ssrc,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            pt: packet.header.payload_type,
            payload: Arc::clone(&packet.payload),
            ext_vals,
            kind,
            switch_point: match kind {
                TrackKind::Audio => true,
                TrackKind::Video => h264::is_keyframe_start(&packet.payload),
            },
        };
        let layer = &mut track.layers[source.layer];
        layer.ssrc = Some(ssrc);
        layer
            .rate
            .record(packet.payload.len() + packet.header.header_len, now);
        let first_packet = layer.last_packet.is_none();
        layer.last_packet = Some(now);
        if kind == TrackKind::Video {
            layer.remember(forwarded.clone());
        }
        let subscribers = std::mem::take(&mut track.subscribers);
        if kind == TrackKind::Audio
            && let Some(level) = packet.header.ext_vals.audio_level
            && !track.info.muted
            && let Some(room) = self.rooms.get_mut(&publisher.room)
        {
            room.speakers
                .record(&publisher.participant, level.unsigned_abs().min(127), now);
        }

        let mut replays = Vec::new();
        for subscriber_id in &subscribers {
            if let Some(replay) = self.send_to(*subscriber_id, source.key, &forwarded, now) {
                replays.push((*subscriber_id, replay));
            }
        }
        if let Some(track) = self
            .peers
            .get_mut(&publisher_id)
            .and_then(|p| p.published.get_mut(&source.key))
        {
            track.subscribers = subscribers;
        }
        for (subscriber_id, replay) in replays {
            self.replay(publisher_id, subscriber_id, source.key, replay, now);
        }
        if first_packet && kind == TrackKind::Video {
            // A new layer showed up: place subscribers now rather than at the next tick.
            self.tick_soon(now);
        }
    }

    /// Rewrites one packet for one subscriber and queues it there; returns
    /// the packets to pass through again when a layer switch asks for it.
    fn send_to(
        &mut self,
        subscriber_id: PeerId,
        key: TrackKey,
        packet: &Forwarded,
        now: Instant,
    ) -> Option<Replay> {
        // Nothing is queued for a session that cannot send yet: it would
        // pile up and leave as a burst of stale media on connect.
        let subscriber = self.peers.get_mut(&subscriber_id).filter(|s| s.connected)?;
        let sub = subscriber.subscriptions.get_mut(&key)?;
        let mid = sub.mid.filter(|_| sub.negotiated)?;
        if packet.kind == TrackKind::Audio && sub.rewriter.target() != Some(packet.ssrc) {
            sub.rewriter.switch_to(packet.ssrc);
        }
        let before = sub.rewriter.forwarding();
        let rewritten = sub.rewriter.rewrite(
            packet.ssrc,
            packet.seq,
            packet.timestamp,
            (packet.marker, packet.switch_point),
            now,
        );
        if packet.kind == TrackKind::Video && sub.rewriter.forwarding() != before {
            tracing::debug!(
                participant = subscriber.participant,
                track = sub.track_id,
                ssrc = packet.ssrc,
                "switched layer"
            );
        }
        let replay = sub.rewriter.take_replay();
        let out = rewritten?;
        let seq = sub.extend_seq(out.seq);
        sub.forwarded_packets += 1;
        let mut api = subscriber.rtc.direct_api();
        // str0m finds a stream by mid with a scan of every stream: look it up
        // once, then by SSRC (a hash lookup) for every packet after.
        let tx_ssrc = match sub.tx_ssrc {
            Some(ssrc) => ssrc,
            None => {
                let stream = api.stream_tx_by_mid(mid, None)?;
                // Forwarded media leaves at once: the bandwidth estimate
                // already limits which layer is sent, and pacing at 1.1 × an
                // estimate measured while little was sent would hold a
                // keyframe back for most of a second.
                stream.set_unpaced(true);
                *sub.tx_ssrc.insert(stream.ssrc())
            }
        };
        let stream = api.stream_tx(&tx_ssrc)?;
        stream.write_rtp(
            RtpWrite::new(
                packet.pt,
                seq.into(),
                out.timestamp,
                now,
                Arc::clone(&packet.payload),
            )
            .marker(packet.marker)
            .nackable(packet.kind == TrackKind::Video)
            .ext_vals(packet.ext_vals.clone()),
        );
        self.metrics.media_packets_forwarded.inc();
        self.metrics
            .media_bytes_forwarded
            .inc_by(packet.payload.len() as u64);
        if !subscriber.dirty {
            subscriber.dirty = true;
            self.dirty.push(subscriber_id);
        }
        replay
    }

    /// Passes a layer's remembered packets through a subscriber's rewriter
    /// again after a switch (packets that overtook the keyframe, or the
    /// keyframe itself when the switch waited for the old frame to end).
    fn replay(
        &mut self,
        publisher_id: PeerId,
        subscriber_id: PeerId,
        key: TrackKey,
        replay: Replay,
        now: Instant,
    ) {
        let Some(track) = self
            .peers
            .get(&publisher_id)
            .and_then(|p| p.published.get(&key))
        else {
            return;
        };
        let Some(layer) = track
            .layers
            .iter()
            .find(|l| l.ssrc.is_some_and(|s| *s == replay.ssrc))
        else {
            return;
        };
        let packets = layer.since(replay.from_seq, replay.inclusive);
        for packet in &packets {
            // A replay never asks for another: these are all the packets there are.
            let _ = self.send_to(subscriber_id, key, packet, now);
        }
    }

    fn request_keyframe_by_ssrc(&mut self, key: TrackKey, ssrc: u32, now: Instant) {
        let Some(owner) = self.tracks.get(&key).copied() else {
            return;
        };
        let layer = self.peers.get(&owner).and_then(|p| {
            p.published
                .get(&key)?
                .layers
                .iter()
                .position(|l| l.ssrc.is_some_and(|s| *s == ssrc))
        });
        if let Some(layer) = layer {
            self.request_keyframe(key, layer, now);
        }
    }

    /// Asks the publisher for a keyframe on one layer, at most once per interval.
    fn request_keyframe(&mut self, key: TrackKey, layer: usize, now: Instant) {
        let Some(owner) = self.tracks.get(&key).copied() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&owner) else {
            return;
        };
        let Some(state) = peer
            .published
            .get_mut(&key)
            .and_then(|t| t.layers.get_mut(layer))
        else {
            return;
        };
        let Some(ssrc) = state.ssrc else {
            return;
        };
        if state
            .last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        state.last_keyframe_request = Some(now);
        tracing::debug!(publisher = peer.participant, layer, "keyframe requested");
        let mut api = peer.rtc.direct_api();
        if let Some(stream) = api.stream_rx(&ssrc) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
            self.metrics.media_keyframe_requests.inc();
            self.mark_dirty(owner);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.expire_peers(now);
        self.select_layers(now);
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let Some(media) = self.rooms.get_mut(&room) else {
                continue;
            };
            if let Some(speakers) = media.speakers.poll(now) {
                let speakers = speakers
                    .into_iter()
                    .map(|s| SpeakerLevel {
                        participant_id: s.participant,
                        level: s.level,
                    })
                    .collect();
                self.outputs.push_back(MediaOutput::RoomSignal {
                    room,
                    msg: ServerMessage::ActiveSpeakers { speakers },
                });
            }
        }
    }

    fn expire_peers(&mut self, now: Instant) {
        let timeout = self.config.connect_timeout;
        let expired: Vec<(PeerId, &'static str)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| {
                if !p.connected
                    && p.first_offer_at
                        .is_some_and(|at| now.saturating_duration_since(at) > timeout)
                {
                    Some((*id, "ICE did not connect in time"))
                } else if p
                    .disconnected_since
                    .is_some_and(|t| now.saturating_duration_since(t) > DISCONNECTED_GRACE)
                {
                    Some((*id, "ICE connectivity was lost"))
                } else if !p.rtc.is_alive() {
                    Some((*id, "the peer connection closed"))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in expired {
            self.fail_peer(id, reason.to_owned());
        }
    }

    /// What each published video track offers right now: its layers (with
    /// their cost and whether they flow) and the SSRC of each.
    fn offered_layers(&self, now: Instant) -> HashMap<TrackKey, (Vec<Layer>, Vec<Option<u32>>)> {
        let mut offered = HashMap::new();
        for peer in self.peers.values() {
            for (key, track) in &peer.published {
                if track.info.kind != TrackKind::Video {
                    continue;
                }
                // A track without simulcast is one layer of unknown size.
                let count = track.layers.len();
                let layers = track
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, state)| Layer {
                        width: track.info.layers.get(i).map_or(0, |l| l.width),
                        height: track.info.layers.get(i).map_or(0, |l| l.height),
                        // What the layer really costs once measured; until then
                        // what such a layer usually costs.
                        bitrate_bps: match state.rate.bps() {
                            0 => nominal_bps(i, count),
                            measured => measured,
                        },
                        available: track.dynacast.is_active(i)
                            && state.ssrc.is_some()
                            && state.last_packet.is_some_and(|t| {
                                now.saturating_duration_since(t) < LAYER_STALE_AFTER
                            }),
                    })
                    .collect();
                let ssrcs = track.layers.iter().map(|l| l.ssrc.map(|s| *s)).collect();
                offered.insert(*key, (layers, ssrcs));
            }
        }
        offered
    }

    /// Picks every subscriber's layer of every video track, tells publishers
    /// which layers anyone wants, and steers each subscriber's BWE probing.
    fn select_layers(&mut self, now: Instant) {
        let offered = self.offered_layers(now);
        let mut wanted: HashMap<TrackKey, Vec<usize>> = HashMap::new();
        let mut keyframes: Vec<(TrackKey, usize)> = Vec::new();
        for peer in self.peers.values_mut() {
            let audio = peer
                .subscriptions
                .values()
                .filter(|s| s.kind == TrackKind::Audio)
                .count() as u64;
            let video = peer
                .subscriptions
                .values()
                .filter(|s| s.kind == TrackKind::Video && !s.request.paused)
                .count() as u64;
            let share = peer.estimate_bps.saturating_sub(audio * AUDIO_RESERVE_BPS) / video.max(1);
            let (mut minimum, mut desired) = (audio * AUDIO_RESERVE_BPS, audio * AUDIO_RESERVE_BPS);
            for (key, sub) in &mut peer.subscriptions {
                let Some((layers, ssrcs)) = offered.get(key) else {
                    continue;
                };
                if sub.kind != TrackKind::Video || !sub.negotiated {
                    continue;
                }
                if let Some(want) = sub.selector.wanted(layers, sub.request, share, now) {
                    wanted.entry(*key).or_default().push(want);
                }
                if !sub.request.paused {
                    // A larger tile raises the desired rate, which makes str0m
                    // probe the link at once rather than wait for traffic to grow.
                    let cap = layer::size_cap(layers, sub.request);
                    desired += (layers[cap].bitrate_bps as f64 * layer::UP_HEADROOM) as u64;
                }
                let before = sub.selector.current();
                tracing::trace!(participant = peer.participant, ?layers, share, request = ?sub.request, current = ?before, "selecting");
                match sub.selector.select(layers, sub.request, share, now) {
                    Some(chosen) => {
                        minimum += layers[chosen].bitrate_bps;
                        if let Some(ssrc) = ssrcs[chosen] {
                            if sub.rewriter.target() != Some(ssrc) {
                                tracing::debug!(
                                    participant = peer.participant,
                                    track = sub.track_id,
                                    layer = chosen,
                                    share,
                                    estimate = peer.estimate_bps,
                                    "layer chosen"
                                );
                                sub.rewriter.switch_to(ssrc);
                                if before.is_some() {
                                    self.metrics.media_layer_switches.inc();
                                }
                            }
                            if sub.rewriter.wants_keyframe() {
                                keyframes.push((*key, chosen));
                            }
                        }
                    }
                    None => sub.rewriter.stop(),
                }
            }
            if (minimum, desired) != peer.bwe_targets && peer.connected {
                peer.bwe_targets = (minimum, desired);
                peer.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum.min(desired)), Bitrate::bps(desired));
            }
        }
        for (key, layer) in keyframes {
            self.request_keyframe(key, layer, now);
        }

        self.apply_dynacast(wanted, now);
        let all: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in all {
            self.mark_dirty(id);
        }
    }

    /// Tells publishers which layers anyone wants (`wanted` holds each
    /// subscriber's wish per track).
    fn apply_dynacast(&mut self, mut wanted: HashMap<TrackKey, Vec<usize>>, now: Instant) {
        let mut signals = Vec::new();
        for (id, peer) in &mut self.peers {
            for (key, track) in &mut peer.published {
                if track.info.kind != TrackKind::Video || track.info.layers.is_empty() {
                    continue;
                }
                let demand = wanted.remove(key).unwrap_or_default();
                let changes = track.dynacast.update(demand, now);
                if !changes.is_empty() {
                    self.metrics
                        .media_dynacast_changes
                        .inc_by(changes.len() as u64);
                    signals.push((
                        *id,
                        ServerMessage::PublishLayers {
                            track_id: track.info.id.clone(),
                            active: track.active_rids(),
                        },
                    ));
                }
            }
        }
        for (id, msg) in signals {
            self.signal(id, msg);
        }
    }

    fn renegotiate(&mut self, id: PeerId) {
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| peer.next_offer(now))) {
            Ok(Some(ServerMessage::Offer { sdp, .. })) if sdp.len() > limits::MAX_SDP_BYTES => {
                // The client could not answer it within the same limit.
                self.fail_peer(
                    id,
                    format!(
                        "the session needs an offer of {} bytes, over the {}-byte SDP limit",
                        sdp.len(),
                        limits::MAX_SDP_BYTES
                    ),
                );
            }
            Ok(Some(offer)) => self.signal(id, offer),
            Ok(None) => {}
            Err(_) => self.fail_peer(id, "the media session panicked making an offer".into()),
        }
    }

    fn signal(&mut self, id: PeerId, msg: ServerMessage) {
        if let Some(peer) = self.peers.get(&id) {
            self.outputs.push_back(MediaOutput::Signal {
                room: peer.room.clone(),
                participant: peer.participant.clone(),
                msg,
            });
        }
    }

    fn fail_peer(&mut self, id: PeerId, reason: String) {
        let Some((room, participant)) = self
            .peers
            .get(&id)
            .map(|p| (p.room.clone(), p.participant.clone()))
        else {
            return;
        };
        tracing::warn!(room, participant, reason, "media session failed");
        self.drop_peer(id);
        self.outputs.push_back(MediaOutput::Failed {
            room,
            participant,
            reason,
        });
    }

    fn drop_peer(&mut self, id: PeerId) {
        // Removed first: a session that is going away gets no more offers.
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        for (key, track) in std::mem::take(&mut peer.published) {
            self.tracks.remove(&key);
            self.stop_subscriptions(key, &track.subscribers);
        }
        for key in peer.subscriptions.keys() {
            if let Some(owner) = self.tracks.get(key)
                && let Some(track) = self
                    .peers
                    .get_mut(owner)
                    .and_then(|p| p.published.get_mut(key))
            {
                track.subscribers.retain(|s| *s != id);
            }
        }
        let _ = guarded(|| {
            peer.rtc.disconnect();
            Ok(())
        });
        self.demux.remove_peer(id);
        self.metrics.media_sessions.set(self.peers.len() as i64);
        self.participants
            .remove(&(peer.room.clone(), peer.participant.clone()));
        if let Some(room) = self.rooms.get_mut(&peer.room) {
            room.peers.retain(|p| *p != id);
            room.speakers.remove(&peer.participant);
            if room.peers.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        self.dirty.retain(|p| *p != id);
    }
}

fn nominal_bps(layer: usize, layers: usize) -> u64 {
    let offset = NOMINAL_LAYER_BPS.len().saturating_sub(layers);
    NOMINAL_LAYER_BPS
        .get(layer + offset)
        .copied()
        .unwrap_or(NOMINAL_LAYER_BPS[2])
}

fn no_session() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InvalidSdp,
        "no media session: join with \"media\": true first",
    )
}
