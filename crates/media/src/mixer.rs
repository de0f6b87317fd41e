//! The receive side of audio: one [`RemoteAudio`] per remote track (jitter
//! buffer plus Opus decoder, FEC and PLC) and the [`AudioMixer`] that sums
//! every track, with a volume per participant, into what the speaker plays.
//! Sans-IO: the playout clock calls [`AudioMixer::mix`] every 20 ms.

use crate::frame::{SAMPLES_PER_FRAME, level_db};
use crate::jitter_buffer::{JitterBuffer, JitterSettings, JitterStats, Playout};
use crate::opus_codec::OpusDecoder;

/// A decoded frame below this level (dBov) counts as quiet.
const QUIET_DBOV: f32 = -50.0;
/// Cross-fade over a cut when the buffer drops a frame mid-word (2.5 ms).
const CROSSFADE: usize = 120;
/// The mix is limited to just below full scale.
const CEILING: f32 = 0.97;
/// Highest per-participant volume (+12 dB).
pub const MAX_VOLUME: f32 = 4.0;

/// One remote audio track on its way to the speaker.
#[derive(Debug)]
pub struct RemoteAudio {
    buffer: JitterBuffer,
    decoder: OpusDecoder,
    discarded: Vec<f32>,
    decode_errors: u64,
}

impl RemoteAudio {
    pub fn new(settings: JitterSettings) -> Result<Self, String> {
        Ok(Self {
            buffer: JitterBuffer::new(settings),
            decoder: OpusDecoder::new().map_err(|e| e.to_string())?,
            discarded: vec![0.0; SAMPLES_PER_FRAME],
            decode_errors: 0,
        })
    }

    pub fn push(&mut self, rtp_time: u64, payload: Vec<u8>, arrival_us: u64) {
        self.buffer.push(rtp_time, payload, arrival_us);
    }

    pub fn stats(&self) -> JitterStats {
        self.buffer.stats()
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// RTP time of the frame last played (for lip sync).
    pub fn playing_rtp_time(&self) -> Option<u64> {
        self.buffer.playing_rtp_time()
    }

    /// Fills `out` (20 ms) with this track's next frame. Returns false when
    /// the track had nothing to play (not started yet).
    pub fn next_frame(&mut self, now_us: u64, out: &mut [f32]) -> bool {
        let out = &mut out[..SAMPLES_PER_FRAME];
        let mut cut = false;
        let playout = loop {
            match self.buffer.pop(now_us) {
                Playout::Discard(packet) => {
                    // Decoded (keeping the decoder's state continuous), not played.
                    if self.decoder.decode(&packet, &mut self.discarded).is_err() {
                        self.decode_errors += 1;
                    }
                    cut = true;
                }
                other => break other,
            }
        };
        let ok = match playout {
            Playout::Idle => {
                out.fill(0.0);
                return false;
            }
            Playout::Packet(packet) => self.decoder.decode(&packet, out).is_ok(),
            Playout::Recover { next } => self.decoder.recover(&next, out).is_ok(),
            Playout::Conceal | Playout::Comfort => self.decoder.conceal(out).is_ok(),
            Playout::Discard(_) => unreachable!("handled above"),
        };
        if !ok {
            self.decode_errors += 1;
            out.fill(0.0);
        }
        if cut {
            // The dropped frame continued smoothly from what was played last:
            // fade from it into the frame that follows the cut.
            for (i, (sample, old)) in out
                .iter_mut()
                .zip(&self.discarded)
                .take(CROSSFADE)
                .enumerate()
            {
                let w = i as f32 / CROSSFADE as f32;
                *sample = *sample * w + old * (1.0 - w);
            }
        }
        self.buffer.note_quiet(level_db(out) < QUIET_DBOV);
        true
    }
}

/// A track in the mix.
#[derive(Debug)]
struct MixedTrack {
    key: String,
    participant: String,
    audio: RemoteAudio,
    /// RTP time of the frame mixed last, and when (Unix µs).
    last_played: Option<(u64, u64)>,
}

impl MixedTrack {
    fn report(&self) -> TrackPlayout {
        TrackPlayout {
            key: self.key.clone(),
            participant: self.participant.clone(),
            jitter: self.audio.stats(),
            decode_errors: self.audio.decode_errors(),
        }
    }
}

/// What one track reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackPlayout {
    pub key: String,
    pub participant: String,
    #[serde(flatten)]
    pub jitter: JitterStats,
    pub decode_errors: u64,
}

#[derive(Debug)]
pub struct AudioMixer {
    settings: JitterSettings,
    tracks: Vec<MixedTrack>,
    /// What removed tracks delivered, for the end-of-call report.
    finished: Vec<TrackPlayout>,
    volumes: Vec<(String, f32)>,
    scratch: Vec<f32>,
    /// Limiter gain, eased back towards 1 after a peak.
    gain: f32,
}

impl AudioMixer {
    pub fn new(settings: JitterSettings) -> Self {
        Self {
            settings,
            tracks: Vec::new(),
            finished: Vec::new(),
            volumes: Vec::new(),
            scratch: vec![0.0; SAMPLES_PER_FRAME],
            gain: 1.0,
        }
    }

    /// A packet of track `key` (from `participant`): the track is added on
    /// its first packet.
    pub fn push(
        &mut self,
        key: &str,
        participant: &str,
        rtp_time: u64,
        payload: Vec<u8>,
        arrival_us: u64,
    ) {
        let index = match self.tracks.iter().position(|t| t.key == key) {
            Some(index) => index,
            None => {
                let Ok(audio) = RemoteAudio::new(self.settings) else {
                    return;
                };
                self.tracks.push(MixedTrack {
                    key: key.to_owned(),
                    participant: participant.to_owned(),
                    audio,
                    last_played: None,
                });
                self.tracks.len() - 1
            }
        };
        self.tracks[index].audio.push(rtp_time, payload, arrival_us);
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(index) = self.tracks.iter().position(|t| t.key == key) {
            let track = self.tracks.remove(index);
            self.finished.retain(|f| f.key != key);
            self.finished.push(track.report());
        }
    }

    /// Volume for everything `participant` sends: 0 (silent) to [`MAX_VOLUME`].
    pub fn set_volume(&mut self, participant: &str, volume: f32) {
        let volume = if volume.is_finite() {
            volume.clamp(0.0, MAX_VOLUME)
        } else {
            1.0
        };
        self.volumes.retain(|(p, _)| p != participant);
        self.volumes.push((participant.to_owned(), volume));
    }

    fn volume(&self, participant: &str) -> f32 {
        self.volumes
            .iter()
            .find(|(p, _)| p == participant)
            .map_or(1.0, |(_, v)| *v)
    }

    /// RTP time of the frame of track `key` mixed last, and when it was
    /// mixed (Unix µs): what lip sync follows.
    pub fn last_played(&self, key: &str) -> Option<(u64, u64)> {
        self.tracks
            .iter()
            .find(|t| t.key == key)
            .and_then(|t| t.last_played)
    }

    /// The next 20 ms of every track summed into `out`.
    pub fn mix(&mut self, now_us: u64, out: &mut [f32]) {
        let out = &mut out[..SAMPLES_PER_FRAME];
        out.fill(0.0);
        for index in 0..self.tracks.len() {
            let volume = self.volume(&self.tracks[index].participant);
            let track = &mut self.tracks[index];
            if track.audio.next_frame(now_us, &mut self.scratch) {
                for (o, s) in out.iter_mut().zip(&self.scratch) {
                    *o += s * volume;
                }
                track.last_played = track.audio.playing_rtp_time().map(|rtp| (rtp, now_us));
            }
        }
        self.limit(out);
    }

    /// Keeps the sum under full scale: the gain drops at once to what the
    /// frame's peak needs and recovers over about 100 ms, ramped within the
    /// frame so it never steps.
    fn limit(&mut self, out: &mut [f32]) {
        let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let allowed = if peak > 0.0 {
            (CEILING / peak).min(1.0)
        } else {
            1.0
        };
        let recovered = self.gain + (1.0 - self.gain) * 0.2;
        let (from, to) = (self.gain, allowed.min(recovered));
        let n = out.len() as f32;
        for (i, sample) in out.iter_mut().enumerate() {
            // Down at once (never over the ceiling); up along a ramp, every
            // step of which stays at or under what this frame allows.
            let g = if to < from {
                to
            } else {
                from + (to - from) * i as f32 / n
            };
            *sample *= g;
        }
        self.gain = to;
    }

    /// Every track mixed so far, playing or removed.
    pub fn stats(&self) -> Vec<TrackPlayout> {
        self.tracks
            .iter()
            .map(MixedTrack::report)
            .chain(
                self.finished
                    .iter()
                    .filter(|f| !self.tracks.iter().any(|t| t.key == f.key))
                    .cloned(),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::AudioFrame;
    use crate::opus_codec::{MAX_PACKET, OpusEncoder, OpusSettings};
    use crate::synthetic_audio::{Signal, SyntheticAudio};

    fn packets(signal: Signal, frames: u64) -> Vec<Vec<u8>> {
        let mut source = SyntheticAudio::new(signal, false);
        let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
        let mut frame = AudioFrame::silent();
        let mut buffer = [0u8; MAX_PACKET];
        (0..frames)
            .map(|i| {
                source.render(&mut frame, i * 20_000);
                let n = encoder.encode(&frame.samples, &mut buffer).unwrap().len;
                buffer[..n].to_vec()
            })
            .collect()
    }

    #[test]
    fn two_talkers_are_mixed_with_their_volumes_and_never_clip() {
        let a = packets(Signal::Speech, 100);
        let b = packets(
            Signal::Sweep {
                from_hz: 200.0,
                to_hz: 2000.0,
                period_s: 1.0,
            },
            100,
        );
        let mut mixer = AudioMixer::new(JitterSettings::default());
        mixer.set_volume("bob", MAX_VOLUME * 10.0); // clamped to +12 dB
        let mut out = vec![0.0; SAMPLES_PER_FRAME];
        let mut peak = 0.0f32;
        let mut loud = 0;
        for k in 0..100u64 {
            let now = k * 20_000;
            mixer.push("alice/mic", "alice", k * 960, a[k as usize].clone(), now);
            mixer.push("bob/mic", "bob", k * 960, b[k as usize].clone(), now);
            mixer.mix(now + 5_000, &mut out);
            peak = peak.max(out.iter().fold(0.0, |m, s| m.max(s.abs())));
            if level_db(&out) > -20.0 {
                loud += 1;
            }
        }
        assert!(peak <= CEILING + 1e-6, "peak {peak}");
        assert!(
            loud > 50,
            "the mix carries both talkers ({loud} loud frames)"
        );
        let stats = mixer.stats();
        assert_eq!(stats.len(), 2);
        assert!(
            stats
                .iter()
                .all(|s| s.jitter.frames_played > 90 && s.decode_errors == 0)
        );

        // Muting bob leaves alice alone, at her level.
        mixer.set_volume("bob", 0.0);
        mixer.remove("alice/mic");
        let now = 100 * 20_000;
        mixer.push("bob/mic", "bob", 100 * 960, b[0].clone(), now);
        mixer.mix(now + 5_000, &mut out);
        assert!(out.iter().all(|&s| s == 0.0));
    }
}
