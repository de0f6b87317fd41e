//! "Export diagnostics": one zip with what a bug report needs: logs, the
//! last minute of call stats (with candidate pairs and path), the media
//! engine's recent lines, frame delivery figures, versions and the profile
//! minus anything secret.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

use crate::error::{AppError, AppResult};
use crate::state::App;

/// Log files larger than this are cut to their last part.
const MAX_LOG_BYTES: u64 = 8 << 20;

pub fn export(app: &App, into: &Path) -> AppResult<PathBuf> {
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
    let (stats, lines, frames) = {
        let recent = app
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            serde_json::to_string_pretty(&recent.stats).unwrap_or_default(),
            recent
                .media_lines
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            serde_json::json!({
                "hub": app.hub.counters(),
                "page": recent.frame_stats,
            }),
        )
    };
    add("stats.json", stats.as_bytes())?;
    add("media-events.jsonl", lines.as_bytes())?;
    add("frames.json", frames.to_string().as_bytes())?;
    // The profile holds no secrets today; the name stays (it is what others see).
    let profile = toml::to_string_pretty(&app.profile()).unwrap_or_default();
    add("profile.toml", profile.as_bytes())?;
    for log in log_files(&app.log_dir) {
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
