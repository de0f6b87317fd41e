use std::collections::HashSet;

use parley_e2e::{SfuProcess, WsClient};
use serde_json::json;

const CLIENTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_each_receive_every_chat_message_exactly_once() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (client, _) = WsClient::join(&sfu.signaling_url, "crowd", &format!("P{i}"))
            .await
            .unwrap();
        clients.push(client);
    }
    assert_eq!(
        sfu.metric("parley_participants").await.unwrap(),
        CLIENTS as u64
    );

    for (i, client) in clients.iter_mut().enumerate() {
        client
            .send(&json!({"type": "chat_send", "client_id": format!("c{i}"), "text": format!("hello from {i}")}))
            .await
            .unwrap();
    }
    let receivers = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut texts = HashSet::new();
            while seqs.len() < CLIENTS {
                let message = client.expect("chat_message").await.unwrap();
                seqs.push(message["seq"].as_u64().unwrap());
                assert!(
                    texts.insert(message["text"].as_str().unwrap().to_owned()),
                    "duplicate"
                );
            }
            client.roundtrip(7).await.unwrap(); // nothing further was queued before the pong
            seqs
        })
    });
    for receiver in receivers {
        let seqs = receiver.await.unwrap();
        assert_eq!(seqs, (1..=CLIENTS as u64).collect::<Vec<_>>());
    }
    assert_eq!(
        sfu.metric("parley_chat_messages_total").await.unwrap(),
        CLIENTS as u64
    );
    assert_eq!(
        sfu.metric("parley_joins_total{kind=\"new\"}")
            .await
            .unwrap(),
        CLIENTS as u64
    );
}
