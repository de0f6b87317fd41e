//! The real app in a real window: a private Xvfb screen, `tauri-driver`
//! in front of WebKit's WebDriver (`/usr/bin/WebKitWebDriver`, Debian's
//! webkit2gtk-driver), and a small W3C WebDriver client over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

const NATIVE_DRIVER: &str = "/usr/bin/WebKitWebDriver";
/// The WebDriver key code for Enter.
pub const ENTER: &str = "\u{E007}";

/// A process killed (with its process group) when dropped.
#[derive(Debug)]
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn spawn_group(command: &mut Command) -> anyhow::Result<Guarded> {
    use std::os::unix::process::CommandExt as _;
    Ok(Guarded(command.process_group(0).spawn()?))
}

/// A virtual screen of its own.
#[derive(Debug)]
pub struct Xvfb {
    _process: Guarded,
    pub display: String,
}

impl Xvfb {
    pub fn start() -> anyhow::Result<Self> {
        let xvfb = which("Xvfb")
            .context("Xvfb is missing: `cargo xtask test` installs it (Debian package xvfb)")?;
        let number = (90..200)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .context("no free X display number")?;
        let display = format!(":{number}");
        let process = spawn_group(
            Command::new(xvfb)
                .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        wait_until(Duration::from_secs(10), || socket.exists()).context("Xvfb did not start")?;
        Ok(Self {
            _process: process,
            display,
        })
    }
}

/// `tauri-driver`, found next to the other tools `cargo xtask` installs.
pub fn tauri_driver() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PARLEY_TAURI_DRIVER") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let cached = PathBuf::from(home).join(".cache/parley/tools/bin/tauri-driver");
    if cached.exists() {
        return Ok(cached);
    }
    which("tauri-driver").context(
        "tauri-driver is missing: `cargo xtask test` installs it \
         (cargo install tauri-driver --root ~/.cache/parley/tools)",
    )
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
    })
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?}")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `tauri-driver` on a free port, drawing on `display`.
#[derive(Debug)]
pub struct Driver {
    _process: Guarded,
    url: String,
    agent: ureq::Agent,
}

impl Driver {
    pub fn start(display: &str, log: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(NATIVE_DRIVER).exists(),
            "{NATIVE_DRIVER} is missing: `cargo xtask test` installs it (Debian package webkit2gtk-driver)"
        );
        Self::start_with(Command::new(tauri_driver()?), display, log)
    }

    /// tauri-driver and the app inside the system at `root` (entered with
    /// chroot): `root` has `/usr/local/bin/tauri-driver` and WebKit's driver,
    /// and the app path given to `launch` is a path in `root`. `env` is
    /// added to the environment the drivers, and so the app, start with.
    pub fn start_in_root(
        root: &Path,
        env: &[(&str, &str)],
        display: &str,
        log: &Path,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            root.join(NATIVE_DRIVER.trim_start_matches('/')).exists(),
            "{NATIVE_DRIVER} is missing in {}",
            root.display()
        );
        let mut command = Command::new("chroot");
        command
            .arg(root)
            .arg("/usr/local/bin/tauri-driver")
            .envs(env.iter().copied());
        Self::start_with(command, display, log)
    }

    fn start_with(mut command: Command, display: &str, log: &Path) -> anyhow::Result<Self> {
        let (port, native_port) = (free_port()?, free_port()?);
        let log = std::fs::File::create(log)?;
        let process = spawn_group(
            command
                .args(["--port", &port.to_string()])
                .args(["--native-port", &native_port.to_string()])
                .args(["--native-driver", NATIVE_DRIVER])
                .env("DISPLAY", display)
                .env_remove("WAYLAND_DISPLAY")
                // WebKit's GPU paths assume hardware; none here.
                .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        // tauri-driver listens at once but starts WebKitWebDriver behind it
        // without waiting; a session asked for before that one listens fails.
        for (what, port) in [("tauri-driver", port), ("WebKitWebDriver", native_port)] {
            wait_until(Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .with_context(|| format!("{what} did not start listening"))?;
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
            agent,
        })
    }

    /// Starts the app with `args`; the session ends (and the app closes)
    /// when the returned value is dropped.
    pub fn launch(&self, app: &Path, args: &[String]) -> anyhow::Result<Session<'_>> {
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "tauri:options": {"application": app, "args": args},
            }}
        });
        let value = self.call("POST", "/session", Some(&capabilities))?;
        let id = value["sessionId"]
            .as_str()
            .context("no session id")?
            .to_owned();
        Ok(Session { driver: self, id })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url);
        let response = match (method, body) {
            ("POST", body) => self
                .agent
                .post(&url)
                .send_json(body.cloned().unwrap_or_else(|| json!({}))),
            ("DELETE", _) => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        }
        .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let value: Value = response.into_body().read_json().context("WebDriver JSON")?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", value["value"]);
        }
        Ok(value["value"].clone())
    }
}

/// One app launched by the driver.
#[derive(Debug)]
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Polls `script` until it returns something truthy; returns that.
    pub fn wait_for(&self, what: &str, limit: Duration, script: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.execute(script, &[]) {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => last = value,
                Err(err) => last = Value::String(err.to_string()),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("timed out after {limit:?} waiting for {what} (last: {last})")
    }

    fn element(&self, css: &str) -> anyhow::Result<String> {
        let found = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no element {css}"))
    }

    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.call("POST", &format!("/element/{id}/click"), None)?;
        Ok(())
    }

    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css)?;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({"text": text})),
        )?;
        Ok(())
    }

    /// Saves a screenshot of the window as PNG.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let encoded = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().context("screenshot is base64")?)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.id), None);
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

/// Where tests keep screenshots: `<target>/test-artifacts/<name>`.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let dir = crate::bin("parley-cli")
        .parent()
        .and_then(Path::parent)
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("test-artifacts")
        .join(name);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn mean(values: &[Value]) -> f64 {
    values.iter().filter_map(Value::as_f64).sum::<f64>() / values.len().max(1) as f64
}

/// The tile is drawn from real pictures: sampled pixels are not black and
/// they change within a second.
pub async fn assert_tile_moves(session: &Session<'_>, tile: &str) {
    let sample_script = format!("return window.parleyVideo.sample('{tile}', 4)");
    let first = session
        .execute(&sample_script, &[])
        .expect("sampling the tile");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = session
        .execute(&sample_script, &[])
        .expect("sampling the tile");
    let (first, second) = (
        first.as_array().expect("sampling the tile"),
        second.as_array().expect("sampling the tile"),
    );
    assert!(mean(first) > 30.0, "the tile is not black: {first:?}");
    assert_ne!(first, second, "the tile changes over time");
}

/// Waits until the tile of `participant`'s camera shows pictures, then
/// checks them as `assert_tile_moves` does.
pub async fn assert_participant_video_moves(
    session: &Session<'_>,
    participant: &str,
    limit: Duration,
) {
    session
        .wait_for(
            "the participant's picture",
            limit,
            &format!(
                "const t = document.querySelector('.tile[data-participant=\"{participant}\"] canvas'); \
                 return t && !t.hidden"
            ),
        )
        .expect("the participant's tile shows pictures");
    assert_tile_moves(session, &format!("{participant}/camera")).await;
}
