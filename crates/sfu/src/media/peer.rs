//! One participant's media session on the SFU: its str0m instance, the
//! tracks it publishes, the remote tracks it receives, and the offer/answer
//! state. The SFU makes every offer, one at a time; changes that arrive while
//! an offer is outstanding wait for its answer (no glare by construction).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parley_proto::{ErrorBody, ErrorCode, MediaLine, ServerMessage, TrackInfo, TrackKind};
use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::Pt;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::rtp::{ExtensionValues, Ssrc};

use super::rate::RateMeter;
use crate::forward::dynacast::Dynacast;
use crate::forward::layer::{LayerSelector, Request};
use crate::forward::rewrite::RtpRewriter;

/// Identifies a peer inside the media plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// Identifies one published track across the whole plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey(pub u64);

/// Packets of a video layer kept for replay after a layer switch: a few
/// frames' worth, enough for reordering and for an open frame to end.
const REMEMBERED_PACKETS: usize = 128;

/// One received packet, as forwarded to subscribers.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub pt: Pt,
    pub payload: Arc<[u8]>,
    pub ext_vals: ExtensionValues,
    pub kind: TrackKind,
    /// Where a subscriber may start or switch: every audio packet, the
    /// first packet of a video keyframe.
    pub switch_point: bool,
}

/// One simulcast layer (or the single stream of an audio track) as received.
#[derive(Debug, Default)]
pub struct LayerState {
    pub ssrc: Option<Ssrc>,
    pub rate: RateMeter,
    pub last_packet: Option<Instant>,
    pub last_keyframe_request: Option<Instant>,
    recent: VecDeque<Forwarded>,
}

impl LayerState {
    pub fn remember(&mut self, packet: Forwarded) {
        if self.recent.len() == REMEMBERED_PACKETS {
            self.recent.pop_front();
        }
        self.recent.push_back(packet);
    }

    /// Remembered packets from `seq` on (wrap-around aware), oldest first.
    pub fn since(&self, seq: u16, inclusive: bool) -> Vec<Forwarded> {
        let mut packets: Vec<Forwarded> = self
            .recent
            .iter()
            .filter(|p| {
                let distance = p.seq.wrapping_sub(seq) as i16;
                distance > 0 || (inclusive && distance == 0)
            })
            .cloned()
            .collect();
        packets.sort_by_key(|p| p.seq.wrapping_sub(seq));
        packets.dedup_by_key(|p| p.seq);
        packets
    }
}

/// A track this peer publishes.
#[derive(Debug)]
pub struct Published {
    pub info: TrackInfo,
    pub mid: Option<Mid>,
    /// One entry per simulcast layer, lowest first; one for audio.
    pub layers: Vec<LayerState>,
    pub dynacast: Dynacast,
    /// Peers that receive this track.
    pub subscribers: Vec<PeerId>,
}

impl Published {
    pub fn new(info: TrackInfo) -> Self {
        let count = info.layers.len().max(1);
        Self {
            mid: None,
            layers: (0..count).map(|_| LayerState::default()).collect(),
            dynacast: Dynacast::new(count),
            subscribers: Vec::new(),
            info,
        }
    }

    /// The rids the publisher should currently send.
    pub fn active_rids(&self) -> Vec<String> {
        self.info
            .layers
            .iter()
            .enumerate()
            .filter(|(i, _)| self.dynacast.is_active(*i))
            .map(|(_, l)| l.rid.clone())
            .collect()
    }
}

/// A remote track this peer receives.
#[derive(Debug)]
pub struct Subscription {
    pub owner_participant: String,
    pub track_id: String,
    pub kind: TrackKind,
    pub mid: Option<Mid>,
    /// False until the answer that added the m-line has been accepted.
    pub negotiated: bool,
    pub request: Request,
    pub selector: LayerSelector,
    pub rewriter: RtpRewriter,
    /// Last extended sequence number written, for continuing across rollovers.
    pub last_seq: Option<u64>,
    pub forwarded_packets: u64,
    /// The SSRC of this subscription's send stream, once looked up.
    pub tx_ssrc: Option<Ssrc>,
}

impl Subscription {
    pub fn new(owner_participant: String, track: &TrackInfo) -> Self {
        let clock_rate = match track.kind {
            TrackKind::Audio => 48_000,
            TrackKind::Video => 90_000,
        };
        Self {
            owner_participant,
            track_id: track.id.clone(),
            kind: track.kind,
            mid: None,
            negotiated: false,
            request: Request::default(),
            selector: LayerSelector::default(),
            rewriter: RtpRewriter::new(0, clock_rate),
            last_seq: None,
            forwarded_packets: 0,
            tx_ssrc: None,
        }
    }

    /// Extends a rewritten 16-bit sequence number to str0m's 64-bit one.
    pub fn extend_seq(&mut self, seq: u16) -> u64 {
        let extended = match self.last_seq {
            None => u64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                (last as i64 + delta).max(0) as u64
            }
        };
        if self.last_seq.is_none_or(|last| extended > last) {
            self.last_seq = Some(extended);
        }
        extended
    }
}

/// Why an answer was not applied.
#[derive(Debug)]
pub enum AnswerError {
    /// Not an answer to the outstanding offer: the offer stays outstanding
    /// and the client may answer again.
    Malformed(ErrorBody),
    /// str0m refused it after consuming the offer: the session cannot go on.
    Rejected(ErrorBody),
}

/// A change waiting for the next offer.
#[derive(Debug, Clone, Copy)]
enum Change {
    Publish(TrackKey),
    Subscribe(TrackKey),
    Stop(Mid),
}

/// Which simulcast layer of which track an incoming SSRC carries.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub key: TrackKey,
    pub layer: usize,
}

#[derive(Debug)]
pub struct Peer {
    pub room: String,
    pub participant: String,
    pub rtc: Rtc,
    /// When the first offer went out: ICE has to connect within the
    /// connect timeout from then (nothing can connect before an offer).
    pub first_offer_at: Option<Instant>,
    /// False when the token withholds the subscribe grant: no remote tracks.
    pub can_subscribe: bool,
    pub connected: bool,
    pub disconnected_since: Option<Instant>,
    pub next_timeout: Instant,
    /// Queued for draining after the current input.
    pub dirty: bool,
    pub published: HashMap<TrackKey, Published>,
    pub published_mids: HashMap<Mid, TrackKey>,
    pub sources: HashMap<Ssrc, Source>,
    pub subscriptions: HashMap<TrackKey, Subscription>,
    pub subscription_mids: HashMap<Mid, TrackKey>,
    /// Egress bandwidth estimate towards this peer (TWCC).
    pub estimate_bps: u64,
    /// The last (minimum, desired) handed to str0m's BWE.
    pub bwe_targets: (u64, u64),
    pending: Option<SdpPendingOffer>,
    /// The offer waiting for an answer, resent after a signaling resume.
    outstanding_offer: Option<ServerMessage>,
    queued: Vec<Change>,
}

impl Peer {
    pub fn new(
        room: String,
        participant: String,
        rtc: Rtc,
        now: Instant,
        estimate_bps: u64,
    ) -> Self {
        Self {
            room,
            participant,
            rtc,
            first_offer_at: None,
            can_subscribe: true,
            connected: false,
            disconnected_since: None,
            next_timeout: now,
            dirty: false,
            published: HashMap::new(),
            published_mids: HashMap::new(),
            sources: HashMap::new(),
            subscriptions: HashMap::new(),
            subscription_mids: HashMap::new(),
            estimate_bps,
            bwe_targets: (0, 0),
            pending: None,
            outstanding_offer: None,
            queued: Vec::new(),
        }
    }

    /// The key of the track this peer publishes under `track_id`.
    pub fn published_key(&self, track_id: &str) -> Option<TrackKey> {
        self.published
            .iter()
            .find(|(_, t)| t.info.id == track_id)
            .map(|(k, _)| *k)
    }

    pub fn queue_publish(&mut self, key: TrackKey) {
        self.queued.push(Change::Publish(key));
    }

    pub fn queue_subscribe(&mut self, key: TrackKey) {
        self.queued.push(Change::Subscribe(key));
    }

    pub fn queue_stop(&mut self, mid: Mid) {
        self.queued.push(Change::Stop(mid));
    }

    pub fn outstanding_offer(&self) -> Option<&ServerMessage> {
        self.outstanding_offer.as_ref()
    }

    /// Builds the next offer if changes are queued and none is outstanding.
    pub fn next_offer(&mut self, now: Instant) -> Option<ServerMessage> {
        if self.pending.is_some() || self.queued.is_empty() {
            return None;
        }
        let mut api = self.rtc.sdp_api();
        for change in self.queued.drain(..) {
            match change {
                Change::Publish(key) => {
                    let Some(track) = self.published.get_mut(&key) else {
                        continue;
                    };
                    let simulcast = (track.info.kind == TrackKind::Video
                        && !track.info.layers.is_empty())
                    .then(|| {
                        let mut simulcast = Simulcast::new();
                        for layer in &track.info.layers {
                            simulcast.add_recv_layer(SimulcastLayer::new(&layer.rid));
                        }
                        simulcast
                    });
                    let mid = api.add_media(
                        media_kind(track.info.kind),
                        Direction::RecvOnly,
                        Some(self.participant.clone()),
                        Some(track.info.id.clone()),
                        simulcast,
                    );
                    track.mid = Some(mid);
                    self.published_mids.insert(mid, key);
                }
                Change::Subscribe(key) => {
                    let Some(sub) = self.subscriptions.get_mut(&key) else {
                        continue;
                    };
                    let mid = api.add_media(
                        media_kind(sub.kind),
                        Direction::SendOnly,
                        Some(sub.owner_participant.clone()),
                        Some(sub.track_id.clone()),
                        None,
                    );
                    sub.mid = Some(mid);
                    self.subscription_mids.insert(mid, key);
                }
                Change::Stop(mid) => api.stop_media(mid),
            }
        }
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        self.first_offer_at.get_or_insert(now);
        let msg = ServerMessage::Offer {
            sdp: offer.to_sdp_string(),
            mids: self.media_lines(),
        };
        self.outstanding_offer = Some(msg.clone());
        Some(msg)
    }

    /// Applies the client's answer to the outstanding offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), AnswerError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| {
            AnswerError::Malformed(ErrorBody::new(
                ErrorCode::InvalidSdp,
                format!("answer: {e}"),
            ))
        })?;
        let Some(pending) = self.pending.take() else {
            return Err(AnswerError::Malformed(ErrorBody::new(
                ErrorCode::InvalidSdp,
                "no offer is waiting for an answer",
            )));
        };
        self.outstanding_offer = None;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| {
                AnswerError::Rejected(ErrorBody::new(
                    ErrorCode::InvalidSdp,
                    format!("answer: {e}"),
                ))
            })?;
        for sub in self.subscriptions.values_mut() {
            sub.negotiated |= sub.mid.is_some();
        }
        Ok(())
    }

    fn media_lines(&self) -> Vec<MediaLine> {
        let own = self.published.values().filter_map(|p| {
            Some(MediaLine {
                mid: p.mid?.to_string(),
                participant_id: self.participant.clone(),
                track_id: p.info.id.clone(),
                kind: p.info.kind,
            })
        });
        let remote = self.subscriptions.values().filter_map(|s| {
            Some(MediaLine {
                mid: s.mid?.to_string(),
                participant_id: s.owner_participant.clone(),
                track_id: s.track_id.clone(),
                kind: s.kind,
            })
        });
        let mut lines: Vec<MediaLine> = own.chain(remote).collect();
        lines.sort_by(|a, b| a.mid.cmp(&b.mid));
        lines
    }

    /// Which track and layer an SSRC belongs to, learnt from str0m's
    /// mid/rid mapping the first time a packet arrives on it.
    pub fn resolve_source(&mut self, ssrc: Ssrc) -> Option<Source> {
        if let Some(source) = self.sources.get(&ssrc) {
            return Some(*source);
        }
        let (mid, rid) = {
            let mut api = self.rtc.direct_api();
            let rx = api.stream_rx(&ssrc)?;
            (rx.mid(), rx.rid())
        };
        let key = *self.published_mids.get(&mid)?;
        let track = self.published.get(&key)?;
        let layer = match rid {
            Some(rid) => track.info.layers.iter().position(|l| *l.rid == *rid)?,
            None => 0,
        };
        let source = Source { key, layer };
        // A layer that moved to a new SSRC forgets the old one.
        self.sources
            .retain(|_, s| !(s.key == source.key && s.layer == source.layer));
        self.sources.insert(ssrc, source);
        Some(source)
    }
}

fn media_kind(kind: TrackKind) -> MediaKind {
    match kind {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video => MediaKind::Video,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_proto::TrackSource;

    fn subscription() -> Subscription {
        let track = TrackInfo {
            id: "mic".into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            muted: false,
            layers: vec![],
        };
        Subscription::new("p".into(), &track)
    }

    #[test]
    fn sequence_numbers_extend_across_rollover_and_reordering() {
        let mut sub = subscription();
        assert_eq!(sub.extend_seq(65_534), 65_534);
        assert_eq!(sub.extend_seq(65_535), 65_535);
        assert_eq!(sub.extend_seq(1), 65_537);
        assert_eq!(sub.extend_seq(0), 65_536, "a late packet goes back");
        assert_eq!(sub.extend_seq(2), 65_538);
    }
}
