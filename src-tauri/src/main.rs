//! Parley's desktop app: a Tauri 2 window over the call engine. The page
//! (`ui/`) draws; [`state::App`] routes its commands to the engine and the
//! engine's events back; pictures travel over [`frames`].

// A release build is a GUI program on Windows: no console window.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod args;
mod bench;
mod commands;
mod devices;
mod diagnostics;
mod error;
mod frame_server;
mod frames;
mod host;
#[cfg(unix)]
mod instance;
mod links;
mod logging;
mod state;

use std::process::ExitCode;
use std::sync::Arc;

use parley_client::profile::{ProfileStore, WindowGeometry};
use tauri::{Manager as _, RunEvent, WebviewUrl, WebviewWindowBuilder, WindowEvent};

use crate::args::{AppArgs, FrameTransport};
use crate::frames::{FrameHub, Window};
use crate::links::{Delivery, LinkInbox};
use crate::state::{App, AppParts};

const DEFAULT_SIZE: (f64, f64) = (1280.0, 720.0);
const MIN_SIZE: (f64, f64) = (480.0, 360.0);

fn main() -> ExitCode {
    let args = AppArgs::from_command_line();
    let Some(profile_dir) = args.profile_dir.clone().or_else(ProfileStore::default_dir) else {
        eprintln!("parley: no place for the profile; pass --profile-dir DIR");
        return ExitCode::FAILURE;
    };
    let inbox = Arc::new(LinkInbox::default());
    let socket = match one_app_per_profile(&args, &profile_dir, &inbox) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    if let Err(message) = display_available() {
        eprintln!("parley: {message}");
        return ExitCode::FAILURE;
    }
    let log_dir = logging::log_dir(args.profile_dir.as_deref());
    let _log_guard = match logging::init(&args.log_level, &log_dir) {
        Ok(guard) => guard,
        Err(message) => {
            eprintln!("parley: {message}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), profile = %profile_dir.display(), logs = %log_dir.display(), "starting");
    match run(args, ProfileStore::new(profile_dir), log_dir, inbox, socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("parley: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Hands this start's link to the app already running on the profile, if
/// there is one (then the process is done: `Err` holds its exit code).
/// Otherwise answers later starts from now on, their links going to
/// `inbox`, and returns the socket to remove when the app starts to quit.
#[cfg(unix)]
fn one_app_per_profile(
    args: &AppArgs,
    profile_dir: &std::path::Path,
    inbox: &Arc<LinkInbox>,
) -> Result<Option<std::path::PathBuf>, ExitCode> {
    use instance::{Claim, Handover};
    let message = Handover {
        link: args.link.as_ref().map(|link| link.text.clone()),
    };
    match instance::claim(profile_dir, &message) {
        Ok(Claim::First(listening)) => {
            serve_later_starts(listening.listener, Arc::clone(inbox));
            Ok(Some(listening.path))
        }
        Ok(Claim::HandedOver(reply)) => match reply.error {
            None => {
                let what = if message.link.is_some() {
                    "the link goes to its window"
                } else {
                    "its window comes to the front"
                };
                eprintln!(
                    "parley: Parley is already running on this profile (pid {}): {what}",
                    reply.pid
                );
                Err(ExitCode::SUCCESS)
            }
            Some(error) => {
                eprintln!(
                    "parley: the Parley already running on this profile (pid {}) refused: {error}",
                    reply.pid
                );
                Err(ExitCode::FAILURE)
            }
        },
        Ok(Claim::Unanswered(reason)) => {
            eprintln!(
                "parley: a Parley is running on this profile ({}) but {reason}. \
                 Close it, or start with another --profile-dir.",
                profile_dir.display()
            );
            Err(ExitCode::FAILURE)
        }
        Ok(Claim::Unsupported) => Ok(None),
        Err(err) => {
            // Better a second app than none: say why links will not reach it.
            eprintln!("parley: links clicked later will open another app: {err}");
            Ok(None)
        }
    }
}

/// Every start is on its own where there are no Unix sockets.
#[cfg(not(unix))]
fn one_app_per_profile(
    _args: &AppArgs,
    _profile_dir: &std::path::Path,
    _inbox: &Arc<LinkInbox>,
) -> Result<Option<std::path::PathBuf>, ExitCode> {
    Ok(None)
}

/// Answers later starts on this profile from now on, before the window
/// exists, so none waits on a slow start: their links go to the inbox.
#[cfg(unix)]
fn serve_later_starts(listener: std::os::unix::net::UnixListener, inbox: Arc<LinkInbox>) {
    use instance::Answer;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors, say: not a reason to spin.
                    tracing::warn!(%err, "accepting a later start failed");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    continue;
                }
            };
            let answered = instance::answer(stream, |message| {
                match message
                    .link
                    .as_deref()
                    .map(args::JoinLink::parse)
                    .transpose()
                {
                    Err(reason) => Answer::Refused(reason),
                    Ok(link) => {
                        if let Some(link) = &link {
                            tracing::info!(
                                room = link.room,
                                server = link.server,
                                "a link from a later start"
                            );
                        }
                        match inbox.deliver(link) {
                            Delivery::Taken => Answer::Taken,
                            Delivery::Quitting => Answer::Quitting,
                        }
                    }
                }
            });
            if let Err(err) = answered {
                tracing::warn!(%err, "a later start's hand-over failed");
            }
        }
    });
}

/// A window needs a display; say how to get one rather than crash in GTK.
fn display_available() -> Result<(), String> {
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        return Err("no display (neither DISPLAY nor WAYLAND_DISPLAY is set). \
             Run it from a desktop session, or under a virtual display: \
             xvfb-run -a parley --fake-media"
            .into());
    }
    Ok(())
}

fn run(
    args: AppArgs,
    store: ProfileStore,
    log_dir: std::path::PathBuf,
    inbox: Arc<LinkInbox>,
    socket: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let app_inbox = Arc::clone(&inbox);
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .invoke_handler(tauri::generate_handler![
            commands::app_info,
            commands::list_devices,
            commands::select_device,
            commands::start_preview,
            commands::stop_preview,
            commands::save_settings,
            commands::host,
            commands::join,
            commands::leave,
            commands::send_chat,
            commands::set_muted,
            commands::set_camera,
            commands::set_volume,
            commands::subscribe_tile,
            commands::test_connection,
            commands::export_diagnostics,
            commands::frames_subscribe,
            commands::frames_ack,
            commands::notify,
            commands::frame_stats,
        ])
        .setup(move |tauri_app| {
            let hub = FrameHub::new();
            let window = Arc::new(Window::default());
            let frame_url = match args.frame_transport {
                FrameTransport::Websocket => Some(
                    tauri::async_runtime::block_on(frame_server::FrameServer::start(
                        Arc::clone(&hub),
                        Arc::clone(&window),
                    ))?
                    .url,
                ),
                FrameTransport::Channel => None,
            };
            let state = App::new(AppParts {
                args: args.clone(),
                handle: tauri_app.handle().clone(),
                store: store.clone(),
                hub,
                window,
                frame_url,
                log_dir: log_dir.clone(),
                links: Arc::clone(&app_inbox),
            });
            if let Some(tiles) = &args.bench_frames {
                bench::start(&state.hub, &tiles.0);
            }
            open_window(tauri_app, state.profile().window)?;
            tauri_app.manage(state);
            app_inbox.attach(tauri_app.handle().clone());
            Ok(())
        })
        .on_window_event(|window, event| {
            if let WindowEvent::CloseRequested { .. } = event {
                remember_geometry(window);
            }
        })
        .build(tauri::generate_context!())?;
    app.run(move |handle, event| {
        if let RunEvent::ExitRequested { .. } = event {
            // From here on a new start becomes the app instead of handing over.
            inbox.quitting();
            if let Some(path) = &socket {
                let _ = std::fs::remove_file(path);
            }
            let state = handle.state::<Arc<App>>();
            tauri::async_runtime::block_on(state.shutdown());
        }
    });
    Ok(())
}

fn open_window(app: &tauri::App, geometry: Option<WindowGeometry>) -> tauri::Result<()> {
    let (width, height) =
        geometry.map_or(DEFAULT_SIZE, |g| (f64::from(g.width), f64::from(g.height)));
    let mut builder = WebviewWindowBuilder::new(app, "main", WebviewUrl::default())
        .title("Parley")
        .inner_size(width.max(MIN_SIZE.0), height.max(MIN_SIZE.1))
        .min_inner_size(MIN_SIZE.0, MIN_SIZE.1);
    if let Some(geometry) = geometry {
        builder = builder
            .position(f64::from(geometry.x), f64::from(geometry.y))
            .maximized(geometry.maximized);
    }
    builder.build()?;
    Ok(())
}

fn remember_geometry(window: &tauri::Window) {
    let (Ok(position), Ok(size), Ok(scale)) = (
        window.outer_position(),
        window.inner_size(),
        window.scale_factor(),
    ) else {
        return;
    };
    let position = position.to_logical::<f64>(scale);
    let size = size.to_logical::<f64>(scale);
    let geometry = WindowGeometry {
        x: position.x as i32,
        y: position.y as i32,
        width: size.width as u32,
        height: size.height as u32,
        maximized: window.is_maximized().unwrap_or(false),
    };
    let state = window.state::<Arc<App>>();
    if let Err(err) = state.update_profile(|p| p.window = Some(geometry)) {
        tracing::warn!("window size not remembered: {err}");
    }
}
