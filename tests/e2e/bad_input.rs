use parley_e2e::{Closed, SfuProcess, WsClient};
use parley_proto::limits;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn bad_input_gets_a_coded_error_and_hurts_nobody_else() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut bystander, _) = WsClient::join(&sfu.signaling_url, "r", "Bystander")
        .await
        .unwrap();

    let mut raw = WsClient::connect(&sfu.signaling_url).await.unwrap();
    raw.send_text("{not json".into()).await.unwrap();
    raw.expect_error("bad_message").await.unwrap();
    raw.send(&json!({"type": "teleport"})).await.unwrap();
    assert_eq!(
        raw.expect_error("unknown_type").await.unwrap()["in_reply_to"],
        "teleport"
    );
    raw.send(&json!({"type": "chat_send", "client_id": "x", "text": "too early"}))
        .await
        .unwrap();
    raw.expect_error("not_joined").await.unwrap();
    raw.send(&json!({"type": "join", "protocol": [1], "room": "no spaces allowed", "name": "A"}))
        .await
        .unwrap();
    raw.expect_error("invalid_room").await.unwrap();
    raw.send(&json!({"type": "join", "protocol": [1], "room": "r", "name": "bad\u{1b}name"}))
        .await
        .unwrap();
    raw.expect_error("invalid_name").await.unwrap();
    raw.send(&json!({"type": "join", "protocol": [1], "room": "r", "name": "x".repeat(65)}))
        .await
        .unwrap();
    raw.expect_error("invalid_name").await.unwrap();
    raw.send_binary(vec![0, 1, 2]).await.unwrap();
    raw.expect_error("bad_message").await.unwrap();
    // Over the message limit but under the frame cap: refused, connection kept.
    let oversized = format!(
        r#"{{"type":"ping","id":1,"pad":"{}"}}"#,
        "x".repeat(limits::MAX_MESSAGE_BYTES)
    );
    raw.send_text(oversized).await.unwrap();
    raw.expect_error("message_too_large").await.unwrap();
    raw.roundtrip(2).await.unwrap();

    raw.send(&json!({"type": "join", "protocol": [1], "room": "r", "name": "Mallory"}))
        .await
        .unwrap();
    raw.expect("joined").await.unwrap();
    raw.send(&json!({"type": "join", "protocol": [1], "room": "r", "name": "Mallory"}))
        .await
        .unwrap();
    raw.expect_error("already_joined").await.unwrap();
    raw.send(&json!({"type": "chat_send", "client_id": "big", "text": "x".repeat(limits::MAX_CHAT_BYTES + 1)}))
        .await
        .unwrap();
    assert_eq!(
        raw.expect_error("chat_too_long").await.unwrap()["client_id"],
        "big"
    );
    raw.send(&json!({"type": "chat_send", "client_id": "ctl", "text": "\u{7}"}))
        .await
        .unwrap();
    raw.expect_error("chat_invalid").await.unwrap();

    // A chat flood: the burst goes through, the rest is refused with a retry hint.
    for i in 0..30 {
        raw.send(&json!({"type": "chat_send", "client_id": format!("f{i}"), "text": "flood"}))
            .await
            .unwrap();
    }
    let mut delivered = 0u64;
    let mut limited = 0u64;
    while delivered + limited < 30 {
        let message = raw.recv().await.unwrap();
        match message["type"].as_str().unwrap() {
            "chat_message" => delivered += 1,
            "error" => {
                assert_eq!(message["code"], "rate_limited");
                assert!(message["retry_after_ms"].as_u64().unwrap() > 0);
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(
        delivered >= u64::from(limits::CHAT_BURST) && delivered < 15,
        "delivered {delivered}"
    );
    raw.roundtrip(3).await.unwrap();

    // The bystander saw Mallory and only the accepted chat, and still works.
    bystander.expect("participant_joined").await.unwrap();
    let mut chats = 0;
    while chats < delivered {
        bystander.expect("chat_message").await.unwrap();
        chats += 1;
    }
    bystander.roundtrip(4).await.unwrap();
    assert_eq!((sfu.http_get("/healthz").await.unwrap().0), 200);
    let errors = sfu
        .metric("parley_signaling_errors_total{code=\"rate_limited\"}")
        .await
        .unwrap();
    assert_eq!(errors, limited);
}

#[tokio::test]
async fn unsupported_version_is_refused_and_closed() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let mut client = WsClient::connect(&sfu.signaling_url).await.unwrap();
    client
        .send(&json!({"type": "join", "protocol": [99], "room": "r", "name": "Future"}))
        .await
        .unwrap();
    let error = client.expect_error("unsupported_version").await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("[1]"));
    assert_eq!(
        client.expect("bye").await.unwrap()["reason"],
        "join_refused"
    );
    client.closed().await.unwrap();
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_closes_only_that_connection() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut bystander, _) = WsClient::join(&sfu.signaling_url, "r", "Bystander")
        .await
        .unwrap();
    let mut abuser = WsClient::connect(&sfu.signaling_url).await.unwrap();
    // The server may refuse the frame from its header and close before the
    // whole megabyte is written, so the write itself may fail.
    let _ = abuser
        .send_text("x".repeat(limits::MAX_FRAME_BYTES + 1))
        .await;
    // The server answers with close code 1009. When it closes while our
    // unread megabyte is still in its receive buffer, the kernel resets the
    // connection and the close frame may be lost with it: either is a close.
    match abuser.closed().await.unwrap() {
        Closed::Frame(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        Closed::Dropped => {}
        Closed::Frame(None) => panic!("closed without saying why"),
    }
    assert!(abuser.roundtrip(2).await.is_err(), "the connection is gone");
    bystander.roundtrip(1).await.unwrap();
}
