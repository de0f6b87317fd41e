//! Speech through real calls, where timing is what is measured: quality
//! (PESQ) and mouth-to-ear at 0, 5 and 15 % loss, lip sync, and the real
//! cpal capture and playout paths on virtual PulseAudio devices.
//!
//! A test binary of its own: cargo runs test binaries one after another,
//! so these never share the machine with the two dozen calls of `e2e`; and
//! they take turns (`one_at_a_time`), because each is a whole call whose
//! encoders would otherwise starve the others' audio threads on two cores.

#![allow(clippy::unwrap_used)]

mod audio;
mod virtual_devices;

/// Held for the whole of each test here.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
