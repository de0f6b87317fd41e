//! `cargo xtask run | test`: the two commands that set up, build and run
//! Parley on a fresh Debian or Ubuntu machine.
//!
//! Dependency-free on purpose: it must compile before anything is installed.

mod appimage;
mod bundle;
mod demo;
mod native;
mod system;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use system::{Step, ensure_packages};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  run [--demo] [-- APP_ARGS]
                        build and start the desktop app, hosting room `demo` on this
                        computer; --demo also starts two synthetic participants
                        (pass app flags after --, e.g. -- --fake-media)
  run --sfu [--listen ADDR]
                        build and start only the SFU (open mode, default 127.0.0.1:7880)
  test                  install what is missing, then fmt --check, clippy -D warnings, the
                        packages (as bundle), all tests (the package test installs them
                        into a clean Debian root)
  bundle                build the app's .deb and .rpm and the server's and CLI's .deb
                        (release, stripped) into dist/ and print their paths and sizes
  env                   set up the native parts; print the exports that let plain `cargo build` find the native parts

environment:
  CARGO_TARGET_DIR      where to build (default: ~/.cache/parley/target, shared by all checkouts)";

/// Debian packages the build needs: a C toolchain for crates with C parts
/// (ring, openh264), pkg-config to find system libraries, nasm for openh264's
/// assembly, cmake to build the bundled libopus, libclang for the V4L2
/// (camera) and audio-processing bindings, ALSA headers for audio devices,
/// what builds WebRTC's audio processing (ninja, curl for abseil's
/// sources, python3-venv for meson; see `native.rs`), and the WebKitGTK and
/// GTK headers the desktop app (Tauri) links against.
const BUILD_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "ca-certificates",
    "nasm",
    "cmake",
    "libclang-dev",
    "libasound2-dev",
    "ninja-build",
    "curl",
    "python3-venv",
    "libwebkit2gtk-4.1-dev",
    "libgtk-3-dev",
    "librsvg2-dev",
];

/// Debian packages the tests start for real: network namespaces and a
/// firewall for the client host (iproute2, nftables), a TURN server
/// (coturn), an HTTP proxy (tinyproxy), and a sound server with virtual
/// devices reached through ALSA (pulseaudio, its tools, the ALSA plugin),
/// a virtual screen with WebKit's WebDriver for the app's window tests, and
/// debootstrap for the clean Debian root the packages are installed into,
/// and rpm's tools (rpm, rpm2cpio, cpio) to read the .rpm it cannot install.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "coturn",
    "tinyproxy",
    "pulseaudio",
    "pulseaudio-utils",
    "libasound2-plugins",
    "xvfb",
    "xauth",
    "webkit2gtk-driver",
    "debootstrap",
    "rpm",
    "cpio",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bundle") => bundle::run(&args[1..]),
        Some("env") => ensure_packages(BUILD_PACKAGES)
            .and_then(|()| native::ensure())
            .map(|()| println!("{}", native::shell_exports())),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The shared target directory: kept outside the checkout so every clone on
/// this machine reuses one build of the dependencies.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(workspace_root, PathBuf::from);
    home.join(".cache").join("parley").join("target")
}

/// Tools the tests run (tauri-driver), installed once per machine.
fn tools_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(workspace_root, PathBuf::from);
    home.join(".cache").join("parley").join("tools")
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir());
    native::apply(&mut command);
    command
}

fn run(args: &[String]) -> Result<(), String> {
    let mut listen = "127.0.0.1:7880".to_owned();
    let mut demo = false;
    let mut sfu_only = false;
    let mut app_args: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--demo" => demo = true,
            "--sfu" => sfu_only = true,
            "--listen" => listen.clone_from(rest.next().ok_or("--listen needs an address")?),
            "--" => app_args.extend(rest.by_ref().cloned()),
            other => return Err(format!("unknown option {other}\n\n{USAGE}")),
        }
    }
    if !sfu_only {
        display_available()?;
    }
    ensure_packages(BUILD_PACKAGES)?;
    native::ensure()?;
    Step::new("build").run(cargo(&["build", "--workspace", "--bins"]))?;
    let bin_dir = target_dir().join("debug");
    if sfu_only {
        return run_sfu(&bin_dir, &listen);
    }
    demo::run_app(&bin_dir, demo, &app_args)
}

/// The app needs a screen; say how to get one instead of letting GTK fail.
fn display_available() -> Result<(), String> {
    if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        return Ok(());
    }
    Err(
        "no display: the app opens a window, and neither DISPLAY nor WAYLAND_DISPLAY is set.\n\
         Run it from a desktop session, or on a virtual screen:\n\
         \n    xvfb-run -a cargo xtask run --demo -- --fake-media\n\n\
         (xvfb-run is in Debian's xvfb package), or run the server alone with\n\
         \n    cargo xtask run --sfu"
            .into(),
    )
}

fn run_sfu(bin_dir: &Path, listen: &str) -> Result<(), String> {
    let cli = bin_dir.join("parley-cli");
    let port = listen.rsplit(':').next().unwrap_or("7880");
    println!();
    println!("Starting parley-sfu in open mode on {listen}. Join from another terminal:");
    println!(
        "  {} join ws://127.0.0.1:{port}/ws --room demo --name Ada",
        cli.display()
    );
    println!("Type a line and press Enter to chat; Ctrl-D leaves. Ctrl-C stops the server.");
    println!();
    let status = Command::new(bin_dir.join("parley-sfu"))
        .args(["--listen", listen])
        .status()
        .map_err(|err| format!("could not start parley-sfu: {err}"))?;
    // Ctrl-C reaches both processes; the server exits cleanly on it.
    if status.success() || status.code().is_none() {
        Ok(())
    } else {
        Err(format!("parley-sfu exited with {status}"))
    }
}

fn test(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!("unknown option {arg}\n\n{USAGE}"));
    }
    let started = Instant::now();
    ensure_packages(BUILD_PACKAGES)?;
    ensure_packages(TEST_PACKAGES)?;
    native::ensure()?;
    system::ensure_cargo_component("fmt", "rustfmt")?;
    system::ensure_cargo_component("clippy", "clippy")?;
    let tauri_driver = system::ensure_tauri_driver(&tools_dir())?;
    println!("xtask: building in {}", target_dir().display());
    Step::new("format").run(cargo(&["fmt", "--all", "--check"]))?;
    Step::new("clippy").run(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The end-to-end tests start these binaries, so build them first.
    Step::new("build").run(cargo(&["build", "--workspace", "--bins", "--locked"]))?;
    // The package test installs what QA installs.
    let packages = bundle::build()?;
    println!(
        "xtask: {} packages in {}",
        packages.len(),
        bundle::output_dir().display()
    );
    let mut tests = cargo(&["test", "--workspace", "--locked"]);
    tests
        .env("PARLEY_TAURI_DRIVER", &tauri_driver)
        .env("PARLEY_BUNDLE_DIR", bundle::output_dir());
    Step::new("tests").run(tests)?;
    println!("xtask: all checks passed in {:.0?}", started.elapsed());
    Ok(())
}
