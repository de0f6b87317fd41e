//! The tokio driver of a call: UDP sockets on every interface, ICE-TCP
//! connections and TURN relays (see [`super::transport`]), the synthetic
//! publisher's encoded frames in, decoded remote tracks checked, and the
//! [`CallSession`] fed one input at a time. Signaling reaches it as
//! [`MediaCommand`]s; what it must send over signaling leaves as [`MediaNotice`]s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parley_media::clock::unix_micros;
use parley_media::frame::VideoFrame;
use parley_media::lipsync::{LipSync, ReportUse, SenderClock};
use parley_media::scale::Size;
use parley_media::simulcast::{RIDS, default_layers};
use parley_proto::ice_tcp;
use parley_proto::{
    ClientMessage, IceServer, ServerMessage, SubscriptionPreference, TrackInfo, TrackKind,
    TrackSource, VideoLayer,
};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use str0m::net::Protocol;

use super::audio::{
    AudioInput, AudioOptions, AudioShared, DeviceChoice, Playout, PlayoutCommand, WavRecorder,
};
use super::call::{
    CallOutput, CallSession, ConnectionStats, IcePolicy, RemoteTrack, TrackTransportStats,
};
use super::presentation::HeldFrames;
use super::publisher::{CaptureSetup, Encoded, Publisher, VideoControl, VideoSetup};
use super::receiver::{AudioReceiver, AudioReport, VideoReceiver, VideoReport};
use super::stun::{StunDiscovery, stun_host_port};
use super::transport::{self, NetEvent, TurnWriter};
use super::turn::{RelayEvent, TurnRelay, TurnTransport, TurnUrl};
use super::video::{VideoInput, VideoSink, remote_tile};
use crate::net::NetworkOptions;

/// Track ids of what `--fake-media` publishes.
pub const CAMERA_TRACK: &str = "camera";
pub const MICROPHONE_TRACK: &str = "microphone";
/// A decoder asking for a keyframe asks at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
const MAX_DATAGRAM: usize = 2048;
/// Receive buffer asked for each media socket, so a busy moment in the
/// decoder does not overflow it (the OS may grant less).
const RECEIVE_BUFFER: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Camera or synthetic picture.
    pub video: VideoInput,
    /// Start with the camera on.
    pub camera_enabled: bool,
    /// Size asked of the camera (the top simulcast layer).
    pub resolution: Size,
    pub fps: u32,
    /// Shown every decoded remote picture when it is due, and the local preview.
    pub video_sink: Option<Arc<dyn VideoSink>>,
    /// Tile size asked of the SFU for every remote video track.
    pub subscribe_size: Option<(u32, u32)>,
    /// STUN and TURN servers (from `joined`).
    pub ice_servers: Vec<IceServer>,
    /// Which candidates to gather.
    pub ice_policy: IcePolicy,
    /// Proxy and TLS settings for TURN over TCP and TLS.
    pub network: NetworkOptions,
    /// Use one kind of path only (the connectivity doctor tests them one by one).
    pub only: Option<PathCheck>,
    /// Microphone, speaker, processing, recording.
    pub audio: AudioOptions,
    /// Share of incoming RTP/RTCP packets dropped on purpose (0 to 1), to
    /// hear and measure what loss does.
    pub simulated_loss: f64,
}

/// One kind of path to the SFU, tried on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathCheck {
    /// UDP host and server-reflexive candidates.
    Udp,
    /// ICE-TCP to the SFU's passive candidates.
    IceTcp,
    /// A TURN relay reached over this transport.
    Turn(TurnTransport),
}

/// From the application to the call.
#[derive(Debug)]
pub enum MediaCommand {
    /// A signaling message the call may care about.
    Server(ServerMessage),
    /// Ask for every remote video track at this tile size from now on.
    SubscribeSize {
        width: u32,
        height: u32,
    },
    /// Ask for one remote video track at its tile's size; `None` pauses it
    /// (the tile is off screen).
    SubscribeTrack {
        participant_id: String,
        track_id: String,
        size: Option<(u32, u32)>,
    },
    /// Camera on or off (off releases the device and tells the room).
    SetCameraEnabled(bool),
    SetCamera(VideoInput),
    SetMicrophone(AudioInput),
    /// The call's figures so far (the stats overlay).
    Report(tokio::sync::oneshot::Sender<CallReport>),
    /// Mute or unmute the microphone (muted sends nothing).
    SetMuted(bool),
    /// Play through another speaker from the next frame on.
    SetSpeaker(DeviceChoice),
    /// Volume of one participant's audio, 0 to 4 (+12 dB).
    SetVolume {
        participant_id: String,
        volume: f32,
    },
    Stop,
}

/// From the call to the application.
#[derive(Debug)]
pub enum MediaNotice {
    /// Send this over signaling.
    Send(ClientMessage),
    /// A line for the application's event output.
    Line(serde_json::Value),
}

/// Numbers for one published layer.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedReport {
    pub track_id: String,
    pub rid: Option<String>,
    #[serde(flatten)]
    pub transport: TrackTransportStats,
}

/// Everything one remote track delivered.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteReport {
    pub participant_id: String,
    pub track_id: String,
    pub kind: TrackKind,
    /// Still offered by the SFU when the call ended.
    pub active: bool,
    /// From join to this track's first decoded frame.
    pub first_frame_ms: Option<f64>,
    pub transport: TrackTransportStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioReport>,
}

/// The `--stats-json` document.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub participant_id: String,
    /// From join to ICE and DTLS connected.
    pub media_connected_ms: Option<f64>,
    /// From join to the first decoded remote video frame.
    pub first_remote_frame_ms: Option<f64>,
    pub connection: ConnectionStats,
    pub published: Vec<PublishedReport>,
    pub remote: Vec<RemoteReport>,
}

enum Receiver {
    Video(Box<VideoReceiver>),
    Audio(Box<AudioReceiver>),
}

struct RemoteState {
    receiver: Receiver,
    first_frame_ms: Option<f64>,
    last_keyframe_request: Option<Instant>,
}

struct Datagram {
    source: SocketAddr,
    local: SocketAddr,
    data: Vec<u8>,
}

/// One address per family for active ICE-TCP candidates: every one of them
/// would reach the SFU over the same connection, so more only add pairs.
/// A routable address is preferred, so the path reads as the real one.
fn ice_tcp_ips(ips: &[IpAddr]) -> Vec<IpAddr> {
    let pick = |v4: bool| {
        let family = ips.iter().filter(move |ip| ip.is_ipv4() == v4);
        family
            .clone()
            .find(|ip| !ip.is_loopback())
            .or_else(|| family.clone().next())
            .copied()
    };
    [pick(true), pick(false)].into_iter().flatten().collect()
}

/// Every address of every interface that is up, except link-local ones.
fn local_ips() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|interfaces| {
            interfaces
                .into_iter()
                .map(|i| i.ip())
                .filter(|ip| match ip {
                    IpAddr::V4(v4) => !v4.is_link_local(),
                    IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn bind_sockets() -> Result<Vec<(SocketAddr, Arc<UdpSocket>)>, String> {
    let mut sockets = Vec::new();
    for ip in local_ips() {
        let bound = socket2::Socket::new(
            socket2::Domain::for_address(SocketAddr::new(ip, 0)),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .and_then(|socket| {
            let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
            socket.set_nonblocking(true)?;
            socket.bind(&SocketAddr::new(ip, 0).into())?;
            UdpSocket::from_std(socket.into())
        });
        match bound {
            Ok(socket) => {
                let local = socket.local_addr().map_err(|e| e.to_string())?;
                sockets.push((local, Arc::new(socket)));
            }
            Err(err) => tracing::debug!(%ip, %err, "no media socket on this address"),
        }
    }
    if sockets.is_empty() {
        return Err("no network interface to send media from".into());
    }
    Ok(sockets)
}

fn spawn_readers(
    sockets: &[(SocketAddr, Arc<UdpSocket>)],
    out: &mpsc::Sender<Datagram>,
) -> Vec<tokio::task::JoinHandle<()>> {
    sockets
        .iter()
        .map(|(local, socket)| {
            let (local, socket, out) = (*local, Arc::clone(socket), out.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let Ok((len, source)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    let datagram = Datagram {
                        source,
                        local,
                        data: buf[..len].to_vec(),
                    };
                    if out.send(datagram).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// Resolves the `stun:` URLs among `ice_servers`; unresolvable ones are
/// logged and skipped.
async fn resolve_stun(ice_servers: &[IceServer]) -> Vec<SocketAddr> {
    // Collected first: a borrowing iterator held across the awaits below
    // would make this future not `Send`.
    let urls: Vec<&String> = ice_servers
        .iter()
        .flat_map(|s| &s.urls)
        .filter(|u| u.starts_with("stun:"))
        .collect();
    let mut servers = Vec::new();
    for url in urls {
        let Some(host_port) = stun_host_port(url) else {
            continue;
        };
        let lookup =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(host_port));
        match lookup.await {
            Ok(Ok(addrs)) => servers.extend(addrs),
            Ok(Err(err)) => tracing::warn!(url, %err, "STUN server not resolved"),
            Err(_) => tracing::warn!(url, "STUN server lookup timed out"),
        }
    }
    servers
}

/// The tracks `--fake-media` announces.
pub fn published_tracks(options: &MediaOptions) -> [TrackInfo; 2] {
    let layers = default_layers(options.resolution, options.fps as f32)
        .iter()
        .map(|spec| VideoLayer {
            rid: spec.rid.to_owned(),
            width: spec.size.width,
            height: spec.size.height,
        })
        .collect();
    [
        TrackInfo {
            id: MICROPHONE_TRACK.to_owned(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            muted: options.audio.muted,
            layers: Vec::new(),
        },
        TrackInfo {
            id: CAMERA_TRACK.to_owned(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            muted: !options.camera_enabled,
            layers,
        },
    ]
}

/// One TURN server from `joined`, and its relay once connected.
struct RelaySlot {
    url: TurnUrl,
    username: String,
    password: String,
    writer: Option<TurnWriter>,
    relay: Option<TurnRelay>,
    /// How long the transport took to connect, then when allocation started.
    connect_ms: Option<f64>,
    allocating_since: Option<Instant>,
    task: tokio::task::JoinHandle<()>,
}

/// An ICE-TCP connection to one of the SFU's passive candidates.
struct IceTcp {
    writer: mpsc::Sender<Vec<u8>>,
    /// Our active candidate's address, which str0m expects frames to arrive at.
    local: SocketAddr,
}

/// The TURN servers among `ice_servers`; unusable entries are logged and skipped.
fn turn_servers(servers: &[IceServer]) -> Vec<(TurnUrl, String, String)> {
    let mut found = Vec::new();
    for server in servers {
        for url in server.urls.iter().filter(|u| u.starts_with("turn")) {
            match (url.parse::<TurnUrl>(), &server.username, &server.credential) {
                (Ok(parsed), Some(username), Some(credential)) => {
                    found.push((parsed, username.clone(), credential.clone()));
                }
                (Ok(_), _, _) => tracing::warn!(url, "TURN server without credentials; skipped"),
                (Err(e), _, _) => tracing::warn!("{e}; skipped"),
            }
        }
    }
    found
}

/// Starts connecting to every TURN server the SFU named.
async fn start_relays(
    options: &MediaOptions,
    events: &mpsc::Sender<NetEvent>,
    notices: &mpsc::Sender<MediaNotice>,
) -> Vec<RelaySlot> {
    let mut servers = turn_servers(&options.ice_servers);
    match options.only {
        Some(PathCheck::Turn(transport)) => servers.retain(|(url, ..)| url.transport == transport),
        Some(_) => servers.clear(),
        None => {}
    }
    if options.ice_policy == IcePolicy::Relay && servers.is_empty() {
        let _ = notices
            .send(MediaNotice::Line(serde_json::json!({
                "type": "cli_media_error",
                "error": "the relay policy needs a TURN server, and the server offered none",
            })))
            .await;
    }
    servers
        .into_iter()
        .enumerate()
        .map(|(index, (url, username, password))| RelaySlot {
            task: transport::connect_turn(
                index,
                url.clone(),
                options.network.clone(),
                events.clone(),
            ),
            url,
            username,
            password,
            writer: None,
            relay: None,
            connect_ms: None,
            allocating_since: None,
        })
        .collect()
}

struct Engine {
    stun: StunDiscovery,
    relays: Vec<RelaySlot>,
    ice_tcp: HashMap<SocketAddr, IceTcp>,
    net_events: mpsc::Sender<NetEvent>,
    /// The path last reported in a `cli_path` line.
    reported_path: Option<String>,
    options: MediaOptions,
    call: CallSession,
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    publisher: Publisher,
    audio: Arc<AudioShared>,
    playout: Playout,
    /// Per remote participant: stream clocks and the audio delay video follows.
    sync: HashMap<String, ParticipantSync>,
    /// Decoded pictures held until their audio is heard.
    held: HeldFrames<RemoteTrack, VideoFrame>,
    /// Per remote video track, its tile's size (`None`: paused).
    tile_sizes: HashMap<(String, String), Option<(u32, u32)>>,
    loss: LossSimulator,
    remotes: HashMap<RemoteTrack, RemoteState>,
    notices: mpsc::Sender<MediaNotice>,
    joined_at: Instant,
    media_connected_ms: Option<f64>,
    first_remote_frame_ms: Option<f64>,
}

/// Starts playout, then capture and encoding.
fn start_media(
    options: &MediaOptions,
    notices: &mpsc::Sender<MediaNotice>,
    encoded: mpsc::Sender<Encoded>,
) -> Result<(Arc<AudioShared>, Playout, Publisher), String> {
    let audio = AudioShared::new(&options.audio)?;
    let playout = Playout::start(&options.audio, Arc::clone(&audio), notices.clone())?;
    let capture = CaptureSetup {
        input: options.audio.input.clone(),
        shared: Arc::clone(&audio),
        record: options
            .audio
            .record_microphone
            .as_deref()
            .map(WavRecorder::create)
            .transpose()?,
        notices: notices.clone(),
    };
    let video = VideoSetup {
        input: options.video.clone(),
        size: options.resolution,
        fps: options.fps,
        enabled: options.camera_enabled,
        sink: options.video_sink.clone(),
        notices: notices.clone(),
    };
    let publisher = Publisher::start(video, capture, encoded)?;
    Ok((audio, playout, publisher))
}

/// Runs the call until [`MediaCommand::Stop`] or until the commands end.
pub async fn run(
    options: MediaOptions,
    participant_id: String,
    joined_at: Instant,
    mut commands: mpsc::Receiver<MediaCommand>,
    notices: mpsc::Sender<MediaNotice>,
) -> Result<CallReport, String> {
    // Under the relay policy no host socket is needed: nothing is sent from one.
    let only = options.only;
    let sockets = match options.ice_policy {
        IcePolicy::All if only.is_none_or(|o| o == PathCheck::Udp) => bind_sockets()?,
        _ => Vec::new(),
    };
    let locals: Vec<SocketAddr> = sockets.iter().map(|(a, _)| *a).collect();
    let (datagram_tx, mut datagrams) = mpsc::channel(1024);
    let readers = spawn_readers(&sockets, &datagram_tx);
    let (encoded_tx, mut encoded) = mpsc::channel(64);
    let (audio, playout, publisher) = start_media(&options, &notices, encoded_tx)?;
    for track in published_tracks(&options) {
        let _ = notices
            .send(MediaNotice::Send(ClientMessage::PublishTrack { track }))
            .await;
    }
    let stun = StunDiscovery::new(
        &locals,
        &resolve_stun(&options.ice_servers).await,
        Instant::now(),
    );
    let mut call = CallSession::new(participant_id.clone(), options.ice_policy, Instant::now());
    call.add_host_candidates(&locals);
    if only.is_none_or(|o| o == PathCheck::IceTcp) {
        call.add_tcp_candidates(&ice_tcp_ips(&local_ips()));
    }
    let (net_tx, mut net_events) = mpsc::channel::<NetEvent>(1024);
    let relays = start_relays(&options, &net_tx, &notices).await;
    let loss = LossSimulator::new(options.simulated_loss);
    let mut engine = Engine {
        stun,
        relays,
        ice_tcp: HashMap::new(),
        net_events: net_tx,
        reported_path: None,
        call,
        options,
        sockets,
        publisher,
        loss,
        audio,
        playout,
        sync: HashMap::new(),
        held: HeldFrames::default(),
        tile_sizes: HashMap::new(),
        remotes: HashMap::new(),
        notices,
        joined_at,
        media_connected_ms: None,
        first_remote_frame_ms: None,
    };
    loop {
        engine.send_stun_requests();
        let timeout = engine.next_timeout();
        tokio::select! {
            Some(datagram) = datagrams.recv() => {
                engine.receive_datagram(&datagram).await;
                // Take whatever else already arrived before handling outputs.
                while let Ok(datagram) = datagrams.try_recv() {
                    engine.receive_datagram(&datagram).await;
                }
            }
            Some(event) = net_events.recv() => {
                engine.handle_net(event).await;
                while let Ok(event) = net_events.try_recv() {
                    engine.handle_net(event).await;
                }
            }
            Some(unit) = encoded.recv() => engine.write(unit),
            command = commands.recv() => match command {
                Some(MediaCommand::Stop) | None => break,
                Some(command) => engine.handle_command(command).await,
            },
            () = sleep_until(timeout) => engine.handle_timeouts(Instant::now()),
        }
        engine.present_due(unix_micros());
        engine.drain().await;
    }
    for reader in readers {
        reader.abort();
    }
    for slot in &engine.relays {
        slot.task.abort();
    }
    engine.present_due(u64::MAX);
    let report = engine.report(participant_id);
    tokio::task::spawn_blocking(move || {
        engine.publisher.stop();
        engine.playout.stop();
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(report)
}

impl Engine {
    /// Takes the newest sender report that came before media at `packet_rtp`.
    fn follow_sender_report(
        &mut self,
        track: &RemoteTrack,
        report: Option<(u64, u64)>,
        packet_rtp: u64,
    ) {
        let Some((ntp_us, rtp_time)) = report else {
            return;
        };
        let sync = self.sync.entry(track.participant_id.clone()).or_default();
        let clock = match track.kind {
            TrackKind::Audio => &mut sync.audio,
            TrackKind::Video => &mut sync.video,
        };
        if clock.update(ntp_us, rtp_time, packet_rtp) == ReportUse::Refused {
            tracing::debug!(
                participant = track.participant_id,
                track = track.track_id,
                rtp_time,
                packet_rtp,
                "sender report far from the media ignored"
            );
        }
    }

    /// The earliest moment anything needs attention without input.
    fn next_timeout(&self) -> Option<Instant> {
        [self.call.poll_timeout(), self.stun.poll_timeout()]
            .into_iter()
            .chain(
                self.relays
                    .iter()
                    .map(|r| r.relay.as_ref().and_then(TurnRelay::poll_timeout)),
            )
            .chain([self.next_render()])
            .flatten()
            .min()
    }

    /// When the next held-back video frame is due.
    fn next_render(&self) -> Option<Instant> {
        let due = self.held.next_due_us()?;
        Some(Instant::now() + Duration::from_micros(due.saturating_sub(unix_micros())))
    }

    /// Shows the held-back video frames due by `until_us`: those whose
    /// audio is now being heard, or all of them when the call stops (every
    /// decoded picture is shown once).
    fn present_due(&mut self, until_us: u64) {
        let now = unix_micros();
        for (track, frame) in self.held.take_due(until_us) {
            if let Some(RemoteState {
                receiver: Receiver::Video(video),
                ..
            }) = self.remotes.get_mut(&track)
            {
                show_remote(self.options.video_sink.as_deref(), &track, &frame);
                video.present(frame, now);
            }
        }
    }

    async fn handle_command(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Server(msg) => self.handle_server(msg).await,
            MediaCommand::SubscribeSize { width, height } => {
                self.options.subscribe_size = Some((width, height));
                let tracks: Vec<RemoteTrack> = self.call.remote_tracks().cloned().collect();
                for track in tracks {
                    self.subscribe(&track).await;
                }
            }
            MediaCommand::SubscribeTrack {
                participant_id,
                track_id,
                size,
            } => {
                let track = self
                    .call
                    .remote_tracks()
                    .find(|t| t.participant_id == participant_id && t.track_id == track_id)
                    .cloned();
                self.tile_sizes.insert((participant_id, track_id), size);
                if let Some(track) = track {
                    self.subscribe(&track).await;
                }
            }
            MediaCommand::SetCameraEnabled(enabled) => {
                self.publisher.control(VideoControl::SetEnabled(enabled));
                self.send(ClientMessage::SetMuted {
                    track_id: CAMERA_TRACK.to_owned(),
                    muted: !enabled,
                })
                .await;
            }
            MediaCommand::SetCamera(input) => {
                self.publisher.control(VideoControl::SetInput(input));
            }
            MediaCommand::SetMicrophone(input) => self.publisher.set_microphone(input),
            MediaCommand::Report(reply) => {
                let _ = reply.send(self.report(self.call.participant_id().to_owned()));
            }
            MediaCommand::SetMuted(muted) => self.set_muted(muted).await,
            MediaCommand::SetSpeaker(choice) => {
                self.playout.command(PlayoutCommand::SetSpeaker(choice));
            }
            MediaCommand::SetVolume {
                participant_id,
                volume,
            } => self.audio.mixer().set_volume(&participant_id, volume),
            MediaCommand::Stop => {}
        }
    }

    async fn receive_datagram(&mut self, datagram: &Datagram) {
        let now = Instant::now();
        if self.stun.expects(datagram.source) {
            if let Some(found) =
                self.stun
                    .handle_response(datagram.source, datagram.local, &datagram.data)
                && let Some(candidate) = self.call.add_reflexive_candidate(found.mapped, found.base)
            {
                self.send(ClientMessage::IceCandidate(parley_proto::IceCandidate {
                    candidate,
                    sdp_mid: None,
                    sdp_m_line_index: None,
                }))
                .await;
            }
            return;
        }
        if self.loss.drops(&datagram.data) {
            return;
        }
        self.call.handle_datagram(
            Protocol::Udp,
            datagram.source,
            datagram.local,
            &datagram.data,
            now,
        );
    }

    fn handle_timeouts(&mut self, now: Instant) {
        self.call.handle_timeout(now);
        for slot in &mut self.relays {
            if let Some(relay) = &mut slot.relay {
                relay.handle_timeout(now);
            }
        }
    }

    async fn handle_net(&mut self, event: NetEvent) {
        let now = Instant::now();
        match event {
            NetEvent::TcpFrame { remote, data } => {
                if let Some(connection) = self.ice_tcp.get(&remote) {
                    let local = connection.local;
                    self.call
                        .handle_datagram(Protocol::Tcp, remote, local, &data, now);
                }
            }
            NetEvent::TcpClosed { remote, reason } => {
                tracing::debug!(%remote, reason, "ICE-TCP connection closed");
                self.ice_tcp.remove(&remote);
            }
            NetEvent::TurnConnected {
                index,
                local,
                server,
                writer,
                took,
            } => {
                let Some(slot) = self.relays.get_mut(index) else {
                    return;
                };
                slot.connect_ms = Some(took.as_secs_f64() * 1000.0);
                slot.allocating_since = Some(now);
                slot.writer = Some(writer);
                slot.relay = Some(TurnRelay::new(
                    slot.url.transport,
                    local,
                    server,
                    &slot.username,
                    &slot.password,
                    now,
                ));
            }
            NetEvent::TurnData { index, data } => {
                if let Some(relay) = self.relays.get_mut(index).and_then(|s| s.relay.as_mut()) {
                    relay.handle_server_data(&data, now);
                }
            }
            NetEvent::TurnClosed { index, reason } => {
                let Some(slot) = self.relays.get_mut(index) else {
                    return;
                };
                match &mut slot.relay {
                    Some(relay) => relay.transport_failed(&reason),
                    None => {
                        let url = slot.url.to_string();
                        self.relay_failed(&url, &reason).await;
                    }
                }
            }
        }
        self.pump_relays().await;
    }

    /// Moves what the relays produced: bytes to their servers, relayed
    /// packets into the call, new relayed candidates to the SFU.
    /// Returns true when it fed the call something (whose outputs then need draining).
    async fn pump_relays(&mut self) -> bool {
        let now = Instant::now();
        let mut fed_call = false;
        for index in 0..self.relays.len() {
            loop {
                let slot = &mut self.relays[index];
                let Some(event) = slot.relay.as_mut().and_then(TurnRelay::poll_event) else {
                    break;
                };
                match event {
                    RelayEvent::ToServer(bytes) => {
                        if let Some(writer) = &slot.writer {
                            writer.send(bytes);
                        }
                    }
                    RelayEvent::FromPeer { peer, data } => {
                        if let Some(relayed) = slot.relay.as_ref().and_then(TurnRelay::relayed) {
                            fed_call = true;
                            self.call
                                .handle_datagram(Protocol::Udp, peer, relayed, &data, now);
                        }
                    }
                    RelayEvent::Allocated { relayed } => {
                        let transport = slot.url.transport.name();
                        let Some(local) = slot.relay.as_ref().map(TurnRelay::local) else {
                            continue;
                        };
                        fed_call = true;
                        let url = slot.url.to_string();
                        let allocate_ms = slot
                            .allocating_since
                            .map(|t| now.duration_since(t).as_secs_f64() * 1000.0);
                        let connect_ms = slot.connect_ms;
                        tracing::info!(%url, %relayed, "TURN allocation made");
                        if let Some(candidate) =
                            self.call.add_relayed_candidate(relayed, local, transport)
                        {
                            self.send(ClientMessage::IceCandidate(parley_proto::IceCandidate {
                                candidate,
                                sdp_mid: None,
                                sdp_m_line_index: None,
                            }))
                            .await;
                        }
                        let ms = self.since_join_ms();
                        self.line(serde_json::json!({
                            "type": "cli_turn_allocated",
                            "url": url,
                            "transport": transport,
                            "relayed": relayed.to_string(),
                            "connect_ms": connect_ms,
                            "allocate_ms": allocate_ms,
                            "ms_since_join": ms,
                        }))
                        .await;
                    }
                    RelayEvent::Failed(reason) => {
                        let url = slot.url.to_string();
                        self.relay_failed(&url, &reason).await;
                    }
                }
            }
        }
        fed_call
    }

    async fn relay_failed(&mut self, url: &str, reason: &str) {
        tracing::warn!(url, reason, "TURN relay unusable");
        self.line(serde_json::json!({"type": "cli_turn_error", "url": url, "error": reason}))
            .await;
    }

    /// Sends one transmit of the call on the path its source names.
    fn transmit(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        match proto {
            Protocol::Tcp => {
                let connection = self.ice_tcp.entry(destination).or_insert_with(|| IceTcp {
                    writer: transport::connect_ice_tcp(destination, self.net_events.clone()),
                    local: source,
                });
                if let Some(frame) = ice_tcp::frame(data) {
                    let _ = connection.writer.try_send(frame);
                }
            }
            _ => {
                // A relayed source is one of (at most a few) allocations;
                // anything else leaves from the host socket it names.
                if let Some(relay) = self
                    .relays
                    .iter_mut()
                    .filter_map(|s| s.relay.as_mut())
                    .find(|r| r.relayed() == Some(source))
                {
                    relay.send(destination, data, Instant::now());
                } else if let Some((_, socket)) = self.sockets.iter().find(|(a, _)| *a == source) {
                    let _ = socket.try_send_to(data, destination);
                }
            }
        }
    }

    fn send_stun_requests(&mut self) {
        while let Some((base, server, request)) = self.stun.poll_transmit(Instant::now()) {
            if let Some((_, socket)) = self.sockets.iter().find(|(a, _)| *a == base) {
                let _ = socket.try_send_to(&request, server);
            }
        }
    }

    fn write(&mut self, unit: Encoded) {
        let now = Instant::now();
        match unit {
            Encoded::Video {
                layer,
                rtp_time,
                data,
            } => {
                self.call
                    .write_video(CAMERA_TRACK, Some(RIDS[layer]), rtp_time, &data, now);
            }
            Encoded::Audio {
                rtp_time,
                level,
                voice,
                data,
            } => {
                self.call
                    .write_audio(MICROPHONE_TRACK, rtp_time, level, voice, &data, now);
            }
        }
    }

    async fn handle_server(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::Offer { sdp, mids } => {
                let before: Vec<RemoteTrack> = self.call.remote_tracks().cloned().collect();
                match self.call.accept_offer(&sdp, &mids, Instant::now()) {
                    Ok(answer) => {
                        self.send(ClientMessage::Answer { sdp: answer }).await;
                        let added: Vec<RemoteTrack> = self
                            .call
                            .remote_tracks()
                            .filter(|t| !before.contains(t))
                            .cloned()
                            .collect();
                        for track in added {
                            self.subscribe(&track).await;
                        }
                        // Unpublished audio leaves the mix.
                        let after: Vec<RemoteTrack> = self.call.remote_tracks().cloned().collect();
                        for gone in before.iter().filter(|t| !after.contains(t)) {
                            self.audio.mixer().remove(&track_key(gone));
                            if let Some(sink) = &self.options.video_sink {
                                sink.clear(&remote_tile(&gone.participant_id, &gone.track_id));
                            }
                        }
                    }
                    Err(error) => {
                        self.line(serde_json::json!({"type": "cli_media_error", "error": error}))
                            .await;
                    }
                }
            }
            ServerMessage::PublishLayers { track_id, active } if track_id == CAMERA_TRACK => {
                for (layer, rid) in RIDS.iter().enumerate() {
                    self.publisher.control(VideoControl::SetActive {
                        layer,
                        active: active.iter().any(|a| a == rid),
                    });
                }
            }
            _ => {}
        }
    }

    /// Tells the SFU the tile size this remote video track is shown at:
    /// its own tile's size when the application gave one, else the size
    /// for every track.
    async fn subscribe(&mut self, track: &RemoteTrack) {
        if track.kind != TrackKind::Video {
            return;
        }
        let key = (track.participant_id.clone(), track.track_id.clone());
        let size = match self.tile_sizes.get(&key) {
            Some(size) => *size,
            None => match self.options.subscribe_size {
                Some(size) => Some(size),
                None => return,
            },
        };
        let (width, height) = size.unwrap_or((0, 0));
        self.send(ClientMessage::UpdateSubscription(SubscriptionPreference {
            participant_id: key.0,
            track_id: key.1,
            max_width: size.map(|_| width),
            max_height: size.map(|_| height),
            paused: size.is_none(),
        }))
        .await;
    }

    async fn set_muted(&mut self, muted: bool) {
        self.audio.muted.store(muted, Ordering::Relaxed);
        self.send(ClientMessage::SetMuted {
            track_id: MICROPHONE_TRACK.to_owned(),
            muted,
        })
        .await;
    }

    async fn send(&mut self, msg: ClientMessage) {
        let _ = self.notices.send(MediaNotice::Send(msg)).await;
    }

    async fn line(&mut self, value: serde_json::Value) {
        let _ = self.notices.send(MediaNotice::Line(value)).await;
    }

    fn since_join_ms(&self) -> f64 {
        self.joined_at.elapsed().as_secs_f64() * 1000.0
    }

    async fn drain(&mut self) {
        loop {
            self.drain_call().await;
            if !self.pump_relays().await {
                break;
            }
        }
        if let Some(path) = self.call.connection.path()
            && self.reported_path.as_ref() != Some(&path)
        {
            let connection = self.call.connection.clone();
            self.reported_path = Some(path.clone());
            self.line(serde_json::json!({
                "type": "cli_path",
                "path": path,
                "candidate": connection.local_candidate,
                "transport": connection.transport,
                "local": connection.local_address,
                "remote": connection.remote_address,
            }))
            .await;
        }
    }

    async fn drain_call(&mut self) {
        while let Some(output) = self.call.poll_output() {
            match output {
                CallOutput::Transmit {
                    proto,
                    source,
                    destination,
                    data,
                } => self.transmit(proto, source, destination, &data),
                CallOutput::Frame {
                    track,
                    rtp_time,
                    contiguous,
                    data,
                    sender_report,
                } => {
                    self.follow_sender_report(&track, sender_report, rtp_time);
                    self.receive(track, rtp_time, contiguous, &data).await;
                }
                CallOutput::KeyframeRequested { rid, .. } => {
                    for (layer, name) in RIDS.iter().enumerate() {
                        if rid.as_deref().is_none_or(|r| r == *name) {
                            self.publisher.control(VideoControl::Keyframe { layer });
                        }
                    }
                }
                CallOutput::Connected => {
                    let ms = self.since_join_ms();
                    self.media_connected_ms = Some(ms);
                    self.line(
                        serde_json::json!({"type": "cli_media_connected", "ms_since_join": ms}),
                    )
                    .await;
                }
                CallOutput::Failed(reason) => {
                    self.line(serde_json::json!({"type": "cli_media_error", "error": reason}))
                        .await;
                }
            }
        }
    }

    async fn receive(&mut self, track: RemoteTrack, rtp_time: u64, contiguous: bool, data: &[u8]) {
        let since_join = self.since_join_ms();
        let state = match self.remotes.entry(track.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let receiver = match track.kind {
                    TrackKind::Video => VideoReceiver::new().map(|r| Receiver::Video(Box::new(r))),
                    TrackKind::Audio => Ok(Receiver::Audio(Box::default())),
                };
                let Ok(receiver) = receiver else {
                    return;
                };
                entry.insert(RemoteState {
                    receiver,
                    first_frame_ms: None,
                    last_keyframe_request: None,
                })
            }
        };
        let mut lines = Vec::new();
        let mut wants_keyframe = false;
        let decoded_one = match &mut state.receiver {
            Receiver::Video(video) => {
                let now_us = unix_micros();
                let decoded = video.decode(data, contiguous).map(|(decoded, frame)| {
                    // Shown when the participant's audio of that moment is heard.
                    let sync = self.sync.entry(track.participant_id.clone()).or_default();
                    let due = sync
                        .video
                        .wall_time_us(rtp_time)
                        .and_then(|captured| sync.lipsync.render_at_us(captured, now_us as i64));
                    let due = due.map(|due| due.max(0) as u64);
                    for frame in self.held.push(track.clone(), frame, due, now_us) {
                        show_remote(self.options.video_sink.as_deref(), &track, &frame);
                        video.present(frame, now_us);
                    }
                    decoded
                });
                if let Some(decoded) = decoded
                    && decoded.resized
                {
                    lines.push(serde_json::json!({
                        "type": "cli_video_size",
                        "participant_id": track.participant_id,
                        "track_id": track.track_id,
                        "width": decoded.width,
                        "height": decoded.height,
                    }));
                }
                let now = Instant::now();
                if video.needs_keyframe()
                    && state
                        .last_keyframe_request
                        .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
                {
                    state.last_keyframe_request = Some(now);
                    wants_keyframe = true;
                }
                decoded.is_some()
            }
            Receiver::Audio(audio) => {
                audio.handle_frame(rtp_time);
                play_audio(&self.audio, &mut self.sync, &track, rtp_time, data);
                true
            }
        };
        if decoded_one && state.first_frame_ms.is_none() {
            state.first_frame_ms = Some(since_join);
            let kind = match track.kind {
                TrackKind::Audio => "audio",
                TrackKind::Video => "video",
            };
            // Insert before any size line of the same frame, as before.
            lines.insert(
                0,
                serde_json::json!({
                    "type": "cli_first_remote_frame",
                    "participant_id": track.participant_id,
                    "track_id": track.track_id,
                    "kind": kind,
                    "ms_since_join": since_join,
                }),
            );
            if track.kind == TrackKind::Video && self.first_remote_frame_ms.is_none() {
                self.first_remote_frame_ms = Some(since_join);
            }
        }
        if wants_keyframe {
            self.call.request_keyframe(&track, Instant::now());
        }
        for line in lines {
            self.line(line).await;
        }
    }

    fn report(&self, participant_id: String) -> CallReport {
        let mut published: Vec<PublishedReport> = self
            .call
            .egress
            .iter()
            .map(|((track_id, rid), transport)| PublishedReport {
                track_id: track_id.clone(),
                rid: rid.clone(),
                transport: transport.clone(),
            })
            .collect();
        published.sort_by(|a, b| (&a.track_id, &a.rid).cmp(&(&b.track_id, &b.rid)));
        let active: Vec<&RemoteTrack> = self.call.remote_tracks().collect();
        let playout = self.audio.mixer().stats();
        let mut remote: Vec<RemoteReport> = self
            .remotes
            .iter()
            .map(|(track, state)| RemoteReport {
                participant_id: track.participant_id.clone(),
                track_id: track.track_id.clone(),
                kind: track.kind,
                active: active.contains(&track),
                first_frame_ms: state.first_frame_ms,
                transport: self.call.ingress.get(track).cloned().unwrap_or_default(),
                video: match &state.receiver {
                    Receiver::Video(v) => Some(v.report()),
                    Receiver::Audio(_) => None,
                },
                audio: match &state.receiver {
                    Receiver::Audio(a) => {
                        let track = playout.iter().find(|p| p.key == track_key(track));
                        Some(a.report(
                            track.map(|t| t.jitter),
                            track.map_or(0, |t| t.decode_errors),
                        ))
                    }
                    Receiver::Video(_) => None,
                },
            })
            .collect();
        remote.sort_by(|a, b| {
            (&a.participant_id, &a.track_id).cmp(&(&b.participant_id, &b.track_id))
        });
        CallReport {
            participant_id,
            media_connected_ms: self.media_connected_ms,
            first_remote_frame_ms: self.first_remote_frame_ms,
            connection: self.call.connection.clone(),
            published,
            remote,
        }
    }
}

/// Hands a remote picture to the application's sink, when it has one.
fn show_remote(sink: Option<&dyn VideoSink>, track: &RemoteTrack, frame: &VideoFrame) {
    if let Some(sink) = sink {
        sink.show(&remote_tile(&track.participant_id, &track.track_id), frame);
    }
}

/// Hands an Opus packet to the mixer, and tells lip sync which of this
/// participant's audio was mixed last and when it will be heard.
fn play_audio(
    audio: &AudioShared,
    sync: &mut HashMap<String, ParticipantSync>,
    track: &RemoteTrack,
    rtp_time: u64,
    data: &[u8],
) {
    let key = track_key(track);
    let mut mixer = audio.mixer();
    mixer.push(
        &key,
        &track.participant_id,
        rtp_time,
        data.to_vec(),
        unix_micros(),
    );
    let played = mixer.last_played(&key);
    drop(mixer);
    let sync = sync.entry(track.participant_id.clone()).or_default();
    if let Some((rtp, mixed_at)) = played
        && let Some(captured) = sync.audio.wall_time_us(rtp)
    {
        let queued_us = u64::from(audio.playout_delay_ms.load(Ordering::Relaxed)) * 1000;
        sync.lipsync
            .audio_heard(captured, (mixed_at + queued_us) as i64);
    }
}

/// One remote participant's stream clocks (from sender reports) and lip sync.
#[derive(Debug)]
struct ParticipantSync {
    audio: SenderClock,
    video: SenderClock,
    lipsync: LipSync,
}

impl Default for ParticipantSync {
    fn default() -> Self {
        Self {
            audio: SenderClock::new(48_000),
            video: SenderClock::new(90_000),
            lipsync: LipSync::default(),
        }
    }
}

/// The mixer's name for a remote track.
fn track_key(track: &RemoteTrack) -> String {
    format!("{}/{}", track.participant_id, track.track_id)
}

/// Drops a share of incoming RTP and RTCP (never STUN or DTLS, so the
/// connection itself is not what suffers), spread evenly by a fixed
/// sequence so runs are repeatable.
#[derive(Debug)]
struct LossSimulator {
    share: f64,
    state: u64,
}

impl LossSimulator {
    fn new(share: f64) -> Self {
        Self {
            share: share.clamp(0.0, 1.0),
            state: 0x853c_49e6_748f_ea9b,
        }
    }

    fn drops(&mut self, datagram: &[u8]) -> bool {
        // RFC 7983: 128..=191 is RTP or RTCP.
        if self.share <= 0.0 || !datagram.first().is_some_and(|b| (128..=191).contains(b)) {
            return false;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 11) as f64 / (1u64 << 53) as f64) < self.share
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
