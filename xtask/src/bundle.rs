//! `cargo xtask bundle`: the packages QA installs. The app's .deb, .rpm and
//! AppImage come from the Tauri bundler (configured in `packaging/app/`,
//! AppImage tools from `appimage.rs`), the
//! server's and the CLI's .deb from cargo-deb (configured in their
//! `Cargo.toml`), all from one release build, into one folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::system::{self, Step};
use crate::{BUILD_PACKAGES, cargo, target_dir, tools_dir, workspace_root};

/// The app's bundles: the bundler's folder for each, and the file extension.
const APP_BUNDLES: [(&str, &str); 3] = [("deb", "deb"), ("rpm", "rpm"), ("appimage", "AppImage")];

/// Where the packages land: `dist/` in the checkout.
pub fn output_dir() -> PathBuf {
    workspace_root().join("dist")
}

/// Builds every package and returns their paths; the build's own set-up
/// (Debian packages, native parts) is the caller's.
pub fn build() -> Result<Vec<PathBuf>, String> {
    let tauri = system::ensure_tauri_cli(&tools_dir())?;
    let kinds: Vec<(&str, &str)> = APP_BUNDLES
        .into_iter()
        .filter(|(kind, _)| *kind != "appimage" || crate::appimage::supported())
        .collect();
    if crate::appimage::supported() {
        crate::appimage::ensure_tools(&target_dir(), &tools_dir())?;
    } else {
        eprintln!("xtask: no AppImage on this machine: its tools are x86_64 Linux programs");
    }
    let bundles = kinds
        .iter()
        .map(|(kind, _)| *kind)
        .collect::<Vec<_>>()
        .join(",");
    let cargo_deb = system::ensure_cargo_deb(&tools_dir())?;

    // One build for all three binaries, so shared dependencies are compiled
    // once with one set of features.
    let mut release = cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "parley-app",
        "-p",
        "parley-sfu",
        "-p",
        "parley-client",
        "--bins",
    ]);
    strip_build_paths(&mut release)?;
    Step::new("release build").run(release)?;

    let out = output_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("clearing {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;

    let tauri_bundles = target_dir().join("release").join("bundle");
    if tauri_bundles.exists() {
        std::fs::remove_dir_all(&tauri_bundles).map_err(|e| e.to_string())?;
    }
    let mut app = Command::new(&tauri);
    app.current_dir(workspace_root().join("src-tauri"))
        .args(["bundle", "--ci", "--bundles", &bundles, "--config"])
        .arg(workspace_root().join("packaging/app/bundle.json"))
        .env("CARGO_TARGET_DIR", target_dir());
    crate::native::apply(&mut app);
    Step::new("app packages").run(app)?;
    for (kind, extension) in &kinds {
        for file in files_in(&tauri_bundles.join(kind), extension)? {
            let name = file.file_name().ok_or("bundle without a name")?;
            std::fs::copy(&file, out.join(name)).map_err(|e| e.to_string())?;
        }
    }

    // cargo-deb is run as `cargo deb`; point cargo at the installed one.
    let tools_bin = cargo_deb.parent().ok_or("cargo-deb without a folder")?;
    let path = std::env::join_paths(std::iter::once(tools_bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .map_err(|e| e.to_string())?;
    for package in ["parley-sfu", "parley-client"] {
        let mut deb = cargo(&[]);
        deb.args(["deb", "--no-build", "--no-strip", "-p", package, "--output"])
            .arg(&out)
            .env("PATH", &path);
        Step::new("server and CLI packages").run(deb)?;
    }

    let mut packages = Vec::new();
    for (_, extension) in APP_BUNDLES {
        packages.extend(files_in(&out, extension)?);
    }
    packages.sort();
    Ok(packages)
}

/// Panic and log locations name source files; these make them relative to
/// the crate source instead of this machine's folders, so a package carries
/// no build paths (the package test checks).
fn strip_build_paths(build: &mut Command) -> Result<(), String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map_or_else(|| PathBuf::from(&home).join(".cargo"), PathBuf::from);
    let maps = [
        (cargo_home.join("registry").join("src"), "/cargo/registry"),
        (cargo_home.join("git").join("checkouts"), "/cargo/git"),
        (target_dir(), "/target"),
        (workspace_root(), "/parley"),
        // abseil's headers, inlined into the audio module.
        (crate::native::root(), "/native"),
    ];
    let mut rust = Vec::new();
    let mut c = Vec::new();
    for (from, to) in &maps {
        let from = from.to_str().ok_or("a build folder that is not UTF-8")?;
        rust.push(format!("--remap-path-prefix={from}={to}"));
        c.push(format!("-ffile-prefix-map={from}={to}"));
    }
    // The encoded form keeps paths with spaces intact.
    build.env("CARGO_ENCODED_RUSTFLAGS", rust.join("\u{1f}"));
    for variable in ["CFLAGS", "CXXFLAGS"] {
        let mut flags = std::env::var(variable).unwrap_or_default();
        for flag in &c {
            flags.push(' ');
            flags.push_str(flag);
        }
        build.env(variable, flags.trim());
    }
    Ok(())
}

fn files_in(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    Ok(entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect())
}

/// `cargo xtask bundle`: builds them and lists them with their sizes.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!("unknown option {arg}"));
    }
    system::ensure_packages(BUILD_PACKAGES)?;
    crate::native::ensure()?;
    let packages = build()?;
    println!();
    for package in &packages {
        let size = std::fs::metadata(package).map_err(|e| e.to_string())?.len();
        let mib = size as f64 / (1024.0 * 1024.0);
        println!("{mib:>7.1} MiB  {}", package.display());
    }
    Ok(())
}
