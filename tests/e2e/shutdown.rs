use std::process::Stdio;

use parley_e2e::{Closed, PATIENCE, SfuProcess, WsClient, bin};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn sigterm_tells_every_client_why_and_exits_cleanly() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut ada, _) = WsClient::join(&sfu.signaling_url, "r", "Ada")
        .await
        .unwrap();
    let mut lurker = WsClient::connect(&sfu.signaling_url).await.unwrap();
    let cli = tokio::process::Command::new(bin("parley-cli"))
        .args([
            "join",
            &sfu.signaling_url,
            "--room",
            "r",
            "--name",
            "Bot",
            "--no-stdin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    ada.expect("participant_joined").await.unwrap();

    let status = sfu.terminate().await.unwrap();
    assert!(status.success(), "parley-sfu exited with {status}");
    for client in [&mut ada, &mut lurker] {
        let bye = client.expect("bye").await.unwrap();
        assert_eq!(bye["reason"], "server_shutdown");
        match client.closed().await.unwrap() {
            Closed::Frame(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected close code 1001, got {other:?}"),
        }
    }
    let output = tokio::time::timeout(PATIENCE, cli.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
