//! Logs to stderr and to a daily file in the log directory (kept 7 days),
//! which "Export diagnostics" bundles.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub const FILE_PREFIX: &str = "parley.log";

/// Where logs go: `<profile-dir>/logs` with `--profile-dir`, else the
/// platform's data directory (`~/.local/share/parley/logs` on Linux).
pub fn log_dir(profile_dir: Option<&Path>) -> PathBuf {
    match profile_dir {
        Some(dir) => dir.join("logs"),
        None => directories::ProjectDirs::from("app", "Parley", "Parley").map_or_else(
            || std::env::temp_dir().join("parley-logs"),
            |dirs| dirs.data_local_dir().join("logs"),
        ),
    }
}

/// Starts logging; keep the guard alive until exit so the file is flushed.
pub fn init(filter: &str, dir: &Path) -> Result<Option<WorkerGuard>, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("--log-level: {e}"))?;
    let file = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(FILE_PREFIX)
                .max_log_files(7)
                .build(dir)
                .map_err(|e| e.to_string())
        });
    let registry = tracing_subscriber::registry().with(filter);
    match file {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(writer.and(std::io::stderr)),
                )
                .init();
            Ok(Some(guard))
        }
        Err(err) => {
            registry
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .init();
            tracing::warn!(dir = %dir.display(), %err, "no log file; logging to stderr only");
            Ok(None)
        }
    }
}
