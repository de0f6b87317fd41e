//! `parley-sfu`: serve rooms, or mint an access token.

// Doc comments on the clap types below are `--help` text, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use parley_proto::{AccessClaims, Grants, validate};
use parley_sfu::config::{Overrides, Settings};
use parley_sfu::server::Server;

/// Parley's selective forwarding unit: rooms, signaling over WebSocket, text
/// chat with history, access tokens and TURN credentials.
///
/// With no subcommand it serves. Settings come from --config (TOML) and are
/// overridden by flags. Without an auth secret the server runs in OPEN MODE:
/// anyone who can reach it may join any room.
#[derive(Debug, Parser)]
#[command(name = "parley-sfu", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve rooms (the default).
    Serve(ServeArgs),
    /// Mint an access token and print it on stdout.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// TOML config file (see packaging/sfu.toml for every key).
    #[arg(long, short, env = "PARLEY_SFU_CONFIG")]
    config: Option<PathBuf>,
    /// Address for HTTP, WebSocket (/ws), /healthz and /metrics [default: 127.0.0.1:7880].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HS256 secret for access tokens (at least 16 bytes). Prefer the env var or a file.
    #[arg(long, env = "PARLEY_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// PEM certificate chain; serves wss:// and https:// (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// coturn's static-auth-secret; TURN credentials are minted per join.
    #[arg(long, env = "PARLEY_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// TURN URL handed to clients, e.g. turns:turn.example.com:443?transport=tcp (repeatable).
    #[arg(long = "turn-url")]
    turn_urls: Vec<String>,
    /// Lifetime of minted TURN credentials, e.g. 12h.
    #[arg(long, value_parser = humantime::parse_duration)]
    turn_ttl: Option<Duration>,
    /// STUN URL handed to clients, e.g. stun:turn.example.com:3478 (repeatable).
    #[arg(long = "stun-url")]
    stun_urls: Vec<String>,
    /// Most participants in one room [default: 100].
    #[arg(long)]
    max_participants: Option<usize>,
    /// How long a participant who lost its connection may resume before the
    /// room is told it left [default: 15s].
    #[arg(long, value_parser = humantime::parse_duration)]
    resume_window: Option<Duration>,
    /// Run signaling and chat only, with no media port.
    #[arg(long)]
    no_media: bool,
    /// UDP port shared by every media session, 0 for any free one [default: 7882].
    #[arg(long)]
    media_port: Option<u16>,
    /// TCP port for ICE-TCP on every media address, 0 for any free one [default: 7881].
    #[arg(long)]
    media_tcp_port: Option<u16>,
    /// Serve no ICE-TCP (clients behind UDP-blocking firewalls then need TURN).
    #[arg(long)]
    no_ice_tcp: bool,
    /// Address to serve media on (repeatable) [default: every interface address].
    #[arg(long = "media-ip")]
    media_ips: Vec<std::net::IpAddr>,
    /// Public address to advertise when behind 1:1 NAT (e.g. a cloud VM's).
    #[arg(long)]
    public_ip: Option<std::net::IpAddr>,
    /// Log filter, e.g. info or parley_sfu=debug (RUST_LOG syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Room the token admits to.
    #[arg(long)]
    room: String,
    /// Identity of the bearer, unique in the room.
    #[arg(long)]
    identity: String,
    /// Display name; the client's own choice is used when absent.
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid, e.g. 6h or 30m.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Do not allow publishing audio or video.
    #[arg(long)]
    no_publish: bool,
    /// Do not allow receiving others' audio or video.
    #[arg(long)]
    no_subscribe: bool,
    /// Do not allow sending chat (reading stays allowed).
    #[arg(long)]
    no_chat: bool,
    /// Config file whose [auth] secret signs the token.
    #[arg(long, short, env = "PARLEY_SFU_CONFIG")]
    config: Option<PathBuf>,
    /// Secret that signs the token (instead of --config).
    #[arg(long, env = "PARLEY_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(args)) => mint(&args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("parley-sfu: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .context("invalid --log-level")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let settings = Settings::load(
        args.config.as_deref(),
        Overrides {
            listen: args.listen,
            auth_secret: args.auth_secret,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            turn_secret: args.turn_secret,
            turn_urls: args.turn_urls,
            turn_ttl: args.turn_ttl,
            stun_urls: args.stun_urls,
            max_participants: args.max_participants,
            resume_window: args.resume_window,
            no_media: args.no_media,
            media_port: args.media_port,
            media_tcp_port: args.media_tcp_port,
            no_ice_tcp: args.no_ice_tcp,
            media_ips: args.media_ips,
            public_ip: args.public_ip,
        },
    )?;
    let open_mode = settings.core.tokens.is_none();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(settings).await?;
        if open_mode {
            tracing::warn!(
                "OPEN MODE: no auth secret is configured, so anyone who can reach {} may join any room. \
                 Set [auth] secret (or PARLEY_AUTH_SECRET) for anything but local testing.",
                server.local_addr()
            );
        }
        println!("parley-sfu {} ready", env!("CARGO_PKG_VERSION"));
        for addr in server.media_addrs() {
            println!("  media:     udp {addr}");
        }
        for addr in server.media_tcp_addrs() {
            println!("  media:     tcp {addr}");
        }
        println!("  signaling: {}", server.signaling_url());
        println!("  health:    {}/healthz", server.http_url());
        println!("  metrics:   {}/metrics", server.http_url());
        tracing::info!(addr = %server.local_addr(), "serving");
        wait_for_stop_signal().await;
        server.shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn mint(args: &TokenArgs) -> anyhow::Result<()> {
    validate::room_name(&args.room)?;
    validate::identity(&args.identity)?;
    if let Some(name) = &args.name {
        validate::display_name(name)?;
    }
    let settings = Settings::load(
        args.config.as_deref(),
        Overrides {
            auth_secret: args.auth_secret.clone(),
            ..Overrides::default()
        },
    )?;
    let authority = settings.core.tokens.context(
        "no auth secret: pass --auth-secret, set PARLEY_AUTH_SECRET, or --config a file with [auth] secret",
    )?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = authority.mint(&AccessClaims {
        sub: args.identity.clone(),
        room: args.room.clone(),
        name: args.name.clone(),
        grants: Grants {
            publish: !args.no_publish,
            subscribe: !args.no_subscribe,
            chat: !args.no_chat,
        },
        iat: now,
        exp: now + args.ttl.as_secs(),
        nbf: None,
    })?;
    println!("{token}");
    Ok(())
}
