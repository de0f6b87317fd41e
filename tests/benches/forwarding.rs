//! SFU forwarding cost: one publisher (audio-free, three simulcast layers at
//! realistic packet rates) fanned out to N subscribers through the real SFU
//! core with real SRTP, on the simulated network. Only time spent inside the
//! SFU core is counted; the clients' work is not.
//!
//! Run: `cargo bench -p parley-e2e --bench forwarding`

#![allow(clippy::unwrap_used)]

// The benchmark drives only part of what the simulation tests use.
#[allow(dead_code)]
#[path = "../sim/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "../sim/world.rs"]
mod world;

use std::time::Duration;

use net::LinkConfig;
use world::World;

const LINKS: LinkConfig = LinkConfig {
    delay: Duration::from_millis(10),
    jitter: Duration::ZERO,
    loss: 0.0,
    duplicate: 0.0,
    capacity_bps: None,
};

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    println!(
        "subscribers | forwarded pkt/s of SFU CPU | SFU CPU per subscribed track | datagram handling p50 / p99"
    );
    for subscribers in [5usize, 20, 50] {
        let mut world = World::new(1, LINKS);
        let publisher = world.add_client("pub", true);
        let viewers: Vec<usize> = (0..subscribers)
            .map(|i| world.add_client(&format!("s{i}"), false))
            .collect();
        for &v in &viewers {
            world.request_size(v, publisher, 640, 360);
        }
        // Warm up (ICE, DTLS, layer selection), then measure.
        world.run_for(Duration::from_secs(3));
        let (forwarded_before, busy_before) = world.sfu_work();
        let datagrams_before = world.datagram_times().len();
        let simulated = Duration::from_secs(10);
        world.run_for(simulated);
        let (forwarded, busy) = world.sfu_work();
        let (forwarded, busy) = (
            forwarded - forwarded_before,
            busy.saturating_sub(busy_before),
        );
        let mut times = world.datagram_times()[datagrams_before..].to_vec();
        times.sort_unstable();
        let per_core = forwarded as f64 / busy.as_secs_f64();
        // Share of one core each subscribed track costs, at the simulated rate.
        let per_track = busy.as_secs_f64() / simulated.as_secs_f64() / subscribers as f64;
        println!(
            "{subscribers:>11} | {per_core:>26.0} | {:>27.3} % | {:?} / {:?}",
            per_track * 100.0,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
        );
    }
}
