//! Synthetic microphones: a speech-like voice, tone sweeps, or a WAV file,
//! each carrying wall-clock markers so the far end can measure latency.
//!
//! Markers: at every whole second of wall-clock time the source plays a
//! 10 ms chirp (1 → 4 kHz, windowed) in place of the signal. A receiver on
//! the same clock runs [`MarkerDetector`] over what it plays out; the offset
//! of a detected chirp from the whole second before it is the capture-to-
//! playout latency (unambiguous up to one second).

use std::f32::consts::PI;
use std::path::Path;

use crate::frame::{AudioFrame, SAMPLE_RATE, SAMPLES_PER_FRAME};

/// Marker length: 10 ms.
pub const MARKER_SAMPLES: usize = SAMPLE_RATE as usize / 100;
const MARKER_AMPLITUDE: f32 = 0.5;

/// The marker waveform (a Hann-windowed linear chirp).
pub fn marker_template() -> Vec<f32> {
    let n = MARKER_SAMPLES as f32;
    let (f0, f1) = (1000.0f32, 4000.0f32);
    (0..MARKER_SAMPLES)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            let duration = n / SAMPLE_RATE as f32;
            let phase = 2.0 * PI * (f0 * t + (f1 - f0) * t * t / (2.0 * duration));
            let window = 0.5 - 0.5 * (2.0 * PI * i as f32 / (n - 1.0)).cos();
            MARKER_AMPLITUDE * window * phase.sin()
        })
        .collect()
}

/// What the synthetic microphone says.
#[derive(Debug, Clone)]
pub enum Signal {
    /// Voiced syllables with formants, consonant noise and pauses.
    Speech,
    /// A logarithmic sweep from `from_hz` to `to_hz`, repeating every `period_s`.
    Sweep {
        from_hz: f32,
        to_hz: f32,
        period_s: f32,
    },
    /// A WAV file, looped (any rate and channel count; mixed to mono, resampled to 48 kHz).
    Samples(Vec<f32>),
}

/// Why a WAV file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: hound::Error,
    },
    #[error("{0} holds no audio")]
    Empty(String),
    #[error("resampling failed: {0}")]
    Resample(String),
}

/// Loads a WAV file as 48 kHz mono.
pub fn load_wav(path: &Path) -> Result<Vec<f32>, WavError> {
    let read_err = |source| WavError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut reader = hound::WavReader::open(path).map_err(read_err)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
        }
    }
    .map_err(read_err)?;
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    if mono.is_empty() {
        return Err(WavError::Empty(path.display().to_string()));
    }
    if spec.sample_rate == SAMPLE_RATE {
        return Ok(mono);
    }
    crate::resample::to_48k(&mono, spec.sample_rate).map_err(|e| WavError::Resample(e.to_string()))
}

/// Generates 20 ms frames of the chosen signal; time is passed in.
#[derive(Debug)]
pub struct SyntheticAudio {
    signal: Signal,
    markers: bool,
    marker: Vec<f32>,
    /// Samples generated so far.
    position: u64,
    /// Progress through a marker that started in an earlier frame.
    marker_progress: Option<usize>,
    /// Capture time of sample 0. Marker placement follows the sample count
    /// from here, so jitter in callers' timestamps cannot skip or repeat a second.
    origin_us: Option<u64>,
    voice: Voice,
}

impl SyntheticAudio {
    pub fn new(signal: Signal, markers: bool) -> Self {
        Self {
            signal,
            markers,
            marker: marker_template(),
            position: 0,
            marker_progress: None,
            origin_us: None,
            voice: Voice::new(),
        }
    }

    /// Fills `frame` with the next 20 ms, captured at `captured_at_us`.
    pub fn render(&mut self, frame: &mut AudioFrame, captured_at_us: u64) {
        frame.captured_at_us = captured_at_us;
        frame.samples.resize(SAMPLES_PER_FRAME, 0.0);
        for (i, sample) in frame.samples.iter_mut().enumerate() {
            let n = self.position + i as u64;
            *sample = match &self.signal {
                Signal::Speech => self.voice.next(),
                Signal::Sweep {
                    from_hz,
                    to_hz,
                    period_s,
                } => sweep(n, *from_hz, *to_hz, *period_s),
                Signal::Samples(samples) => samples[(n % samples.len() as u64) as usize],
            };
        }
        let origin = *self.origin_us.get_or_insert(captured_at_us);
        let frame_start_us = origin + self.position * 1_000_000 / u64::from(SAMPLE_RATE);
        self.position += SAMPLES_PER_FRAME as u64;
        if self.markers {
            self.overlay_marker(frame, frame_start_us);
        }
    }

    fn overlay_marker(&mut self, frame: &mut AudioFrame, captured_at_us: u64) {
        let mut start = 0;
        if let Some(progress) = self.marker_progress.take() {
            let rest = &self.marker[progress..];
            let n = rest.len().min(SAMPLES_PER_FRAME);
            frame.samples[..n].copy_from_slice(&rest[..n]);
            if progress + n < MARKER_SAMPLES {
                self.marker_progress = Some(progress + n);
            }
            start = n;
        }
        // A whole second of wall-clock time inside this frame?
        let frame_end_us = captured_at_us + 20_000;
        let next_second = captured_at_us.div_ceil(1_000_000) * 1_000_000;
        if next_second < frame_end_us {
            let offset =
                ((next_second - captured_at_us) * u64::from(SAMPLE_RATE) / 1_000_000) as usize;
            let offset = offset.max(start);
            let n = (SAMPLES_PER_FRAME - offset).min(MARKER_SAMPLES);
            frame.samples[offset..offset + n].copy_from_slice(&self.marker[..n]);
            if n < MARKER_SAMPLES {
                self.marker_progress = Some(n);
            }
        }
    }
}

fn sweep(n: u64, from_hz: f32, to_hz: f32, period_s: f32) -> f32 {
    let period = (period_s * SAMPLE_RATE as f32) as u64;
    let t = (n % period.max(1)) as f32 / SAMPLE_RATE as f32;
    let ratio = to_hz / from_hz;
    let k = ratio.ln() / period_s;
    // Phase of an exponential sweep: 2π f0 (e^{kt} - 1) / k.
    let phase = 2.0 * PI * from_hz * ((k * t).exp() - 1.0) / k;
    0.3 * phase.sin()
}

/// Formant frequencies (Hz) of five vowels.
const VOWELS: [[f32; 3]; 5] = [
    [730.0, 1090.0, 2440.0],
    [530.0, 1840.0, 2480.0],
    [270.0, 2290.0, 3010.0],
    [570.0, 840.0, 2410.0],
    [300.0, 870.0, 2240.0],
];

/// A two-pole resonator.
#[derive(Debug, Clone, Copy, Default)]
struct Resonator {
    a1: f32,
    a2: f32,
    gain: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn tune(&mut self, hz: f32, bandwidth: f32) {
        let r = (-PI * bandwidth / SAMPLE_RATE as f32).exp();
        self.a1 = 2.0 * r * (2.0 * PI * hz / SAMPLE_RATE as f32).cos();
        self.a2 = -r * r;
        self.gain = 1.0 - r;
    }

    fn step(&mut self, x: f32) -> f32 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// A crude but deterministic talker: syllables of a vowel with a pitch
/// contour, fricative onsets, and pauses between words.
#[derive(Debug)]
struct Voice {
    rng: u64,
    sample: u64,
    /// Samples left in the current segment, and whether it is voiced.
    remaining: u64,
    voiced: bool,
    segment_len: u64,
    pitch_hz: f32,
    phase: f32,
    formants: [Resonator; 3],
}

impl Voice {
    fn new() -> Self {
        Self {
            rng: 0x2545_F491_4F6C_DD1D,
            sample: 0,
            remaining: 0,
            voiced: false,
            segment_len: 1,
            pitch_hz: 140.0,
            phase: 0.0,
            formants: [Resonator::default(); 3],
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn next(&mut self) -> f32 {
        if self.remaining == 0 {
            self.start_segment();
        }
        self.remaining -= 1;
        self.sample += 1;
        if !self.voiced {
            return 0.0;
        }
        let progress = 1.0 - self.remaining as f32 / self.segment_len as f32;
        // Syllable envelope: fast attack, slow decay.
        let envelope = (progress * 12.0).min(1.0) * (1.0 - progress).powf(0.6);
        let pitch = self.pitch_hz * (1.0 + 0.15 * (2.0 * PI * progress).sin());
        self.phase += pitch / SAMPLE_RATE as f32;
        let pulse = if self.phase >= 1.0 {
            self.phase -= 1.0;
            1.0
        } else {
            0.0
        };
        let noise = (self.random() % 2001) as f32 / 1000.0 - 1.0;
        // Fricative noise at the onset, voicing after it.
        let excitation = if progress < 0.12 {
            0.3 * noise
        } else {
            pulse * 8.0 + 0.02 * noise
        };
        let voiced: f32 = self.formants.iter_mut().map(|f| f.step(excitation)).sum();
        (envelope * voiced * 2.5).clamp(-0.95, 0.95)
    }

    fn start_segment(&mut self) {
        let ms = |v: u64| v * u64::from(SAMPLE_RATE) / 1000;
        self.voiced = !self.voiced || self.random().is_multiple_of(4);
        if self.voiced {
            self.segment_len = ms(140 + self.random() % 160);
            let vowel = VOWELS[(self.random() % VOWELS.len() as u64) as usize];
            for (resonator, hz) in self.formants.iter_mut().zip(vowel) {
                resonator.tune(hz, 90.0);
            }
            self.pitch_hz = 110.0 + (self.random() % 90) as f32;
        } else {
            // Short gaps between syllables, now and then a long pause.
            self.segment_len = if self.random().is_multiple_of(6) {
                ms(700)
            } else {
                ms(40 + self.random() % 120)
            };
        }
        self.remaining = self.segment_len;
    }
}

/// Finds markers in played-out audio and reports their latency.
#[derive(Debug)]
pub struct MarkerDetector {
    template: Vec<f32>,
    template_energy: f32,
    /// The last marker's worth of samples plus the current block.
    window: Vec<f32>,
    /// Wall-clock time of `window[0]`, in microseconds.
    window_start_us: f64,
    /// Where the next block should start if playout is continuous.
    expected_next_us: f64,
    last_detection_us: f64,
}

/// Playout timestamps may wander this far (µs) from contiguous before the
/// detector treats it as a gap.
const MAX_TIMESTAMP_JITTER_US: f64 = 40_000.0;

/// Normalised correlation above which a chirp counts as found.
const DETECTION_THRESHOLD: f32 = 0.6;

impl Default for MarkerDetector {
    fn default() -> Self {
        let template = marker_template();
        let template_energy = template.iter().map(|v| v * v).sum::<f32>().sqrt();
        Self {
            template,
            template_energy,
            window: Vec::new(),
            window_start_us: 0.0,
            expected_next_us: f64::NAN,
            last_detection_us: f64::NEG_INFINITY,
        }
    }
}

impl MarkerDetector {
    /// Feeds samples played out starting at `first_sample_us` (wall clock);
    /// returns the latency, in microseconds, of every marker found.
    pub fn push(&mut self, samples: &[f32], first_sample_us: u64) -> Vec<u64> {
        let us_per_sample = 1e6 / f64::from(SAMPLE_RATE);
        // A jump in playout time (a gap, a device clock drifting away) starts
        // the window afresh, so drift never accumulates into the latency.
        // Smaller differences are the caller waking late on a busy machine:
        // the samples are still contiguous, so the window goes on.
        let first = first_sample_us as f64;
        if self.window.is_empty() || (first - self.expected_next_us).abs() > MAX_TIMESTAMP_JITTER_US
        {
            self.window.clear();
            self.window_start_us = first;
        }
        self.expected_next_us = first + samples.len() as f64 * us_per_sample;
        self.window.extend_from_slice(samples);
        let len = self.template.len();
        let mut found = Vec::new();
        let mut best: Option<(usize, f32)> = None;
        let searchable = self.window.len().saturating_sub(len);
        for start in 0..searchable {
            let slice = &self.window[start..start + len];
            let energy = slice.iter().map(|v| v * v).sum::<f32>().sqrt();
            if energy < 1e-3 {
                continue;
            }
            let dot: f32 = slice.iter().zip(&self.template).map(|(a, b)| a * b).sum();
            let score = dot / (energy * self.template_energy);
            if score > DETECTION_THRESHOLD && best.is_none_or(|(_, s)| score > s) {
                best = Some((start, score));
            }
        }
        if let Some((start, _)) = best {
            let at_us = self.window_start_us + start as f64 * us_per_sample;
            // One detection per marker: ignore the same chirp seen again.
            if at_us - self.last_detection_us > 500_000.0 {
                self.last_detection_us = at_us;
                let at = at_us.round() as u64;
                found.push(at % 1_000_000);
            }
        }
        // Keep a marker's worth of tail so a chirp split across blocks is found.
        let keep = len.min(self.window.len());
        let drop = self.window.len() - keep;
        self.window.drain(..drop);
        self.window_start_us += drop as f64 * us_per_sample;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_seconds(source: &mut SyntheticAudio, start_us: u64, seconds: u64) -> Vec<f32> {
        let mut frame = AudioFrame::silent();
        let mut all = Vec::new();
        for i in 0..seconds * 50 {
            source.render(&mut frame, start_us + i * 20_000);
            all.extend_from_slice(&frame.samples);
        }
        all
    }

    #[test]
    fn speech_has_syllables_and_pauses() {
        let mut source = SyntheticAudio::new(Signal::Speech, false);
        let audio = render_seconds(&mut source, 0, 5);
        let frames: Vec<f32> = audio
            .chunks(SAMPLES_PER_FRAME)
            .map(|f| (f.iter().map(|v| v * v).sum::<f32>() / f.len() as f32).sqrt())
            .collect();
        let loud = frames.iter().filter(|&&rms| rms > 0.02).count();
        let silent = frames.iter().filter(|&&rms| rms < 1e-4).count();
        assert!(
            loud > 80 && silent > 30,
            "loud {loud}, silent {silent} of {}",
            frames.len()
        );
        assert!(audio.iter().all(|v| v.abs() < 1.0));
    }

    #[test]
    fn markers_measure_latency_through_a_delay() {
        let start_us = 1_700_000_000_000_000 + 730_000;
        let mut source = SyntheticAudio::new(Signal::Speech, true);
        let captured = render_seconds(&mut source, start_us, 4);
        // Play out 87.5 ms later, in blocks of 10 ms.
        let delay_us = 87_500;
        let mut detector = MarkerDetector::default();
        let mut latencies = Vec::new();
        for (i, block) in captured.chunks(480).enumerate() {
            let played_at = start_us + delay_us + i as u64 * 10_000;
            latencies.extend(detector.push(block, played_at));
        }
        assert_eq!(latencies.len(), 4, "{latencies:?}");
        for latency in latencies {
            assert!(latency.abs_diff(delay_us) <= 100, "{latency}");
        }
    }

    #[test]
    fn jittery_capture_times_neither_skip_nor_repeat_a_marker() {
        let mut source = SyntheticAudio::new(Signal::Speech, true);
        let mut frame = AudioFrame::silent();
        let mut detector = MarkerDetector::default();
        let start_us = 1_700_000_000_000_000 + 500_000;
        let mut found = Vec::new();
        for i in 0..250u64 {
            // Capture times wobble by up to 4 ms around the true 20 ms grid.
            let wobble = [0, 4_000, 1_000, 3_500][(i % 4) as usize];
            source.render(&mut frame, start_us + i * 20_000 + wobble);
            let played_at = start_us + 40_000 + i * 20_000;
            found.extend(detector.push(&frame.samples, played_at));
        }
        assert_eq!(found.len(), 5, "one marker per second of 5: {found:?}");
        assert!(
            found.iter().all(|&l| l.abs_diff(40_000) <= 100),
            "{found:?}"
        );
    }

    #[test]
    fn sweep_covers_its_range() {
        let mut source = SyntheticAudio::new(
            Signal::Sweep {
                from_hz: 100.0,
                to_hz: 8000.0,
                period_s: 1.0,
            },
            false,
        );
        let audio = render_seconds(&mut source, 0, 1);
        // Zero crossings per 20 ms rise from ~4 (100 Hz) to ~300 (8 kHz).
        let crossings = |f: &[f32]| {
            f.windows(2)
                .filter(|w| w[0].signum() != w[1].signum())
                .count()
        };
        let first = crossings(&audio[..SAMPLES_PER_FRAME]);
        let last = crossings(&audio[audio.len() - SAMPLES_PER_FRAME..]);
        assert!(first < 10 && last > 250, "{first} → {last}");
    }

    #[test]
    fn wav_files_load_as_48k_mono() {
        let dir = std::env::temp_dir().join(format!("parley-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..16_000 {
            let v = ((i as f32 * 2.0 * PI * 440.0 / 16_000.0).sin() * 10_000.0) as i16;
            writer.write_sample(v).unwrap();
            writer.write_sample(v).unwrap();
        }
        writer.finalize().unwrap();
        let samples = load_wav(&path).unwrap();
        assert!(
            (47_000..=49_000).contains(&samples.len()),
            "{}",
            samples.len()
        );
        let peak = samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.25..0.35).contains(&peak), "{peak}");
        assert!(load_wav(&dir.join("missing.wav")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
