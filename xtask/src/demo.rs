//! `cargo xtask run [--demo]`: the app hosting room "demo" on this
//! computer, and with `--demo` two synthetic participants who talk, show
//! their test picture and chat, so one person sees a whole call.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hosted server's port (the app's default).
const HOST_PORT: u16 = 7880;
const ROOM: &str = "demo";
const BOTS: [&str; 2] = ["Grace (bot)", "Linus (bot)"];
const CHAT: [&str; 4] = [
    "Hi! I'm a synthetic participant: my camera is a test pattern and my voice is synthetic.",
    "Try the chat: type below and press Enter.",
    "Ctrl+D mutes you, Ctrl+E turns your camera off, Ctrl+Shift+S shows the stats.",
    "Resize the window: each tile asks the server for the video layer its size needs.",
];

/// Ends the bots when the app ends (or xtask is interrupted).
struct Bots(Vec<Child>);

impl Drop for Bots {
    fn drop(&mut self) {
        for bot in &mut self.0 {
            // A bot leaves the room cleanly on SIGTERM (or when its stdin closes).
            drop(bot.stdin.take());
            let _ = Command::new("kill")
                .args(["-TERM", &bot.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for bot in &mut self.0 {
            while Instant::now() < deadline && matches!(bot.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = bot.kill();
            let _ = bot.wait();
        }
    }
}

pub fn run_app(bin_dir: &Path, demo: bool, app_args: &[String]) -> Result<(), String> {
    let mut app = Command::new(bin_dir.join("parley"));
    app.args(["--server", "host", "--room", ROOM, "--join"])
        .args(["--host-port", &HOST_PORT.to_string()])
        .args(app_args);
    println!();
    println!("Starting Parley, hosting room \"{ROOM}\" on this computer (port {HOST_PORT}).");
    if demo {
        println!("Two synthetic participants will join once the room is up.");
    }
    println!("Close the window to stop.");
    println!();
    let mut child = app
        .spawn()
        .map_err(|e| format!("could not start the app: {e}"))?;
    let _bots = if demo {
        match wait_for_host(&mut child) {
            Ok(()) => Some(start_bots(bin_dir)?),
            Err(err) => {
                eprintln!("xtask: {err}; no synthetic participants");
                None
            }
        }
    } else {
        None
    };
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() || status.code().is_none() {
        Ok(())
    } else {
        Err(format!("the app exited with {status}"))
    }
}

/// Waits until the app's hosted server accepts connections.
fn wait_for_host(app: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", HOST_PORT)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = app.try_wait() {
            return Err(format!("the app exited with {status}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("nothing listens on port {HOST_PORT} after 60 s"))
}

fn start_bots(bin_dir: &Path) -> Result<Bots, String> {
    let url = format!("ws://127.0.0.1:{HOST_PORT}/ws");
    let mut bots = Bots(Vec::new());
    for (index, name) in BOTS.iter().enumerate() {
        let mut bot = Command::new(bin_dir.join("parley-cli"))
            .args(["join", &url, "--room", ROOM, "--name", name, "--fake-media"])
            .args([
                "--resolution",
                if index == 0 { "1280x720" } else { "640x360" },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start a synthetic participant: {e}"))?;
        if index == 0
            && let Some(mut stdin) = bot.stdin.take()
        {
            // One bot chats now and then; its stdin stays open until the end.
            std::thread::spawn(move || {
                for line in CHAT.iter().cycle() {
                    std::thread::sleep(Duration::from_secs(4));
                    if writeln!(stdin, "{line}").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(26));
                }
            });
        }
        bots.0.push(bot);
    }
    Ok(bots)
}
