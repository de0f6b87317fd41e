//! Every signaling message of protocol v1.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Grants};

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a room. Must be the first message on a connection.
    Join(Join),
    /// Leave the room; the server answers with `bye` and closes the connection.
    Leave {},
    /// Send a chat message to the whole room.
    ChatSend {
        /// Chosen by the client, unique per identity (a UUID is fine). A resend
        /// with the same id after a reconnect does not create a second message.
        client_id: String,
        /// UTF-8 text, at most `limits::MAX_CHAT_BYTES`.
        text: String,
    },
    /// Announce a track this participant publishes.
    PublishTrack { track: TrackInfo },
    /// Withdraw a published track.
    UnpublishTrack { track_id: String },
    /// Mute or unmute one of this participant's tracks.
    SetMuted { track_id: String, muted: bool },
    /// How this participant wants to receive one remote track.
    UpdateSubscription(SubscriptionPreference),
    /// SDP offer for this participant's peer connection.
    Offer { sdp: String },
    /// SDP answer to an offer from the server.
    Answer { sdp: String },
    /// A trickled ICE candidate; an empty `candidate` means end of candidates.
    IceCandidate(IceCandidate),
    /// Liveness probe; the server answers `pong` with the same id.
    Ping { id: u64 },
}

/// The `join` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Protocol versions the client speaks; the server picks the newest common one.
    pub protocol: Vec<u16>,
    /// Room to enter; created on first join.
    pub room: String,
    /// Display name shown to others (a token's `name` claim takes precedence).
    pub name: String,
    /// Access token; required unless the server runs in open mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Open mode only: a stable identity chosen by the client, so that a
    /// rejoin is recognised. Ignored when a token names the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Resume a session that lost its connection, keeping its participant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// Ask for a media session: the server follows `joined` with an `offer`.
    /// Signaling-only clients (chat bots) leave it false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub media: bool,
}

/// Resumption data from an earlier `joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The `resume_token` from the earlier `joined`.
    pub token: String,
    /// The highest chat `seq` the client has; history starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_chat_seq: Option<u64>,
}

/// A per-track receive preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionPreference {
    pub participant_id: String,
    pub track_id: String,
    /// Width of the tile that shows the track, in pixels; the server picks the
    /// smallest simulcast layer that covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    /// Height of that tile, in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Stop forwarding the track entirely (tile hidden or scrolled away).
    #[serde(default)]
    pub paused: bool,
}

/// A trickled ICE candidate, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` attribute value, or empty for end-of-candidates.
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to a successful `join`.
    Joined(Box<Joined>),
    /// Someone entered the room.
    ParticipantJoined { participant: ParticipantInfo },
    /// Someone left the room.
    ParticipantLeft {
        participant_id: String,
        reason: LeaveReason,
    },
    /// A participant published a track.
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
    },
    /// A participant withdrew a track.
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    /// A participant muted or unmuted a track.
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
    },
    /// A chat message, to everyone in the room including its sender.
    ChatMessage(ChatMessage),
    /// Who is speaking, loudest first; an empty list means silence.
    ActiveSpeakers { speakers: Vec<SpeakerLevel> },
    /// SDP offer from the server; every offer in a session comes from it.
    Offer {
        sdp: String,
        /// What each active m-line of the offer carries.
        mids: Vec<MediaLine>,
    },
    /// Which simulcast layers of a published video track anyone receives;
    /// the publisher should encode only these (dynacast).
    PublishLayers {
        track_id: String,
        /// Rids to send, lowest first; empty pauses the whole track.
        active: Vec<String>,
    },
    /// A trickled ICE candidate from the server.
    IceCandidate(IceCandidate),
    /// A message was refused. The connection stays usable unless a `bye` follows.
    Error(ErrorBody),
    /// Answer to `ping`.
    Pong { id: u64 },
    /// The server is about to close the connection, and why.
    Bye { reason: ByeReason, message: String },
}

/// One m-line of a server offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaLine {
    pub mid: String,
    /// Whose track the m-line carries: the receiver's own id for a track it
    /// publishes (it sends), anyone else's for a subscription (it receives).
    pub participant_id: String,
    pub track_id: String,
    pub kind: TrackKind,
}

/// Everything a client needs right after joining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// The negotiated protocol version.
    pub protocol: u16,
    pub room: String,
    /// This participant's id, unique in the room.
    pub participant_id: String,
    pub identity: String,
    pub name: String,
    pub grants: Grants,
    /// Secret; send it in `join.resume.token` to resume after a lost connection.
    pub resume_token: String,
    /// How long after a lost connection the session can still be resumed, in ms.
    pub resume_window_ms: u64,
    /// True when this join resumed an earlier session (same participant id,
    /// others saw no leave/join).
    pub resumed: bool,
    /// Everyone else in the room, with their tracks.
    pub participants: Vec<ParticipantInfo>,
    /// The room's recent chat, oldest first (after `resume.last_chat_seq` when resuming).
    pub chat_history: Vec<ChatMessage>,
    /// STUN/TURN servers, with credentials minted for this join.
    pub ice_servers: Vec<IceServer>,
    /// The limits this server enforces.
    pub limits: ServerLimits,
}

/// Limits advertised in `joined`, so clients need not hard-code them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerLimits {
    pub max_message_bytes: usize,
    pub max_chat_bytes: usize,
    pub chat_burst: u32,
    pub chat_per_second: f64,
    pub ping_interval_ms: u64,
    pub max_participants: usize,
}

/// A participant as seen by others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Chosen by the publisher, unique among its tracks (e.g. `"camera"`).
    pub id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    #[serde(default)]
    pub muted: bool,
    /// Simulcast layers of a video track, lowest first; empty for audio.
    #[serde(default)]
    pub layers: Vec<VideoLayer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    ScreenShare,
}

/// One simulcast encoding of a video track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoLayer {
    /// RTP stream id: `q` (quarter), `h` (half) or `f` (full).
    pub rid: String,
    pub width: u32,
    pub height: u32,
}

/// A chat message as stored and delivered by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Room-wide sequence number: 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// Server receive time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub participant_id: String,
    pub identity: String,
    pub name: String,
    /// The sender's `client_id`, echoed so the sender can match its message.
    pub client_id: String,
    pub text: String,
}

/// One entry of `active_speakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerLevel {
    pub participant_id: String,
    /// Audio level from 0.0 (silence) to 1.0 (full scale).
    pub level: f32,
}

/// A STUN or TURN server in the WebRTC `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The body of an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For people; do not parse.
    pub message: String,
    /// The `type` of the message that caused the error, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// For chat errors: the refused message's `client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// For `rate_limited`: when a retry will be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            in_reply_to: None,
            client_id: None,
            retry_after_ms: None,
        }
    }

    #[must_use]
    pub fn in_reply_to(mut self, message_type: impl Into<String>) -> Self {
        self.in_reply_to = Some(message_type.into());
        self
    }
}

/// Why a participant left, as told to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// The same identity joined again from elsewhere.
    Replaced,
    /// Its connection was lost and not resumed within the resume window.
    /// Reasons this build does not know decode as `Disconnected`.
    #[serde(other)]
    Disconnected,
}

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// Answer to `leave`.
    Left,
    /// The server is shutting down; reconnect later or elsewhere.
    ServerShutdown,
    /// The same identity joined the room on another connection.
    DuplicateIdentity,
    /// This session was resumed on another connection.
    Resumed,
    /// `join` failed in a way that retrying on this connection cannot fix.
    JoinRefused,
    /// No `join` within `limits::JOIN_TIMEOUT`.
    JoinTimeout,
    /// Nothing received for `limits::IDLE_TIMEOUT`.
    IdleTimeout,
    /// The client did not read its messages fast enough.
    TooSlow,
    /// A reason this build does not know; the session is over.
    #[serde(other)]
    Other,
}

impl ClientMessage {
    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Join(_) => "join",
            Self::Leave {} => "leave",
            Self::ChatSend { .. } => "chat_send",
            Self::PublishTrack { .. } => "publish_track",
            Self::UnpublishTrack { .. } => "unpublish_track",
            Self::SetMuted { .. } => "set_muted",
            Self::UpdateSubscription(_) => "update_subscription",
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::IceCandidate(_) => "ice_candidate",
            Self::Ping { .. } => "ping",
        }
    }

    /// Every client message type, for telling unknown types from malformed messages.
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "leave",
        "chat_send",
        "publish_track",
        "unpublish_track",
        "set_muted",
        "update_subscription",
        "offer",
        "answer",
        "ice_candidate",
        "ping",
    ];
}

impl ServerMessage {
    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Joined(_) => "joined",
            Self::ParticipantJoined { .. } => "participant_joined",
            Self::ParticipantLeft { .. } => "participant_left",
            Self::TrackPublished { .. } => "track_published",
            Self::TrackUnpublished { .. } => "track_unpublished",
            Self::TrackMuted { .. } => "track_muted",
            Self::ChatMessage(_) => "chat_message",
            Self::ActiveSpeakers { .. } => "active_speakers",
            Self::PublishLayers { .. } => "publish_layers",
            Self::Offer { .. } => "offer",
            Self::IceCandidate(_) => "ice_candidate",
            Self::Error(_) => "error",
            Self::Pong { .. } => "pong",
            Self::Bye { .. } => "bye",
        }
    }

    /// Shorthand for an `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ErrorBody::new(code, message))
    }
}
