//! Signaling core throughput: chat fan-out and joins, through the sans-IO core
//! plus the one JSON serialization per output that the driver performs.
//!
//! Run: `cargo bench -p parley-sfu --bench signaling`

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parley_sfu::core::{CoreConfig, Output, Sfu};
use parley_sfu::metrics::Metrics;

/// Drains outputs as the driver does: serialize once, count deliveries.
fn drain(sfu: &mut Sfu) -> usize {
    let mut delivered = 0;
    while let Some(output) = sfu.poll_output() {
        if let Output::Send { to, msg } = output {
            let frame = serde_json::to_string(&msg).unwrap();
            std::hint::black_box(&frame);
            delivered += to.len();
        }
    }
    delivered
}

fn room_of(size: u64, now: Instant) -> Sfu {
    let mut sfu = Sfu::new(
        CoreConfig::default(),
        Metrics::default(),
        now,
        1_800_000_000_000,
        [3; 32],
    );
    for conn in 0..size {
        sfu.handle_connect(conn, now);
        let join = format!(r#"{{"type":"join","protocol":[1],"room":"bench","name":"P{conn}"}}"#);
        sfu.handle_text(conn, &join, now);
    }
    drain(&mut sfu);
    sfu
}

fn chat_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("chat_fanout");
    for size in [2u64, 10, 50, 100] {
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let mut now = Instant::now();
            let mut sfu = room_of(size, now);
            let mut n = 0u64;
            b.iter(|| {
                // One second of simulated time per message keeps every
                // sender under the chat rate limit.
                now += Duration::from_secs(1);
                n += 1;
                let sender = n % size;
                let text = format!(
                    r#"{{"type":"chat_send","client_id":"c{n}","text":"message number {n} from the benchmark"}}"#
                );
                sfu.handle_text(sender, &text, now);
                assert_eq!(drain(&mut sfu), size as usize);
            });
        });
    }
    group.finish();
}

fn join_leave(c: &mut Criterion) {
    c.bench_function("join_then_leave_in_room_of_50", |b| {
        let mut now = Instant::now();
        let mut sfu = room_of(50, now);
        let mut conn = 1_000u64;
        b.iter(|| {
            now += Duration::from_millis(1);
            conn += 1;
            sfu.handle_connect(conn, now);
            sfu.handle_text(
                conn,
                r#"{"type":"join","protocol":[1],"room":"bench","name":"Visitor"}"#,
                now,
            );
            sfu.handle_text(conn, r#"{"type":"leave"}"#, now);
            sfu.handle_disconnect(conn, now);
            drain(&mut sfu)
        });
    });
}

criterion_group!(benches, chat_fanout, join_leave);
criterion_main!(benches);
