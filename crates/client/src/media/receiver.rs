//! Decoding and checking what arrives on one remote track: the QA half of
//! `parley-cli --fake-media`. Video frames carry a stamp (frame number and
//! capture time) drawn by the synthetic source, so order and capture→decode
//! latency can be verified on every frame.

use parley_media::frame::{FramePool, SAMPLES_PER_FRAME, VideoFrame};
use parley_media::h264::H264Decoder;
use parley_media::jitter_buffer::JitterStats;
use parley_media::stamp::read_stamp;
use serde::Serialize;

/// Latency samples kept per track (a 30 fps track fills this in 9 minutes;
/// later samples replace old ones round-robin, keeping the percentiles recent).
const MAX_LATENCY_SAMPLES: usize = 16_384;

/// Frames seen at one resolution.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResolutionCount {
    pub width: u32,
    pub height: u32,
    pub frames: u64,
}

/// Capture→decode latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
}

/// What one remote video track delivered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VideoReport {
    pub frames_received: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    /// Frames whose stamp could be read.
    pub stamps_read: u64,
    /// Stamps whose frame number went back: frames delivered out of order.
    pub stamps_out_of_order: u64,
    /// Stamps repeating the previous frame number: the same picture again
    /// from another layer, as happens once when moving down a layer.
    pub stamps_repeated: u64,
    /// Frame-number gaps: frames the publisher sent but we never decoded
    /// (loss, or a layer switch that skipped frames).
    pub frames_skipped: u64,
    pub width: u32,
    pub height: u32,
    pub resolutions: Vec<ResolutionCount>,
    pub latency: Option<LatencySummary>,
}

/// What one remote audio track delivered.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct AudioReport {
    pub frames_received: u64,
    pub decode_errors: u64,
    /// 20 ms frames missing between received ones (loss, or DTX silence).
    pub frames_missing: u64,
    /// The jitter buffer and playout of this track.
    pub playout: Option<JitterStats>,
}

/// What a decoded video frame showed, for the caller's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    /// The resolution differs from the previous frame's.
    pub resized: bool,
}

#[derive(Debug)]
pub struct VideoReceiver {
    decoder: H264Decoder,
    pool: FramePool,
    report: VideoReport,
    last_frame_number: Option<u32>,
    latencies_us: Vec<i64>,
    next_latency_slot: usize,
}

impl VideoReceiver {
    pub fn new() -> Result<Self, String> {
        let pool = FramePool::new(4);
        let decoder = H264Decoder::new(pool.clone()).map_err(|e| e.to_string())?;
        Ok(Self {
            decoder,
            pool,
            report: VideoReport {
                frames_received: 0,
                frames_decoded: 0,
                decode_errors: 0,
                stamps_read: 0,
                stamps_out_of_order: 0,
                stamps_repeated: 0,
                frames_skipped: 0,
                width: 0,
                height: 0,
                resolutions: Vec::new(),
                latency: None,
            },
            last_frame_number: None,
            latencies_us: Vec::new(),
            next_latency_slot: 0,
        })
    }

    /// Whether the decoder lost its reference and a keyframe should be requested.
    pub fn needs_keyframe(&self) -> bool {
        self.decoder.needs_keyframe()
    }

    /// Decodes one access unit and shows it at once, at `now_us` (Unix µs).
    pub fn handle_frame(&mut self, data: &[u8], contiguous: bool, now_us: u64) -> Option<Decoded> {
        let (decoded, frame) = self.decode(data, contiguous)?;
        self.present(frame, now_us);
        Some(decoded)
    }

    /// Decodes one access unit; the picture is shown later with [`Self::present`].
    pub fn decode(&mut self, data: &[u8], contiguous: bool) -> Option<(Decoded, VideoFrame)> {
        self.report.frames_received += 1;
        if !contiguous {
            self.decoder.note_loss();
        }
        let frame = match self.decoder.decode(data) {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(_) => {
                self.report.decode_errors += 1;
                return None;
            }
        };
        self.report.frames_decoded += 1;
        let (width, height) = (frame.width(), frame.height());
        let resized = (width, height) != (self.report.width, self.report.height);
        self.report.width = width;
        self.report.height = height;
        match self
            .report
            .resolutions
            .iter_mut()
            .find(|r| (r.width, r.height) == (width, height))
        {
            Some(entry) => entry.frames += 1,
            None => self.report.resolutions.push(ResolutionCount {
                width,
                height,
                frames: 1,
            }),
        }
        Some((
            Decoded {
                width,
                height,
                resized,
            },
            frame,
        ))
    }

    /// Shows a decoded picture at `now_us`: its stamp is checked and its
    /// capture-to-screen latency recorded; the buffer goes back to the pool.
    pub fn present(&mut self, frame: VideoFrame, now_us: u64) {
        if let Some(stamp) = read_stamp(&frame) {
            self.report.stamps_read += 1;
            match self.last_frame_number {
                Some(last) if stamp.frame_number == last => self.report.stamps_repeated += 1,
                Some(last) if stamp.frame_number < last => self.report.stamps_out_of_order += 1,
                Some(last) => {
                    self.report.frames_skipped += u64::from(stamp.frame_number - last - 1);
                }
                None => {}
            }
            self.last_frame_number = Some(
                self.last_frame_number
                    .map_or(stamp.frame_number, |l| l.max(stamp.frame_number)),
            );
            self.record_latency(stamp.age_us(now_us));
        }
        self.pool.recycle(frame);
    }

    fn record_latency(&mut self, age_us: i64) {
        if self.latencies_us.len() < MAX_LATENCY_SAMPLES {
            self.latencies_us.push(age_us);
        } else {
            self.latencies_us[self.next_latency_slot] = age_us;
            self.next_latency_slot = (self.next_latency_slot + 1) % MAX_LATENCY_SAMPLES;
        }
    }

    pub fn report(&self) -> VideoReport {
        let mut report = self.report.clone();
        report.latency = summarize(&self.latencies_us);
        report
    }
}

fn summarize(samples_us: &[i64]) -> Option<LatencySummary> {
    if samples_us.is_empty() {
        return None;
    }
    let mut sorted = samples_us.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| {
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index] as f64 / 1000.0
    };
    Some(LatencySummary {
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: at(1.0),
        samples: sorted.len(),
    })
}

/// Counts what arrives on one remote audio track; decoding and playout
/// happen in the mixer ([`parley_media::mixer`]), on the playout clock.
#[derive(Debug, Default)]
pub struct AudioReceiver {
    report: AudioReport,
    last_rtp_time: Option<u64>,
}

impl AudioReceiver {
    /// Notes one Opus packet with RTP time `rtp_time` (48 kHz).
    pub fn handle_frame(&mut self, rtp_time: u64) {
        self.report.frames_received += 1;
        if let Some(last) = self.last_rtp_time
            && rtp_time > last
        {
            let frames = (rtp_time - last) / SAMPLES_PER_FRAME as u64;
            self.report.frames_missing += frames.saturating_sub(1);
        }
        self.last_rtp_time = Some(self.last_rtp_time.map_or(rtp_time, |l| l.max(rtp_time)));
    }

    pub fn report(&self, playout: Option<JitterStats>, decode_errors: u64) -> AudioReport {
        AudioReport {
            decode_errors,
            playout,
            ..self.report.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let samples: Vec<i64> = (1..=100).map(|ms| ms * 1000).collect();
        let summary = summarize(&samples).unwrap();
        assert_eq!(summary.samples, 100);
        assert!((summary.p50_ms - 50.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.p95_ms - 95.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 1e-9);
        assert!(summarize(&[]).is_none());
    }
}
