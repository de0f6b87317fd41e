//! The signaling WebSocket: connect (ws:// or wss:// with the system's roots),
//! send and receive typed messages within the protocol's limits.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_proto::{ClientMessage, ServerMessage, limits, parse_server_message};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Connecting gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("invalid signaling URL `{0}`: use ws://host:port/ws or wss://host/ws")]
    BadUrl(String),
    #[error("could not connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    #[error("connection failed: {0}")]
    Transport(#[from] tungstenite::Error),
}

/// One open signaling connection.
#[derive(Debug)]
pub struct SignalingSocket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl SignalingSocket {
    pub async fn connect(url: &str) -> Result<Self, WsError> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(WsError::BadUrl(url.to_owned()));
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits::MAX_FRAME_BYTES * 4))
            .max_frame_size(Some(limits::MAX_FRAME_BYTES * 4));
        let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let (stream, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| WsError::ConnectTimeout(url.to_owned()))?
            .map_err(|source| WsError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self { stream })
    }

    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), WsError> {
        let json = serde_json::to_string(message).expect("client messages serialize");
        self.stream.send(Message::text(json)).await?;
        Ok(())
    }

    /// The next server message; `None` when the connection closed.
    pub async fn recv(&mut self) -> Option<Result<ServerMessage, WsError>> {
        loop {
            let frame = match self.stream.next().await? {
                Ok(frame) => frame,
                Err(err) => return Some(Err(err.into())),
            };
            match frame {
                Message::Text(text) => match parse_server_message(text.as_str()) {
                    Ok(message) => return Some(Ok(message)),
                    // A newer server may send messages this build does not
                    // know; the protocol says to ignore them.
                    Err(err) => {
                        tracing::warn!(%err, "ignoring a server message this client cannot read");
                    }
                },
                Message::Close(_) => return None,
                // Pings are answered by tungstenite on the next write or flush.
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
