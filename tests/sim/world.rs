//! The simulated call: the SFU core, clients with real call sessions, a
//! publisher writing H.264-shaped simulcast frames, and the clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use parley_client::media::call::{CallOutput, CallSession, IcePolicy, Protocol};
use parley_proto::{ClientMessage, ServerMessage, SubscriptionPreference, TrackInfo};
use parley_sfu::core::{CoreConfig, Output, Sfu};
use parley_sfu::media::MediaConfig;
use parley_sfu::metrics::Metrics;
use serde_json::json;

use crate::net::{LinkConfig, Net};

const FRAME_INTERVAL: Duration = Duration::from_millis(33);
const KEYFRAME_INTERVAL: u32 = 90;
const SFU_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7882);

/// A simulcast layer as the simulated publisher sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Quarter,
    Half,
    Full,
}

const LAYERS: [(Layer, &str, u32, u32, usize); 3] = [
    (Layer::Quarter, "q", 160, 90, 300),
    (Layer::Half, "h", 320, 180, 1_000),
    (Layer::Full, "f", 640, 360, 3_500),
];

/// A frame a subscriber received.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub layer: Layer,
    pub number: u32,
    pub contiguous: bool,
}

struct Client {
    conn: u64,
    addr: SocketAddr,
    publishes: bool,
    participant_id: Option<String>,
    call: Option<CallSession>,
    frames: Vec<Frame>,
    active_layers: Vec<String>,
    keyframe_wanted: [bool; 3],
}

pub struct World {
    now: Instant,
    sfu: Sfu,
    metrics: Metrics,
    /// Wall-clock time spent inside the SFU core (for the forwarding benchmark).
    sfu_busy: Duration,
    /// Wall-clock time of each media datagram's handling inside the SFU.
    datagram_times: Vec<Duration>,
    net: Net,
    clients: Vec<Client>,
    next_frame: Instant,
    frame_number: u32,
    sent: [u64; 3],
}

/// A frame's bytes: Annex B with a NAL unit whose header says keyframe or
/// not, carrying the layer and frame number, padded to the layer's size.
fn encode_frame(layer: usize, number: u32, keyframe: bool, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(size + 16);
    if keyframe {
        data.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0x00, 0x1f]);
    }
    data.extend_from_slice(&[0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }]);
    // Digits, so the payload never contains a start code (0 0 1).
    data.push(b'1' + layer as u8);
    data.extend_from_slice(format!("{number:08}").as_bytes());
    // Padding without start-code look-alikes.
    data.resize(size, 0x5a);
    data
}

fn decode_frame(data: &[u8]) -> Option<(usize, u32)> {
    let marker = data
        .windows(5)
        .position(|w| w[..4] == [0, 0, 0, 1] && (w[4] & 0x1f == 5 || w[4] & 0x1f == 1))?;
    let body = &data[marker + 5..];
    let layer = usize::from(body.first()?.checked_sub(b'1')?);
    let number = std::str::from_utf8(body.get(1..9)?).ok()?.parse().ok()?;
    Some((layer, number))
}

impl World {
    pub fn new(seed: u64, links: LinkConfig) -> Self {
        let now = Instant::now();
        let config = CoreConfig {
            media: Some(MediaConfig {
                candidates: vec![SFU_ADDR],
                ..MediaConfig::default()
            }),
            ..CoreConfig::default()
        };
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let metrics = Metrics::default();
        Self {
            now,
            sfu: Sfu::new(config, metrics.clone(), now, 1_800_000_000_000, seed_bytes),
            metrics,
            sfu_busy: Duration::ZERO,
            datagram_times: Vec::new(),
            net: Net::new(seed, links),
            clients: Vec::new(),
            next_frame: now,
            frame_number: 0,
            sent: [0; 3],
        }
    }

    /// Joins a client with a media session; `publishes` adds a simulcast camera.
    pub fn add_client(&mut self, name: &str, publishes: bool) -> usize {
        let index = self.clients.len();
        let conn = index as u64 + 1;
        self.clients.push(Client {
            conn,
            addr: SocketAddr::new(
                std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1)),
                5000,
            ),
            publishes,
            participant_id: None,
            call: None,
            frames: Vec::new(),
            active_layers: LAYERS.iter().map(|l| l.1.to_owned()).collect(),
            keyframe_wanted: [true; 3],
        });
        self.sfu.handle_connect(conn, self.now);
        let join =
            json!({"type": "join", "protocol": [1], "room": "sim", "name": name, "media": true});
        self.sfu.handle_text(conn, &join.to_string(), self.now);
        self.pump();
        index
    }

    pub fn set_downlink(&mut self, client: usize, config: LinkConfig) {
        self.net.set_link(self.clients[client].addr, config);
    }

    pub fn request_size(&mut self, client: usize, publisher: usize, width: u32, height: u32) {
        let participant_id = self.clients[publisher].participant_id.clone().unwrap();
        let message = ClientMessage::UpdateSubscription(SubscriptionPreference {
            participant_id,
            track_id: "camera".into(),
            max_width: Some(width),
            max_height: Some(height),
            paused: false,
        });
        self.signal(client, &message);
    }

    pub fn frames(&self, client: usize) -> &[Frame] {
        &self.clients[client].frames
    }

    pub fn last_layer(&self, client: usize) -> Option<Layer> {
        self.clients[client].frames.last().map(|f| f.layer)
    }

    pub fn frames_sent(&self, layer: Layer) -> u64 {
        self.sent[LAYERS.iter().position(|l| l.0 == layer).unwrap()]
    }

    pub fn active_layers(&self, client: usize) -> Vec<String> {
        self.clients[client].active_layers.clone()
    }

    /// Packets the SFU forwarded, and the wall-clock time it spent.
    pub fn sfu_work(&self) -> (u64, Duration) {
        (self.metrics.media_packets_forwarded.get(), self.sfu_busy)
    }

    /// How long each datagram took inside the SFU, in arrival order.
    pub fn datagram_times(&self) -> &[Duration] {
        &self.datagram_times
    }

    /// The client leaves the room.
    pub fn leave(&mut self, client: usize) {
        self.signal(client, &ClientMessage::Leave {});
        self.clients[client].publishes = false;
    }

    /// Remote tracks the client's session currently receives.
    pub fn remote_tracks(&self, client: usize) -> usize {
        self.clients[client]
            .call
            .as_ref()
            .map_or(0, |call| call.remote_tracks().count())
    }

    pub fn media_sessions(&self) -> usize {
        self.sfu.media_peer_count()
    }

    pub fn nacks_sent(&self, client: usize) -> u64 {
        self.clients[client]
            .call
            .as_ref()
            .map_or(0, |call| call.ingress.values().map(|s| s.nacks).sum())
    }

    fn signal(&mut self, client: usize, message: &ClientMessage) {
        let text = serde_json::to_string(message).unwrap();
        self.sfu
            .handle_text(self.clients[client].conn, &text, self.now);
        self.pump();
    }

    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            let mut next = end.min(self.next_frame);
            for deadline in [self.sfu.poll_timeout(), self.net.next_delivery()]
                .into_iter()
                .flatten()
                .chain(
                    self.clients
                        .iter()
                        .filter_map(|c| c.call.as_ref()?.poll_timeout()),
                )
            {
                next = next.min(deadline);
            }
            // Never backwards, and never stuck on a deadline already due.
            self.now = next.max(self.now);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some(datagram) = self.net.deliver(now) {
            if datagram.destination == SFU_ADDR {
                let started = Instant::now();
                self.sfu.handle_datagram(
                    Protocol::Udp,
                    datagram.source,
                    datagram.destination,
                    &datagram.data,
                    now,
                );
                let spent = started.elapsed();
                self.sfu_busy += spent;
                self.datagram_times.push(spent);
            } else if let Some(call) = self
                .clients
                .iter_mut()
                .find(|c| c.addr == datagram.destination)
                .and_then(|c| c.call.as_mut())
            {
                call.handle_datagram(
                    Protocol::Udp,
                    datagram.source,
                    datagram.destination,
                    &datagram.data,
                    now,
                );
            }
            self.pump();
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            let started = Instant::now();
            self.sfu.handle_timeout(now);
            self.sfu_busy += started.elapsed();
        }
        for client in &mut self.clients {
            if let Some(call) = &mut client.call
                && call.poll_timeout().is_some_and(|t| t <= now)
            {
                call.handle_timeout(now);
            }
        }
        if self.next_frame <= now {
            self.publish_frame();
            self.next_frame = now + FRAME_INTERVAL;
        }
        self.pump();
    }

    fn publish_frame(&mut self) {
        let number = self.frame_number;
        self.frame_number += 1;
        let now = self.now;
        let rtp_time = u64::from(number) * 3000;
        for client in self.clients.iter_mut().filter(|c| c.publishes) {
            let Some(call) = &mut client.call else {
                continue;
            };
            // Largest first, as the real publisher sends them.
            for (index, (_, rid, _, _, size)) in LAYERS.iter().enumerate().rev() {
                if !client.active_layers.iter().any(|a| a == rid) {
                    continue;
                }
                let keyframe =
                    client.keyframe_wanted[index] || number.is_multiple_of(KEYFRAME_INTERVAL);
                let data = encode_frame(index, number, keyframe, *size);
                if call.write_video("camera", Some(rid), rtp_time, &data, now) {
                    client.keyframe_wanted[index] &= !keyframe;
                    self.sent[index] += 1;
                }
            }
        }
    }

    /// Moves everything the SFU and the clients produced until all are quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            loop {
                let started = Instant::now();
                let output = self.sfu.poll_output();
                self.sfu_busy += started.elapsed();
                let Some(output) = output else {
                    break;
                };
                moved = true;
                match output {
                    Output::Send { to, msg } => {
                        for conn in to {
                            self.deliver_signal(conn, msg.clone());
                        }
                    }
                    Output::Close { .. } => {}
                    Output::Transmit {
                        proto: _,
                        source,
                        destination,
                        data,
                    } => self.net.send(source, destination, &data, self.now),
                }
            }
            for index in 0..self.clients.len() {
                while let Some(output) = self.clients[index]
                    .call
                    .as_mut()
                    .and_then(CallSession::poll_output)
                {
                    moved = true;
                    self.client_output(index, output);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn client_output(&mut self, index: usize, output: CallOutput) {
        let client = &mut self.clients[index];
        match output {
            CallOutput::Transmit {
                proto: _,
                source,
                destination,
                data,
            } => self.net.send(source, destination, &data, self.now),
            CallOutput::Frame {
                data, contiguous, ..
            } => {
                if let Some((layer, number)) = decode_frame(&data) {
                    client.frames.push(Frame {
                        layer: LAYERS[layer].0,
                        number,
                        contiguous,
                    });
                }
            }
            CallOutput::KeyframeRequested { rid, .. } => {
                for (i, layer) in LAYERS.iter().enumerate() {
                    if rid.as_deref().is_none_or(|r| r == layer.1) {
                        client.keyframe_wanted[i] = true;
                    }
                }
            }
            CallOutput::Connected | CallOutput::Failed(_) => {}
        }
    }

    fn deliver_signal(&mut self, conn: u64, msg: ServerMessage) {
        let Some(index) = self.clients.iter().position(|c| c.conn == conn) else {
            return;
        };
        let now = self.now;
        match msg {
            ServerMessage::Joined(joined) => {
                let client = &mut self.clients[index];
                client.participant_id = Some(joined.participant_id.clone());
                let mut call = CallSession::new(joined.participant_id, IcePolicy::All, now);
                call.add_host_candidates(&[client.addr]);
                client.call = Some(call);
                if client.publishes {
                    let track = TrackInfo {
                        id: "camera".into(),
                        kind: parley_proto::TrackKind::Video,
                        source: parley_proto::TrackSource::Camera,
                        muted: false,
                        layers: LAYERS
                            .iter()
                            .map(|(_, rid, width, height, _)| parley_proto::VideoLayer {
                                rid: (*rid).into(),
                                width: *width,
                                height: *height,
                            })
                            .collect(),
                    };
                    let text =
                        serde_json::to_string(&ClientMessage::PublishTrack { track }).unwrap();
                    self.sfu.handle_text(conn, &text, now);
                }
            }
            ServerMessage::Offer { sdp, mids } => {
                let call = self.clients[index].call.as_mut().unwrap();
                let answer = call.accept_offer(&sdp, &mids, now).unwrap();
                let text = serde_json::to_string(&ClientMessage::Answer { sdp: answer }).unwrap();
                self.sfu.handle_text(conn, &text, now);
            }
            ServerMessage::PublishLayers { active, .. } => {
                let client = &mut self.clients[index];
                for (i, layer) in LAYERS.iter().enumerate() {
                    let resumed = active.iter().any(|a| a == layer.1)
                        && !client.active_layers.iter().any(|a| a == layer.1);
                    client.keyframe_wanted[i] |= resumed;
                }
                client.active_layers = active;
            }
            _ => {}
        }
    }
}
