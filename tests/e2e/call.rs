//! Real calls: `parley-sfu` and several `parley-cli --fake-media` processes
//! on loopback, exchanging encoded audio and simulcast video.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use parley_e2e::{SfuProcess, bin};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Long enough for three encoders to start on a loaded two-core machine.
const CALL_PATIENCE: Duration = Duration::from_secs(20);

pub(crate) struct Participant {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
    stats: PathBuf,
    /// Every line printed so far.
    seen: Vec<Value>,
}

impl Participant {
    pub(crate) fn spawn(sfu: &SfuProcess, dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::spawn_with_env(sfu, dir, name, extra, Vec::new())
    }

    pub(crate) fn spawn_with_env(
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
    pub(crate) async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
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

    pub(crate) async fn participant_id(&mut self) -> String {
        let joined = self.wait_for("joined", |v| v["type"] == "joined").await;
        joined["participant_id"].as_str().unwrap().to_owned()
    }

    async fn wait_for_size(&mut self, from: &str, width: u64, height: u64) {
        self.wait_for(&format!("{width}x{height} from {from}"), |v| {
            v["type"] == "cli_video_size"
                && v["participant_id"] == from
                && v["width"] == width
                && v["height"] == height
        })
        .await;
    }

    pub(crate) async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes stdin (which leaves the room), waits for the exit and returns the stats.
    pub(crate) async fn leave(self) -> Value {
        self.leave_with_lines().await.0
    }

    /// Leaves, and returns the stats and every line the process printed.
    pub(crate) async fn leave_with_lines(mut self) -> (Value, Vec<Value>) {
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

pub(crate) fn remote<'a>(stats: &'a Value, participant: &str, track: &str) -> &'a Value {
    stats["remote"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["participant_id"] == participant && r["track_id"] == track)
        .unwrap_or_else(|| panic!("no {track} from {participant} in {stats:#}"))
}

fn assert_received_well(stats: &Value, from: &str) {
    let video = &remote(stats, from, "camera")["video"];
    let decoded = video["frames_decoded"].as_u64().unwrap();
    assert!(decoded >= 20, "video from {from}: {video:#}");
    assert_eq!(video["stamps_read"], video["frames_decoded"], "{video:#}");
    assert_eq!(video["stamps_out_of_order"], 0, "{video:#}");
    // Loopback drops datagrams when a loaded machine reads its sockets late;
    // a frame after such a loss may fail to decode until the next keyframe.
    let errors = video["decode_errors"].as_u64().unwrap();
    assert!(errors * 10 <= decoded, "{video:#}");
    assert!(
        video["latency"]["p50_ms"].as_f64().unwrap() > 0.0,
        "{video:#}"
    );
    let audio = &remote(stats, from, "microphone")["audio"];
    assert!(
        audio["playout"]["frames_played"].as_u64().unwrap() >= 50,
        "audio from {from}: {audio:#}"
    );
    assert_eq!(audio["decode_errors"], 0, "{audio:#}");
}

#[tokio::test]
async fn three_clients_see_and_hear_each_other_and_follow_tile_sizes() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Participant::spawn(&sfu, dir.path(), "a", &[]);
    let mut b = Participant::spawn(&sfu, dir.path(), "b", &[]);
    let (a_id, b_id) = (a.participant_id().await, b.participant_id().await);
    let mut c = Participant::spawn(&sfu, dir.path(), "c", &["--subscribe-size", "320x180"]);
    let c_id = c.participant_id().await;

    // Join → first decoded remote frame is reported.
    let first = c
        .wait_for("first remote video frame", |v| {
            v["type"] == "cli_first_remote_frame" && v["kind"] == "video"
        })
        .await;
    assert!(first["ms_since_join"].as_f64().unwrap() > 0.0);

    // A 320x180 tile gets the 320x180 layer of both publishers...
    c.wait_for_size(&a_id, 320, 180).await;
    c.wait_for_size(&b_id, 320, 180).await;
    // ...and a 1280x720 tile the full layer, quickly.
    let asked = Instant::now();
    c.send_line("/size 1280x720").await;
    c.wait_for_size(&a_id, 1280, 720).await;
    c.wait_for_size(&b_id, 1280, 720).await;
    let switched = asked.elapsed();
    eprintln!("320x180 → 1280x720 took {switched:?}");
    assert!(
        switched < Duration::from_secs(1),
        "1280x720 arrived {switched:?} after asking"
    );
    // Everyone sees everyone.
    a.wait_for_size(&c_id, 1280, 720).await;
    b.wait_for_size(&c_id, 1280, 720).await;
    // Let the call run so the counts below mean something.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Leaving removes c's tracks from the others' sessions.
    let c_stats = c.leave().await;
    for peer in [&mut a, &mut b] {
        peer.wait_for("c leaving", |v| {
            v["type"] == "participant_left" && v["participant_id"] == c_id.as_str()
        })
        .await;
        peer.wait_for("an offer without c", |v| {
            v["type"] == "offer"
                && v["mids"].as_array().is_some_and(|mids| {
                    !mids.iter().any(|m| m["participant_id"] == c_id.as_str())
                        && mids.iter().any(|m| m["kind"] == "video")
                })
        })
        .await;
    }
    assert_received_well(&c_stats, &a_id);
    assert_received_well(&c_stats, &b_id);
    let sizes = &remote(&c_stats, &a_id, "camera")["video"]["resolutions"];
    assert!(
        sizes.as_array().unwrap().iter().any(|r| r["width"] == 320)
            && sizes.as_array().unwrap().iter().any(|r| r["width"] == 1280),
        "{sizes:#}"
    );

    let (a_stats, b_stats) = (a.leave().await, b.leave().await);
    assert_received_well(&a_stats, &b_id);
    assert_received_well(&a_stats, &c_id);
    assert_received_well(&b_stats, &a_id);
    assert_received_well(&b_stats, &c_id);
    assert!(
        !remote(&a_stats, &c_id, "camera")["active"]
            .as_bool()
            .unwrap(),
        "c's track ended for a"
    );
    assert!(a_stats["first_remote_frame_ms"].as_f64().is_some());

    let forwarded = sfu
        .metric("parley_media_packets_forwarded_total")
        .await
        .unwrap();
    assert!(forwarded > 1000, "forwarded {forwarded}");
}
