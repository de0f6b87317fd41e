//! Simulcast layer sizes and I420 downscaling, one plane at a time with
//! pic-scale. Its resampling plans hold the filter weights and a scratch
//! buffer, so after the first frame of a given size scaling allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

use pic_scale::{
    ImageSize, ImageStore, ImageStoreMut, Resampling, ResamplingFunction, Scaler as PicScaler,
};

use crate::frame::VideoFrame;

/// The largest picture Parley sends: 1280×720 (or the same area in another shape).
pub const MAX_WIDTH: u32 = 1280;
pub const MAX_HEIGHT: u32 = 720;

/// Width and height of a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    pub fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// The three simulcast sizes (quarter, half, full) for a source: the full
/// layer fits the source within 1280×720 (rotated for portrait sources)
/// keeping its aspect ratio; the others halve it. All are even.
pub fn simulcast_sizes(source: Size) -> [Size; 3] {
    let (box_w, box_h) = if source.height > source.width {
        (MAX_HEIGHT, MAX_WIDTH)
    } else {
        (MAX_WIDTH, MAX_HEIGHT)
    };
    let fit = f64::min(
        1.0,
        f64::min(
            f64::from(box_w) / f64::from(source.width),
            f64::from(box_h) / f64::from(source.height),
        ),
    );
    let even = |v: f64| ((v / 2.0).round() as u32 * 2).max(2);
    let full = Size::new(
        even(f64::from(source.width) * fit),
        even(f64::from(source.height) * fit),
    );
    let scaled = |divisor: f64| {
        Size::new(
            even(f64::from(full.width) / divisor),
            even(f64::from(full.height) / divisor),
        )
    };
    [scaled(4.0), scaled(2.0), full]
}

/// Source width and height, then target width and height, of one plane.
type PlaneSizes = (u32, u32, u32, u32);

/// A resampling plan with its scratch buffer.
struct Plan {
    resampling: Arc<Resampling<u8, 1>>,
    scratch: Vec<u8>,
}

/// Scales I420 frames; keeps a plan per (source, target) plane size.
pub struct Scaler {
    scaler: PicScaler,
    plans: HashMap<PlaneSizes, Plan>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler")
            .field("plans", &self.plans.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for Scaler {
    fn default() -> Self {
        Self {
            // Bilinear is a good quality/speed trade for 2× and 4× reduction
            // of camera content; the encoder smooths the rest.
            scaler: PicScaler::new(ResamplingFunction::Bilinear),
            plans: HashMap::new(),
        }
    }
}

/// Why a scale failed (sizes that do not fit their buffers: a bug upstream).
#[derive(Debug, thiserror::Error)]
#[error("scaling failed: {0}")]
pub struct ScaleError(String);

fn scale_error(err: impl std::fmt::Display) -> ScaleError {
    ScaleError(err.to_string())
}

impl Scaler {
    /// Scales `src` into `dst` (whose size decides the output size).
    pub fn scale_into(&mut self, src: &VideoFrame, dst: &mut VideoFrame) -> Result<(), ScaleError> {
        let (sw, sh, dw, dh) = (src.width(), src.height(), dst.width(), dst.height());
        dst.captured_at_us = src.captured_at_us;
        let (dy, du, dv) = dst.planes_mut();
        self.plane(src.y(), (sw, sh), dy, (dw, dh))?;
        self.plane(src.u(), (sw / 2, sh / 2), du, (dw / 2, dh / 2))?;
        self.plane(src.v(), (sw / 2, sh / 2), dv, (dw / 2, dh / 2))?;
        Ok(())
    }

    fn plane(
        &mut self,
        src: &[u8],
        from: (u32, u32),
        dst: &mut [u8],
        to: (u32, u32),
    ) -> Result<(), ScaleError> {
        if from == to {
            dst.copy_from_slice(src);
            return Ok(());
        }
        let key = (from.0, from.1, to.0, to.1);
        if !self.plans.contains_key(&key) {
            let plan = self
                .scaler
                .plan_planar_resampling(
                    ImageSize::new(from.0 as usize, from.1 as usize),
                    ImageSize::new(to.0 as usize, to.1 as usize),
                )
                .map_err(scale_error)?;
            let scratch = plan.alloc_scratch();
            self.plans.insert(
                key,
                Plan {
                    resampling: plan,
                    scratch,
                },
            );
        }
        let plan = self.plans.get_mut(&key).expect("inserted above");
        let source = ImageStore::<u8, 1>::from_slice(src, from.0 as usize, from.1 as usize)
            .map_err(scale_error)?;
        let mut target = ImageStoreMut::<u8, 1>::from_slice(dst, to.0 as usize, to.1 as usize)
            .map_err(scale_error)?;
        plan.resampling
            .resample_with_scratch(&source, &mut target, &mut plan.scratch)
            .map_err(scale_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FramePool;
    use crate::stamp;
    use crate::synthetic_video::SyntheticVideo;

    #[test]
    fn layer_sizes_for_common_cameras() {
        let sizes = |w, h| simulcast_sizes(Size::new(w, h)).map(|s| (s.width, s.height));
        assert_eq!(sizes(1280, 720), [(320, 180), (640, 360), (1280, 720)]);
        assert_eq!(sizes(1920, 1080), [(320, 180), (640, 360), (1280, 720)]);
        assert_eq!(sizes(640, 480), [(160, 120), (320, 240), (640, 480)]);
        assert_eq!(sizes(1280, 960), [(240, 180), (480, 360), (960, 720)]);
        assert_eq!(sizes(720, 1280), [(180, 320), (360, 640), (720, 1280)]);
        assert_eq!(sizes(4, 2), [(2, 2), (2, 2), (4, 2)]);
    }

    #[test]
    fn downscaled_frames_keep_their_stamp() {
        let pool = FramePool::new(4);
        let mut source = SyntheticVideo::new(1280, 720, pool.clone());
        let mut scaler = Scaler::default();
        let frame = source.render(123_456);
        for size in simulcast_sizes(Size::new(1280, 720)) {
            let mut out = pool.take(size.width, size.height);
            scaler.scale_into(&frame, &mut out).unwrap();
            let read = stamp::read_stamp(&out).unwrap();
            assert_eq!(read.captured_at_us, 123_456, "{size:?}");
            assert_eq!(out.captured_at_us, 123_456);
        }
    }
}
