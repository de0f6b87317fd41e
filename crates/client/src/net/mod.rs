//! How the client reaches servers through restrictive networks: TLS with the
//! system's roots plus an optional corporate CA, and HTTP CONNECT proxies.
//! Signaling (`wss://`) and TURN over TCP or TLS both connect through here.

pub mod proxy;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

pub use proxy::Proxy;

/// A TCP connection (direct or through the proxy) gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The network settings a client runs with.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// HTTP proxy for TCP connections (signaling and TURN over TCP/TLS);
    /// UDP and ICE-TCP never go through it.
    pub proxy: Option<Proxy>,
    /// A PEM file of extra CA certificates trusted beside the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl NetworkOptions {
    /// The proxy from `HTTPS_PROXY` / `https_proxy` when none is set explicitly.
    pub fn with_env_proxy(mut self) -> Result<Self, String> {
        if self.proxy.is_none() {
            self.proxy = Proxy::from_env()?;
        }
        Ok(self)
    }

    /// The TLS settings every connection of this client uses.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        tls::client_config(self.ca_file.as_deref()).map(Arc::new)
    }

    /// Opens a TCP connection to `host:port`, through the proxy when one is set.
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let connecting = async {
            match &self.proxy {
                Some(proxy) => proxy.connect(host, port).await,
                None => {
                    let stream = TcpStream::connect((host, port))
                        .await
                        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
                    let _ = stream.set_nodelay(true);
                    Ok(stream)
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                let via = self
                    .proxy
                    .as_ref()
                    .map(|p| format!(" through proxy {}", p.address()))
                    .unwrap_or_default();
                format!(
                    "connecting to {host}:{port}{via}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
    }
}
