//! The packages QA installs (`cargo xtask bundle`), installed into a clean
//! Debian bookworm root with apt, so a missing `Depends` fails here: every
//! binary starts and links, the server package made its user, secret and
//! unit (which `systemd-analyze verify` accepts) and starts from its own
//! configuration, and under Xvfb the packaged app, opened with a
//! `parley://join` link and `--fake-media`, joins an SFU started from the
//! package and shows a remote bot's moving video. The packages carry no
//! debug symbols and no build paths. The AppImage, in a second clean root
//! with nothing but what AppImages leave to every desktop system, starts
//! and joins that SFU the same way. Screenshots land in
//! `<target>/test-artifacts/packages`.
//!
//! Needs root, debootstrap and the Debian mirror; `cargo xtask test` builds
//! the packages first and passes their folder as `PARLEY_BUNDLE_DIR`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use parley_e2e::SfuProcess;
use parley_e2e::clean_root::CleanRoot;
use parley_e2e::participant::Participant;
use parley_e2e::window::{
    Driver, Xvfb, artifacts_dir, assert_participant_video_moves, tauri_driver,
};

const UI_PATIENCE: Duration = Duration::from_secs(60);
/// The AppImage runs from a folder it unpacks itself to, not a FUSE mount:
/// a chroot has no FUSE. (On a desktop, libfuse2 lets it mount instead.)
const EXTRACT_AND_RUN: (&str, &str) = ("APPIMAGE_EXTRACT_AND_RUN", "1");
/// What AppImages leave to the system they run on (linuxdeploy's exclude
/// list: graphics drivers' libraries, fonts, X11 and sound basics), as
/// Debian packages; every desktop installation has them.
const APPIMAGE_HOST_LIBRARIES: &[&str] = &[
    "libgl1",
    "libegl1",
    "libgbm1",
    "libdrm2",
    "libx11-6",
    "libx11-xcb1",
    "libxcb1",
    "libfontconfig1",
    "libfreetype6",
    "libharfbuzz0b",
    "libfribidi0",
    "libthai0",
    "libexpat1",
    "libasound2",
];
/// The app's .deb must stay under this (docs/benchmarks.md).
const APP_DEB_LIMIT: u64 = 20 * 1000 * 1000;

fn bundle_dir() -> PathBuf {
    std::env::var_os("PARLEY_BUNDLE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist"),
        PathBuf::from,
    )
}

/// The one package in the bundle folder whose name starts with `prefix`.
fn package(prefix: &str, extension: &str) -> PathBuf {
    let dir = bundle_dir();
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| {
            panic!(
                "no packages in {}: {err}; run `cargo xtask bundle`",
                dir.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(extension)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {prefix}*{extension} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// Folders of the build machine that must not appear in shipped binaries.
fn build_paths() -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let home = std::env::var("HOME").unwrap();
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    vec![
        workspace.display().to_string(),
        format!("{cargo_home}/registry"),
        target.display().to_string(),
        // Where `cargo xtask` builds abseil for the audio module.
        format!("{home}/.cache/parley/native"),
    ]
}

fn assert_stripped_and_relocatable(deb: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "dpkg-deb -x {}", deb.display());
    assert_binaries_clean(dir.path(), deb);
}

/// No program unpacked from `package` into `dir` has debug sections, a
/// symbol table, or a folder of the build machine in it.
fn assert_binaries_clean(dir: &Path, package: &Path) {
    let forbidden = build_paths();
    let mut binaries = 0;
    for file in walk(dir) {
        let bytes = std::fs::read(&file).unwrap();
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        binaries += 1;
        let sections = std::process::Command::new("readelf")
            .args(["-S", "--wide"])
            .arg(&file)
            .output()
            .unwrap();
        let sections = String::from_utf8_lossy(&sections.stdout);
        for section in [".debug_", ".symtab"] {
            assert!(
                !sections.contains(section),
                "{} in {} has {section} sections",
                file.display(),
                package.display()
            );
        }
        for path in &forbidden {
            let hits = bytes
                .windows(path.len())
                .filter(|w| *w == path.as_bytes())
                .count();
            assert_eq!(
                hits,
                0,
                "{} in {} names the build folder {path} {hits} times",
                file.display(),
                package.display()
            );
        }
    }
    assert!(binaries > 0, "no program in {}", package.display());
}

/// For each library the app links: the Fedora package that provides it and
/// the package the .rpm requires that brings it (itself, or one that
/// depends on it). A library the app starts to link that is missing here
/// fails the test: add the package that provides it to `rpm.depends` in
/// `packaging/app/bundle.json` (unless a required one brings it), then here.
const RPM_LIBRARIES: &[(&str, &str, &str)] = &[
    ("libwebkit2gtk-4.1.so.0", "webkit2gtk4.1", "webkit2gtk4.1"),
    (
        "libjavascriptcoregtk-4.1.so.0",
        "javascriptcoregtk4.1",
        "webkit2gtk4.1",
    ),
    ("libgtk-3.so.0", "gtk3", "gtk3"),
    ("libgdk-3.so.0", "gtk3", "gtk3"),
    ("libgdk_pixbuf-2.0.so.0", "gdk-pixbuf2", "gtk3"),
    ("libcairo.so.2", "cairo", "gtk3"),
    ("libglib-2.0.so.0", "glib2", "gtk3"),
    ("libgobject-2.0.so.0", "glib2", "gtk3"),
    ("libgio-2.0.so.0", "glib2", "gtk3"),
    ("libsoup-3.0.so.0", "libsoup3", "libsoup3"),
    ("libasound.so.2", "alsa-lib", "alsa-lib"),
    ("libdbus-1.so.3", "dbus-libs", "dbus-libs"),
    ("libstdc++.so.6", "libstdc++", BASE),
    ("libgcc_s.so.1", "libgcc", BASE),
    ("libm.so.6", "glibc", BASE),
    ("libc.so.6", "glibc", BASE),
    ("ld-linux-x86-64.so.2", "glibc", BASE),
];
/// On every Fedora system (dnf itself needs them).
const BASE: &str = "(base system)";

/// There is no Fedora root to install the .rpm into, so its metadata is
/// read with rpm's own tools: the files are there, every library the app
/// links is covered by a Requires, and the binary is as clean as the .deb's.
fn rpm_declares_what_the_app_links(rpm: &Path) {
    let query = |args: &[&str]| {
        let out = std::process::Command::new("rpm")
            .args(args)
            .arg(rpm)
            .output()
            .expect("rpm (Debian package rpm) is installed");
        assert!(out.status.success(), "rpm {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let files = query(&["-qpl"]);
    for file in [
        "/usr/bin/parley",
        "/usr/share/applications/Parley.desktop",
        "/usr/share/icons/hicolor/512x512/apps/parley.png",
        "/usr/share/icons/hicolor/scalable/apps/parley.svg",
    ] {
        assert!(
            files.lines().any(|l| l == file),
            "{file} not in the .rpm:\n{files}"
        );
    }
    let requires = query(&["-qp", "--requires"]);
    let required: Vec<&str> = requires.lines().map(str::trim).collect();

    let dir = tempfile::tempdir().unwrap();
    let unpacked = std::process::Command::new("sh")
        .arg("-c")
        .arg("rpm2cpio \"$0\" | cpio -idm --quiet")
        .arg(rpm)
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success(), "rpm2cpio | cpio");
    let binary = dir.path().join("usr/bin/parley");
    let dynamic = std::process::Command::new("readelf")
        .args(["-d", "--wide"])
        .arg(&binary)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libwebkit2gtk-4.1.so.0"), "{dynamic}");
    for library in needed {
        let Some((_, provider, via)) = RPM_LIBRARIES.iter().find(|(l, ..)| *l == library) else {
            panic!(
                "the app links {library}, which RPM_LIBRARIES does not know: which Fedora \
                 package provides it, and does the .rpm require it?"
            )
        };
        assert!(
            *via == BASE || required.contains(via),
            "{library} ({provider}) needs {via} in the .rpm's Requires: {required:?}"
        );
    }
    assert_binaries_clean(dir.path(), rpm);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            files.extend(walk(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn packages_install_on_clean_debian_and_the_packaged_app_joins_a_packaged_sfu() {
    let artifacts = artifacts_dir("packages");
    let debs = [
        package("Parley_", ".deb"),
        package("parley-sfu_", ".deb"),
        package("parley-cli_", ".deb"),
    ];
    for deb in &debs {
        assert_stripped_and_relocatable(deb);
    }
    let app_size = std::fs::metadata(&debs[0]).unwrap().len();
    assert!(
        app_size < APP_DEB_LIMIT,
        "the app's .deb is {app_size} bytes, over {APP_DEB_LIMIT}"
    );
    let app_rpm = package("Parley-", ".rpm");
    rpm_declares_what_the_app_links(&app_rpm);

    let root = CleanRoot::create().expect("a clean Debian root");
    install_and_start_every_program(&root, &debs);
    check_what_the_packages_put_in_place(&root);
    let sfu = start_packaged_sfu(&root).await;
    let mint = |identity: &str| mint_token(&root, identity);
    app_in_root_shows_a_bot(
        &root,
        &sfu,
        AppUnderTest {
            program: "/usr/bin/parley",
            env: &[],
            name: "Packaged",
            token: mint("packaged-app"),
            token_in_link: false,
            bot_token: mint("packaged-bot"),
            screenshot: "packaged-call.png",
        },
        &artifacts,
    )
    .await;

    let appimage = package("Parley_", ".AppImage");
    let appimage_root = CleanRoot::create().expect("a second clean Debian root");
    appimage_starts_with_its_own_libraries(&appimage_root, &appimage);
    app_in_root_shows_a_bot(
        &appimage_root,
        &sfu,
        AppUnderTest {
            program: APPIMAGE_INSIDE,
            env: &[EXTRACT_AND_RUN],
            name: "AppImage",
            token: mint("appimage-app"),
            token_in_link: true,
            bot_token: mint("appimage-bot"),
            screenshot: "appimage-call.png",
        },
        &artifacts,
    )
    .await;
}

const APPIMAGE_INSIDE: &str = "/opt/Parley.AppImage";

/// Nothing but the AppImage and the system libraries every desktop has:
/// it loads every library it links against and prints its version.
fn appimage_starts_with_its_own_libraries(root: &CleanRoot, appimage: &Path) {
    root.copy_in(appimage, APPIMAGE_INSIDE).unwrap();
    root.run(&["apt-get", "update", "-q"]).unwrap();
    root.apt_install(APPIMAGE_HOST_LIBRARIES).unwrap();
    let (variable, value) = EXTRACT_AND_RUN;
    let printed = root
        .run(&[
            "env",
            &format!("{variable}={value}"),
            APPIMAGE_INSIDE,
            "--version",
        ])
        .expect("the AppImage starts on a clean system");
    assert!(
        printed.contains(env!("CARGO_PKG_VERSION")),
        "AppImage --version: {printed}"
    );
}

/// apt must find every dependency from the packages' metadata, and every
/// program links and starts before any test tool is installed.
fn install_and_start_every_program(root: &CleanRoot, debs: &[PathBuf]) {
    let mut inside = Vec::new();
    for deb in debs {
        let name = format!(
            "/tmp/packages/{}",
            deb.file_name().unwrap().to_string_lossy()
        );
        root.copy_in(deb, &name).unwrap();
        inside.push(name);
    }
    root.run(&["apt-get", "update", "-q"]).unwrap();
    let inside: Vec<&str> = inside.iter().map(String::as_str).collect();
    root.apt_install(&inside)
        .expect("apt installs the packages");
    let version = env!("CARGO_PKG_VERSION");
    for program in ["parley", "parley-sfu", "parley-cli"] {
        let path = format!("/usr/bin/{program}");
        let libraries = root.run(&["ldd", &path]).unwrap();
        assert!(
            !libraries.contains("not found"),
            "{program} misses libraries its package does not depend on:\n{libraries}"
        );
        let printed = root.run(&[&path, "--version"]).unwrap();
        assert!(printed.contains(version), "{program} --version: {printed}");
    }
}

/// The desktop entry and icons, the server's user and secret, and a unit
/// that systemd's own checks accept.
fn check_what_the_packages_put_in_place(root: &CleanRoot) {
    let desktop =
        std::fs::read_to_string(root.path().join("usr/share/applications/Parley.desktop"))
            .expect("the app's desktop entry");
    assert!(
        desktop.contains("MimeType=x-scheme-handler/parley;"),
        "{desktop}"
    );
    assert!(desktop.contains("Exec=parley %u"), "{desktop}");
    for size in ["16x16", "32x32", "48x48", "128x128", "256x256", "512x512"] {
        let icon = root
            .path()
            .join(format!("usr/share/icons/hicolor/{size}/apps/parley.png"));
        assert!(icon.exists(), "{} is missing", icon.display());
    }
    let user = root.run(&["id", "-un", "parley"]).unwrap();
    assert_eq!(user.trim(), "parley", "the server's user");
    let secret = root
        .run(&["stat", "-c", "%a %U:%G %s", "/etc/parley/auth-secret"])
        .unwrap();
    let fields: Vec<&str> = secret.split_whitespace().collect();
    assert_eq!(fields[..2], ["640", "root:parley"], "auth secret: {secret}");
    assert!(
        fields[2].parse::<u32>().unwrap() >= 32,
        "auth secret: {secret}"
    );
    root.apt_install(&["systemd"]).unwrap();
    let verify = root
        .run(&[
            "systemd-analyze",
            "verify",
            "/usr/lib/systemd/system/parley-sfu.service",
        ])
        .expect("systemd-analyze verify accepts the unit");
    assert!(!verify.contains("parley-sfu.service:"), "{verify}");
}

/// An access token for room `call` from the packaged server's own `token`
/// command and the secret its package generated.
fn mint_token(root: &CleanRoot, identity: &str) -> String {
    let token = root
        .run(&[
            "/usr/bin/parley-sfu",
            "token",
            "--config",
            "/etc/parley/sfu.toml",
            "--room",
            "call",
            "--identity",
            identity,
        ])
        .expect("parley-sfu token mints from the installed configuration");
    token.trim().to_owned()
}

/// The server starts as its user from the installed configuration, so
/// with the secret postinst made: joining takes a token from then on.
async fn start_packaged_sfu(root: &CleanRoot) -> SfuProcess {
    let as_parley = || {
        let mut command = tokio::process::Command::new("chroot");
        command
            .arg("--userspec=parley:parley")
            .arg(root.path())
            .arg("/usr/bin/parley-sfu");
        command
    };
    let test_ports = [
        "--listen",
        "127.0.0.1:0",
        "--media-port",
        "0",
        "--media-tcp-port",
        "0",
    ];
    let mut configured: Vec<&str> = vec!["--config", "/etc/parley/sfu.toml"];
    configured.extend(test_ports);
    configured.extend(["--media-ip", "127.0.0.1"]);
    let sfu = SfuProcess::start_command(as_parley(), &configured)
        .await
        .expect("the packaged SFU starts from /etc/parley/sfu.toml");
    assert!(
        !sfu.log().contains("OPEN MODE"),
        "the packaged configuration requires tokens:\n{}",
        sfu.log()
    );
    sfu
}

/// One packaged form of the app, as found inside its root.
struct AppUnderTest {
    program: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// The name it joins with (and its driver log's name).
    name: &'static str,
    token: String,
    /// The token comes in the join link; otherwise the link has none, the
    /// server refuses the join, and the token is typed where the app asks.
    token_in_link: bool,
    bot_token: String,
    screenshot: &'static str,
}

/// Under Xvfb, the packaged app opened by a join link shows the bot's
/// moving video (the window test's checks).
async fn app_in_root_shows_a_bot(
    root: &CleanRoot,
    sfu: &SfuProcess,
    app: AppUnderTest,
    artifacts: &Path,
) {
    root.apt_install(&["webkit2gtk-driver"]).unwrap();
    root.copy_in(&tauri_driver().unwrap(), "/usr/local/bin/tauri-driver")
        .unwrap();
    let screen = Xvfb::start().expect("a virtual screen");
    let driver = Driver::start_in_root(
        root.path(),
        app.env,
        &screen.display,
        &artifacts.join(format!("tauri-driver-{}.log", app.name)),
    )
    .expect("tauri-driver starts in the clean root");
    let work = tempfile::tempdir().unwrap();
    let mut bot = Participant::spawn(sfu, work.path(), "Bot", &["--token", &app.bot_token]);
    let bot_id = bot.participant_id().await;
    let mut link = format!(
        "parley://join?server={}&room=call&name={}",
        sfu.signaling_url, app.name
    );
    if app.token_in_link {
        link.push_str("&token=");
        link.push_str(&app.token);
    }
    let args = [
        "--fake-media".to_owned(),
        "--profile-dir".to_owned(),
        "/tmp/qa-profile".to_owned(),
        link,
    ];
    let session = driver.launch(Path::new(app.program), &args).unwrap();
    if !app.token_in_link {
        session
            .wait_for(
                "the app asking for a token",
                UI_PATIENCE,
                "const e = document.getElementById('join-error'); \
                 return !e.hidden && e.textContent.includes('access token') \
                   && document.activeElement.id === 'token';",
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        session
            .screenshot(&artifacts.join("token-asked.png"))
            .unwrap();
        session.type_into("#token", &app.token).unwrap();
        session.click("#join").unwrap();
    }
    bot.wait_for("the packaged app joining", |v| {
        v["type"] == "participant_joined" && v["participant"]["name"] == app.name
    })
    .await;
    assert_participant_video_moves(&session, &bot_id, UI_PATIENCE).await;
    std::thread::sleep(Duration::from_millis(700));
    session.screenshot(&artifacts.join(app.screenshot)).unwrap();
    drop(session);
    bot.leave().await;
}
