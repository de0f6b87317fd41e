//! Harness for end-to-end tests: starts the real binaries on loopback and
//! talks to them over real sockets.
//!
//! Binaries are found next to the test executable's target directory
//! (`target/<profile>/parley-sfu`), which `cargo xtask test` builds first;
//! `PARLEY_BIN_DIR` overrides the directory.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use parley_proto::{ServerMessage, parse_server_message};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod clean_root;
pub mod netlab;
pub mod participant;
pub mod pulse;
pub mod window;

/// How long any single expected event may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Path of a workspace binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("PARLEY_BIN_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/e2e-<hash> -> target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf()
        },
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test` (it builds the binaries first) \
         or `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// A running `parley-sfu` process; killed when dropped.
#[derive(Debug)]
pub struct SfuProcess {
    child: Child,
    pub signaling_url: String,
    pub http_addr: String,
    /// The media port's addresses (loopback only in tests).
    pub media_addrs: Vec<std::net::SocketAddr>,
    /// Its ICE-TCP addresses.
    pub media_tcp_addrs: Vec<std::net::SocketAddr>,
    stderr_log: tempfile::NamedTempFile,
}

impl SfuProcess {
    /// Starts `parley-sfu --listen 127.0.0.1:0 --media-port 0 --media-tcp-port 0
    /// --media-ip 127.0.0.1 <extra>`
    /// and waits for its ready line.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["--listen", "127.0.0.1:0", "--log-level", "info"];
        args.extend(["--media-port", "0", "--media-tcp-port", "0"]);
        args.extend(["--media-ip", "127.0.0.1"]);
        args.extend(extra);
        Self::start_in(None, &args).await
    }

    /// Starts `parley-sfu <args>` exactly as given, inside network namespace
    /// `netns` when one is named, and waits for its ready line.
    pub async fn start_in(netns: Option<&str>, args: &[&str]) -> anyhow::Result<Self> {
        let command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns])
                    .arg(bin("parley-sfu"));
                command
            }
            None => Command::new(bin("parley-sfu")),
        };
        Self::start_command(command, args).await
    }

    /// Starts `command` (a `parley-sfu`, however launched) with `args` and
    /// waits for its ready line.
    pub async fn start_command(mut command: Command, args: &[&str]) -> anyhow::Result<Self> {
        let stderr_log = tempfile::NamedTempFile::new()?;
        let mut child = command
            .args(args)
            .env_remove("PARLEY_AUTH_SECRET")
            .env_remove("PARLEY_SFU_CONFIG")
            .stdout(Stdio::piped())
            .stderr(stderr_log.reopen()?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning parley-sfu")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut media_addrs = Vec::new();
        let mut media_tcp_addrs = Vec::new();
        let signaling_url = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(media) = line.trim().strip_prefix("media:") {
                    let (proto, addr) = media.trim().split_once(' ').context("media line")?;
                    let addr = addr.trim().parse().context("media address")?;
                    match proto {
                        "tcp" => media_tcp_addrs.push(addr),
                        _ => media_addrs.push(addr),
                    }
                }
                if let Some(url) = line.trim().strip_prefix("signaling: ") {
                    return Ok(url.to_owned());
                }
            }
            bail!("parley-sfu exited before it was ready")
        })
        .await
        .context("parley-sfu did not become ready")??;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http_addr = signaling_url
            .trim_start_matches("ws://")
            .trim_start_matches("wss://")
            .trim_end_matches("/ws")
            .to_owned();
        Ok(Self {
            child,
            signaling_url,
            http_addr,
            media_addrs,
            media_tcp_addrs,
            stderr_log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(tokio::time::timeout(PATIENCE, self.child.wait()).await??)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.stderr_log.path()).unwrap_or_default()
    }

    /// GET a path on the server's HTTP listener; returns (status, body).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(&self.http_addr, path).await
    }

    /// The value of one counter or gauge sample in `/metrics`, e.g.
    /// `parley_chat_messages_total`. Every Parley metric is a count.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<u64> {
        let (status, body) = self.http_get("/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        metric_value(&body, sample).with_context(|| format!("no sample {sample} in:\n{body}"))
    }
}

impl Drop for SfuProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- parley-sfu log ---\n{}", self.log());
        }
    }
}

/// Reads one integer sample (name with labels, exactly as printed) from Prometheus text.
pub fn metric_value(body: &str, sample: &str) -> Option<u64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
}

/// Minimal HTTP/1.1 GET over plain TCP.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response)).await??;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A raw signaling client that can send anything, valid or not.
#[derive(Debug)]
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended, as seen by the client.
#[derive(Debug)]
pub enum Closed {
    Frame(Option<CloseFrame>),
    Dropped,
}

impl WsClient {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20));
        let (stream, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
        Ok(Self { stream })
    }

    /// Connects over TLS trusting exactly `root` (a self-signed test certificate).
    pub async fn connect_tls(
        url: &str,
        root: rustls::pki_types::CertificateDer<'static>,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (stream, _) = tokio_tungstenite::connect_async_tls_with_config(
            url,
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))),
        )
        .await?;
        Ok(Self { stream })
    }

    /// Connects and joins in open mode; returns the client and its `joined`.
    pub async fn join(url: &str, room: &str, name: &str) -> anyhow::Result<(Self, Value)> {
        Self::join_with(
            url,
            json!({"type": "join", "protocol": [1], "room": room, "name": name}),
        )
        .await
    }

    pub async fn join_with(url: &str, join: Value) -> anyhow::Result<(Self, Value)> {
        let mut client = Self::connect(url).await?;
        client.send(&join).await?;
        let joined = client.expect("joined").await?;
        Ok((client, joined))
    }

    pub async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.send_text(message.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        self.stream.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.stream.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// The next protocol message, checked against the typed schema too.
    pub async fn recv(&mut self) -> anyhow::Result<Value> {
        match tokio::time::timeout(PATIENCE, self.next_text()).await {
            Ok(Ok(Some(text))) => {
                parse_server_message(&text)
                    .with_context(|| format!("server sent a message outside the schema: {text}"))?;
                Ok(serde_json::from_str(&text)?)
            }
            Ok(Ok(None)) => bail!("connection closed while waiting for a message"),
            Ok(Err(err)) => Err(err),
            Err(_) => bail!("no message within {PATIENCE:?}"),
        }
    }

    /// Skips messages until one of `type`; fails on an `error` of another kind.
    pub async fn expect(&mut self, message_type: &str) -> anyhow::Result<Value> {
        loop {
            let message = self.recv().await?;
            if message["type"] == message_type {
                return Ok(message);
            }
            if message["type"] == "error" {
                bail!("expected {message_type}, got error {message}");
            }
        }
    }

    /// The next message must be an `error` with this code.
    pub async fn expect_error(&mut self, code: &str) -> anyhow::Result<Value> {
        let message = self.recv().await?;
        anyhow::ensure!(
            message["type"] == "error" && message["code"] == code,
            "expected error {code}, got {message}"
        );
        Ok(message)
    }

    /// Waits until the server closes the connection.
    pub async fn closed(&mut self) -> anyhow::Result<Closed> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(frame))) => return Closed::Frame(frame),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Closed::Dropped,
                }
            }
        })
        .await
        .context("connection was not closed")
    }

    /// Sends a ping and waits for its pong: proves the connection still works.
    pub async fn roundtrip(&mut self, id: u64) -> anyhow::Result<()> {
        self.send(&json!({"type": "ping", "id": id})).await?;
        let pong = self.expect("pong").await?;
        anyhow::ensure!(pong["id"] == id, "pong for another ping: {pong}");
        Ok(())
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    async fn next_text(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Ok(Some(text.as_str().to_owned())),
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
            }
        }
    }
}

/// Chat text from `chat_message`s or `chat_history` entries (which carry no `type`), in order.
pub fn chat_texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == "chat_message" || m.get("type").is_none())
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Asserts a decoded `ServerMessage` parses; handy for typed checks.
pub fn typed(message: &Value) -> ServerMessage {
    serde_json::from_value(message.clone()).expect("schema-valid message")
}
