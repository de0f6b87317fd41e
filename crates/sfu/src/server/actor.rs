//! The one task that owns the core. Connection tasks send it events; it feeds
//! them to the core, drains every output, and routes frames to per-connection
//! queues. Queues are bounded: a client that does not read is dropped rather
//! than allowed to grow the server's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::ws::{Utf8Bytes, close_code};
use parley_proto::ByeReason;
use str0m::net::Protocol;
use tokio::sync::{mpsc, oneshot};

use super::media::MediaSockets;
use crate::core::{ConnId, Output, Sfu};

/// Events waiting for the core; connection tasks wait when it is full.
pub const EVENT_QUEUE: usize = 4096;
/// Frames waiting to be written to one client.
pub const OUTBOUND_QUEUE: usize = 1024;

#[derive(Debug)]
pub enum Event {
    Connected {
        conn: ConnId,
        outbound: mpsc::Sender<Outbound>,
    },
    Text {
        conn: ConnId,
        text: String,
    },
    Oversized {
        conn: ConnId,
        len: usize,
    },
    Binary {
        conn: ConnId,
    },
    Disconnected {
        conn: ConnId,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// Close with this code after the frames queued before it.
    Close(u16),
}

/// One datagram from the media port. Datagrams have their own queue: anyone
/// can send them, and a flood must not delay or block signaling.
#[derive(Debug)]
pub struct Datagram {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// Datagrams waiting for the core; more are dropped, as a congested router would.
pub const DATAGRAM_QUEUE: usize = 8192;

pub async fn run(
    mut sfu: Sfu,
    mut events: mpsc::Receiver<Event>,
    mut datagrams: mpsc::Receiver<Datagram>,
    media: MediaSockets,
) {
    let mut queues: HashMap<ConnId, mpsc::Sender<Outbound>> = HashMap::new();
    loop {
        let deadline = sfu.poll_timeout();
        let event = tokio::select! {
            // Signaling first, then media, then timers.
            biased;
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            Some(datagram) = datagrams.recv() => {
                let now = Instant::now();
                sfu.handle_datagram(
                    datagram.proto,
                    datagram.source,
                    datagram.destination,
                    &datagram.data,
                    now,
                );
                // Under a steady stream of datagrams the timer branch may not
                // get its turn: run what is due here.
                if sfu.poll_timeout().is_some_and(|at| at <= now) {
                    sfu.handle_timeout(now);
                }
                while let Some(output) = sfu.poll_output() {
                    route(&mut sfu, &mut queues, &media, output);
                }
                continue;
            }
            () = sleep_until(deadline) => None,
        };
        let now = Instant::now();
        let mut shutdown_done = None;
        match event {
            None => sfu.handle_timeout(now),
            Some(Event::Connected { conn, outbound }) => {
                queues.insert(conn, outbound);
                sfu.handle_connect(conn, now);
            }
            Some(Event::Text { conn, text }) => sfu.handle_text(conn, &text, now),
            Some(Event::Oversized { conn, len }) => sfu.handle_oversized(conn, len, now),
            Some(Event::Binary { conn }) => sfu.handle_binary(conn, now),
            Some(Event::Disconnected { conn }) => {
                queues.remove(&conn);
                sfu.handle_disconnect(conn, now);
            }
            Some(Event::Shutdown { done }) => {
                sfu.shutdown();
                shutdown_done = Some(done);
            }
        }
        while let Some(output) = sfu.poll_output() {
            route(&mut sfu, &mut queues, &media, output);
        }
        if let Some(done) = shutdown_done {
            let _ = done.send(());
        }
    }
}

fn route(
    sfu: &mut Sfu,
    queues: &mut HashMap<ConnId, mpsc::Sender<Outbound>>,
    media: &MediaSockets,
    output: Output,
) {
    match output {
        Output::Transmit {
            proto,
            source,
            destination,
            data,
        } => media.send(proto, source, destination, &data),
        Output::Send { to, msg } => {
            let frame = match serde_json::to_string(&msg) {
                Ok(json) => Utf8Bytes::from(json),
                Err(err) => {
                    tracing::error!(%err, "server message did not serialize");
                    return;
                }
            };
            for conn in to {
                let Some(queue) = queues.get(&conn) else {
                    continue;
                };
                if queue.try_send(Outbound::Frame(frame.clone())).is_err() {
                    // Dropping the sender tells the connection task to close:
                    // it cannot keep up, and waiting would stall every room.
                    tracing::info!(conn, "dropping a client that does not read its messages");
                    queues.remove(&conn);
                    sfu.note_slow_consumer();
                }
            }
        }
        Output::Close { conn, reason } => {
            let code = match reason {
                ByeReason::ServerShutdown => close_code::AWAY,
                _ => close_code::NORMAL,
            };
            if let Some(queue) = queues.remove(&conn) {
                let _ = queue.try_send(Outbound::Close(code));
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
