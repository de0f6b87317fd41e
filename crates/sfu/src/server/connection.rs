//! One WebSocket connection: reads frames into core events, writes the core's
//! frames out, keeps the connection alive and notices when it is not.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::{SinkExt, StreamExt};
use parley_proto::{ByeReason, ServerMessage, limits};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::actor::{Event, OUTBOUND_QUEUE, Outbound};
use crate::core::ConnId;

/// How often the server pings; browsers answer WebSocket pings themselves.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// A write that does not complete in this time means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    socket: WebSocket,
    conn: ConnId,
    peer: SocketAddr,
    events: mpsc::Sender<Event>,
    alive: mpsc::Sender<()>,
) {
    let (outbound_tx, mut outbound) = mpsc::channel(OUTBOUND_QUEUE);
    if events
        .send(Event::Connected {
            conn,
            outbound: outbound_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(conn, %peer, "signaling connection open");
    let (mut sink, mut stream) = socket.split();
    let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
    keepalive.tick().await;
    let mut last_heard = Instant::now();
    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            frame = stream.next() => {
                let event = match frame {
                    Some(Ok(Message::Text(text))) => {
                        last_heard = Instant::now();
                        if text.len() > limits::MAX_MESSAGE_BYTES {
                            Event::Oversized { conn, len: text.len() }
                        } else {
                            Event::Text { conn, text: text.as_str().to_owned() }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        last_heard = Instant::now();
                        Event::Binary { conn }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_heard = Instant::now();
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(err)) => {
                        tracing::debug!(conn, %err, "signaling connection failed");
                        break read_failure_close(err);
                    }
                };
                if events.send(event).await.is_err() {
                    break Some((close_code::AWAY, "server stopping"));
                }
            }
            out = outbound.recv() => match out {
                Some(Outbound::Frame(frame)) => {
                    if !write(&mut sink, Message::Text(frame)).await {
                        break None;
                    }
                }
                Some(Outbound::Close(code)) => break Some((code, "bye")),
                None => {
                    let bye = bye_frame(ByeReason::TooSlow, "messages were not read fast enough");
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(bye)).await;
                    break Some((close_code::POLICY, "too slow"));
                }
            },
            _ = keepalive.tick() => {
                if last_heard.elapsed() > limits::IDLE_TIMEOUT {
                    let bye = bye_frame(ByeReason::IdleTimeout, "nothing received for too long");
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(bye)).await;
                    break Some((close_code::AWAY, "idle timeout"));
                }
                if !write(&mut sink, Message::Ping(axum::body::Bytes::new())).await {
                    break None;
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await;
    }
    let _ = events.send(Event::Disconnected { conn }).await;
    tracing::debug!(conn, %peer, "signaling connection closed");
    drop(alive);
}

/// The close frame to send after a failed read: 1009 for a frame over the
/// hard cap, 1002 for a protocol violation, none when the transport is gone.
fn read_failure_close(err: axum::Error) -> Option<(u16, &'static str)> {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((close_code::SIZE, "frame too large")),
        Some(tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_)) => {
            Some((close_code::PROTOCOL, "protocol error"))
        }
        _ => None,
    }
}

async fn write(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    message: Message,
) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await,
        Ok(Ok(()))
    )
}

fn bye_frame(reason: ByeReason, message: &str) -> Message {
    let bye = ServerMessage::Bye {
        reason,
        message: message.to_owned(),
    };
    let json = serde_json::to_string(&bye).expect("bye serializes");
    Message::Text(Utf8Bytes::from(json))
}
