//! One app per profile. A second start on the same profile hands its join
//! link (if any) to the app already running and exits, so a `parley://`
//! link clicked while Parley is open joins in the open window, instead of
//! starting a second app that would fight the first over the profile file
//! and the camera. Starts with different `--profile-dir`s stay independent
//! (QA runs several side by side).
//!
//! The running app listens on a Unix socket that only this user can reach
//! (mode 0600): in `$XDG_RUNTIME_DIR`, named after the profile folder, else
//! in the profile folder itself. A lock file beside it makes "is anyone
//! there? then I am" one step, so two starts at once cannot both become the
//! app. A hand-over is one JSON line each way.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a later start passes on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The `parley://join` link it was started with.
    pub link: Option<String>,
}

/// The running app's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub pid: u32,
    /// Why the hand-over was refused (a link the running app could not use).
    pub error: Option<String>,
    /// The app is quitting: the later start should become the app.
    #[serde(default)]
    pub quitting: bool,
}

/// What the running app does with a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Taken,
    Refused(String),
    Quitting,
}

/// The socket the only app on a profile listens on.
#[derive(Debug)]
pub struct Listening {
    pub listener: std::os::unix::net::UnixListener,
    /// Removed when the app starts to quit, so that a start in the
    /// meantime becomes the new app rather than hand over to this one.
    pub path: PathBuf,
}

/// How one start relates to the others on its profile.
#[derive(Debug)]
pub enum Claim {
    /// The only app on this profile: it listens for later starts.
    First(Listening),
    /// Another app runs on this profile and answered.
    HandedOver(Reply),
    /// Another app listens on this profile but did not answer (hung):
    /// starting a second one beside it would not help.
    Unanswered(String),
    /// No socket path could be made (both places too long): each start is
    /// on its own.
    Unsupported,
}

/// A hand-over line is at most this long: a link of the longest allowed
/// size, with room for JSON's escaping.
pub const MAX_MESSAGE: u64 = 16 * 1024;
/// How long either side waits for the other's line.
const PATIENCE: Duration = Duration::from_secs(5);
/// How often a start tries again while the app it reached is quitting.
const QUITTING_RETRIES: u32 = 20;
const QUITTING_PAUSE: Duration = Duration::from_millis(100);
/// The longest Unix socket path (`sun_path` less its terminating zero).
const MAX_SOCKET_PATH: usize = 107;

/// Becomes the app of `profile_dir`, or hands `message` to the one there is.
pub fn claim(profile_dir: &Path, message: &Handover) -> std::io::Result<Claim> {
    // The folder is made first, so its canonical name (and so the socket's
    // name) is the same on the first start as on every later one.
    std::fs::create_dir_all(profile_dir)?;
    let Some(path) = socket_path(profile_dir) else {
        return Ok(Claim::Unsupported);
    };
    for _ in 0..QUITTING_RETRIES {
        match claim_once(&path, message)? {
            Claim::HandedOver(reply) if reply.quitting => std::thread::sleep(QUITTING_PAUSE),
            claim => return Ok(claim),
        }
    }
    Err(std::io::Error::other(
        "the Parley on this profile is quitting, but has not finished",
    ))
}

fn claim_once(path: &Path, message: &Handover) -> std::io::Result<Claim> {
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    // Held until this start listens or has handed over: whoever comes
    // next sees one or the other, never the gap between.
    lock.lock()?;
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => {
            return Ok(match hand_over(stream, message) {
                Ok(reply) => Claim::HandedOver(reply),
                Err(err) => Claim::Unanswered(err.to_string()),
            });
        }
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            // Nobody listens: a socket left by an app that crashed.
            std::fs::remove_file(path)?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(Claim::First(Listening {
        listener,
        path: path.to_owned(),
    }))
}

fn hand_over(
    mut stream: std::os::unix::net::UnixStream,
    message: &Handover,
) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let reply = read_line(&stream)
        .map_err(|err| std::io::Error::new(err.kind(), format!("it did not answer: {err}")))?;
    serde_json::from_str(&reply).map_err(std::io::Error::other)
}

/// One line of at most [`MAX_MESSAGE`] bytes, without its newline.
fn read_line(stream: &std::os::unix::net::UnixStream) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_MESSAGE)).read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no complete line (too long, or the other side stopped)",
        ));
    }
    line.pop();
    Ok(line)
}

/// Answers one later start: reads its message, lets `accept` act on it
/// and says what it did.
pub fn answer(
    mut stream: std::os::unix::net::UnixStream,
    accept: impl FnOnce(Handover) -> Answer,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    let answer = match serde_json::from_str::<Handover>(&read_line(&stream)?) {
        Ok(message) => accept(message),
        Err(err) => Answer::Refused(format!("not a hand-over: {err}")),
    };
    let reply = Reply {
        pid: std::process::id(),
        quitting: answer == Answer::Quitting,
        error: match answer {
            Answer::Refused(reason) => Some(reason),
            Answer::Taken | Answer::Quitting => None,
        },
    };
    let mut line = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Where the app of `profile_dir` listens, if a short enough path exists.
fn socket_path(profile_dir: &Path) -> Option<PathBuf> {
    let profile_dir = std::fs::canonicalize(profile_dir).unwrap_or_else(|_| profile_dir.into());
    // Only a runtime folder that exists: made by us, it would not be the
    // private one the session provides.
    let in_runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .map(|dir| {
            let key = fnv1a(profile_dir.as_os_str().as_encoded_bytes());
            dir.join(format!("parley-{key:016x}.sock"))
        });
    [in_runtime_dir, Some(profile_dir.join("instance.sock"))]
        .into_iter()
        .flatten()
        .find(|path| path.as_os_str().len() <= MAX_SOCKET_PATH)
}

/// A stable name for a folder: the same in every build of the app, which
/// a std hasher does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_start(profile_dir: &Path) -> Listening {
        match claim(profile_dir, &Handover::default()).unwrap() {
            Claim::First(listening) => listening,
            other => panic!("the first start listens, not {other:?}"),
        }
    }

    fn link(room: &str) -> Handover {
        Handover {
            link: Some(format!("parley://join?server=ws://a/ws&room={room}")),
        }
    }

    #[test]
    fn a_second_start_hands_its_link_to_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let listener = first_start(dir.path()).listener;
        let first = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut received = None;
            answer(stream, |message| {
                received = Some(message);
                Answer::Taken
            })
            .unwrap();
            received
        });
        let Claim::HandedOver(reply) = claim(dir.path(), &link("r1")).unwrap() else {
            panic!("the second start hands over");
        };
        assert_eq!(reply.pid, std::process::id());
        assert_eq!(reply.error, None);
        assert_eq!(first.join().unwrap(), Some(link("r1")));
    }

    #[test]
    fn a_refused_link_comes_back_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let listener = first_start(dir.path()).listener;
        let first = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            answer(stream, |_| Answer::Refused("in a call".to_owned())).unwrap();
        });
        let Claim::HandedOver(reply) = claim(dir.path(), &link("r2")).unwrap() else {
            panic!("the second start hands over");
        };
        assert_eq!(reply.error.as_deref(), Some("in a call"));
        first.join().unwrap();
    }

    #[test]
    fn a_start_while_the_app_quits_becomes_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let Listening { listener, path } = first_start(dir.path());
        let quitting = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            // What the app does as it starts to quit.
            std::fs::remove_file(&path).unwrap();
            answer(stream, |_| Answer::Quitting).unwrap();
        });
        let second = claim(dir.path(), &link("r3")).unwrap();
        quitting.join().unwrap();
        assert!(matches!(second, Claim::First(_)), "{second:?}");
    }

    #[test]
    fn of_two_starts_at_once_one_becomes_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || match claim(&dir, &link("r4")).unwrap() {
                    Claim::First(Listening { listener, .. }) => {
                        let (stream, _) = listener.accept().unwrap();
                        answer(stream, |_| Answer::Taken).unwrap();
                        "the app"
                    }
                    Claim::HandedOver(_) => "handed over",
                    Claim::Unsupported | Claim::Unanswered(_) => "neither",
                })
            })
            .collect();
        let mut outcomes: Vec<&str> = starts.into_iter().map(|s| s.join().unwrap()).collect();
        outcomes.sort_unstable();
        assert_eq!(outcomes, ["handed over", "the app"]);
    }

    #[test]
    fn the_socket_is_for_this_user_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let listening = first_start(dir.path());
        let mode = std::fs::metadata(&listening.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_socket_left_by_a_crashed_app_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let listening = first_start(dir.path());
        // The app dies without removing its socket.
        assert!(listening.path.exists());
        drop(listening);
        assert!(matches!(
            claim(dir.path(), &Handover::default()).unwrap(),
            Claim::First(_)
        ));
    }

    #[test]
    fn profiles_do_not_share_an_app() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = claim(one.path(), &Handover::default()).unwrap();
        let second = claim(two.path(), &Handover::default()).unwrap();
        assert!(matches!(first, Claim::First(_)));
        assert!(matches!(second, Claim::First(_)));
    }

    #[test]
    fn garbage_and_endless_lines_are_refused_without_harm() {
        let dir = tempfile::tempdir().unwrap();
        let Listening { listener, path } = first_start(dir.path());
        let first = std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                outcomes.push(answer(stream, |_| Answer::Taken).is_ok());
            }
            outcomes
        });
        let mut garbage = std::os::unix::net::UnixStream::connect(&path).unwrap();
        garbage.write_all(b"{not json\n").unwrap();
        let reply: Reply = serde_json::from_str(&read_line(&garbage).unwrap()).unwrap();
        assert!(reply.error.unwrap().contains("not a hand-over"));
        let mut endless = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _ = endless.write_all(&vec![b'x'; MAX_MESSAGE as usize + 10]);
        drop(endless);
        assert_eq!(first.join().unwrap(), [true, false]);
    }

    #[test]
    fn the_socket_name_is_stable_and_short() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let deep = PathBuf::from("/").join("d".repeat(200));
        let path = socket_path(&deep);
        assert!(path.is_none_or(|p| p.as_os_str().len() <= MAX_SOCKET_PATH));
    }
}
