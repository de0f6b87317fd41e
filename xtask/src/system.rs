//! Installing what the build needs, and running steps with timing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One named step of a command, timed and reported.
pub struct Step {
    name: &'static str,
}

impl Step {
    pub fn new(name: &'static str) -> Self {
        Self { name }
    }

    pub fn run(self, mut command: Command) -> Result<(), String> {
        eprintln!("xtask: [{}] {}", self.name, describe(&command));
        let started = Instant::now();
        let status = command
            .status()
            .map_err(|err| format!("[{}] could not start: {err}", self.name))?;
        eprintln!(
            "xtask: [{}] {} in {:.1?}",
            self.name,
            if status.success() { "ok" } else { "FAILED" },
            started.elapsed()
        );
        if status.success() {
            Ok(())
        } else {
            Err(format!("[{}] failed ({status})", self.name))
        }
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Installs the Debian packages that are missing, as root or through sudo.
pub fn ensure_packages(packages: &[&str]) -> Result<(), String> {
    if !cfg!(target_os = "linux") || !has("dpkg-query") {
        eprintln!("xtask: not a Debian-based system; make sure these are installed: {packages:?}");
        return Ok(());
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing missing packages: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() {
        &[]
    } else if has("sudo") {
        &["sudo"]
    } else {
        return Err(format!(
            "these Debian packages are missing and I am neither root nor have sudo: {}\n\
             install them with: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        ));
    };
    let apt = |args: &[&str]| {
        let mut command = Command::new(sudo.first().copied().unwrap_or("apt-get"));
        if !sudo.is_empty() {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    Step::new("apt-get update").run(apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    Step::new("apt-get install").run(install)?;
    let still_missing: Vec<&str> = missing.into_iter().filter(|p| !installed(p)).collect();
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still missing after apt-get: {}",
            still_missing.join(" ")
        ))
    }
}

/// Makes sure `cargo <subcommand>` works, adding the rustup component if not.
pub fn ensure_cargo_component(subcommand: &str, component: &str) -> Result<(), String> {
    let works = Command::new("cargo")
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    if has("rustup") {
        Step::new("rustup component").run({
            let mut command = Command::new("rustup");
            command.args(["component", "add", component]);
            command
        })
    } else {
        Err(format!(
            "`cargo {subcommand}` is not available and rustup is not installed to add {component}"
        ))
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Version of tauri-driver the window tests run with.
const TAURI_DRIVER_VERSION: &str = "2.1.0";

/// Installs `tauri-driver` (the WebDriver front for the app's window
/// tests) under `tools`, unless that version is already there. Returns its path.
pub fn ensure_tauri_driver(tools: &Path) -> Result<PathBuf, String> {
    ensure_cargo_tool(tools, "tauri-driver", TAURI_DRIVER_VERSION)
}

/// Version of cargo-deb that packages the server and the CLI.
const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn ensure_cargo_deb(tools: &Path) -> Result<PathBuf, String> {
    ensure_cargo_tool(tools, "cargo-deb", CARGO_DEB_VERSION)
}

/// `cargo install`s one version of a tool under `tools` (a stamp file
/// remembers which), unless it is already there. Returns the binary's path.
fn ensure_cargo_tool(tools: &Path, name: &'static str, version: &str) -> Result<PathBuf, String> {
    let path = tools.join("bin").join(name);
    let stamp = tools.join(format!(".{name}-{version}"));
    if path.exists() && stamp.exists() {
        return Ok(path);
    }
    let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    install
        .args(["install", name, "--locked", "--version", version])
        .arg("--root")
        .arg(tools)
        // Its own target directory: the workspace's lock must not be shared.
        .env_remove("CARGO_TARGET_DIR");
    Step::new(name).run(install)?;
    std::fs::write(&stamp, version).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Version of the Tauri CLI (from npm, prebuilt: seconds instead of a
/// long `cargo install tauri-cli`).
const TAURI_CLI_VERSION: &str = "2.12.5";

/// Installs `@tauri-apps/cli` with npm under `tools/tauri-cli` (Node.js and
/// npm from Debian when the machine has none). Returns the `tauri` script.
pub fn ensure_tauri_cli(tools: &Path) -> Result<PathBuf, String> {
    let prefix = tools.join("tauri-cli");
    let path = prefix.join("node_modules").join(".bin").join("tauri");
    let stamp = prefix.join(format!(".version-{TAURI_CLI_VERSION}"));
    if path.exists() && stamp.exists() {
        return Ok(path);
    }
    if !has("npm") {
        ensure_packages(&["nodejs", "npm"])?;
    }
    std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
    let mut install = Command::new("npm");
    install
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("@tauri-apps/cli@{TAURI_CLI_VERSION}"));
    Step::new("npm install @tauri-apps/cli").run(install)?;
    std::fs::write(&stamp, TAURI_CLI_VERSION).map_err(|e| e.to_string())?;
    Ok(path)
}
