//! Microphones and speakers through cpal (ALSA, PulseAudio/PipeWire through
//! ALSA, `CoreAudio`, WASAPI). Everything is converted to and from 48 kHz mono
//! f32 here, so the rest of the engine never sees a device format.
//!
//! Device callbacks run on the audio thread: they only convert and move
//! samples through bounded queues, dropping (and counting) rather than
//! blocking when the other side falls behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};

use crate::device::{DeviceError, DeviceInfo, pick};
use crate::frame::{AudioFrame, SAMPLE_RATE, SAMPLES_PER_FRAME};
use crate::resample::StreamResampler;

/// Blocks of audio waiting between a device thread and the engine (~1 s).
const QUEUE_BLOCKS: usize = 100;

fn backend(err: impl std::fmt::Display) -> DeviceError {
    DeviceError::Backend(err.to_string())
}

/// ALSA's "null" PCM: real to cpal, never what a person means by a
/// microphone or speaker. Hidden from lists; still openable by id (tests use it).
const ALSA_NULL: &str = "alsa:null";

fn describe(device: &cpal::Device) -> Option<DeviceInfo> {
    let id = device.id().ok()?.to_string();
    let name = device
        .description()
        .map_or_else(|_| id.clone(), |d| d.name().to_owned());
    Some(DeviceInfo { id, name })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Capture,
    Playout,
}

fn devices(direction: Direction) -> Result<Vec<cpal::Device>, DeviceError> {
    let host = cpal::default_host();
    Ok(match direction {
        Direction::Capture => host.input_devices().map_err(backend)?.collect(),
        Direction::Playout => host.output_devices().map_err(backend)?.collect(),
    })
}

fn default_config(
    device: &cpal::Device,
    direction: Direction,
) -> Result<cpal::SupportedStreamConfig, cpal::Error> {
    match direction {
        Direction::Capture => device.default_input_config(),
        Direction::Playout => device.default_output_config(),
    }
}

fn list(direction: Direction) -> Result<Vec<DeviceInfo>, DeviceError> {
    Ok(devices(direction)?
        .iter()
        .filter(|d| default_config(d, direction).is_ok())
        .filter_map(describe)
        .filter(|d| d.id != ALSA_NULL)
        .collect())
}

/// Microphones present now (an empty list on a machine without any).
pub fn list_microphones() -> Result<Vec<DeviceInfo>, DeviceError> {
    list(Direction::Capture)
}

/// Speakers and headphones present now.
pub fn list_speakers() -> Result<Vec<DeviceInfo>, DeviceError> {
    list(Direction::Playout)
}

/// The device with this id (or else this name), its display name and its
/// default stream configuration.
fn prepare(
    direction: Direction,
    id: &str,
    name: &str,
) -> Result<(cpal::Device, String, cpal::SupportedStreamConfig), DeviceError> {
    let device = find(devices(direction)?.into_iter(), id, name)?;
    let label = describe(&device).map_or_else(|| name.to_owned(), |d| d.name);
    let config = default_config(&device, direction).map_err(|e| DeviceError::Unsupported {
        device: label.clone(),
        detail: e.to_string(),
    })?;
    Ok((device, label, config))
}

fn unsupported_format(label: &str, format: SampleFormat) -> DeviceError {
    DeviceError::Unsupported {
        device: label.to_owned(),
        detail: format!("sample format {format}"),
    }
}

fn find(
    devices: impl Iterator<Item = cpal::Device>,
    id: &str,
    name: &str,
) -> Result<cpal::Device, DeviceError> {
    let devices: Vec<(DeviceInfo, cpal::Device)> = devices
        .filter_map(|d| describe(&d).map(|info| (info, d)))
        .collect();
    let infos: Vec<DeviceInfo> = devices.iter().map(|(info, _)| info.clone()).collect();
    let chosen = pick(&infos, id, name).ok_or_else(|| DeviceError::NotFound {
        id: id.to_owned(),
        name: name.to_owned(),
    })?;
    Ok(devices
        .into_iter()
        .find(|(info, _)| info == chosen)
        .map(|(_, device)| device)
        .expect("picked from this list"))
}

/// Health shared between a device callback and its owner.
#[derive(Debug, Default)]
struct Health {
    failed: AtomicBool,
    dropped_blocks: AtomicU64,
}

/// An open microphone delivering 20 ms frames of 48 kHz mono.
pub struct Microphone {
    name: String,
    _stream: cpal::Stream,
    blocks: Receiver<Vec<f32>>,
    pending: Vec<f32>,
    health: Arc<Health>,
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Microphone")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Microphone {
    /// Opens the microphone with this id, or else this name.
    pub fn open(id: &str, name: &str) -> Result<Self, DeviceError> {
        let (device, label, config) = prepare(Direction::Capture, id, name)?;
        let (sender, blocks) = mpsc::sync_channel(QUEUE_BLOCKS);
        let health = Arc::new(Health::default());
        let stream = match config.sample_format() {
            SampleFormat::F32 => build_input::<f32>(&device, &config, sender, health.clone()),
            SampleFormat::I16 => build_input::<i16>(&device, &config, sender, health.clone()),
            SampleFormat::U16 => build_input::<u16>(&device, &config, sender, health.clone()),
            SampleFormat::I32 => build_input::<i32>(&device, &config, sender, health.clone()),
            other => Err(unsupported_format(&label, other)),
        }?;
        stream.play().map_err(|e| busy_or_backend(&label, &e))?;
        Ok(Self {
            name: label,
            _stream: stream,
            blocks,
            pending: Vec::with_capacity(SAMPLES_PER_FRAME * 2),
            health,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Blocks that were dropped because the engine did not read in time.
    pub fn dropped_blocks(&self) -> u64 {
        self.health.dropped_blocks.load(Ordering::Relaxed)
    }

    /// Fills `frame` with the next 20 ms. Returns `Ok(false)` if none
    /// arrived within `timeout`, and an error once the device is gone.
    pub fn read_frame(
        &mut self,
        frame: &mut AudioFrame,
        timeout: Duration,
    ) -> Result<bool, DeviceError> {
        while self.pending.len() < SAMPLES_PER_FRAME {
            if self.health.failed.load(Ordering::Relaxed) {
                return Err(DeviceError::Disconnected(self.name.clone()));
            }
            match self.blocks.recv_timeout(timeout) {
                Ok(block) => self.pending.extend_from_slice(&block),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(false),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(DeviceError::Disconnected(self.name.clone()));
                }
            }
        }
        frame.samples.clear();
        frame
            .samples
            .extend(self.pending.drain(..SAMPLES_PER_FRAME));
        frame.captured_at_us = crate::clock::unix_micros();
        Ok(true)
    }
}

fn busy_or_backend(name: &str, err: &cpal::Error) -> DeviceError {
    match err.kind() {
        cpal::ErrorKind::DeviceBusy => DeviceError::Busy(name.to_owned()),
        cpal::ErrorKind::DeviceNotAvailable => DeviceError::Disconnected(name.to_owned()),
        _ => DeviceError::Backend(format!("{name}: {err}")),
    }
}

fn build_input<T>(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    sender: SyncSender<Vec<f32>>,
    health: Arc<Health>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels().max(1));
    let mut resampler = StreamResampler::new(config.sample_rate(), SAMPLE_RATE).map_err(backend)?;
    let mut mono = Vec::new();
    let error_health = health.clone();
    device
        .build_input_stream(
            config.config(),
            move |data: &[T], _| {
                mono.clear();
                mono.extend(data.chunks(channels).map(|f| {
                    f.iter().map(|&s| f32::from_sample(s)).sum::<f32>() / channels as f32
                }));
                let mut block = Vec::with_capacity(mono.len() * 2);
                if resampler.process(&mono, &mut block).is_err() {
                    return;
                }
                if let Err(TrySendError::Full(_)) = sender.try_send(block) {
                    health.dropped_blocks.fetch_add(1, Ordering::Relaxed);
                }
            },
            move |err| {
                tracing::warn!(%err, "microphone stream failed");
                error_health.failed.store(true, Ordering::Relaxed);
            },
            None,
        )
        .map_err(backend)
}

/// An open speaker playing 48 kHz mono (converted to the device's format).
pub struct Speaker {
    name: String,
    _stream: cpal::Stream,
    blocks: SyncSender<Vec<f32>>,
    health: Arc<Health>,
    resampler: StreamResampler,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Speaker {
    pub fn open(id: &str, name: &str) -> Result<Self, DeviceError> {
        let (device, label, config) = prepare(Direction::Playout, id, name)?;
        let (blocks, receiver) = mpsc::sync_channel(QUEUE_BLOCKS);
        let health = Arc::new(Health::default());
        let stream = match config.sample_format() {
            SampleFormat::F32 => build_output::<f32>(&device, &config, receiver, health.clone()),
            SampleFormat::I16 => build_output::<i16>(&device, &config, receiver, health.clone()),
            SampleFormat::U16 => build_output::<u16>(&device, &config, receiver, health.clone()),
            SampleFormat::I32 => build_output::<i32>(&device, &config, receiver, health.clone()),
            other => Err(unsupported_format(&label, other)),
        }?;
        stream.play().map_err(|e| busy_or_backend(&label, &e))?;
        Ok(Self {
            name: label,
            _stream: stream,
            blocks,
            health,
            resampler: StreamResampler::new(SAMPLE_RATE, config.sample_rate()).map_err(backend)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues 48 kHz mono samples for playout. Drops them (and counts it)
    /// when the device is already a second behind.
    pub fn play(&mut self, samples: &[f32]) -> Result<(), DeviceError> {
        if self.health.failed.load(Ordering::Relaxed) {
            return Err(DeviceError::Disconnected(self.name.clone()));
        }
        let mut block = Vec::with_capacity(samples.len() * 2);
        self.resampler
            .process(samples, &mut block)
            .map_err(backend)?;
        match self.blocks.try_send(block) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.health.dropped_blocks.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(DeviceError::Disconnected(self.name.clone())),
        }
    }

    /// Blocks dropped because playout was more than a second behind.
    pub fn dropped_blocks(&self) -> u64 {
        self.health.dropped_blocks.load(Ordering::Relaxed)
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    receiver: Receiver<Vec<f32>>,
    health: Arc<Health>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels().max(1));
    let mut current: Vec<f32> = Vec::new();
    let mut position = 0;
    device
        .build_output_stream(
            config.config(),
            move |data: &mut [T], _| {
                for frame in data.chunks_mut(channels) {
                    if position >= current.len() {
                        // Underrun plays silence rather than stalling the device.
                        current = receiver.try_recv().unwrap_or_default();
                        position = 0;
                    }
                    let sample = current.get(position).copied().unwrap_or(0.0);
                    position += 1;
                    frame.fill(T::from_sample(sample));
                }
            },
            move |err| {
                tracing::warn!(%err, "speaker stream failed");
                health.failed.store(true, Ordering::Relaxed);
            },
            None,
        )
        .map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_devices_are_typed_errors() {
        // Whatever this machine has, no device carries these names.
        let err = Microphone::open("alsa:no-such-card", "No Such Microphone").unwrap_err();
        assert!(matches!(err, DeviceError::NotFound { .. }), "{err}");
        let err = Speaker::open("alsa:no-such-card", "No Such Speaker").unwrap_err();
        assert!(matches!(err, DeviceError::NotFound { .. }), "{err}");
    }

    #[test]
    fn listing_hides_the_null_device() {
        // On this machine (and CI) there is no sound card: both lists are
        // empty, not errors. Elsewhere they hold real devices only.
        for device in list_microphones()
            .unwrap()
            .iter()
            .chain(&list_speakers().unwrap())
        {
            assert_ne!(device.id, ALSA_NULL);
        }
    }

    #[test]
    fn the_real_cpal_path_runs_on_alsa_null() {
        if cpal::default_host().id() != cpal::HostId::Alsa {
            return; // the null PCM is ALSA's
        }
        let mut mic = Microphone::open(ALSA_NULL, "").unwrap();
        let mut frame = AudioFrame::silent();
        let mut frames = 0;
        for _ in 0..5 {
            if mic.read_frame(&mut frame, Duration::from_secs(2)).unwrap() {
                assert_eq!(frame.samples.len(), SAMPLES_PER_FRAME);
                assert!(
                    frame.samples.iter().all(|&s| s == 0.0),
                    "null captures silence"
                );
                frames += 1;
            }
        }
        assert_eq!(frames, 5, "the device delivered 100 ms in 20 ms frames");
        let mut speaker = Speaker::open(ALSA_NULL, "").unwrap();
        for _ in 0..5 {
            speaker.play(&[0.1; SAMPLES_PER_FRAME]).unwrap();
        }
        assert_eq!(speaker.dropped_blocks(), 0);
    }

    #[test]
    #[ignore = "needs a microphone"]
    fn a_real_microphone_delivers_frames() {
        let mic = list_microphones()
            .unwrap()
            .into_iter()
            .next()
            .expect("a microphone");
        let mut source = Microphone::open(&mic.id, &mic.name).unwrap();
        let mut frame = AudioFrame::silent();
        assert!(
            source
                .read_frame(&mut frame, Duration::from_secs(2))
                .unwrap()
        );
        assert_eq!(frame.samples.len(), SAMPLES_PER_FRAME);
    }
}
