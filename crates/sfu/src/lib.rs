//! `parley-sfu`: rooms, signaling, chat, access tokens and the media plane
//! (ICE-lite sessions on one UDP port, RTP forwarding with simulcast layer
//! selection, dynacast and active speakers) for Parley.
//!
//! The crate is a sans-IO core ([`core::Sfu`]) with a thin tokio driver
//! ([`server`]). The core is a state machine: the driver feeds it what
//! happened, with the time, then drains its outputs and sleeps until its
//! next timeout. The run-loop contract:
//!
//! ```no_run
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use parley_sfu::core::{CoreConfig, Output, Sfu};
//! use parley_sfu::metrics::Metrics;
//!
//! let now = Instant::now();
//! let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
//! let mut sfu = Sfu::new(CoreConfig::default(), Metrics::default(), now, unix_ms, [7; 32]);
//!
//! // 1. Tell the core one thing that happened...
//! sfu.handle_connect(1, now);
//! sfu.handle_text(1, r#"{"type":"join","protocol":[1],"room":"demo","name":"Ada"}"#, now);
//! // 2. ...then drain every output before feeding it anything else.
//! while let Some(output) = sfu.poll_output() {
//!     match output {
//!         Output::Send { to, msg } => { /* serialize once, queue on each connection */ }
//!         Output::Close { conn, reason } => { /* flush that connection, then close it */ }
//!         Output::Transmit { proto, source, destination, data } => {
//!             /* send from the media port (UDP, or one frame on an ICE-TCP connection) */
//!         }
//!     }
//! }
//! // Datagrams from the media port go in the same way:
//! // sfu.handle_datagram(proto, source, destination, &bytes, now);
//! // 3. Sleep until the next deadline (or the next network event), then:
//! if let Some(deadline) = sfu.poll_timeout() {
//!     sfu.handle_timeout(deadline);
//! }
//! ```

pub mod auth;
pub mod config;
pub mod core;
pub mod forward;
pub mod media;
pub mod metrics;
pub mod server;
