//! The audio path's cost per 20 ms frame, for one call: the send side (APM
//! with every stage on, voice detection, Opus encoding) and the receive side
//! (jitter buffers, Opus decoding and mixing of three remote talkers, and the
//! far-end reference for the echo canceller). Divide by 20 ms for the share
//! of one core.
//!
//! Run: `cargo bench -p parley-media --bench audio_path`

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use parley_media::apm::{ApmSettings, AudioProcessor};
use parley_media::frame::{AudioFrame, SAMPLES_PER_FRAME};
use parley_media::jitter_buffer::JitterSettings;
use parley_media::mixer::AudioMixer;
use parley_media::opus_codec::{MAX_PACKET, OpusEncoder, OpusSettings};
use parley_media::synthetic_audio::{Signal, SyntheticAudio};
use parley_media::vad::VoiceDetector;

const CLIP: usize = 250;
const TALKERS: usize = 3;

fn speech() -> Vec<Vec<f32>> {
    let mut voice = SyntheticAudio::new(Signal::Speech, false);
    let mut frame = AudioFrame::silent();
    (0..CLIP as u64)
        .map(|i| {
            voice.render(&mut frame, i * 20_000);
            frame.samples.clone()
        })
        .collect()
}

fn packets(clip: &[Vec<f32>]) -> Vec<Vec<u8>> {
    let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
    let mut out = [0u8; MAX_PACKET];
    clip.iter()
        .map(|samples| {
            let n = encoder.encode(samples, &mut out).unwrap().len;
            out[..n].to_vec()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let clip = speech();
    let encoded = packets(&clip);
    let mut group = c.benchmark_group("audio_path_per_20ms");

    let apm = AudioProcessor::new(ApmSettings::default()).unwrap();
    let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
    let mut vad = VoiceDetector::default();
    let mut frame = vec![0.0; SAMPLES_PER_FRAME];
    let mut packet = [0u8; MAX_PACKET];
    let mut i = 0;
    group.bench_function("send: APM (AEC3+NS+AGC2+HPF) + VAD + Opus encode", |b| {
        b.iter(|| {
            frame.copy_from_slice(&clip[i % CLIP]);
            apm.process_capture(&mut frame, Some(40)).unwrap();
            vad.process(&frame);
            encoder.encode(&frame, &mut packet).unwrap();
            i += 1;
        });
    });

    let mut mixer = AudioMixer::new(JitterSettings::default());
    let mut mix = vec![0.0; SAMPLES_PER_FRAME];
    let mut k = 0u64;
    group.bench_function(
        "receive: 3 jitter buffers + Opus decode + mix + AEC reference",
        |b| {
            b.iter(|| {
                let now = k * 20_000;
                for talker in 0..TALKERS {
                    let key = format!("p{talker}/mic");
                    let payload = encoded[(k as usize + talker * 50) % CLIP].clone();
                    mixer.push(&key, &key, k * 960, payload, now);
                }
                mixer.mix(now + 30_000, &mut mix);
                apm.analyze_render(&mix).unwrap();
                k += 1;
            });
        },
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
