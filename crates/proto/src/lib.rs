//! The contract between Parley clients and `parley-sfu`.
//!
//! Signaling is JSON over WebSocket. Every message is one JSON object whose
//! `type` field names its variant ([`ClientMessage`] from client to server,
//! [`ServerMessage`] the other way). The protocol version is negotiated by the
//! `join` message; [`limits`] holds every size and rate the server enforces and
//! [`validate`] the rules for names, ids and chat text, so that the client can
//! refuse bad input before sending it and the server answers it the same way.
//!
//! `docs/protocol.md` is the human-readable specification of this crate.
//!
//! ```no_run
//! use parley_proto::{ClientMessage, ServerMessage, parse_client_message};
//!
//! let wire = r#"{"type":"ping","id":7}"#;
//! let msg = parse_client_message(wire).expect("valid ping");
//! assert_eq!(msg, ClientMessage::Ping { id: 7 });
//! let reply = serde_json::to_string(&ServerMessage::Pong { id: 7 }).unwrap();
//! assert_eq!(reply, r#"{"type":"pong","id":7}"#);
//! ```

pub mod claims;
pub mod codecs;
pub mod error;
pub mod ice_tcp;
pub mod limits;
pub mod messages;
pub mod parse;
pub mod validate;

pub use claims::{AccessClaims, Grants};
pub use error::ErrorCode;
pub use messages::*;
pub use parse::{ParseError, parse_client_message, parse_server_message};

/// Protocol versions this build speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Picks the newest version both sides speak, or `None` when they share none.
pub fn negotiate_version(offered: &[u16]) -> Option<u16> {
    offered
        .iter()
        .copied()
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_newest_common_version() {
        assert_eq!(negotiate_version(&[1]), Some(1));
        assert_eq!(negotiate_version(&[3, 1, 2]), Some(1));
        assert_eq!(negotiate_version(&[2, 3]), None);
        assert_eq!(negotiate_version(&[]), None);
    }
}
