//! The signaling core: a sans-IO state machine holding every connection, room,
//! participant and chat log.
//!
//! The driver reports what happened on the network (`handle_*`, with `now`
//! passed in), then drains [`Sfu::poll_output`] until it returns `None`, and
//! calls [`Sfu::handle_timeout`] when [`Sfu::poll_timeout`] is reached. The core
//! never reads a clock, never touches a socket and never blocks, so tests drive
//! it through hours of simulated time in microseconds.

mod chat;
mod rate;
mod room;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::Protocol;

use parley_proto::validate::{self, Invalid};
use parley_proto::{
    ByeReason, ChatMessage, ClientMessage, ErrorBody, ErrorCode, Grants, IceServer, Join, Joined,
    LeaveReason, ServerLimits, ServerMessage, SubscriptionPreference, TrackInfo, TrackKind,
    TrackSource, limits, negotiate_version, parse_client_message,
};
use rand::distr::{Alphanumeric, SampleString};
use rand::{SeedableRng, rngs::StdRng};

use crate::auth::{TokenAuthority, TokenRejected, TurnCredentials};
use crate::forward::layer::Request;
use crate::media::{MediaConfig, MediaOutput, MediaPlane};
use crate::metrics::{JoinLabels, Metrics};
pub use rate::TokenBucket;
use room::{Participant, Room};

/// Identifies one signaling connection; chosen by the driver, never reused.
pub type ConnId = u64;

/// What the core needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Verifies access tokens; `None` is open mode (anyone may join any room).
    pub tokens: Option<Arc<TokenAuthority>>,
    /// Mints TURN credentials per join when set.
    pub turn: Option<TurnCredentials>,
    /// STUN servers handed to clients as they are.
    pub stun_urls: Vec<String>,
    pub max_participants_per_room: usize,
    /// How long a participant whose connection dropped stays in the room,
    /// resumable, before the others are told it left.
    pub resume_window: Duration,
    /// The media plane's settings; `None` runs signaling and chat only.
    pub media: Option<MediaConfig>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            tokens: None,
            turn: None,
            stun_urls: Vec::new(),
            max_participants_per_room: 100,
            resume_window: Duration::from_secs(15),
            media: None,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` to every connection in `to`, in the order outputs are polled.
    Send { to: Vec<ConnId>, msg: ServerMessage },
    /// Close the connection after everything queued for it has been sent.
    /// `reason` is what the `bye` before it said (it picks the close code).
    Close { conn: ConnId, reason: ByeReason },
    /// Send one datagram from the media port (over TCP: one RFC 4571 frame
    /// on the connection from `destination`).
    Transmit {
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: Vec<u8>,
    },
}

#[derive(Debug)]
enum ConnState {
    /// Open, not joined yet.
    Connected,
    Joined {
        room: String,
        participant: String,
    },
    /// A `bye` was sent; everything it says is ignored.
    Closing,
}

#[derive(Debug)]
struct Conn {
    state: ConnState,
    message_bucket: TokenBucket,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    JoinDeadline(ConnId),
    ResumeDeadline {
        room: String,
        participant: String,
        epoch: u64,
    },
}

/// Converts the monotonic `now` into wall-clock time from one anchor, so
/// timestamps stay consistent under a simulated clock.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    anchor: Instant,
    anchor_unix_ms: u64,
}

impl WallClock {
    fn unix_ms(self, now: Instant) -> u64 {
        match now.checked_duration_since(self.anchor) {
            Some(ahead) => self.anchor_unix_ms.saturating_add(ahead.as_millis() as u64),
            None => self
                .anchor_unix_ms
                .saturating_sub(self.anchor.duration_since(now).as_millis() as u64),
        }
    }
}

/// The signaling core. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Sfu {
    config: CoreConfig,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<String, Room>,
    /// Resume token → (room, participant id).
    resume_tokens: HashMap<String, (String, String)>,
    participant_count: usize,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    outputs: VecDeque<Output>,
    clock: WallClock,
    rng: StdRng,
    metrics: Metrics,
    media: Option<MediaPlane>,
}

type Outcome = Result<(), ErrorBody>;

fn refused(invalid: Invalid) -> ErrorBody {
    ErrorBody::new(invalid.code, invalid.message)
}

impl Sfu {
    /// `unix_ms_at_now` anchors wall-clock time (chat timestamps, token expiry);
    /// `seed` makes ids and resume tokens reproducible in tests (use OS entropy in production).
    pub fn new(
        config: CoreConfig,
        metrics: Metrics,
        now: Instant,
        unix_ms_at_now: u64,
        seed: [u8; 32],
    ) -> Self {
        Self {
            media: config
                .media
                .clone()
                .map(|media| MediaPlane::new(media, metrics.clone(), now)),
            config,
            conns: HashMap::new(),
            rooms: HashMap::new(),
            resume_tokens: HashMap::new(),
            participant_count: 0,
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            clock: WallClock {
                anchor: now,
                anchor_unix_ms: unix_ms_at_now,
            },
            rng: StdRng::from_seed(seed),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.participant_count
    }

    /// The next instruction for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() {
            self.pump_media();
        }
        self.outputs.pop_front()
    }

    /// When [`Sfu::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.peek().map(|Reverse((at, _))| *at);
        let media = self.media.as_ref().and_then(MediaPlane::poll_timeout);
        match (timers, media) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Media sessions currently open.
    pub fn media_peer_count(&self) -> usize {
        self.media.as_ref().map_or(0, MediaPlane::peer_count)
    }

    /// One datagram arrived on the media port (over TCP: one RFC 4571 frame).
    pub fn handle_datagram(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        if let Some(media) = &mut self.media {
            media.handle_datagram(proto, source, destination, data, now);
        }
    }

    /// Moves what the media plane produced into this core's outputs,
    /// addressing signaling messages to the participants' connections.
    fn pump_media(&mut self) {
        while let Some(output) = self.media.as_mut().and_then(MediaPlane::poll_output) {
            match output {
                MediaOutput::Transmit {
                    proto,
                    source,
                    destination,
                    data,
                } => self.outputs.push_back(Output::Transmit {
                    proto,
                    source,
                    destination,
                    data,
                }),
                MediaOutput::Signal {
                    room,
                    participant,
                    msg,
                } => {
                    if let Some(conn) = self.conn_of(&room, &participant) {
                        self.send(conn, msg);
                    }
                }
                MediaOutput::RoomSignal { room, msg } => {
                    if let Some(room) = self.rooms.get(&room) {
                        let to = room.connections();
                        self.send_many(to, msg);
                    }
                }
                MediaOutput::Failed {
                    room,
                    participant,
                    reason,
                } => {
                    self.metrics.media_failures.inc();
                    if let Some(conn) = self.conn_of(&room, &participant) {
                        self.send_error(
                            conn,
                            ErrorBody::new(
                                ErrorCode::MediaFailed,
                                format!("media session closed: {reason}"),
                            ),
                        );
                    }
                }
            }
        }
    }

    fn conn_of(&self, room: &str, participant: &str) -> Option<ConnId> {
        self.rooms.get(room)?.get(participant)?.conn
    }

    /// A new connection was accepted.
    pub fn handle_connect(&mut self, conn: ConnId, now: Instant) {
        self.conns.insert(
            conn,
            Conn {
                state: ConnState::Connected,
                message_bucket: TokenBucket::new(
                    limits::MESSAGE_BURST,
                    limits::MESSAGES_PER_SECOND,
                    now,
                ),
            },
        );
        self.metrics.connections.set(self.conns.len() as i64);
        self.timers.push(Reverse((
            now + limits::JOIN_TIMEOUT,
            Timer::JoinDeadline(conn),
        )));
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        if !self.admit_frame(conn, now) {
            return;
        }
        match parse_client_message(text) {
            Ok(msg) => self.dispatch(conn, msg, now),
            Err(err) => {
                let mut body = ErrorBody::new(err.code, err.detail);
                body.in_reply_to = err.type_name;
                self.send_error(conn, body);
            }
        }
    }

    /// A text frame larger than [`limits::MAX_MESSAGE_BYTES`] arrived (and was discarded).
    pub fn handle_oversized(&mut self, conn: ConnId, len: usize, now: Instant) {
        if self.admit_frame(conn, now) {
            self.send_error(
                conn,
                ErrorBody::new(
                    ErrorCode::MessageTooLarge,
                    format!(
                        "message is {len} bytes; the limit is {}",
                        limits::MAX_MESSAGE_BYTES
                    ),
                ),
            );
        }
    }

    /// A binary frame arrived; the protocol has none.
    pub fn handle_binary(&mut self, conn: ConnId, now: Instant) {
        if self.admit_frame(conn, now) {
            self.send_error(
                conn,
                ErrorBody::new(ErrorCode::BadMessage, "messages are JSON text frames"),
            );
        }
    }

    /// Counts a frame and applies the connection's message rate; false when
    /// the frame is to be ignored (connection closing, or over the rate).
    fn admit_frame(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else {
            return false;
        };
        if matches!(state.state, ConnState::Closing) {
            return false;
        }
        self.metrics.signaling_messages.inc();
        if let Err(wait) = state.message_bucket.try_take(now) {
            let mut body = ErrorBody::new(ErrorCode::RateLimited, "too many messages");
            body.retry_after_ms = Some(wait.as_millis() as u64 + 1);
            self.send_error(conn, body);
            return false;
        }
        true
    }

    /// The connection is gone (closed by either side, or failed).
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Instant) {
        let Some(closed) = self.conns.remove(&conn) else {
            return;
        };
        self.metrics.connections.set(self.conns.len() as i64);
        let ConnState::Joined { room, participant } = closed.state else {
            return;
        };
        let Some(p) = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.get_mut(&participant))
        else {
            return;
        };
        if p.conn != Some(conn) {
            return;
        }
        p.conn = None;
        p.disconnect_epoch += 1;
        let epoch = p.disconnect_epoch;
        if self.config.resume_window.is_zero() {
            self.remove_participant(&room, &participant, LeaveReason::Disconnected, None);
        } else {
            self.timers.push(Reverse((
                now + self.config.resume_window,
                Timer::ResumeDeadline {
                    room,
                    participant,
                    epoch,
                },
            )));
        }
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(media) = &mut self.media {
            media.handle_timeout(now);
        }
        while self
            .timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::JoinDeadline(conn) => {
                    if self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| matches!(c.state, ConnState::Connected))
                    {
                        self.say_bye(
                            conn,
                            ByeReason::JoinTimeout,
                            "no join within the time limit",
                        );
                    }
                }
                Timer::ResumeDeadline {
                    room,
                    participant,
                    epoch,
                } => {
                    let expired = self
                        .rooms
                        .get(&room)
                        .and_then(|r| r.get(&participant))
                        .is_some_and(|p| p.conn.is_none() && p.disconnect_epoch == epoch);
                    if expired {
                        self.remove_participant(
                            &room,
                            &participant,
                            LeaveReason::Disconnected,
                            None,
                        );
                    }
                }
            }
        }
    }

    /// Tells every connection the server is going away and empties all rooms.
    pub fn shutdown(&mut self) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            if !matches!(self.conns[&conn].state, ConnState::Closing) {
                self.say_bye(
                    conn,
                    ByeReason::ServerShutdown,
                    "the server is shutting down",
                );
            }
        }
        self.rooms.clear();
        if let Some(media) = &mut self.media {
            media.remove_all();
        }
        self.resume_tokens.clear();
        self.timers.clear();
        self.participant_count = 0;
        self.update_gauges();
    }

    /// A connection whose outbound queue overflowed; the driver drops it.
    pub fn note_slow_consumer(&mut self) {
        self.metrics.slow_consumers.inc();
    }

    fn dispatch(&mut self, conn: ConnId, msg: ClientMessage, now: Instant) {
        let type_name = msg.type_name();
        let outcome = match msg {
            ClientMessage::Ping { id } => {
                self.send(conn, ServerMessage::Pong { id });
                Ok(())
            }
            ClientMessage::Join(join) => self.join(conn, join, now),
            other => match self.session_of(conn) {
                Some((room, participant)) => self.in_room(conn, &room, &participant, other, now),
                None => Err(ErrorBody::new(ErrorCode::NotJoined, "send join first")),
            },
        };
        if let Err(mut body) = outcome {
            body.in_reply_to.get_or_insert_with(|| type_name.to_owned());
            let refuse_join = type_name == "join" && body.code.closes_connection_on_join();
            self.send_error(conn, body);
            if refuse_join {
                self.say_bye(conn, ByeReason::JoinRefused, "join refused");
            }
        }
    }

    fn in_room(
        &mut self,
        conn: ConnId,
        room: &str,
        participant: &str,
        msg: ClientMessage,
        now: Instant,
    ) -> Outcome {
        match msg {
            ClientMessage::Leave {} => {
                self.remove_participant(
                    room,
                    participant,
                    LeaveReason::Left,
                    Some(ByeReason::Left),
                );
                Ok(())
            }
            ClientMessage::ChatSend { client_id, text } => {
                self.chat(conn, room, participant, client_id, text, now)
            }
            ClientMessage::PublishTrack { track } => self.publish(room, participant, track, now),
            ClientMessage::UnpublishTrack { track_id } => {
                self.unpublish(room, participant, &track_id, now)
            }
            ClientMessage::SetMuted { track_id, muted } => {
                self.set_muted(room, participant, track_id, muted)
            }
            ClientMessage::UpdateSubscription(pref) => self.subscribe(room, participant, pref, now),
            ClientMessage::Offer { sdp } => {
                check_sdp(&sdp)?;
                if self.media.is_none() {
                    return Err(media_unavailable());
                }
                Err(ErrorBody::new(
                    ErrorCode::InvalidSdp,
                    "the server makes every offer in a session; answer its offers instead",
                ))
            }
            ClientMessage::Answer { sdp } => {
                check_sdp(&sdp)?;
                let media = self.media.as_mut().ok_or_else(media_unavailable)?;
                media.answer(room, participant, &sdp, now)
            }
            ClientMessage::IceCandidate(candidate) => {
                if candidate.candidate.len() > limits::MAX_CANDIDATE_BYTES {
                    return Err(ErrorBody::new(
                        ErrorCode::InvalidSdp,
                        "ICE candidate is too long",
                    ));
                }
                let media = self.media.as_mut().ok_or_else(media_unavailable)?;
                media.remote_candidate(room, participant, &candidate)
            }
            ClientMessage::Join(_) | ClientMessage::Ping { .. } => {
                unreachable!("handled before the session lookup")
            }
        }
    }

    /// Checks that this connection may join and picks the protocol version.
    fn negotiate(&self, conn: ConnId, join: &Join) -> Result<u16, ErrorBody> {
        if !matches!(
            self.conns.get(&conn).map(|c| &c.state),
            Some(ConnState::Connected)
        ) {
            return Err(ErrorBody::new(
                ErrorCode::AlreadyJoined,
                "this connection has already joined; open another one for another room",
            ));
        }
        if join.protocol.len() > limits::MAX_OFFERED_VERSIONS {
            return Err(ErrorBody::new(
                ErrorCode::BadMessage,
                "too many protocol versions offered",
            ));
        }
        negotiate_version(&join.protocol).ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol versions {:?}",
                    parley_proto::SUPPORTED_VERSIONS
                ),
            )
        })
    }

    fn join(&mut self, conn: ConnId, join: Join, now: Instant) -> Outcome {
        let version = self.negotiate(conn, &join)?;
        validate::room_name(&join.room).map_err(refused)?;
        let now_unix = self.clock.unix_ms(now) / 1000;
        let resumable = join
            .resume
            .as_ref()
            .and_then(|resume| self.resume_tokens.get(&resume.token))
            .filter(|(room, _)| *room == join.room)
            .and_then(|(room, participant)| self.rooms.get(room)?.get(participant))
            .map(|p| (p.id.clone(), p.identity.clone()));
        let (identity, token_name, grants) = self.authenticate(
            &join,
            resumable.as_ref().map(|(_, id)| id.as_str()),
            now_unix,
        )?;
        let name = validate::display_name(token_name.as_deref().unwrap_or(&join.name))
            .map_err(refused)?
            .to_owned();

        if let Some((participant, resumed_identity)) = resumable
            && resumed_identity == identity
        {
            let last_chat_seq = join.resume.and_then(|r| r.last_chat_seq);
            self.resume(
                conn,
                &join.room,
                &participant,
                grants,
                version,
                last_chat_seq,
                now,
            );
            if let Some(media) = &mut self.media {
                if media.has_peer(&join.room, &participant) {
                    media.resend_state(&join.room, &participant);
                } else if join.media {
                    let can_subscribe = self.rooms[&join.room]
                        .get(&participant)
                        .is_some_and(|p| p.grants.subscribe);
                    media.add_peer(&join.room, &participant, can_subscribe, now);
                }
            }
            return Ok(());
        }

        if let Some(previous) = self
            .rooms
            .get(&join.room)
            .and_then(|r| r.by_identity(&identity))
            .map(|p| p.id.clone())
        {
            // The room survives even if it empties here: the newcomer is
            // about to fill it again, and its chat history must not be lost.
            self.remove_participant_keeping_room(
                &join.room,
                &previous,
                LeaveReason::Replaced,
                Some(ByeReason::DuplicateIdentity),
            );
        }
        let occupancy = self
            .rooms
            .get(&join.room)
            .map_or(0, |r| r.participants.len());
        if occupancy >= self.config.max_participants_per_room {
            return Err(ErrorBody::new(
                ErrorCode::RoomFull,
                format!(
                    "the room has {} participants, the most this server allows",
                    self.config.max_participants_per_room
                ),
            ));
        }

        let can_subscribe = grants.subscribe;
        let id = self.admit(conn, &join.room, (identity, name, grants), version, now);
        if join.media
            && let Some(media) = &mut self.media
        {
            media.add_peer(&join.room, &id, can_subscribe, now);
        }
        Ok(())
    }

    /// Adds a new participant and announces it.
    fn admit(
        &mut self,
        conn: ConnId,
        room: &str,
        (identity, name, grants): (String, String, Grants),
        version: u16,
        now: Instant,
    ) -> String {
        let participant = Participant {
            id: format!("PA_{}", self.random(10)),
            identity,
            name,
            grants,
            tracks: Vec::new(),
            conn: Some(conn),
            disconnect_epoch: 0,
            resume_token: self.random(32),
            chat_bucket: TokenBucket::new(limits::CHAT_BURST, limits::CHAT_PER_SECOND, now),
            publish_bucket: TokenBucket::new(
                limits::PUBLISH_BURST,
                limits::PUBLISH_PER_SECOND,
                now,
            ),
            subscriptions: HashMap::new(),
        };
        let info = participant.info();
        let id = participant.id.clone();
        self.resume_tokens.insert(
            participant.resume_token.clone(),
            (room.to_owned(), id.clone()),
        );
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .participants
            .push(participant);
        self.participant_count += 1;
        self.update_gauges();
        self.metrics
            .joins
            .get_or_create(&JoinLabels { kind: "new" })
            .inc();
        let now_unix = self.clock.unix_ms(now) / 1000;
        self.send_joined(conn, room, &id, None, version, false, now_unix);
        let others = self.rooms[room].connections_except(&id);
        self.send_many(
            others,
            ServerMessage::ParticipantJoined { participant: info },
        );
        id
    }

    /// Who is joining and what they may do: from the token, or in open mode
    /// from the join message (or the session being resumed).
    fn authenticate(
        &mut self,
        join: &Join,
        resumed_identity: Option<&str>,
        now_unix: u64,
    ) -> Result<(String, Option<String>, Grants), ErrorBody> {
        let Some(authority) = &self.config.tokens else {
            // In open mode the resume token is the proof of identity.
            let identity = match (&join.identity, resumed_identity) {
                (Some(identity), _) => {
                    validate::identity(identity).map_err(refused)?;
                    identity.clone()
                }
                (None, Some(resumed)) => resumed.to_owned(),
                (None, None) => format!("guest-{}", self.random(10)),
            };
            return Ok((identity, None, Grants::ALL));
        };
        let token = join.token.as_deref().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::TokenRequired,
                "this server requires an access token",
            )
        })?;
        let claims = authority
            .verify(token, &join.room, now_unix)
            .map_err(|TokenRejected { code, message }| ErrorBody::new(code, message))?;
        // Retrying cannot fix what the token says: report it as a bad token.
        let bad_token = |invalid: Invalid| {
            ErrorBody::new(
                ErrorCode::TokenInvalid,
                format!("the token's claims are not acceptable: {}", invalid.message),
            )
        };
        validate::identity(&claims.sub).map_err(bad_token)?;
        if let Some(name) = &claims.name {
            validate::display_name(name).map_err(bad_token)?;
        }
        Ok((claims.sub, claims.name, claims.grants))
    }

    /// Re-attaches a participant to a new connection. The grants of the
    /// token presented now replace the old ones (a token may be reissued with
    /// fewer rights); the display name stays as the room knows it.
    #[allow(clippy::too_many_arguments)]
    fn resume(
        &mut self,
        conn: ConnId,
        room: &str,
        participant: &str,
        grants: Grants,
        version: u16,
        last_chat_seq: Option<u64>,
        now: Instant,
    ) {
        let Some(p) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.get_mut(participant))
        else {
            return;
        };
        let previous = p.conn.replace(conn);
        p.disconnect_epoch += 1;
        p.grants = grants;
        if let Some(old) = previous.filter(|old| *old != conn) {
            self.say_bye(
                old,
                ByeReason::Resumed,
                "this session was resumed on another connection",
            );
        }
        self.metrics
            .joins
            .get_or_create(&JoinLabels { kind: "resumed" })
            .inc();
        let now_unix = self.clock.unix_ms(now) / 1000;
        self.send_joined(
            conn,
            room,
            participant,
            last_chat_seq,
            version,
            true,
            now_unix,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn send_joined(
        &mut self,
        conn: ConnId,
        room_name: &str,
        participant: &str,
        chat_after: Option<u64>,
        version: u16,
        resumed: bool,
        now_unix: u64,
    ) {
        let room = &self.rooms[room_name];
        let p = room
            .get(participant)
            .expect("caller checked the participant");
        let mut ice_servers = Vec::new();
        if !self.config.stun_urls.is_empty() {
            ice_servers.push(IceServer {
                urls: self.config.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &self.config.turn {
            ice_servers.push(turn.mint(&p.id, now_unix));
        }
        let joined = Joined {
            protocol: version,
            room: room_name.to_owned(),
            participant_id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            grants: p.grants,
            resume_token: p.resume_token.clone(),
            resume_window_ms: self.config.resume_window.as_millis() as u64,
            resumed,
            participants: room.infos_except(participant),
            chat_history: room.chat.since(chat_after),
            ice_servers,
            limits: ServerLimits {
                max_message_bytes: limits::MAX_MESSAGE_BYTES,
                max_chat_bytes: limits::MAX_CHAT_BYTES,
                chat_burst: limits::CHAT_BURST,
                chat_per_second: limits::CHAT_PER_SECOND,
                ping_interval_ms: limits::PING_INTERVAL.as_millis() as u64,
                max_participants: self.config.max_participants_per_room,
            },
        };
        if let Some(state) = self.conns.get_mut(&conn) {
            state.state = ConnState::Joined {
                room: room_name.to_owned(),
                participant: participant.to_owned(),
            };
        }
        self.send(conn, ServerMessage::Joined(Box::new(joined)));
    }

    fn chat(
        &mut self,
        conn: ConnId,
        room_name: &str,
        participant: &str,
        client_id: String,
        text: String,
        now: Instant,
    ) -> Outcome {
        validate::client_id(&client_id).map_err(refused)?;
        let with_id = |mut body: ErrorBody| {
            body.client_id = Some(client_id.clone());
            body
        };
        let unix_ms = self.clock.unix_ms(now);
        let room = self.rooms.get_mut(room_name).expect("joined rooms exist");
        let p = room.get(participant).expect("joined participants exist");
        if !p.grants.chat {
            return Err(with_id(ErrorBody::new(
                ErrorCode::PermissionDenied,
                "your token does not allow chat",
            )));
        }
        validate::chat_text(&text).map_err(|invalid| with_id(refused(invalid)))?;
        // A resend after a reconnect costs nothing: answer it with the stored
        // original, to the sender only, before the rate limit.
        if let Some(original) = room.chat.find(&p.identity, &client_id) {
            let original = original.clone();
            self.metrics.chat_duplicates.inc();
            self.send(conn, ServerMessage::ChatMessage(original));
            return Ok(());
        }
        let p = room
            .get_mut(participant)
            .expect("joined participants exist");
        if let Err(wait) = p.chat_bucket.try_take(now) {
            let mut body = with_id(ErrorBody::new(
                ErrorCode::RateLimited,
                "too many chat messages",
            ));
            body.retry_after_ms = Some(wait.as_millis() as u64 + 1);
            return Err(body);
        }
        let message = ChatMessage {
            seq: 0,
            ts_ms: unix_ms,
            participant_id: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            client_id,
            text,
        };
        let message = room.chat.append(message).clone();
        self.metrics.chat_messages.inc();
        let to = room.connections();
        self.send_many(to, ServerMessage::ChatMessage(message));
        Ok(())
    }

    fn publish(
        &mut self,
        room_name: &str,
        participant: &str,
        track: TrackInfo,
        now: Instant,
    ) -> Outcome {
        let room = self.rooms.get_mut(room_name).expect("joined rooms exist");
        let p = room
            .get_mut(participant)
            .expect("joined participants exist");
        if !p.grants.publish {
            return Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                "your token does not allow publishing",
            ));
        }
        check_track(&track)?;
        if p.track_mut(&track.id).is_some() {
            return Err(ErrorBody::new(
                ErrorCode::DuplicateTrack,
                format!("track `{}` is already published", track.id),
            ));
        }
        if let Err(wait) = p.publish_bucket.try_take(now) {
            let mut body = ErrorBody::new(ErrorCode::RateLimited, "too many track publications");
            body.retry_after_ms = Some(wait.as_millis() as u64 + 1);
            return Err(body);
        }
        if p.tracks.len() >= limits::MAX_TRACKS_PER_PARTICIPANT {
            return Err(ErrorBody::new(
                ErrorCode::TooManyTracks,
                format!(
                    "at most {} tracks per participant",
                    limits::MAX_TRACKS_PER_PARTICIPANT
                ),
            ));
        }
        p.tracks.push(track.clone());
        if let Some(media) = &mut self.media {
            media.publish(room_name, participant, &track, now);
        }
        let room = &self.rooms[room_name];
        let to = room.connections_except(participant);
        self.send_many(
            to,
            ServerMessage::TrackPublished {
                participant_id: participant.to_owned(),
                track,
            },
        );
        Ok(())
    }

    fn unpublish(
        &mut self,
        room_name: &str,
        participant: &str,
        track_id: &str,
        now: Instant,
    ) -> Outcome {
        let room = self.rooms.get_mut(room_name).expect("joined rooms exist");
        let p = room
            .get_mut(participant)
            .expect("joined participants exist");
        let Some(index) = p.tracks.iter().position(|t| t.id == track_id) else {
            return Err(unknown_track(track_id));
        };
        p.tracks.remove(index);
        for other in &mut room.participants {
            other
                .subscriptions
                .remove(&(participant.to_owned(), track_id.to_owned()));
        }
        let to = room.connections_except(participant);
        if let Some(media) = &mut self.media {
            media.unpublish(room_name, participant, track_id, now);
        }
        self.send_many(
            to,
            ServerMessage::TrackUnpublished {
                participant_id: participant.to_owned(),
                track_id: track_id.to_owned(),
            },
        );
        Ok(())
    }

    fn set_muted(
        &mut self,
        room_name: &str,
        participant: &str,
        track_id: String,
        muted: bool,
    ) -> Outcome {
        let room = self.rooms.get_mut(room_name).expect("joined rooms exist");
        let p = room
            .get_mut(participant)
            .expect("joined participants exist");
        let Some(track) = p.track_mut(&track_id) else {
            return Err(unknown_track(&track_id));
        };
        if track.muted == muted {
            return Ok(());
        }
        track.muted = muted;
        let to = room.connections_except(participant);
        if let Some(media) = &mut self.media {
            media.set_muted(room_name, participant, &track_id, muted);
        }
        self.send_many(
            to,
            ServerMessage::TrackMuted {
                participant_id: participant.to_owned(),
                track_id,
                muted,
            },
        );
        Ok(())
    }

    fn subscribe(
        &mut self,
        room_name: &str,
        participant: &str,
        pref: SubscriptionPreference,
        now: Instant,
    ) -> Outcome {
        const MAX_TILE_PIXELS: u32 = 16_384;
        let room = self.rooms.get_mut(room_name).expect("joined rooms exist");
        if !room.get(participant).is_some_and(|p| p.grants.subscribe) {
            return Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                "your token does not allow subscribing",
            ));
        }
        let Some(publisher) = room
            .get(&pref.participant_id)
            .filter(|p| p.id != participant)
        else {
            return Err(ErrorBody::new(
                ErrorCode::UnknownParticipant,
                "no such participant in this room",
            ));
        };
        if !publisher.tracks.iter().any(|t| t.id == pref.track_id) {
            return Err(unknown_track(&pref.track_id));
        }
        if pref.max_width.unwrap_or(0) > MAX_TILE_PIXELS
            || pref.max_height.unwrap_or(0) > MAX_TILE_PIXELS
        {
            return Err(ErrorBody::new(
                ErrorCode::BadMessage,
                format!("tile sizes above {MAX_TILE_PIXELS} pixels are not accepted"),
            ));
        }
        if let Some(media) = &mut self.media {
            media.set_preference(
                room_name,
                participant,
                &pref.participant_id,
                &pref.track_id,
                Request {
                    max_width: pref.max_width,
                    max_height: pref.max_height,
                    paused: pref.paused,
                },
                now,
            );
        }
        let room = self.rooms.get_mut(room_name).expect("joined rooms exist");
        let key = (pref.participant_id.clone(), pref.track_id.clone());
        room.get_mut(participant)
            .expect("checked above")
            .subscriptions
            .insert(key, pref);
        Ok(())
    }

    /// Removes a participant, tells the others, and closes its connection with
    /// `bye` when one is given.
    fn remove_participant(
        &mut self,
        room_name: &str,
        participant: &str,
        reason: LeaveReason,
        bye: Option<ByeReason>,
    ) {
        self.remove_participant_keeping_room(room_name, participant, reason, bye);
        if self
            .rooms
            .get(room_name)
            .is_some_and(|r| r.participants.is_empty())
        {
            self.rooms.remove(room_name);
            self.update_gauges();
        }
    }

    fn remove_participant_keeping_room(
        &mut self,
        room_name: &str,
        participant: &str,
        reason: LeaveReason,
        bye: Option<ByeReason>,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(removed) = room.remove(participant) else {
            return;
        };
        if let Some(media) = &mut self.media {
            media.remove_peer(room_name, participant);
        }
        let others = room.connections();
        self.resume_tokens.remove(&removed.resume_token);
        self.participant_count -= 1;
        if let Some(conn) = removed.conn {
            match bye {
                Some(bye) => self.say_bye(conn, bye, bye_text(bye)),
                None => {
                    if let Some(state) = self.conns.get_mut(&conn) {
                        state.state = ConnState::Connected;
                    }
                }
            }
        }
        self.send_many(
            others,
            ServerMessage::ParticipantLeft {
                participant_id: removed.id,
                reason,
            },
        );
        self.update_gauges();
    }

    fn say_bye(&mut self, conn: ConnId, reason: ByeReason, message: &str) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.state = ConnState::Closing;
        }
        self.send(
            conn,
            ServerMessage::Bye {
                reason,
                message: message.to_owned(),
            },
        );
        self.outputs.push_back(Output::Close { conn, reason });
    }

    fn session_of(&self, conn: ConnId) -> Option<(String, String)> {
        match &self.conns.get(&conn)?.state {
            ConnState::Joined { room, participant } => Some((room.clone(), participant.clone())),
            ConnState::Connected | ConnState::Closing => None,
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.outputs.push_back(Output::Send {
            to: vec![conn],
            msg,
        });
    }

    fn send_many(&mut self, to: Vec<ConnId>, msg: ServerMessage) {
        if !to.is_empty() {
            self.outputs.push_back(Output::Send { to, msg });
        }
    }

    fn send_error(&mut self, conn: ConnId, body: ErrorBody) {
        self.metrics.count_error(body.code);
        self.send(conn, ServerMessage::Error(body));
    }

    fn update_gauges(&self) {
        self.metrics.rooms.set(self.rooms.len() as i64);
        self.metrics.participants.set(self.participant_count as i64);
    }

    fn random(&mut self, len: usize) -> String {
        Alphanumeric.sample_string(&mut self.rng, len)
    }
}

fn bye_text(reason: ByeReason) -> &'static str {
    match reason {
        ByeReason::Left => "you left the room",
        ByeReason::ServerShutdown => "the server is shutting down",
        ByeReason::DuplicateIdentity => "you joined this room from another connection",
        ByeReason::Resumed => "this session was resumed on another connection",
        ByeReason::JoinRefused => "join refused",
        ByeReason::JoinTimeout => "no join within the time limit",
        ByeReason::IdleTimeout => "nothing received for too long",
        ByeReason::TooSlow => "messages were not read fast enough",
        ByeReason::Other => "the session ended",
    }
}

fn unknown_track(track_id: &str) -> ErrorBody {
    let mut shown = track_id.to_owned();
    shown.truncate(shown.floor_char_boundary(limits::MAX_CLIENT_ID_BYTES));
    ErrorBody::new(ErrorCode::UnknownTrack, format!("no track `{shown}`"))
}

fn media_unavailable() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::MediaUnavailable,
        "this server carries signaling and chat only; it has no media plane",
    )
}

fn check_sdp(sdp: &str) -> Outcome {
    if sdp.len() > limits::MAX_SDP_BYTES {
        return Err(ErrorBody::new(
            ErrorCode::InvalidSdp,
            format!("SDP is over {} bytes", limits::MAX_SDP_BYTES),
        ));
    }
    if !sdp.starts_with("v=0") {
        return Err(ErrorBody::new(
            ErrorCode::InvalidSdp,
            "SDP must start with v=0",
        ));
    }
    Ok(())
}

fn check_track(track: &TrackInfo) -> Outcome {
    const MAX_LAYERS: usize = 3;
    const MAX_DIMENSION: u32 = 8192;
    validate::client_id(&track.id).map_err(refused)?;
    let source_fits = matches!(
        (track.kind, track.source),
        (
            TrackKind::Audio,
            TrackSource::Microphone | TrackSource::ScreenShare
        ) | (
            TrackKind::Video,
            TrackSource::Camera | TrackSource::ScreenShare
        )
    );
    if !source_fits {
        return Err(ErrorBody::new(
            ErrorCode::BadMessage,
            "audio comes from a microphone or screen share, video from a camera or screen share",
        ));
    }
    if track.kind == TrackKind::Audio && !track.layers.is_empty() {
        return Err(ErrorBody::new(
            ErrorCode::BadMessage,
            "audio tracks have no layers",
        ));
    }
    if track.layers.len() > MAX_LAYERS {
        return Err(ErrorBody::new(
            ErrorCode::BadMessage,
            format!("at most {MAX_LAYERS} simulcast layers"),
        ));
    }
    for (i, layer) in track.layers.iter().enumerate() {
        validate::client_id(&layer.rid).map_err(refused)?;
        if track.layers[..i].iter().any(|l| l.rid == layer.rid) {
            return Err(ErrorBody::new(
                ErrorCode::BadMessage,
                "layer rids must be unique",
            ));
        }
        if !(1..=MAX_DIMENSION).contains(&layer.width)
            || !(1..=MAX_DIMENSION).contains(&layer.height)
        {
            return Err(ErrorBody::new(
                ErrorCode::BadMessage,
                format!("layer sizes must be 1 to {MAX_DIMENSION} pixels"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
