//! Access-token claims: what a signed JWT (HS256) lets its bearer do.

use serde::{Deserialize, Serialize};

/// Claims of a Parley access token. The server signs and verifies them; a
/// client treats the token as opaque.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Identity: stable per person or bot, unique within a room.
    pub sub: String,
    /// The one room this token admits to.
    pub room: String,
    /// Display name; the `join` message's name is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the bearer may do once joined.
    #[serde(default)]
    pub grants: Grants,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Actions a participant may take. Every grant defaults to allowed, so a token
/// with no `grants` object is a full participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    /// Publish audio and video tracks.
    pub publish: bool,
    /// Receive other participants' tracks.
    pub subscribe: bool,
    /// Send chat messages (receiving chat is always allowed).
    pub chat: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self::ALL
    }
}

impl Grants {
    /// Everything allowed: open mode and tokens without a `grants` object.
    pub const ALL: Grants = Grants {
        publish: true,
        subscribe: true,
        chat: true,
    };
    /// Nothing but watching the room's presence and reading chat.
    pub const NONE: Grants = Grants {
        publish: false,
        subscribe: false,
        chat: false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_grants_default_to_all() {
        let claims: AccessClaims =
            serde_json::from_str(r#"{"sub":"ada","room":"r","iat":1,"exp":2}"#).unwrap();
        assert_eq!(claims.grants, Grants::ALL);
        let partial: AccessClaims = serde_json::from_str(
            r#"{"sub":"ada","room":"r","iat":1,"exp":2,"grants":{"chat":false}}"#,
        )
        .unwrap();
        assert!(partial.grants.publish && partial.grants.subscribe && !partial.grants.chat);
    }
}
