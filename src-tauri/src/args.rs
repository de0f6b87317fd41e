//! The app's command line: the QA flags.

// Doc comments on the clap types below are `--help` text, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use parley_proto::validate;

/// Parley: video calls that connect through any firewall.
#[derive(Debug, Clone, Parser)]
#[command(name = "parley", version)]
pub struct AppArgs {
    /// Use a synthetic camera and microphone (and list them as devices),
    /// for machines without devices and for tests.
    #[arg(long)]
    pub fake_media: bool,
    /// Keep the profile and logs in this directory instead of the
    /// platform's places (an isolated profile for QA).
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Signaling URL to fill in (or `host` to host on this computer).
    #[arg(long)]
    pub server: Option<String>,
    /// Room to fill in.
    #[arg(long)]
    pub room: Option<String>,
    /// Display name to fill in.
    #[arg(long)]
    pub name: Option<String>,
    /// Access token for a server that requires one (from `parley-sfu
    /// token`); also PARLEY_TOKEN, which keeps it out of the process list.
    #[arg(long, env = "PARLEY_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<String>,
    /// Join at once with the server, room and name given (or remembered).
    #[arg(long)]
    pub join: bool,
    /// Log filter, e.g. info or parley_client=debug,info.
    #[arg(long, env = "PARLEY_LOG", default_value = "info")]
    pub log_level: String,
    /// How pictures reach the page: a local WebSocket (default) or Tauri's
    /// IPC channel (kept to measure one against the other).
    #[arg(long, value_enum, default_value_t = FrameTransport::Websocket)]
    pub frame_transport: FrameTransport,
    /// Benchmark: show synthetic tiles fed at 30 fps straight into frame
    /// delivery, e.g. `1280x720,320x180*8` (no call).
    #[arg(long, value_parser = crate::bench::parse)]
    pub bench_frames: Option<crate::bench::BenchSpec>,
    /// Port of the SFU hosted on this computer (0: any free one).
    #[arg(long, default_value_t = 7880)]
    pub host_port: u16,
    /// A join link, `parley://join?server=wss://…&room=…[&name=…][&token=…]`:
    /// joins at once (the desktop entry passes links clicked elsewhere here).
    #[arg(value_name = "LINK", value_parser = JoinLink::parse)]
    pub link: Option<JoinLink>,
}

impl AppArgs {
    /// Parses the command line and lets a join link fill in what the flags
    /// left out.
    pub fn from_command_line() -> Self {
        let mut args = Self::parse();
        args.apply_link();
        args
    }

    fn apply_link(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        // A token belongs to its server: the link's goes with the link's
        // server, a --token (or PARLEY_TOKEN) with a --server.
        let links_server = self.server.is_none();
        self.server.get_or_insert(link.server);
        self.room.get_or_insert(link.room);
        if let Some(name) = link.name {
            self.name.get_or_insert(name);
        }
        if let Some(token) = link.token
            && (links_server || self.token.is_none())
        {
            self.token = Some(token);
        }
        self.join = true;
    }
}

/// Longest link accepted: room for the longest token the protocol allows.
const MAX_LINK: usize = 2048 + MAX_TOKEN;
/// The protocol's limits: longer would be refused at join.
const MAX_NAME: usize = parley_proto::limits::MAX_NAME_CHARS;
const MAX_TOKEN: usize = parley_proto::limits::MAX_TOKEN_BYTES;

/// A token typed or passed by the page: blank means none.
pub fn optional_token(text: Option<&str>) -> Result<Option<String>, String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_token)
        .transpose()
}

/// An access token as the protocol takes it: not empty, not too long, and
/// printable (it travels in a JSON string and is shown nowhere).
pub fn parse_token(text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.is_empty() {
        return Err("the access token is empty".to_owned());
    }
    if token.len() > MAX_TOKEN {
        return Err(format!("the access token is longer than {MAX_TOKEN} bytes"));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("the access token has characters no token has".to_owned());
    }
    Ok(token.to_owned())
}

/// What a `parley://join` link asks for.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct JoinLink {
    pub server: String,
    pub room: String,
    pub name: Option<String>,
    pub token: Option<String>,
    /// The link as given, to pass on to an app already running.
    #[serde(skip)]
    pub text: String,
}

impl std::fmt::Debug for JoinLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the token nor the link text that carries it.
        f.debug_struct("JoinLink")
            .field("server", &self.server)
            .field("room", &self.room)
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl JoinLink {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_LINK {
            return Err(format!("link longer than {MAX_LINK} characters"));
        }
        let link = url::Url::parse(text).map_err(|err| format!("not a link: {err}"))?;
        if link.scheme() != "parley" || link.host_str() != Some("join") {
            return Err("expected parley://join?server=…&room=…".to_owned());
        }
        let (mut server, mut room, mut name, mut token) = (None, None, None, None);
        for (key, value) in link.query_pairs() {
            match key.as_ref() {
                "server" => server = Some(value.into_owned()),
                "room" => room = Some(value.into_owned()),
                "name" => name = Some(value.into_owned()),
                "token" => token = Some(value.into_owned()),
                // Newer links may carry more; they still join.
                _ => {}
            }
        }
        let server = server.ok_or("the link names no server")?;
        // A link from a web page must not make this computer host a room.
        let server_url =
            url::Url::parse(&server).map_err(|err| format!("the link's server: {err}"))?;
        if !matches!(server_url.scheme(), "ws" | "wss") {
            return Err("the link's server must be a ws:// or wss:// URL".to_owned());
        }
        let room = room
            .filter(|r| !r.trim().is_empty())
            .ok_or("the link names no room")?;
        // The server's own rules, so a link it would refuse fails here.
        validate::room_name(&room).map_err(|err| format!("the link's room: {}", err.message))?;
        // A long name is cut rather than refused: the person can still join.
        let name = name
            .map(|n| n.trim().chars().take(MAX_NAME).collect::<String>())
            .filter(|n| !n.is_empty());
        if let Some(name) = &name {
            validate::display_name(name)
                .map_err(|err| format!("the link's name: {}", err.message))?;
        }
        let token = token
            .map(|t| parse_token(&t))
            .transpose()
            .map_err(|err| format!("the link's token: {err}"))?;
        Ok(Self {
            server,
            room,
            name,
            token,
            text: text.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameTransport {
    Websocket,
    Channel,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_link_fills_in_what_flags_leave_out() {
        let mut args = AppArgs::parse_from([
            "parley",
            "--name",
            "Ada",
            "parley://join?server=wss%3A%2F%2Fsfu.example.org%2Fws&room=team-sync&name=Bob&token=eyJ.a-b_c.d",
        ]);
        args.apply_link();
        assert_eq!(args.server.as_deref(), Some("wss://sfu.example.org/ws"));
        assert_eq!(args.room.as_deref(), Some("team-sync"));
        assert_eq!(args.token.as_deref(), Some("eyJ.a-b_c.d"));
        assert_eq!(
            args.name.as_deref(),
            Some("Ada"),
            "a flag wins over the link"
        );
        assert!(args.join);
    }

    #[test]
    fn a_token_goes_with_its_server() {
        let link = "parley://join?server=ws://link.example/ws&room=r&token=link-token";
        let mut env_token = AppArgs::parse_from(["parley", "--token", "env-token", link]);
        env_token.apply_link();
        assert_eq!(env_token.token.as_deref(), Some("link-token"));
        let mut flag_server = AppArgs::parse_from([
            "parley",
            "--server",
            "ws://flag.example/ws",
            "--token",
            "flag-token",
            link,
        ]);
        flag_server.apply_link();
        assert_eq!(flag_server.server.as_deref(), Some("ws://flag.example/ws"));
        assert_eq!(flag_server.token.as_deref(), Some("flag-token"));
        assert!(!format!("{:?}", JoinLink::parse(link).unwrap()).contains("link-token"));
    }

    #[test]
    fn unusable_links_are_refused_with_a_reason() {
        for (link, reason) in [
            ("https://example.org/join?room=a", "expected parley://join"),
            (
                "parley://call?server=ws://a/ws&room=r",
                "expected parley://join",
            ),
            ("parley://join?room=r", "no server"),
            ("parley://join?server=host&room=r", "server"),
            ("parley://join?server=http://a/ws&room=r", "ws:// or wss://"),
            ("parley://join?server=ws://a/ws&room=%20", "no room"),
            ("parley://join?server=ws://a/ws&room=team%20sync", "room"),
            ("parley://join?server=ws://a/ws&room=r&name=%1B[31m", "name"),
            ("parley://join?server=ws://a/ws&room=r&token=a%20b", "token"),
            ("parley://join?server=ws://a/ws&room=r&token=", "token"),
            ("not a link", "not a link"),
        ] {
            let err = JoinLink::parse(link).expect_err(link);
            assert!(err.contains(reason), "{link}: {err}");
        }
        let long = format!("parley://join?server=ws://a/ws&room={}", "r".repeat(7000));
        assert!(JoinLink::parse(&long).unwrap_err().contains("longer"));
        let long_token = format!(
            "parley://join?server=ws://a/ws&room=r&token={}",
            "t".repeat(MAX_TOKEN + 1)
        );
        assert!(JoinLink::parse(&long_token).unwrap_err().contains("token"));
        assert!(
            AppArgs::try_parse_from(["parley", "--token", " "]).is_err(),
            "an empty token flag is refused"
        );
        let args = AppArgs::try_parse_from(["parley", "parley://join?room=r"]);
        assert!(
            args.is_err(),
            "a bad link is a command-line error, not a panic"
        );
    }

    #[test]
    fn names_from_links_are_trimmed_and_bounded() {
        let link = JoinLink::parse(&format!(
            "parley://join?server=ws://a:7880/ws&room=r&name=%20{}%20&extra=1",
            "n".repeat(100)
        ))
        .unwrap();
        assert_eq!(link.name.map(|n| n.len()), Some(MAX_NAME));
    }
}
