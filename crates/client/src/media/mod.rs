//! Media: the str0m session to the SFU ([`call`], sans-IO), the synthetic
//! publisher, the receivers that decode and check remote tracks, and the
//! tokio driver that runs them together ([`engine`]).

pub mod audio;
pub mod call;
pub mod engine;
pub mod presentation;
pub mod publisher;
pub mod receiver;
pub mod stun;
pub mod transport;
pub mod turn;
pub mod video;
