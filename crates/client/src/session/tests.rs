//! The client session against the real SFU core, joined by a simulated link
//! that serializes every message to JSON and back, in simulated time.

use std::time::{Duration, Instant};

use parley_proto::{ByeReason, ErrorCode, ServerMessage};
use parley_sfu::core::{ConnId, CoreConfig, Output, Sfu};
use parley_sfu::metrics::Metrics;

use super::{EndReason, JoinParams, SessionEvent, SignalingSession};

struct Link {
    sfu: Sfu,
    now: Instant,
    next_conn: ConnId,
}

struct Client {
    session: SignalingSession,
    conn: Option<ConnId>,
    events: Vec<SessionEvent>,
}

impl Link {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            sfu: Sfu::new(
                CoreConfig::default(),
                Metrics::default(),
                now,
                1_700_000_000_000,
                [1; 32],
            ),
            now,
            next_conn: 1,
        }
    }

    fn client(&mut self, room: &str, name: &str) -> Client {
        let mut client = Client {
            session: SignalingSession::new(JoinParams::new(room, name)),
            conn: None,
            events: Vec::new(),
        };
        self.connect(&mut client);
        client
    }

    fn connect(&mut self, client: &mut Client) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.sfu.handle_connect(conn, self.now);
        client.conn = Some(conn);
        client.session.handle_connected(self.now);
    }

    fn cut(&mut self, client: &mut Client) {
        if let Some(conn) = client.conn.take() {
            self.sfu.handle_disconnect(conn, self.now);
            client.session.handle_disconnected(self.now);
        }
    }

    /// Moves messages both ways until nothing is in flight.
    fn settle(&mut self, clients: &mut [&mut Client]) {
        loop {
            let mut moved = false;
            for client in clients.iter_mut() {
                while let Some(message) = client.session.poll_transmit() {
                    moved = true;
                    if let Some(conn) = client.conn {
                        let wire = serde_json::to_string(&message).unwrap();
                        self.sfu.handle_text(conn, &wire, self.now);
                    }
                }
            }
            while let Some(output) = self.sfu.poll_output() {
                moved = true;
                match output {
                    Output::Send { to, msg } => {
                        let wire = serde_json::to_string(&msg).unwrap();
                        for client in clients
                            .iter_mut()
                            .filter(|c| c.conn.is_some_and(|c| to.contains(&c)))
                        {
                            let parsed = parley_proto::parse_server_message(&wire).unwrap();
                            client.session.handle_message(parsed, self.now);
                        }
                    }
                    Output::Close { conn, .. } => {
                        for client in clients.iter_mut().filter(|c| c.conn == Some(conn)) {
                            self.cut(client);
                        }
                    }
                    Output::Transmit { .. } => panic!("these sessions ask for no media"),
                }
            }
            for client in clients.iter_mut() {
                while let Some(event) = client.session.poll_event() {
                    client.events.push(event);
                }
            }
            if !moved {
                return;
            }
        }
    }
}

impl Client {
    fn chats(&self) -> Vec<(u64, String)> {
        self.events
            .iter()
            .flat_map(|e| match e {
                SessionEvent::Message(ServerMessage::ChatMessage(m)) => {
                    vec![(m.seq, m.text.clone())]
                }
                SessionEvent::Message(ServerMessage::Joined(j)) => j
                    .chat_history
                    .iter()
                    .map(|m| (m.seq, m.text.clone()))
                    .collect(),
                _ => vec![],
            })
            .collect()
    }
}

#[test]
fn chat_sent_while_disconnected_arrives_once_after_resume() {
    let mut link = Link::new();
    let mut ada = link.client("r", "Ada");
    let mut bob = link.client("r", "Bob");
    link.settle(&mut [&mut ada, &mut bob]);
    let ada_id = ada.session.participant_id().unwrap().to_owned();

    // Ada sends, but the connection dies before the message reaches the server.
    ada.session
        .send_chat("c1".into(), "lost in flight".into())
        .unwrap();
    let _in_flight = ada.session.poll_transmit();
    link.cut(&mut ada);
    ada.session
        .send_chat("c2".into(), "typed while offline".into())
        .unwrap();
    assert_eq!(ada.session.unacknowledged_chats(), 2);
    assert!(ada.session.wants_reconnect());

    link.now += Duration::from_secs(3);
    link.connect(&mut ada);
    link.settle(&mut [&mut ada, &mut bob]);
    assert_eq!(
        ada.session.participant_id(),
        Some(ada_id.as_str()),
        "resumed, same id"
    );
    assert_eq!(ada.session.unacknowledged_chats(), 0);
    assert_eq!(
        bob.chats(),
        [
            (1, "lost in flight".to_owned()),
            (2, "typed while offline".to_owned())
        ]
    );
    assert!(
        !bob.events.iter().any(|e| matches!(
            e,
            SessionEvent::Message(ServerMessage::ParticipantLeft { .. })
        )),
        "Bob never saw Ada leave"
    );
}

#[test]
fn acknowledged_chat_resent_after_a_lost_echo_is_not_duplicated() {
    let mut link = Link::new();
    let mut ada = link.client("r", "Ada");
    let mut bob = link.client("r", "Bob");
    link.settle(&mut [&mut ada, &mut bob]);
    ada.session.send_chat("c1".into(), "once".into()).unwrap();
    // The server stores it, but Ada's connection dies before the echo arrives.
    let wire = serde_json::to_string(&ada.session.poll_transmit().unwrap()).unwrap();
    link.sfu.handle_text(ada.conn.unwrap(), &wire, link.now);
    let echo_lost_conn = ada.conn.take().unwrap();
    link.settle(&mut [&mut ada, &mut bob]);
    link.sfu.handle_disconnect(echo_lost_conn, link.now);
    ada.session.handle_disconnected(link.now);
    assert_eq!(ada.session.unacknowledged_chats(), 1);

    // Past the resume window: a fresh join with the same identity.
    link.now += Duration::from_secs(20);
    link.sfu.handle_timeout(link.now);
    link.connect(&mut ada);
    link.settle(&mut [&mut ada, &mut bob]);
    assert_eq!(ada.session.unacknowledged_chats(), 0);
    assert_eq!(bob.chats(), [(1, "once".to_owned())], "stored once");
}

#[test]
fn refused_join_ends_the_session() {
    let mut link = Link::new();
    let mut client = Client {
        session: SignalingSession::new(JoinParams::new("bad room", "Ada")),
        conn: None,
        events: Vec::new(),
    };
    link.connect(&mut client);
    link.settle(&mut [&mut client]);
    assert_eq!(
        client.session.end_reason(),
        Some(&EndReason::JoinRefused(ErrorCode::InvalidRoom))
    );
    assert!(!client.session.wants_reconnect());
}

#[test]
fn leave_ends_with_left_and_server_shutdown_is_final() {
    let mut link = Link::new();
    let mut ada = link.client("r", "Ada");
    let mut bob = link.client("r", "Bob");
    link.settle(&mut [&mut ada, &mut bob]);
    ada.session.leave();
    link.settle(&mut [&mut ada, &mut bob]);
    assert_eq!(ada.session.end_reason(), Some(&EndReason::Left));
    link.sfu.shutdown();
    link.settle(&mut [&mut bob]);
    assert_eq!(
        bob.session.end_reason(),
        Some(&EndReason::Closed(ByeReason::ServerShutdown))
    );
}

#[test]
fn pings_follow_the_advertised_interval() {
    let mut link = Link::new();
    let mut ada = link.client("r", "Ada");
    link.settle(&mut [&mut ada]);
    let first = ada.session.poll_timeout().unwrap();
    assert_eq!(first, link.now + parley_proto::limits::PING_INTERVAL);
    ada.session.handle_timeout(first);
    assert!(matches!(
        ada.session.poll_transmit(),
        Some(parley_proto::ClientMessage::Ping { id: 1 })
    ));
    assert_eq!(
        ada.session.poll_timeout().unwrap(),
        first + parley_proto::limits::PING_INTERVAL
    );
}

#[test]
fn invalid_chat_is_refused_locally() {
    let mut session = SignalingSession::new(JoinParams::new("r", "Ada"));
    assert_eq!(
        session
            .send_chat("c".into(), "x".repeat(5000))
            .unwrap_err()
            .code,
        ErrorCode::ChatTooLong
    );
    assert_eq!(session.unacknowledged_chats(), 0);
}

#[test]
fn rate_limited_chat_is_retried_when_the_server_says() {
    let mut link = Link::new();
    let mut ada = link.client("r", "Ada");
    link.settle(&mut [&mut ada]);
    let burst = parley_proto::limits::CHAT_BURST as usize;
    for i in 0..=burst {
        ada.session
            .send_chat(format!("c{i}"), format!("line {i}"))
            .unwrap();
    }
    link.settle(&mut [&mut ada]);
    assert_eq!(ada.chats().len(), burst);
    assert_eq!(
        ada.session.unacknowledged_chats(),
        1,
        "the refused one is kept"
    );
    let retry_at = ada.session.poll_timeout().unwrap();
    assert!(retry_at <= link.now + Duration::from_millis(501));
    link.now = retry_at;
    ada.session.handle_timeout(link.now);
    link.settle(&mut [&mut ada]);
    assert_eq!(ada.session.unacknowledged_chats(), 0);
    assert_eq!(ada.chats().last().unwrap().1, format!("line {burst}"));
}

#[test]
fn unknown_reasons_and_codes_from_a_newer_server_still_decode() {
    let bye = parley_proto::parse_server_message(
        r#"{"type":"bye","reason":"moved_to_mars","message":"x"}"#,
    )
    .unwrap();
    assert!(matches!(
        bye,
        ServerMessage::Bye {
            reason: ByeReason::Other,
            ..
        }
    ));
    let error =
        parley_proto::parse_server_message(r#"{"type":"error","code":"new_in_v2","message":"x"}"#)
            .unwrap();
    assert!(matches!(error, ServerMessage::Error(e) if e.code == ErrorCode::Internal));
}
