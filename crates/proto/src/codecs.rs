//! The one codec set of protocol v1, fixed so every peer agrees on payload
//! types without negotiating preferences: Opus for audio, H.264 constrained
//! baseline (packetization mode 1) with RTX for video.

/// Opus, 48 kHz, mono in practice, in-band FEC on.
pub const OPUS_PT: u8 = 111;
/// H.264 constrained baseline.
pub const H264_PT: u8 = 102;
/// Retransmissions of [`H264_PT`] (RFC 4588).
pub const H264_RTX_PT: u8 = 103;
/// `profile-level-id`: constrained baseline, level 3.1.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x0042_e01f;
/// Simulcast rids of a camera track, lowest first.
pub const VIDEO_RIDS: [&str; 3] = ["q", "h", "f"];
