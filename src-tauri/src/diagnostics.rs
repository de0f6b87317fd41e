//! "Export diagnostics": one zip with what a bug report needs: logs, the
//! last minute of call stats (with candidate pairs and path), the media
//! engine's recent lines, frame delivery figures, versions and the profile
//! minus anything secret.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

use crate::error::{AppError, AppResult};
use crate::state::App;

/// What goes into the zip besides the log files.
pub struct Contents {
    pub log_dir: PathBuf,
    pub profile: parley_client::profile::Profile,
    pub stats: Vec<serde_json::Value>,
    pub media_lines: Vec<serde_json::Value>,
    pub frames: serde_json::Value,
}

impl Contents {
    pub fn of(app: &App) -> Self {
        let recent = app
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self {
            log_dir: app.log_dir.clone(),
            profile: app.profile(),
            stats: recent.stats.iter().cloned().collect(),
            media_lines: recent.media_lines.iter().cloned().collect(),
            frames: serde_json::json!({
                "hub": app.hub.counters(),
                "page": recent.frame_stats,
            }),
        }
    }
}

/// Log files larger than this are cut to their last part.
const MAX_LOG_BYTES: u64 = 8 << 20;

pub fn export(contents: &Contents, into: &Path) -> AppResult<PathBuf> {
    std::fs::create_dir_all(into)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = into.join(format!("parley-diagnostics-{stamp}.zip"));
    let file = std::fs::File::create(&path)?;
    let mut zip = zip::ZipWriter::new(file);
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut add = |name: &str, bytes: &[u8]| -> AppResult<()> {
        zip.start_file(name, options).map_err(|e| zip_error(&e))?;
        zip.write_all(bytes)?;
        Ok(())
    };
    add("versions.json", versions().to_string().as_bytes())?;
    let stats = serde_json::to_string_pretty(&contents.stats).unwrap_or_default();
    add("stats.json", stats.as_bytes())?;
    let lines: Vec<String> = contents
        .media_lines
        .iter()
        .map(ToString::to_string)
        .collect();
    add("media-events.jsonl", lines.join("\n").as_bytes())?;
    add("frames.json", contents.frames.to_string().as_bytes())?;
    // Secrets (the resume token, TURN credentials, access tokens) never
    // reach the profile or these figures; the display name stays.
    let profile = toml::to_string_pretty(&contents.profile).unwrap_or_default();
    add("profile.toml", profile.as_bytes())?;
    for log in log_files(&contents.log_dir) {
        let name = format!(
            "logs/{}",
            log.file_name().unwrap_or_default().to_string_lossy()
        );
        add(&name, &tail(&log)?)?;
    }
    zip.finish().map_err(|e| zip_error(&e))?;
    tracing::info!(path = %path.display(), "diagnostics exported");
    Ok(path)
}

fn zip_error(err: &zip::result::ZipError) -> AppError {
    AppError::Io(format!("writing the zip: {err}"))
}

fn versions() -> serde_json::Value {
    serde_json::json!({
        "parley": env!("CARGO_PKG_VERSION"),
        "protocol": parley_proto::PROTOCOL_VERSION,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "tauri": tauri::VERSION,
        "webkit": webkit_version(),
    })
}

fn webkit_version() -> Option<String> {
    let output = std::process::Command::new("pkg-config")
        .args(["--modversion", "webkit2gtk-4.1"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with(crate::logging::FILE_PREFIX)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The file, or its last [`MAX_LOG_BYTES`] when larger.
fn tail(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_LOG_BYTES {
        file.seek(SeekFrom::Start(len - MAX_LOG_BYTES))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn the_zip_holds_logs_stats_versions_and_profile() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("parley.log.2026-11-22"), "INFO joined\n").unwrap();
        std::fs::write(logs.join("unrelated.txt"), "not ours").unwrap();
        let profile = parley_client::profile::Profile {
            display_name: "Ada".into(),
            ..Default::default()
        };
        let contents = Contents {
            log_dir: logs,
            profile,
            stats: vec![serde_json::json!({"connection": {"rtt_ms": 12.0}})],
            media_lines: vec![serde_json::json!({"type": "cli_path", "path": "host/udp"})],
            frames: serde_json::json!({"hub": {"sent": 3}}),
        };
        let path = export(&contents, &dir.path().join("out")).unwrap();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "frames.json",
                "logs/parley.log.2026-11-22",
                "media-events.jsonl",
                "profile.toml",
                "stats.json",
                "versions.json"
            ]
        );
        let mut text = String::new();
        zip.by_name("media-events.jsonl")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("host/udp"));
        text.clear();
        zip.by_name("profile.toml")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("display_name = \"Ada\""), "{text}");
    }
}
