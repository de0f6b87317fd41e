//! The two openh264 options the safe wrapper does not expose: changing the
//! bitrate and the frame rate of a running encoder.

#![allow(unsafe_code)]

use openh264::encoder::Encoder;
use openh264_sys2::{
    ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, SBitrateInfo, SPATIAL_LAYER_ALL,
};

pub fn set_bitrate(encoder: &mut Encoder, bps: u32) -> Result<(), String> {
    let mut info = SBitrateInfo {
        iLayer: SPATIAL_LAYER_ALL,
        iBitrate: i32::try_from(bps).map_err(|_| format!("bitrate {bps} is too large"))?,
    };
    // SAFETY: the encoder has been initialised by a previous encode (the
    // caller checks), ENCODER_OPTION_BITRATE takes a pointer to SBitrateInfo,
    // and openh264 reads it before returning, so the pointer outlives the call.
    let status = unsafe {
        encoder
            .raw_api()
            .set_option(ENCODER_OPTION_BITRATE, (&raw mut info).cast())
    };
    check(status, "bitrate")
}

pub fn set_frame_rate(encoder: &mut Encoder, fps: f32) -> Result<(), String> {
    let mut rate = fps;
    // SAFETY: as above; ENCODER_OPTION_FRAME_RATE takes a pointer to a float.
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
