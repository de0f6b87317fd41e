//! Calls through the SFU's sans-IO core on a simulated network: seeded loss,
//! delay, jitter (which reorders), duplication and bottleneck links, with a
//! simulated clock. The SFU core and the clients' call sessions are the real
//! ones; only sockets and time are simulated, so seconds of call run in
//! milliseconds and every run is the same.

#![allow(clippy::unwrap_used)]

mod net;
mod world;

use std::time::Duration;

use net::LinkConfig;
use world::{Layer, World};

const LOSSLESS_JITTERY: LinkConfig = LinkConfig {
    delay: Duration::from_millis(20),
    jitter: Duration::from_millis(6),
    loss: 0.0,
    duplicate: 0.01,
    capacity_bps: None,
};

#[test]
fn a_layer_switch_is_seamless_for_the_subscriber() {
    let mut world = World::new(7, LOSSLESS_JITTERY);
    let publisher = world.add_client("pub", true);
    let watcher = world.add_client("watcher", false);
    let other = world.add_client("other", false);
    world.run_for(Duration::from_secs(2));
    world.request_size(watcher, publisher, 320, 180);
    world.request_size(other, publisher, 640, 360);
    world.run_for(Duration::from_secs(3));
    let before = world.frames(watcher).len();
    world.request_size(watcher, publisher, 640, 360);
    world.run_for(Duration::from_secs(3));
    world.request_size(watcher, publisher, 160, 90);
    world.run_for(Duration::from_secs(3));

    let frames = world.frames(watcher);
    let layers: Vec<Layer> = frames.iter().map(|f| f.layer).collect();
    assert!(
        layers[before..].contains(&Layer::Full),
        "moved up to the full layer"
    );
    assert_eq!(
        *layers.last().unwrap(),
        Layer::Quarter,
        "and down to the quarter layer"
    );
    // Seamless: every frame complete (no sequence gap), frame numbers only
    // advance, through both switches.
    // (The first frame has nothing before it to be contiguous with.)
    let gaps: Vec<_> = frames[1..].iter().filter(|f| !f.contiguous).collect();
    assert!(gaps.is_empty(), "frames after a sequence gap: {gaps:?}");
    for pair in frames.windows(2) {
        assert!(
            pair[1].number >= pair[0].number,
            "frame {} after {}",
            pair[1].number,
            pair[0].number
        );
    }
    // The other subscriber was not disturbed by the watcher's switches.
    let other_frames = world.frames(other);
    assert!(other_frames.len() > 200, "{}", other_frames.len());
    let other_gaps: Vec<_> = other_frames[1..].iter().filter(|f| !f.contiguous).collect();
    assert!(other_gaps.is_empty(), "{other_gaps:?}");
}

#[test]
fn loss_delay_reordering_and_duplication_are_repaired_by_retransmission() {
    let lossy = LinkConfig {
        loss: 0.03,
        ..LOSSLESS_JITTERY
    };
    let mut world = World::new(11, lossy);
    let publisher = world.add_client("pub", true);
    let subscribers: Vec<usize> = (0..3)
        .map(|i| world.add_client(&format!("sub{i}"), false))
        .collect();
    world.run_for(Duration::from_secs(1));
    for &s in &subscribers {
        world.request_size(s, publisher, 640, 360);
    }
    world.run_for(Duration::from_secs(8));
    let sent = world.frames_sent(Layer::Full);
    for &s in &subscribers {
        let frames = world.frames(s);
        let full = frames.iter().filter(|f| f.layer == Layer::Full).count();
        // 3 % loss each way; NACK/RTX from the SFU recovers nearly everything.
        assert!(
            full as f64 >= sent as f64 * 0.85,
            "subscriber got {full} of {sent} full-layer frames"
        );
        let gaps = frames.iter().filter(|f| !f.contiguous).count();
        assert!(gaps * 20 <= frames.len(), "{gaps} gaps in {}", frames.len());
    }
    let (forwarded, _) = world.sfu_work();
    let received: usize = subscribers.iter().map(|&s| world.frames(s).len()).sum();
    assert!(
        forwarded as usize > received,
        "every frame took at least one forwarded packet"
    );
    assert!(world.datagram_times().len() as u64 > forwarded / 3);
    let nacks: u64 = subscribers.iter().map(|&s| world.nacks_sent(s)).sum();
    assert!(nacks > 0, "losses were repaired through NACKs to the SFU");
}

#[test]
fn dynacast_pauses_layers_nobody_watches_and_resumes_them() {
    let mut world = World::new(3, LOSSLESS_JITTERY);
    let publisher = world.add_client("pub", true);
    let a = world.add_client("a", false);
    let b = world.add_client("b", false);
    world.request_size(a, publisher, 160, 90);
    world.request_size(b, publisher, 160, 90);
    world.run_for(Duration::from_secs(4));
    assert_eq!(world.active_layers(publisher), vec!["q".to_owned()]);
    let full_before = world.frames_sent(Layer::Full);
    world.run_for(Duration::from_secs(2));
    assert_eq!(
        world.frames_sent(Layer::Full),
        full_before,
        "the publisher stopped encoding the full layer"
    );
    world.request_size(b, publisher, 640, 360);
    world.run_for(Duration::from_secs(2));
    assert!(world.active_layers(publisher).contains(&"f".to_owned()));
    assert!(
        world
            .frames(b)
            .iter()
            .rev()
            .take(10)
            .all(|f| f.layer == Layer::Full),
        "b gets the full layer again"
    );
}

#[test]
fn a_bandwidth_drop_moves_a_subscriber_down_and_recovery_moves_it_back_up() {
    let mut world = World::new(5, LOSSLESS_JITTERY);
    let publisher = world.add_client("pub", true);
    let viewer = world.add_client("viewer", false);
    world.request_size(viewer, publisher, 640, 360);
    world.run_for(Duration::from_secs(6));
    assert_eq!(world.last_layer(viewer), Some(Layer::Full));

    // The viewer's downlink shrinks below what the full layer needs.
    world.set_downlink(
        viewer,
        LinkConfig {
            capacity_bps: Some(500_000),
            ..LOSSLESS_JITTERY
        },
    );
    world.run_for(Duration::from_secs(8));
    let during = world.last_layer(viewer);
    assert!(
        matches!(during, Some(Layer::Half | Layer::Quarter)),
        "moved down: {during:?}"
    );

    world.set_downlink(viewer, LOSSLESS_JITTERY);
    world.run_for(Duration::from_secs(25));
    assert_eq!(world.last_layer(viewer), Some(Layer::Full), "back up");
}

#[test]
fn a_publisher_leaving_withdraws_its_track_everywhere() {
    let mut world = World::new(9, LOSSLESS_JITTERY);
    let publisher = world.add_client("pub", true);
    let a = world.add_client("a", false);
    let b = world.add_client("b", false);
    world.run_for(Duration::from_secs(2));
    assert_eq!(world.remote_tracks(a), 1);
    assert!(world.frames(a).len() > 30);
    world.leave(publisher);
    world.run_for(Duration::from_secs(1));
    assert_eq!(world.remote_tracks(a), 0, "a's session stopped the m-line");
    assert_eq!(world.remote_tracks(b), 0);
    assert_eq!(world.media_sessions(), 2);
    let frames = world.frames(a).len();
    world.run_for(Duration::from_secs(1));
    assert_eq!(world.frames(a).len(), frames, "nothing arrives any more");
}
