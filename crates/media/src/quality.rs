//! Objective speech-quality measures for tests and benchmarks.
//!
//! [`envelope_correlation`] is the measure Parley reports: the Pearson
//! correlation between the log-energy envelopes (10 ms windows, 1 ms hop,
//! floored at -60 dB) of the source and the received speech, after aligning
//! them at the lag that maximises it. Intelligibility rides mostly on that
//! envelope (syllable onsets, pauses); codec artefacts that keep it intact
//! score near 1.0, while gaps, clicks and smeared syllables pull it down.
//! It is a proxy, not a listening test: it says nothing about timbre.

const WINDOW: usize = 480;
const HOP: usize = 48;
const FLOOR_DB: f64 = -60.0;

fn envelope(samples: &[f32]) -> Vec<f64> {
    samples
        .windows(WINDOW)
        .step_by(HOP)
        .map(|w| {
            let energy =
                w.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / WINDOW as f64;
            (10.0 * energy.max(1e-12).log10()).max(FLOOR_DB)
        })
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let mean_a = a.iter().sum::<f64>() / n as f64;
    let mean_b = b.iter().sum::<f64>() / n as f64;
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a == 0.0 || var_b == 0.0 {
        return 0.0;
    }
    cov / (var_a.sqrt() * var_b.sqrt())
}

/// The measure and the delay it found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvelopeScore {
    /// Pearson correlation of the aligned envelopes, -1 to 1.
    pub correlation: f64,
    /// How far `received` lags `source`, in samples (1 ms resolution).
    pub lag_samples: usize,
}

/// Scores `received` against `source`, searching lags up to `max_lag_samples`.
pub fn envelope_correlation(
    source: &[f32],
    received: &[f32],
    max_lag_samples: usize,
) -> EnvelopeScore {
    let reference = envelope(source);
    let degraded = envelope(received);
    let max_lag = max_lag_samples / HOP;
    let mut best = EnvelopeScore {
        correlation: f64::NEG_INFINITY,
        lag_samples: 0,
    };
    for lag in 0..=max_lag.min(degraded.len().saturating_sub(2)) {
        let correlation = pearson(&reference, &degraded[lag..]);
        if correlation > best.correlation {
            best = EnvelopeScore {
                correlation,
                lag_samples: lag * HOP,
            };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::AudioFrame;
    use crate::synthetic_audio::{Signal, SyntheticAudio};

    fn speech(seconds: u64) -> Vec<f32> {
        let mut source = SyntheticAudio::new(Signal::Speech, false);
        let mut frame = AudioFrame::silent();
        let mut all = Vec::new();
        for i in 0..seconds * 50 {
            source.render(&mut frame, i * 20_000);
            all.extend_from_slice(&frame.samples);
        }
        all
    }

    #[test]
    fn identical_speech_scores_one_and_delay_is_found() {
        let source = speech(3);
        let mut delayed = vec![0.0; 960];
        delayed.extend_from_slice(&source);
        let score = envelope_correlation(&source, &delayed, 4800);
        assert!(score.correlation > 0.999, "{score:?}");
        assert_eq!(score.lag_samples, 960);
    }

    #[test]
    fn silence_where_speech_was_lowers_the_score() {
        let source = speech(3);
        let mut gappy = source.clone();
        for chunk in gappy.chunks_mut(9600) {
            chunk[..2400].fill(0.0); // 50 ms missing every 200 ms
        }
        let score = envelope_correlation(&source, &gappy, 0);
        assert!(score.correlation < 0.8, "{score:?}");
    }
}
