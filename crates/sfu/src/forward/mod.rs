//! Forwarding decisions of the media plane, as small sans-IO types: which
//! simulcast layer each subscriber gets ([`layer`]) and how its packets are
//! rewritten so layer switches are seamless ([`rewrite`]).

pub mod layer;
pub mod rewrite;
pub mod speakers;
