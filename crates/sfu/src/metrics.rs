//! Prometheus metrics, served on `/metrics`.
//!
//! The counters are atomics shared between the room core (which updates them)
//! and the HTTP handler (which encodes them).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JoinLabels {
    /// `new` or `resumed`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `not_media`, `unknown_source`, `bad_stun`, `too_many_addresses` or `rejected`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub rooms: Gauge,
    pub participants: Gauge,
    pub connections: Gauge,
    pub joins: Family<JoinLabels, Counter>,
    pub chat_messages: Counter,
    pub chat_duplicates: Counter,
    pub signaling_messages: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub slow_consumers: Counter,
    pub media_sessions: Gauge,
    pub media_failures: Counter,
    pub media_packets_received: Counter,
    pub media_packets_forwarded: Counter,
    pub media_bytes_forwarded: Counter,
    pub media_keyframe_requests: Counter,
    pub media_layer_switches: Counter,
    pub media_dynacast_changes: Counter,
    pub media_datagrams_dropped: Family<DropLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "parley_rooms",
            "Rooms with at least one participant",
            self.rooms.clone(),
        );
        registry.register(
            "parley_participants",
            "Participants in all rooms, including those inside their resume window",
            self.participants.clone(),
        );
        registry.register(
            "parley_connections",
            "Open signaling connections",
            self.connections.clone(),
        );
        registry.register("parley_joins", "Successful joins", self.joins.clone());
        registry.register(
            "parley_chat_messages",
            "Chat messages accepted",
            self.chat_messages.clone(),
        );
        registry.register(
            "parley_chat_duplicates",
            "Chat messages recognised as resends and not stored again",
            self.chat_duplicates.clone(),
        );
        registry.register(
            "parley_signaling_messages",
            "Signaling messages received",
            self.signaling_messages.clone(),
        );
        registry.register(
            "parley_signaling_errors",
            "Error messages sent, by code",
            self.errors.clone(),
        );
        registry.register(
            "parley_slow_consumers",
            "Connections closed because they did not read their messages",
            self.slow_consumers.clone(),
        );
        registry.register(
            "parley_media_sessions",
            "Open media sessions (one per participant that asked for media)",
            self.media_sessions.clone(),
        );
        registry.register(
            "parley_media_failures",
            "Media sessions closed because ICE failed, timed out or the session errored",
            self.media_failures.clone(),
        );
        registry.register(
            "parley_media_packets_received",
            "RTP packets received from publishers",
            self.media_packets_received.clone(),
        );
        registry.register(
            "parley_media_packets_forwarded",
            "RTP packets forwarded to subscribers",
            self.media_packets_forwarded.clone(),
        );
        registry.register(
            "parley_media_bytes_forwarded",
            "RTP payload bytes forwarded to subscribers",
            self.media_bytes_forwarded.clone(),
        );
        registry.register(
            "parley_media_keyframe_requests",
            "Keyframe requests (PLI) sent to publishers",
            self.media_keyframe_requests.clone(),
        );
        registry.register(
            "parley_media_layer_switches",
            "Simulcast layer changes for a subscriber",
            self.media_layer_switches.clone(),
        );
        registry.register(
            "parley_media_dynacast_changes",
            "Layers paused or resumed at a publisher",
            self.media_dynacast_changes.clone(),
        );
        registry.register(
            "parley_media_datagrams_dropped",
            "Datagrams on the media port dropped before reaching a session, by reason",
            self.media_datagrams_dropped.clone(),
        );
    }

    pub fn count_error(&self, code: parley_proto::ErrorCode) {
        self.errors
            .get_or_create(&ErrorLabels {
                code: code.as_str(),
            })
            .inc();
    }
}
