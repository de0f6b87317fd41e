//! The openh264 options the safe wrapper does not expose: the bitrate (and
//! its ceiling) and the frame rate of a running encoder.

#![allow(unsafe_code)]

use openh264::encoder::Encoder;
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, ENCODER_OPTION_MAX_BITRATE,
    SBitrateInfo, SPATIAL_LAYER_0,
};

/// Sets the target bitrate. The wrapper configures the layer's maximum equal
/// to the starting target and openh264 refuses a target above the maximum,
/// so the ceiling moves with the target: raised first when going up, lowered
/// last when going down.
pub fn set_bitrate(encoder: &mut Encoder, current_bps: u32, bps: u32) -> Result<(), String> {
    if bps > current_bps {
        set_layer_bitrate(encoder, ENCODER_OPTION_MAX_BITRATE, bps)?;
        set_layer_bitrate(encoder, ENCODER_OPTION_BITRATE, bps)
    } else {
        set_layer_bitrate(encoder, ENCODER_OPTION_BITRATE, bps)?;
        set_layer_bitrate(encoder, ENCODER_OPTION_MAX_BITRATE, bps)
    }
}

fn set_layer_bitrate(
    encoder: &mut Encoder,
    option: ENCODER_OPTION,
    bps: u32,
) -> Result<(), String> {
    let mut info = SBitrateInfo {
        iLayer: SPATIAL_LAYER_0,
        iBitrate: i32::try_from(bps).map_err(|_| format!("bitrate {bps} is too large"))?,
    };
    // SAFETY: both options take a pointer to SBitrateInfo, which openh264
    // reads during the call and does not keep. `raw_api` asks that we not
    // change what the wrapper relies on: the wrapper re-applies its own
    // bitrate and frame rate only when the picture size changes, and
    // `H264Encoder::encode_into` refuses frames of another size, so these
    // settings stay in force.
    let status = unsafe { encoder.raw_api().set_option(option, (&raw mut info).cast()) };
    check(status, "bitrate")
}

pub fn set_frame_rate(encoder: &mut Encoder, fps: f32) -> Result<(), String> {
    let mut rate = fps;
    // SAFETY: ENCODER_OPTION_FRAME_RATE takes a pointer to a float, read
    // during the call; the frame-size argument above applies here too.
    let status = unsafe {
        encoder
            .raw_api()
            .set_option(ENCODER_OPTION_FRAME_RATE, (&raw mut rate).cast())
    };
    check(status, "frame rate")
}

fn check(status: i32, what: &str) -> Result<(), String> {
    if status == 0 {
        Ok(())
    } else {
        Err(format!("openh264 refused the new {what} (status {status})"))
    }
}
