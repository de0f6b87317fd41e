//! Parley's call engine: the signaling session and its driver, and the media
//! call ([`media`]) that `parley-cli --fake-media` runs.
//!
//! [`session::SignalingSession`] is sans-IO: it decides what to send (join,
//! resume, chat resends) and what happened, with `now` passed in.
//! [`driver`] moves its messages over a WebSocket and reconnects. The contract:
//!
//! ```no_run
//! use std::time::Instant;
//! use parley_client::session::{JoinParams, SignalingSession};
//!
//! let mut session = SignalingSession::new(JoinParams::new("standup", "Ada"));
//! session.handle_connected(Instant::now());
//! while let Some(message) = session.poll_transmit() {
//!     // serialize and send `message` on the WebSocket
//! }
//! // feed every received message to session.handle_message(msg, now),
//! // then drain poll_transmit() and poll_event() again.
//! ```

pub mod conference;
pub mod doctor;
pub mod driver;
pub mod media;
pub mod net;
pub mod profile;
pub mod session;
pub mod ws;
