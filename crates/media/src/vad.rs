//! Voice activity from the processed microphone signal: is someone talking?
//! Drives the RTP voice-activity flag and the "you are muted but talking"
//! hint. A frame is voice when it stands clearly above the tracked noise
//! floor (the quietest frame of the last two seconds: speech always has
//! gaps, steady noise does not) and above an absolute level; a short
//! hangover bridges the gaps between syllables.

use crate::frame::level_db;

/// Frames of voice needed before talking is reported (40 ms).
const ONSET_FRAMES: u32 = 2;
/// Frames talking stays on after the last voiced frame (300 ms).
const HANGOVER_FRAMES: u32 = 15;
/// dB above the noise floor that counts as voice.
const ABOVE_FLOOR_DB: f32 = 10.0;
/// Quieter than this is never voice (dBFS).
const MIN_VOICE_DB: f32 = -50.0;
/// Frames over which the noise floor is the minimum (2 s).
const FLOOR_WINDOW: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct VoiceDetector {
    levels_db: std::collections::VecDeque<f32>,
    voiced_run: u32,
    hangover: u32,
}

impl VoiceDetector {
    /// Whether the talker is talking, after this 20 ms frame.
    pub fn process(&mut self, samples: &[f32]) -> bool {
        let level = level_db(samples);
        if self.levels_db.len() == FLOOR_WINDOW {
            self.levels_db.pop_front();
        }
        self.levels_db.push_back(level);
        let floor = self.levels_db.iter().copied().fold(f32::INFINITY, f32::min);
        let voiced = level > MIN_VOICE_DB && level > floor + ABOVE_FLOOR_DB;
        if voiced {
            self.voiced_run += 1;
            if self.voiced_run >= ONSET_FRAMES {
                self.hangover = HANGOVER_FRAMES;
            }
        } else {
            self.voiced_run = 0;
            self.hangover = self.hangover.saturating_sub(1);
        }
        self.hangover > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{AudioFrame, SAMPLES_PER_FRAME};
    use crate::synthetic_audio::{Signal, SyntheticAudio};

    #[test]
    fn speech_is_voice_and_steady_noise_is_not() {
        let mut vad = VoiceDetector::default();
        // Two seconds of steady hiss at -40 dBFS: learned as the floor.
        let mut state = 1u32;
        let mut noise = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (f32::from((state >> 16) as u16) / 65_535.0 - 0.5) * 0.035
        };
        let mut hiss = vec![0.0; SAMPLES_PER_FRAME];
        let mut noisy_voice = 0;
        for i in 0..100 {
            for sample in &mut hiss {
                *sample = noise();
            }
            if vad.process(&hiss) && i > 25 {
                noisy_voice += 1;
            }
        }
        assert_eq!(noisy_voice, 0, "steady noise is not voice");
        // Speech on top of it is.
        let mut voice = SyntheticAudio::new(Signal::Speech, false);
        let mut frame = AudioFrame::silent();
        let mut talking = 0;
        for i in 0..150u64 {
            voice.render(&mut frame, i * 20_000);
            let mixed: Vec<f32> = frame.samples.iter().map(|s| s + noise()).collect();
            if vad.process(&mixed) {
                talking += 1;
            }
        }
        assert!(talking > 90, "speech detected in {talking} of 150 frames");
        // Silence ends it after the hangover.
        let silence = vec![0.0; SAMPLES_PER_FRAME];
        let still: Vec<bool> = (0..30).map(|_| vad.process(&silence)).collect();
        assert!(!still[29]);
    }
}
