//! `parley-cli`: the call engine without a window, for QA, bots and load tests.

// Doc comments on the clap types below are `--help` text, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use parley_client::conference::{Conference, ConferenceEvent};
use parley_client::doctor::{Check, DoctorOptions, diagnose};
use parley_client::driver::{Command, DriverError, DriverEvent, DriverOptions};
use parley_client::media::audio::{AudioInput, AudioOptions, AudioOutput, DeviceChoice};
use parley_client::media::call::IcePolicy;
use parley_client::media::engine::{CallReport, MediaCommand, MediaOptions};
use parley_client::media::video::VideoInput;
use parley_client::net::NetworkOptions;
use parley_client::session::{EndReason, JoinParams, SessionEvent};
use parley_media::apm::ApmSettings;
use parley_media::jitter_buffer::JitterSettings;
use parley_media::scale::Size;
use parley_proto::ServerMessage;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Exit codes, documented in `README.md` and `parley-cli --help`.
mod exit {
    /// Left normally: stdin closed, --duration elapsed, or interrupted.
    pub const OK: u8 = 0;
    /// Unexpected failure.
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap uses the same code).
    pub const USAGE: u8 = 2;
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
    Join(Box<JoinArgs>),
    /// Check every way to the SFU (signaling, UDP, ICE-TCP, TURN over UDP,
    /// TCP and TLS) and print what works, with times and reasons. Exits 0
    /// when signaling and at least one media path work, 3 otherwise.
    Doctor(DoctorArgs),
    /// List the microphones and speakers present, one JSON line each.
    Devices,
}

#[derive(Debug, Args)]
struct DoctorArgs {
    /// Signaling URL, e.g. wss://sfu.example.com/ws.
    url: String,
    /// Access token (required unless the server runs in open mode).
    #[arg(long, env = "PARLEY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Room to join for the checks (a token's room takes precedence).
    #[arg(long, default_value = "parley-doctor")]
    room: String,
    /// How long each path may take to connect.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the checks as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    network: NetworkArgs,
    /// Log filter for stderr, e.g. info or parley_client=debug.
    #[arg(long, env = "RUST_LOG", default_value = "error")]
    log_level: String,
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
    /// Publish a synthetic camera and microphone and receive everyone else's
    /// media, decoding and checking every frame.
    #[arg(long)]
    fake_media: bool,
    /// Size of the synthetic camera, its top simulcast layer.
    #[arg(long, default_value = "1280x720", value_parser = parse_size, requires = "fake_media")]
    resolution: (u32, u32),
    /// Frame rate of the synthetic camera.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60), requires = "fake_media")]
    fps: u32,
    /// Tile size to ask for every remote video track, e.g. 320x180
    /// (default: no limit). Type `/size WxH` on stdin to change it later.
    #[arg(long, value_parser = parse_size, requires = "fake_media")]
    subscribe_size: Option<(u32, u32)>,
    /// Write per-track results (frames, resolution, latency, loss) here as JSON on exit.
    #[arg(long, requires = "fake_media")]
    stats_json: Option<std::path::PathBuf>,
    #[command(flatten)]
    audio: AudioArgs,
    #[command(flatten)]
    network: NetworkArgs,
    /// Which ICE candidates to use: all, or relay (TURN only).
    #[arg(long, default_value = "all", value_parser = parse_ice_policy)]
    ice_policy: IcePolicy,
    /// Log filter for stderr, e.g. info or parley_client=debug.
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    log_level: String,
}

/// Microphone, speaker and audio processing (with `--fake-media`).
#[derive(Debug, Args)]
struct AudioArgs {
    /// Capture from this microphone (id or name; see `parley-cli devices`)
    /// instead of synthetic speech.
    #[arg(long, requires = "fake_media")]
    microphone: Option<String>,
    /// Play remote audio through this speaker (id or name). Default: mix
    /// and pace it without playing it.
    #[arg(long, requires = "fake_media")]
    speaker: Option<String>,
    /// Join with the microphone muted (`/mute` and `/unmute` on stdin).
    #[arg(long, requires = "fake_media")]
    muted: bool,
    /// Turn off echo cancellation (for headsets and measurements).
    #[arg(long, requires = "fake_media")]
    no_echo_cancellation: bool,
    #[arg(long, requires = "fake_media")]
    no_noise_suppression: bool,
    #[arg(long, requires = "fake_media")]
    no_gain_control: bool,
    #[arg(long, requires = "fake_media")]
    no_high_pass: bool,
    /// Record what is played (the mix of everyone else) to this WAV file.
    #[arg(long, requires = "fake_media")]
    record_playout: Option<std::path::PathBuf>,
    /// Record what is sent (the processed microphone) to this WAV file.
    #[arg(long, requires = "fake_media")]
    record_microphone: Option<std::path::PathBuf>,
    /// Smallest playout delay of remote audio, in ms (20 to 200; default
    /// 20): the jitter buffer never goes below it. Video follows the audio.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(20..=200), requires = "fake_media")]
    audio_min_delay: u32,
    /// Drop this percentage of incoming RTP/RTCP packets, to hear and
    /// measure loss (0 to 50).
    #[arg(long, default_value_t = 0.0, value_parser = parse_loss, requires = "fake_media")]
    simulate_loss: f64,
}

impl AudioArgs {
    fn options(&self) -> AudioOptions {
        let device = |name: &String| DeviceChoice {
            id: name.clone(),
            name: name.clone(),
        };
        AudioOptions {
            input: self
                .microphone
                .as_ref()
                .map_or(AudioInput::Synthetic, |m| AudioInput::Device(device(m))),
            output: self
                .speaker
                .as_ref()
                .map_or(AudioOutput::Clock, |s| AudioOutput::Device(device(s))),
            processing: ApmSettings {
                echo_cancellation: !self.no_echo_cancellation,
                noise_suppression: !self.no_noise_suppression,
                gain_control: !self.no_gain_control,
                high_pass_filter: !self.no_high_pass,
            },
            muted: self.muted,
            jitter: JitterSettings {
                min_delay_ms: f64::from(self.audio_min_delay),
                ..JitterSettings::default()
            },
            record_playout: self.record_playout.clone(),
            record_microphone: self.record_microphone.clone(),
            detect_markers: true,
            level_meter: None,
        }
    }
}

fn parse_loss(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if (0.0..=50.0).contains(&percent) {
        Ok(percent / 100.0)
    } else {
        Err(format!("{percent}% is outside 0 to 50"))
    }
}

/// How to reach servers through corporate networks.
#[derive(Debug, Args)]
struct NetworkArgs {
    /// HTTP proxy for signaling and TURN over TCP/TLS, e.g.
    /// http://user:password@proxy:3128 [default: $HTTPS_PROXY or $https_proxy].
    #[arg(long)]
    proxy: Option<String>,
    /// Extra CA certificates (PEM) trusted beside the system's, e.g. a
    /// corporate CA that re-signs TLS.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

impl NetworkArgs {
    fn options(&self) -> Result<NetworkOptions, String> {
        let proxy = self.proxy.as_deref().map(str::parse).transpose()?;
        let options = NetworkOptions {
            proxy,
            ca_file: self.ca_file.clone(),
        }
        .with_env_proxy()?;
        // Read the CA file now, so a bad one is reported before joining.
        options.tls_config()?;
        Ok(options)
    }
}

fn parse_ice_policy(s: &str) -> Result<IcePolicy, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.command {
        CliCommand::Join(args) => &args.log_level,
        CliCommand::Doctor(args) => &args.log_level,
        CliCommand::Devices => "error",
    };
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_new(log_level) {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("parley-cli: cannot start the async runtime: {err}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    ExitCode::from(match cli.command {
        CliCommand::Join(args) => runtime.block_on(join(*args)),
        CliCommand::Doctor(args) => runtime.block_on(doctor(args)),
        CliCommand::Devices => devices(),
    })
}

fn devices() -> u8 {
    use parley_media::audio_device::{list_microphones, list_speakers};
    let mut status = 0;
    for (kind, listed) in [
        ("microphone", list_microphones()),
        ("speaker", list_speakers()),
    ] {
        match listed {
            Ok(devices) => {
                for device in devices {
                    println!(
                        "{}",
                        serde_json::json!({"kind": kind, "id": device.id, "name": device.name})
                    );
                }
            }
            Err(error) => {
                eprintln!("parley-cli: cannot list {kind}s: {error}");
                status = exit::FAILURE;
            }
        }
    }
    status
}

async fn doctor(args: DoctorArgs) -> u8 {
    let network = match args.network.options() {
        Ok(network) => network,
        Err(error) => {
            eprintln!("parley-cli: {error}");
            return exit::USAGE;
        }
    };
    let options = DoctorOptions {
        url: args.url,
        token: args.token,
        room: args.room,
        network,
        timeout: args.timeout,
    };
    let checks = diagnose(&options).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        );
    } else {
        print!("{}", doctor_table(&checks));
    }
    let signaling = checks.iter().any(|c| c.name == "signaling" && c.ok);
    let media = checks.iter().any(|c| c.name != "signaling" && c.ok);
    if signaling && media {
        exit::OK
    } else {
        exit::CONNECTION
    }
}

/// The doctor's checks as an aligned table.
fn doctor_table(checks: &[Check]) -> String {
    let target_width = checks
        .iter()
        .map(|c| c.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut table = format!(
        "{:<10} {:<target_width$} {:<6} {:>8}  {}\n",
        "check", "target", "result", "time", "detail"
    );
    for check in checks {
        let time = check
            .ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"));
        let result = if check.ok { "ok" } else { "FAIL" };
        let _ = writeln!(
            table,
            "{:<10} {:<target_width$} {result:<6} {time:>8}  {}",
            check.name, check.target, check.detail
        );
    }
    table
}

async fn join(args: JoinArgs) -> u8 {
    let params = JoinParams {
        room: args.room,
        name: args.name,
        token: args.token,
        identity: args.identity,
        media: args.fake_media,
    };
    let network = match args.network.options() {
        Ok(network) => network,
        Err(error) => {
            eprintln!("parley-cli: {error}");
            return exit::USAGE;
        }
    };
    let media_options = args.fake_media.then(|| MediaOptions {
        video: VideoInput::Synthetic,
        camera_enabled: true,
        video_sink: None,
        resolution: Size::new(args.resolution.0, args.resolution.1),
        fps: args.fps,
        subscribe_size: args.subscribe_size,
        ice_servers: Vec::new(),
        ice_policy: args.ice_policy,
        network: network.clone(),
        only: None,
        audio: args.audio.options(),
        simulated_loss: args.audio.simulate_loss,
    });
    if let Err(invalid) = params.validate() {
        eprintln!("parley-cli: {invalid}");
        return exit::JOIN_REFUSED;
    }
    let options = DriverOptions {
        url: args.url,
        reconnect: !args.no_reconnect,
        give_up_after: Duration::from_mins(1),
        network,
    };
    let (conference, mut events) = Conference::start(options, params, media_options);
    if !args.no_stdin {
        tokio::spawn(read_stdin(
            conference.command_sender(),
            conference.media_sender(),
        ));
    }
    tokio::spawn(leave_when_done(args.duration, conference.command_sender()));

    let mut stdout = std::io::stdout();
    while let Some(event) = events.recv().await {
        let line = match event {
            ConferenceEvent::Driver(event) => event_line(event),
            ConferenceEvent::Media(line) => Some(line.to_string()),
        };
        let Some(line) = line else {
            continue;
        };
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    // Leaving is a no-op when the call already ended by itself.
    let outcome = conference.leave().await;
    if let Some(report) = outcome.report {
        let written = report
            .map_err(|e| format!("media: {e}"))
            .and_then(|report| {
                let Some(path) = args.stats_json.as_deref() else {
                    return Ok(());
                };
                write_report(path, &report).map_err(|e| format!("writing {}: {e}", path.display()))
            });
        if let Err(err) = written {
            eprintln!("parley-cli: {err}");
            return exit::FAILURE;
        }
    }
    exit_code(outcome.end)
}

/// Leaves after `duration`, or when interrupted.
async fn leave_when_done(duration: Option<Duration>, commands: mpsc::Sender<Command>) {
    match duration {
        Some(duration) => {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = interrupted() => {}
            }
        }
        None => interrupted().await,
    }
    let _ = commands.send(Command::Leave).await;
}

/// The stdout line for a driver event, if it gets one.
fn event_line(event: DriverEvent) -> Option<String> {
    Some(match event {
        DriverEvent::Session(
            SessionEvent::Message(ServerMessage::Pong { .. }) | SessionEvent::Ended(_),
        ) => return None,
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
    })
}

fn exit_code(end: Result<EndReason, DriverError>) -> u8 {
    match end {
        Ok(EndReason::Left) => exit::OK,
        Ok(EndReason::JoinRefused(code)) => {
            eprintln!("parley-cli: join refused: {code}");
            exit::JOIN_REFUSED
        }
        Ok(EndReason::Closed(reason)) => {
            eprintln!("parley-cli: the server ended the session: {reason:?}");
            exit::CLOSED_BY_SERVER
        }
        Err(err @ (DriverError::Connect(_) | DriverError::Lost(_))) => {
            eprintln!("parley-cli: {err}");
            exit::CONNECTION
        }
    }
}

fn write_report(path: &std::path::Path, report: &CallReport) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, json + "\n")
}

/// `WxH`, e.g. `1280x720`: even sizes from 16x16 to 3840x2160.
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("`{text}` is not WIDTHxHEIGHT"))?;
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("`{text}` is not WIDTHxHEIGHT"))
    };
    let (width, height) = (parse(w)?, parse(h)?);
    if !(16..=3840).contains(&width) || !(16..=2160).contains(&height) {
        return Err(format!("`{text}`: sizes go from 16x16 to 3840x2160"));
    }
    if width % 2 != 0 || height % 2 != 0 {
        return Err(format!("`{text}`: width and height must be even"));
    }
    Ok((width, height))
}

/// Chat lines and `/` commands from stdin.
async fn read_stdin(commands: mpsc::Sender<Command>, media: mpsc::Sender<MediaCommand>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(command) = audio_command(line.trim()) {
            match command {
                Ok(command) => {
                    let _ = media.send(command).await;
                }
                Err(err) => eprintln!("parley-cli: {err}"),
            }
            continue;
        }
        if let Some(size) = line.trim().strip_prefix("/size ") {
            match parse_size(size.trim()) {
                Ok((width, height)) => {
                    let _ = media
                        .send(MediaCommand::SubscribeSize { width, height })
                        .await;
                }
                Err(err) => eprintln!("parley-cli: /size: {err}"),
            }
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

/// `/mute`, `/unmute`, `/speaker NAME`, `/volume PARTICIPANT 0..4`.
fn audio_command(line: &str) -> Option<Result<MediaCommand, String>> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    Some(match command {
        "/mute" => Ok(MediaCommand::SetMuted(true)),
        "/unmute" => Ok(MediaCommand::SetMuted(false)),
        "/speaker" if rest.is_empty() => Err("usage: /speaker ID_OR_NAME".to_owned()),
        "/speaker" => Ok(MediaCommand::SetSpeaker(DeviceChoice {
            id: rest.to_owned(),
            name: rest.to_owned(),
        })),
        "/volume" => {
            let (participant, volume) = rest.rsplit_once(' ').unwrap_or((rest, ""));
            volume
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite() && (0.0..=4.0).contains(v))
                .map(|volume| MediaCommand::SetVolume {
                    participant_id: participant.trim().to_owned(),
                    volume,
                })
                .ok_or_else(|| "usage: /volume PARTICIPANT_ID 0..4".to_owned())
        }
        _ => return None,
    })
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
