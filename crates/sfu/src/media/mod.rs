//! The media plane: UDP demultiplexing, per-participant str0m sessions and
//! RTP forwarding between them.

pub mod demux;
mod h264;
mod peer;
mod plane;
mod rate;

pub use plane::{MediaConfig, MediaOutput, MediaPlane};
