//! Decoded pictures to the webview: one slot per tile holding only the
//! newest picture (a new one overwrites an undelivered one: dropped, never
//! queued), delivered as binary messages with a small window of frames in
//! flight, acknowledged by the page once drawn.
//!
//! Two transports carry the same messages: a WebSocket on 127.0.0.1 guarded
//! by a random per-launch token, and Tauri's IPC channel. The WebSocket is
//! the default (see docs/benchmarks.md, "Frame delivery").
//!
//! A message is a 32-byte little-endian header, the tile id, then the
//! I420 planes:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u32 | magic `PLYF` |
//! | 4 | u32 | sequence number (per transport) |
//! | 8 | u32 | width |
//! | 12 | u32 | height |
//! | 16 | u64 | when the engine handed it over, unix µs |
//! | 24 | u16 | tile id length (bytes, UTF-8) |
//! | 26 | u16 | 0 |
//! | 28 | u32 | 0 |
//!
//! A zero-size frame means "clear this tile".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use parley_client::media::video::{LOCAL_TILE, VideoSink};
use parley_media::clock::unix_micros;
use parley_media::frame::VideoFrame;
use parley_media::scale::Scaler;
use tokio::sync::{Notify, mpsc};

pub const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"PLYF";
/// Frames sent and not yet acknowledged. Two per visible tile keep the
/// page busy without letting a slow page build a queue.
pub const MAX_IN_FLIGHT: usize = 6;
/// Buffers kept for reuse; beyond this they are freed.
const POOL_BUFFERS: usize = 24;
/// The self view is a small tile: the camera's picture is scaled down to
/// this width before it crosses to the page (a quarter of 720p's bytes).
const LOCAL_MAX_WIDTH: u32 = 640;

/// Counters for the stats overlay, diagnostics and benchmarks.
#[derive(Debug, Default, serde::Serialize, Clone)]
pub struct FrameCounters {
    /// Pictures handed to the hub by the engine.
    pub offered: u64,
    /// Pictures that went out to the page.
    pub sent: u64,
    /// Pictures overwritten before they could be sent.
    pub replaced: u64,
}

#[derive(Default)]
struct Slot {
    /// The newest undelivered message, if any.
    pending: Option<Vec<u8>>,
    /// When the slot last went from empty to pending (a ticket number):
    /// the longest-waiting tile goes first, so no tile starves.
    waiting_since: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    next_ticket: u64,
    pool: Vec<Vec<u8>>,
}

/// The newest picture of every tile, waiting for the page.
#[derive(Default)]
pub struct FrameHub {
    inner: Mutex<Inner>,
    ready: Notify,
    offered: AtomicU64,
    replaced: AtomicU64,
    sent: AtomicU64,
    /// The self view's scaler and its output buffer.
    local: Mutex<Option<(Scaler, VideoFrame)>>,
}

impl std::fmt::Debug for FrameHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameHub")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl FrameHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn counters(&self) -> FrameCounters {
        FrameCounters {
            offered: self.offered.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
        }
    }

    fn put(&self, tile: &str, width: u32, height: u32, planes: &[&[u8]]) {
        let body: usize = planes.iter().map(|p| p.len()).sum();
        let len = HEADER_LEN + tile.len() + body;
        let mut inner = self.lock();
        let mut message = inner.pool.pop().unwrap_or_default();
        message.clear();
        message.reserve(len);
        message.extend_from_slice(MAGIC);
        message.extend_from_slice(&0u32.to_le_bytes());
        message.extend_from_slice(&width.to_le_bytes());
        message.extend_from_slice(&height.to_le_bytes());
        message.extend_from_slice(&unix_micros().to_le_bytes());
        message.extend_from_slice(&(tile.len() as u16).to_le_bytes());
        message.extend_from_slice(&[0; 6]);
        message.extend_from_slice(tile.as_bytes());
        for plane in planes {
            message.extend_from_slice(plane);
        }
        {
            let inner = &mut *inner;
            // Looked up before inserting: a tile id is allocated once, not per picture.
            if !inner.slots.contains_key(tile) {
                inner.slots.insert(tile.to_owned(), Slot::default());
            }
            let slot = inner.slots.get_mut(tile).expect("inserted above");
            if let Some(old) = slot.pending.replace(message) {
                self.replaced.fetch_add(1, Ordering::Relaxed);
                if inner.pool.len() < POOL_BUFFERS {
                    inner.pool.push(old);
                }
            } else {
                slot.waiting_since = inner.next_ticket;
                inner.next_ticket += 1;
            }
        }
        drop(inner);
        self.ready.notify_one();
    }

    /// The oldest-waiting tile's newest picture, stamped with `sequence`.
    fn take(&self, sequence: u32) -> Option<Vec<u8>> {
        let mut inner = self.lock();
        // A scan: a call has a few dozen tiles at most.
        let slot = inner
            .slots
            .values_mut()
            .filter(|s| s.pending.is_some())
            .min_by_key(|s| s.waiting_since)?;
        let mut message = slot.pending.take()?;
        message[4..8].copy_from_slice(&sequence.to_le_bytes());
        self.sent.fetch_add(1, Ordering::Relaxed);
        Some(message)
    }

    /// A sent message's buffer, back for the next picture.
    fn recycle(&self, buffer: Vec<u8>) {
        let mut inner = self.lock();
        if inner.pool.len() < POOL_BUFFERS {
            inner.pool.push(buffer);
        }
    }

    async fn wait(&self) {
        self.ready.notified().await;
    }
}

impl VideoSink for FrameHub {
    fn show(&self, tile: &str, frame: &VideoFrame) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        if tile == LOCAL_TILE && frame.width() > LOCAL_MAX_WIDTH {
            let width = LOCAL_MAX_WIDTH;
            let height = (frame.height() * width / frame.width()) & !1;
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            let (scaler, small) =
                local.get_or_insert_with(|| (Scaler::default(), VideoFrame::new(width, height)));
            if small.width() != width || small.height() != height {
                small.reshape(width, height);
            }
            if scaler.scale_into(frame, small).is_ok() {
                self.put(tile, width, height, &[small.as_bytes()]);
            }
            return;
        }
        self.put(tile, frame.width(), frame.height(), &[frame.as_bytes()]);
    }

    fn clear(&self, tile: &str) {
        self.put(tile, 0, 0, &[]);
    }
}

/// The hub's buffer inside a sent message; goes back to the pool when the
/// transport is done with it.
struct PooledBuffer {
    buffer: Vec<u8>,
    hub: Arc<FrameHub>,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.hub.recycle(std::mem::take(&mut self.buffer));
    }
}

/// Hands the hub's pictures to a transport's writer while fewer than
/// [`MAX_IN_FLIGHT`] are unacknowledged. Returns when the writer is gone
/// (the page went away).
pub async fn pump(hub: Arc<FrameHub>, window: Arc<Window>, send: mpsc::Sender<Bytes>) {
    let mut sequence = 0u32;
    loop {
        window.wait_for_room().await;
        let Some(message) = hub.take(sequence) else {
            hub.wait().await;
            continue;
        };
        sequence = sequence.wrapping_add(1);
        window.sent();
        let bytes = Bytes::from_owner(PooledBuffer {
            buffer: message,
            hub: Arc::clone(&hub),
        });
        if send.send(bytes).await.is_err() {
            return;
        }
    }
}

/// How many frames are in flight to the page.
#[derive(Debug, Default)]
pub struct Window {
    in_flight: Mutex<usize>,
    room: Notify,
}

impl Window {
    fn sent(&self) {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
    }

    /// The page drew (or dropped) `count` frames.
    pub fn acknowledge(&self, count: usize) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *in_flight = in_flight.saturating_sub(count);
        drop(in_flight);
        self.room.notify_one();
    }

    /// A fresh page starts with nothing in flight.
    pub fn reset(&self) {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = 0;
        self.room.notify_one();
    }

    async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            if *self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                < MAX_IN_FLIGHT
            {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(width: u32, height: u32, fill: u8) -> VideoFrame {
        let mut frame = VideoFrame::new(width, height);
        let (y, u, v) = frame.planes_mut();
        y.fill(fill);
        u.fill(128);
        v.fill(128);
        frame
    }

    #[test]
    fn only_the_newest_picture_of_a_tile_waits() {
        let hub = FrameHub::new();
        for fill in [10, 20, 30] {
            hub.show("a", &frame(16, 16, fill));
        }
        hub.show("b", &frame(32, 16, 99));
        let first = hub.take(7).unwrap();
        assert_eq!(&first[0..4], MAGIC);
        assert_eq!(u32::from_le_bytes(first[4..8].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(first[8..12].try_into().unwrap()), 16);
        let id_len = u16::from_le_bytes(first[24..26].try_into().unwrap()) as usize;
        assert_eq!(&first[HEADER_LEN..HEADER_LEN + id_len], b"a");
        // The newest of the three: luma 30.
        assert_eq!(first[HEADER_LEN + id_len], 30);
        assert_eq!(first.len(), HEADER_LEN + 1 + 16 * 16 * 3 / 2);
        let second = hub.take(8).unwrap();
        assert_eq!(second[HEADER_LEN], b'b');
        assert!(hub.take(9).is_none());
        let counters = hub.counters();
        assert_eq!(
            (counters.offered, counters.sent, counters.replaced),
            (4, 2, 2)
        );
    }

    #[test]
    fn buffers_are_reused() {
        let hub = FrameHub::new();
        hub.show("a", &frame(64, 64, 1));
        let message = hub.take(0).unwrap();
        let address = message.as_ptr();
        let sent = Bytes::from_owner(PooledBuffer {
            buffer: message,
            hub: Arc::clone(&hub),
        });
        drop(sent);
        hub.show("a", &frame(64, 64, 2));
        let again = hub.take(1).unwrap();
        assert_eq!(again.as_ptr(), address, "the sent buffer was reused");
    }

    #[tokio::test]
    async fn the_window_holds_back_until_acknowledged() {
        let hub = FrameHub::new();
        let window = Arc::new(Window::default());
        let (tx, mut rx) = mpsc::channel(1);
        let pump_task = tokio::spawn(pump(Arc::clone(&hub), Arc::clone(&window), tx));
        for tile in 0..10 {
            hub.show(&format!("t{tile}"), &frame(16, 16, tile as u8));
        }
        let mut received = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await
        {
            received += 1;
        }
        assert_eq!(received, MAX_IN_FLIGHT);
        window.acknowledge(MAX_IN_FLIGHT);
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await
        {
            received += 1;
        }
        assert_eq!(received, 10, "every tile got its picture, none twice");
        pump_task.abort();
    }
}
