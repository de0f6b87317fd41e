//! Where video comes from (a camera or the synthetic source) and where
//! decoded pictures go to be seen ([`VideoSink`], e.g. the desktop app's
//! tiles). The engine hands every picture it shows, and every captured one
//! as the local preview, to the sink; the sink decides what to keep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;

use parley_media::camera::{CameraSource, CaptureRequest};
use parley_media::capture::VideoSource;
use parley_media::device::DeviceError;
use parley_media::frame::{FramePool, VideoFrame};
use parley_media::scale::Size;
use parley_media::synthetic_video::SyntheticVideo;

use super::audio::DeviceChoice;

/// The tile id of our own camera.
pub const LOCAL_TILE: &str = "local";

/// The tile id of a remote participant's track.
pub fn remote_tile(participant_id: &str, track_id: &str) -> String {
    format!("{participant_id}/{track_id}")
}

/// Where the camera picture comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoInput {
    /// A moving, stamped test picture (`--fake-media`).
    Synthetic,
    Camera(DeviceChoice),
}

/// Takes pictures to show. Called on the capture thread and the network
/// loop: it must copy what it keeps and return at once.
pub trait VideoSink: Send + Sync + std::fmt::Debug {
    fn show(&self, tile: &str, frame: &VideoFrame);
    /// The tile has no more pictures (track gone, camera off).
    fn clear(&self, tile: &str);
}

/// Opens the chosen video input at `size` and `fps`.
pub fn open_video(
    input: &VideoInput,
    size: Size,
    fps: u32,
    pool: &FramePool,
) -> Result<VideoSource, DeviceError> {
    match input {
        VideoInput::Synthetic => Ok(VideoSource::synthetic(
            SyntheticVideo::new(size.width, size.height, pool.clone()),
            fps,
        )),
        VideoInput::Camera(choice) => CameraSource::open(
            &choice.id,
            &choice.name,
            CaptureRequest {
                width: size.width,
                height: size.height,
                fps,
            },
            pool.clone(),
        )
        .map(VideoSource::Camera),
    }
}

/// The camera shown before joining (the prejoin screen): captured and
/// handed to the sink as [`LOCAL_TILE`], nothing encoded or sent.
#[derive(Debug)]
pub struct CameraPreview {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CameraPreview {
    /// Starts showing `input`; `errors` hears once if the camera fails.
    pub fn start(
        input: VideoInput,
        size: Size,
        fps: u32,
        sink: Arc<dyn VideoSink>,
        errors: std_mpsc::Sender<DeviceError>,
    ) -> Result<Self, DeviceError> {
        let stop = Arc::new(AtomicBool::new(false));
        // A camera stays on the thread that opened it (not every backend's
        // handle may cross threads); the outcome of opening comes back here.
        let (opened_tx, opened) = std_mpsc::sync_channel(1);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("camera-preview".into())
                .spawn(move || {
                    let pool = FramePool::new(4);
                    let mut source = match open_video(&input, size, fps, &pool) {
                        Ok(source) => {
                            let _ = opened_tx.send(Ok(()));
                            source
                        }
                        Err(err) => {
                            let _ = opened_tx.send(Err(err));
                            return;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        match source.next_frame() {
                            Ok(frame) => {
                                sink.show(LOCAL_TILE, &frame);
                                pool.recycle(frame);
                            }
                            Err(err) => {
                                let _ = errors.send(err);
                                break;
                            }
                        }
                    }
                    sink.clear(LOCAL_TILE);
                })
                .map_err(|e| DeviceError::Backend(e.to_string()))?
        };
        opened
            .recv()
            .map_err(|_| DeviceError::Backend("the preview thread ended".into()))??;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CameraPreview {
    fn drop(&mut self) {
        self.halt();
    }
}
