//! The buffer on a simulated network, in simulated time: packets every
//! 20 ms, a fixed path delay plus random jitter, random loss, talk spurts
//! separated by DTX pauses; the playout clock asks for a frame every 20 ms.

use super::*;

/// xorshift: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

const BASE_DELAY_US: u64 = 30_000;

struct Network {
    max_jitter_ms: f64,
    loss: f64,
    /// Talk spurt and DTX pause lengths in frames (pause 0: continuous).
    talk_frames: u64,
    pause_frames: u64,
}

#[derive(Debug, Default)]
struct Outcome {
    before: JitterStats,
    after: JitterStats,
    lost_after_settling: u64,
    /// Buffering delay of each frame played from a packet, after settling:
    /// play time minus (send time + the path's fixed delay).
    added_delay_ms: Vec<f64>,
    targets_ms: Vec<f64>,
}

fn simulate(network: &Network, seconds: u64, settle_s: u64, seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let frames = seconds * 50;
    let cycle = network.talk_frames + network.pause_frames;
    // Every packet the sender sends: (arrival time, rtp time), minus losses.
    let mut arrivals = Vec::new();
    let mut lost = std::collections::HashSet::new();
    for k in 0..frames {
        if cycle > 0 && k % cycle >= network.talk_frames {
            continue; // DTX: nothing sent
        }
        if rng.next_f64() < network.loss {
            lost.insert(k);
            continue;
        }
        let jitter = (rng.next_f64() * network.max_jitter_ms * 1000.0) as u64;
        arrivals.push((k * 20_000 + BASE_DELAY_US + jitter, k));
    }
    arrivals.sort_unstable();
    let talking = |k: u64| cycle == 0 || k % cycle < network.talk_frames;
    // The last 100 ms of a spurt fade out: quiet, as a real voice before a pause.
    let quiet_frame = |k: u64| cycle > 0 && k % cycle >= network.talk_frames.saturating_sub(5);

    let mut buffer = JitterBuffer::new(JitterSettings::default());
    let mut outcome = Outcome::default();
    let mut pending = arrivals.into_iter().peekable();
    let settle_us = settle_s * 1_000_000;
    // The playout clock is not aligned with the sender's.
    let mut now = 7_000;
    while now < frames * 20_000 {
        while let Some(&(at, k)) = pending.peek()
            && at <= now
        {
            buffer.push(k * FRAME_TICKS, vec![1; 40], at);
            pending.next();
        }
        if now == settle_us + 7_000 {
            outcome.before = buffer.stats();
        }
        let played = loop {
            match buffer.pop(now) {
                Playout::Discard(_) => {}
                other => break other,
            }
        };
        let frame = buffer.playing_rtp_time().map(|t| t / FRAME_TICKS);
        let quiet = match played {
            Playout::Comfort | Playout::Idle => true,
            _ => frame.is_some_and(quiet_frame),
        };
        buffer.note_quiet(quiet);
        if now > settle_us
            && let (Playout::Packet(_), Some(k)) = (&played, frame)
        {
            let sent = k * 20_000;
            outcome
                .added_delay_ms
                .push((now - sent - BASE_DELAY_US) as f64 / 1000.0);
            outcome.targets_ms.push(buffer.stats().target_delay_ms);
        }
        now += 20_000;
    }
    outcome.after = buffer.stats();
    outcome.lost_after_settling = lost
        .iter()
        .filter(|&&k| k * 20_000 > settle_us + 200_000 && talking(k))
        .count() as u64;
    outcome
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn delta(outcome: &Outcome, field: impl Fn(&JitterStats) -> u64) -> u64 {
    field(&outcome.after) - field(&outcome.before)
}

#[test]
fn jitter_up_to_80ms_and_10_percent_loss_settle_without_underruns() {
    for (talk_frames, pause_frames) in [(0, 0), (100, 30)] {
        let network = Network {
            max_jitter_ms: 80.0,
            loss: 0.10,
            talk_frames,
            pause_frames,
        };
        let outcome = simulate(&network, 60, 10, 0x5eed_1234);
        let underruns = delta(&outcome, |s| s.underruns);
        let recovered = delta(&outcome, |s| s.frames_recovered);
        let concealed = delta(&outcome, |s| s.frames_concealed);
        let added = mean(&outcome.added_delay_ms);
        let target = mean(&outcome.targets_ms);
        eprintln!(
            "talk {talk_frames}/pause {pause_frames}: after settling {underruns} underruns, \
             {recovered} recovered by FEC, {concealed} concealed, of {} lost; \
             added delay {added:.1} ms vs target {target:.1} ms; totals {:?}",
            outcome.lost_after_settling, outcome.after
        );
        assert_eq!(underruns, 0, "the buffer ran dry after settling");
        // Every lost frame was repaired, most from FEC.
        assert!(
            recovered + concealed >= outcome.lost_after_settling * 9 / 10,
            "{recovered} + {concealed} repairs for {} losses",
            outcome.lost_after_settling
        );
        assert!(recovered > concealed, "single losses are rebuilt from FEC");
        // The target covers the 80 ms of jitter, and a frame of FEC
        // look-ahead for the loss, and no more than it needs.
        assert!((100.0..=130.0).contains(&target), "target {target:.1} ms");
        assert!(
            (added - target).abs() <= 25.0,
            "added delay {added:.1} ms, target {target:.1} ms"
        );
    }
}

#[test]
fn a_calm_network_keeps_the_delay_at_the_minimum() {
    let network = Network {
        max_jitter_ms: 2.0,
        loss: 0.0,
        talk_frames: 100,
        pause_frames: 30,
    };
    let outcome = simulate(&network, 20, 5, 7);
    let added = mean(&outcome.added_delay_ms);
    eprintln!("calm: added delay {added:.1} ms, {:?}", outcome.after);
    assert!(outcome.after.target_delay_ms <= 25.0);
    assert!(added <= 45.0, "added delay {added:.1} ms");
    assert_eq!(delta(&outcome, |s| s.underruns), 0);
    assert_eq!(delta(&outcome, |s| s.frames_concealed), 0);
}

#[test]
fn the_delay_shrinks_when_the_jitter_goes_away() {
    // 80 ms of jitter for 20 s, then a calm network: the target falls and
    // the buffer follows it down in the quiet moments, without underruns.
    let mut rng = Rng(99);
    let mut buffer = JitterBuffer::new(JitterSettings::default());
    let mut pending = Vec::new();
    for k in 0..2_500u64 {
        let jitter_ms = if k < 1_000 { 80.0 } else { 1.0 };
        let at = k * 20_000 + BASE_DELAY_US + (rng.next_f64() * jitter_ms * 1000.0) as u64;
        pending.push((at, k));
    }
    pending.sort_unstable();
    let mut pending = pending.into_iter().peekable();
    let mut now = 3_000;
    let mut levels = Vec::new();
    while now < 2_500 * 20_000 {
        while let Some(&(at, k)) = pending.peek()
            && at <= now
        {
            buffer.push(k * FRAME_TICKS, vec![1; 40], at);
            pending.next();
        }
        while let Playout::Discard(_) = buffer.pop(now) {}
        // Every second, 200 ms of quiet.
        let k = buffer.playing_rtp_time().unwrap_or(0) / FRAME_TICKS;
        buffer.note_quiet(k % 50 >= 40);
        levels.push((now, buffer.stats().buffered_ms));
        now += 20_000;
    }
    let stats = buffer.stats();
    let late_level = mean(
        &levels
            .iter()
            .filter(|(t, _)| *t > 45_000_000)
            .map(|(_, l)| *l)
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "after the jitter went: target {:.1} ms, level {late_level:.1} ms; {stats:?}",
        stats.target_delay_ms
    );
    assert!(stats.target_delay_ms <= 25.0);
    assert!(late_level <= 50.0, "still buffering {late_level:.1} ms");
    assert!(stats.frames_dropped > 0);
}

#[test]
fn duplicates_late_packets_and_restarts_are_handled() {
    let mut buffer = JitterBuffer::new(JitterSettings::default());
    buffer.push(0, vec![0], 0);
    buffer.push(FRAME_TICKS, vec![1], 20_000);
    let mut now = 30_000;
    assert_eq!(buffer.pop(now), Playout::Packet(vec![0]));
    buffer.push(2 * FRAME_TICKS, vec![2], 40_000);
    now += 20_000;
    assert_eq!(buffer.pop(now), Playout::Packet(vec![1]));
    // Frame 0 again: late, ignored.
    buffer.push(0, vec![0], now);
    assert_eq!(buffer.stats().underruns, 1);
    // The sender restarts far ahead: the buffer starts over.
    buffer.push(1_000_000 * FRAME_TICKS, vec![9], now);
    assert_eq!(buffer.stats().packets_received, 5);
    let mut played = None;
    for _ in 0..20 {
        now += 20_000;
        if let Playout::Packet(p) = buffer.pop(now) {
            played = Some(p);
            break;
        }
    }
    assert_eq!(played, Some(vec![9]));
    // Empty payloads are not packets.
    buffer.push(1_000_001 * FRAME_TICKS, Vec::new(), now);
    assert_eq!(buffer.stats().packets_received, 5);
}
