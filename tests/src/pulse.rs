//! A private PulseAudio server with virtual devices, so the real cpal paths
//! (ALSA → the `pulse` plugin → PulseAudio) run without hardware:
//!
//! - `parley_mic`: a pipe source; whatever is written to [`PulseServer::mic_fifo`]
//!   (48 kHz mono f32le) is what the microphone hears;
//! - `parley_speaker`: a null sink; its monitor can be recorded with
//!   [`PulseServer::record_speaker`].
//!
//! A client is pointed at it with [`PulseServer::client_env`]; cpal then
//! sees the `alsa:pulse` device, which the environment routes to these two.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub const MIC: &str = "parley_mic";
pub const SPEAKER: &str = "parley_speaker";
/// The cpal device that reaches PulseAudio through ALSA.
pub const CPAL_DEVICE: &str = "alsa:pulse";

#[derive(Debug)]
pub struct PulseServer {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl PulseServer {
    /// Starts the daemon; fails loudly when PulseAudio is not installed
    /// (`cargo xtask test` installs pulseaudio, pulseaudio-utils and
    /// libasound2-plugins).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("native");
        let fifo = dir.path().join("mic.fifo");
        let script = format!(
            "load-module module-native-protocol-unix socket={socket} auth-anonymous=1\n\
             load-module module-null-sink sink_name={SPEAKER} \
             sink_properties=device.description=Parley-Virtual-Speaker\n\
             load-module module-pipe-source source_name={MIC} file={fifo} \
             format=float32le rate=48000 channels=1 \
             source_properties=device.description=Parley-Virtual-Microphone\n\
             set-default-sink {SPEAKER}\n\
             set-default-source {MIC}\n",
            socket = socket.display(),
            fifo = fifo.display(),
        );
        let script_path = dir.path().join("parley.pa");
        std::fs::write(&script_path, script)?;
        let daemon = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--log-target=stderr",
            ])
            .arg("-F")
            .arg(&script_path)
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("pulseaudio is not installed (cargo xtask test installs it)")?;
        let server = Self { dir, daemon };
        for _ in 0..100 {
            if fifo.exists() && server.pactl(&["info"]).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("pulseaudio did not come up within 10 s")
    }

    pub fn mic_fifo(&self) -> PathBuf {
        self.dir.path().join("mic.fifo")
    }

    fn server_address(&self) -> String {
        format!("unix:{}", self.dir.path().join("native").display())
    }

    /// Environment that points a client (and cpal's `alsa:pulse`) here.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PULSE_SERVER", self.server_address()),
            ("PULSE_SINK", SPEAKER.to_owned()),
            ("PULSE_SOURCE", MIC.to_owned()),
        ]
    }

    pub async fn pactl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("pactl")
            .args(args)
            .env("PULSE_SERVER", self.server_address())
            .output()
            .await
            .context("pactl is not installed (package pulseaudio-utils)")?;
        if !output.status.success() {
            bail!(
                "pactl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Records what the virtual speaker plays (48 kHz mono f32le on stdout).
    pub fn record_speaker(&self) -> anyhow::Result<Child> {
        Command::new("parec")
            .arg(format!("--device={SPEAKER}.monitor"))
            .args([
                "--format=float32le",
                "--rate=48000",
                "--channels=1",
                "--latency-msec=20",
            ])
            .env("PULSE_SERVER", self.server_address())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("parec is not installed (package pulseaudio-utils)")
    }

    pub async fn stop(mut self) {
        let _ = self.daemon.kill().await;
    }
}
