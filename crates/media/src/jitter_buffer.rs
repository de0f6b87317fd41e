//! An adaptive jitter buffer for one remote audio track of 20 ms Opus
//! frames. Sans-IO: packets go in with their arrival time, and the playout
//! clock asks for one frame every 20 ms with the current time.
//!
//! The target delay follows the measured jitter: the spread between the
//! fastest and the 97th-percentile packet transit over the last five
//! seconds, plus one frame, plus one more while packets are being lost (so
//! the next packet, carrying the lost one's FEC, is already here when the
//! gap is played), bounded to [`JitterSettings`]. Playout of a talk
//! spurt starts when its first frame is due at the target delay (the
//! fastest transit plus the target), so every spurt begins at the target.
//! Within a spurt the buffer moves without audible glitches: it shrinks by
//! dropping a frame and grows by inserting one only while the talker is
//! quiet. Mid-word it grows only on evidence that it is too short (a packet
//! arrived after its turn: one frame of concealment is inserted), and drops
//! (with the player cross-fading) only when far too long. A missing frame
//! is never waited for: waiting on every loss would add 20 ms per loss.
//! A frame that did not arrive is rebuilt from the next packet's in-band
//! FEC when that packet is already here, and concealed (PLC) otherwise; a
//! gap after quiet audio is the sender's DTX and is filled with comfort
//! noise, not counted as a loss.

use std::collections::{BTreeMap, VecDeque};

use crate::frame::{SAMPLE_RATE, SAMPLES_PER_FRAME};

const FRAME_TICKS: u64 = SAMPLES_PER_FRAME as u64;
const FRAME_MS: f64 = 20.0;
/// Arrivals remembered for the jitter estimate: five seconds of packets.
const HISTORY: usize = 250;
const JITTER_QUANTILE: f64 = 0.97;
/// Packets held at most: a full second beyond the largest target delay.
const MAX_PACKETS: usize = 60;
/// The level may sit this far from the target before the buffer acts.
const HYSTERESIS_MS: f64 = 25.0;
/// So far above the target that a frame is dropped even mid-speech.
const FAR_ABOVE_MS: f64 = 120.0;
/// A packet this far from where playout is means the stream restarted.
const RESYNC_TICKS: u64 = 2 * SAMPLE_RATE as u64;
/// Recent loss above this share keeps a frame of FEC look-ahead.
const LOSSY: f64 = 0.01;
/// Growth owed to late packets is capped (a burst of them is one event).
const MAX_GROW_PENDING: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterSettings {
    pub min_delay_ms: f64,
    pub max_delay_ms: f64,
}

impl Default for JitterSettings {
    fn default() -> Self {
        Self {
            min_delay_ms: 20.0,
            max_delay_ms: 200.0,
        }
    }
}

/// What to play for the next 20 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Nothing to play yet (filling up before the first frame): silence.
    Idle,
    /// Decode this packet.
    Packet(Vec<u8>),
    /// This frame was lost; rebuild it from the FEC data in `next`, the
    /// following packet (which is still decoded normally afterwards).
    Recover { next: Vec<u8> },
    /// This frame was lost and nothing can rebuild it: conceal (PLC).
    Conceal,
    /// The sender is in DTX (quiet, sending nothing): comfort noise.
    Comfort,
    /// Decode this packet and throw the audio away (the buffer is shrinking),
    /// then ask again; the player cross-fades over the cut.
    Discard(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct JitterStats {
    pub packets_received: u64,
    pub frames_played: u64,
    pub frames_recovered: u64,
    pub frames_concealed: u64,
    pub frames_comfort: u64,
    /// Packets that came after their frame had been played: the buffer
    /// ran dry for them (they are discarded, and the buffer grows a frame).
    pub underruns: u64,
    /// Frames dropped (shrinking) and inserted (growing) to follow the target.
    pub frames_dropped: u64,
    pub frames_inserted: u64,
    pub target_delay_ms: f64,
    /// Audio buffered ahead of playout now.
    pub buffered_ms: f64,
    pub jitter_ms: f64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    settings: JitterSettings,
    packets: BTreeMap<u64, Vec<u8>>,
    /// RTP time of the next frame to play; None until playout starts.
    next: Option<u64>,
    highest: Option<u64>,
    transits_us: VecDeque<i64>,
    smoothed_level_ms: f64,
    quiet: bool,
    /// Frames to insert because packets came too late.
    grow_pending: u32,
    /// Share of recently played frames that were missing (smoothed over ~100).
    loss_rate: f64,
    /// Target (ms) and fastest transit (µs) as last computed; cleared by new
    /// arrivals and by crossing the lossy threshold, so the arrivals are
    /// sorted when they change rather than on every frame.
    estimate: Option<(f64, i64)>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(settings: JitterSettings) -> Self {
        Self {
            settings,
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            transits_us: VecDeque::with_capacity(HISTORY),
            smoothed_level_ms: 0.0,
            quiet: false,
            grow_pending: 0,
            loss_rate: 0.0,
            estimate: None,
            stats: JitterStats {
                target_delay_ms: settings.min_delay_ms,
                ..JitterStats::default()
            },
        }
    }

    /// A packet with RTP time `rtp_time` (48 kHz, extended) arrived at `arrival_us`.
    pub fn push(&mut self, rtp_time: u64, payload: Vec<u8>, arrival_us: u64) {
        if payload.is_empty() {
            return;
        }
        self.stats.packets_received += 1;
        if let Some(next) = self.next
            && (rtp_time.abs_diff(next) > RESYNC_TICKS)
        {
            self.restart();
        }
        // Late ones count too: they are the jitter the target must cover.
        let transit = arrival_us as i64 - (rtp_time * 1_000_000 / u64::from(SAMPLE_RATE)) as i64;
        if self.transits_us.len() == HISTORY {
            self.transits_us.pop_front();
        }
        self.transits_us.push_back(transit);
        self.estimate = None;
        if let Some(next) = self.next
            && rtp_time < next
        {
            self.stats.underruns += 1;
            self.grow_pending = (self.grow_pending + 1).min(MAX_GROW_PENDING);
            return;
        }
        self.highest = Some(self.highest.map_or(rtp_time, |h| h.max(rtp_time)));
        self.packets.insert(rtp_time, payload);
        while self.packets.len() > MAX_PACKETS {
            // Hopelessly behind: the oldest go, and playout jumps forward.
            if let Some((oldest, _)) = self.packets.pop_first() {
                self.next = self.next.map(|n| n.max(oldest + FRAME_TICKS));
                self.stats.frames_dropped += 1;
            }
        }
    }

    /// Whether the frame just played was quiet (the player measures it):
    /// quiet moments are where the buffer resizes, and a gap after quiet
    /// audio is DTX rather than loss.
    pub fn note_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The RTP time of the frame the last [`Self::pop`] handed out.
    pub fn playing_rtp_time(&self) -> Option<u64> {
        self.next.map(|n| n.saturating_sub(FRAME_TICKS))
    }

    fn restart(&mut self) {
        self.packets.clear();
        self.next = None;
        self.highest = None;
        self.transits_us.clear();
        self.estimate = None;
        self.smoothed_level_ms = 0.0;
        self.grow_pending = 0;
    }

    /// Recomputes the target delay; returns it (ms) and the fastest transit (µs).
    fn update_target(&mut self) -> (f64, i64) {
        if let Some(estimate) = self.estimate {
            return estimate;
        }
        let mut sorted: Vec<i64> = self.transits_us.iter().copied().collect();
        sorted.sort_unstable();
        let fastest = sorted.first().copied().unwrap_or(0);
        let jitter = sorted.last().map_or(0.0, |_| {
            let high = sorted[((sorted.len() - 1) as f64 * JITTER_QUANTILE).round() as usize];
            (high - fastest) as f64 / 1000.0
        });
        let fec_lookahead = if self.loss_rate > LOSSY {
            FRAME_MS
        } else {
            0.0
        };
        let target = (jitter + FRAME_MS + fec_lookahead)
            .clamp(self.settings.min_delay_ms, self.settings.max_delay_ms);
        self.stats.jitter_ms = jitter;
        self.stats.target_delay_ms = target;
        self.estimate = Some((target, fastest));
        (target, fastest)
    }

    /// The next 20 ms to play, at `now_us` on the playout clock.
    pub fn pop(&mut self, now_us: u64) -> Playout {
        let (target, fastest_transit_us) = self.update_target();
        let Some(next) = self.next else {
            // A talk spurt starts when its first frame is due: sent at its
            // RTP time, through the fastest path, plus the target delay.
            let Some(&first) = self.packets.keys().next() else {
                return if self.stats.frames_played == 0 {
                    Playout::Idle
                } else {
                    self.stats.frames_comfort += 1;
                    Playout::Comfort
                };
            };
            let due = (first * 1_000_000 / u64::from(SAMPLE_RATE)) as i64
                + fastest_transit_us
                + (target * 1000.0) as i64;
            if (now_us as i64) < due {
                return if self.stats.frames_played == 0 {
                    Playout::Idle
                } else {
                    self.stats.frames_comfort += 1;
                    Playout::Comfort
                };
            }
            self.smoothed_level_ms = self.level_ms(first);
            return self.take(first);
        };
        let level = self.level_ms(next);
        self.smoothed_level_ms = 0.9 * self.smoothed_level_ms + 0.1 * level;
        self.stats.buffered_ms = level;
        let above = self.smoothed_level_ms - target;
        if above > HYSTERESIS_MS
            && (self.quiet || above > FAR_ABOVE_MS)
            && let Some(packet) = self.packets.remove(&next)
        {
            self.next = Some(next + FRAME_TICKS);
            self.smoothed_level_ms -= FRAME_MS;
            self.stats.frames_dropped += 1;
            return Playout::Discard(packet);
        }
        if self.grow_pending > 0 && above < HYSTERESIS_MS {
            // Packets came too late: wait one frame longer from now on.
            self.grow_pending -= 1;
            self.smoothed_level_ms += FRAME_MS;
            self.stats.frames_inserted += 1;
            self.stats.frames_played += 1;
            return if self.quiet {
                self.stats.frames_comfort += 1;
                Playout::Comfort
            } else {
                self.stats.frames_concealed += 1;
                Playout::Conceal
            };
        }
        if above < -HYSTERESIS_MS && self.quiet && self.packets.contains_key(&next) {
            // Play 20 ms of comfort noise without moving on.
            self.smoothed_level_ms += FRAME_MS;
            self.stats.frames_inserted += 1;
            self.stats.frames_played += 1;
            return Playout::Comfort;
        }
        self.take(next)
    }

    fn level_ms(&self, next: u64) -> f64 {
        self.highest.map_or(0.0, |highest| {
            (highest + FRAME_TICKS).saturating_sub(next) as f64 * 1000.0 / f64::from(SAMPLE_RATE)
        })
    }

    fn take(&mut self, rtp_time: u64) -> Playout {
        self.next = Some(rtp_time + FRAME_TICKS);
        self.stats.frames_played += 1;
        let packet = self.packets.remove(&rtp_time);
        let lost = packet.is_none() && !self.quiet;
        let was_lossy = self.loss_rate > LOSSY;
        self.loss_rate = 0.99 * self.loss_rate + if lost { 0.01 } else { 0.0 };
        if was_lossy != (self.loss_rate > LOSSY) {
            self.estimate = None;
        }
        if let Some(packet) = packet {
            return Playout::Packet(packet);
        }
        let later_arrived = self.highest.is_some_and(|h| h > rtp_time);
        if later_arrived {
            if let Some(next) = self.packets.get(&(rtp_time + FRAME_TICKS)) {
                self.stats.frames_recovered += 1;
                return Playout::Recover { next: next.clone() };
            }
            self.stats.frames_concealed += 1;
            return Playout::Conceal;
        }
        if self.quiet {
            // DTX: the next talk spurt will start afresh at the target delay.
            self.next = None;
            self.stats.frames_comfort += 1;
            return Playout::Comfort;
        }
        // Mid-word and nothing is here: lost, or late (then `push` sees it
        // and the buffer grows). Conceal and keep to the schedule.
        self.stats.frames_concealed += 1;
        Playout::Conceal
    }
}

#[cfg(test)]
mod tests;
