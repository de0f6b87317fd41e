//! Settings from a TOML file, overridden by command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::auth::{TokenAuthority, TurnCredentials};
use crate::core::CoreConfig;

/// Where the server listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7880";

/// The TOML file, as written by an operator. Unknown keys are errors, so a
/// typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub auth: AuthSection,
    pub tls: Option<TlsSection>,
    pub turn: Option<TurnSection>,
    #[serde(default)]
    pub stun_urls: Vec<String>,
    #[serde(default)]
    pub rooms: RoomsSection,
    #[serde(default)]
    pub media: MediaSection,
}

/// The UDP media port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// False runs signaling and chat only.
    pub enabled: bool,
    /// One UDP port for every media session (0 picks a free one).
    pub udp_port: u16,
    /// Addresses to serve media on; empty means every address of every
    /// interface that is up.
    pub ips: Vec<IpAddr>,
    /// The address clients reach when the server sits behind 1:1 NAT (a
    /// cloud VM's public IP); advertised instead of the local address.
    pub public_ip: Option<IpAddr>,
    /// A session whose ICE has not connected this long after it started is closed.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Passive ICE-TCP (RFC 6544) beside the UDP port, for clients whose
    /// network blocks UDP.
    pub ice_tcp: bool,
    /// The ICE-TCP port on every media address (0 picks a free one).
    pub tcp_port: u16,
}

/// Where media is served unless told otherwise.
pub const DEFAULT_MEDIA_PORT: u16 = 7882;
/// Where ICE-TCP is served unless told otherwise.
pub const DEFAULT_ICE_TCP_PORT: u16 = 7881;

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_port: DEFAULT_MEDIA_PORT,
            ips: Vec::new(),
            public_ip: None,
            connect_timeout: Duration::from_secs(15),
            ice_tcp: true,
            tcp_port: DEFAULT_ICE_TCP_PORT,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// HS256 secret for access tokens. Without one the server runs in open mode.
    pub secret: Option<String>,
    /// Read the secret from this file instead (trailing whitespace is trimmed).
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    /// coturn's `static-auth-secret`.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// `turn:` and `turns:` URLs handed to clients.
    pub urls: Vec<String>,
    /// Credential lifetime, e.g. "12h".
    #[serde(default = "default_turn_ttl", with = "humantime_serde_compat")]
    pub ttl: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsSection {
    pub max_participants: usize,
    #[serde(with = "humantime_serde_compat")]
    pub resume_window: Duration,
}

impl Default for RoomsSection {
    fn default() -> Self {
        let core = CoreConfig::default();
        Self {
            max_participants: core.max_participants_per_room,
            resume_window: core.resume_window,
        }
    }
}

fn default_turn_ttl() -> Duration {
    Duration::from_hours(12)
}

/// Durations in the file are human strings ("15s", "12h").
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(de)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Flags that override the file; `None` keeps the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub auth_secret: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub turn_secret: Option<String>,
    pub turn_urls: Vec<String>,
    pub turn_ttl: Option<Duration>,
    pub stun_urls: Vec<String>,
    pub max_participants: Option<usize>,
    pub resume_window: Option<Duration>,
    pub no_media: bool,
    pub media_port: Option<u16>,
    pub media_tcp_port: Option<u16>,
    pub no_ice_tcp: bool,
    pub media_ips: Vec<IpAddr>,
    pub public_ip: Option<IpAddr>,
}

/// Everything the server needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub core: CoreConfig,
    /// `None` when media is turned off.
    pub media: Option<MediaSettings>,
}

/// Where the media port is bound and what clients are told.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub udp_port: u16,
    /// `None`: no ICE-TCP.
    pub tcp_port: Option<u16>,
    /// Empty: every interface address.
    pub ips: Vec<IpAddr>,
    pub public_ip: Option<IpAddr>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Reads `path` (when given) and applies `overrides` on top.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file, overrides)
    }

    pub fn resolve(file: FileConfig, flags: Overrides) -> anyhow::Result<Self> {
        let listen = match flags.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().expect("default address parses"),
        };
        let auth_secret = match flags.auth_secret.clone() {
            Some(secret) => Some(secret),
            None => read_secret(file.auth.secret, file.auth.secret_file.as_deref(), "auth")?,
        };
        let tokens = auth_secret
            .map(|secret| TokenAuthority::new(secret.as_bytes()).map(Arc::new))
            .transpose()?;

        let tls = match (flags.tls_cert.clone(), flags.tls_key.clone(), file.tls) {
            (Some(cert), Some(key), _) | (None, None, Some(TlsSection { cert, key })) => {
                Some(TlsFiles { cert, key })
            }
            (None, None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };

        let turn = resolve_turn(file.turn, &flags)?;
        let mut stun_urls = file.stun_urls;
        stun_urls.extend(flags.stun_urls);
        for url in &stun_urls {
            if !url.starts_with("stun:") && !url.starts_with("stuns:") {
                bail!("STUN URL `{url}` must start with stun: or stuns:");
            }
        }
        let max_participants = flags
            .max_participants
            .unwrap_or(file.rooms.max_participants);
        if max_participants == 0 {
            bail!("max participants per room must be at least 1");
        }
        let media = (file.media.enabled && !flags.no_media).then(|| {
            let mut ips = file.media.ips;
            ips.extend(flags.media_ips.iter().copied());
            MediaSettings {
                udp_port: flags.media_port.unwrap_or(file.media.udp_port),
                tcp_port: (file.media.ice_tcp && !flags.no_ice_tcp)
                    .then(|| flags.media_tcp_port.unwrap_or(file.media.tcp_port)),
                ips,
                public_ip: flags.public_ip.or(file.media.public_ip),
                connect_timeout: file.media.connect_timeout,
            }
        });
        if let Some(media) = &media
            && media.public_ip.is_some()
            && media.ips.len() != 1
        {
            bail!("a public media IP needs exactly one media IP: the local address it maps to");
        }
        Ok(Self {
            listen,
            tls,
            media,
            core: CoreConfig {
                tokens,
                turn,
                stun_urls,
                max_participants_per_room: max_participants,
                resume_window: flags.resume_window.unwrap_or(file.rooms.resume_window),
                // Filled in once the media port is bound.
                media: None,
            },
        })
    }
}

fn resolve_turn(
    file: Option<TurnSection>,
    flags: &Overrides,
) -> anyhow::Result<Option<TurnCredentials>> {
    let (file_secret, file_secret_path, mut urls, file_ttl) = match file {
        Some(t) => (t.secret, t.secret_file, t.urls, Some(t.ttl)),
        None => (None, None, Vec::new(), None),
    };
    urls.extend(flags.turn_urls.iter().cloned());
    let secret = match &flags.turn_secret {
        Some(secret) => Some(secret.clone()),
        None => read_secret(file_secret, file_secret_path.as_deref(), "turn")?,
    };
    match (secret, urls.is_empty()) {
        (None, true) => Ok(None),
        (None, false) => bail!("TURN URLs are configured but no TURN secret"),
        (Some(_), true) => bail!("a TURN secret is configured but no TURN URLs"),
        (Some(secret), false) => {
            for url in &urls {
                if !url.starts_with("turn:") && !url.starts_with("turns:") {
                    bail!("TURN URL `{url}` must start with turn: or turns:");
                }
            }
            let ttl = flags.turn_ttl.or(file_ttl).unwrap_or_else(default_turn_ttl);
            Ok(Some(TurnCredentials::new(
                secret.into_bytes(),
                urls,
                ttl.as_secs().max(60),
            )))
        }
    }
}

fn read_secret(
    inline: Option<String>,
    path: Option<&Path>,
    section: &str,
) -> anyhow::Result<Option<String>> {
    match (inline, path) {
        (Some(_), Some(_)) => bail!("[{section}] has both secret and secret_file; keep one"),
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(path)) => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("reading [{section}] secret_file {}", path.display()))?;
            Ok(Some(secret.trim_end().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sample_config_parses() {
        let sample = include_str!("../../../packaging/sfu.toml");
        let file: FileConfig = toml::from_str(sample).unwrap();
        assert!(file.auth.secret_file.is_some());
        assert_eq!(file.turn.unwrap().urls.len(), 3);
    }

    #[test]
    fn full_file_parses() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:443"
            stun_urls = ["stun:turn.example.com:3478"]
            [auth]
            secret = "0123456789abcdef0123"
            [tls]
            cert = "/etc/parley/cert.pem"
            key = "/etc/parley/key.pem"
            [turn]
            secret = "coturn-secret"
            urls = ["turns:turn.example.com:443?transport=tcp"]
            ttl = "6h"
            [rooms]
            max_participants = 25
            resume_window = "30s"
            "#,
        )
        .unwrap();
        let settings = Settings::resolve(file, Overrides::default()).unwrap();
        assert_eq!(settings.listen.port(), 443);
        assert!(settings.tls.is_some());
        assert!(settings.core.tokens.is_some());
        assert!(settings.core.turn.is_some());
        assert_eq!(settings.core.max_participants_per_room, 25);
        assert_eq!(settings.core.resume_window, Duration::from_secs(30));
    }

    #[test]
    fn flags_override_the_file_and_defaults_are_open_mode() {
        let settings = Settings::resolve(
            FileConfig::default(),
            Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                max_participants: Some(3),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(settings.listen.port(), 0);
        assert!(settings.core.tokens.is_none());
        assert_eq!(settings.core.max_participants_per_room, 3);
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(toml::from_str::<FileConfig>("lisen = \"0.0.0.0:1\"").is_err());
        let half_turn = FileConfig {
            turn: Some(TurnSection {
                secret: None,
                secret_file: None,
                urls: vec!["turn:x".into()],
                ttl: default_turn_ttl(),
            }),
            ..FileConfig::default()
        };
        assert!(Settings::resolve(half_turn, Overrides::default()).is_err());
        let short_secret = Overrides {
            auth_secret: Some("short".into()),
            ..Overrides::default()
        };
        assert!(Settings::resolve(FileConfig::default(), short_secret).is_err());
        let half_tls = Overrides {
            tls_cert: Some("c.pem".into()),
            ..Overrides::default()
        };
        assert!(Settings::resolve(FileConfig::default(), half_tls).is_err());
    }
}
