//! The commands the page calls. Each one is a line or two into [`App`]:
//! decisions live in the engine and the app state, not here.

// Tauri's command macro hands every argument over by value.
#![allow(clippy::needless_pass_by_value)]

use std::sync::Arc;

use parley_client::doctor::{Check, DoctorOptions, diagnose};
use parley_client::media::engine::MediaCommand;
use parley_client::profile::AudioProcessing;
use tauri::State;
use tauri::ipc::{Channel, InvokeResponseBody};

use crate::devices::DeviceKind;
use crate::error::{AppError, AppResult};
use crate::frames::pump;
use crate::state::{App, AppInfo, DevicesView, HostInfo, JoinRequest};

type AppState<'a> = State<'a, Arc<App>>;

/// Tiles are asked for at most this size (the camera's).
const MAX_TILE: u32 = 3840;

#[tauri::command]
pub fn app_info(app: AppState<'_>) -> AppInfo {
    app.info()
}

#[tauri::command]
pub fn list_devices(app: AppState<'_>) -> DevicesView {
    app.refresh_devices()
}

#[tauri::command]
pub async fn select_device(app: AppState<'_>, kind: DeviceKind, id: String) -> AppResult<()> {
    app.select_device(kind, &id).await
}

#[tauri::command]
pub fn start_preview(app: AppState<'_>, camera: bool) -> AppResult<()> {
    app.start_preview(camera)
}

#[tauri::command]
pub fn stop_preview(app: AppState<'_>) {
    app.stop_preview();
}

#[tauri::command]
pub fn save_settings(
    app: AppState<'_>,
    display_name: Option<String>,
    audio_processing: Option<AudioProcessing>,
) -> AppResult<()> {
    if let Some(name) = &display_name
        && name.chars().count() > parley_proto::limits::MAX_NAME_CHARS
    {
        return Err(AppError::Invalid("that name is too long".into()));
    }
    app.update_profile(|p| {
        if let Some(name) = display_name {
            p.display_name = name;
        }
        if let Some(processing) = audio_processing {
            p.audio_processing = processing;
        }
    })
}

#[tauri::command]
pub async fn host(app: AppState<'_>) -> AppResult<HostInfo> {
    app.host().await
}

#[tauri::command]
pub async fn join(app: AppState<'_>, request: JoinRequest) -> AppResult<()> {
    app.join(request).await
}

#[tauri::command]
pub async fn leave(app: AppState<'_>) -> AppResult<()> {
    app.leave().await
}

#[tauri::command]
pub async fn send_chat(app: AppState<'_>, text: String) -> AppResult<String> {
    app.send_chat(text).await
}

#[tauri::command]
pub async fn set_muted(app: AppState<'_>, muted: bool) -> AppResult<()> {
    app.media(MediaCommand::SetMuted(muted)).await
}

#[tauri::command]
pub async fn set_camera(app: AppState<'_>, enabled: bool) -> AppResult<()> {
    app.media(MediaCommand::SetCameraEnabled(enabled)).await
}

#[tauri::command]
pub async fn set_volume(app: AppState<'_>, participant_id: String, volume: f32) -> AppResult<()> {
    if !(volume.is_finite() && (0.0..=4.0).contains(&volume)) {
        return Err(AppError::Invalid("volume goes from 0 to 4".into()));
    }
    app.media(MediaCommand::SetVolume {
        participant_id,
        volume,
    })
    .await
}

/// A tile's size on screen (device pixels), or hidden; the SFU sends the
/// smallest layer that fills it.
#[tauri::command]
pub async fn subscribe_tile(
    app: AppState<'_>,
    participant_id: String,
    track_id: String,
    width: u32,
    height: u32,
    visible: bool,
) -> AppResult<()> {
    let size = visible.then_some((width.clamp(1, MAX_TILE), height.clamp(1, MAX_TILE)));
    app.media(MediaCommand::SubscribeTrack {
        participant_id,
        track_id,
        size,
    })
    .await
}

/// "Test my connection": every way to the server, one by one.
#[tauri::command]
pub async fn test_connection(url: String, token: Option<String>) -> AppResult<Vec<Check>> {
    let network = crate::state::network_options()?;
    let token = crate::args::optional_token(token.as_deref()).map_err(AppError::Invalid)?;
    let options = DoctorOptions {
        url,
        token,
        room: "parley-doctor".into(),
        network,
        timeout: std::time::Duration::from_secs(6),
    };
    Ok(diagnose(&options).await)
}

#[tauri::command]
pub async fn export_diagnostics(app: AppState<'_>) -> AppResult<String> {
    let contents = crate::diagnostics::Contents::of(&app);
    let into = app.profile_dir().join("diagnostics");
    tauri::async_runtime::spawn_blocking(move || crate::diagnostics::export(&contents, &into))
        .await
        .map_err(|e| AppError::Io(e.to_string()))?
        .map(|path| path.display().to_string())
}

/// The IPC-channel transport for pictures (`--frame-transport channel`).
#[tauri::command]
pub fn frames_subscribe(app: AppState<'_>, channel: Channel<InvokeResponseBody>) {
    let (hub, window) = (Arc::clone(&app.hub), Arc::clone(&app.window));
    window.reset();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    tauri::async_runtime::spawn(pump(hub, window, tx));
    tauri::async_runtime::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            // The channel takes ownership: one copy per picture.
            if channel
                .send(InvokeResponseBody::Raw(bytes.to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
}

/// A desktop notification (chat while the window is in the background).
#[tauri::command]
pub fn notify(handle: tauri::AppHandle, title: String, body: String) -> AppResult<()> {
    use tauri_plugin_notification::NotificationExt as _;
    let short = |text: &str, max: usize| text.chars().take(max).collect::<String>();
    handle
        .notification()
        .builder()
        .title(short(&title, 64))
        .body(short(&body, 200))
        .show()
        .map_err(|e| AppError::Io(format!("notification: {e}")))
}

#[tauri::command]
pub fn frames_ack(app: AppState<'_>, count: usize) {
    app.window.acknowledge(count);
}

/// The page's figures for drawn pictures (count, delivery latency).
#[tauri::command]
pub fn frame_stats(app: AppState<'_>, stats: serde_json::Value) {
    tracing::info!(target: "parley_app::frames", %stats, "frame delivery");
    app.recent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .frame_stats = Some(stats);
}
