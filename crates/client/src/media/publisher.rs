//! What a call publishes: the camera (a real one through nokhwa, or the
//! stamped synthetic picture) encoded as three simulcast layers, and the
//! microphone (a real one through cpal, or
//! synthetic speech) cleaned by the audio processing module and encoded as
//! Opus, each on its own thread so encoding never stalls the network loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parley_media::audio_device::{Microphone, default_microphone};
use parley_media::capture::{AudioSource, VideoSource};
use parley_media::clock::unix_micros;
use parley_media::device::DeviceError;
use parley_media::frame::{AudioFrame, FramePool, SAMPLES_PER_FRAME, VideoFrame, level_db};
use parley_media::h264::EncoderComplexity;
use parley_media::opus_codec::{MAX_PACKET, OpusEncoder, OpusSettings};
use parley_media::scale::Size;
use parley_media::simulcast::{LAYERS, SimulcastEncoder, default_layers};
use parley_media::synthetic_audio::{Signal, SyntheticAudio};
use parley_media::vad::VoiceDetector;
use tokio::sync::mpsc;

use super::audio::{AudioInput, AudioShared, DeviceChoice, WavRecorder};
use super::engine::MediaNotice;
use super::video::{LOCAL_TILE, VideoInput, VideoSink, open_video};

/// Talking while muted for this long shows the hint.
const MUTED_TALKING_AFTER: u32 = 25;
/// The hint is not repeated more often than this.
const MUTED_TALKING_REPEAT: Duration = Duration::from_secs(10);
/// Capture delays beyond this are not plausible and not passed on.
const MAX_CAPTURE_DELAY_MS: u64 = 500;

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

/// What the network loop and the application ask of the video thread.
#[derive(Debug, Clone)]
pub enum VideoControl {
    Keyframe {
        layer: usize,
    },
    SetActive {
        layer: usize,
        active: bool,
    },
    /// Capture from another camera from the next frame on.
    SetInput(VideoInput),
    /// Camera off releases the device and sends nothing; on reopens it.
    SetEnabled(bool),
}

/// What the video thread needs.
#[derive(Debug)]
pub struct VideoSetup {
    pub input: VideoInput,
    pub size: Size,
    pub fps: u32,
    pub enabled: bool,
    /// Shown every captured frame as the local preview.
    pub sink: Option<Arc<dyn VideoSink>>,
    pub notices: mpsc::Sender<MediaNotice>,
}

/// What the audio capture thread needs.
#[derive(Debug)]
pub struct CaptureSetup {
    pub input: AudioInput,
    pub shared: Arc<AudioShared>,
    pub record: Option<WavRecorder>,
    pub notices: mpsc::Sender<MediaNotice>,
}

#[derive(Debug)]
pub struct Publisher {
    stop: Arc<AtomicBool>,
    control: std_mpsc::Sender<VideoControl>,
    microphone: std_mpsc::Sender<AudioInput>,
    threads: Vec<JoinHandle<()>>,
}

/// RFC 6464 level of 20 ms of samples: 0 is full scale, 127 silence.
pub fn audio_level(samples: &[f32]) -> u8 {
    (-level_db(samples)).round().clamp(0.0, 127.0) as u8
}

impl Publisher {
    pub fn start(
        video: VideoSetup,
        capture: CaptureSetup,
        out: mpsc::Sender<Encoded>,
    ) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (control_tx, control_rx) = std_mpsc::channel();
        let (microphone_tx, microphone_rx) = std_mpsc::channel();
        let pool = FramePool::new(8);
        let encoder = SimulcastEncoder::new(
            default_layers(video.size, video.fps as f32),
            EncoderComplexity::Low,
            pool.clone(),
        )
        .map_err(|e| format!("video encoder: {e}"))?;
        let audio_encoder =
            OpusEncoder::new(OpusSettings::default()).map_err(|e| format!("audio encoder: {e}"))?;
        let video = {
            let (stop, out) = (Arc::clone(&stop), out.clone());
            std::thread::Builder::new()
                .name("video-capture".into())
                .spawn(move || {
                    VideoCapture {
                        setup: video,
                        encoder,
                        pool,
                        buffers: Default::default(),
                    }
                    .run(&control_rx, &stop, &out);
                })
                .map_err(|e| e.to_string())?
        };
        let audio = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("audio-capture".into())
                .spawn(move || {
                    AudioCapture::new(capture, audio_encoder).run(&microphone_rx, &stop, &out);
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Self {
            stop,
            control: control_tx,
            microphone: microphone_tx,
            threads: vec![video, audio],
        })
    }

    pub fn control(&self, control: VideoControl) {
        let _ = self.control.send(control);
    }

    /// Captures from another microphone from the next frame on.
    pub fn set_microphone(&self, input: AudioInput) {
        let _ = self.microphone.send(input);
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Capture → local preview → simulcast encoder, on its own thread.
struct VideoCapture {
    setup: VideoSetup,
    encoder: SimulcastEncoder,
    pool: FramePool,
    buffers: [Vec<u8>; LAYERS],
}

/// While the camera is off or failed, control is checked this often.
const IDLE_POLL: Duration = Duration::from_millis(100);

impl VideoCapture {
    fn line(&self, value: serde_json::Value) {
        let _ = self.setup.notices.blocking_send(MediaNotice::Line(value));
    }

    /// Opens the configured camera; a failure is reported and leaves the
    /// camera off until another is chosen.
    fn open(&self) -> Option<VideoSource> {
        if !self.setup.enabled {
            return None;
        }
        match open_video(
            &self.setup.input,
            self.setup.size,
            self.setup.fps,
            &self.pool,
        ) {
            Ok(source) => Some(source),
            Err(error) => {
                self.camera_failed(&error);
                None
            }
        }
    }

    /// Says why the camera stopped and blanks the self view; the camera
    /// stays off until another is chosen.
    fn camera_failed(&self, error: &DeviceError) {
        self.line(serde_json::json!({
            "type": "cli_video_device_error",
            "error": error.to_string(),
        }));
        if let Some(sink) = &self.setup.sink {
            sink.clear(LOCAL_TILE);
        }
    }

    /// Applies control messages; returns whether the source must be reopened.
    fn apply(&mut self, command: VideoControl) -> bool {
        match command {
            VideoControl::Keyframe { layer } if layer < LAYERS => {
                self.encoder.request_keyframe(layer);
            }
            VideoControl::SetActive { layer, active } if layer < LAYERS => {
                self.encoder.set_active(layer, active);
            }
            VideoControl::SetInput(input) => {
                self.setup.input = input;
                return true;
            }
            VideoControl::SetEnabled(enabled) if enabled != self.setup.enabled => {
                self.setup.enabled = enabled;
                return true;
            }
            _ => {}
        }
        false
    }

    fn run(
        mut self,
        control: &std_mpsc::Receiver<VideoControl>,
        stop: &AtomicBool,
        out: &mpsc::Sender<Encoded>,
    ) {
        let mut source = self.open();
        while !stop.load(Ordering::Relaxed) {
            let mut reopen = false;
            if source.is_none() {
                // Nothing to capture: wait for a control message instead of spinning.
                if let Ok(command) = control.recv_timeout(IDLE_POLL) {
                    reopen |= self.apply(command);
                }
            }
            while let Ok(command) = control.try_recv() {
                reopen |= self.apply(command);
            }
            if reopen {
                // The old device is released before the new one is opened.
                drop(source.take());
                if let Some(sink) = &self.setup.sink {
                    sink.clear(LOCAL_TILE);
                }
                source = self.open();
                // The first picture from the new source starts a fresh GOP.
                for layer in 0..LAYERS {
                    self.encoder.request_keyframe(layer);
                }
            }
            let Some(capturing) = source.as_mut() else {
                continue;
            };
            let frame = match capturing.next_frame() {
                Ok(frame) => frame,
                Err(error) => {
                    self.camera_failed(&error);
                    source = None;
                    continue;
                }
            };
            if let Some(sink) = &self.setup.sink {
                sink.show(LOCAL_TILE, &frame);
            }
            if !self.encode(frame, out) {
                return;
            }
        }
    }

    /// Encodes one picture and hands its layers on; false once the network
    /// loop is gone.
    fn encode(&mut self, frame: VideoFrame, out: &mpsc::Sender<Encoded>) -> bool {
        let rtp_time = frame.captured_at_us * 90 / 1000;
        let encoded = self.encoder.encode(&frame, &mut self.buffers);
        self.pool.recycle(frame);
        let Ok(encoded) = encoded.inspect_err(|e| tracing::warn!("encoding failed: {e}")) else {
            return true;
        };
        // Largest first: a subscriber moving up a layer gets the new layer's
        // picture before the old layer's copy of it, so nothing is shown twice.
        for (layer, info) in encoded.iter().enumerate().rev() {
            if info.is_none() || self.buffers[layer].is_empty() {
                continue;
            }
            let unit = Encoded::Video {
                layer,
                rtp_time,
                data: self.buffers[layer].clone(),
            };
            if out.blocking_send(unit).is_err() {
                return false;
            }
        }
        true
    }
}

fn open_microphone(choice: &DeviceChoice) -> Result<AudioSource, String> {
    Microphone::open(&choice.id, &choice.name)
        .map(AudioSource::Microphone)
        .map_err(|e| e.to_string())
}

/// Microphone → audio processing → voice detection → mute → Opus.
struct AudioCapture {
    setup: CaptureSetup,
    encoder: OpusEncoder,
    vad: VoiceDetector,
    muted: bool,
    talking_while_muted: u32,
    last_hint: Option<Instant>,
}

impl AudioCapture {
    fn new(setup: CaptureSetup, encoder: OpusEncoder) -> Self {
        Self {
            setup,
            encoder,
            vad: VoiceDetector::default(),
            muted: false,
            talking_while_muted: 0,
            last_hint: None,
        }
    }

    fn line(&self, value: serde_json::Value) {
        let _ = self.setup.notices.blocking_send(MediaNotice::Line(value));
    }

    /// The configured source; a missing microphone falls back to the default one.
    fn open_source(&self) -> Option<AudioSource> {
        let choice = match &self.setup.input {
            AudioInput::Synthetic => {
                return Some(AudioSource::synthetic(SyntheticAudio::new(
                    Signal::Speech,
                    true,
                )));
            }
            AudioInput::Device(choice) => choice.clone(),
        };
        match open_microphone(&choice) {
            Ok(source) => Some(source),
            Err(error) => self.fall_back(&format!("{}: {error}", choice.name)),
        }
    }

    fn fall_back(&self, reason: &str) -> Option<AudioSource> {
        let fallback = default_microphone().ok_or_else(|| "no default microphone".to_owned());
        match fallback.and_then(|d| {
            open_microphone(&DeviceChoice {
                id: d.id,
                name: d.name.clone(),
            })
            .map(|s| (s, d.name))
        }) {
            Ok((source, name)) => {
                self.line(serde_json::json!({
                    "type": "cli_audio_device",
                    "kind": "microphone",
                    "name": name,
                    "fallback": true,
                    "reason": reason,
                }));
                Some(source)
            }
            Err(error) => {
                self.line(serde_json::json!({
                    "type": "cli_audio_device_error",
                    "kind": "microphone",
                    "error": format!("{reason}; {error}"),
                }));
                None
            }
        }
    }

    fn run(
        mut self,
        switches: &std_mpsc::Receiver<AudioInput>,
        stop: &AtomicBool,
        out: &mpsc::Sender<Encoded>,
    ) {
        let mut source = self.open_source();
        let mut frame = AudioFrame::silent();
        let mut packet = vec![0u8; MAX_PACKET];
        let mut rtp_time = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut switch_to = switches.try_iter().last();
            if source.is_none() && switch_to.is_none() {
                // No microphone: wait for one to be chosen.
                switch_to = switches.recv_timeout(IDLE_POLL).ok();
            }
            if let Some(input) = switch_to {
                self.setup.input = input;
                drop(source.take());
                source = self.open_source();
            }
            let Some(capturing) = source.as_mut() else {
                continue;
            };
            if let Err(error) = capturing.next_frame(&mut frame) {
                source = self.fall_back(&error.to_string());
                continue;
            }
            let time = rtp_time;
            rtp_time += SAMPLES_PER_FRAME as u64;
            let voice = self.process(&mut frame);
            if let Some(recorder) = &mut self.setup.record {
                recorder.write(&frame.samples);
            }
            let Ok(encoded) = self.encoder.encode(&frame.samples, &mut packet) else {
                continue;
            };
            // DTX: silence (and a muted microphone) is not sent at all.
            if encoded.silent {
                continue;
            }
            let unit = Encoded::Audio {
                rtp_time: time,
                level: audio_level(&frame.samples),
                voice,
                data: packet[..encoded.len].to_vec(),
            };
            if out.blocking_send(unit).is_err() {
                break;
            }
        }
        if let Some(recorder) = self.setup.record.take() {
            recorder.finish();
        }
    }

    /// Cleans one frame in place; returns whether it carries voice.
    fn process(&mut self, frame: &mut AudioFrame) -> bool {
        let shared = &self.setup.shared;
        // Loudspeaker to microphone: what playout still holds, plus how
        // long ago this frame was captured.
        let captured_ago_ms = unix_micros().saturating_sub(frame.captured_at_us) / 1000;
        let delay = u64::from(shared.playout_delay_ms.load(Ordering::Relaxed))
            + captured_ago_ms.min(MAX_CAPTURE_DELAY_MS);
        if let Err(e) = shared
            .processor
            .process_capture(&mut frame.samples, Some(delay as u32))
        {
            tracing::warn!("{e}");
        }
        let talking = self.vad.process(&frame.samples);
        // The meter moves while muted too: it is how people notice.
        shared
            .input_level
            .store(audio_level(&frame.samples), Ordering::Relaxed);
        let muted = shared.muted.load(Ordering::Relaxed);
        if muted != self.muted {
            self.muted = muted;
            shared.processor.set_capture_muted(muted);
            self.talking_while_muted = 0;
        }
        if !muted {
            return talking;
        }
        self.talking_while_muted = if talking {
            self.talking_while_muted + 1
        } else {
            0
        };
        if self.talking_while_muted == MUTED_TALKING_AFTER
            && self
                .last_hint
                .is_none_or(|t| t.elapsed() >= MUTED_TALKING_REPEAT)
        {
            self.last_hint = Some(Instant::now());
            self.line(serde_json::json!({"type": "cli_muted_talking"}));
        }
        frame.samples.fill(0.0);
        false
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
