//! Machine-readable error codes carried by the `error` message.

use serde::{Deserialize, Serialize};

/// Why the server refused a message. Serialized as `snake_case` strings.
///
/// Clients must treat an unknown code like [`ErrorCode::Internal`]: new codes
/// may be added without a protocol version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or a known `type` with missing or ill-typed fields.
    BadMessage,
    /// The `type` field names no message this server knows.
    UnknownType,
    /// The text frame exceeded `limits::MAX_MESSAGE_BYTES`.
    MessageTooLarge,
    /// `join` offered no protocol version this server speaks.
    UnsupportedVersion,
    /// The message needs a joined session; send `join` first.
    NotJoined,
    /// `join` on a connection that already joined.
    AlreadyJoined,
    /// Room name empty, too long, or with characters outside `[A-Za-z0-9._-]`.
    InvalidRoom,
    /// Display name empty, too long, or with control or bidi-override characters.
    InvalidName,
    /// Identity empty, too long, or with control characters.
    InvalidIdentity,
    /// The server requires an access token and none was given.
    TokenRequired,
    /// The token's signature or format is wrong.
    TokenInvalid,
    /// The token's `exp` has passed (or its `nbf` is in the future).
    TokenExpired,
    /// The token is for another room.
    TokenWrongRoom,
    /// The token does not grant this action (publish, subscribe or chat).
    PermissionDenied,
    /// Chat text over `limits::MAX_CHAT_BYTES`.
    ChatTooLong,
    /// Chat text empty, only whitespace, or with control characters other than newline and tab.
    ChatInvalid,
    /// A client-chosen id (chat `client_id`, track id) is empty, too long or has bad characters.
    InvalidId,
    /// Too many messages; `retry_after_ms` says when to try again.
    RateLimited,
    /// The room has as many participants as the server allows.
    RoomFull,
    /// The named participant is not in the room.
    UnknownParticipant,
    /// The named track is not published.
    UnknownTrack,
    /// A track with this id is already published by this participant.
    DuplicateTrack,
    /// More tracks than `limits::MAX_TRACKS_PER_PARTICIPANT`.
    TooManyTracks,
    /// SDP or ICE candidate malformed or too large.
    InvalidSdp,
    /// This server has no media plane; SDP and candidates cannot be answered.
    MediaUnavailable,
    /// The media session failed (ICE did not connect in time, or the peer
    /// connection broke) and was closed; signaling and chat continue.
    MediaFailed,
    /// A bug or resource problem on the server. Codes this build does not
    /// know also decode as `Internal`, as the protocol asks of clients.
    #[serde(other)]
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (for metrics and documentation).
    pub const ALL: &'static [ErrorCode] = &[
        Self::BadMessage,
        Self::UnknownType,
        Self::MessageTooLarge,
        Self::UnsupportedVersion,
        Self::NotJoined,
        Self::AlreadyJoined,
        Self::InvalidRoom,
        Self::InvalidName,
        Self::InvalidIdentity,
        Self::TokenRequired,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::TokenWrongRoom,
        Self::PermissionDenied,
        Self::ChatTooLong,
        Self::ChatInvalid,
        Self::InvalidId,
        Self::RateLimited,
        Self::RoomFull,
        Self::UnknownParticipant,
        Self::UnknownTrack,
        Self::DuplicateTrack,
        Self::TooManyTracks,
        Self::InvalidSdp,
        Self::MediaUnavailable,
        Self::MediaFailed,
        Self::Internal,
    ];

    /// The wire name, e.g. `"rate_limited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::UnknownType => "unknown_type",
            Self::MessageTooLarge => "message_too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::InvalidRoom => "invalid_room",
            Self::InvalidName => "invalid_name",
            Self::InvalidIdentity => "invalid_identity",
            Self::TokenRequired => "token_required",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenWrongRoom => "token_wrong_room",
            Self::PermissionDenied => "permission_denied",
            Self::ChatTooLong => "chat_too_long",
            Self::ChatInvalid => "chat_invalid",
            Self::InvalidId => "invalid_id",
            Self::RateLimited => "rate_limited",
            Self::RoomFull => "room_full",
            Self::UnknownParticipant => "unknown_participant",
            Self::UnknownTrack => "unknown_track",
            Self::DuplicateTrack => "duplicate_track",
            Self::TooManyTracks => "too_many_tracks",
            Self::InvalidSdp => "invalid_sdp",
            Self::MediaUnavailable => "media_unavailable",
            Self::MediaFailed => "media_failed",
            Self::Internal => "internal",
        }
    }

    /// Whether a failed `join` with this code leaves the connection usable for
    /// another `join`. Auth and version failures close it: retrying on the same
    /// socket cannot succeed.
    pub fn closes_connection_on_join(self) -> bool {
        matches!(
            self,
            Self::UnsupportedVersion
                | Self::TokenRequired
                | Self::TokenInvalid
                | Self::TokenExpired
                | Self::TokenWrongRoom
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn unknown_codes_decode_as_internal() {
        let code: ErrorCode = serde_json::from_str("\"quantum_flux\"").unwrap();
        assert_eq!(code, ErrorCode::Internal);
    }
}
