//! The client's media session, sans-IO: one str0m peer connection to the
//! SFU. The SFU makes every offer; this side answers, sends its own tracks on
//! the m-lines the SFU opened for them, and hands received frames up.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parley_proto::codecs;
use parley_proto::{MediaLine, TrackKind};
use str0m::change::SdpOffer;
use str0m::media::{Frequency, KeyframeRequestKind, MediaTime, Mid, Rid};
pub use str0m::net::Protocol;
use str0m::net::{Receive, TcpType};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// RFC 8445's type preference for relayed candidates (str0m's for UDP relays).
const RELAY_TYPE_PREFERENCE: u32 = 2;
/// The port active ICE-TCP candidates carry (RFC 6544 §4.5: the discard port).
const ACTIVE_TCP_PORT: u16 = 9;

/// A remote track as the SFU described it in an offer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteTrack {
    pub participant_id: String,
    pub track_id: String,
    pub kind: TrackKind,
}

/// Which candidates the session gathers (WebRTC's `iceTransportPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcePolicy {
    /// Host, server-reflexive, ICE-TCP and relayed candidates.
    #[default]
    All,
    /// Relayed candidates only: every packet goes through TURN, and the SFU
    /// never learns this machine's addresses.
    Relay,
}

impl std::str::FromStr for IcePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "relay" => Ok(Self::Relay),
            other => Err(format!("unknown ICE policy `{other}`: use all or relay")),
        }
    }
}

/// How a local candidate reaches the network, for naming the selected path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    Host,
    ServerReflexive,
    /// Through a TURN server reached over this transport (`udp`, `tcp` or `tls`).
    Relay(&'static str),
}

impl CandidateKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ServerReflexive => "srflx",
            Self::Relay(_) => "relay",
        }
    }
}

/// What the driver must do, or should know.
#[derive(Debug)]
pub enum CallOutput {
    /// Over TCP: one RFC 4571 frame on the connection to `destination`.
    Transmit {
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
    /// A complete frame of a remote track (H.264 access unit in Annex B, or an Opus packet).
    Frame {
        track: RemoteTrack,
        /// RTP time of the frame, in the track's clock.
        rtp_time: u64,
        /// False when packets were lost since the previous frame.
        contiguous: bool,
        data: Vec<u8>,
        /// The latest sender report of the stream: (sender's wall clock in
        /// Unix µs, the RTP time it corresponds to).
        sender_report: Option<(u64, u64)>,
    },
    /// The SFU asks for a keyframe on one of our layers.
    KeyframeRequested {
        track_id: String,
        rid: Option<String>,
    },
    Connected,
    /// ICE failed or the connection closed; the call cannot continue.
    Failed(String),
}

/// Per-connection numbers from the last stats interval.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectionStats {
    pub rtt_ms: Option<f64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Outgoing bandwidth estimate (TWCC), bits per second.
    pub estimate_bps: Option<u64>,
    /// Type of our side of the selected pair: `host`, `srflx`, `prflx` or `relay`.
    pub local_candidate: Option<String>,
    pub local_address: Option<String>,
    pub remote_address: Option<String>,
    /// The pair's transport as ICE sees it: `udp` or `tcp` (a relayed pair
    /// is `udp` between the TURN server and the SFU).
    pub protocol: Option<String>,
    /// How packets leave this machine: `udp`, `tcp` (ICE-TCP or TURN over
    /// TCP) or `tls` (TURN over TLS).
    pub transport: Option<String>,
}

impl ConnectionStats {
    /// `relay/tls`, `host/udp`, ...: the path in one word.
    pub fn path(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.local_candidate.as_deref()?,
            self.transport.as_deref()?
        ))
    }
}

/// Per-track transport numbers, as str0m measures them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrackTransportStats {
    pub packets: u64,
    pub bytes: u64,
    /// Over the last stats interval (about a second).
    pub bitrate_bps: u64,
    /// Fraction lost, 0.0 to 1.0.
    pub loss: Option<f32>,
    pub jitter_ms: Option<f64>,
    pub nacks: u64,
    pub plis: u64,
    #[serde(skip)]
    last_sample: Option<(u64, Instant)>,
}

impl TrackTransportStats {
    fn note_bytes(&mut self, bytes: u64, at: Instant) {
        if let Some((before, then)) = self.last_sample
            && at > then
        {
            let seconds = at.duration_since(then).as_secs_f64();
            self.bitrate_bps = (bytes.saturating_sub(before) as f64 * 8.0 / seconds) as u64;
        }
        self.last_sample = Some((bytes, at));
        self.bytes = bytes;
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct CallSession {
    rtc: Rtc,
    participant_id: String,
    /// Our published tracks by track id → their mid.
    sending: HashMap<String, Mid>,
    /// Which of those mids carry audio (for the RTP clock of their stats).
    sending_audio: Vec<Mid>,
    /// Received mids → the remote track they carry.
    receiving: HashMap<Mid, RemoteTrack>,
    outputs: VecDeque<CallOutput>,
    next_timeout: Option<Instant>,
    connected: bool,
    policy: IcePolicy,
    /// Our candidates' addresses, protocols and kinds, to name the selected pair.
    local_candidates: Vec<(SocketAddr, Protocol, CandidateKind)>,
    pub connection: ConnectionStats,
    pub egress: HashMap<(String, Option<String>), TrackTransportStats>,
    pub ingress: HashMap<RemoteTrack, TrackTransportStats>,
}

/// The str0m configuration both ends of a Parley call use (see `codecs`).
pub fn rtc_config() -> str0m::RtcConfig {
    let mut config = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        // Audio is not retransmitted; waiting for a lost packet would only
        // delay the ones after it. The jitter buffer puts packets in order.
        .set_reordering_size_audio(0)
        .set_stats_interval(Some(Duration::from_secs(1)));
    config.codec_config().add_h264(
        codecs::H264_PT.into(),
        Some(codecs::H264_RTX_PT.into()),
        true,
        codecs::H264_PROFILE_LEVEL_ID,
    );
    config
}

impl CallSession {
    /// A session with no candidates yet; the driver adds them as it learns
    /// them, and `policy` decides which are used.
    pub fn new(participant_id: String, policy: IcePolicy, now: Instant) -> Self {
        Self {
            rtc: rtc_config().build(now),
            policy,
            participant_id,
            sending: HashMap::new(),
            sending_audio: Vec::new(),
            receiving: HashMap::new(),
            outputs: VecDeque::new(),
            next_timeout: Some(now),
            connected: false,
            local_candidates: Vec::new(),
            connection: ConnectionStats::default(),
            egress: HashMap::new(),
            ingress: HashMap::new(),
        }
    }

    /// Offers our UDP sockets' addresses as host candidates (not under the
    /// relay policy).
    pub fn add_host_candidates(&mut self, local: &[SocketAddr]) {
        if self.policy == IcePolicy::Relay {
            return;
        }
        for address in local {
            match Candidate::host(*address, "udp") {
                Ok(candidate) => {
                    self.rtc.add_local_candidate(candidate);
                    self.local_candidates
                        .push((*address, Protocol::Udp, CandidateKind::Host));
                }
                Err(e) => tracing::debug!(%address, "not a usable host candidate: {e}"),
            }
        }
    }

    /// Offers active ICE-TCP candidates (RFC 6544) on these interface
    /// addresses: str0m then pairs them with the SFU's passive TCP
    /// candidates, and the driver opens a connection per remote address
    /// when the first check is sent. The port is a placeholder (9, as RFC
    /// 6544 asks); our real port is whatever the connection gets.
    pub fn add_tcp_candidates(&mut self, ips: &[std::net::IpAddr]) {
        if self.policy == IcePolicy::Relay {
            return;
        }
        for ip in ips {
            let address = SocketAddr::new(*ip, ACTIVE_TCP_PORT);
            let candidate = Candidate::builder()
                .tcp()
                .host(address)
                .tcptype(TcpType::Active)
                .build();
            match candidate {
                Ok(candidate) => {
                    self.rtc.add_local_candidate(candidate);
                    self.local_candidates
                        .push((address, Protocol::Tcp, CandidateKind::Host));
                }
                Err(e) => tracing::debug!(%address, "not a usable ICE-TCP candidate: {e}"),
            }
        }
    }

    /// A server-reflexive candidate learnt through STUN for one of our
    /// sockets; returns its SDP form to trickle to the SFU.
    pub fn add_reflexive_candidate(
        &mut self,
        mapped: SocketAddr,
        base: SocketAddr,
    ) -> Option<String> {
        if self.policy == IcePolicy::Relay {
            return None;
        }
        let candidate = Candidate::server_reflexive(mapped, base, "udp").ok()?;
        let sdp = candidate.to_sdp_string();
        self.rtc.add_local_candidate(candidate)?;
        self.local_candidates
            .push((mapped, Protocol::Udp, CandidateKind::ServerReflexive));
        Some(sdp)
    }

    /// A TURN allocation: `relayed` is the address the TURN server relays
    /// from, `local` the socket that talks to it, `transport` how (`udp`,
    /// `tcp` or `tls`). Returns its SDP form to trickle to the SFU.
    pub fn add_relayed_candidate(
        &mut self,
        relayed: SocketAddr,
        local: SocketAddr,
        transport: &'static str,
    ) -> Option<String> {
        // str0m ranks every relayed UDP candidate alike; like libwebrtc we
        // prefer the cheapest way to the TURN server: UDP, then TCP, then TLS.
        let local_preference: u32 = match transport {
            "udp" => 3,
            "tcp" => 2,
            _ => 1,
        };
        let priority = (RELAY_TYPE_PREFERENCE << 24) | (local_preference << 8) | 255;
        let unspecified = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        let candidate = Candidate::from_parts(
            format!("relay{transport}{}", local.port()),
            1,
            Protocol::Udp,
            priority,
            relayed,
            str0m::CandidateKind::Relayed,
            // The related address would reveal this machine's address, which
            // the relay policy exists to hide.
            Some(unspecified),
            None,
            None,
        );
        let sdp = candidate.to_sdp_string();
        self.rtc.add_local_candidate(candidate)?;
        self.local_candidates
            .push((relayed, Protocol::Udp, CandidateKind::Relay(transport)));
        Some(sdp)
    }

    /// True when `source` is one of our relayed candidates (the driver finds
    /// the relay by its address directly; the tests check the bookkeeping).
    #[cfg(test)]
    fn is_relayed(&self, source: SocketAddr) -> bool {
        self.local_candidates
            .iter()
            .any(|(a, _, k)| *a == source && matches!(k, CandidateKind::Relay(_)))
    }

    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The mid our own track `track_id` is sent on, once the SFU opened one.
    pub fn sending_mid(&self, track_id: &str) -> Option<Mid> {
        self.sending.get(track_id).copied()
    }

    /// Remote tracks currently received.
    pub fn remote_tracks(&self) -> impl Iterator<Item = &RemoteTrack> {
        self.receiving.values()
    }

    /// Answers an offer from the SFU; `mids` says what each m-line carries.
    pub fn accept_offer(
        &mut self,
        sdp: &str,
        mids: &[MediaLine],
        now: Instant,
    ) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("offer: {e}"))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| format!("offer: {e}"))?;
        self.sending.clear();
        self.sending_audio.clear();
        self.receiving.clear();
        for line in mids {
            let mid = Mid::from(line.mid.as_str());
            if line.participant_id == self.participant_id {
                self.sending.insert(line.track_id.clone(), mid);
                if line.kind == TrackKind::Audio {
                    self.sending_audio.push(mid);
                }
            } else {
                self.receiving.insert(
                    mid,
                    RemoteTrack {
                        participant_id: line.participant_id.clone(),
                        track_id: line.track_id.clone(),
                        kind: line.kind,
                    },
                );
            }
        }
        self.ingress
            .retain(|track, _| self_receives(&self.receiving, track));
        self.drain(now);
        Ok(answer.to_sdp_string())
    }

    /// One datagram (over TCP: one RFC 4571 frame; through TURN: the
    /// relayed payload, with our relayed address as `destination`).
    pub fn handle_datagram(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        if !self.rtc.accepts(&input) {
            return;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!("media input rejected: {e}");
        }
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_timeout.is_some_and(|t| t <= now) {
            if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                self.outputs
                    .push_back(CallOutput::Failed(format!("media session error: {e}")));
            }
            self.drain(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.outputs.pop_front()
    }

    /// The writer of our track's m-line, once the SFU has opened one.
    fn writer_for(&mut self, track_id: &str) -> Option<str0m::media::Writer<'_>> {
        let mid = self.sending_mid(track_id)?;
        self.rtc.writer(mid)
    }

    /// Sends one encoded video frame on one simulcast layer of `track_id`.
    /// Returns false while the track has no negotiated m-line yet.
    pub fn write_video(
        &mut self,
        track_id: &str,
        rid: Option<&str>,
        rtp_time_90khz: u64,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let Some(writer) = self.writer_for(track_id) else {
            return false;
        };
        let writer = match rid {
            Some(rid) => writer.rid(Rid::from(rid)),
            None => writer,
        };
        let time = MediaTime::new(rtp_time_90khz, Frequency::NINETY_KHZ);
        let written = writer.write(codecs::H264_PT.into(), now, time, data.to_vec());
        self.drain(now);
        written.is_ok()
    }

    /// Sends one Opus packet of `track_id` with its audio level (RFC 6464, -dBov 0..=127).
    pub fn write_audio(
        &mut self,
        track_id: &str,
        rtp_time_48khz: u64,
        level: u8,
        voice: bool,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let Some(writer) = self.writer_for(track_id) else {
            return false;
        };
        let time = MediaTime::new(rtp_time_48khz, Frequency::FORTY_EIGHT_KHZ);
        let written = writer.audio_level(-(level.min(127) as i8), voice).write(
            codecs::OPUS_PT.into(),
            now,
            time,
            data.to_vec(),
        );
        self.drain(now);
        written.is_ok()
    }

    /// Asks the SFU for a keyframe on a remote video track (after loss).
    pub fn request_keyframe(&mut self, track: &RemoteTrack, now: Instant) {
        let Some(mid) = self
            .receiving
            .iter()
            .find(|(_, t)| *t == track)
            .map(|(m, _)| *m)
        else {
            return;
        };
        if let Some(mut writer) = self.rtc.writer(mid)
            && writer.is_request_keyframe_possible(KeyframeRequestKind::Pli)
        {
            let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
        }
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = Some(at);
                    return;
                }
                Ok(Output::Transmit(t)) => self.outputs.push_back(CallOutput::Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    data: t.contents.into(),
                }),
                Ok(Output::Event(event)) => self.handle_event(event, now),
                Err(e) => {
                    self.next_timeout = None;
                    self.outputs
                        .push_back(CallOutput::Failed(format!("media session error: {e}")));
                    return;
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event, _now: Instant) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.outputs.push_back(CallOutput::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.outputs
                    .push_back(CallOutput::Failed("ICE connectivity lost".into()));
            }
            Event::MediaData(data) => {
                let Some(track) = self.receiving.get(&data.mid) else {
                    return;
                };
                self.outputs.push_back(CallOutput::Frame {
                    track: track.clone(),
                    rtp_time: data.time.numer(),
                    contiguous: data.contiguous,
                    data: data.data.to_vec(),
                    sender_report: data.last_sender_info.map(|info| {
                        let ntp_us = info
                            .ntp_time
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros() as u64);
                        (ntp_us, info.rtp_time.numer())
                    }),
                });
            }
            Event::KeyframeRequest(request) => {
                if let Some(track_id) = self
                    .sending
                    .iter()
                    .find(|(_, mid)| **mid == request.mid)
                    .map(|(id, _)| id.clone())
                {
                    self.outputs.push_back(CallOutput::KeyframeRequested {
                        track_id,
                        rid: request.rid.map(|r| r.to_string()),
                    });
                }
            }
            Event::PeerStats(stats) => self.note_peer_stats(&stats),
            Event::MediaEgressStats(stats) => self.note_egress(&stats),
            Event::MediaIngressStats(stats) => self.note_ingress(&stats),
            _ => {}
        }
    }

    fn note_peer_stats(&mut self, stats: &PeerStats) {
        self.connection.rtt_ms = stats.rtt.map(|r| r.as_secs_f64() * 1000.0);
        self.connection.bytes_sent = stats.peer_bytes_tx;
        self.connection.bytes_received = stats.peer_bytes_rx;
        self.connection.estimate_bps = stats.bwe_tx.map(|b| b.as_u64());
        if let Some(pair) = &stats.selected_candidate_pair {
            let protocol = pair.protocol.to_string().to_lowercase();
            let kind = self
                .local_candidates
                .iter()
                .find(|(addr, proto, _)| *addr == pair.local.addr && *proto == pair.protocol)
                .map(|(_, _, kind)| *kind);
            self.connection.local_candidate =
                Some(kind.map_or("prflx", CandidateKind::name).into());
            self.connection.transport = Some(match kind {
                Some(CandidateKind::Relay(transport)) => transport.to_owned(),
                _ => protocol.clone(),
            });
            self.connection.local_address = Some(pair.local.addr.to_string());
            self.connection.remote_address = Some(pair.remote.addr.to_string());
            self.connection.protocol = Some(protocol);
        }
    }

    fn note_egress(&mut self, stats: &MediaEgressStats) {
        let Some(track_id) = self
            .sending
            .iter()
            .find(|(_, mid)| **mid == stats.mid)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let entry = self
            .egress
            .entry((track_id, stats.rid.map(|r| r.to_string())))
            .or_default();
        entry.note_bytes(stats.bytes, stats.timestamp);
        entry.packets = stats.packets;
        entry.loss = stats.loss;
        entry.nacks = stats.nacks;
        entry.plis = stats.plis;
        entry.jitter_ms = stats.remote.as_ref().map(|r| f64::from(r.jitter) / 90.0);
    }

    fn note_ingress(&mut self, stats: &MediaIngressStats) {
        let Some(track) = self.receiving.get(&stats.mid) else {
            return;
        };
        let clock_khz = match track.kind {
            TrackKind::Audio => 48.0,
            TrackKind::Video => 90.0,
        };
        let entry = self.ingress.entry(track.clone()).or_default();
        entry.note_bytes(stats.bytes, stats.timestamp);
        entry.packets = stats.packets;
        entry.loss = stats.loss;
        entry.nacks = stats.nacks;
        entry.plis = stats.plis;
        entry.jitter_ms = Some(f64::from(stats.jitter) / clock_khz);
    }
}

fn self_receives(receiving: &HashMap<Mid, RemoteTrack>, track: &RemoteTrack) -> bool {
    receiving.values().any(|t| t == track)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_relay_policy_keeps_only_relayed_candidates() {
        let now = Instant::now();
        let mut call = CallSession::new("me".into(), IcePolicy::Relay, now);
        call.add_host_candidates(&[addr("192.0.2.10:5000")]);
        call.add_tcp_candidates(&["192.0.2.10".parse().unwrap()]);
        assert_eq!(
            call.add_reflexive_candidate(addr("198.51.100.1:6000"), addr("192.0.2.10:5000")),
            None
        );
        assert!(
            call.local_candidates.is_empty(),
            "{:?}",
            call.local_candidates
        );
        let sdp = call
            .add_relayed_candidate(addr("203.0.113.5:50000"), addr("192.0.2.10:40000"), "tls")
            .expect("a relayed candidate is kept");
        assert!(sdp.contains("typ relay"), "{sdp}");
        assert!(!sdp.contains("192.0.2.10"), "no local address leaks: {sdp}");
        assert!(call.is_relayed(addr("203.0.113.5:50000")));
        assert!(!call.is_relayed(addr("192.0.2.10:5000")));
    }

    #[test]
    fn relays_rank_udp_over_tcp_over_tls_and_all_below_host() {
        let now = Instant::now();
        let mut call = CallSession::new("me".into(), IcePolicy::All, now);
        let priority =
            |sdp: &str| -> u32 { sdp.split_whitespace().nth(3).unwrap().parse().unwrap() };
        let local = addr("192.0.2.10:40000");
        let udp = call
            .add_relayed_candidate(addr("203.0.113.5:50000"), local, "udp")
            .unwrap();
        let tcp = call
            .add_relayed_candidate(addr("203.0.113.5:50001"), local, "tcp")
            .unwrap();
        let tls = call
            .add_relayed_candidate(addr("203.0.113.5:50002"), local, "tls")
            .unwrap();
        assert!(priority(&udp) > priority(&tcp) && priority(&tcp) > priority(&tls));
        let host = Candidate::host(addr("192.0.2.10:5000"), "udp").unwrap();
        assert!(host.prio() > priority(&udp));
    }
}
