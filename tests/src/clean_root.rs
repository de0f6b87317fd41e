//! A clean Debian bookworm system to install packages into: made once with
//! debootstrap (variant minbase) under `~/.cache/parley/roots`, copied for
//! each test, and entered with chroot. Downloaded .debs are kept in a cache
//! shared by the copies, so only the first run fetches them.
//!
//! Needs root (mounts, chroot) and debootstrap; both are said plainly when
//! missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, bail, ensure};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

fn cache_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/parley/roots"))
}

fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// The pristine root, made on first use.
fn pristine() -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?;
    let root = dir.join(format!("{SUITE}-minbase"));
    if root.join("etc/debian_version").exists() {
        return Ok(root);
    }
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join(format!("{SUITE}-minbase.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    run(Command::new("debootstrap")
        .args(["--variant=minbase", SUITE])
        .arg(&partial)
        .arg(MIRROR))
    .context("debootstrap (Debian package debootstrap; `cargo xtask test` installs it)")?;
    std::fs::rename(&partial, &root)?;
    Ok(root)
}

/// A throw-away copy of the pristine root with /proc, /sys, /dev and the
/// package cache mounted; unmounted and removed when dropped.
#[derive(Debug)]
pub struct CleanRoot {
    path: PathBuf,
    mounts: Vec<PathBuf>,
}

impl CleanRoot {
    pub fn create() -> anyhow::Result<Self> {
        let uid = run(Command::new("id").arg("-u"))?;
        ensure!(
            String::from_utf8_lossy(&uid.stdout).trim() == "0",
            "installing packages into a clean root needs root (chroot, mounts)"
        );
        let pristine = pristine()?;
        let cache = cache_dir()?;
        let path = tempfile::Builder::new()
            .prefix("clean-root-")
            .tempdir_in(&cache)?
            .keep();
        let mut root = Self {
            path,
            mounts: Vec::new(),
        };
        run(Command::new("cp")
            .arg("-a")
            .arg(pristine.join("."))
            .arg(&root.path))?;
        std::fs::copy("/etc/resolv.conf", root.path.join("etc/resolv.conf"))?;
        let archives = cache.join("apt-archives");
        std::fs::create_dir_all(archives.join("partial"))?;
        root.mount(&["-t", "proc", "proc"], "proc")?;
        root.mount(&["-t", "sysfs", "sysfs"], "sys")?;
        root.mount(&["--bind", "/dev"], "dev")?;
        root.mount(&["--bind", "/dev/pts"], "dev/pts")?;
        root.mount(&["-t", "tmpfs", "tmpfs"], "dev/shm")?;
        let archives = archives.to_str().context("cache path is not UTF-8")?;
        root.mount(&["--bind", archives], "var/cache/apt/archives")?;
        Ok(root)
    }

    fn mount(&mut self, how: &[&str], at: &str) -> anyhow::Result<()> {
        let target = self.path.join(at);
        std::fs::create_dir_all(&target)?;
        run(Command::new("mount").args(how).arg(&target))?;
        self.mounts.push(target);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `args` inside the root and returns its standard output; a
    /// failure carries everything it printed.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = run(Command::new("chroot")
            .arg(&self.path)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env_remove("LD_LIBRARY_PATH"))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `apt-get install`s packages (names or .deb paths inside the root)
    /// without recommends, so only declared dependencies come along.
    pub fn apt_install(&self, packages: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
        args.extend(packages);
        self.run(&args)
    }

    /// Copies a host file to `inside` (an absolute path in the root).
    pub fn copy_in(&self, host: &Path, inside: &str) -> anyhow::Result<()> {
        let target = self.path.join(inside.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(host, &target)
            .with_context(|| format!("copying {} to {}", host.display(), target.display()))?;
        Ok(())
    }
}

impl Drop for CleanRoot {
    fn drop(&mut self) {
        for target in self.mounts.iter().rev() {
            let unmounted = Command::new("umount")
                .arg(target)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount").arg("-l").arg(target).status();
            }
        }
        // Never delete through a mount that is still there (it could be /dev).
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root = self.path.to_string_lossy();
        if mounts.lines().any(|line| line.contains(root.as_ref())) {
            eprintln!(
                "clean root {} still has mounts; left in place",
                self.path.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
