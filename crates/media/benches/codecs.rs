//! Media engine costs per frame: scaling, H.264 per layer and all three
//! layers, decoding, and Opus per 20 ms.
//!
//! Run: `cargo bench -p parley-media --bench codecs`

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use parley_media::frame::{AudioFrame, FramePool, SAMPLES_PER_FRAME, VideoFrame};
use parley_media::h264::{EncoderComplexity, EncoderSettings, H264Decoder, H264Encoder};
use parley_media::opus_codec::{MAX_PACKET, OpusDecoder, OpusEncoder, OpusSettings};
use parley_media::scale::{Scaler, Size, simulcast_sizes};
use parley_media::simulcast::{LAYERS, SimulcastEncoder, default_layers};
use parley_media::synthetic_audio::{Signal, SyntheticAudio};
use parley_media::synthetic_video::SyntheticVideo;

const FRAME_US: u64 = 33_333;
const CLIP: usize = 90;

fn source_clip() -> Vec<VideoFrame> {
    let mut source = SyntheticVideo::new(1280, 720, FramePool::new(1));
    (0..CLIP as u64)
        .map(|i| source.render(i * FRAME_US))
        .collect()
}

fn scaled_clip(clip: &[VideoFrame], size: Size) -> Vec<VideoFrame> {
    let mut scaler = Scaler::default();
    clip.iter()
        .map(|frame| {
            let mut out = VideoFrame::new(size.width, size.height);
            scaler.scale_into(frame, &mut out).unwrap();
            out
        })
        .collect()
}

fn layer_settings(size: Size, bitrate_bps: u32, complexity: EncoderComplexity) -> EncoderSettings {
    EncoderSettings {
        width: size.width,
        height: size.height,
        bitrate_bps,
        max_fps: 30.0,
        complexity,
    }
}

fn scaling(c: &mut Criterion) {
    let clip = source_clip();
    let [quarter, half, _] = simulcast_sizes(Size::new(1280, 720));
    let mut group = c.benchmark_group("scale");
    for (name, size) in [("720p_to_360p", half), ("720p_to_180p", quarter)] {
        let mut scaler = Scaler::default();
        let mut out = VideoFrame::new(size.width, size.height);
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % CLIP;
                scaler.scale_into(&clip[i], &mut out).unwrap();
            });
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let mut clip = source_clip();
    let specs = default_layers(Size::new(1280, 720), 30.0);
    let mut group = c.benchmark_group("h264_encode");
    for complexity in [EncoderComplexity::Low, EncoderComplexity::Medium] {
        for spec in &specs {
            let mut frames = scaled_clip(&clip, spec.size);
            let mut encoder =
                H264Encoder::new(layer_settings(spec.size, spec.bitrate_bps, complexity)).unwrap();
            let mut out = Vec::new();
            let mut i = 0;
            let id = BenchmarkId::new(
                format!("{complexity:?}"),
                format!("{}x{}", spec.size.width, spec.size.height),
            );
            group.bench_function(id, |b| {
                b.iter(|| {
                    i += 1;
                    let frame = &mut frames[i % CLIP];
                    // Keep capture times moving forward: rate control uses them.
                    frame.captured_at_us = i as u64 * FRAME_US;
                    out.clear();
                    encoder.encode_into(frame, &mut out).unwrap()
                });
            });
        }
        let pool = FramePool::new(8);
        let mut simulcast = SimulcastEncoder::new(specs, complexity, pool).unwrap();
        let mut outputs: [Vec<u8>; LAYERS] = Default::default();
        let mut i = 0;
        group.bench_function(
            BenchmarkId::new(format!("{complexity:?}"), "all_three_layers_from_720p"),
            |b| {
                b.iter(|| {
                    i += 1;
                    let frame = &mut clip[i % CLIP];
                    frame.captured_at_us = i as u64 * FRAME_US;
                    simulcast.encode(frame, &mut outputs).unwrap()
                });
            },
        );
    }
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let clip = source_clip();
    let specs = default_layers(Size::new(1280, 720), 30.0);
    let mut group = c.benchmark_group("h264_decode");
    for spec in &specs {
        let frames = scaled_clip(&clip, spec.size);
        let mut encoder = H264Encoder::new(layer_settings(
            spec.size,
            spec.bitrate_bps,
            EncoderComplexity::Medium,
        ))
        .unwrap();
        let units: Vec<Vec<u8>> = frames
            .iter()
            .filter_map(|frame| {
                let mut out = Vec::new();
                encoder.encode_into(frame, &mut out).unwrap().map(|_| out)
            })
            .collect();
        let pool = FramePool::new(4);
        let mut decoder = H264Decoder::new(pool.clone()).unwrap();
        let mut i = 0;
        group.bench_function(format!("{}x{}", spec.size.width, spec.size.height), |b| {
            b.iter(|| {
                // The clip starts with its only keyframe, so wrapping restarts cleanly.
                if let Some(frame) = decoder.decode(&units[i % units.len()]).unwrap() {
                    pool.recycle(frame);
                }
                i += 1;
            });
        });
    }
    group.finish();
}

fn opus(c: &mut Criterion) {
    let mut voice = SyntheticAudio::new(Signal::Speech, false);
    let frames: Vec<AudioFrame> = (0..250u64)
        .map(|i| {
            let mut frame = AudioFrame::silent();
            voice.render(&mut frame, i * 20_000);
            frame
        })
        .collect();
    let mut encoder = OpusEncoder::new(OpusSettings::default()).unwrap();
    let mut packet = [0u8; MAX_PACKET];
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let n = encoder.encode(&f.samples, &mut packet).unwrap().len;
            packet[..n].to_vec()
        })
        .collect();
    let mut group = c.benchmark_group("opus_20ms");
    let mut i = 0;
    group.bench_function("encode", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            encoder.encode(&frames[i].samples, &mut packet).unwrap()
        });
    });
    let mut decoder = OpusDecoder::new().unwrap();
    let mut pcm = vec![0f32; SAMPLES_PER_FRAME];
    group.bench_function("decode", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            decoder.decode(&packets[i], &mut pcm).unwrap()
        });
    });
    group.bench_function("conceal_lost_frame", |b| {
        b.iter(|| decoder.conceal(&mut pcm).unwrap());
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = scaling, encoding, decoding, opus
}
criterion_main!(benches);
