//! The media plane's UDP side, sans-IO: which peer a datagram belongs to.
//! The str0m sessions that consume them arrive with the first real call.

pub mod demux;
