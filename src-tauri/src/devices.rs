//! Devices as the UI lists them, what a choice means for the engine, and
//! the microphone level meter of the prejoin screen.
//!
//! With `--fake-media` two synthetic cameras and microphones and a silent
//! speaker come first, so QA can pick "another device" on machines with
//! none; real devices follow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;

use parley_client::media::audio::{AudioInput, AudioOutput, DeviceChoice};
use parley_client::media::publisher::audio_level;
use parley_client::media::video::VideoInput;
use parley_client::profile::SavedDevice;
use parley_media::audio_device::{
    Microphone, default_microphone, default_speaker, list_microphones, list_speakers,
};
use parley_media::camera::list_cameras;
use parley_media::capture::AudioSource;
use parley_media::device::DeviceInfo;
use parley_media::frame::AudioFrame;
use parley_media::synthetic_audio::{Signal, SyntheticAudio};
use serde::Serialize;

const SYNTHETIC: &str = "synthetic:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Camera,
    Microphone,
    Speaker,
}

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DeviceList {
    pub cameras: Vec<Device>,
    pub microphones: Vec<Device>,
    pub speakers: Vec<Device>,
    /// Listing a kind failed (no permission, no backend): say why.
    pub errors: Vec<String>,
}

impl DeviceList {
    pub fn of_kind(&self, kind: DeviceKind) -> &[Device] {
        match kind {
            DeviceKind::Camera => &self.cameras,
            DeviceKind::Microphone => &self.microphones,
            DeviceKind::Speaker => &self.speakers,
        }
    }
}

fn synthetic(kind: &str, names: &[&str]) -> Vec<Device> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Device {
            id: format!("{SYNTHETIC}{kind}-{}", i + 1),
            name: (*name).to_owned(),
        })
        .collect()
}

pub fn list(fake_media: bool) -> DeviceList {
    let mut devices = DeviceList::default();
    if fake_media {
        devices.cameras = synthetic("camera", &["Synthetic camera", "Synthetic camera 2"]);
        devices.microphones = synthetic(
            "microphone",
            &["Synthetic microphone", "Synthetic microphone 2"],
        );
        devices.speakers = synthetic("speaker", &["Silent speaker"]);
    }
    let mut add = |kind: &str,
                   listed: Result<Vec<DeviceInfo>, parley_media::device::DeviceError>,
                   into: fn(&mut DeviceList) -> &mut Vec<Device>| match listed {
        Ok(found) => into(&mut devices).extend(found.into_iter().map(|d| Device {
            id: d.id,
            name: d.name,
        })),
        Err(err) => devices.errors.push(format!("{kind}: {err}")),
    };
    add("cameras", list_cameras(), |d| &mut d.cameras);
    add("microphones", list_microphones(), |d| &mut d.microphones);
    add("speakers", list_speakers(), |d| &mut d.speakers);
    devices
}

fn as_infos(devices: &[Device]) -> Vec<DeviceInfo> {
    devices
        .iter()
        .map(|d| DeviceInfo {
            id: d.id.clone(),
            name: d.name.clone(),
        })
        .collect()
}

/// The present device a saved choice means (id, else name), else the
/// first one listed.
pub fn resolve(saved: Option<&SavedDevice>, present: &[Device]) -> Option<Device> {
    let infos = as_infos(present);
    saved
        .and_then(|s| s.resolve(&infos))
        .map(|d| Device {
            id: d.id.clone(),
            name: d.name.clone(),
        })
        .or_else(|| present.first().cloned())
}

fn is_synthetic(device: &Device) -> bool {
    device.id.starts_with(SYNTHETIC)
}

fn choice(device: &Device) -> DeviceChoice {
    DeviceChoice {
        id: device.id.clone(),
        name: device.name.clone(),
    }
}

pub fn video_input(camera: Option<&Device>) -> Option<VideoInput> {
    camera.map(|c| {
        if is_synthetic(c) {
            VideoInput::Synthetic
        } else {
            VideoInput::Camera(choice(c))
        }
    })
}

pub fn audio_input(microphone: Option<&Device>) -> AudioInput {
    match microphone {
        Some(m) if !is_synthetic(m) => AudioInput::Device(choice(m)),
        Some(_) => AudioInput::Synthetic,
        // No microphone at all: the default one, if it appears.
        None => {
            default_microphone().map_or(AudioInput::Synthetic, |d| AudioInput::Device(d.into()))
        }
    }
}

pub fn audio_output(speaker: Option<&Device>) -> AudioOutput {
    match speaker {
        Some(s) if !is_synthetic(s) => AudioOutput::Device(choice(s)),
        Some(_) => AudioOutput::Clock,
        None => default_speaker().map_or(AudioOutput::Clock, |d| AudioOutput::Device(d.into())),
    }
}

/// The prejoin level meter: reads the chosen microphone on a thread and
/// keeps its level (RFC 6464: 0 loudest, 127 silence).
#[derive(Debug)]
pub struct MicMeter {
    pub level: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MicMeter {
    pub fn start(input: &AudioInput) -> Result<Self, String> {
        let mut source = match input {
            AudioInput::Synthetic => {
                AudioSource::synthetic(SyntheticAudio::new(Signal::Speech, false))
            }
            AudioInput::Device(choice) => Microphone::open(&choice.id, &choice.name)
                .map(AudioSource::Microphone)
                .map_err(|e| e.to_string())?,
        };
        let level = Arc::new(AtomicU8::new(127));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (level, stop) = (Arc::clone(&level), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("mic-meter".into())
                .spawn(move || {
                    let mut frame = AudioFrame::silent();
                    while !stop.load(Ordering::Relaxed) {
                        if source.next_frame(&mut frame).is_err() {
                            level.store(127, Ordering::Relaxed);
                            break;
                        }
                        level.store(audio_level(&frame.samples), Ordering::Relaxed);
                    }
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Self {
            level,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MicMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
