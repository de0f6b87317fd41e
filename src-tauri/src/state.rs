//! The app's state between the page and the call engine: the profile, the
//! chosen devices, the prejoin preview, the hosted SFU and the running
//! [`Conference`]. Every call decision is the engine's; this only routes
//! commands in and events out.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use parley_client::conference::{Conference, ConferenceEvent};
use parley_client::driver::{Command, DriverEvent, DriverOptions};
use parley_client::media::audio::AudioOptions;
use parley_client::media::call::IcePolicy;
use parley_client::media::engine::{MediaCommand, MediaOptions};
use parley_client::media::video::{CameraPreview, VideoSink};
use parley_client::net::NetworkOptions;
use parley_client::profile::{Profile, ProfileStore, SavedDevice, ServerChoice};
use parley_client::session::{EndReason, JoinParams, SessionEvent};
use parley_media::jitter_buffer::JitterSettings;
use parley_media::scale::Size;
use parley_proto::{ErrorCode, ServerMessage};
use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Emitter as _};

use crate::args::{AppArgs, FrameTransport, JoinLink};
use crate::devices::{self, Device, DeviceKind, DeviceList, MicMeter};
use crate::error::{AppError, AppResult};
use crate::frames::{FrameHub, Window};
use crate::host::HostedServer;
use crate::links::LinkInbox;

/// The camera is asked for this; the top simulcast layer.
const CAMERA_SIZE: Size = Size::new(1280, 720);
const CAMERA_FPS: u32 = 30;
/// Kept for "Export diagnostics": about the last minute of stats.
const RECENT_STATS: usize = 60;
const RECENT_LINES: usize = 200;

/// What the page is told at start.
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    pub version: &'static str,
    pub fake_media: bool,
    pub profile: Profile,
    /// Set when the profile could not be used and was set aside.
    pub profile_notice: Option<String>,
    pub frame_transport: FrameTransport,
    /// The frame socket's URL (with its token), for the WebSocket transport.
    pub frame_url: Option<String>,
    /// Join at once with these (`--join`).
    pub auto_join: Option<JoinRequest>,
    /// A link a later start handed over before the page listened.
    pub opened_link: Option<JoinLink>,
    pub log_dir: String,
    pub profile_dir: String,
    /// `--bench-frames`: tiles to show with no call.
    pub bench_tiles: Vec<crate::bench::BenchTile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub server: ServerChoice,
    pub room: String,
    pub name: String,
    /// Access token, for a server that requires one. Kept for this call
    /// only: never saved in the profile or written to logs.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "yes")]
    pub camera_on: bool,
    #[serde(default)]
    pub muted: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub local_url: String,
    pub lan_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Selected {
    pub camera: Option<Device>,
    pub microphone: Option<Device>,
    pub speaker: Option<Device>,
}

impl Selected {
    fn slot(&mut self, kind: DeviceKind) -> &mut Option<Device> {
        match kind {
            DeviceKind::Camera => &mut self.camera,
            DeviceKind::Microphone => &mut self.microphone,
            DeviceKind::Speaker => &mut self.speaker,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DevicesView {
    #[serde(flatten)]
    pub list: DeviceList,
    pub selected: Selected,
}

/// What "Export diagnostics" adds to the logs.
#[derive(Debug, Default)]
pub struct Recent {
    pub stats: VecDeque<serde_json::Value>,
    pub media_lines: VecDeque<serde_json::Value>,
    pub frame_stats: Option<serde_json::Value>,
}

struct Preview {
    _camera: Option<CameraPreview>,
    _meter: Option<MicMeter>,
}

struct ActiveCall {
    conference: Conference,
    room: String,
    server_url: String,
}

pub struct App {
    pub args: AppArgs,
    handle: AppHandle,
    store: ProfileStore,
    profile: Mutex<Profile>,
    profile_notice: Option<String>,
    pub hub: Arc<FrameHub>,
    pub window: Arc<Window>,
    frame_url: Option<String>,
    pub log_dir: PathBuf,
    devices: Mutex<DeviceList>,
    selected: Mutex<Selected>,
    preview: Mutex<Option<Preview>>,
    /// Whether the preview shows the camera (the prejoin camera button).
    preview_camera: std::sync::atomic::AtomicBool,
    call: tokio::sync::Mutex<Option<ActiveCall>>,
    host: tokio::sync::Mutex<Option<HostedServer>>,
    pub recent: Mutex<Recent>,
    links: Arc<LinkInbox>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the arguments: they may hold an access token.
        f.debug_struct("App")
            .field("profile_dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct AppParts {
    pub args: AppArgs,
    pub handle: AppHandle,
    pub store: ProfileStore,
    pub hub: Arc<FrameHub>,
    pub window: Arc<Window>,
    pub frame_url: Option<String>,
    pub log_dir: PathBuf,
    pub links: Arc<LinkInbox>,
}

impl App {
    pub fn new(parts: AppParts) -> Arc<Self> {
        let loaded = parts.store.load();
        let profile_notice = loaded.set_aside.as_ref().map(|aside| {
            format!(
                "Your settings could not be read ({}) and were reset. The old file was kept as {}.",
                aside.reason,
                aside.moved_to.display()
            )
        });
        if let Some(version) = loaded.migrated_from {
            tracing::info!(version, "profile migrated to the current schema");
        }
        let app = Arc::new(Self {
            args: parts.args,
            handle: parts.handle,
            store: parts.store,
            profile: Mutex::new(loaded.profile),
            profile_notice,
            hub: parts.hub,
            window: parts.window,
            frame_url: parts.frame_url,
            log_dir: parts.log_dir,
            devices: Mutex::new(DeviceList::default()),
            selected: Mutex::new(Selected::default()),
            preview: Mutex::new(None),
            preview_camera: std::sync::atomic::AtomicBool::new(true),
            call: tokio::sync::Mutex::new(None),
            host: tokio::sync::Mutex::new(None),
            recent: Mutex::new(Recent::default()),
            links: parts.links,
        });
        app.refresh_devices();
        app
    }

    pub fn profile(&self) -> Profile {
        lock(&self.profile).clone()
    }

    pub fn profile_dir(&self) -> PathBuf {
        self.store.dir().to_path_buf()
    }

    /// Changes the profile and writes it; a failed write is logged and
    /// reported, the change is kept for this run.
    pub fn update_profile(&self, change: impl FnOnce(&mut Profile)) -> AppResult<()> {
        let snapshot = {
            let mut profile = lock(&self.profile);
            change(&mut profile);
            profile.clone()
        };
        self.store.save(&snapshot).map_err(|err| {
            tracing::warn!(%err, "profile not saved");
            AppError::Io(format!("settings not saved: {err}"))
        })
    }

    /// What the page asks for once, as it starts: after this, links from
    /// later starts reach it as `open-link` events.
    pub fn info(&self) -> AppInfo {
        let profile = self.profile();
        let auto_join = self.args.join.then(|| self.auto_join(&profile)).flatten();
        AppInfo {
            version: env!("CARGO_PKG_VERSION"),
            fake_media: self.args.fake_media,
            profile,
            profile_notice: self.profile_notice.clone(),
            frame_transport: self.args.frame_transport,
            frame_url: self.frame_url.clone(),
            auto_join,
            opened_link: self.links.page_listens(),
            log_dir: self.log_dir.display().to_string(),
            profile_dir: self.store.dir().display().to_string(),
            bench_tiles: self
                .args
                .bench_frames
                .as_ref()
                .map(|spec| spec.0.clone())
                .unwrap_or_default(),
        }
    }

    /// `--join` with `--server/--room/--name`, else what the profile remembers.
    fn auto_join(&self, profile: &Profile) -> Option<JoinRequest> {
        let server = match self.args.server.as_deref() {
            Some("host") => ServerChoice::Host,
            Some(url) => ServerChoice::Url {
                url: url.to_owned(),
            },
            None => profile.last_server.clone()?,
        };
        let room = self
            .args
            .room
            .clone()
            .or_else(|| profile.recent_rooms.first().cloned())?;
        let name = self
            .args
            .name
            .clone()
            .or_else(|| Some(profile.display_name.clone()).filter(|n| !n.is_empty()))
            .or_else(login_name)
            .unwrap_or_else(|| "Guest".to_owned());
        Some(JoinRequest {
            server,
            room,
            name,
            token: self.args.token.clone(),
            camera_on: true,
            muted: false,
        })
    }

    /// Lists devices again and re-resolves the saved choices against them.
    pub fn refresh_devices(&self) -> DevicesView {
        let list = devices::list(self.args.fake_media);
        for error in &list.errors {
            tracing::warn!("listing devices: {error}");
        }
        let profile = self.profile();
        let selected = Selected {
            camera: devices::resolve(profile.devices.camera.as_ref(), &list.cameras),
            microphone: devices::resolve(profile.devices.microphone.as_ref(), &list.microphones),
            speaker: devices::resolve(profile.devices.speaker.as_ref(), &list.speakers),
        };
        *lock(&self.devices) = list.clone();
        *lock(&self.selected) = selected.clone();
        DevicesView { list, selected }
    }

    /// Chooses a device: remembered, and applied to the preview or the call.
    pub async fn select_device(self: &Arc<Self>, kind: DeviceKind, id: &str) -> AppResult<()> {
        let device = {
            let list = lock(&self.devices);
            list.of_kind(kind)
                .iter()
                .find(|d| d.id == id)
                .cloned()
                .ok_or_else(|| AppError::Device(format!("no {kind:?} with id {id}")))?
        };
        *lock(&self.selected).slot(kind) = Some(device.clone());
        let saved = SavedDevice {
            id: device.id.clone(),
            name: device.name.clone(),
        };
        let saving = self.update_profile(|p| {
            let slot = match kind {
                DeviceKind::Camera => &mut p.devices.camera,
                DeviceKind::Microphone => &mut p.devices.microphone,
                DeviceKind::Speaker => &mut p.devices.speaker,
            };
            *slot = Some(saved);
        });
        tracing::info!(?kind, name = device.name, "device chosen");
        let call = self.call.lock().await;
        if let Some(call) = call.as_ref() {
            let command = match kind {
                DeviceKind::Camera => {
                    devices::video_input(Some(&device)).map(MediaCommand::SetCamera)
                }
                DeviceKind::Microphone => Some(MediaCommand::SetMicrophone(devices::audio_input(
                    Some(&device),
                ))),
                DeviceKind::Speaker => match devices::audio_output(Some(&device)) {
                    parley_client::media::audio::AudioOutput::Device(choice) => {
                        Some(MediaCommand::SetSpeaker(choice))
                    }
                    parley_client::media::audio::AudioOutput::Clock => None,
                },
            };
            if let Some(command) = command {
                call.conference.media(command).await;
            }
        } else if lock(&self.preview).is_some() {
            drop(call);
            self.start_preview(self.preview_camera.load(Ordering::Relaxed))?;
        }
        saving
    }

    /// The prejoin camera preview and microphone meter.
    /// `camera` false shows no picture and leaves the camera closed.
    pub fn start_preview(&self, camera: bool) -> AppResult<()> {
        let selected = lock(&self.selected).clone();
        // Release the devices before opening them again.
        *lock(&self.preview) = None;
        self.preview_camera.store(camera, Ordering::Relaxed);
        let mut problems = Vec::new();
        let input = devices::video_input(selected.camera.as_ref()).filter(|_| camera);
        let camera = match input {
            Some(input) => {
                let (errors, _) = std::sync::mpsc::channel();
                match CameraPreview::start(
                    input,
                    CAMERA_SIZE,
                    CAMERA_FPS,
                    Arc::clone(&self.hub) as Arc<dyn VideoSink>,
                    errors,
                ) {
                    Ok(preview) => Some(preview),
                    Err(err) => {
                        problems.push(format!("camera: {err}"));
                        None
                    }
                }
            }
            None => None,
        };
        let meter = match MicMeter::start(&devices::audio_input(selected.microphone.as_ref())) {
            Ok(meter) => Some(meter),
            Err(err) => {
                problems.push(format!("microphone: {err}"));
                None
            }
        };
        if let Some(meter) = &meter {
            self.follow_level(Arc::clone(&meter.level));
        }
        *lock(&self.preview) = Some(Preview {
            _camera: camera,
            _meter: meter,
        });
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AppError::Device(problems.join("; ")))
        }
    }

    pub fn stop_preview(&self) {
        *lock(&self.preview) = None;
        self.hub.clear(parley_client::media::video::LOCAL_TILE);
    }

    /// Emits `level` events from this meter ten times a second while it lives.
    fn follow_level(&self, level: Arc<AtomicU8>) {
        let handle = self.handle.clone();
        let weak = Arc::downgrade(&level);
        drop(level);
        tauri::async_runtime::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(level) = weak.upgrade() else { return };
                let _ = handle.emit("level", level.load(Ordering::Relaxed));
            }
        });
    }

    pub async fn host(&self) -> AppResult<HostInfo> {
        let mut host = self.host.lock().await;
        if host.is_none() {
            let started = HostedServer::start(self.args.host_port)
                .await
                .map_err(|e| AppError::Server(format!("could not host: {e:#}")))?;
            tracing::info!(url = started.local_url, lan = ?started.lan_urls, "hosting");
            *host = Some(started);
        }
        let host = host.as_ref().expect("started above");
        Ok(HostInfo {
            local_url: host.local_url.clone(),
            lan_urls: host.lan_urls.clone(),
        })
    }

    pub async fn join(self: &Arc<Self>, request: JoinRequest) -> AppResult<()> {
        let mut call = self.call.lock().await;
        if call.is_some() {
            return Err(AppError::AlreadyInCall);
        }
        let mut params = JoinParams::new(request.room.trim(), request.name.trim());
        params.media = true;
        params.token =
            crate::args::optional_token(request.token.as_deref()).map_err(AppError::Invalid)?;
        params
            .validate()
            .map_err(|e| AppError::Invalid(e.to_string()))?;
        let url = match &request.server {
            ServerChoice::Host => self.host().await?.local_url,
            ServerChoice::Url { url } => url.trim().to_owned(),
        };
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(AppError::Invalid(
                "the server address starts with ws:// or wss://".into(),
            ));
        }
        self.stop_preview();
        let selected = lock(&self.selected).clone();
        let profile = self.profile();
        let video = devices::video_input(selected.camera.as_ref());
        let level = Arc::new(AtomicU8::new(127));
        let network = network_options()?;
        let media = MediaOptions {
            camera_enabled: request.camera_on && video.is_some(),
            video: video.unwrap_or(parley_client::media::video::VideoInput::Synthetic),
            resolution: CAMERA_SIZE,
            fps: CAMERA_FPS,
            video_sink: Some(Arc::clone(&self.hub) as Arc<dyn VideoSink>),
            subscribe_size: None,
            ice_servers: Vec::new(),
            ice_policy: IcePolicy::All,
            network: network.clone(),
            only: None,
            audio: AudioOptions {
                input: devices::audio_input(selected.microphone.as_ref()),
                output: devices::audio_output(selected.speaker.as_ref()),
                processing: profile.audio_processing.into(),
                jitter: JitterSettings::default(),
                muted: request.muted,
                record_playout: None,
                record_microphone: None,
                detect_markers: false,
                level_meter: Some(Arc::clone(&level)),
            },
            simulated_loss: 0.0,
        };
        let driver = DriverOptions {
            url: url.clone(),
            reconnect: true,
            give_up_after: Duration::from_mins(1),
            network,
        };
        tracing::info!(url, room = params.room, "joining");
        let room = params.room.clone();
        let name = params.name.clone();
        let (conference, events) = Conference::start(driver, params, Some(media));
        self.follow_level(Arc::clone(&level));
        self.spawn_stats(conference.media_sender(), level);
        self.spawn_events(events);
        *call = Some(ActiveCall {
            conference,
            room: room.clone(),
            server_url: url,
        });
        drop(call);
        let _ = self
            .handle
            .emit("call-state", serde_json::json!({"state": "connecting"}));
        self.update_profile(|p| {
            p.display_name = name;
            p.last_server = Some(request.server.clone());
            p.remember_room(&room);
        })
    }

    /// Polls the engine's figures once a second for the stats overlay; ends
    /// with the call (when the engine stops answering). Holds the call's
    /// level meter alive as long.
    fn spawn_stats(
        self: &Arc<Self>,
        media: tokio::sync::mpsc::Sender<MediaCommand>,
        level: Arc<AtomicU8>,
    ) {
        let app = Arc::downgrade(self);
        tauri::async_runtime::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                if media.send(MediaCommand::Report(tx)).await.is_err() {
                    return;
                }
                // No engine yet (still joining): try again next second.
                let Ok(Ok(report)) = tokio::time::timeout(Duration::from_secs(1), rx).await else {
                    if media.is_closed() {
                        return;
                    }
                    continue;
                };
                let Some(app) = app.upgrade() else { return };
                let mut value = serde_json::to_value(&report).unwrap_or_default();
                value["input_level"] = level.load(Ordering::Relaxed).into();
                value["frames"] = serde_json::to_value(app.hub.counters()).unwrap_or_default();
                push_bounded(&mut lock(&app.recent).stats, value.clone(), RECENT_STATS);
                let _ = app.handle.emit("stats", value);
            }
        });
    }

    fn spawn_events(self: &Arc<Self>, mut events: tokio::sync::mpsc::Receiver<ConferenceEvent>) {
        let app = Arc::clone(self);
        tauri::async_runtime::spawn(async move {
            while let Some(event) = events.recv().await {
                app.forward(event);
            }
            app.call_ended().await;
        });
    }

    fn forward(&self, event: ConferenceEvent) {
        match event {
            ConferenceEvent::Driver(DriverEvent::Session(SessionEvent::Message(message))) => {
                if matches!(message, ServerMessage::Pong { .. }) {
                    return;
                }
                if let ServerMessage::Joined(joined) = &message {
                    tracing::info!(
                        participant = joined.participant_id,
                        resumed = joined.resumed,
                        "joined"
                    );
                    let _ = self
                        .handle
                        .emit("call-state", serde_json::json!({"state": "joined"}));
                }
                let _ = self.handle.emit("server", redacted(&message));
            }
            ConferenceEvent::Driver(DriverEvent::Session(SessionEvent::Ended(reason))) => {
                let detail = end_text(&reason);
                let _ = self.handle.emit(
                    "call-state",
                    serde_json::json!({"state": "ending", "detail": detail, "refused": refusal(&reason)}),
                );
            }
            ConferenceEvent::Driver(DriverEvent::Reconnecting { attempt, error }) => {
                tracing::warn!(attempt, error, "reconnecting");
                let _ = self.handle.emit(
                    "call-state",
                    serde_json::json!({"state": "reconnecting", "attempt": attempt, "detail": error}),
                );
            }
            ConferenceEvent::Driver(DriverEvent::Refused { error }) => {
                let _ = self.handle.emit("refused", error);
            }
            ConferenceEvent::Media(line) => {
                tracing::info!(%line, "media");
                push_bounded(
                    &mut lock(&self.recent).media_lines,
                    line.clone(),
                    RECENT_LINES,
                );
                let _ = self.handle.emit("media", line);
            }
        }
    }

    async fn call_ended(&self) {
        let call = self.call.lock().await.take();
        let (detail, refused) = match call {
            Some(call) => {
                let outcome = call.conference.finished().await;
                tracing::info!(room = call.room, server = call.server_url, end = ?outcome.end, "call ended");
                match outcome.end {
                    Ok(reason) => (end_text(&reason), refusal(&reason)),
                    Err(err) => (err.to_string(), None),
                }
            }
            None => ("left".to_owned(), None),
        };
        self.hub.clear(parley_client::media::video::LOCAL_TILE);
        let _ = self.handle.emit(
            "call-state",
            serde_json::json!({"state": "ended", "detail": detail, "refused": refused}),
        );
    }

    pub async fn leave(&self) -> AppResult<()> {
        let call = self.call.lock().await;
        let call = call.as_ref().ok_or(AppError::NotInCall)?;
        call.conference.send(Command::Leave).await;
        Ok(())
    }

    pub async fn send_chat(&self, text: String) -> AppResult<String> {
        let call = self.call.lock().await;
        let call = call.as_ref().ok_or(AppError::NotInCall)?;
        let client_id = uuid::Uuid::new_v4().to_string();
        call.conference
            .send(Command::Chat {
                client_id: client_id.clone(),
                text,
            })
            .await;
        Ok(client_id)
    }

    pub async fn media(&self, command: MediaCommand) -> AppResult<()> {
        let call = self.call.lock().await;
        let call = call.as_ref().ok_or(AppError::NotInCall)?;
        call.conference.media(command).await;
        Ok(())
    }

    /// Leaves the call and stops the hosted server (window closing).
    pub async fn shutdown(&self) {
        if let Some(call) = self.call.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), call.conference.leave()).await;
        }
        if let Some(host) = self.host.lock().await.take() {
            host.stop().await;
        }
    }
}

/// Proxy settings from the environment, as parley-cli takes them.
pub fn network_options() -> AppResult<NetworkOptions> {
    NetworkOptions::default()
        .with_env_proxy()
        .map_err(AppError::Invalid)
}

/// Why a call ended, as the page shows it (`left` when we left).
fn end_text(reason: &EndReason) -> String {
    match reason {
        EndReason::Left => "left".to_owned(),
        EndReason::JoinRefused(ErrorCode::TokenRequired) => {
            "This server needs an access token: paste the one you were given.".to_owned()
        }
        EndReason::JoinRefused(ErrorCode::TokenInvalid) => {
            "The server did not accept the access token: check that it was copied whole, and that it is for this server.".to_owned()
        }
        EndReason::JoinRefused(ErrorCode::TokenExpired) => {
            "The access token has expired: ask for a new one.".to_owned()
        }
        EndReason::JoinRefused(ErrorCode::TokenWrongRoom) => {
            "The access token is for another room.".to_owned()
        }
        EndReason::JoinRefused(code) => format!("The server refused to let us in: {code}"),
        EndReason::Closed(reason) => format!("The server ended the call: {reason:?}"),
    }
}

/// The protocol's code when the server refused the join, for the page to
/// point at the field to mend.
fn refusal(reason: &EndReason) -> Option<String> {
    match reason {
        EndReason::JoinRefused(code) => Some(code.to_string()),
        _ => None,
    }
}

/// Keeps the newest `max` values.
fn push_bounded<T>(values: &mut VecDeque<T>, value: T, max: usize) {
    if values.len() == max {
        values.pop_front();
    }
    values.push_back(value);
}

/// The account's login name, capitalised: a name to start with when
/// `--join` comes with none and the profile has none.
fn login_name() -> Option<String> {
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()?;
    let mut chars = login.chars();
    let first = chars.next()?;
    Some(first.to_uppercase().chain(chars).collect())
}

/// A server message as the page sees it: secrets (the resume token, TURN
/// credentials) stay in the engine.
fn redacted(message: &ServerMessage) -> serde_json::Value {
    let mut value = serde_json::to_value(message).unwrap_or_default();
    if let ServerMessage::Joined(_) = message {
        value["resume_token"] = serde_json::Value::Null;
        value["ice_servers"] = serde_json::json!([]);
    }
    value
}
