use super::*;
use crate::scale::{Scaler, Size, simulcast_sizes};
use crate::stamp::read_stamp;
use crate::synthetic_video::SyntheticVideo;

const FRAME_US: u64 = 33_333;

fn settings(width: u32, height: u32, bitrate_bps: u32) -> EncoderSettings {
    EncoderSettings {
        width,
        height,
        bitrate_bps,
        max_fps: 30.0,
        complexity: EncoderComplexity::Medium,
    }
}

/// Luma PSNR in dB.
fn psnr(original: &[u8], decoded: &[u8]) -> f64 {
    let mse = original
        .iter()
        .zip(decoded)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / original.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// Encodes `count` synthetic frames at `size` and bitrate, returning the access
/// units with the source frames.
fn encode_clip(
    size: Size,
    bitrate_bps: u32,
    count: usize,
) -> Vec<(VideoFrame, Vec<u8>, EncodedInfo)> {
    let pool = FramePool::new(4);
    let mut source = SyntheticVideo::new(1280, 720, pool.clone());
    let mut scaler = Scaler::default();
    let mut encoder = H264Encoder::new(settings(size.width, size.height, bitrate_bps)).unwrap();
    let mut clip = Vec::new();
    for i in 0..count {
        let full = source.render(1_795_000_000_000_000 + i as u64 * FRAME_US);
        let mut frame = VideoFrame::new(size.width, size.height);
        scaler.scale_into(&full, &mut frame).unwrap();
        let mut unit = Vec::new();
        if let Some(info) = encoder.encode_into(&frame, &mut unit).unwrap() {
            clip.push((frame, unit, info));
        }
    }
    clip
}

#[test]
fn hd_round_trip_keeps_every_stamp_at_high_quality() {
    let clip = encode_clip(Size::new(1280, 720), 1_700_000, 60);
    // Rate control may skip a few frames after the large first keyframe.
    assert!(clip.len() >= 54, "{} of 60 frames encoded", clip.len());
    assert!(clip[0].2.keyframe, "the stream starts with a keyframe");
    let mut decoder = H264Decoder::new(FramePool::new(4)).unwrap();
    let mut psnrs = Vec::new();
    for (original, unit, info) in &clip {
        let decoded = decoder
            .decode(unit)
            .unwrap()
            .expect("a picture per access unit");
        let stamp = read_stamp(&decoded).expect("stamp survives 720p encoding");
        assert_eq!(
            stamp.age_us(info.captured_at_us),
            0,
            "48-bit stamp of the capture time"
        );
        assert_eq!(read_stamp(original).unwrap(), stamp);
        psnrs.push(psnr(original.y(), decoded.y()));
    }
    let mean = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
    let worst = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!("720p @ 1.7 Mbps: luma PSNR mean {mean:.1} dB, worst {worst:.1} dB");
    assert!(mean >= 35.0, "mean PSNR {mean:.1} dB");
}

#[test]
fn lowest_layer_still_carries_a_readable_stamp() {
    let [quarter, _, _] = simulcast_sizes(Size::new(1280, 720));
    let clip = encode_clip(quarter, 160_000, 90);
    assert!(clip.len() >= 81, "{} of 90 frames encoded", clip.len());
    let mut decoder = H264Decoder::new(FramePool::new(4)).unwrap();
    for (_, unit, info) in &clip {
        let decoded = decoder.decode(unit).unwrap().unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 180));
        let stamp = read_stamp(&decoded).expect("stamp survives 180p at 160 kbps");
        assert_eq!(stamp.age_us(info.captured_at_us), 0);
    }
}

#[test]
fn a_requested_keyframe_arrives_as_one() {
    let pool = FramePool::new(2);
    let mut source = SyntheticVideo::new(640, 360, pool);
    let mut encoder = H264Encoder::new(settings(640, 360, 450_000)).unwrap();
    let mut unit = Vec::new();
    let mut keyframes = Vec::new();
    let mut encoded = Vec::new();
    for i in 0..40 {
        if i == 25 {
            encoder.request_keyframe();
        }
        unit.clear();
        if let Some(info) = encoder
            .encode_into(&source.render(i * FRAME_US), &mut unit)
            .unwrap()
        {
            assert_eq!(info.keyframe, is_keyframe(&unit), "frame {i}");
            encoded.push(i);
            if info.keyframe {
                keyframes.push(i);
            }
        }
    }
    let first_after_request = *encoded.iter().find(|&&i| i >= 25).unwrap();
    assert_eq!(keyframes, [0, first_after_request]);
    assert!(encoded.len() >= 36, "{} of 40 encoded", encoded.len());
}

#[test]
fn decoder_recovers_at_the_next_keyframe_after_loss() {
    let pool = FramePool::new(2);
    let mut source = SyntheticVideo::new(640, 360, pool.clone());
    let mut encoder = H264Encoder::new(settings(640, 360, 450_000)).unwrap();
    let mut decoder = H264Decoder::new(pool).unwrap();
    let mut shown = Vec::new();
    let mut expected = Vec::new();
    let mut refused = 0;
    let mut recovered_at = None;
    for i in 0..60u64 {
        if i == 40 {
            // The receiver noticed the gap and asked; the sender complies.
            encoder.request_keyframe();
        }
        let mut unit = Vec::new();
        let Some(info) = encoder
            .encode_into(&source.render(i * FRAME_US), &mut unit)
            .unwrap()
        else {
            continue; // skipped by rate control
        };
        if (20..25).contains(&i) {
            if i == 20 {
                decoder.note_loss();
            }
            continue; // lost in the network
        }
        if info.keyframe && i >= 25 {
            recovered_at.get_or_insert(i);
        }
        if i < 20 || recovered_at.is_some() {
            expected.push(i as u32);
        }
        match decoder.decode(&unit) {
            Ok(Some(frame)) => shown.push(read_stamp(&frame).unwrap().frame_number),
            Ok(None) => {}
            Err(CodecError::NeedKeyframe) => refused += 1,
            Err(other) => panic!("{other}"),
        }
        assert_eq!(
            decoder.needs_keyframe(),
            i >= 20 && recovered_at.is_none(),
            "frame {i}"
        );
    }
    assert!(
        recovered_at.is_some_and(|at| at >= 40),
        "recovered at the requested keyframe"
    );
    assert!(
        refused >= 10,
        "frames between the loss and the keyframe are not shown"
    );
    assert_eq!(shown, expected);
}

#[test]
fn wrong_frame_size_is_an_error_not_a_panic() {
    let mut encoder = H264Encoder::new(settings(320, 180, 160_000)).unwrap();
    let err = encoder
        .encode_into(&VideoFrame::new(640, 360), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, CodecError::Encoder(_)));
}

#[test]
fn garbage_is_refused_until_a_keyframe() {
    let mut decoder = H264Decoder::new(FramePool::new(1)).unwrap();
    assert!(matches!(
        decoder.decode(&[0, 0, 0, 1, 0x41, 1, 2, 3]),
        Err(CodecError::NeedKeyframe)
    ));
    assert!(matches!(
        decoder.decode(&[1, 2, 3]),
        Err(CodecError::NeedKeyframe)
    ));
}

/// Bytes a 640×360 encoder produces at `before_bps`, then after switching
/// to `after_bps` while running (each phase 3 s; its first second skipped so
/// rate control settles).
fn bytes_before_and_after(before_bps: u32, after_bps: u32) -> [usize; 2] {
    let pool = FramePool::new(2);
    let mut source = SyntheticVideo::new(640, 360, pool);
    let mut encoder = H264Encoder::new(settings(640, 360, before_bps)).unwrap();
    let mut bytes = [0usize; 2];
    for (phase, total) in bytes.iter_mut().enumerate() {
        if phase == 1 {
            encoder.set_bitrate(after_bps).unwrap();
            encoder.set_max_fps(30.0).unwrap();
            assert_eq!(encoder.settings().bitrate_bps, after_bps);
        }
        for i in 0..90u64 {
            let mut unit = Vec::new();
            let t = (phase as u64 * 90 + i) * FRAME_US;
            let _ = encoder.encode_into(&source.render(t), &mut unit).unwrap();
            if i >= 30 {
                *total += unit.len();
            }
        }
    }
    bytes
}

#[test]
fn bitrate_changes_take_effect_while_running() {
    let [high, low] = bytes_before_and_after(1_200_000, 200_000);
    let ratio = high as f64 / low as f64;
    eprintln!("bytes at 1.2 Mbps vs 200 kbps: {high} vs {low} (x{ratio:.1})");
    assert!(ratio > 2.5, "ratio {ratio:.2}");
}

#[test]
fn bitrate_can_be_raised_above_the_starting_value_while_running() {
    let [low, high] = bytes_before_and_after(200_000, 1_200_000);
    let ratio = high as f64 / low as f64;
    eprintln!("bytes at 200 kbps vs after raising to 1.2 Mbps: {low} vs {high} (x{ratio:.1})");
    assert!(ratio > 2.5, "ratio {ratio:.2}");
}

#[test]
fn a_garbage_keyframe_is_a_decoder_error_and_waits_for_the_next() {
    let mut decoder = H264Decoder::new(FramePool::new(1)).unwrap();
    let garbage_idr = [0, 0, 0, 1, 0x65, 0xff, 0x00, 0x13, 0x37, 0xff, 0xff, 0xff];
    match decoder.decode(&garbage_idr) {
        Err(CodecError::Decoder(_)) | Ok(None) => {}
        other => panic!("garbage decoded: {other:?}"),
    }
    // A real stream still decodes afterwards.
    let mut source = SyntheticVideo::new(320, 180, FramePool::new(1));
    let mut encoder = H264Encoder::new(settings(320, 180, 160_000)).unwrap();
    let mut unit = Vec::new();
    encoder
        .encode_into(&source.render(0), &mut unit)
        .unwrap()
        .unwrap();
    let frame = decoder
        .decode(&unit)
        .unwrap()
        .expect("the keyframe decodes");
    assert_eq!((frame.width(), frame.height()), (320, 180));
}
