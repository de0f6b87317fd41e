//! Real calls: `parley-sfu` and several `parley-cli --fake-media` processes
//! on loopback, exchanging encoded audio and simulcast video.

use std::time::{Duration, Instant};

use parley_e2e::SfuProcess;
use parley_e2e::participant::{Participant, remote};
use serde_json::Value;

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
