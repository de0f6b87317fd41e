//! The signaling WebSocket: connect (ws:// or wss:// with the system's roots
//! and an optional extra CA, directly or through an HTTP proxy), send and
//! receive typed messages within the protocol's limits.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_proto::{ClientMessage, ServerMessage, limits, parse_server_message};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::net::NetworkOptions;

/// Connecting gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("invalid signaling URL `{0}`: use ws://host:port/ws or wss://host/ws")]
    BadUrl(String),
    #[error("could not connect to {url}: {reason}")]
    Tcp { url: String, reason: String },
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

/// Host and port of a `ws://` or `wss://` URL (IPv6 without brackets).
fn ws_host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("wss://") {
        (rest, 443)
    } else {
        (url.strip_prefix("ws://")?, 80)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// One open signaling connection.
#[derive(Debug)]
pub struct SignalingSocket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl SignalingSocket {
    pub async fn connect(url: &str, network: &NetworkOptions) -> Result<Self, WsError> {
        let (host, port) = ws_host_port(url).ok_or_else(|| WsError::BadUrl(url.to_owned()))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits::MAX_FRAME_BYTES * 4))
            .max_frame_size(Some(limits::MAX_FRAME_BYTES * 4));
        let tls = network.tls_config().map_err(|reason| WsError::Tcp {
            url: url.to_owned(),
            reason,
        })?;
        let connecting = async {
            let stream = network
                .connect_tcp(&host, port)
                .await
                .map_err(|reason| WsError::Tcp {
                    url: url.to_owned(),
                    reason,
                })?;
            tokio_tungstenite::client_async_tls_with_config(
                url,
                stream,
                Some(config),
                Some(Connector::Rustls(tls)),
            )
            .await
            .map_err(|source| WsError::Connect {
                url: url.to_owned(),
                source,
            })
        };
        let (stream, _response) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| WsError::ConnectTimeout(url.to_owned()))??;
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

#[cfg(test)]
mod tests {
    use super::ws_host_port;

    #[test]
    fn signaling_urls_give_host_and_port() {
        let hp = |u: &str| ws_host_port(u);
        assert_eq!(
            hp("ws://127.0.0.1:7880/ws"),
            Some(("127.0.0.1".into(), 7880))
        );
        assert_eq!(
            hp("wss://sfu.example.com/ws"),
            Some(("sfu.example.com".into(), 443))
        );
        assert_eq!(
            hp("ws://sfu.example.com"),
            Some(("sfu.example.com".into(), 80))
        );
        assert_eq!(
            hp("wss://[2001:db8::1]:8443/ws"),
            Some(("2001:db8::1".into(), 8443))
        );
        for bad in [
            "http://x/ws",
            "ws://",
            "ws://u@x/ws",
            "ws://x:port/ws",
            "ws://[::1",
        ] {
            assert_eq!(hp(bad), None, "{bad}");
        }
    }
}
