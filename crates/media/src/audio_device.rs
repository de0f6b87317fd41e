//! Microphones and speakers through cpal (ALSA, PulseAudio/PipeWire through
//! ALSA, `CoreAudio`, WASAPI). Everything is converted to and from 48 kHz mono
//! f32 here, so the rest of the engine never sees a device format.
//!
//! Device callbacks run on the audio thread: they convert samples and move
//! them through lock-free bounded rings (rtrb), never allocating, locking or
//! logging there, and dropping (and counting) rather than blocking when the
//! other side falls behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};

use crate::device::{DeviceError, DeviceInfo, pick};
use crate::frame::{AudioFrame, SAMPLE_RATE, SAMPLES_PER_FRAME};
use crate::resample::StreamResampler;

/// Capture ring: half a second at 48 kHz, so a reader stalled that long loses nothing.
const CAPTURE_RING: usize = SAMPLE_RATE as usize / 2;
/// Playout ring: 100 ms at the device rate. Playout latency can never build
/// up beyond it; audio that does not fit is dropped and counted.
const PLAYOUT_RING_MS: u32 = 100;
/// Largest device callback we prepare buffers for without allocating (samples).
const MAX_CALLBACK: usize = 16_384;

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

/// The system's default speaker: where playout falls back to when the
/// chosen one disappears.
pub fn default_speaker() -> Option<DeviceInfo> {
    cpal::default_host()
        .default_output_device()
        .as_ref()
        .and_then(describe)
}

/// The system's default microphone.
pub fn default_microphone() -> Option<DeviceInfo> {
    cpal::default_host()
        .default_input_device()
        .as_ref()
        .and_then(describe)
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

/// State shared between a device callback and its owner, all atomics.
#[derive(Debug, Default)]
struct Health {
    /// The device is gone (unplugged, host lost); other errors are glitches.
    failed: AtomicBool,
    glitches: AtomicU64,
    dropped_samples: AtomicU64,
    /// Capture: samples written to the ring so far, and the wall-clock time
    /// (µs) of the sample just after the last one written.
    written: AtomicU64,
    written_end_us: AtomicU64,
    /// Playout: the largest block the device has asked for at once (frames).
    largest_request: AtomicU64,
}

fn on_stream_error(health: &Health, err: &cpal::Error) {
    match err.kind() {
        cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::HostUnavailable => {
            health.failed.store(true, Ordering::Relaxed);
        }
        // Xruns and the like: the stream goes on.
        _ => {
            health.glitches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Calls a stream builder with the Rust sample type matching the device's
/// format: `with_sample_type!(format, label, build_input(args..))`.
macro_rules! with_sample_type {
    ($format:expr, $label:expr, $build:ident($($arg:expr),*)) => {
        match $format {
            SampleFormat::F32 => $build::<f32>($($arg),*),
            SampleFormat::I16 => $build::<i16>($($arg),*),
            SampleFormat::U16 => $build::<u16>($($arg),*),
            SampleFormat::I32 => $build::<i32>($($arg),*),
            other => Err(unsupported_format($label, other)),
        }
    };
}

/// An open microphone delivering 20 ms frames of 48 kHz mono.
pub struct Microphone {
    name: String,
    _stream: cpal::Stream,
    ring: rtrb::Consumer<f32>,
    read: u64,
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
        let (producer, ring) = rtrb::RingBuffer::new(CAPTURE_RING);
        let health = Arc::new(Health::default());
        let stream = with_sample_type!(
            config.sample_format(),
            &label,
            build_input(&device, &config, producer, health.clone())
        )?;
        stream.play().map_err(|e| busy_or_backend(&label, &e))?;
        Ok(Self {
            name: label,
            _stream: stream,
            ring,
            read: 0,
            health,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Samples dropped because the engine did not read in time.
    pub fn dropped_samples(&self) -> u64 {
        self.health.dropped_samples.load(Ordering::Relaxed)
    }

    /// Recoverable stream errors (overruns) so far.
    pub fn glitches(&self) -> u64 {
        self.health.glitches.load(Ordering::Relaxed)
    }

    /// Fills `frame` with the next 20 ms, stamped with when its first sample
    /// was captured. Returns `Ok(false)` if none arrived within `timeout`,
    /// and an error once the device is gone.
    pub fn read_frame(
        &mut self,
        frame: &mut AudioFrame,
        timeout: Duration,
    ) -> Result<bool, DeviceError> {
        let deadline = Instant::now() + timeout;
        while self.ring.slots() < SAMPLES_PER_FRAME {
            if self.health.failed.load(Ordering::Relaxed) || self.ring.is_abandoned() {
                return Err(DeviceError::Disconnected(self.name.clone()));
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            // The ring has no blocking read; a short sleep keeps the added
            // latency well under one frame.
            std::thread::sleep(Duration::from_millis(2));
        }
        frame.samples.resize(SAMPLES_PER_FRAME, 0.0);
        let (popped, _) = self.ring.pop_partial_slice(&mut frame.samples);
        debug_assert_eq!(popped.len(), SAMPLES_PER_FRAME);
        // The writer publishes its position after the samples themselves, so
        // this may be a block behind: an error of at most one callback.
        let written = self.health.written.load(Ordering::Acquire);
        let written_end_us = self.health.written_end_us.load(Ordering::Acquire);
        let behind = written.saturating_sub(self.read);
        frame.captured_at_us =
            written_end_us.saturating_sub(behind * 1_000_000 / u64::from(SAMPLE_RATE));
        self.read += SAMPLES_PER_FRAME as u64;
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
    mut ring: rtrb::Producer<f32>,
    health: Arc<Health>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels().max(1));
    let mut resampler = StreamResampler::new(config.sample_rate(), SAMPLE_RATE).map_err(backend)?;
    // Allocated here, reused by every callback.
    let mut mono = Vec::with_capacity(MAX_CALLBACK);
    let mut converted = Vec::with_capacity(MAX_CALLBACK * 2);
    let error_health = health.clone();
    device
        .build_input_stream(
            config.config(),
            move |data: &[T], info: &cpal::InputCallbackInfo| {
                let timestamp = info.timestamp();
                let waited = timestamp.callback.duration_since(timestamp.capture);
                mono.clear();
                mono.extend(data.chunks(channels).map(|f| {
                    f.iter().map(|&s| f32::from_sample(s)).sum::<f32>() / channels as f32
                }));
                converted.clear();
                if resampler.process(&mono, &mut converted).is_err() || converted.is_empty() {
                    return;
                }
                let (_, rest) = ring.push_partial_slice(&converted);
                let pushed = (converted.len() - rest.len()) as u64;
                if !rest.is_empty() {
                    health
                        .dropped_samples
                        .fetch_add(rest.len() as u64, Ordering::Relaxed);
                }
                // The callback's first sample was captured `waited` ago.
                let block_us = mono.len() as u64 * 1_000_000 / u64::from(SAMPLE_RATE);
                let end_us = (crate::clock::unix_micros() + block_us)
                    .saturating_sub(waited.as_micros() as u64);
                health.written_end_us.store(end_us, Ordering::Release);
                health.written.fetch_add(pushed, Ordering::Release);
            },
            move |err| on_stream_error(&error_health, &err),
            None,
        )
        .map_err(|e| busy_or_backend("microphone", &e))
}

/// An open speaker playing 48 kHz mono (converted to the device's format).
pub struct Speaker {
    name: String,
    _stream: cpal::Stream,
    ring: rtrb::Producer<f32>,
    ring_len: usize,
    device_rate: u32,
    health: Arc<Health>,
    resampler: StreamResampler,
    converted: Vec<f32>,
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
        let ring_len = (config.sample_rate() * PLAYOUT_RING_MS / 1000) as usize;
        let (ring, consumer) = rtrb::RingBuffer::new(ring_len);
        let health = Arc::new(Health::default());
        let stream = with_sample_type!(
            config.sample_format(),
            &label,
            build_output(&device, &config, consumer, health.clone())
        )?;
        stream.play().map_err(|e| busy_or_backend(&label, &e))?;
        Ok(Self {
            name: label,
            _stream: stream,
            ring,
            ring_len,
            device_rate: config.sample_rate(),
            health,
            resampler: StreamResampler::new(SAMPLE_RATE, config.sample_rate()).map_err(backend)?,
            converted: Vec::with_capacity(MAX_CALLBACK),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues 48 kHz mono samples for playout. What does not fit in the
    /// 100 ms ring is dropped and counted, so latency cannot build up.
    pub fn play(&mut self, samples: &[f32]) -> Result<(), DeviceError> {
        if self.health.failed.load(Ordering::Relaxed) || self.ring.is_abandoned() {
            return Err(DeviceError::Disconnected(self.name.clone()));
        }
        self.converted.clear();
        self.resampler
            .process(samples, &mut self.converted)
            .map_err(backend)?;
        let (_, rest) = self.ring.push_partial_slice(&self.converted);
        if !rest.is_empty() {
            self.health
                .dropped_samples
                .fetch_add(rest.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Audio queued for the device and not yet taken by it, in µs.
    pub fn buffered_us(&self) -> u64 {
        let queued = self.ring_len.saturating_sub(self.ring.slots()) as u64;
        queued * 1_000_000 / u64::from(self.device_rate.max(1))
    }

    /// The largest block the device has taken at once, in µs: playout must
    /// keep more than this queued or the device plays gaps.
    pub fn period_us(&self) -> u64 {
        self.health.largest_request.load(Ordering::Relaxed) * 1_000_000
            / u64::from(self.device_rate.max(1))
    }

    /// Samples dropped because playout was already 100 ms behind.
    pub fn dropped_samples(&self) -> u64 {
        self.health.dropped_samples.load(Ordering::Relaxed)
    }

    /// Recoverable stream errors (underruns) so far.
    pub fn glitches(&self) -> u64 {
        self.health.glitches.load(Ordering::Relaxed)
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    mut ring: rtrb::Consumer<f32>,
    health: Arc<Health>,
) -> Result<cpal::Stream, DeviceError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels().max(1));
    let request_health = Arc::clone(&health);
    device
        .build_output_stream(
            config.config(),
            move |data: &mut [T], _| {
                request_health
                    .largest_request
                    .fetch_max((data.len() / channels) as u64, Ordering::Relaxed);
                for frame in data.chunks_mut(channels) {
                    // An empty ring plays silence rather than stalling the device.
                    let sample = ring.pop().unwrap_or(0.0);
                    frame.fill(T::from_sample(sample));
                }
            },
            move |err| on_stream_error(&health, &err),
            None,
        )
        .map_err(|e| busy_or_backend("speaker", &e))
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
        assert!(frame.captured_at_us > 0, "frames carry their capture time");
        let mut speaker = Speaker::open(ALSA_NULL, "").unwrap();
        // Two seconds at once: no more than the 100 ms ring (plus what the
        // device took meanwhile) is kept; the rest is dropped, not queued.
        for _ in 0..100 {
            speaker.play(&[0.1; SAMPLES_PER_FRAME]).unwrap();
        }
        assert!(
            speaker.dropped_samples() > 0,
            "latency is bounded by dropping"
        );
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
