//! The tokio driver: accepts HTTP(S) connections, upgrades `/ws` to WebSocket,
//! serves `/healthz` and `/metrics`, and moves frames between sockets and the
//! sans-IO core. No room logic lives here.

mod actor;
mod connection;
mod http;
mod ice_tcp;
mod media;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::core::Sfu;
use crate::media::MediaConfig;
use crate::metrics::Metrics;
use actor::Event;

/// How long shutdown waits for clients to receive their `bye`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A TLS handshake slower than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared with every HTTP handler.
#[derive(Clone)]
struct AppState {
    events: mpsc::Sender<Event>,
    registry: Arc<Registry>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
    shutting_down: Arc<AtomicBool>,
    /// Every WebSocket task holds a clone; shutdown waits until all are dropped.
    alive: mpsc::Sender<()>,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    media_addrs: Vec<SocketAddr>,
    media_tcp_addrs: Vec<SocketAddr>,
}

impl Server {
    /// Binds the listener and starts serving in the background.
    pub async fn start(mut settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        let acceptor = settings.tls.as_ref().map(tls::acceptor).transpose()?;

        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let now = Instant::now();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut bound = match &settings.media {
            Some(media) => {
                let bound = media::bind(media)?;
                settings.core.media = Some(MediaConfig {
                    candidates: bound.sockets.advertised(),
                    tcp_candidates: bound.sockets.tcp_advertised(),
                    connect_timeout: media.connect_timeout,
                    ..MediaConfig::default()
                });
                Some(bound)
            }
            None => None,
        };
        let sockets = bound
            .as_ref()
            .map(|b| b.sockets.clone())
            .unwrap_or_default();
        let media_addrs = sockets.advertised();
        let media_tcp_addrs = sockets.tcp_advertised();
        let sfu = Sfu::new(settings.core, metrics, now, unix_ms, rand::random());
        let (events_tx, events_rx) = mpsc::channel(actor::EVENT_QUEUE);
        let (datagrams_tx, datagrams_rx) = mpsc::channel(actor::DATAGRAM_QUEUE);
        let mut readers = media::spawn_readers(&sockets, &datagrams_tx);
        if let Some(bound) = &mut bound {
            readers.extend(media::spawn_tcp_listeners(bound, &datagrams_tx));
        }
        drop(datagrams_tx);
        let actor = tokio::spawn(actor::run(sfu, events_rx, datagrams_rx, sockets));
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let state = AppState {
            events: events_tx,
            registry: Arc::new(registry),
            next_conn: Arc::default(),
            shutting_down: Arc::default(),
            alive: alive_tx,
        };
        let (stop, stop_rx) = watch::channel(false);
        let tls = acceptor.is_some();
        let task = tokio::spawn(async move {
            let served = serve(listener, acceptor, state, stop_rx, alive_rx, actor).await;
            for reader in readers {
                reader.abort();
            }
            served
        });
        Ok(Self {
            local_addr,
            tls,
            stop,
            task,
            media_addrs,
            media_tcp_addrs,
        })
    }

    /// The ICE-TCP addresses as clients are told them; empty without ICE-TCP.
    pub fn media_tcp_addrs(&self) -> &[SocketAddr] {
        &self.media_tcp_addrs
    }

    /// The media port's addresses as clients are told them; empty without media.
    pub fn media_addrs(&self) -> &[SocketAddr] {
        &self.media_addrs
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://` or `wss://` URL of the signaling endpoint.
    pub fn signaling_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.local_addr)
    }

    /// `http://` or `https://` base URL.
    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Tells every client why, waits briefly for them to hear it, and stops.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until the task ends by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: AppState,
    mut stop: watch::Receiver<bool>,
    mut alive: mpsc::Receiver<()>,
    actor: JoinHandle<()>,
) -> anyhow::Result<()> {
    let router = http::router(state.clone());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let router = router.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => http::serve_connection(stream, peer, router).await,
                                Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                        None => http::serve_connection(tcp, peer, router).await,
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    tracing::info!("shutting down: telling clients");
    state.shutting_down.store(true, Ordering::SeqCst);
    drop(listener);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    if state
        .events
        .send(Event::Shutdown { done: done_tx })
        .await
        .is_ok()
    {
        let _ = done_rx.await;
    }
    let AppState {
        alive: alive_tx, ..
    } = state;
    drop(alive_tx);
    drop(router);
    if tokio::time::timeout(SHUTDOWN_GRACE, alive.recv())
        .await
        .is_err()
    {
        tracing::warn!("some clients did not close in time");
    }
    actor.abort();
    Ok(())
}
