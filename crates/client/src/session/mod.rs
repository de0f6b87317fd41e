//! The client's signaling session as a state machine: join, resume after a
//! lost connection, and a chat outbox that resends unacknowledged messages
//! with their original `client_id` so the server can drop duplicates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parley_proto::{
    ByeReason, ClientMessage, ErrorCode, Join, PROTOCOL_VERSION, Resume, SUPPORTED_VERSIONS,
    ServerMessage, limits, validate,
};

/// What the session needs to join.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub room: String,
    pub name: String,
    pub token: Option<String>,
    /// Open-mode identity; keeps chat de-duplication working across rejoins.
    pub identity: Option<String>,
    /// Ask the server for a media session (it then sends offers).
    pub media: bool,
}

impl JoinParams {
    pub fn new(room: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            name: name.into(),
            token: None,
            identity: None,
            media: false,
        }
    }

    /// Refuses what the server would refuse, before connecting.
    pub fn validate(&self) -> Result<(), validate::Invalid> {
        validate::room_name(&self.room)?;
        validate::display_name(&self.name)?;
        if let Some(identity) = &self.identity {
            validate::identity(identity)?;
        }
        Ok(())
    }
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A message from the server, as received.
    Message(ServerMessage),
    /// The session is over and will not reconnect.
    Ended(EndReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We left.
    Left,
    /// The server refused the join.
    JoinRefused(ErrorCode),
    /// The server closed the session (shutdown, duplicate identity, ...).
    Closed(ByeReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Disconnected,
    /// `join` sent, waiting for `joined`.
    Joining,
    Joined,
    Leaving,
    Ended,
}

#[derive(Debug, Clone)]
struct PendingChat {
    client_id: String,
    text: String,
    /// Refused as rate-limited: send again at this time.
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct ResumeState {
    token: String,
    window: Duration,
    /// When the connection was lost, if it is.
    lost_at: Option<Instant>,
}

/// See the module docs.
#[derive(Debug)]
pub struct SignalingSession {
    params: JoinParams,
    state: State,
    participant_id: Option<String>,
    identity: Option<String>,
    resume: Option<ResumeState>,
    last_chat_seq: Option<u64>,
    outbox: VecDeque<PendingChat>,
    transmit: VecDeque<ClientMessage>,
    events: VecDeque<SessionEvent>,
    ping_interval: Duration,
    next_ping: Option<Instant>,
    next_ping_id: u64,
    end_reason: Option<EndReason>,
}

impl SignalingSession {
    pub fn new(params: JoinParams) -> Self {
        Self {
            params,
            state: State::Disconnected,
            participant_id: None,
            identity: None,
            resume: None,
            last_chat_seq: None,
            outbox: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            ping_interval: limits::PING_INTERVAL,
            next_ping: None,
            next_ping_id: 1,
            end_reason: None,
        }
    }

    pub fn participant_id(&self) -> Option<&str> {
        self.participant_id.as_deref()
    }

    pub fn is_joined(&self) -> bool {
        self.state == State::Joined
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<&EndReason> {
        self.end_reason.as_ref()
    }

    /// Chat messages sent but not yet acknowledged by their echo.
    pub fn unacknowledged_chats(&self) -> usize {
        self.outbox.len()
    }

    /// A (new) connection is open: send `join`, resuming if we still can.
    pub fn handle_connected(&mut self, now: Instant) {
        if matches!(self.state, State::Ended | State::Leaving) {
            return;
        }
        let resume = self
            .resume
            .as_ref()
            .filter(|r| {
                r.lost_at
                    .is_none_or(|lost| now.duration_since(lost) < r.window)
            })
            .map(|r| Resume {
                token: r.token.clone(),
                last_chat_seq: self.last_chat_seq,
            });
        // A rejoin keeps the identity the server gave us, so our resent chat
        // is recognised even when the resume window has passed.
        let identity = self.params.identity.clone().or_else(|| {
            if self.params.token.is_none() {
                self.identity.clone()
            } else {
                None
            }
        });
        self.transmit.push_back(ClientMessage::Join(Join {
            protocol: SUPPORTED_VERSIONS.iter().rev().copied().collect(),
            room: self.params.room.clone(),
            name: self.params.name.clone(),
            token: self.params.token.clone(),
            identity,
            resume,
            media: self.params.media,
        }));
        debug_assert!(SUPPORTED_VERSIONS.contains(&PROTOCOL_VERSION));
        self.state = State::Joining;
    }

    /// The connection is gone; the driver will reconnect unless the session ended.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if matches!(self.state, State::Ended) {
            return;
        }
        if self.state == State::Leaving {
            self.end(EndReason::Left);
            return;
        }
        if let Some(resume) = &mut self.resume {
            resume.lost_at.get_or_insert(now);
        }
        self.state = State::Disconnected;
        self.next_ping = None;
    }

    /// Whether the driver should try to connect again.
    pub fn wants_reconnect(&self) -> bool {
        self.state == State::Disconnected
    }

    pub fn handle_message(&mut self, message: ServerMessage, now: Instant) {
        match &message {
            ServerMessage::Joined(joined) => {
                self.state = State::Joined;
                if !joined.resumed {
                    // A fresh session: the room may have been recreated, so
                    // earlier sequence numbers mean nothing any more.
                    self.last_chat_seq = None;
                }
                self.participant_id = Some(joined.participant_id.clone());
                self.identity = Some(joined.identity.clone());
                self.resume = Some(ResumeState {
                    token: joined.resume_token.clone(),
                    window: Duration::from_millis(joined.resume_window_ms),
                    lost_at: None,
                });
                self.ping_interval =
                    Duration::from_millis(joined.limits.ping_interval_ms.max(1000));
                self.next_ping = Some(now + self.ping_interval);
                for chat in &joined.chat_history {
                    self.note_chat(chat.seq, &chat.identity, &chat.client_id);
                }
                // Whatever was not acknowledged is sent again, oldest first.
                for pending in &mut self.outbox {
                    pending.retry_at = None;
                    self.transmit.push_back(ClientMessage::ChatSend {
                        client_id: pending.client_id.clone(),
                        text: pending.text.clone(),
                    });
                }
            }
            ServerMessage::ChatMessage(chat) => {
                self.note_chat(chat.seq, &chat.identity, &chat.client_id);
            }
            ServerMessage::Error(error) => {
                if let Some(client_id) = &error.client_id {
                    if error.code == ErrorCode::RateLimited {
                        let wait = Duration::from_millis(error.retry_after_ms.unwrap_or(1000));
                        if let Some(pending) =
                            self.outbox.iter_mut().find(|p| p.client_id == *client_id)
                        {
                            pending.retry_at = Some(now + wait);
                        }
                    } else {
                        self.outbox.retain(|p| p.client_id != *client_id);
                    }
                }
                if self.state == State::Joining && error.in_reply_to.as_deref() == Some("join") {
                    self.events
                        .push_back(SessionEvent::Message(message.clone()));
                    self.end(EndReason::JoinRefused(error.code));
                    return;
                }
            }
            ServerMessage::Bye { reason, .. } => {
                let reason = *reason;
                self.events.push_back(SessionEvent::Message(message));
                match reason {
                    ByeReason::Left => self.end(EndReason::Left),
                    // The server dropped us for a transport reason: reconnect.
                    ByeReason::IdleTimeout | ByeReason::TooSlow => {}
                    other => self.end(EndReason::Closed(other)),
                }
                return;
            }
            _ => {}
        }
        self.events.push_back(SessionEvent::Message(message));
    }

    /// Queues a chat message; it is resent after a reconnect until acknowledged.
    pub fn send_chat(&mut self, client_id: String, text: String) -> Result<(), validate::Invalid> {
        validate::client_id(&client_id)?;
        validate::chat_text(&text)?;
        if self.state == State::Joined {
            self.transmit.push_back(ClientMessage::ChatSend {
                client_id: client_id.clone(),
                text: text.clone(),
            });
        }
        self.outbox.push_back(PendingChat {
            client_id,
            text,
            retry_at: None,
        });
        Ok(())
    }

    /// Sends any other message now (dropped while not joined).
    pub fn send(&mut self, message: ClientMessage) {
        if self.state == State::Joined {
            self.transmit.push_back(message);
        }
    }

    pub fn leave(&mut self) {
        match self.state {
            State::Joined | State::Joining => {
                self.transmit.push_back(ClientMessage::Leave {});
                self.state = State::Leaving;
            }
            State::Disconnected => self.end(EndReason::Left),
            State::Leaving | State::Ended => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Joined {
            for pending in &mut self.outbox {
                if pending.retry_at.is_some_and(|at| at <= now) {
                    pending.retry_at = None;
                    self.transmit.push_back(ClientMessage::ChatSend {
                        client_id: pending.client_id.clone(),
                        text: pending.text.clone(),
                    });
                }
            }
        }
        if let Some(at) = self.next_ping
            && now >= at
        {
            self.transmit.push_back(ClientMessage::Ping {
                id: self.next_ping_id,
            });
            self.next_ping_id += 1;
            self.next_ping = Some(now + self.ping_interval);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.outbox.iter().filter_map(|p| p.retry_at).min();
        match (self.next_ping, retry) {
            (Some(ping), Some(retry)) => Some(ping.min(retry)),
            (ping, retry) => ping.or(retry),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<ClientMessage> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    fn note_chat(&mut self, seq: u64, identity: &str, client_id: &str) {
        self.last_chat_seq = Some(self.last_chat_seq.map_or(seq, |s| s.max(seq)));
        if self.identity.as_deref() == Some(identity) {
            self.outbox.retain(|p| p.client_id != client_id);
        }
    }

    fn end(&mut self, reason: EndReason) {
        self.state = State::Ended;
        self.end_reason = Some(reason.clone());
        self.next_ping = None;
        self.transmit.clear();
        self.events.push_back(SessionEvent::Ended(reason));
    }
}

#[cfg(test)]
mod tests;
