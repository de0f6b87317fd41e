//! HTTP CONNECT proxies (RFC 9110 §9.3.6): the tunnel corporate networks
//! often allow as the only way out. Set explicitly or from `HTTPS_PROXY`.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy's reply header is read up to this size; more is not a proxy.
const MAX_REPLY_HEADER: usize = 8 * 1024;

/// An HTTP proxy: `http://[user:password@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `user:password`, sent as basic authentication.
    credentials: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("Proxy")
            .field("address", &self.address())
            .field("authenticated", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for Proxy {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("proxy `{}`: {why}", redact(url));
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.contains("://") {
            return Err(bad("only http:// proxies are supported"));
        } else {
            url
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((credentials, authority)) => {
                if !credentials.contains(':') {
                    return Err(bad("credentials must be user:password"));
                }
                (Some(percent_decode(credentials)), authority)
            }
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(|| bad("needs a port"))?;
            (host, port)
        } else {
            authority
                .rsplit_once(':')
                .ok_or_else(|| bad("needs a port"))?
        };
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(bad("bad host"));
        }
        let port = port.parse().map_err(|_| bad("bad port"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
        })
    }
}

/// `user:password@` removed, for messages.
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, after)) => {
            let scheme = before.split_once("://").map_or("", |(s, _)| s);
            if scheme.is_empty() {
                format!("***@{after}")
            } else {
                format!("{scheme}://***@{after}")
            }
        }
        None => url.to_owned(),
    }
}

/// `%40` and friends in proxy credentials.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Proxy {
    /// `HTTPS_PROXY`, then `https_proxy`; empty means none.
    pub fn from_env() -> Result<Option<Self>, String> {
        for name in ["HTTPS_PROXY", "https_proxy"] {
            if let Ok(value) = std::env::var(name)
                && !value.trim().is_empty()
            {
                return value
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|e| format!("{name}: {e}"));
            }
        }
        Ok(None)
    }

    /// `host:port` of the proxy.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connects to the proxy and asks it for a tunnel to `host:port`.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let proxy = self.address();
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connecting to proxy {proxy}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        stream
            .write_all(self.request(&target).as_bytes())
            .await
            .map_err(|e| format!("proxy {proxy}: {e}"))?;
        let header = read_reply_header(&mut stream)
            .await
            .map_err(|e| format!("proxy {proxy}: {e}"))?;
        check_reply(&header).map_err(|e| format!("proxy {proxy} for {target}: {e}"))?;
        Ok(stream)
    }

    fn request(&self, target: &str) -> String {
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = &self.credentials {
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            request.push_str("Proxy-Authorization: Basic ");
            request.push_str(&encoded);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request
    }
}

/// Reads up to the blank line that ends the reply header, one byte at a
/// time so nothing of the tunnel that follows is consumed.
async fn read_reply_header(stream: &mut TcpStream) -> Result<String, String> {
    let mut header = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !header.ends_with(b"\r\n\r\n") {
        if header.len() >= MAX_REPLY_HEADER {
            return Err("reply header too long; is this an HTTP proxy?".into());
        }
        let read = stream
            .read(&mut byte)
            .await
            .map_err(|e| format!("reading the reply: {e}"))?;
        if read == 0 {
            return Err("closed the connection without replying".into());
        }
        header.push(byte[0]);
    }
    String::from_utf8(header).map_err(|_| "reply is not text; is this an HTTP proxy?".into())
}

/// Accepts a 2xx status line; explains the rest.
fn check_reply(header: &str) -> Result<(), String> {
    let status_line = header.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP reply: `{status_line}`"));
    }
    match code.and_then(|c| c.parse::<u16>().ok()) {
        Some(200..=299) => Ok(()),
        Some(407) => Err("proxy authentication required (407): check the proxy credentials".into()),
        Some(code) => Err(format!("tunnel refused ({code}): `{status_line}`")),
        None => Err(format!("bad status line `{status_line}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_with_and_without_credentials() {
        let plain: Proxy = "http://proxy.corp:3128".parse().unwrap();
        assert_eq!(plain.address(), "proxy.corp:3128");
        assert_eq!(plain.credentials, None);
        let bare: Proxy = "10.0.0.1:8080/".parse().unwrap();
        assert_eq!(bare.address(), "10.0.0.1:8080");
        let authed: Proxy = "http://ada:p%40ss@proxy.corp:3128".parse().unwrap();
        assert_eq!(authed.credentials.as_deref(), Some("ada:p@ss"));
        assert!(
            !format!("{authed:?}").contains("p@ss"),
            "password kept out of Debug"
        );
        let v6: Proxy = "http://[2001:db8::1]:3128".parse().unwrap();
        assert_eq!(v6.address(), "[2001:db8::1]:3128");
        for bad in [
            "https://p:1",
            "socks5://p:1",
            "http://p",
            "http://p:x",
            "http://ada@p:1",
        ] {
            let error = bad.parse::<Proxy>().unwrap_err();
            assert!(!error.contains("ada:"), "{error}");
        }
        let error = "http://ada:secret@p".parse::<Proxy>().unwrap_err();
        assert!(!error.contains("secret"), "credentials redacted: {error}");
    }

    #[test]
    fn the_connect_request_carries_basic_auth() {
        let proxy: Proxy = "http://ada:lovelace@p:3128".parse().unwrap();
        let request = proxy.request("turn.example.com:443");
        assert!(request.starts_with("CONNECT turn.example.com:443 HTTP/1.1\r\n"));
        assert!(request.contains("Proxy-Authorization: Basic YWRhOmxvdmVsYWNl\r\n"));
        assert!(request.ends_with("\r\n\r\n"));
    }

    #[test]
    fn replies_are_checked() {
        assert!(check_reply("HTTP/1.1 200 Connection established\r\n\r\n").is_ok());
        assert!(check_reply("HTTP/1.0 200 OK\r\n\r\n").is_ok());
        assert!(
            check_reply("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                .unwrap_err()
                .contains("407")
        );
        assert!(
            check_reply("HTTP/1.1 403 Forbidden\r\n\r\n")
                .unwrap_err()
                .contains("403")
        );
        assert!(check_reply("SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn a_tunnel_is_opened_through_a_listening_proxy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let header = read_reply_header(&mut stream).await.unwrap();
            assert!(header.starts_with("CONNECT 192.0.2.7:443 HTTP/1.1"));
            stream
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let mut tunnelled = [0u8; 5];
            stream.read_exact(&mut tunnelled).await.unwrap();
            tunnelled
        });
        let proxy: Proxy = format!("http://127.0.0.1:{port}").parse().unwrap();
        let mut stream = proxy.connect("192.0.2.7", 443).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        assert_eq!(&server.await.unwrap(), b"hello");
    }
}
