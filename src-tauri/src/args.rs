//! The app's command line: the QA flags.

// Doc comments on the clap types below are `--help` text, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Parley: video calls that connect through any firewall.
#[derive(Debug, Clone, Parser)]
#[command(name = "parley", version)]
pub struct AppArgs {
    /// Use a synthetic camera and microphone (and list them as devices),
    /// for machines without devices and for tests.
    #[arg(long)]
    pub fake_media: bool,
    /// Keep the profile and logs in this directory instead of the
    /// platform's places (an isolated profile for QA).
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Signaling URL to fill in (or `host` to host on this computer).
    #[arg(long)]
    pub server: Option<String>,
    /// Room to fill in.
    #[arg(long)]
    pub room: Option<String>,
    /// Display name to fill in.
    #[arg(long)]
    pub name: Option<String>,
    /// Join at once with the server, room and name given (or remembered).
    #[arg(long)]
    pub join: bool,
    /// Log filter, e.g. info or parley_client=debug,info.
    #[arg(long, env = "PARLEY_LOG", default_value = "info")]
    pub log_level: String,
    /// How pictures reach the page: a local WebSocket (default) or Tauri's
    /// IPC channel (kept to measure one against the other).
    #[arg(long, value_enum, default_value_t = FrameTransport::Websocket)]
    pub frame_transport: FrameTransport,
    /// Benchmark: show synthetic tiles fed at 30 fps straight into frame
    /// delivery, e.g. `1280x720,320x180*8` (no call).
    #[arg(long, value_parser = crate::bench::parse)]
    pub bench_frames: Option<crate::bench::BenchSpec>,
    /// Port of the SFU hosted on this computer (0: any free one).
    #[arg(long, default_value_t = 7880)]
    pub host_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameTransport {
    Websocket,
    Channel,
}
