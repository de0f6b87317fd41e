//! The local WebSocket that carries pictures to the page: 127.0.0.1 only,
//! and only for a request bearing this launch's random token. One page at
//! a time: a new connection (a reload) replaces the old one.

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::frames::{FrameHub, Window, pump};

/// A page's messages are acknowledgements: a decimal count of frames drawn.
const MAX_ACK_BYTES: usize = 16;

#[derive(Debug)]
pub struct FrameServer {
    /// `ws://127.0.0.1:PORT/frames?token=...`
    pub url: String,
}

impl FrameServer {
    pub async fn start(hub: Arc<FrameHub>, window: Arc<Window>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let url = format!("ws://127.0.0.1:{port}/frames?token={token}");
        tokio::spawn(serve(listener, token, hub, window));
        Ok(Self { url })
    }
}

async fn serve(listener: TcpListener, token: String, hub: Arc<FrameHub>, window: Arc<Window>) {
    let mut current: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let expected = format!("/frames?token={token}");
        // The handshake callback's error type is tungstenite's, large or not.
        #[allow(clippy::result_large_err)]
        let check = move |request: &Request, response: Response| {
            if request
                .uri()
                .path_and_query()
                .map(tokio_tungstenite::tungstenite::http::uri::PathAndQuery::as_str)
                == Some(expected.as_str())
            {
                Ok(response)
            } else {
                let mut refusal = ErrorResponse::new(Some("bad token".into()));
                *refusal.status_mut() = StatusCode::FORBIDDEN;
                Err(refusal)
            }
        };
        let socket = match tokio_tungstenite::accept_hdr_async(stream, check).await {
            Ok(socket) => socket,
            Err(err) => {
                tracing::warn!(%peer, %err, "frame socket refused");
                continue;
            }
        };
        if let Some(old) = current.take() {
            old.abort();
        }
        window.reset();
        let (hub, window) = (Arc::clone(&hub), Arc::clone(&window));
        current = Some(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let acks = {
                let window = Arc::clone(&window);
                async move {
                    while let Some(Ok(message)) = stream.next().await {
                        if let Message::Text(text) = message
                            && text.len() <= MAX_ACK_BYTES
                            && let Ok(count) = text.trim().parse::<usize>()
                        {
                            window.acknowledge(count);
                        }
                    }
                }
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(1);
            let writer = async move {
                while let Some(bytes) = rx.recv().await {
                    if sink.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = acks => {}
                () = pump(hub, window, tx) => {}
                () = writer => {}
            }
            tracing::debug!("frame socket closed");
        }));
    }
}
