//! Echo cancellation (AEC3), noise suppression, gain control (AGC2) and a
//! high-pass filter: WebRTC's audio processing module, on 48 kHz mono.
//!
//! The module works on 10 ms frames; the engine's frames are 20 ms, so each
//! call here processes two halves. The far-end reference must be exactly
//! what goes to the speaker (the mix, after volume), handed to
//! [`AudioProcessor::analyze_render`] as it is queued for playout; the
//! capture side passes its estimate of the loudspeaker-to-microphone delay.
//!
//! `Processor` is `Send + Sync` with `&self` methods: one [`AudioProcessor`]
//! is shared (in an `Arc`) by the playout and capture threads.

use std::sync::atomic::{AtomicU32, Ordering};

use webrtc_audio_processing::Processor;
use webrtc_audio_processing::config::{
    Config, EchoCanceller, GainController, GainController2, HighPassFilter, NoiseSuppression,
    NoiseSuppressionLevel,
};

use crate::frame::SAMPLE_RATE;

/// Samples in one 10 ms processing frame.
pub const APM_FRAME: usize = SAMPLE_RATE as usize / 100;
/// The delay hint is only re-applied when it moves by at least this much:
/// it is a hint (AEC3 estimates the delay itself), not worth a lock per frame.
const DELAY_HINT_STEP_MS: u32 = 5;
/// No delay hint given yet.
const NO_DELAY: u32 = u32::MAX;

/// Which stages run. All on by default; a headset needs no echo canceller,
/// and measurements want the raw signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApmSettings {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub gain_control: bool,
    pub high_pass_filter: bool,
}

impl Default for ApmSettings {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
            high_pass_filter: true,
        }
    }
}

impl ApmSettings {
    /// Every stage off: the processor passes audio through untouched.
    pub const OFF: Self = Self {
        echo_cancellation: false,
        noise_suppression: false,
        gain_control: false,
        high_pass_filter: false,
    };

    pub fn any(self) -> bool {
        self != Self::OFF
    }
}

#[derive(Debug, thiserror::Error)]
#[error("audio processing: {0}")]
pub struct ApmError(String);

/// What the echo canceller reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ApmStats {
    /// Echo return loss enhancement (dB): how much echo the canceller removed.
    pub erle_db: Option<f64>,
    /// Echo return loss (dB): how much the room attenuated the echo.
    pub erl_db: Option<f64>,
    /// The canceller's own estimate of the echo delay.
    pub delay_ms: Option<u32>,
}

#[derive(Debug)]
pub struct AudioProcessor {
    inner: Processor,
    settings: ApmSettings,
    delay_hint_ms: AtomicU32,
}

impl AudioProcessor {
    pub fn new(settings: ApmSettings) -> Result<Self, ApmError> {
        let inner = Processor::new(SAMPLE_RATE).map_err(|e| ApmError(e.to_string()))?;
        let processor = Self {
            inner,
            settings,
            delay_hint_ms: AtomicU32::new(NO_DELAY),
        };
        processor.configure(None);
        Ok(processor)
    }

    pub fn settings(&self) -> ApmSettings {
        self.settings
    }

    fn configure(&self, delay_ms: Option<u16>) {
        let s = self.settings;
        self.inner.set_config(Config {
            echo_canceller: s.echo_cancellation.then_some(EchoCanceller::Full {
                stream_delay_ms: delay_ms,
            }),
            noise_suppression: s.noise_suppression.then(|| NoiseSuppression {
                level: NoiseSuppressionLevel::High,
                ..NoiseSuppression::default()
            }),
            gain_controller: s
                .gain_control
                .then(|| GainController::GainController2(GainController2::default())),
            high_pass_filter: s.high_pass_filter.then(HighPassFilter::default),
            ..Config::default()
        });
    }

    /// Feeds what is about to be played (any multiple of 10 ms) as the echo
    /// canceller's far-end reference. The samples are not changed.
    pub fn analyze_render(&self, samples: &[f32]) -> Result<(), ApmError> {
        if !self.settings.echo_cancellation {
            return Ok(());
        }
        check_length(samples.len())?;
        for chunk in samples.chunks_exact(APM_FRAME) {
            self.inner
                .analyze_render_frame([chunk])
                .map_err(|e| ApmError(e.to_string()))?;
        }
        Ok(())
    }

    /// Cleans captured audio in place (any multiple of 10 ms). `delay_ms` is
    /// the estimated time from a sample being handed to playout to its echo
    /// reaching this capture.
    pub fn process_capture(
        &self,
        samples: &mut [f32],
        delay_ms: Option<u32>,
    ) -> Result<(), ApmError> {
        if !self.settings.any() {
            return Ok(());
        }
        check_length(samples.len())?;
        if let Some(delay) = delay_ms.filter(|_| self.settings.echo_cancellation) {
            let delay = delay.min(u32::from(u16::MAX));
            let previous = self.delay_hint_ms.load(Ordering::Relaxed);
            if previous == NO_DELAY || previous.abs_diff(delay) >= DELAY_HINT_STEP_MS {
                self.delay_hint_ms.store(delay, Ordering::Relaxed);
                self.configure(Some(delay as u16));
            }
        }
        for chunk in samples.chunks_exact_mut(APM_FRAME) {
            self.inner
                .process_capture_frame([chunk])
                .map_err(|e| ApmError(e.to_string()))?;
        }
        Ok(())
    }

    /// The output is muted (microphone off): lets AEC and AGC adapt accordingly.
    pub fn set_capture_muted(&self, muted: bool) {
        self.inner.set_output_will_be_muted(muted);
    }

    pub fn stats(&self) -> ApmStats {
        let stats = self.inner.get_stats();
        ApmStats {
            erle_db: stats.echo_return_loss_enhancement,
            erl_db: stats.echo_return_loss,
            delay_ms: stats.delay_ms,
        }
    }
}

fn check_length(len: usize) -> Result<(), ApmError> {
    if len == 0 || !len.is_multiple_of(APM_FRAME) {
        return Err(ApmError(format!(
            "{len} samples is not a whole number of 10 ms frames"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
