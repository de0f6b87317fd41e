//! Forwarding decisions of the media plane, as small sans-IO types: which
//! simulcast layer each subscriber gets ([`layer`]), how its packets are
//! rewritten so layer switches are seamless ([`rewrite`]), which layers a
//! publisher may pause because nobody watches them ([`dynacast`]), and who is
//! speaking ([`speakers`]).

pub mod dynacast;
pub mod layer;
pub mod rewrite;
pub mod speakers;
