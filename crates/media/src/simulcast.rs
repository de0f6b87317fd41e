//! Three H.264 encodings of one source (quarter, half and full size), each
//! with its own bitrate and frame rate, and each pausable: the SFU tells a
//! publisher to stop a layer nobody watches (dynacast), which saves the CPU
//! of scaling and encoding it.

use crate::frame::{FramePool, VideoFrame};
use crate::h264::{CodecError, EncodedInfo, EncoderComplexity, EncoderSettings, H264Encoder};
use crate::scale::{Scaler, Size, simulcast_sizes};

/// Number of simulcast layers.
pub const LAYERS: usize = 3;
/// RTP stream ids of the layers, lowest first.
pub const RIDS: [&str; LAYERS] = ["q", "h", "f"];
/// Target bitrates for 1280×720 content, lowest layer first; other shapes
/// scale them by area.
pub const REFERENCE_BITRATES: [u32; LAYERS] = [160_000, 450_000, 1_700_000];
const REFERENCE_PIXELS: f64 = 1280.0 * 720.0;

/// What one layer sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    pub rid: &'static str,
    pub size: Size,
    pub bitrate_bps: u32,
    pub max_fps: f32,
}

/// Sensible layers for a source of this size at this frame rate.
pub fn default_layers(source: Size, fps: f32) -> [LayerSpec; LAYERS] {
    let sizes = simulcast_sizes(source);
    std::array::from_fn(|i| {
        let area = sizes[i].pixels() as f64 / (REFERENCE_PIXELS / 4f64.powi(2 - i as i32));
        LayerSpec {
            rid: RIDS[i],
            size: sizes[i],
            bitrate_bps: (f64::from(REFERENCE_BITRATES[i]) * area)
                .round()
                .max(30_000.0) as u32,
            max_fps: fps,
        }
    })
}

#[derive(Debug)]
struct Layer {
    spec: LayerSpec,
    encoder: H264Encoder,
    active: bool,
    /// Capture time before which the next frame of this layer is not due.
    next_due_us: Option<u64>,
    scaled: Option<VideoFrame>,
}

fn frame_interval_us(fps: f32) -> u64 {
    (1e6 / f64::from(fps.max(1.0))) as u64
}

/// Whether a layer should encode a frame captured at `captured`. A quarter
/// interval of early arrival is tolerated (camera jitter), and a due time far
/// in the future means the clock stepped back: encode and re-anchor.
fn is_due(next_due_us: Option<u64>, captured: u64, interval: u64) -> bool {
    next_due_us.is_none_or(|due| captured + interval / 4 >= due || due > captured + 2 * interval)
}

/// Encodes every active layer of each source frame.
#[derive(Debug)]
pub struct SimulcastEncoder {
    layers: Vec<Layer>,
    scaler: Scaler,
    pool: FramePool,
}

impl SimulcastEncoder {
    pub fn new(
        specs: [LayerSpec; LAYERS],
        complexity: EncoderComplexity,
        pool: FramePool,
    ) -> Result<Self, CodecError> {
        let layers = specs
            .into_iter()
            .map(|spec| {
                let encoder = H264Encoder::new(EncoderSettings {
                    width: spec.size.width,
                    height: spec.size.height,
                    bitrate_bps: spec.bitrate_bps,
                    max_fps: spec.max_fps,
                    complexity,
                })?;
                Ok(Layer {
                    spec,
                    encoder,
                    active: true,
                    next_due_us: None,
                    scaled: None,
                })
            })
            .collect::<Result<_, CodecError>>()?;
        Ok(Self {
            layers,
            scaler: Scaler::default(),
            pool,
        })
    }

    pub fn spec(&self, layer: usize) -> &LayerSpec {
        &self.layers[layer].spec
    }

    pub fn is_active(&self, layer: usize) -> bool {
        self.layers[layer].active
    }

    /// Encodes `frame` into each due, active layer; `out[i]` is cleared and
    /// receives layer `i`'s access unit. The buffers are the caller's, so
    /// their capacity is reused from frame to frame.
    pub fn encode(
        &mut self,
        frame: &VideoFrame,
        out: &mut [Vec<u8>; LAYERS],
    ) -> Result<[Option<EncodedInfo>; LAYERS], CodecError> {
        let captured = frame.captured_at_us;
        let mut results = [None; LAYERS];
        let mut scaled_now = [false; LAYERS];
        // From the top down, each layer scaled from the next larger one scaled
        // this frame (cheaper than scaling everything from the source).
        for index in (0..LAYERS).rev() {
            out[index].clear();
            let layer = &self.layers[index];
            let interval = frame_interval_us(layer.spec.max_fps);
            if !layer.active || !is_due(layer.next_due_us, captured, interval) {
                continue;
            }
            let size = layer.spec.size;
            let source_size = (frame.width(), frame.height()) == (size.width, size.height);
            let result = if source_size {
                // The source already has this layer's size: encode it as it is.
                self.layers[index]
                    .encoder
                    .encode_into(frame, &mut out[index])?
            } else {
                let mut scaled = self.layers[index]
                    .scaled
                    .take()
                    .unwrap_or_else(|| self.pool.take(size.width, size.height));
                if (scaled.width(), scaled.height()) != (size.width, size.height) {
                    scaled.reshape(size.width, size.height);
                }
                let larger = (index + 1..LAYERS)
                    .find(|&i| scaled_now[i])
                    .and_then(|i| self.layers[i].scaled.as_ref());
                self.scaler
                    .scale_into(larger.unwrap_or(frame), &mut scaled)
                    .map_err(|e| CodecError::Encoder(e.to_string()))?;
                let result = self.layers[index]
                    .encoder
                    .encode_into(&scaled, &mut out[index])?;
                self.layers[index].scaled = Some(scaled);
                scaled_now[index] = true;
                result
            };
            results[index] = result;
            let layer = &mut self.layers[index];
            layer.next_due_us = Some(match layer.next_due_us {
                // Stay on the grid while frames arrive on time; re-anchor after a
                // gap or a clock step so one late frame does not cost a burst.
                Some(due) if captured < due + interval => due + interval,
                _ => captured + interval,
            });
        }
        Ok(results)
    }

    /// Pauses or resumes a layer. A resumed layer starts with a keyframe so
    /// receivers can decode it at once.
    pub fn set_active(&mut self, layer: usize, active: bool) {
        let layer = &mut self.layers[layer];
        if active && !layer.active {
            layer.encoder.request_keyframe();
            layer.next_due_us = None;
        }
        layer.active = active;
        if !active && let Some(frame) = layer.scaled.take() {
            self.pool.recycle(frame);
        }
    }

    pub fn request_keyframe(&mut self, layer: usize) {
        self.layers[layer].encoder.request_keyframe();
    }

    pub fn set_bitrate(&mut self, layer: usize, bps: u32) -> Result<(), CodecError> {
        self.layers[layer].spec.bitrate_bps = bps;
        self.layers[layer].encoder.set_bitrate(bps)
    }

    pub fn set_max_fps(&mut self, layer: usize, fps: f32) -> Result<(), CodecError> {
        self.layers[layer].spec.max_fps = fps;
        self.layers[layer].encoder.set_max_fps(fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::{H264Decoder, is_keyframe};
    use crate::stamp::read_stamp;
    use crate::synthetic_video::SyntheticVideo;

    const FRAME_US: u64 = 33_333;

    fn encoder() -> (SimulcastEncoder, SyntheticVideo) {
        let pool = FramePool::new(8);
        let source = Size::new(1280, 720);
        let specs = default_layers(source, 30.0);
        (
            SimulcastEncoder::new(specs, EncoderComplexity::Medium, pool.clone()).unwrap(),
            SyntheticVideo::new(1280, 720, pool),
        )
    }

    #[test]
    fn default_layers_follow_the_reference_for_hd_and_scale_by_area() {
        let hd = default_layers(Size::new(1280, 720), 30.0);
        assert_eq!(hd.map(|l| l.bitrate_bps), REFERENCE_BITRATES);
        assert_eq!(hd.map(|l| l.rid), RIDS);
        let vga = default_layers(Size::new(640, 480), 30.0);
        assert_eq!(vga[2].size, Size::new(640, 480));
        // 640×480 has a third of 1280×720's area.
        assert_eq!(vga[2].bitrate_bps, 566_667);
    }

    #[test]
    fn every_layer_decodes_at_its_size_with_the_stamp() {
        let (mut simulcast, mut source) = encoder();
        let mut out: [Vec<u8>; LAYERS] = Default::default();
        let mut decoders: Vec<H264Decoder> = (0..LAYERS)
            .map(|_| H264Decoder::new(FramePool::new(2)).unwrap())
            .collect();
        let mut decoded = [0usize; LAYERS];
        for i in 0..30 {
            let frame = source.render(i * FRAME_US);
            let results = simulcast.encode(&frame, &mut out).unwrap();
            for layer in 0..LAYERS {
                if results[layer].is_none() {
                    continue;
                }
                let picture = decoders[layer].decode(&out[layer]).unwrap().unwrap();
                let size = simulcast.spec(layer).size;
                assert_eq!(
                    (picture.width(), picture.height()),
                    (size.width, size.height)
                );
                assert_eq!(read_stamp(&picture).unwrap().captured_at_us, i * FRAME_US);
                decoded[layer] += 1;
            }
        }
        assert!(
            decoded.iter().all(|&n| n >= 27),
            "decoded per layer: {decoded:?}"
        );
    }

    #[test]
    fn a_paused_layer_costs_nothing_and_resumes_with_a_keyframe() {
        let (mut simulcast, mut source) = encoder();
        let mut out: [Vec<u8>; LAYERS] = Default::default();
        let mut full_layer_frames = Vec::new();
        let mut lower_layer_frames = 0;
        for i in 0..30u64 {
            match i {
                10 => simulcast.set_active(2, false),
                20 => simulcast.set_active(2, true),
                _ => {}
            }
            let results = simulcast
                .encode(&source.render(i * FRAME_US), &mut out)
                .unwrap();
            if let Some(info) = results[2] {
                full_layer_frames.push((i, info.keyframe && is_keyframe(&out[2])));
            }
            if (10..20).contains(&i) {
                lower_layer_frames +=
                    usize::from(results[0].is_some()) + usize::from(results[1].is_some());
            }
        }
        assert!(
            full_layer_frames.iter().all(|(i, _)| !(10..20).contains(i)),
            "paused"
        );
        assert!(
            lower_layer_frames >= 18,
            "other layers kept going: {lower_layer_frames} of 20"
        );
        let resumed = full_layer_frames.iter().find(|(i, _)| *i >= 20).unwrap();
        assert!(resumed.1, "the first frame after resuming is a keyframe");
    }

    #[test]
    fn a_layer_can_run_at_half_the_frame_rate() {
        let (mut simulcast, mut source) = encoder();
        simulcast.set_max_fps(0, 15.0).unwrap();
        let mut out: [Vec<u8>; LAYERS] = Default::default();
        let mut counts = [0; LAYERS];
        for i in 0..60u64 {
            let results = simulcast
                .encode(&source.render(i * FRAME_US), &mut out)
                .unwrap();
            for (count, result) in counts.iter_mut().zip(results) {
                *count += usize::from(result.is_some());
            }
        }
        assert!(
            (28..=31).contains(&counts[0]),
            "15 fps layer produced {}",
            counts[0]
        );
        assert!(counts[1] >= 54, "30 fps layer produced {}", counts[1]);
    }

    #[test]
    fn pacing_tolerates_jitter_and_clock_steps() {
        let interval = 33_333;
        // On time, a little early, late: due. Half an interval early: not due.
        assert!(is_due(Some(1_000_000), 1_000_000, interval));
        assert!(is_due(Some(1_000_000), 995_000, interval));
        assert!(is_due(Some(1_000_000), 1_020_000, interval));
        assert!(!is_due(Some(1_000_000), 983_000, interval));
        // The clock stepped back a second: encode rather than stall.
        assert!(is_due(Some(1_000_000), 0, interval));
    }

    #[test]
    fn jittery_capture_at_the_layer_rate_loses_no_frames() {
        let (mut simulcast, mut source) = encoder();
        let mut out: [Vec<u8>; LAYERS] = Default::default();
        let mut encoded = 0;
        for i in 0..60u64 {
            // ±5 ms of jitter around a 30 fps grid.
            let jitter = [0, 5_000, -5_000, 3_000][(i % 4) as usize];
            let t = (1_000_000 + i as i64 * 33_333 + jitter) as u64;
            let results = simulcast.encode(&source.render(t), &mut out).unwrap();
            encoded += usize::from(results[1].is_some());
        }
        assert!(
            encoded >= 55,
            "{encoded} of 60 frames encoded on the half layer"
        );
    }

    #[test]
    fn keyframes_are_requested_per_layer() {
        let (mut simulcast, mut source) = encoder();
        let mut out: [Vec<u8>; LAYERS] = Default::default();
        for i in 0..5 {
            simulcast
                .encode(&source.render(i * FRAME_US), &mut out)
                .unwrap();
        }
        simulcast.request_keyframe(1);
        let mut seen = [None; LAYERS];
        for i in 5..15 {
            let results = simulcast
                .encode(&source.render(i * FRAME_US), &mut out)
                .unwrap();
            for layer in 0..LAYERS {
                if let Some(info) = results[layer] {
                    seen[layer].get_or_insert(info.keyframe);
                }
            }
        }
        assert_eq!(seen, [Some(false), Some(true), Some(false)]);
    }
}
