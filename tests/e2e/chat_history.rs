use parley_e2e::{SfuProcess, WsClient, chat_texts};
use serde_json::{Value, json};

fn join_as(room: &str, name: &str, identity: &str) -> Value {
    json!({"type": "join", "protocol": [1], "room": room, "name": name, "identity": identity})
}

#[tokio::test]
async fn chat_is_ordered_and_history_arrives_on_join() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut ada, _) = WsClient::join(&sfu.signaling_url, "r", "Ada")
        .await
        .unwrap();
    let (mut bob, _) = WsClient::join(&sfu.signaling_url, "r", "Bob")
        .await
        .unwrap();
    ada.expect("participant_joined").await.unwrap();
    for i in 0..6 {
        let (sender, id) = if i % 2 == 0 {
            (&mut ada, "a")
        } else {
            (&mut bob, "b")
        };
        sender
            .send(&json!({"type": "chat_send", "client_id": format!("{id}{i}"), "text": format!("line {i}")}))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(bob.expect("chat_message").await.unwrap());
    }
    let seqs: Vec<u64> = seen.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "room-wide order, no gaps");
    let (_, carol) = WsClient::join(&sfu.signaling_url, "r", "Carol")
        .await
        .unwrap();
    let history: Vec<Value> = carol["chat_history"].as_array().unwrap().clone();
    assert_eq!(
        chat_texts(&history),
        chat_texts(&seen),
        "history on join, in order"
    );
    assert!(
        history
            .iter()
            .all(|m| m["ts_ms"].as_u64().unwrap() > 1_700_000_000_000)
    );
}

#[tokio::test]
async fn resend_after_reconnect_is_not_a_second_copy() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut watcher, _) = WsClient::join(&sfu.signaling_url, "r", "Watcher")
        .await
        .unwrap();
    let (mut ada, _) = WsClient::join_with(&sfu.signaling_url, join_as("r", "Ada", "ada"))
        .await
        .unwrap();
    ada.send(&json!({"type": "chat_send", "client_id": "msg-1", "text": "only once"}))
        .await
        .unwrap();
    ada.expect("chat_message").await.unwrap();
    drop(ada); // the echo may or may not have reached the app; it resends to be sure

    // Fresh connection, same identity (no resume token): the resend is recognised.
    let (mut ada2, joined) = WsClient::join_with(&sfu.signaling_url, join_as("r", "Ada", "ada"))
        .await
        .unwrap();
    assert_eq!(joined["resumed"], false);
    ada2.send(&json!({"type": "chat_send", "client_id": "msg-1", "text": "only once"}))
        .await
        .unwrap();
    let ack = ada2.expect("chat_message").await.unwrap();
    assert_eq!(ack["seq"], 1, "the original is the acknowledgement");
    ada2.send(&json!({"type": "chat_send", "client_id": "msg-2", "text": "new"}))
        .await
        .unwrap();
    assert_eq!(ada2.expect("chat_message").await.unwrap()["seq"], 2);

    let texts: Vec<String> = {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.push(watcher.expect("chat_message").await.unwrap());
        }
        chat_texts(&seen)
    };
    assert_eq!(texts, ["only once", "new"]);
    assert_eq!(sfu.metric("parley_chat_duplicates_total").await.unwrap(), 1);
}

#[tokio::test]
async fn resume_restores_the_session_with_missed_chat_only() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut ada, _) = WsClient::join(&sfu.signaling_url, "r", "Ada")
        .await
        .unwrap();
    let (bob, bob_joined) = WsClient::join(&sfu.signaling_url, "r", "Bob")
        .await
        .unwrap();
    ada.expect("participant_joined").await.unwrap();
    ada.send(&json!({"type": "chat_send", "client_id": "a1", "text": "seen"}))
        .await
        .unwrap();
    ada.expect("chat_message").await.unwrap();
    drop(bob);
    ada.send(&json!({"type": "chat_send", "client_id": "a2", "text": "missed"}))
        .await
        .unwrap();
    ada.expect("chat_message").await.unwrap();

    let resume = json!({"type": "join", "protocol": [1], "room": "r", "name": "Bob",
        "resume": {"token": bob_joined["resume_token"], "last_chat_seq": 1}});
    let (mut bob2, resumed) = WsClient::join_with(&sfu.signaling_url, resume)
        .await
        .unwrap();
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["participant_id"], bob_joined["participant_id"]);
    assert_eq!(
        chat_texts(resumed["chat_history"].as_array().unwrap()),
        ["missed"]
    );
    bob2.roundtrip(1).await.unwrap();
    ada.roundtrip(2).await.unwrap(); // would have failed on a participant_left/joined first
}
