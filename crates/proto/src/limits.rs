//! Every limit the server enforces. Clients should respect them up front; the
//! server answers a breach with an `error` carrying the matching [`crate::ErrorCode`].

use std::time::Duration;

/// Largest signaling message the server processes. Larger text frames up to
/// [`MAX_FRAME_BYTES`] get a `message_too_large` error and the connection stays open.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Beyond this a frame is not even read: the connection is closed with code 1009.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Chat text, in UTF-8 bytes.
pub const MAX_CHAT_BYTES: usize = 4 * 1024;
/// Room names, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Display names, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Identities, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;
/// Client-chosen ids (chat `client_id`, track ids), in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;
/// Access tokens, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4 * 1024;
/// SDP offers and answers, in bytes: room for about 35 publishing
/// participants (audio and video) in one session, and still inside
/// [`MAX_MESSAGE_BYTES`] once JSON-escaped.
pub const MAX_SDP_BYTES: usize = 56 * 1024;

/// Largest packet in one ICE-TCP frame: WebRTC packets stay under the path
/// MTU, so anything bigger is not media and closes the connection.
pub const MAX_ICE_TCP_FRAME: usize = 2048;
/// One trickled ICE candidate line, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;
/// Tracks one participant may publish at once.
pub const MAX_TRACKS_PER_PARTICIPANT: usize = 8;
/// Versions a client may offer in `join`.
pub const MAX_OFFERED_VERSIONS: usize = 16;
/// Chat messages a room keeps and sends to every joiner.
pub const CHAT_HISTORY: usize = 500;
/// Chat burst a participant may send at once...
pub const CHAT_BURST: u32 = 10;
/// `publish_track` messages a participant may send at once...
pub const PUBLISH_BURST: u32 = 10;
/// ...and then per second. Every publication adds an m-line to every
/// subscriber's session for good (stopped m-lines stay in the SDP), so
/// publishing in a loop would bloat everyone's session.
pub const PUBLISH_PER_SECOND: f64 = 0.2;
/// ...after which it may send this many messages per second.
pub const CHAT_PER_SECOND: f64 = 2.0;
/// Burst of signaling messages of any kind per connection...
pub const MESSAGE_BURST: u32 = 100;
/// ...after which it may send this many per second.
pub const MESSAGES_PER_SECOND: f64 = 50.0;
/// A connection that has not joined by then is closed.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing (not even a WebSocket pong) for this long is dropped.
/// Clients send `ping` at least every [`PING_INTERVAL`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(40);
/// How often clients should send `ping`.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
