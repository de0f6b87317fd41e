//! "Host on this computer": the SFU run inside the app, in open mode,
//! reachable by others on the LAN.

use std::net::{IpAddr, SocketAddr};

use parley_sfu::config::{Overrides, Settings};
use parley_sfu::server::Server;

#[derive(Debug)]
pub struct HostedServer {
    server: Server,
    /// Where this app connects (loopback).
    pub local_url: String,
    /// Where others on the LAN connect, one per address.
    pub lan_urls: Vec<String>,
}

impl HostedServer {
    /// Serves on every interface at `port` (0: any free one); a taken port
    /// falls back to a free one.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let server = match Server::start(settings(port)?).await {
            Ok(server) => server,
            Err(err) if port != 0 => {
                tracing::warn!(port, %err, "port taken; hosting on a free port");
                Server::start(settings(0)?).await?
            }
            Err(err) => return Err(err),
        };
        let port = server.local_addr().port();
        let lan_urls = lan_addresses()
            .into_iter()
            .map(|ip| format!("ws://{}/ws", SocketAddr::new(ip, port)))
            .collect();
        Ok(Self {
            server,
            local_url: format!("ws://127.0.0.1:{port}/ws"),
            lan_urls,
        })
    }

    pub async fn stop(self) {
        if let Err(err) = self.server.shutdown().await {
            tracing::warn!(%err, "hosted server did not stop cleanly");
        }
    }
}

fn settings(port: u16) -> anyhow::Result<Settings> {
    Settings::load(
        None,
        Overrides {
            listen: Some(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)),
            media_port: Some(0),
            media_tcp_port: Some(0),
            ..Overrides::default()
        },
    )
}

/// Addresses others can reach: up, not loopback, not link-local.
fn lan_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|interfaces| interfaces.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    ips.retain(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(_) => false,
    });
    ips
}
