//! A `parley-cli join --fake-media` process in a test call: spawned on
//! room `call`, its JSON lines read as they come, chat and `/` commands
//! written to its stdin, and its `--stats-json` report read when it leaves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::{SfuProcess, bin};

/// Long enough for three encoders to start on a loaded two-core machine.
const CALL_PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Participant {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
    stats: PathBuf,
    /// Every line printed so far.
    seen: Vec<Value>,
}

impl Participant {
    pub fn spawn(sfu: &SfuProcess, dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::spawn_with_env(sfu, dir, name, extra, Vec::new())
    }

    pub fn spawn_with_env(
        sfu: &SfuProcess,
        dir: &Path,
        name: &str,
        extra: &[&str],
        env: Vec<(&str, String)>,
    ) -> Self {
        let stats = dir.join(format!("{name}.json"));
        let mut child = Command::new(bin("parley-cli"))
            .args(["join", &sfu.signaling_url, "--room", "call", "--name", name])
            .args(["--fake-media", "--fps", "15", "--stats-json"])
            .arg(&stats)
            .args(extra)
            .envs(env)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("parley-cli starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take();
        Self {
            child,
            lines,
            stdin,
            stats,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `wanted`, and returns it.
    pub async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|v| wanted(v)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + CALL_PATIENCE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap()
                .unwrap_or_else(|| panic!("parley-cli exited before {what}"));
            let value: Value = serde_json::from_str(&line).expect("stdout lines are JSON");
            self.seen.push(value.clone());
            if wanted(&value) {
                return value;
            }
        }
    }

    pub async fn participant_id(&mut self) -> String {
        let joined = self.wait_for("joined", |v| v["type"] == "joined").await;
        joined["participant_id"].as_str().unwrap().to_owned()
    }

    pub async fn wait_for_size(&mut self, from: &str, width: u64, height: u64) {
        self.wait_for(&format!("{width}x{height} from {from}"), |v| {
            v["type"] == "cli_video_size"
                && v["participant_id"] == from
                && v["width"] == width
                && v["height"] == height
        })
        .await;
    }

    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes stdin (which leaves the room), waits for the exit and returns the stats.
    pub async fn leave(self) -> Value {
        self.leave_with_lines().await.0
    }

    /// Leaves, and returns the stats and every line the process printed.
    pub async fn leave_with_lines(mut self) -> (Value, Vec<Value>) {
        drop(self.stdin.take());
        // Keep reading so the process never blocks on a full pipe.
        let mut rest = Vec::new();
        let drain = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                rest.extend(serde_json::from_str::<Value>(&line));
            }
        };
        let (status, ()) = tokio::time::timeout(CALL_PATIENCE, async {
            tokio::join!(self.child.wait(), drain)
        })
        .await
        .expect("parley-cli exits after leaving");
        assert_eq!(status.unwrap().code(), Some(0));
        let text = std::fs::read_to_string(&self.stats).expect("stats file written");
        self.seen.extend(rest);
        (
            serde_json::from_str(&text).expect("stats are JSON"),
            self.seen,
        )
    }
}

/// One remote track's entry in a `--stats-json` report.
pub fn remote<'a>(stats: &'a Value, participant: &str, track: &str) -> &'a Value {
    stats["remote"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["participant_id"] == participant && r["track_id"] == track)
        .unwrap_or_else(|| panic!("no {track} from {participant} in {stats:#}"))
}
