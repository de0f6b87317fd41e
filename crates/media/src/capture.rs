//! The capture facade: one video source and one audio source type over real
//! devices and synthetic ones, so the engine (and `--fake-media`) never cares
//! which it has. Synthetic sources are paced in real time like a device.

use std::time::{Duration, Instant};

use crate::audio_device::Microphone;
use crate::camera::CameraSource;
use crate::clock::unix_micros;
use crate::device::DeviceError;
use crate::frame::{AUDIO_FRAME, AudioFrame, VideoFrame};
use crate::scale::Size;
use crate::synthetic_audio::SyntheticAudio;
use crate::synthetic_video::SyntheticVideo;

/// Paces a synthetic source: sleeps until each next tick of a fixed period,
/// skipping ticks it missed rather than bursting to catch up.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(period: Duration) -> Self {
        Self { period, next: None }
    }

    /// Sleeps until the next tick.
    pub fn wait(&mut self) {
        let now = Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut next = due + self.period;
        while next <= Instant::now() {
            next += self.period;
        }
        self.next = Some(next);
    }
}

/// Where video comes from.
#[derive(Debug)]
pub enum VideoSource {
    Camera(CameraSource),
    Synthetic {
        source: SyntheticVideo,
        pacer: Pacer,
    },
}

impl VideoSource {
    /// A synthetic camera at `fps`.
    pub fn synthetic(source: SyntheticVideo, fps: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
        Self::Synthetic {
            source,
            pacer: Pacer::new(period),
        }
    }

    pub fn size(&self) -> Size {
        match self {
            Self::Camera(camera) => camera.size(),
            Self::Synthetic { source, .. } => {
                let (width, height) = source.size();
                Size::new(width, height)
            }
        }
    }

    /// Blocks until the next frame and returns it, stamped with its capture time.
    pub fn next_frame(&mut self) -> Result<VideoFrame, DeviceError> {
        match self {
            Self::Camera(camera) => camera.next_frame(),
            Self::Synthetic { source, pacer } => {
                pacer.wait();
                Ok(source.render(unix_micros()))
            }
        }
    }
}

/// Where audio comes from.
#[derive(Debug)]
pub enum AudioSource {
    Microphone(Microphone),
    Synthetic {
        source: SyntheticAudio,
        pacer: Pacer,
    },
}

impl AudioSource {
    pub fn synthetic(source: SyntheticAudio) -> Self {
        Self::Synthetic {
            source,
            pacer: Pacer::new(AUDIO_FRAME),
        }
    }

    /// Blocks until the next 20 ms are available and fills `frame` with them.
    pub fn next_frame(&mut self, frame: &mut AudioFrame) -> Result<(), DeviceError> {
        match self {
            Self::Microphone(microphone) => loop {
                if microphone.read_frame(frame, Duration::from_secs(1))? {
                    return Ok(());
                }
                tracing::warn!(microphone = microphone.name(), "no audio for a second");
            },
            Self::Synthetic { source, pacer } => {
                pacer.wait();
                source.render(frame, unix_micros());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FramePool;
    use crate::stamp::read_stamp;
    use crate::synthetic_audio::Signal;

    #[test]
    fn synthetic_sources_are_paced_like_devices() {
        let mut video =
            VideoSource::synthetic(SyntheticVideo::new(320, 180, FramePool::new(2)), 50);
        assert_eq!(video.size(), Size::new(320, 180));
        let started = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..6 {
            let frame = video.next_frame().unwrap();
            stamps.push(read_stamp(&frame).unwrap().captured_at_us);
        }
        // Six frames at 50 fps span five periods: at least 100 ms.
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(
            stamps.windows(2).all(|w| w[1] > w[0]),
            "capture times advance"
        );

        let mut audio = AudioSource::synthetic(SyntheticAudio::new(Signal::Speech, false));
        let mut frame = AudioFrame::silent();
        let started = Instant::now();
        for _ in 0..4 {
            audio.next_frame(&mut frame).unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}
