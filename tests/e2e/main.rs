//! End-to-end tests: the real `parley-sfu` and `parley-cli` binaries on
//! loopback, driven over real sockets. One module per behaviour.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod call;
mod chat_history;
mod cli;
mod fifty_clients;
mod media_bad_input;
mod presence;
mod shutdown;
mod tls;
mod tokens;
