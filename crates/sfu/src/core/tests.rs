//! The core driven through simulated time: no sockets, no clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_proto::{
    AccessClaims, ByeReason, ChatMessage, ErrorCode, Grants, Joined, LeaveReason, ServerMessage,
    limits,
};
use serde_json::json;

use super::{ConnId, CoreConfig, Output, Sfu};
use crate::auth::{TokenAuthority, TurnCredentials};
use crate::metrics::Metrics;

const SECRET: &[u8] = b"test-secret-that-is-long-enough!";
const UNIX_START_MS: u64 = 1_800_000_000_000;

struct Harness {
    sfu: Sfu,
    now: Instant,
    next_conn: ConnId,
    inbox: HashMap<ConnId, Vec<ServerMessage>>,
    closed: HashSet<ConnId>,
    close_reasons: HashMap<ConnId, ByeReason>,
}

impl Harness {
    fn new(config: CoreConfig) -> Self {
        let now = Instant::now();
        Self {
            sfu: Sfu::new(config, Metrics::default(), now, UNIX_START_MS, [42; 32]),
            now,
            next_conn: 1,
            inbox: HashMap::new(),
            closed: HashSet::new(),
            close_reasons: HashMap::new(),
        }
    }

    fn open() -> Self {
        Self::new(CoreConfig::default())
    }

    fn connect(&mut self) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.sfu.handle_connect(conn, self.now);
        conn
    }

    fn send(&mut self, conn: ConnId, msg: &serde_json::Value) {
        self.send_text(conn, &msg.to_string());
    }

    fn send_text(&mut self, conn: ConnId, text: &str) {
        self.sfu.handle_text(conn, text, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(output) = self.sfu.poll_output() {
            match output {
                Output::Send { to, msg } => {
                    for conn in to {
                        assert!(!self.closed.contains(&conn), "message after close: {msg:?}");
                        self.inbox.entry(conn).or_default().push(msg.clone());
                    }
                }
                Output::Close { conn, reason } => {
                    self.closed.insert(conn);
                    self.close_reasons.insert(conn, reason);
                }
                Output::Transmit { .. } => panic!("no media plane in these tests"),
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(deadline) = self.sfu.poll_timeout().filter(|d| *d <= until) {
            self.now = self.now.max(deadline);
            self.sfu.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    /// Closes the connection from the client side, as the driver would report it.
    fn drop_conn(&mut self, conn: ConnId) {
        self.sfu.handle_disconnect(conn, self.now);
        self.drain();
    }

    fn take(&mut self, conn: ConnId) -> Vec<ServerMessage> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    fn join(&mut self, room: &str, name: &str) -> (ConnId, Box<Joined>) {
        let conn = self.connect();
        self.send(
            conn,
            &json!({"type": "join", "protocol": [1], "room": room, "name": name}),
        );
        let joined = self.expect_joined(conn);
        (conn, joined)
    }

    fn expect_joined(&mut self, conn: ConnId) -> Box<Joined> {
        match self.take(conn).as_slice() {
            [ServerMessage::Joined(joined)] => joined.clone(),
            other => panic!("expected joined, got {other:?}"),
        }
    }

    fn expect_error(&mut self, conn: ConnId, code: ErrorCode) -> parley_proto::ErrorBody {
        let messages = self.take(conn);
        match messages.first() {
            Some(ServerMessage::Error(body)) if body.code == code => body.clone(),
            _ => panic!("expected {code} error, got {messages:?}"),
        }
    }

    fn chat(&mut self, conn: ConnId, client_id: &str, text: &str) {
        self.send(
            conn,
            &json!({"type": "chat_send", "client_id": client_id, "text": text}),
        );
    }
}

fn chats(messages: &[ServerMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ChatMessage(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn secured() -> (Harness, Arc<TokenAuthority>) {
    let authority = Arc::new(TokenAuthority::new(SECRET).unwrap());
    let harness = Harness::new(CoreConfig {
        tokens: Some(authority.clone()),
        ..CoreConfig::default()
    });
    (harness, authority)
}

fn token(authority: &TokenAuthority, room: &str, identity: &str, exp_offset_secs: i64) -> String {
    mint(
        authority,
        room,
        identity,
        None,
        Grants::ALL,
        exp_offset_secs,
    )
}

fn mint(
    authority: &TokenAuthority,
    room: &str,
    identity: &str,
    name: Option<&str>,
    grants: Grants,
    exp_offset_secs: i64,
) -> String {
    let now = UNIX_START_MS / 1000;
    authority
        .mint(&AccessClaims {
            sub: identity.into(),
            room: room.into(),
            name: name.map(Into::into),
            grants,
            iat: now,
            exp: now.saturating_add_signed(exp_offset_secs),
            nbf: None,
        })
        .unwrap()
}

#[test]
fn join_presence_and_leave() {
    let mut h = Harness::open();
    let (ada, ada_joined) = h.join("standup", "Ada");
    assert_eq!(ada_joined.protocol, 1);
    assert!(ada_joined.participants.is_empty());
    assert_eq!(h.sfu.room_count(), 1);

    let (bob, bob_joined) = h.join("standup", "Bob");
    assert_eq!(bob_joined.participants.len(), 1);
    assert_eq!(bob_joined.participants[0].name, "Ada");
    match h.take(ada).as_slice() {
        [ServerMessage::ParticipantJoined { participant }] => {
            assert_eq!(participant.id, bob_joined.participant_id);
        }
        other => panic!("{other:?}"),
    }

    h.send(bob, &json!({"type": "leave"}));
    assert!(matches!(
        h.take(bob).as_slice(),
        [ServerMessage::Bye {
            reason: ByeReason::Left,
            ..
        }]
    ));
    assert!(h.closed.contains(&bob));
    assert!(matches!(
        h.take(ada).as_slice(),
        [ServerMessage::ParticipantLeft { reason: LeaveReason::Left, participant_id }]
            if *participant_id == bob_joined.participant_id
    ));
    h.send(ada, &json!({"type": "leave"}));
    assert_eq!(h.sfu.room_count(), 0, "rooms disappear when empty");
    assert_eq!(h.sfu.participant_count(), 0);
}

#[test]
fn chat_is_ordered_echoed_and_kept_as_history() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    let (bob, _) = h.join("r", "Bob");
    h.take(ada);
    for i in 0..5 {
        h.chat(
            if i % 2 == 0 { ada } else { bob },
            &format!("m{i}"),
            &format!("hello {i}"),
        );
    }
    let seen_by_ada = chats(&h.take(ada));
    let seen_by_bob = chats(&h.take(bob));
    assert_eq!(seen_by_ada, seen_by_bob);
    assert_eq!(
        seen_by_ada.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(seen_by_ada[0].ts_ms, UNIX_START_MS);

    let (_, carol) = h.join("r", "Carol");
    assert_eq!(carol.chat_history, seen_by_ada, "history on join, in order");
}

#[test]
fn resent_chat_after_reconnect_is_not_stored_twice() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    let bob = h.connect();
    h.send(
        bob,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Bob", "identity": "bob"}),
    );
    let bob_joined = h.expect_joined(bob);
    h.chat(bob, "c-1", "first");
    h.take(ada);
    h.take(bob);

    // Bob's connection dies before he sees the echo; he reconnects without resume.
    h.drop_conn(bob);
    let bob2 = h.connect();
    h.send(
        bob2,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Bob", "identity": "bob"}),
    );
    let rejoined = h.expect_joined(bob2);
    assert_ne!(rejoined.participant_id, bob_joined.participant_id);
    assert_eq!(rejoined.chat_history.len(), 1);
    h.chat(bob2, "c-1", "first");
    let echo = chats(&h.take(bob2));
    assert_eq!(echo.len(), 1);
    assert_eq!(
        echo[0].seq, 1,
        "the original comes back as the acknowledgement"
    );
    assert!(chats(&h.take(ada)).is_empty(), "nobody else sees a copy");
    assert_eq!(h.sfu.metrics().chat_duplicates.get(), 1);
    assert_eq!(h.sfu.metrics().chat_messages.get(), 1);
}

#[test]
fn resume_keeps_the_participant_and_sends_missed_chat_only() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    let (bob, bob_joined) = h.join("r", "Bob");
    h.chat(ada, "a1", "before");
    h.drop_conn(bob);
    h.chat(ada, "a2", "while away");
    h.advance(Duration::from_secs(5));
    h.take(ada);

    let bob2 = h.connect();
    h.send(
        bob2,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Bob",
                "resume": {"token": bob_joined.resume_token, "last_chat_seq": 1}}),
    );
    let resumed = h.expect_joined(bob2);
    assert!(resumed.resumed);
    assert_eq!(resumed.participant_id, bob_joined.participant_id);
    assert_eq!(
        resumed
            .chat_history
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["while away"]
    );
    h.advance(Duration::from_secs(60));
    assert!(
        h.take(ada).is_empty(),
        "others saw neither a leave nor a join"
    );
    h.chat(ada, "a3", "welcome back");
    assert_eq!(chats(&h.take(bob2)).len(), 1);
}

#[test]
fn lost_connection_leaves_after_the_resume_window() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    let (bob, bob_joined) = h.join("r", "Bob");
    h.take(ada);
    h.drop_conn(bob);
    h.advance(Duration::from_secs(14));
    assert!(h.take(ada).is_empty());
    h.advance(Duration::from_secs(2));
    assert!(matches!(
        h.take(ada).as_slice(),
        [ServerMessage::ParticipantLeft { reason: LeaveReason::Disconnected, participant_id }]
            if *participant_id == bob_joined.participant_id
    ));
    // The resume token is gone with the participant.
    let bob2 = h.connect();
    h.send(
        bob2,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Bob",
                "resume": {"token": bob_joined.resume_token}}),
    );
    let fresh = h.expect_joined(bob2);
    assert!(!fresh.resumed);
    assert_ne!(fresh.participant_id, bob_joined.participant_id);
}

#[test]
fn duplicate_identity_replaces_the_older_session() {
    let (mut h, authority) = secured();
    let t = token(&authority, "r", "ada", 3600);
    let first = h.connect();
    h.send(
        first,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "token": t}),
    );
    let first_joined = h.expect_joined(first);
    h.take(first);
    let (watcher, _) = {
        let c = h.connect();
        let tw = token(&authority, "r", "watcher", 3600);
        h.send(
            c,
            &json!({"type": "join", "protocol": [1], "room": "r", "name": "W", "token": tw}),
        );
        (c, h.expect_joined(c))
    };
    h.take(first);
    let second = h.connect();
    h.send(
        second,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "token": t}),
    );
    h.expect_joined(second);
    assert!(matches!(
        h.take(first).as_slice(),
        [ServerMessage::Bye {
            reason: ByeReason::DuplicateIdentity,
            ..
        }]
    ));
    let seen = h.take(watcher);
    assert!(matches!(
        &seen[0],
        ServerMessage::ParticipantLeft { reason: LeaveReason::Replaced, participant_id }
            if *participant_id == first_joined.participant_id
    ));
    assert!(matches!(&seen[1], ServerMessage::ParticipantJoined { .. }));
    assert_eq!(h.sfu.participant_count(), 2);
}

#[test]
fn tokens_are_checked() {
    let (mut h, authority) = secured();
    let cases = [
        (None, ErrorCode::TokenRequired),
        (Some("garbage".to_owned()), ErrorCode::TokenInvalid),
        (
            Some(token(&authority, "r", "ada", -3600)),
            ErrorCode::TokenExpired,
        ),
        (
            Some(token(&authority, "other", "ada", 3600)),
            ErrorCode::TokenWrongRoom,
        ),
    ];
    for (token, code) in cases {
        let conn = h.connect();
        let mut join = json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada"});
        if let Some(token) = token {
            join["token"] = json!(token);
        }
        h.send(conn, &join);
        let body = h.expect_error(conn, code);
        assert_eq!(body.in_reply_to.as_deref(), Some("join"));
        assert!(
            h.closed.contains(&conn),
            "{code}: auth failures close the connection"
        );
    }
    assert_eq!(h.sfu.room_count(), 0);
    let conn = h.connect();
    let good = token(&authority, "r", "ada", 3600);
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "token": good}),
    );
    assert_eq!(h.expect_joined(conn).identity, "ada");
}

#[test]
fn grants_limit_actions() {
    let (mut h, authority) = secured();
    let viewer = mint(
        &authority,
        "r",
        "viewer",
        Some("Viewer From Token"),
        Grants::NONE,
        60,
    );
    let conn = h.connect();
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "ignored", "token": viewer}),
    );
    let joined = h.expect_joined(conn);
    assert_eq!(joined.name, "Viewer From Token");
    assert_eq!(joined.grants, Grants::NONE);
    h.chat(conn, "c1", "hi");
    assert_eq!(
        h.expect_error(conn, ErrorCode::PermissionDenied)
            .client_id
            .as_deref(),
        Some("c1")
    );
    h.send(conn, &json!({"type": "publish_track", "track": {"id": "mic", "kind": "audio", "source": "microphone"}}));
    h.expect_error(conn, ErrorCode::PermissionDenied);
}

#[test]
fn turn_credentials_are_minted_per_join() {
    let mut h = Harness::new(CoreConfig {
        turn: Some(TurnCredentials::new(
            b"turn".to_vec(),
            vec!["turn:t:3478".into()],
            600,
        )),
        stun_urls: vec!["stun:t:3478".into()],
        ..CoreConfig::default()
    });
    h.advance(Duration::from_secs(100));
    let conn = h.connect();
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "identity": "ada"}),
    );
    let joined = h.expect_joined(conn);
    assert_eq!(joined.ice_servers.len(), 2);
    assert_eq!(joined.ice_servers[0].urls, ["stun:t:3478"]);
    let expiry = UNIX_START_MS / 1000 + 100 + 600;
    assert_eq!(
        joined.ice_servers[1].username.as_deref(),
        Some(format!("{expiry}:{}", joined.participant_id).as_str()),
        "the TURN user is the participant id, not the identity"
    );
}

#[test]
fn bad_input_gets_coded_errors_and_the_connection_stays_usable() {
    let mut h = Harness::open();
    let conn = h.connect();
    let cases: &[(&str, ErrorCode)] = &[
        ("not json", ErrorCode::BadMessage),
        (r#"{"type":"warp"}"#, ErrorCode::UnknownType),
        (
            r#"{"type":"chat_send","client_id":"x","text":"hi"}"#,
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"join","protocol":[9],"room":"r","name":"A"}"#,
            ErrorCode::UnsupportedVersion,
        ),
    ];
    for (text, code) in cases {
        h.send_text(conn, text);
        h.expect_error(conn, *code);
    }
    assert!(
        h.closed.contains(&conn),
        "an unsupported version closes the connection"
    );

    let conn = h.connect();
    let retryable: &[(serde_json::Value, ErrorCode)] = &[
        (
            json!({"type": "join", "protocol": [1], "room": "bad room", "name": "A"}),
            ErrorCode::InvalidRoom,
        ),
        (
            json!({"type": "join", "protocol": [1], "room": "r", "name": "\u{7}"}),
            ErrorCode::InvalidName,
        ),
        (
            json!({"type": "join", "protocol": [1], "room": "r", "name": "A", "identity": ""}),
            ErrorCode::InvalidIdentity,
        ),
    ];
    for (msg, code) in retryable {
        h.send(conn, msg);
        h.expect_error(conn, *code);
    }
    assert!(!h.closed.contains(&conn));
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1, 2], "room": "r", "name": "A"}),
    );
    h.expect_joined(conn);
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "A"}),
    );
    h.expect_error(conn, ErrorCode::AlreadyJoined);
    h.sfu.handle_oversized(conn, 70_000, h.now);
    h.drain();
    h.expect_error(conn, ErrorCode::MessageTooLarge);
    h.sfu.handle_binary(conn, h.now);
    h.drain();
    h.expect_error(conn, ErrorCode::BadMessage);
    h.chat(conn, "c1", &"x".repeat(limits::MAX_CHAT_BYTES + 1));
    assert_eq!(
        h.expect_error(conn, ErrorCode::ChatTooLong)
            .client_id
            .as_deref(),
        Some("c1")
    );
    h.chat(conn, "c2", "\u{1b}[2J");
    h.expect_error(conn, ErrorCode::ChatInvalid);
    h.chat(conn, "bad id!", "hi");
    h.expect_error(conn, ErrorCode::InvalidId);
    h.send(conn, &json!({"type": "offer", "sdp": "v=0\r\n"}));
    h.expect_error(conn, ErrorCode::MediaUnavailable);
    h.send(
        conn,
        &json!({"type": "offer", "sdp": "x".repeat(limits::MAX_SDP_BYTES + 1)}),
    );
    h.expect_error(conn, ErrorCode::InvalidSdp);
    h.send(conn, &json!({"type": "ping", "id": 9}));
    assert_eq!(h.take(conn), [ServerMessage::Pong { id: 9 }]);
    assert!(!h.closed.contains(&conn));
    let errors = h
        .sfu
        .metrics()
        .errors
        .get_or_create(&crate::metrics::ErrorLabels {
            code: "bad_message",
        })
        .get();
    assert_eq!(errors, 2);
}

#[test]
fn chat_floods_are_limited_with_a_burst() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    for i in 0..limits::CHAT_BURST {
        h.chat(ada, &format!("c{i}"), "spam");
    }
    assert_eq!(chats(&h.take(ada)).len(), limits::CHAT_BURST as usize);
    h.chat(ada, "over", "spam");
    let body = h.expect_error(ada, ErrorCode::RateLimited);
    assert_eq!(body.retry_after_ms, Some(501));
    h.advance(Duration::from_millis(501));
    h.chat(ada, "later", "ok now");
    assert_eq!(chats(&h.take(ada)).len(), 1);
}

#[test]
fn message_floods_of_any_kind_are_limited() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    for i in 0..limits::MESSAGE_BURST {
        h.send(ada, &json!({"type": "ping", "id": i}));
    }
    assert_eq!(h.take(ada).len(), limits::MESSAGE_BURST as usize);
    h.send(ada, &json!({"type": "ping", "id": 0}));
    h.expect_error(ada, ErrorCode::RateLimited);
}

#[test]
fn tracks_mute_and_subscriptions() {
    let mut h = Harness::open();
    let (ada, ada_joined) = h.join("r", "Ada");
    let (bob, _) = h.join("r", "Bob");
    h.take(ada);
    let camera = json!({"id": "camera", "kind": "video", "source": "camera", "layers": [
        {"rid": "q", "width": 320, "height": 180},
        {"rid": "h", "width": 640, "height": 360},
        {"rid": "f", "width": 1280, "height": 720}]});
    h.send(ada, &json!({"type": "publish_track", "track": camera}));
    assert!(
        matches!(h.take(bob).as_slice(), [ServerMessage::TrackPublished { track, .. }] if track.layers.len() == 3)
    );
    assert!(
        h.take(ada).is_empty(),
        "the publisher is not told about its own track"
    );
    h.send(ada, &json!({"type": "publish_track", "track": camera}));
    h.expect_error(ada, ErrorCode::DuplicateTrack);
    h.send(ada, &json!({"type": "publish_track", "track": {"id": "x", "kind": "audio", "source": "camera"}}));
    h.expect_error(ada, ErrorCode::BadMessage);

    h.send(
        ada,
        &json!({"type": "set_muted", "track_id": "camera", "muted": true}),
    );
    assert!(matches!(
        h.take(bob).as_slice(),
        [ServerMessage::TrackMuted { muted: true, .. }]
    ));
    h.send(
        ada,
        &json!({"type": "set_muted", "track_id": "camera", "muted": true}),
    );
    assert!(h.take(bob).is_empty(), "no news, no message");
    h.send(
        ada,
        &json!({"type": "set_muted", "track_id": "nope", "muted": true}),
    );
    h.expect_error(ada, ErrorCode::UnknownTrack);

    let pid = ada_joined.participant_id.clone();
    h.send(bob, &json!({"type": "update_subscription", "participant_id": pid, "track_id": "camera", "max_width": 320, "max_height": 180}));
    assert!(h.take(bob).is_empty());
    h.send(
        bob,
        &json!({"type": "update_subscription", "participant_id": pid, "track_id": "nope"}),
    );
    h.expect_error(bob, ErrorCode::UnknownTrack);
    h.send(
        bob,
        &json!({"type": "update_subscription", "participant_id": "PA_ghost", "track_id": "camera"}),
    );
    h.expect_error(bob, ErrorCode::UnknownParticipant);

    let (_, carol) = h.join("r", "Carol");
    let ada_seen = carol.participants.iter().find(|p| p.id == pid).unwrap();
    assert!(ada_seen.tracks[0].muted, "joiners see current track state");

    h.take(bob);
    h.send(
        ada,
        &json!({"type": "unpublish_track", "track_id": "camera"}),
    );
    assert!(matches!(
        h.take(bob).as_slice(),
        [ServerMessage::TrackUnpublished { .. }]
    ));
}

#[test]
fn unjoined_connections_time_out() {
    let mut h = Harness::open();
    let idle = h.connect();
    h.advance(
        limits::JOIN_TIMEOUT
            .checked_sub(Duration::from_millis(1))
            .unwrap(),
    );
    assert!(!h.closed.contains(&idle));
    h.advance(Duration::from_millis(1));
    assert!(matches!(
        h.take(idle).as_slice(),
        [ServerMessage::Bye {
            reason: ByeReason::JoinTimeout,
            ..
        }]
    ));
    assert!(h.closed.contains(&idle));
}

#[test]
fn room_capacity_is_enforced() {
    let mut h = Harness::new(CoreConfig {
        max_participants_per_room: 2,
        ..CoreConfig::default()
    });
    h.join("r", "A");
    h.join("r", "B");
    let c = h.connect();
    h.send(
        c,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "C"}),
    );
    h.expect_error(c, ErrorCode::RoomFull);
    h.send(
        c,
        &json!({"type": "join", "protocol": [1], "room": "other", "name": "C"}),
    );
    h.expect_joined(c);
}

#[test]
fn shutdown_says_why_to_everyone() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    let idle = h.connect();
    h.sfu.shutdown();
    h.drain();
    for conn in [ada, idle] {
        assert!(matches!(
            h.take(conn).as_slice(),
            [ServerMessage::Bye {
                reason: ByeReason::ServerShutdown,
                ..
            }]
        ));
        assert!(h.closed.contains(&conn));
    }
    assert_eq!(h.sfu.room_count(), 0);
    assert_eq!(h.sfu.metrics().participants.get(), 0);
}

#[test]
fn fifty_participants_each_receive_every_message_once() {
    let mut h = Harness::open();
    let conns: Vec<ConnId> = (0..50).map(|i| h.join("big", &format!("P{i}")).0).collect();
    for (i, conn) in conns.iter().enumerate() {
        h.chat(*conn, &format!("c{i}"), &format!("message {i}"));
    }
    for conn in &conns {
        let seqs: Vec<u64> = chats(&h.take(*conn)).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    }
}

#[test]
fn resends_are_answered_even_past_the_chat_rate_limit() {
    let mut h = Harness::open();
    let (ada, _) = h.join("r", "Ada");
    for i in 0..limits::CHAT_BURST {
        h.chat(ada, &format!("c{i}"), "burst");
    }
    h.take(ada);
    // Every one of them resent at once, as after a reconnect: all acknowledged.
    for i in 0..limits::CHAT_BURST {
        h.chat(ada, &format!("c{i}"), "burst");
    }
    let acks = chats(&h.take(ada));
    assert_eq!(acks.len(), limits::CHAT_BURST as usize);
    assert_eq!(
        h.sfu.metrics().chat_messages.get(),
        u64::from(limits::CHAT_BURST)
    );
}

#[test]
fn a_lone_participant_replaced_by_its_own_rejoin_keeps_the_history() {
    let mut h = Harness::open();
    let join =
        json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "identity": "ada"});
    let first = h.connect();
    h.send(first, &join);
    h.expect_joined(first);
    h.chat(first, "c1", "remember me");
    h.take(first);
    let second = h.connect();
    h.send(second, &join);
    let joined = h.expect_joined(second);
    assert_eq!(
        joined.chat_history.len(),
        1,
        "history survived the replacement"
    );
    h.chat(second, "c2", "next");
    assert_eq!(chats(&h.take(second))[0].seq, 2, "sequence continues");
}

#[test]
fn resuming_with_a_reissued_token_takes_its_grants() {
    let (mut h, authority) = secured();
    let mint = |grants| mint(&authority, "r", "ada", None, grants, 3600);
    let conn = h.connect();
    h.send(conn, &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "token": mint(Grants::ALL)}));
    let joined = h.expect_joined(conn);
    h.drop_conn(conn);
    let again = h.connect();
    let restricted = Grants {
        chat: false,
        ..Grants::ALL
    };
    h.send(
        again,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "token": mint(restricted),
                "resume": {"token": joined.resume_token}}),
    );
    let resumed = h.expect_joined(again);
    assert!(resumed.resumed);
    assert_eq!(resumed.grants, restricted);
    h.chat(again, "c1", "hi");
    h.expect_error(again, ErrorCode::PermissionDenied);
}

#[test]
fn a_token_with_an_unusable_name_is_refused_as_a_bad_token() {
    let (mut h, authority) = secured();
    let token = mint(&authority, "r", "ada", Some("bell\u{7}"), Grants::ALL, 60);
    let conn = h.connect();
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "token": token}),
    );
    h.expect_error(conn, ErrorCode::TokenInvalid);
    assert_eq!(h.close_reasons.get(&conn), Some(&ByeReason::JoinRefused));
}

#[test]
fn publishing_without_the_grant_is_refused_before_the_track_is_checked() {
    let (mut h, authority) = secured();
    let restricted = Grants {
        publish: false,
        ..Grants::ALL
    };
    let token = mint(&authority, "r", "viewer", None, restricted, 60);
    let conn = h.connect();
    h.send(
        conn,
        &json!({"type": "join", "protocol": [1], "room": "r", "name": "V", "token": token}),
    );
    h.expect_joined(conn);
    h.send(conn, &json!({"type": "publish_track", "track": {"id": "bad id!", "kind": "audio", "source": "camera"}}));
    h.expect_error(conn, ErrorCode::PermissionDenied);
}

#[test]
fn frames_after_bye_are_ignored_and_binary_frames_are_rate_limited() {
    let mut h = Harness::open();
    let conn = h.connect();
    for _ in 0..limits::MESSAGE_BURST {
        h.sfu.handle_binary(conn, h.now);
    }
    h.sfu.handle_binary(conn, h.now);
    h.drain();
    let replies = h.take(conn);
    assert_eq!(replies.len(), limits::MESSAGE_BURST as usize + 1);
    assert!(
        matches!(replies.last(), Some(ServerMessage::Error(e)) if e.code == ErrorCode::RateLimited)
    );
    h.sfu.shutdown();
    h.drain();
    h.take(conn);
    assert_eq!(h.close_reasons.get(&conn), Some(&ByeReason::ServerShutdown));
    h.sfu.handle_binary(conn, h.now);
    h.sfu.handle_oversized(conn, 100_000, h.now);
    h.drain();
    assert!(h.take(conn).is_empty(), "nothing is answered after bye");
}

#[test]
fn publishing_in_a_loop_is_rate_limited() {
    let mut t = Harness::new(CoreConfig::default());
    let (conn, _) = t.join("r", "Ada");
    let publish = |id: &str| json!({"type": "publish_track", "track": {"id": id, "kind": "audio", "source": "microphone"}});
    let unpublish = |id: &str| json!({"type": "unpublish_track", "track_id": id});
    // Publish and withdraw the same track over and over: every cycle would
    // leave a stopped m-line in every subscriber's session.
    for _ in 0..limits::PUBLISH_BURST {
        t.send(conn, &publish("mic"));
        t.send(conn, &unpublish("mic"));
        t.take(conn);
    }
    t.send(conn, &publish("mic"));
    let refused = t.expect_error(conn, ErrorCode::RateLimited);
    assert!(refused.retry_after_ms.unwrap() > 1000);
    t.advance(Duration::from_secs(6));
    t.send(conn, &publish("mic"));
    assert!(t.take(conn).is_empty(), "allowed again after the refill");
}
