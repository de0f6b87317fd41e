//! Parley's media engine: frames, capture (camera, microphone, synthetic
//! sources), simulcast scaling, H.264 and Opus codecs. No networking.

pub mod apm;
pub mod audio_device;
pub mod camera;
pub mod capture;
pub mod clock;
pub mod device;
pub mod frame;
pub mod h264;
pub mod jitter_buffer;
pub mod lipsync;
pub mod mixer;
pub mod opus_codec;
pub mod quality;
pub mod resample;
pub mod scale;
pub mod simulcast;
pub mod stamp;
pub mod synthetic_audio;
pub mod synthetic_video;
pub mod vad;
