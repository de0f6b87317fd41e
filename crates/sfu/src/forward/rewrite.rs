//! Per-subscriber RTP rewriting for one forwarded video track.
//!
//! A switch happens only between frames: when the new layer's keyframe
//! arrives while the old layer's frame is still open (its marker packet not
//! yet here, as reordering allows), the switch waits for that frame to end,
//! and the caller replays the new layer's packets from the keyframe on (see
//! [`RtpRewriter::take_replay`]).
//!
//! The subscriber sees one SSRC with one continuous sequence-number and
//! timestamp space, whichever simulcast layer is being forwarded. A switch
//! to another layer waits for that layer's next keyframe (until then the old
//! layer keeps flowing), and then continues the numbering from the last
//! packet sent: the receiver sees neither a gap nor a jump. Gaps caused by
//! real loss, and reordering, inside one layer pass through unchanged, so the
//! receiver's NACKs and jitter buffer keep working.

use std::time::Instant;

/// The header fields a forwarded packet is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u16,
    timestamp: u32,
    at: Instant,
    /// The newest packet sent ended a frame.
    marker: bool,
}

/// How far before a switch a late packet of the old layer may still fill a hole.
const STRAGGLER_WINDOW: u16 = 128;
/// How long after a switch late packets of the old layer are still awaited.
const STRAGGLER_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a switch waits for the old layer's open frame to end.
pub const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_millis(150);

/// Packets of a layer the caller should pass through [`RtpRewriter::rewrite`]
/// again, oldest first: those of `ssrc` from `from_seq` on (inclusive or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub ssrc: u32,
    pub from_seq: u16,
    pub inclusive: bool,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RtpRewriter {
    out_ssrc: u32,
    clock_rate: u32,
    source: Option<Source>,
    /// The layer to switch to at its next keyframe.
    target: Option<u32>,
    last: Option<LastSent>,
    /// A keyframe of the target that arrived while the old frame was open.
    waiting: Option<(u32, u16, Instant)>,
    /// The layer before the last switch, and the first output sequence
    /// number of the new one: late packets of the old layer that fill holes
    /// before that point are still forwarded.
    previous: Option<(Source, u16, Instant)>,
    replay: Option<Replay>,
}

/// Whether sequence number `a` comes after `b` (RFC 3550 wrap-around).
fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl RtpRewriter {
    /// `out_ssrc` is what the subscriber sees; `clock_rate` is the RTP clock
    /// (90 kHz for video).
    pub fn new(out_ssrc: u32, clock_rate: u32) -> Self {
        Self {
            out_ssrc,
            clock_rate,
            source: None,
            target: None,
            last: None,
            waiting: None,
            previous: None,
            replay: None,
        }
    }

    /// The layer (by its source SSRC) being forwarded now.
    pub fn forwarding(&self) -> Option<u32> {
        self.source.map(|s| s.ssrc)
    }

    /// The layer (by its source SSRC) asked for last.
    pub fn target(&self) -> Option<u32> {
        self.target
    }

    /// Whether a switch is waiting for a keyframe (the publisher should be asked for one).
    pub fn wants_keyframe(&self) -> bool {
        self.target.is_some_and(|t| Some(t) != self.forwarding())
    }

    /// Forward this layer from its next keyframe on.
    pub fn switch_to(&mut self, ssrc: u32) {
        self.target = Some(ssrc);
    }

    /// Stop forwarding (the subscriber paused the track).
    pub fn stop(&mut self) {
        self.target = None;
        self.source = None;
        self.waiting = None;
        self.previous = None;
    }

    /// Packets to pass through again after a switch (see the module docs).
    pub fn take_replay(&mut self) -> Option<Replay> {
        self.replay.take()
    }

    /// Rewrites one incoming packet, or returns `None` to drop it.
    /// `keyframe_start` marks the first packet of a keyframe.
    pub fn rewrite(
        &mut self,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        (marker, keyframe_start): (bool, bool),
        now: Instant,
    ) -> Option<Rewritten> {
        if let Some((waiting_ssrc, waiting_seq, since)) = self.waiting
            && now.saturating_duration_since(since) >= SWITCH_WAIT
        {
            // The old frame's end is lost: give up on it and switch.
            self.waiting = None;
            if let Some(last) = &mut self.last {
                last.marker = true;
            }
            self.replay = Some(Replay {
                ssrc: waiting_ssrc,
                from_seq: waiting_seq,
                inclusive: true,
            });
        }
        if keyframe_start && self.target == Some(ssrc) && self.forwarding() != Some(ssrc) {
            let old_frame_open = self.source.is_some() && self.last.is_some_and(|l| !l.marker);
            if old_frame_open {
                self.waiting.get_or_insert((ssrc, seq, now));
                return None;
            }
            let next = self.continue_with(ssrc, seq, timestamp, now);
            self.previous = self
                .source
                .map(|old| (old, seq.wrapping_add(next.seq_offset), now));
            self.source = Some(next);
            self.waiting = None;
            // Packets after the keyframe that overtook it were dropped: resend them.
            self.replay = Some(Replay {
                ssrc,
                from_seq: seq,
                inclusive: false,
            });
        }
        if self
            .previous
            .is_some_and(|(_, _, at)| now.saturating_duration_since(at) > STRAGGLER_TIME)
        {
            self.previous = None;
        }
        if let Some((old, switch_seq, _)) = self.previous
            && old.ssrc == ssrc
        {
            // A straggler of the old layer: forwarded only into a hole it
            // left just before the switch, never from its later stream.
            let seq = seq.wrapping_add(old.seq_offset);
            let before_switch = switch_seq.wrapping_sub(seq);
            return (before_switch > 0 && before_switch <= STRAGGLER_WINDOW).then_some(Rewritten {
                ssrc: self.out_ssrc,
                seq,
                timestamp: timestamp.wrapping_add(old.ts_offset),
            });
        }
        let source = self.source.filter(|s| s.ssrc == ssrc)?;
        let out = Rewritten {
            ssrc: self.out_ssrc,
            seq: seq.wrapping_add(source.seq_offset),
            timestamp: timestamp.wrapping_add(source.ts_offset),
        };
        if self.last.is_none_or(|last| is_newer(out.seq, last.seq)) {
            self.last = Some(LastSent {
                seq: out.seq,
                timestamp: out.timestamp,
                at: now,
                marker,
            });
            if marker && let Some((waiting_ssrc, waiting_seq, _)) = self.waiting.take() {
                // The old frame ended: the switch can happen from the keyframe on.
                self.replay = Some(Replay {
                    ssrc: waiting_ssrc,
                    from_seq: waiting_seq,
                    inclusive: true,
                });
            }
        }
        Some(out)
    }

    /// Offsets that make `seq`/`timestamp` of the new layer follow on from
    /// the last packet sent, with the timestamp advanced by the time elapsed.
    fn continue_with(&self, ssrc: u32, seq: u16, timestamp: u32, now: Instant) -> Source {
        let Some(last) = self.last else {
            return Source {
                ssrc,
                seq_offset: 0,
                ts_offset: 0,
            };
        };
        let elapsed = now.saturating_duration_since(last.at);
        let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate))
            .round()
            .max(1.0) as u32;
        Source {
            ssrc,
            seq_offset: last.seq.wrapping_add(1).wrapping_sub(seq),
            ts_offset: last.timestamp.wrapping_add(ticks).wrapping_sub(timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const OUT: u32 = 0xAAAA;
    const LOW: u32 = 0x1111;
    const HIGH: u32 = 0x2222;
    const FRAME: Duration = Duration::from_micros(33_333);
    const TICKS_PER_FRAME: u32 = 3000;

    /// A layer sending `packets` packets per frame, keyframes when asked.
    struct Layer {
        ssrc: u32,
        seq: u16,
        ts: u32,
    }

    impl Layer {
        fn frame(&mut self, packets: u16, keyframe: bool) -> Vec<(u32, u16, u32, (bool, bool))> {
            let frame = (0..packets)
                .map(|i| {
                    (
                        self.ssrc,
                        self.seq.wrapping_add(i),
                        self.ts,
                        (i + 1 == packets, keyframe && i == 0),
                    )
                })
                .collect();
            self.seq = self.seq.wrapping_add(packets);
            self.ts = self.ts.wrapping_add(TICKS_PER_FRAME);
            frame
        }
    }

    #[test]
    fn a_layer_switch_is_seamless_to_the_receiver() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        let mut low = Layer {
            ssrc: LOW,
            seq: 1000,
            ts: 50_000,
        };
        let mut high = Layer {
            ssrc: HIGH,
            seq: 40_000,
            ts: 7_000_000,
        };
        let start = Instant::now();
        rewriter.switch_to(LOW);
        let mut sent = Vec::new();
        for n in 0..30u32 {
            let now = start + FRAME * n;
            if n == 10 {
                rewriter.switch_to(HIGH);
                assert!(rewriter.wants_keyframe());
            }
            let mut packets = low.frame(2, n == 0);
            // The high layer's keyframe comes three frames after the switch.
            packets.extend(high.frame(4, n == 13));
            for (ssrc, seq, ts, key) in packets {
                if let Some(out) = rewriter.rewrite(ssrc, seq, ts, key, now) {
                    sent.push((n, ssrc, out));
                }
            }
        }
        assert!(!rewriter.wants_keyframe());
        assert_eq!(rewriter.forwarding(), Some(HIGH));
        // The low layer flowed until the high keyframe (frame 13), nothing
        // from high before it, nothing from low after it.
        let first_high = sent.iter().position(|(_, ssrc, _)| *ssrc == HIGH).unwrap();
        assert_eq!(sent[first_high].0, 13);
        assert!(sent[..first_high].iter().all(|(_, ssrc, _)| *ssrc == LOW));
        assert!(sent[first_high..].iter().all(|(_, ssrc, _)| *ssrc == HIGH));
        // One SSRC, sequence numbers without a gap, timestamps never going back.
        assert!(sent.iter().all(|(_, _, out)| out.ssrc == OUT));
        for pair in sent.windows(2) {
            let (a, b) = (pair[0].2, pair[1].2);
            assert_eq!(b.seq, a.seq.wrapping_add(1), "{a:?} → {b:?}");
            assert!(
                b.timestamp.wrapping_sub(a.timestamp) < 1 << 31,
                "{a:?} → {b:?}"
            );
        }
        // Across the switch the timestamp moved on by the time elapsed (both
        // layers' frame 13 arrived together: one tick, never backwards).
        let step = sent[first_high]
            .2
            .timestamp
            .wrapping_sub(sent[first_high - 1].2.timestamp);
        assert!((1..=TICKS_PER_FRAME).contains(&step), "{step}");
    }

    #[test]
    fn loss_and_reordering_inside_a_layer_pass_through() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        rewriter.switch_to(LOW);
        let now = Instant::now();
        let out = |r: &mut RtpRewriter, seq, key| {
            r.rewrite(LOW, seq, 9000, (true, key), now).unwrap().seq
        };
        let first = out(&mut rewriter, 500, true);
        // 501 lost, 503 before 502.
        let third = out(&mut rewriter, 503, false);
        let second = out(&mut rewriter, 502, false);
        assert_eq!(
            (second.wrapping_sub(first), third.wrapping_sub(first)),
            (2, 3)
        );
    }

    #[test]
    fn a_keyframe_overtaking_the_old_frames_end_waits_for_it() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        rewriter.switch_to(LOW);
        let now = Instant::now();
        // Low frame: 10 (start), 11 (end, marker) — the end is late.
        assert!(rewriter.rewrite(LOW, 10, 0, (false, true), now).is_some());
        let _ = rewriter.take_replay();
        rewriter.switch_to(HIGH);
        assert!(
            rewriter.rewrite(HIGH, 70, 0, (false, true), now).is_none(),
            "the old frame is still open"
        );
        assert!(rewriter.take_replay().is_none());
        let end = rewriter.rewrite(LOW, 11, 0, (true, false), now).unwrap();
        assert_eq!(
            rewriter.take_replay(),
            Some(Replay {
                ssrc: HIGH,
                from_seq: 70,
                inclusive: true
            })
        );
        // The caller replays the high layer from its keyframe: it follows on.
        let key = rewriter.rewrite(HIGH, 70, 0, (false, true), now).unwrap();
        assert_eq!(key.seq, end.seq.wrapping_add(1));
        assert_eq!(rewriter.forwarding(), Some(HIGH));
        assert!(
            rewriter
                .rewrite(LOW, 12, 3000, (true, false), now)
                .is_none()
        );
    }

    #[test]
    fn a_lost_frame_end_does_not_hold_a_switch_forever() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        rewriter.switch_to(LOW);
        let now = Instant::now();
        assert!(rewriter.rewrite(LOW, 10, 0, (false, true), now).is_some());
        let _ = rewriter.take_replay();
        rewriter.switch_to(HIGH);
        assert!(rewriter.rewrite(HIGH, 70, 0, (false, true), now).is_none());
        let later = now + SWITCH_WAIT;
        let _ = rewriter.rewrite(HIGH, 71, 0, (true, false), later);
        let replay = rewriter.take_replay().expect("switch forced");
        assert_eq!((replay.ssrc, replay.from_seq), (HIGH, 70));
        assert!(
            rewriter
                .rewrite(HIGH, 70, 0, (false, true), later)
                .is_some()
        );
    }

    #[test]
    fn the_old_layer_never_leaks_in_later() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        rewriter.switch_to(LOW);
        let now = Instant::now();
        assert!(rewriter.rewrite(LOW, 100, 0, (true, true), now).is_some());
        rewriter.switch_to(HIGH);
        assert!(rewriter.rewrite(HIGH, 5000, 0, (true, true), now).is_some());
        // The old layer keeps flowing (someone else watches it): none of it,
        // however far its numbers run, gets into this subscriber's stream.
        for i in 1..=70_000u32 {
            let seq = 100u16.wrapping_add(i as u16);
            let at = now + Duration::from_millis(u64::from(i) / 10);
            assert!(
                rewriter.rewrite(LOW, seq, 0, (true, false), at).is_none(),
                "low packet {i} leaked"
            );
        }
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        rewriter.switch_to(LOW);
        let now = Instant::now();
        let mut low = Layer {
            ssrc: LOW,
            seq: 65_534,
            ts: u32::MAX - 3000,
        };
        let outs: Vec<u16> = low
            .frame(4, true)
            .into_iter()
            .filter_map(|(s, q, t, k)| rewriter.rewrite(s, q, t, k, now))
            .map(|r| r.seq)
            .collect();
        assert_eq!(outs, [65_534, 65_535, 0, 1]);
        // A switch right after the wrap continues from 1.
        rewriter.switch_to(HIGH);
        let next = rewriter
            .rewrite(HIGH, 7, 123, (true, true), now + FRAME)
            .unwrap();
        assert_eq!(next.seq, 2);
    }

    #[test]
    fn nothing_is_forwarded_before_a_keyframe_or_after_stop() {
        let mut rewriter = RtpRewriter::new(OUT, 90_000);
        let now = Instant::now();
        assert!(
            rewriter.rewrite(LOW, 1, 1, (true, true), now).is_none(),
            "no layer selected"
        );
        rewriter.switch_to(LOW);
        assert!(
            rewriter.rewrite(LOW, 2, 1, (true, false), now).is_none(),
            "mid-GOP"
        );
        assert!(rewriter.rewrite(LOW, 3, 1, (true, true), now).is_some());
        assert!(
            rewriter.rewrite(HIGH, 3, 1, (true, true), now).is_none(),
            "not selected"
        );
        rewriter.stop();
        assert!(rewriter.rewrite(LOW, 4, 1, (true, false), now).is_none());
    }
}
