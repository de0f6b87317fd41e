//! Calls through corporate firewalls: a client host behind nftables rules,
//! a server host with `parley-sfu`, coturn (UDP/TCP 3478, TLS 443) and an
//! HTTP proxy, all real processes in network namespaces (see
//! `parley_e2e::netlab`). A bot on the server host calls the client behind
//! the firewall; both must decode each other's video.
//!
//! Needs root; `cargo xtask test` runs it as root in CI.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use parley_e2e::netlab::{
    self, CLIENT_IP, NetLab, PROXY_IP, PROXY_PASSWORD, PROXY_PORT, PROXY_USER, SFU_HOST, SFU_IP,
    TURN_HOST, TURN_IP, TURN_SECRET,
};
use parley_e2e::{SfuProcess, bin};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Long enough for encoders to start and for a TCP connect to a dropped
/// port to give up (5 s), on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(25);

/// How the client host's firewall is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firewall {
    /// (a) Everything allowed.
    Open,
    /// (b) All UDP dropped.
    NoUdp,
    /// (c) Only TCP to port 443 of the server host's addresses.
    Only443,
    /// (d) Only the proxy.
    OnlyProxy,
}

impl Firewall {
    fn apply(self, lab: &NetLab) {
        let established = "    ct state established,related accept\n    oif lo accept";
        let result = match self {
            Self::Open => lab.firewall("accept", ""),
            Self::NoUdp => lab.firewall("accept", "    meta l4proto udp drop"),
            Self::Only443 => lab.firewall(
                "drop",
                &format!(
                    "{established}\n    ip daddr {{ {SFU_IP}, {TURN_IP} }} tcp dport 443 accept"
                ),
            ),
            Self::OnlyProxy => lab.firewall(
                "drop",
                &format!("{established}\n    ip daddr {PROXY_IP} tcp dport {PROXY_PORT} accept"),
            ),
        };
        result.expect("firewall rules load");
    }
}

struct Lab {
    net: NetLab,
    /// Kept for its lifetime: dropping it stops the SFU.
    _sfu: SfuProcess,
}

impl Lab {
    /// The two hosts, coturn, the proxy and an SFU that hands out `turn_urls`
    /// with credentials minted from `turn_secret`.
    async fn start(turn_secret: &str, turn_urls: &[String]) -> Self {
        let mut net = NetLab::new().expect("lab network");
        net.start_coturn().await.unwrap_or_else(|e| {
            panic!("coturn: {e:#}\n{}", net.log("coturn"));
        });
        net.start_proxy().await.unwrap_or_else(|e| {
            panic!("proxy: {e:#}\n{}", net.log("tinyproxy"));
        });
        let certificates = &net.certificates;
        let (cert, key) = (
            certificates.cert.to_str().unwrap().to_owned(),
            certificates.key.to_str().unwrap().to_owned(),
        );
        let mut args = vec![
            format!("--listen={SFU_IP}:443"),
            format!("--media-ip={SFU_IP}"),
            "--media-port=7882".into(),
            "--media-tcp-port=7881".into(),
            format!("--tls-cert={cert}"),
            format!("--tls-key={key}"),
            format!("--turn-secret={turn_secret}"),
        ];
        args.extend(turn_urls.iter().map(|url| format!("--turn-url={url}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sfu = SfuProcess::start_in(Some(&net.server_ns), &args)
            .await
            .expect("parley-sfu starts in the lab");
        Self { net, _sfu: sfu }
    }

    async fn standard() -> Self {
        Self::start(TURN_SECRET, &standard_turn_urls()).await
    }

    fn signaling_url() -> String {
        format!("wss://{SFU_HOST}/ws")
    }

    fn ca(&self) -> String {
        self.net.certificates.ca.to_str().unwrap().to_owned()
    }

    /// A `parley-cli --fake-media` participant on the given host.
    fn join(&self, netns: &str, name: &str, extra: &[&str]) -> Participant {
        let stats = self.net.dir.path().join(format!("{name}.json"));
        let mut child = self
            .net
            .command(netns, &bin("parley-cli"))
            .args(["join", &Self::signaling_url(), "--room", "firewall"])
            .args(["--name", name, "--fake-media", "--resolution", "320x180"])
            .args(["--fps", "15", "--no-stdin", "--duration", "30s"])
            .args(["--ca-file", &self.ca(), "--stats-json"])
            .arg(&stats)
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("parley-cli starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Participant {
            _child: child,
            lines,
            seen: Vec::new(),
            _stats: stats,
        }
    }

    fn bot(&self) -> Participant {
        self.join(&self.net.server_ns, "bot", &[])
    }
}

fn standard_turn_urls() -> Vec<String> {
    vec![
        format!("turn:{TURN_HOST}:3478"),
        format!("turn:{TURN_HOST}:3478?transport=tcp"),
        format!("turns:{TURN_HOST}:443?transport=tcp"),
    ]
}

struct Participant {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<Value>,
    _stats: PathBuf,
}

impl Participant {
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|v| wanted(v)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:#?}", self.seen))
                .unwrap()
                .unwrap_or_else(|| panic!("parley-cli exited before {what}; saw {:#?}", self.seen));
            let value: Value = serde_json::from_str(&line).expect("stdout lines are JSON");
            self.seen.push(value.clone());
            if wanted(&value) {
                return value;
            }
        }
    }

    async fn participant_id(&mut self) -> String {
        let joined = self.wait_for("joined", |v| v["type"] == "joined").await;
        joined["participant_id"].as_str().unwrap().to_owned()
    }

    /// Milliseconds from join to the first decoded video frame from `from`.
    async fn first_video_from(&mut self, from: &str) -> f64 {
        let line = self
            .wait_for(&format!("video from {from}"), |v| {
                v["type"] == "cli_first_remote_frame"
                    && v["participant_id"] == from
                    && v["kind"] == "video"
            })
            .await;
        line["ms_since_join"].as_f64().unwrap()
    }

    async fn path(&mut self) -> Value {
        self.wait_for("the selected path", |v| v["type"] == "cli_path")
            .await
    }

    fn turn_errors(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|v| v["type"] == "cli_turn_error")
            .cloned()
            .collect()
    }
}

/// Runs a call between a client behind `firewall` and a bot on the server
/// host; returns the client's path line and its join → first frame time.
async fn call_through(lab: &Lab, firewall: Firewall, extra: &[&str]) -> (Value, f64, Participant) {
    firewall.apply(&lab.net);
    let mut bot = lab.bot();
    let bot_id = bot.participant_id().await;
    let mut client = lab.join(&lab.net.client_ns, "client", extra);
    let client_id = client.participant_id().await;
    let first_frame_ms = client.first_video_from(&bot_id).await;
    bot.first_video_from(&client_id).await;
    let path = client.path().await;
    println!(
        "{firewall:?} {extra:?}: path {} ({} -> {}), join to first decoded frame {first_frame_ms:.0} ms",
        path["path"], path["local"], path["remote"]
    );
    (path, first_frame_ms, client)
}

#[tokio::test]
async fn open_network_uses_a_direct_path() {
    let lab = Lab::standard().await;
    let (path, _, _) = call_through(&lab, Firewall::Open, &[]).await;
    assert_eq!(path["path"], "host/udp", "{path}");
    assert_eq!(
        path["local"],
        format!(
            "{CLIENT_IP}:{}",
            path["local"].as_str().unwrap().rsplit(':').next().unwrap()
        )
    );
}

#[tokio::test]
async fn udp_blocked_connects_over_tcp() {
    let lab = Lab::standard().await;
    let (path, _, _) = call_through(&lab, Firewall::NoUdp, &[]).await;
    let path = path["path"].as_str().unwrap().to_owned();
    assert!(
        ["host/tcp", "relay/tcp", "relay/tls"].contains(&path.as_str()),
        "UDP is blocked, so the path must be TCP: {path}"
    );
}

#[tokio::test]
async fn only_tcp_443_connects_through_turn_over_tls() {
    let lab = Lab::standard().await;
    let (path, first_frame_ms, client) = call_through(&lab, Firewall::Only443, &[]).await;
    assert_eq!(path["path"], "relay/tls", "{path}");
    assert_eq!(path["remote"], format!("{SFU_IP}:7882"), "{path}");
    assert!(
        first_frame_ms < 3000.0,
        "join to first decoded frame took {first_frame_ms:.0} ms (target < 3 s)"
    );
    // The other TURN transports were blocked and say so.
    assert!(!client.turn_errors().is_empty() || first_frame_ms < 5000.0);
}

#[tokio::test]
async fn only_a_proxy_connects_through_it() {
    let lab = Lab::standard().await;
    let proxy = format!("http://{PROXY_USER}:{PROXY_PASSWORD}@{PROXY_IP}:{PROXY_PORT}");
    let (path, _, _) = call_through(&lab, Firewall::OnlyProxy, &["--proxy", &proxy]).await;
    assert_eq!(path["path"], "relay/tls", "{path}");
    let log = lab.net.log("tinyproxy");
    assert!(
        log.contains(&format!("{TURN_HOST}:443")) || log.contains("CONNECT"),
        "the proxy carried the tunnel: {log}"
    );
}

#[tokio::test]
async fn relay_policy_uses_a_relay_on_an_open_network() {
    let lab = Lab::standard().await;
    let (path, _, _) = call_through(&lab, Firewall::Open, &["--ice-policy", "relay"]).await;
    assert_eq!(path["candidate"], "relay", "{path}");
}

#[tokio::test]
async fn bad_turn_credentials_are_reported_and_the_call_still_connects() {
    let lab = Lab::start("not-the-coturn-secret", &standard_turn_urls()).await;
    let (path, _, client) = call_through(&lab, Firewall::Open, &[]).await;
    assert_eq!(path["path"], "host/udp", "{path}");
    let mut client = client;
    let error = client
        .wait_for("a TURN error", |v| v["type"] == "cli_turn_error")
        .await;
    assert!(
        error["error"].as_str().unwrap().contains("401"),
        "the server's error code is reported: {error}"
    );
}

#[tokio::test]
async fn an_unreachable_turn_server_is_reported_and_the_call_still_connects() {
    let unreachable = vec![format!("turns:{CLIENT_IP}:9443?transport=tcp")];
    let lab = Lab::start(TURN_SECRET, &unreachable).await;
    let (path, _, mut client) = call_through(&lab, Firewall::Open, &[]).await;
    assert_eq!(path["path"], "host/udp", "{path}");
    let error = client
        .wait_for("a TURN error", |v| v["type"] == "cli_turn_error")
        .await;
    assert!(
        error["error"].as_str().unwrap().contains("9443"),
        "the error names the server: {error}"
    );
}

#[test]
fn the_lab_tools_are_installed() {
    netlab::require_tools().expect("cargo xtask test installs coturn, nftables and tinyproxy");
}

/// Runs `parley-cli doctor --json` on the client host; returns its checks by name.
async fn doctor(
    lab: &Lab,
) -> (
    std::collections::HashMap<String, Value>,
    std::process::ExitStatus,
) {
    let output = lab
        .net
        .command(&lab.net.client_ns, &bin("parley-cli"))
        .args(["doctor", &Lab::signaling_url(), "--json", "--timeout", "3s"])
        .args(["--ca-file", &lab.ca()])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .await
        .expect("parley-cli doctor runs");
    let checks: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor JSON: {e}: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    println!("{}", serde_json::to_string_pretty(&checks).unwrap());
    let by_name = checks
        .into_iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c))
        .collect();
    (by_name, output.status)
}

fn assert_check(checks: &std::collections::HashMap<String, Value>, name: &str, ok: bool) {
    let check = checks
        .get(name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:#?}"));
    assert_eq!(check["ok"], ok, "{name}: {check:#}");
    if ok {
        assert!(check["ms"].as_f64().unwrap() > 0.0, "{check:#}");
    } else {
        assert!(
            !check["detail"].as_str().unwrap().is_empty(),
            "a failure says why: {check:#}"
        );
    }
}

#[tokio::test]
async fn the_doctor_finds_every_path_on_an_open_network() {
    let lab = Lab::standard().await;
    Firewall::Open.apply(&lab.net);
    let (checks, status) = doctor(&lab).await;
    for name in [
        "signaling",
        "udp",
        "ice-tcp",
        "turn/udp",
        "turn/tcp",
        "turn/tls",
    ] {
        assert_check(&checks, name, true);
    }
    assert!(
        checks["udp"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("host/udp")
    );
    assert!(
        checks["ice-tcp"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("host/tcp")
    );
    assert!(
        checks["turn/tls"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("relay/tls")
    );
    assert!(status.success());
}

#[tokio::test]
async fn the_doctor_finds_only_turn_over_tls_behind_tcp_443() {
    let lab = Lab::standard().await;
    Firewall::Only443.apply(&lab.net);
    let (checks, status) = doctor(&lab).await;
    assert_check(&checks, "signaling", true);
    for name in ["udp", "ice-tcp", "turn/udp", "turn/tcp"] {
        assert_check(&checks, name, false);
    }
    assert_check(&checks, "turn/tls", true);
    assert!(
        status.success(),
        "one media path works, so the doctor exits 0"
    );
}
