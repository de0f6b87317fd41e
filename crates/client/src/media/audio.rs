//! The audio side of a call outside the network loop: the playout thread
//! (mixer → echo canceller's far-end reference → speaker) and the settings
//! shared with the capture thread (microphone → APM → VAD → Opus, in
//! [`super::publisher`]).
//!
//! Playout is paced by the speaker: a frame is mixed whenever the device's
//! queue falls under [`PLAYOUT_QUEUE_US`] beyond the largest block the device
//! takes at once, so the device clock, not ours, sets the rate. Without a speaker (bots, load tests) a 20 ms clock paces it.
//! If the speaker disappears mid-call, playout moves to the system default
//! and says so; a device switch asked mid-call happens between two frames.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use parley_media::apm::{ApmSettings, AudioProcessor};
use parley_media::audio_device::{Speaker, default_speaker};
use parley_media::clock::unix_micros;
use parley_media::frame::{AUDIO_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME};
use parley_media::jitter_buffer::JitterSettings;
use parley_media::mixer::AudioMixer;
use parley_media::synthetic_audio::MarkerDetector;
use tokio::sync::mpsc;

use super::engine::MediaNotice;

/// How much audio is kept queued at the speaker beyond one device period:
/// enough to ride out a late wake-up of this thread, little enough to keep
/// mouth-to-ear short.
const PLAYOUT_QUEUE_US: u64 = 20_000;
/// Playout statistics are reported this often.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// A device chosen by id, with its name as the fallback when ids change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    pub id: String,
    pub name: String,
}

impl From<parley_media::device::DeviceInfo> for DeviceChoice {
    fn from(device: parley_media::device::DeviceInfo) -> Self {
        Self {
            id: device.id,
            name: device.name,
        }
    }
}

/// Where the microphone signal comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    /// Synthetic speech with latency markers (`--fake-media`).
    Synthetic,
    Device(DeviceChoice),
}

/// Where remote audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// Nowhere: mixed and paced by a 20 ms clock, for bots and tests.
    Clock,
    Device(DeviceChoice),
}

#[derive(Debug, Clone)]
pub struct AudioOptions {
    pub input: AudioInput,
    pub output: AudioOutput,
    pub processing: ApmSettings,
    pub jitter: JitterSettings,
    /// Start with the microphone muted.
    pub muted: bool,
    /// Write what is played (the mix) to this WAV file.
    pub record_playout: Option<PathBuf>,
    /// Write what is sent (after processing) to this WAV file.
    pub record_microphone: Option<PathBuf>,
    /// Look for the synthetic source's latency markers in what is played
    /// and report mouth-to-ear (`cli_audio_latency`). A QA measurement that
    /// costs a correlation per frame; off for people.
    pub detect_markers: bool,
    /// Where the capture thread keeps the microphone's level (a meter).
    pub level_meter: Option<Arc<AtomicU8>>,
}

impl Default for AudioOptions {
    fn default() -> Self {
        Self {
            input: AudioInput::Synthetic,
            output: AudioOutput::Clock,
            processing: ApmSettings::default(),
            jitter: JitterSettings::default(),
            muted: false,
            record_playout: None,
            record_microphone: None,
            detect_markers: true,
            level_meter: None,
        }
    }
}

/// State the capture and playout threads share.
#[derive(Debug)]
pub struct AudioShared {
    pub mixer: Mutex<AudioMixer>,
    pub processor: AudioProcessor,
    pub muted: AtomicBool,
    /// Audio handed to playout and not yet heard (ms): half of the echo
    /// canceller's delay hint.
    pub playout_delay_ms: AtomicU32,
    /// The processed microphone's last level (RFC 6464: 0 loudest, 127
    /// silence), for a level meter.
    pub input_level: Arc<AtomicU8>,
}

impl AudioShared {
    pub fn new(options: &AudioOptions) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            mixer: Mutex::new(AudioMixer::new(options.jitter)),
            processor: AudioProcessor::new(options.processing).map_err(|e| e.to_string())?,
            muted: AtomicBool::new(options.muted),
            playout_delay_ms: AtomicU32::new(0),
            input_level: options
                .level_meter
                .clone()
                .unwrap_or_else(|| Arc::new(AtomicU8::new(127))),
        }))
    }

    pub fn mixer(&self) -> std::sync::MutexGuard<'_, AudioMixer> {
        // The mixer holds no invariant a panic elsewhere could break.
        self.mixer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A WAV file of 48 kHz mono float samples.
pub struct WavRecorder {
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for WavRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WavRecorder")
    }
}

impl WavRecorder {
    pub fn create(path: &std::path::Path) -> Result<Self, String> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| format!("cannot record to {}: {e}", path.display()))?;
        Ok(Self { writer })
    }

    pub fn write(&mut self, samples: &[f32]) {
        for &sample in samples {
            if self.writer.write_sample(sample).is_err() {
                return;
            }
        }
    }

    pub fn finish(self) {
        if let Err(e) = self.writer.finalize() {
            tracing::warn!("recording not finished: {e}");
        }
    }
}

/// Commands to the playout thread.
#[derive(Debug)]
pub enum PlayoutCommand {
    SetSpeaker(DeviceChoice),
}

/// The running playout thread.
#[derive(Debug)]
pub struct Playout {
    stop: Arc<AtomicBool>,
    commands: std_mpsc::Sender<PlayoutCommand>,
    thread: Option<JoinHandle<()>>,
}

enum Sink {
    Clock { next_us: u64 },
    Speaker(Box<Speaker>),
}

impl Sink {
    fn open(output: &AudioOutput) -> Result<Self, String> {
        match output {
            AudioOutput::Clock => Ok(Self::Clock { next_us: 0 }),
            AudioOutput::Device(choice) => Speaker::open(&choice.id, &choice.name)
                .map(|speaker| Self::Speaker(Box::new(speaker)))
                .map_err(|e| e.to_string()),
        }
    }

    /// Waits until the sink wants the next frame.
    fn wait(&mut self) {
        match self {
            Self::Clock { next_us } => {
                let now = unix_micros();
                if *next_us > now {
                    std::thread::sleep(Duration::from_micros(*next_us - now));
                }
                let frame_us = AUDIO_FRAME.as_micros() as u64;
                // Skip ticks missed rather than burst to catch up.
                *next_us = (*next_us + frame_us).max(unix_micros());
            }
            Self::Speaker(speaker) => {
                while speaker.buffered_us() > speaker.period_us() + PLAYOUT_QUEUE_US {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Time from now until a sample queued now is heard.
    fn queued_us(&self) -> u64 {
        match self {
            Self::Clock { .. } => 0,
            Self::Speaker(speaker) => speaker.buffered_us(),
        }
    }

    fn report(&self) -> serde_json::Value {
        match self {
            Self::Clock { .. } => serde_json::json!({"name": "none"}),
            Self::Speaker(speaker) => serde_json::json!({
                "name": speaker.name(),
                "period_ms": speaker.period_us() as f64 / 1000.0,
                "queued_ms": speaker.buffered_us() as f64 / 1000.0,
                "dropped_samples": speaker.dropped_samples(),
                "glitches": speaker.glitches(),
            }),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Clock { .. } => "none".to_owned(),
            Self::Speaker(speaker) => speaker.name().to_owned(),
        }
    }
}

impl Playout {
    pub fn start(
        options: &AudioOptions,
        shared: Arc<AudioShared>,
        notices: mpsc::Sender<MediaNotice>,
    ) -> Result<Self, String> {
        // A speaker that cannot be opened is not worth losing the call
        // over: play through the default one (or none) and say so.
        let sink = Sink::open(&options.output).unwrap_or_else(|error| {
            let fallback = default_speaker()
                .and_then(|d| Speaker::open(&d.id, &d.name).ok())
                .map_or(Sink::Clock { next_us: 0 }, |s| Sink::Speaker(Box::new(s)));
            let _ = notices.try_send(MediaNotice::Line(serde_json::json!({
                "type": "cli_audio_device",
                "kind": "speaker",
                "name": fallback.name(),
                "fallback": true,
                "reason": error,
            })));
            fallback
        });
        let recorder = options
            .record_playout
            .as_deref()
            .map(WavRecorder::create)
            .transpose()?;
        let stop = Arc::new(AtomicBool::new(false));
        let detect_markers = options.detect_markers;
        let (commands, command_rx) = std_mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("audio-playout".into())
                .spawn(move || {
                    PlayoutLoop {
                        sink,
                        shared,
                        notices,
                        recorder,
                        markers: detect_markers.then(MarkerDetector::default),
                        frame: vec![0.0; SAMPLES_PER_FRAME],
                    }
                    .run(&stop, &command_rx);
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Self {
            stop,
            commands,
            thread: Some(thread),
        })
    }

    pub fn command(&self, command: PlayoutCommand) {
        let _ = self.commands.send(command);
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct PlayoutLoop {
    sink: Sink,
    shared: Arc<AudioShared>,
    notices: mpsc::Sender<MediaNotice>,
    recorder: Option<WavRecorder>,
    markers: Option<MarkerDetector>,
    frame: Vec<f32>,
}

impl PlayoutLoop {
    fn line(&self, value: serde_json::Value) {
        let _ = self.notices.blocking_send(MediaNotice::Line(value));
    }

    fn run(mut self, stop: &AtomicBool, commands: &std_mpsc::Receiver<PlayoutCommand>) {
        let mut last_stats = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            while let Ok(command) = commands.try_recv() {
                match command {
                    PlayoutCommand::SetSpeaker(choice) => self.switch(&choice),
                }
            }
            self.sink.wait();
            let now = unix_micros();
            self.shared.mixer().mix(now, &mut self.frame);
            let queued = self.sink.queued_us();
            // The far-end reference is exactly what is about to be played.
            if let Err(e) = self.shared.processor.analyze_render(&self.frame) {
                tracing::warn!("{e}");
            }
            self.shared
                .playout_delay_ms
                .store((queued / 1000) as u32, Ordering::Relaxed);
            if let Some(recorder) = &mut self.recorder {
                recorder.write(&self.frame);
            }
            let found = self
                .markers
                .as_mut()
                .map(|m| m.push(&self.frame, now + queued))
                .unwrap_or_default();
            for latency_us in found {
                self.line(serde_json::json!({
                    "type": "cli_audio_latency",
                    "mouth_to_ear_ms": latency_us as f64 / 1000.0,
                }));
            }
            self.play();
            if last_stats.elapsed() >= STATS_INTERVAL {
                last_stats = std::time::Instant::now();
                let tracks = self.shared.mixer().stats();
                self.line(serde_json::json!({
                    "type": "cli_audio_playout",
                    "speaker": self.sink.report(),
                    "tracks": tracks,
                }));
            }
        }
        if let Some(recorder) = self.recorder.take() {
            recorder.finish();
        }
    }

    fn play(&mut self) {
        let Sink::Speaker(speaker) = &mut self.sink else {
            return;
        };
        if let Err(error) = speaker.play(&self.frame) {
            let lost = speaker.name().to_owned();
            // The device went away: fall back to the system default.
            match default_speaker()
                .ok_or_else(|| "no default speaker".to_owned())
                .and_then(|d| Speaker::open(&d.id, &d.name).map_err(|e| e.to_string()))
            {
                Ok(fallback) => {
                    self.sink = Sink::Speaker(Box::new(fallback));
                    self.line(serde_json::json!({
                        "type": "cli_audio_device",
                        "kind": "speaker",
                        "name": self.sink.name(),
                        "fallback": true,
                        "reason": format!("{lost}: {error}"),
                    }));
                }
                Err(reason) => {
                    self.sink = Sink::Clock { next_us: 0 };
                    self.line(serde_json::json!({
                        "type": "cli_audio_device",
                        "kind": "speaker",
                        "name": "none",
                        "fallback": true,
                        "reason": format!("{lost}: {error}; {reason}"),
                    }));
                }
            }
        }
    }

    fn switch(&mut self, choice: &DeviceChoice) {
        match Sink::open(&AudioOutput::Device(choice.clone())) {
            Ok(sink) => {
                self.sink = sink;
                self.line(serde_json::json!({
                    "type": "cli_audio_device",
                    "kind": "speaker",
                    "name": self.sink.name(),
                    "fallback": false,
                }));
            }
            Err(reason) => self.line(serde_json::json!({
                "type": "cli_audio_device_error",
                "kind": "speaker",
                "error": reason,
            })),
        }
    }
}
