//! The echo canceller against a simulated room: the far end's speech is
//! played, reaches the microphone through a delayed, attenuated and
//! reverberant echo path, and the near end sometimes talks over it.

use super::*;
use crate::frame::{AudioFrame, SAMPLES_PER_FRAME};
use crate::quality::envelope_correlation;
use crate::synthetic_audio::{Signal, SyntheticAudio};

const ECHO_DELAY_MS: usize = 60;
const ECHO_GAIN: f32 = 0.3;
/// Reverberation: an exponentially decaying tail 100 ms long.
const REVERB_MS: usize = 100;

fn speech(seconds: f32, skip_seconds: f32) -> Vec<f32> {
    let mut voice = SyntheticAudio::new(Signal::Speech, false);
    let mut frame = AudioFrame::silent();
    let frames = |s: f32| (s * 50.0) as u64;
    let mut out = Vec::new();
    for i in 0..frames(skip_seconds) + frames(seconds) {
        voice.render(&mut frame, i * 20_000);
        if i >= frames(skip_seconds) {
            out.extend_from_slice(&frame.samples);
        }
    }
    out
}

/// A deterministic room impulse response: the direct echo, then a sparse,
/// decaying tail of reflections with alternating signs.
fn room_response() -> Vec<f32> {
    let delay = ECHO_DELAY_MS * 48;
    let tail = REVERB_MS * 48;
    let mut response = vec![0.0; delay + tail];
    response[delay] = ECHO_GAIN;
    let mut state = 0x2545_f491_u32;
    for i in (1..tail).step_by(37) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let sign = if state & 1 == 0 { 1.0 } else { -1.0 };
        let decay = (-(i as f32) / (tail as f32 / 5.0)).exp();
        response[delay + i] = sign * ECHO_GAIN * 0.35 * decay;
    }
    response
}

fn convolve(signal: &[f32], response: &[f32]) -> Vec<f32> {
    let taps: Vec<(usize, f32)> = response
        .iter()
        .enumerate()
        .filter(|(_, h)| **h != 0.0)
        .map(|(i, h)| (i, *h))
        .collect();
    (0..signal.len())
        .map(|n| {
            taps.iter()
                .filter(|(i, _)| *i <= n)
                .map(|(i, h)| h * signal[n - i])
                .sum()
        })
        .collect()
}

fn energy_db(samples: &[f32]) -> f64 {
    let energy =
        samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
    10.0 * energy.max(1e-15).log10()
}

struct Run {
    mic: Vec<f32>,
    out: Vec<f32>,
    stats: ApmStats,
}

/// Plays `far` and captures `echo + near` through the processor, 20 ms at a time.
fn run(settings: ApmSettings, far: &[f32], near: &[f32], delay_hint: Option<u32>) -> Run {
    let echo = convolve(far, &room_response());
    let mic: Vec<f32> = echo.iter().zip(near).map(|(e, n)| e + n).collect();
    let apm = AudioProcessor::new(settings).unwrap();
    let mut out = Vec::with_capacity(mic.len());
    let mut frame = vec![0.0; SAMPLES_PER_FRAME];
    for (render, capture) in far
        .chunks_exact(SAMPLES_PER_FRAME)
        .zip(mic.chunks_exact(SAMPLES_PER_FRAME))
    {
        apm.analyze_render(render).unwrap();
        frame.copy_from_slice(capture);
        apm.process_capture(&mut frame, delay_hint).unwrap();
        out.extend_from_slice(&frame);
    }
    Run {
        mic,
        out,
        stats: apm.stats(),
    }
}

/// Echo cancellation alone, so the measurement is of the canceller (AGC
/// would amplify what is left, NS would take credit for it).
const AEC_ONLY: ApmSettings = ApmSettings {
    echo_cancellation: true,
    noise_suppression: false,
    gain_control: false,
    high_pass_filter: true,
};

#[test]
fn echo_is_cancelled_by_at_least_20_db_after_convergence() {
    let far = speech(12.0, 0.0);
    let silence = vec![0.0; far.len()];
    for hint in [Some(ECHO_DELAY_MS as u32), None] {
        let run = run(AEC_ONLY, &far, &silence, hint);
        // Converged after 4 s; measure over the rest.
        let settled = 4 * 48_000;
        let erle = energy_db(&run.mic[settled..]) - energy_db(&run.out[settled..]);
        eprintln!(
            "ERLE with delay hint {hint:?}: {erle:.1} dB (the canceller's own estimate: {:?})",
            run.stats.erle_db
        );
        assert!(erle >= 20.0, "ERLE {erle:.1} dB with hint {hint:?}");
    }
}

#[test]
fn near_end_speech_survives_double_talk() {
    let far = speech(12.0, 0.0);
    // The near end talks from 6 s to 10 s, in another part of the script.
    let near_voice = speech(12.0, 7.3);
    let talk = 6 * 48_000..10 * 48_000;
    let near: Vec<f32> = near_voice
        .iter()
        .enumerate()
        .map(|(i, s)| if talk.contains(&i) { s * 0.8 } else { 0.0 })
        .collect();
    let run = run(AEC_ONLY, &far, &near, Some(ECHO_DELAY_MS as u32));
    let kept = energy_db(&run.out[talk.clone()]) - energy_db(&near[talk.clone()]);
    let likeness = envelope_correlation(&near[talk.clone()], &run.out[talk.clone()], 960);
    let echo_likeness = envelope_correlation(
        &convolve(&far, &room_response())[talk.clone()],
        &run.out[talk.clone()],
        960,
    );
    eprintln!(
        "double talk: near-end level kept within {kept:.1} dB, envelope correlation with the \
         near end {:.3}, with the echo {:.3}",
        likeness.correlation, echo_likeness.correlation
    );
    assert!(kept > -6.0, "near end attenuated by {kept:.1} dB");
    // The suppressor still works per band during double talk, so the
    // envelope is not the near end's exactly; it must clearly follow it.
    assert!(likeness.correlation > 0.6, "{likeness:?}");
    assert!(
        likeness.correlation > echo_likeness.correlation + 0.5,
        "the output follows the near end, not the echo"
    );
}

#[test]
fn switched_off_passes_audio_through() {
    let apm = AudioProcessor::new(ApmSettings::OFF).unwrap();
    let original: Vec<f32> = (0..960).map(|i| ((i as f32) * 0.05).sin() * 0.2).collect();
    let mut frame = original.clone();
    apm.analyze_render(&original).unwrap();
    apm.process_capture(&mut frame, Some(40)).unwrap();
    assert_eq!(frame, original);
}

#[test]
fn frames_that_are_not_whole_10_ms_are_errors() {
    let apm = AudioProcessor::new(ApmSettings::default()).unwrap();
    assert!(apm.analyze_render(&[0.0; 500]).is_err());
    assert!(apm.process_capture(&mut [0.0; 0], None).is_err());
    assert!(apm.process_capture(&mut [0.0; 960], None).is_ok());
}
