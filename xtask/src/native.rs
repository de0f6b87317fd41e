//! Native pieces the build needs that Debian stable does not ship new enough:
//! abseil 20240722 and meson ≥ 1.1 for WebRTC's audio processing module
//! (`webrtc-audio-processing`, built from its bundled sources), and Python
//! tools for measuring speech quality (PESQ).
//!
//! Everything lands under `~/.cache/parley/native` and is reused by later
//! runs; [`apply`] points cargo at it (`PATH` and `PKG_CONFIG_PATH`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::system::Step;

/// abseil's sources as Debian packages them (the upstream tag's tarball),
/// fetched from the Debian archive rather than GitHub, and checked.
const ABSEIL_VERSION: &str = "20240722.0";
const ABSEIL_URL: &str =
    "http://deb.debian.org/debian/pool/main/a/abseil/abseil_20240722.0.orig.tar.gz";
const ABSEIL_SHA256: &str = "df6d1f5ef540725f3851201176a60486aab332410788465c9877910bb471c34a";
/// Our build of it: bumped when its flags change, so that every machine
/// builds it again (a new prefix also makes cargo rebuild what links it).
const ABSEIL_BUILD: &str = "2";

/// Python packages in the tools environment: meson (Debian's 1.0 cannot
/// configure a fresh build directory the way the audio module's build
/// script asks) and PESQ, the ITU-T P.862 speech quality score.
const PYTHON_PACKAGES: &[&str] = &["meson>=1.1", "pesq==0.0.4", "numpy"];

pub fn root() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("parley").join("native")
}

fn abseil_prefix() -> PathBuf {
    root().join(format!("abseil-{ABSEIL_VERSION}-{ABSEIL_BUILD}"))
}

fn venv() -> PathBuf {
    root().join("venv")
}

/// Builds what is missing. Cheap when everything is already there.
pub fn ensure() -> Result<(), String> {
    std::fs::create_dir_all(root()).map_err(|e| format!("{}: {e}", root().display()))?;
    ensure_python_tools()?;
    ensure_abseil()
}

/// Environment for every cargo invocation: the tools' `bin` first on
/// `PATH`, abseil's pkg-config files found first.
pub fn apply(command: &mut Command) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv().join("bin")];
    paths.extend(std::env::split_paths(&path));
    if let Ok(joined) = std::env::join_paths(paths) {
        command.env("PATH", joined);
    }
    command.env(
        "PKG_CONFIG_PATH",
        abseil_prefix().join("lib").join("pkgconfig"),
    );
}

/// `export` lines for a shell, so plain `cargo build` works too.
pub fn shell_exports() -> String {
    format!(
        "export PATH=\"{}:$PATH\"\nexport PKG_CONFIG_PATH=\"{}\"",
        venv().join("bin").display(),
        abseil_prefix().join("lib").join("pkgconfig").display()
    )
}

fn ensure_python_tools() -> Result<(), String> {
    let stamp = venv().join(".parley-packages");
    let wanted = PYTHON_PACKAGES.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    if !venv().join("bin").join("python").exists() {
        // Debian's own python3 (python3-venv), not whatever else is on PATH.
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut create = Command::new(python);
        create.args(["-m", "venv"]).arg(venv());
        Step::new("python venv").run(create)?;
    }
    let mut install = Command::new(venv().join("bin").join("pip"));
    install.args(["install", "-q", "--disable-pip-version-check"]);
    // pesq's build imports numpy: install it first.
    install.arg("numpy");
    Step::new("pip install numpy").run(install)?;
    let mut install = Command::new(venv().join("bin").join("pip"));
    install.args(["install", "-q", "--disable-pip-version-check"]);
    install.args(PYTHON_PACKAGES);
    Step::new("pip install").run(install)?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// `flag` after whatever the environment's `variable` asks for (cmake's
/// own reading of CFLAGS/CXXFLAGS stops when the flags are given).
fn with_env_flags(variable: &str, flag: &str) -> String {
    let from_env = std::env::var(variable).unwrap_or_default();
    format!("{from_env} {flag}").trim().to_owned()
}

fn ensure_abseil() -> Result<(), String> {
    let prefix = abseil_prefix();
    if prefix
        .join("lib")
        .join("pkgconfig")
        .join("absl_base.pc")
        .exists()
    {
        return Ok(());
    }
    let work = root().join("abseil-build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let tarball = work.join("abseil.tar.gz");
    let mut download = Command::new("curl");
    download
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(&tarball)
        .arg(ABSEIL_URL);
    Step::new("download abseil").run(download)?;
    let sum = Command::new("sha256sum")
        .arg(&tarball)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let sum = String::from_utf8_lossy(&sum.stdout);
    if sum.split_whitespace().next() != Some(ABSEIL_SHA256) {
        return Err(format!(
            "abseil tarball from {ABSEIL_URL} has checksum {sum}, expected {ABSEIL_SHA256}"
        ));
    }
    let source = work.join("src");
    std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
    let mut unpack = Command::new("tar");
    unpack
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&source)
        .arg("--strip-components=1");
    Step::new("unpack abseil").run(unpack)?;
    // Static and position-independent: linked into our binaries, nothing to
    // install or find at run time. Its source paths (in assertion messages)
    // are made relative to a made-up /native, so no folder of this machine
    // ends up in a package.
    let prefix_map = format!("-ffile-prefix-map={}=/native", root().display());
    let mut configure = Command::new("cmake");
    configure
        .arg("-S")
        .arg(&source)
        .arg("-B")
        .arg(work.join("build"))
        .args([
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
            "-DCMAKE_CXX_STANDARD=17",
            "-DABSL_PROPAGATE_CXX_STD=ON",
            "-DBUILD_TESTING=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
        ])
        .arg(format!(
            "-DCMAKE_C_FLAGS={}",
            with_env_flags("CFLAGS", &prefix_map)
        ))
        .arg(format!(
            "-DCMAKE_CXX_FLAGS={}",
            with_env_flags("CXXFLAGS", &prefix_map)
        ))
        .arg(format!("-DCMAKE_INSTALL_PREFIX={}", prefix.display()))
        .arg("-DCMAKE_INSTALL_LIBDIR=lib");
    configure.stdout(Stdio::null());
    Step::new("configure abseil").run(configure)?;
    let mut build = Command::new("ninja");
    build
        .arg("-C")
        .arg(work.join("build"))
        .arg("install")
        .stdout(Stdio::null());
    Step::new("build abseil").run(build)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
