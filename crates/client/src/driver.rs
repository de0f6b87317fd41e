//! Runs a [`SignalingSession`] over real WebSockets, reconnecting with
//! backoff while the session can still be resumed or rejoined.

use std::time::{Duration, Instant};

use parley_proto::ClientMessage;
use tokio::sync::mpsc;

use crate::net::NetworkOptions;
use crate::session::{EndReason, SessionEvent, SignalingSession};
use crate::ws::{SignalingSocket, WsError};

/// What the application asks of a running session.
#[derive(Debug)]
pub enum Command {
    /// Send chat with this `client_id` (resent until acknowledged).
    Chat {
        client_id: String,
        text: String,
    },
    /// Send another protocol message.
    Send(ClientMessage),
    Leave,
}

/// What the driver reports, in order.
#[derive(Debug)]
pub enum DriverEvent {
    Session(SessionEvent),
    /// The connection was lost; trying again.
    Reconnecting {
        attempt: u32,
        error: String,
    },
    /// A command the session refused (e.g. invalid chat text).
    Refused {
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct DriverOptions {
    pub url: String,
    /// Reconnect after a lost connection (otherwise the session ends with an error).
    pub reconnect: bool,
    /// Give up reconnecting after this long without a connection.
    pub give_up_after: Duration,
    /// Proxy and TLS settings for the connection.
    pub network: NetworkOptions,
}

/// Why [`run`] returned without the session ending normally.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Connect(WsError),
    #[error("connection lost and not restored: {0}")]
    Lost(String),
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until the session ends. The first connection failing is an error at
/// once; later failures are retried until `give_up_after`.
pub async fn run(
    options: DriverOptions,
    mut session: SignalingSession,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<DriverEvent>,
) -> Result<EndReason, DriverError> {
    let mut commands = Commands {
        rx: commands,
        open: true,
    };
    let mut ever_connected = false;
    let mut attempt = 0u32;
    let mut lost_since: Option<Instant> = None;
    loop {
        let error = match SignalingSocket::connect(&options.url, &options.network).await {
            Ok(socket) => {
                ever_connected = true;
                let started = Instant::now();
                session.handle_connected(started);
                let error = drive(socket, &mut session, &mut commands, &events).await;
                session.handle_disconnected(Instant::now());
                if session.is_joined() || started.elapsed() > BACKOFF_MAX {
                    attempt = 0;
                }
                lost_since.get_or_insert_with(Instant::now);
                error
            }
            Err(err) if !ever_connected => return Err(DriverError::Connect(err)),
            Err(err) => err.to_string(),
        };
        flush_events(&mut session, &events).await;
        if let Some(reason) = session.end_reason() {
            return Ok(reason.clone());
        }
        if !options.reconnect {
            return Err(DriverError::Lost(error));
        }
        if lost_since.is_some_and(|t| t.elapsed() > options.give_up_after) {
            return Err(DriverError::Lost(error));
        }
        attempt += 1;
        let _ = events
            .send(DriverEvent::Reconnecting {
                attempt,
                error: error.clone(),
            })
            .await;
        let backoff = BACKOFF_START
            .saturating_mul(1 << attempt.min(8).saturating_sub(1))
            .min(BACKOFF_MAX);
        let wake = tokio::time::Instant::now() + backoff;
        // Keep taking commands while waiting: chat typed now is queued and sent on rejoin.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake) => break,
                command = commands.rx.recv(), if commands.open => {
                    apply(&mut session, &mut commands, command, &events).await;
                    flush_events(&mut session, &events).await;
                    if let Some(reason) = session.end_reason() {
                        return Ok(reason.clone());
                    }
                }
            }
        }
        lost_since.get_or_insert_with(Instant::now);
    }
}

/// Runs one connection until it closes; returns why.
async fn drive(
    mut socket: SignalingSocket,
    session: &mut SignalingSession,
    commands: &mut Commands,
    events: &mpsc::Sender<DriverEvent>,
) -> String {
    loop {
        while let Some(message) = session.poll_transmit() {
            if let Err(err) = socket.send(&message).await {
                return err.to_string();
            }
        }
        flush_events(session, events).await;
        if session.end_reason().is_some() {
            socket.close().await;
            return "session ended".to_owned();
        }
        let timeout = session.poll_timeout();
        tokio::select! {
            received = socket.recv() => match received {
                Some(Ok(message)) => session.handle_message(message, Instant::now()),
                Some(Err(err)) => return err.to_string(),
                None => return "the server closed the connection".to_owned(),
            },
            command = commands.rx.recv(), if commands.open => {
                apply(session, commands, command, events).await;
            }
            () = sleep_until(timeout) => session.handle_timeout(Instant::now()),
        }
    }
}

/// The application's commands; once the sender is gone, the session leaves.
struct Commands {
    rx: mpsc::Receiver<Command>,
    open: bool,
}

async fn apply(
    session: &mut SignalingSession,
    commands: &mut Commands,
    command: Option<Command>,
    events: &mpsc::Sender<DriverEvent>,
) {
    match command {
        Some(Command::Chat { client_id, text }) => {
            if let Err(invalid) = session.send_chat(client_id, text) {
                let _ = events
                    .send(DriverEvent::Refused {
                        error: invalid.to_string(),
                    })
                    .await;
            }
        }
        Some(Command::Send(message)) => session.send(message),
        Some(Command::Leave) => session.leave(),
        // No more commands can come: the application is done.
        None => {
            commands.open = false;
            session.leave();
        }
    }
}

async fn flush_events(session: &mut SignalingSession, events: &mpsc::Sender<DriverEvent>) {
    while let Some(event) = session.poll_event() {
        let _ = events.send(DriverEvent::Session(event)).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
