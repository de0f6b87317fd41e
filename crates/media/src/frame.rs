//! Video and audio frames, and a pool that recycles their buffers so that
//! steady-state capture → scale → encode allocates nothing per frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An I420 (YUV 4:2:0 planar) picture: Y plane then U then V, tightly packed,
/// with the time it was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    width: u32,
    height: u32,
    data: Vec<u8>,
    /// Capture time, as microseconds since the Unix epoch.
    pub captured_at_us: u64,
}

impl VideoFrame {
    /// A black frame. Width and height must be even and non-zero.
    pub fn new(width: u32, height: u32) -> Self {
        let mut frame = Self {
            width,
            height,
            data: Vec::new(),
            captured_at_us: 0,
        };
        frame.reshape(width, height);
        frame
    }

    /// Bytes an I420 frame of this size occupies.
    pub fn byte_len(width: u32, height: u32) -> usize {
        let luma = width as usize * height as usize;
        luma + luma / 2
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Resizes the buffer for another size, reusing its capacity; the content
    /// is black (Y=16, U=V=128, limited range).
    pub fn reshape(&mut self, width: u32, height: u32) {
        assert!(
            width > 0 && height > 0 && width.is_multiple_of(2) && height.is_multiple_of(2),
            "I420 frames need even, non-zero dimensions, got {width}x{height}"
        );
        self.width = width;
        self.height = height;
        let luma = width as usize * height as usize;
        self.data.clear();
        self.data.resize(luma, 16);
        self.data.resize(luma + luma / 2, 128);
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    pub fn u(&self) -> &[u8] {
        let (start, len) = (self.luma_len(), self.chroma_len());
        &self.data[start..start + len]
    }

    pub fn v(&self) -> &[u8] {
        let (start, len) = (self.luma_len() + self.chroma_len(), self.chroma_len());
        &self.data[start..start + len]
    }

    /// The three planes, mutable at once.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (luma, chroma) = (self.luma_len(), self.chroma_len());
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn chroma_len(&self) -> usize {
        self.luma_len() / 4
    }
}

impl openh264::formats::YUVSource for VideoFrame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width as usize, self.height as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let chroma = self.width as usize / 2;
        (self.width as usize, chroma, chroma)
    }

    fn y(&self) -> &[u8] {
        VideoFrame::y(self)
    }

    fn u(&self) -> &[u8] {
        VideoFrame::u(self)
    }

    fn v(&self) -> &[u8] {
        VideoFrame::v(self)
    }
}

/// Recycles frame buffers. Cloning shares the pool; it is bounded, so frames
/// returned beyond its capacity are simply freed.
#[derive(Debug, Clone)]
pub struct FramePool {
    free: Arc<Mutex<Vec<VideoFrame>>>,
    capacity: usize,
}

impl FramePool {
    pub fn new(capacity: usize) -> Self {
        Self {
            free: Arc::default(),
            capacity,
        }
    }

    /// A frame of this size, recycled when one is free (its content is
    /// unspecified: the caller overwrites it).
    pub fn take(&self, width: u32, height: u32) -> VideoFrame {
        let recycled = self.free.lock().map(|mut free| free.pop()).ok().flatten();
        match recycled {
            Some(mut frame) => {
                if frame.width != width || frame.height != height {
                    frame.reshape(width, height);
                }
                frame
            }
            None => VideoFrame::new(width, height),
        }
    }

    /// Gives a frame back for reuse.
    pub fn recycle(&self, frame: VideoFrame) {
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.capacity
        {
            free.push(frame);
        }
    }

    /// Frames waiting to be reused.
    pub fn idle(&self) -> usize {
        self.free.lock().map_or(0, |free| free.len())
    }
}

/// 48 kHz mono audio as 32-bit floats in [-1, 1].
pub const SAMPLE_RATE: u32 = 48_000;
/// 20 ms of audio at [`SAMPLE_RATE`]: the unit every audio stage works in.
pub const SAMPLES_PER_FRAME: usize = 960;
/// Duration of one audio frame.
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// One 20 ms block of 48 kHz mono audio and its capture time.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    pub samples: Vec<f32>,
    /// Capture time of the first sample, microseconds since the Unix epoch.
    pub captured_at_us: u64,
}

impl AudioFrame {
    pub fn silent() -> Self {
        Self {
            samples: vec![0.0; SAMPLES_PER_FRAME],
            captured_at_us: 0,
        }
    }
}

/// Mean power of a block of samples in dB relative to full scale (dBov);
/// digital silence reads as -130 dB rather than minus infinity.
pub fn level_db(samples: &[f32]) -> f32 {
    let energy = samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32;
    10.0 * energy.max(1e-13).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_have_i420_sizes() {
        let frame = VideoFrame::new(320, 180);
        assert_eq!(frame.y().len(), 320 * 180);
        assert_eq!(frame.u().len(), 160 * 90);
        assert_eq!(frame.v().len(), 160 * 90);
        assert_eq!(frame.as_bytes().len(), VideoFrame::byte_len(320, 180));
    }

    #[test]
    fn pool_reuses_buffers_without_reallocating() {
        let pool = FramePool::new(2);
        let frame = pool.take(640, 360);
        let address = frame.as_bytes().as_ptr();
        pool.recycle(frame);
        let again = pool.take(640, 360);
        assert_eq!(again.as_bytes().as_ptr(), address, "same buffer");
        pool.recycle(again);
        // A smaller frame fits in the same allocation too.
        let smaller = pool.take(320, 180);
        assert_eq!(smaller.as_bytes().as_ptr(), address);
        assert_eq!(smaller.as_bytes().len(), VideoFrame::byte_len(320, 180));
    }

    #[test]
    fn pool_is_bounded() {
        let pool = FramePool::new(1);
        pool.recycle(VideoFrame::new(2, 2));
        pool.recycle(VideoFrame::new(2, 2));
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    #[should_panic(expected = "even")]
    fn odd_sizes_are_a_bug() {
        let _ = VideoFrame::new(321, 180);
    }
}
