//! `parley-cli`: the call engine without a window, for QA, bots and load tests.

// Doc comments on the clap types below are `--help` text, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use parley_client::driver::{self, Command, DriverError, DriverEvent, DriverOptions};
use parley_client::session::{EndReason, JoinParams, SessionEvent, SignalingSession};
use parley_proto::ServerMessage;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Exit codes, documented in `docs/qa.md` and `parley-cli --help`.
mod exit {
    /// Left normally: stdin closed, --duration elapsed, or interrupted.
    pub const OK: u8 = 0;
    /// Unexpected failure.
    pub const FAILURE: u8 = 1;
    // 2 is clap's: bad command-line usage.
    /// Could not connect, or the connection was lost and not restored.
    pub const CONNECTION: u8 = 3;
    /// The server refused the join (token, room, name, version, room full).
    pub const JOIN_REFUSED: u8 = 4;
    /// The server ended the session (shutdown, same identity joined elsewhere).
    pub const CLOSED_BY_SERVER: u8 = 5;
}

/// Headless Parley client for QA, bots and load tests.
///
/// Exit codes: 0 left normally; 1 unexpected failure; 2 bad usage; 3 could
/// not connect or connection lost; 4 join refused; 5 session ended by the server.
#[derive(Debug, Parser)]
#[command(name = "parley-cli", version)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Join a room, print every event as a JSON line on stdout, and send each
    /// line read from stdin as a chat message.
    Join(JoinArgs),
}

#[derive(Debug, Args)]
struct JoinArgs {
    /// Signaling URL, e.g. ws://127.0.0.1:7880/ws or wss://sfu.example.com/ws.
    url: String,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Display name.
    #[arg(long)]
    name: String,
    /// Access token (required unless the server runs in open mode).
    #[arg(long, env = "PARLEY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stable identity in open mode (a token names it otherwise).
    #[arg(long)]
    identity: Option<String>,
    /// Leave after this long, e.g. 30s (default: until stdin closes or Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Do not read chat from stdin; stay until --duration or Ctrl-C.
    #[arg(long)]
    no_stdin: bool,
    /// Exit with code 3 when the connection drops instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
    /// Log filter for stderr, e.g. info or parley_client=debug.
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let CliCommand::Join(args) = cli.command;
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_new(&args.log_level) {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("parley-cli: cannot start the async runtime: {err}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    ExitCode::from(runtime.block_on(join(args)))
}

async fn join(args: JoinArgs) -> u8 {
    let params = JoinParams {
        room: args.room,
        name: args.name,
        token: args.token,
        identity: args.identity,
    };
    if let Err(invalid) = params.validate() {
        eprintln!("parley-cli: {invalid}");
        return exit::JOIN_REFUSED;
    }
    let (command_tx, command_rx) = mpsc::channel(256);
    let (event_tx, mut event_rx) = mpsc::channel(1024);
    let options = DriverOptions {
        url: args.url,
        reconnect: !args.no_reconnect,
        give_up_after: Duration::from_mins(1),
    };
    let driver = tokio::spawn(driver::run(
        options,
        SignalingSession::new(params),
        command_rx,
        event_tx,
    ));
    if !args.no_stdin {
        tokio::spawn(read_chat_from_stdin(command_tx.clone()));
    }
    let leave = command_tx.clone();
    tokio::spawn(async move {
        match args.duration {
            Some(duration) => {
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = interrupted() => {}
                }
            }
            None => interrupted().await,
        }
        let _ = leave.send(Command::Leave).await;
    });
    drop(command_tx);

    let mut stdout = std::io::stdout().lock();
    while let Some(event) = event_rx.recv().await {
        let line = match event {
            DriverEvent::Session(
                SessionEvent::Message(ServerMessage::Pong { .. }) | SessionEvent::Ended(_),
            ) => continue,
            DriverEvent::Session(SessionEvent::Message(message)) => {
                serde_json::to_string(&message).expect("messages serialize")
            }
            DriverEvent::Reconnecting { attempt, error } => serde_json::json!({
                "type": "cli_reconnecting", "attempt": attempt, "error": error
            })
            .to_string(),
            DriverEvent::Refused { error } => {
                serde_json::json!({"type": "cli_refused", "error": error}).to_string()
            }
        };
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    drop(stdout);
    match driver.await {
        Ok(Ok(EndReason::Left)) => exit::OK,
        Ok(Ok(EndReason::JoinRefused(code))) => {
            eprintln!("parley-cli: join refused: {code}");
            exit::JOIN_REFUSED
        }
        Ok(Ok(EndReason::Closed(reason))) => {
            eprintln!("parley-cli: the server ended the session: {reason:?}");
            exit::CLOSED_BY_SERVER
        }
        Ok(Err(err @ (DriverError::Connect(_) | DriverError::Lost(_)))) => {
            eprintln!("parley-cli: {err}");
            exit::CONNECTION
        }
        Err(err) => {
            eprintln!("parley-cli: {err}");
            exit::FAILURE
        }
    }
}

async fn read_chat_from_stdin(commands: mpsc::Sender<Command>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let command = Command::Chat {
            client_id: uuid::Uuid::new_v4().to_string(),
            text: line,
        };
        if commands.send(command).await.is_err() {
            return;
        }
    }
    let _ = commands.send(Command::Leave).await;
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
