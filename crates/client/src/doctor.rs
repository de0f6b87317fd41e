//! The connectivity doctor: tries every way to the SFU one at a time and
//! says which work. Signaling first (a join), then a real media session per
//! path (UDP, ICE-TCP, and each TURN server the SFU names, over its own
//! transport): a path works when ICE and DTLS connect over it alone. The
//! checks run one after another, because a token's identity may be in the
//! room only once. `parley-cli doctor` prints the result as a table; the
//! desktop app's "Test my connection" shows the same [`Check`]s.

use parley_media::apm::ApmSettings;

use crate::media::audio::AudioOptions;
use std::time::{Duration, Instant};

use parley_media::scale::Size;
use parley_proto::{ClientMessage, Joined, ServerMessage};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::media::call::IcePolicy;
use crate::media::engine::{self, MediaCommand, MediaNotice, MediaOptions, PathCheck};
use crate::media::turn::TurnUrl;
use crate::media::video::VideoInput;
use crate::net::NetworkOptions;
use crate::session::{JoinParams, SignalingSession};
use crate::ws::SignalingSocket;

/// What to check, and how.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub url: String,
    pub token: Option<String>,
    /// The room joined for the checks (a token's room wins on the server).
    pub room: String,
    pub network: NetworkOptions,
    /// How long one path may take to connect.
    pub timeout: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `signaling`, `udp`, `ice-tcp`, `turn/udp`, `turn/tcp` or `turn/tls`.
    pub name: String,
    /// The server or URL it was checked against.
    pub target: String,
    pub ok: bool,
    /// From the start of the check (its join) to connected.
    pub ms: Option<f64>,
    /// The path that connected, or why the check failed.
    pub detail: String,
}

/// Runs every check; never fails as a whole, each check says what happened.
pub async fn diagnose(options: &DoctorOptions) -> Vec<Check> {
    let mut checks = Vec::new();
    let started = Instant::now();
    let joined = match join(options, false).await {
        Ok((mut socket, joined)) => {
            let _ = socket.send(&ClientMessage::Leave {}).await;
            checks.push(Check {
                name: "signaling".into(),
                target: options.url.clone(),
                ok: true,
                ms: Some(ms_since(started)),
                detail: format!("joined room {} (protocol {})", joined.room, joined.protocol),
            });
            joined
        }
        Err(reason) => {
            checks.push(Check {
                name: "signaling".into(),
                target: options.url.clone(),
                ok: false,
                ms: None,
                detail: reason,
            });
            return checks;
        }
    };
    let mut plan = vec![
        (
            "udp".to_owned(),
            "the SFU's UDP media port".to_owned(),
            PathCheck::Udp,
        ),
        (
            "ice-tcp".to_owned(),
            "the SFU's ICE-TCP port".to_owned(),
            PathCheck::IceTcp,
        ),
    ];
    let turn_urls: Vec<TurnUrl> = joined
        .ice_servers
        .iter()
        .flat_map(|s| &s.urls)
        .filter_map(|u| u.parse().ok())
        .collect();
    for url in &turn_urls {
        let name = format!("turn/{}", url.transport.name());
        if !plan.iter().any(|(n, ..)| *n == name) {
            plan.push((name, url.to_string(), PathCheck::Turn(url.transport)));
        }
    }
    if turn_urls.is_empty() {
        checks.push(Check {
            name: "turn".into(),
            target: "-".into(),
            ok: false,
            ms: None,
            detail: "the SFU names no TURN server".into(),
        });
    }
    for (name, target, path) in plan {
        let (ok, ms, detail) = match check_path(options, path).await {
            Ok((ms, detail)) => (true, Some(ms), detail),
            Err(reason) => (false, None, reason),
        };
        checks.push(Check {
            name,
            target,
            ok,
            ms,
            detail,
        });
    }
    checks
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Connects and joins; the server's refusal is the error.
async fn join(options: &DoctorOptions, media: bool) -> Result<(SignalingSocket, Joined), String> {
    let mut socket = SignalingSocket::connect(&options.url, &options.network)
        .await
        .map_err(|e| e.to_string())?;
    // The session writes the join exactly as a call would.
    let mut session = SignalingSession::new(JoinParams {
        room: options.room.clone(),
        name: "Connection check".into(),
        token: options.token.clone(),
        identity: None,
        media,
    });
    session.handle_connected(Instant::now());
    while let Some(message) = session.poll_transmit() {
        socket.send(&message).await.map_err(|e| e.to_string())?;
    }
    let waiting = async {
        loop {
            match socket.recv().await {
                Some(Ok(ServerMessage::Joined(joined))) => return Ok(*joined),
                Some(Ok(ServerMessage::Error(error))) => {
                    return Err(format!(
                        "join refused: {} ({:?})",
                        error.message, error.code
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the server closed the connection".into()),
            }
        }
    };
    let joined = tokio::time::timeout(options.timeout, waiting)
        .await
        .map_err(|_| "no answer to join".to_owned())??;
    Ok((socket, joined))
}

/// One media session restricted to `path`; returns how long it took to
/// connect and the path it connected on.
async fn check_path(options: &DoctorOptions, path: PathCheck) -> Result<(f64, String), String> {
    let joined_at = Instant::now();
    let (mut socket, joined) = join(options, true).await?;
    let (commands, command_rx) = mpsc::channel(64);
    let (notice_tx, mut notices) = mpsc::channel(256);
    let media = MediaOptions {
        video: VideoInput::Synthetic,
        camera_enabled: true,
        video_sink: None,
        resolution: Size::new(320, 180),
        fps: 5,
        subscribe_size: None,
        ice_servers: joined.ice_servers.clone(),
        ice_policy: IcePolicy::All,
        network: options.network.clone(),
        only: Some(path),
        // Only the connection is checked: no processing, nothing played.
        audio: AudioOptions {
            processing: ApmSettings::OFF,
            detect_markers: false,
            ..AudioOptions::default()
        },
        simulated_loss: 0.0,
    };
    let call = tokio::spawn(engine::run(
        media,
        joined.participant_id.clone(),
        joined_at,
        command_rx,
        notice_tx,
    ));
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut connected = false;
    let mut connect_ms = 0.0;
    let outcome = loop {
        // Once connected, wait briefly for the stats that name the path.
        let until = if connected {
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(1500))
        } else {
            deadline
        };
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message)) => {
                    let _ = commands.send(MediaCommand::Server(message)).await;
                }
                Some(Err(e)) => break Err(format!("signaling failed: {e}")),
                None => break Err("the server closed the connection".into()),
            },
            notice = notices.recv() => match notice {
                Some(MediaNotice::Send(message)) => {
                    if let Err(e) = socket.send(&message).await {
                        break Err(format!("signaling failed: {e}"));
                    }
                }
                Some(MediaNotice::Line(line)) => match line["type"].as_str() {
                    Some("cli_media_connected") => {
                        connected = true;
                        connect_ms = line["ms_since_join"].as_f64().unwrap_or_default();
                    }
                    Some("cli_path") => {
                        break Ok((connect_ms, format!(
                            "{} {} -> {}",
                            line["path"].as_str().unwrap_or("?"),
                            line["local"].as_str().unwrap_or("?"),
                            line["remote"].as_str().unwrap_or("?"),
                        )));
                    }
                    Some("cli_turn_error" | "cli_media_error") if !connected => {
                        break Err(line["error"].as_str().unwrap_or("failed").to_owned());
                    }
                    _ => {}
                },
                None => break Err("the media session ended".into()),
            },
            () = tokio::time::sleep_until(until) => {
                break if connected {
                    Ok((connect_ms, "connected".into()))
                } else {
                    Err(format!("no connection within {}s", options.timeout.as_secs()))
                };
            }
        }
    };
    let _ = commands.send(MediaCommand::Stop).await;
    let _ = socket.send(&ClientMessage::Leave {}).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), call).await;
    outcome
}
