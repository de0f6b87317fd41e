use std::process::Stdio;

use parley_e2e::{PATIENCE, SfuProcess, WsClient, bin};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(bin("parley-cli"));
    command
        .args(args)
        .env_remove("PARLEY_TOKEN")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    command
}

fn spawn_joined(url: &str, room: &str, name: &str) -> Child {
    cli(&["join", url, "--room", room, "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn exit_code(mut child: Child) -> i32 {
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("parley-cli exited in time")
        .unwrap()
        .code()
        .expect("exited, not killed")
}

#[tokio::test]
async fn cli_sends_stdin_as_chat_prints_events_and_leaves_on_eof() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut peer, _) = WsClient::join(&sfu.signaling_url, "r", "Peer")
        .await
        .unwrap();
    let mut child = spawn_joined(&sfu.signaling_url, "r", "Cli");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();

    let joined: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["participants"][0]["name"], "Peer");

    stdin.write_all(b"hello from the cli\n").await.unwrap();
    let chat = peer.expect("chat_message").await.unwrap();
    assert_eq!(
        (chat["name"].as_str(), chat["text"].as_str()),
        (Some("Cli"), Some("hello from the cli"))
    );

    peer.send(&json!({"type": "chat_send", "client_id": "p1", "text": "hello back"}))
        .await
        .unwrap();
    let mut printed = Vec::new();
    while !printed.iter().any(|m: &Value| m["text"] == "hello back") {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        printed.push(serde_json::from_str(&line).expect("every stdout line is JSON"));
    }

    drop(stdin);
    assert_eq!(
        peer.expect("participant_left").await.unwrap()["reason"],
        "left"
    );
    assert_eq!(exit_code(child).await, 0);
}

#[tokio::test]
async fn cli_exit_codes_tell_what_went_wrong() {
    // 3: nothing listens there.
    let refused = cli(&[
        "join",
        "ws://127.0.0.1:1/ws",
        "--room",
        "r",
        "--name",
        "A",
        "--no-stdin",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert_eq!(exit_code(refused).await, 3);

    // 4: refused locally before connecting, and refused by the server.
    let sfu = SfuProcess::start(&["--auth-secret", "cli-secret-0123456789abcdef"])
        .await
        .unwrap();
    let bad_room = cli(&[
        "join",
        &sfu.signaling_url,
        "--room",
        "no spaces",
        "--name",
        "A",
        "--no-stdin",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert_eq!(exit_code(bad_room).await, 4);
    let no_token = cli(&[
        "join",
        &sfu.signaling_url,
        "--room",
        "r",
        "--name",
        "A",
        "--no-stdin",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let output = tokio::time::timeout(PATIENCE, no_token.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stdout).contains("token_required"));

    // 2: bad usage (clap).
    let usage = cli(&["join", "--room", "r"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(exit_code(usage).await, 2);
}

#[tokio::test]
async fn cli_duration_leaves_by_itself() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let child = cli(&[
        "join",
        &sfu.signaling_url,
        "--room",
        "r",
        "--name",
        "Timed",
        "--no-stdin",
        "--duration",
        "300ms",
    ])
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    assert_eq!(exit_code(child).await, 0);
}
