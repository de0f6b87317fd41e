//! H.264 constrained-baseline encoding and decoding with openh264.
//!
//! Encoders emit Annex B access units (start codes, SPS/PPS repeated with
//! every IDR so a receiver can join at any keyframe). Bitrate and frame rate
//! can change while running; keyframes can be requested. The decoder reports
//! when it needs a keyframe (after loss or a decoding error) and drops
//! everything until one arrives, instead of showing corrupt pictures.

mod ffi;

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSource;

use crate::frame::{FramePool, VideoFrame};

/// Why a codec call failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("H.264 encoder: {0}")]
    Encoder(String),
    #[error("H.264 decoder: {0}")]
    Decoder(String),
    #[error("the decoder needs a keyframe before it can show pictures again")]
    NeedKeyframe,
}

/// How to encode one stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
    pub max_fps: f32,
    /// Speed against quality; `Low` is the fastest.
    pub complexity: EncoderComplexity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderComplexity {
    Low,
    #[default]
    Medium,
    High,
}

/// One encoded access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedInfo {
    /// An IDR picture with SPS and PPS: decodable on its own.
    pub keyframe: bool,
    pub captured_at_us: u64,
}

/// An H.264 encoder for one resolution.
pub struct H264Encoder {
    inner: Encoder,
    settings: EncoderSettings,
    /// openh264 starts itself on the first frame; options set before that
    /// must go into a fresh configuration instead.
    started: bool,
    keyframe_requested: bool,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn encoder_config(settings: &EncoderSettings) -> EncoderConfig {
    EncoderConfig::new()
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Bitrate)
        .bitrate(BitRate::from_bps(settings.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(settings.max_fps))
        .complexity(match settings.complexity {
            EncoderComplexity::Low => Complexity::Low,
            EncoderComplexity::Medium => Complexity::Medium,
            EncoderComplexity::High => Complexity::High,
        })
        // Frames may be skipped to hold the bitrate: late is worse than missing.
        .skip_frames(true)
        // One thread per encoder: simulcast layers run side by side instead.
        .num_threads(1)
        .scene_change_detect(true)
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, CodecError> {
        let inner = Encoder::with_api_config(OpenH264API::from_source(), encoder_config(&settings))
            .map_err(|e| CodecError::Encoder(e.to_string()))?;
        Ok(Self {
            inner,
            settings,
            started: false,
            keyframe_requested: false,
        })
    }

    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// Encodes `frame` and appends the access unit to `out`. Returns `None`
    /// when the encoder skipped the frame to hold its bitrate.
    pub fn encode_into(
        &mut self,
        frame: &VideoFrame,
        out: &mut Vec<u8>,
    ) -> Result<Option<EncodedInfo>, CodecError> {
        if (frame.width(), frame.height()) != (self.settings.width, self.settings.height) {
            return Err(CodecError::Encoder(format!(
                "frame is {}x{}, encoder is {}x{}",
                frame.width(),
                frame.height(),
                self.settings.width,
                self.settings.height
            )));
        }
        if self.keyframe_requested {
            self.inner.force_intra_frame();
            self.keyframe_requested = false;
        }
        let timestamp = openh264::Timestamp::from_millis(frame.captured_at_us / 1000);
        let bitstream = self
            .inner
            .encode_at(frame, timestamp)
            .map_err(|e| CodecError::Encoder(e.to_string()))?;
        self.started = true;
        let keyframe = match bitstream.frame_type() {
            FrameType::Skip => return Ok(None),
            FrameType::Invalid => {
                return Err(CodecError::Encoder("the encoder is not ready".into()));
            }
            FrameType::IDR => true,
            _ => false,
        };
        let before = out.len();
        bitstream.write_vec(out);
        if out.len() == before {
            return Ok(None);
        }
        Ok(Some(EncodedInfo {
            keyframe,
            captured_at_us: frame.captured_at_us,
        }))
    }

    /// The next encoded frame will be an IDR.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Changes the target bitrate, effective from the next frame.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if self.started {
            ffi::set_bitrate(&mut self.inner, self.settings.bitrate_bps, bps)
                .map_err(CodecError::Encoder)?;
            self.settings.bitrate_bps = bps;
            Ok(())
        } else {
            self.restart(EncoderSettings {
                bitrate_bps: bps,
                ..self.settings
            })
        }
    }

    /// Changes the frame rate the rate control plans for.
    pub fn set_max_fps(&mut self, fps: f32) -> Result<(), CodecError> {
        if self.started {
            ffi::set_frame_rate(&mut self.inner, fps).map_err(CodecError::Encoder)?;
            self.settings.max_fps = fps;
            Ok(())
        } else {
            self.restart(EncoderSettings {
                max_fps: fps,
                ..self.settings
            })
        }
    }

    fn restart(&mut self, settings: EncoderSettings) -> Result<(), CodecError> {
        *self = Self::new(settings)?;
        Ok(())
    }
}

/// An H.264 decoder producing I420 frames from a pool.
pub struct H264Decoder {
    inner: Decoder,
    pool: FramePool,
    needs_keyframe: bool,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("needs_keyframe", &self.needs_keyframe)
            .finish_non_exhaustive()
    }
}

const NAL_IDR: u8 = 5;

/// Whether an Annex B access unit contains an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    openh264::nal_units(access_unit).any(|nal| {
        let header = nal.iter().position(|&b| b != 0).map(|i| i + 1);
        header
            .and_then(|i| nal.get(i))
            .is_some_and(|b| b & 0x1f == NAL_IDR)
    })
}

impl H264Decoder {
    pub fn new(pool: FramePool) -> Result<Self, CodecError> {
        let inner = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| CodecError::Decoder(e.to_string()))?;
        Ok(Self {
            inner,
            pool,
            // Nothing can be shown before the first keyframe.
            needs_keyframe: true,
        })
    }

    /// True until a keyframe arrives after start, loss or a decoding error:
    /// the receiver should ask the sender for one.
    pub fn needs_keyframe(&self) -> bool {
        self.needs_keyframe
    }

    /// The stream lost data: drop everything until the next keyframe.
    pub fn note_loss(&mut self) {
        self.needs_keyframe = true;
    }

    /// Decodes one access unit. `Ok(None)` means no picture yet (the decoder
    /// buffers); [`CodecError::NeedKeyframe`] means the unit was dropped.
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<VideoFrame>, CodecError> {
        if self.needs_keyframe {
            if !is_keyframe(access_unit) {
                return Err(CodecError::NeedKeyframe);
            }
            self.needs_keyframe = false;
        }
        let decoded = match self.inner.decode(access_unit) {
            Ok(decoded) => decoded,
            Err(err) => {
                self.needs_keyframe = true;
                return Err(CodecError::Decoder(err.to_string()));
            }
        };
        let Some(picture) = decoded else {
            return Ok(None);
        };
        let (width, height) = picture.dimensions();
        // A crafted SPS can crop a picture to nothing or to an odd size,
        // which no I420 frame can hold: treat it as a broken stream.
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            self.needs_keyframe = true;
            return Err(CodecError::Decoder(format!(
                "unusable picture size {width}x{height}"
            )));
        }
        let (y_stride, u_stride, v_stride) = picture.strides();
        let mut frame = self.pool.take(width as u32, height as u32);
        let (y, u, v) = frame.planes_mut();
        copy_plane(picture.y(), y_stride, y, width);
        copy_plane(picture.u(), u_stride, u, width / 2);
        copy_plane(picture.v(), v_stride, v, width / 2);
        Ok(Some(frame))
    }
}

/// Copies a strided plane into a tightly packed one.
fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], width: usize) {
    for (dst_row, src_row) in dst.chunks_exact_mut(width).zip(src.chunks(stride)) {
        dst_row.copy_from_slice(&src_row[..width]);
    }
}

#[cfg(test)]
mod tests;
