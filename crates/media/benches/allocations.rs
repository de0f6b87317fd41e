//! Heap allocations per frame in the steady state of capture → scale →
//! encode (three layers), counted by an instrumented global allocator.
//! Allocations inside openh264's C code are not seen (it uses malloc).
//!
//! Run: `cargo bench -p parley-media --bench allocations`

#![allow(clippy::unwrap_used)]

use std::alloc::System;

use parley_media::frame::FramePool;
use parley_media::h264::EncoderComplexity;
use parley_media::scale::Size;
use parley_media::simulcast::{LAYERS, SimulcastEncoder, default_layers};
use parley_media::synthetic_video::SyntheticVideo;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WARM_UP: u64 = 60;
const MEASURED: u64 = 300;

fn main() {
    let pool = FramePool::new(8);
    let mut source = SyntheticVideo::new(1280, 720, pool.clone());
    let specs = default_layers(Size::new(1280, 720), 30.0);
    let mut simulcast = SimulcastEncoder::new(specs, EncoderComplexity::Low, pool.clone()).unwrap();
    let mut outputs: [Vec<u8>; LAYERS] = Default::default();
    let mut step = |i: u64| {
        let frame = source.render(i * 33_333);
        simulcast.encode(&frame, &mut outputs).unwrap();
        pool.recycle(frame);
    };
    for i in 0..WARM_UP {
        step(i);
    }
    let region = Region::new(GLOBAL);
    for i in WARM_UP..WARM_UP + MEASURED {
        step(i);
    }
    let stats = region.change();
    println!(
        "steady state over {MEASURED} frames of 720p → 3 layers: {} allocations, {} reallocations, \
         {} bytes in all ({:.2} allocations/frame, {:.0} bytes/frame)",
        stats.allocations,
        stats.reallocations,
        stats.bytes_allocated,
        stats.allocations as f64 / MEASURED as f64,
        stats.bytes_allocated as f64 / MEASURED as f64,
    );
}
