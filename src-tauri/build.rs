//! Tauri's build step, with the app's commands declared so the page may
//! call only those its capability grants (capabilities/main.json).

const COMMANDS: &[&str] = &[
    "app_info",
    "list_devices",
    "select_device",
    "start_preview",
    "stop_preview",
    "save_settings",
    "host",
    "join",
    "leave",
    "send_chat",
    "set_muted",
    "set_camera",
    "set_volume",
    "subscribe_tile",
    "test_connection",
    "export_diagnostics",
    "frames_subscribe",
    "frames_ack",
    "notify",
    "frame_stats",
];

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build step");
}
