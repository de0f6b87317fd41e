//! A whole call as one task: the signaling driver, and the media engine
//! started on `joined` (restarted when a fresh join brings a new
//! participant id) and fed the messages it acts on. What happens comes out
//! as [`ConferenceEvent`]s in order; the application steers it through a
//! [`Conference`] handle. parley-cli and the desktop app both run calls
//! through this.

use std::time::Instant;

use parley_proto::ServerMessage;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{self, Command, DriverError, DriverEvent, DriverOptions};
use crate::media::engine::{self, CallReport, MediaCommand, MediaNotice, MediaOptions};
use crate::session::{EndReason, JoinParams, SignalingSession};

/// What the application hears, in order.
#[derive(Debug)]
pub enum ConferenceEvent {
    Driver(DriverEvent),
    /// A line from the media engine (`cli_path`, `cli_media_connected`, ...).
    Media(serde_json::Value),
}

/// How the call ended.
#[derive(Debug)]
pub struct ConferenceOutcome {
    pub end: Result<EndReason, DriverError>,
    /// The media engine's figures, when media ran.
    pub report: Option<Result<CallReport, String>>,
}

/// Steers a running call. Dropping it leaves the room.
#[derive(Debug)]
pub struct Conference {
    commands: mpsc::Sender<Command>,
    media: mpsc::Sender<MediaCommand>,
    task: tokio::task::JoinHandle<ConferenceOutcome>,
}

impl Conference {
    /// Starts connecting; events arrive on the returned receiver until the
    /// call ends (then it closes).
    pub fn start(
        driver_options: DriverOptions,
        params: JoinParams,
        media: Option<MediaOptions>,
    ) -> (Self, mpsc::Receiver<ConferenceEvent>) {
        let (command_tx, command_rx) = mpsc::channel(256);
        let (media_tx, media_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(
            driver_options,
            params,
            media,
            command_rx,
            media_rx,
            event_tx,
        ));
        (
            Self {
                commands: command_tx,
                media: media_tx,
                task,
            },
            event_rx,
        )
    }

    pub async fn send(&self, command: Command) {
        let _ = self.commands.send(command).await;
    }

    /// A command for the media engine (ignored until media runs).
    pub async fn media(&self, command: MediaCommand) {
        let _ = self.media.send(command).await;
    }

    /// The media engine's figures so far, `None` without media.
    pub async fn report(&self) -> Option<CallReport> {
        let (tx, rx) = oneshot::channel();
        self.media(MediaCommand::Report(tx)).await;
        rx.await.ok()
    }

    /// A sender of signaling commands, for tasks of the application's own.
    pub fn command_sender(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// A sender of media commands, for tasks of the application's own.
    pub fn media_sender(&self) -> mpsc::Sender<MediaCommand> {
        self.media.clone()
    }

    /// Leaves the room and waits for the call to end.
    pub async fn leave(self) -> ConferenceOutcome {
        let _ = self.commands.send(Command::Leave).await;
        self.finished().await
    }

    /// Waits for the call to end by itself (or by a `Leave` already sent).
    pub async fn finished(self) -> ConferenceOutcome {
        drop(self.commands);
        self.task.await.unwrap_or_else(|err| ConferenceOutcome {
            end: Err(DriverError::Lost(format!("call task: {err}"))),
            report: None,
        })
    }
}

type Media = (
    mpsc::Sender<MediaCommand>,
    tokio::task::JoinHandle<Result<CallReport, String>>,
);

async fn run(
    driver_options: DriverOptions,
    params: JoinParams,
    media_options: Option<MediaOptions>,
    commands: mpsc::Receiver<Command>,
    mut media_commands: mpsc::Receiver<MediaCommand>,
    events: mpsc::Sender<ConferenceEvent>,
) -> ConferenceOutcome {
    let (driver_tx, mut driver_events) = mpsc::channel(1024);
    let (signal_tx, signal_rx) = mpsc::channel(256);
    let mut commands = Some(commands);
    let driver = tokio::spawn(driver::run(
        driver_options,
        SignalingSession::new(params),
        signal_rx,
        driver_tx,
    ));
    let (notice_tx, mut notices) = mpsc::channel(1024);
    let mut media: Option<Media> = None;
    loop {
        tokio::select! {
            event = driver_events.recv() => {
                let Some(event) = event else { break };
                if let DriverEvent::Session(crate::session::SessionEvent::Message(msg)) = &event {
                    media = steer(media, media_options.as_ref(), msg, &notice_tx).await;
                }
                let _ = events.send(ConferenceEvent::Driver(event)).await;
            }
            Some(notice) = notices.recv() => match notice {
                MediaNotice::Send(msg) => {
                    let _ = signal_tx.send(Command::Send(msg)).await;
                }
                MediaNotice::Line(line) => {
                    let _ = events.send(ConferenceEvent::Media(line)).await;
                }
            },
            command = next_command(&mut commands) => match command {
                Some(command) => {
                    let _ = signal_tx.send(command).await;
                }
                // The application is gone: leave.
                None => {
                    commands = None;
                    let _ = signal_tx.send(Command::Leave).await;
                }
            },
            Some(command) = media_commands.recv() => {
                if let Some((tx, _)) = &media {
                    let _ = tx.send(command).await;
                }
            }
        }
    }
    drop(signal_tx);
    let report = match media {
        Some((tx, task)) => {
            let _ = tx.send(MediaCommand::Stop).await;
            Some(match task.await {
                Ok(result) => result,
                Err(err) => Err(format!("media task: {err}")),
            })
        }
        None => None,
    };
    let end = driver
        .await
        .unwrap_or_else(|err| Err(DriverError::Lost(format!("signaling task: {err}"))));
    ConferenceOutcome { end, report }
}

async fn next_command(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts media on the first `joined` (and again when a fresh join gave a
/// new participant id), and hands it the messages it acts on.
async fn steer(
    media: Option<Media>,
    options: Option<&MediaOptions>,
    msg: &ServerMessage,
    notices: &mpsc::Sender<MediaNotice>,
) -> Option<Media> {
    let Some(options) = options else {
        return media;
    };
    match msg {
        ServerMessage::Joined(joined) if !joined.resumed || media.is_none() => {
            if let Some((commands, _)) = media {
                let _ = commands.send(MediaCommand::Stop).await;
            }
            let (tx, rx) = mpsc::channel(256);
            let mut options = options.clone();
            options.ice_servers.clone_from(&joined.ice_servers);
            let task = tokio::spawn(engine::run(
                options,
                joined.participant_id.clone(),
                Instant::now(),
                rx,
                notices.clone(),
            ));
            Some((tx, task))
        }
        ServerMessage::Offer { .. } | ServerMessage::PublishLayers { .. } => {
            if let Some((commands, _)) = &media {
                let _ = commands.send(MediaCommand::Server(msg.clone())).await;
            }
            media
        }
        _ => media,
    }
}
