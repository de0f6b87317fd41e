//! Bad input at the media boundary: malformed SDP and candidates over
//! signaling, garbage on the UDP media port, and peers that never connect.

use std::time::Duration;

use parley_e2e::{SfuProcess, WsClient};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use parley_e2e::participant::{Participant, remote};

fn join_with_media(room: &str, name: &str) -> Value {
    json!({"type": "join", "protocol": [1], "room": room, "name": name, "media": true})
}

fn microphone() -> Value {
    json!({"type": "publish_track", "track": {"id": "mic", "kind": "audio", "source": "microphone"}})
}

#[tokio::test]
async fn malformed_sdp_and_candidates_get_protocol_errors() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let (mut client, _) = WsClient::join_with(&sfu.signaling_url, join_with_media("r", "A"))
        .await
        .unwrap();
    client.send(&microphone()).await.unwrap();
    let offer = client.expect("offer").await.unwrap();
    assert!(offer["sdp"].as_str().unwrap().starts_with("v=0"));
    assert_eq!(offer["mids"][0]["track_id"], "mic");

    for bad in [
        json!({"type": "answer", "sdp": "v=0\r\nthis is not an answer\r\n"}),
        json!({"type": "answer", "sdp": "not sdp at all"}),
        json!({"type": "ice_candidate", "candidate": "candidate:1 1 udp nonsense"}),
        json!({"type": "offer", "sdp": "v=0\r\n"}),
    ] {
        client.send(&bad).await.unwrap();
        let error = client.expect_error("invalid_sdp").await.unwrap();
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // The connection still works.
    client.roundtrip(9).await.unwrap();
}

#[tokio::test]
async fn a_peer_that_never_completes_ice_is_dropped_after_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sfu.toml");
    std::fs::write(&config, "[media]\nconnect_timeout = \"1s\"\n").unwrap();
    let sfu = SfuProcess::start(&["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let (mut client, _) = WsClient::join_with(&sfu.signaling_url, join_with_media("r", "A"))
        .await
        .unwrap();
    client.send(&microphone()).await.unwrap();
    client.expect("offer").await.unwrap();
    // No answer, no connectivity checks.
    let error = client.expect_error("media_failed").await.unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("ICE"),
        "{error}"
    );
    assert_eq!(sfu.metric("parley_media_failures_total").await.unwrap(), 1);
    assert_eq!(sfu.metric("parley_media_sessions").await.unwrap(), 0);
    // Signaling and chat carry on.
    client.roundtrip(1).await.unwrap();
}

#[tokio::test]
async fn garbage_on_the_media_port_is_dropped_and_counted_without_disturbing_a_call() {
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let small = ["--resolution", "320x180", "--no-stdin", "--duration", "4s"];
    let mut a = Participant::spawn(&sfu, dir.path(), "a", &small);
    let mut b = Participant::spawn(&sfu, dir.path(), "b", &small);
    let (a_id, b_id) = (a.participant_id().await, b.participant_id().await);
    for p in [&mut a, &mut b] {
        p.wait_for("first remote video", |v| {
            v["type"] == "cli_first_remote_frame" && v["kind"] == "video"
        })
        .await;
    }

    let media = sfu.media_addrs[0];
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut stun_without_username = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun_without_username.extend_from_slice(&[7; 12]);
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 100],
        vec![0x42; 1200],
        vec![0x00, 0x01, 0x00],
        stun_without_username,
        // RTP and RTCP headers from an address no session uses.
        vec![0x80, 0x66, 0x00, 0x01, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef],
        vec![0x80, 0xc8, 0x00, 0x06, 0xde, 0xad],
        // A DTLS record header, truncated.
        vec![0x16, 0xfe, 0xfd, 0x00],
    ];
    for round in 0..50u8 {
        for datagram in &garbage {
            socket.send_to(datagram, media).await.unwrap();
        }
        let random: Vec<u8> = (0..200u16)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(round))
            .collect();
        socket.send_to(&random, media).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for reason in ["not_media", "unknown_source", "bad_stun"] {
        let sample = format!("parley_media_datagrams_dropped_total{{reason=\"{reason}\"}}");
        assert!(sfu.metric(&sample).await.unwrap() > 0, "{sample}");
    }

    let (a_stats, b_stats) = (a.leave().await, b.leave().await);
    for (stats, from) in [(&a_stats, &b_id), (&b_stats, &a_id)] {
        let video = &remote(stats, from, "camera")["video"];
        let decoded = video["frames_decoded"].as_u64().unwrap();
        assert!(decoded >= 20, "{video:#}");
        // As in the call test: a loaded machine may drop loopback datagrams.
        assert!(
            video["decode_errors"].as_u64().unwrap() * 10 <= decoded,
            "{video:#}"
        );
        assert_eq!(video["stamps_out_of_order"], 0, "{video:#}");
    }
    assert!(sfu.log().contains("media connected"));
}
