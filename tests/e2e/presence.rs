use parley_e2e::{SfuProcess, WsClient};
use serde_json::json;

#[tokio::test]
async fn join_presence_tracks_and_leave_over_real_sockets() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut ada, ada_joined) = WsClient::join(&sfu.signaling_url, "standup", "Ada")
        .await
        .unwrap();
    assert_eq!(ada_joined["protocol"], 1);
    assert_eq!(ada_joined["participants"], json!([]));
    assert_eq!(sfu.metric("parley_rooms").await.unwrap(), 1);

    let (mut bob, bob_joined) = WsClient::join(&sfu.signaling_url, "standup", "Bob")
        .await
        .unwrap();
    assert_eq!(bob_joined["participants"][0]["name"], "Ada");
    let seen = ada.expect("participant_joined").await.unwrap();
    assert_eq!(seen["participant"]["id"], bob_joined["participant_id"]);

    ada.send(&json!({"type": "publish_track", "track": {"id": "mic", "kind": "audio", "source": "microphone"}}))
        .await
        .unwrap();
    let published = bob.expect("track_published").await.unwrap();
    assert_eq!(published["participant_id"], ada_joined["participant_id"]);
    ada.send(&json!({"type": "set_muted", "track_id": "mic", "muted": true}))
        .await
        .unwrap();
    assert_eq!(bob.expect("track_muted").await.unwrap()["muted"], true);

    // Another room is another world.
    let (mut carol, carol_joined) = WsClient::join(&sfu.signaling_url, "elsewhere", "Carol")
        .await
        .unwrap();
    assert_eq!(carol_joined["participants"], json!([]));
    assert_eq!(sfu.metric("parley_rooms").await.unwrap(), 2);
    assert_eq!(sfu.metric("parley_participants").await.unwrap(), 3);

    bob.send(&json!({"type": "leave"})).await.unwrap();
    assert_eq!(bob.expect("bye").await.unwrap()["reason"], "left");
    bob.closed().await.unwrap();
    let left = ada.expect("participant_left").await.unwrap();
    assert_eq!(left["participant_id"], bob_joined["participant_id"]);
    assert_eq!(left["reason"], "left");

    carol.send(&json!({"type": "leave"})).await.unwrap();
    carol.closed().await.unwrap();
    ada.roundtrip(1).await.unwrap();
    assert_eq!(
        sfu.metric("parley_rooms").await.unwrap(),
        1,
        "empty rooms disappear"
    );
    let (status, body) = sfu.http_get("/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
}

#[tokio::test]
async fn a_dropped_connection_leaves_after_the_resume_window() {
    let sfu = SfuProcess::start(&["--resume-window", "300ms"])
        .await
        .unwrap();
    let (mut ada, _) = WsClient::join(&sfu.signaling_url, "r", "Ada")
        .await
        .unwrap();
    let (bob, bob_joined) = WsClient::join(&sfu.signaling_url, "r", "Bob")
        .await
        .unwrap();
    ada.expect("participant_joined").await.unwrap();
    drop(bob); // no leave, no close frame: the TCP connection just goes away
    let left = ada.expect("participant_left").await.unwrap();
    assert_eq!(left["participant_id"], bob_joined["participant_id"]);
    assert_eq!(left["reason"], "disconnected");
}
