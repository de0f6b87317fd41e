//! The synthetic publisher of `parley-cli --fake-media`: a stamped test
//! pattern encoded as three simulcast layers, and synthetic speech encoded as
//! Opus, each on its own thread so encoding never stalls the network loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use parley_media::capture::{AudioSource, VideoSource};
use parley_media::frame::{AudioFrame, FramePool, SAMPLES_PER_FRAME};
use parley_media::h264::EncoderComplexity;
use parley_media::opus_codec::{MAX_PACKET, OpusEncoder, OpusSettings};
use parley_media::scale::Size;
use parley_media::simulcast::{LAYERS, SimulcastEncoder, default_layers};
use parley_media::synthetic_audio::{Signal, SyntheticAudio};
use parley_media::synthetic_video::SyntheticVideo;
use tokio::sync::mpsc;

/// One encoded unit for the network loop.
#[derive(Debug)]
pub enum Encoded {
    Video {
        layer: usize,
        /// 90 kHz, derived from the capture time.
        rtp_time: u64,
        data: Vec<u8>,
    },
    Audio {
        /// 48 kHz sample count.
        rtp_time: u64,
        /// RFC 6464 level, -dBov.
        level: u8,
        voice: bool,
        data: Vec<u8>,
    },
}

/// What the network loop asks of the video encoder.
#[derive(Debug, Clone, Copy)]
pub enum EncoderControl {
    Keyframe { layer: usize },
    SetActive { layer: usize, active: bool },
}

#[derive(Debug)]
pub struct FakePublisher {
    stop: Arc<AtomicBool>,
    control: std_mpsc::Sender<EncoderControl>,
    threads: Vec<JoinHandle<()>>,
}

/// RFC 6464 level of 20 ms of samples: 0 is full scale, 127 silence.
pub fn audio_level(samples: &[f32]) -> u8 {
    let energy = samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32;
    let dbov = 10.0 * energy.max(1e-13).log10();
    (-dbov).round().clamp(0.0, 127.0) as u8
}

impl FakePublisher {
    pub fn start(size: Size, fps: u32, out: mpsc::Sender<Encoded>) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (control_tx, control_rx) = std_mpsc::channel();
        let pool = FramePool::new(8);
        let encoder = SimulcastEncoder::new(
            default_layers(size, fps as f32),
            EncoderComplexity::Low,
            pool.clone(),
        )
        .map_err(|e| format!("video encoder: {e}"))?;
        let audio_encoder =
            OpusEncoder::new(OpusSettings::default()).map_err(|e| format!("audio encoder: {e}"))?;
        let video = {
            let (stop, out) = (Arc::clone(&stop), out.clone());
            std::thread::Builder::new()
                .name("fake-video".into())
                .spawn(move || {
                    let synthetic = SyntheticVideo::new(size.width, size.height, pool.clone());
                    let source = VideoSource::synthetic(synthetic, fps);
                    encode_video(source, encoder, &pool, &control_rx, &stop, &out);
                })
                .map_err(|e| e.to_string())?
        };
        let audio = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("fake-audio".into())
                .spawn(move || {
                    let synthetic = SyntheticAudio::new(Signal::Speech, true);
                    encode_audio(
                        AudioSource::synthetic(synthetic),
                        audio_encoder,
                        &stop,
                        &out,
                    );
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Self {
            stop,
            control: control_tx,
            threads: vec![video, audio],
        })
    }

    pub fn control(&self, control: EncoderControl) {
        let _ = self.control.send(control);
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn encode_video(
    mut source: VideoSource,
    mut encoder: SimulcastEncoder,
    pool: &FramePool,
    control: &std_mpsc::Receiver<EncoderControl>,
    stop: &AtomicBool,
    out: &mpsc::Sender<Encoded>,
) {
    let mut buffers: [Vec<u8>; LAYERS] = Default::default();
    while !stop.load(Ordering::Relaxed) {
        while let Ok(command) = control.try_recv() {
            match command {
                EncoderControl::Keyframe { layer } if layer < LAYERS => {
                    encoder.request_keyframe(layer);
                }
                EncoderControl::SetActive { layer, active } if layer < LAYERS => {
                    encoder.set_active(layer, active);
                }
                _ => {}
            }
        }
        let frame = match source.next_frame() {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!("synthetic video stopped: {e}");
                return;
            }
        };
        let rtp_time = frame.captured_at_us * 90 / 1000;
        let encoded = encoder.encode(&frame, &mut buffers);
        pool.recycle(frame);
        let Ok(encoded) = encoded.inspect_err(|e| tracing::warn!("encoding failed: {e}")) else {
            continue;
        };
        // Largest first: a subscriber moving up a layer gets the new layer's
        // picture before the old layer's copy of it, so nothing is shown twice.
        for (layer, info) in encoded.iter().enumerate().rev() {
            if info.is_none() || buffers[layer].is_empty() {
                continue;
            }
            let unit = Encoded::Video {
                layer,
                rtp_time,
                data: buffers[layer].clone(),
            };
            if out.blocking_send(unit).is_err() {
                return;
            }
        }
    }
}

fn encode_audio(
    mut source: AudioSource,
    mut encoder: OpusEncoder,
    stop: &AtomicBool,
    out: &mpsc::Sender<Encoded>,
) {
    let mut frame = AudioFrame::silent();
    let mut packet = vec![0u8; MAX_PACKET];
    let mut rtp_time = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = source.next_frame(&mut frame) {
            tracing::warn!("synthetic audio stopped: {e}");
            return;
        }
        let time = rtp_time;
        rtp_time += SAMPLES_PER_FRAME as u64;
        let Ok(encoded) = encoder.encode(&frame.samples, &mut packet) else {
            continue;
        };
        if encoded.silent {
            continue;
        }
        let level = audio_level(&frame.samples);
        let unit = Encoded::Audio {
            rtp_time: time,
            level,
            voice: level < 50,
            data: packet[..encoded.len].to_vec(),
        };
        if out.blocking_send(unit).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_rfc_6464() {
        assert_eq!(audio_level(&[0.0; 960]), 127);
        let full: Vec<f32> = (0..960)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(audio_level(&full), 0);
        let quiet: Vec<f32> = full.iter().map(|s| s * 0.01).collect();
        assert_eq!(audio_level(&quiet), 40);
    }
}
