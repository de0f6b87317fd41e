//! The desktop app in a real window (Xvfb, WebKit through tauri-driver),
//! against a real SFU and a `parley-cli --fake-media` bot: a device choice
//! survives a restart; a `parley://` link given to a second start of the
//! app on the same profile joins in the window already open (the second
//! start hands it over and exits); then in the call the bot's video is drawn (sampled
//! pixels neither black nor frozen), chat goes both ways, and muting in the
//! UI reaches the bot. Screenshots land in `<target>/test-artifacts/app-window`.
//!
//! A test binary of its own: WebKit with software GL takes both cores for a
//! while, and cargo runs test binaries one after another, so it never
//! competes with the timing-sensitive calls in `e2e`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use parley_e2e::participant::Participant;
use parley_e2e::window::{
    Driver, ENTER, Session, Xvfb, artifacts_dir, assert_participant_video_moves,
};
use parley_e2e::{SfuProcess, bin};

const UI_PATIENCE: Duration = Duration::from_secs(30);
/// Let the page paint what the DOM just changed before the screenshot.
const SETTLE: Duration = Duration::from_millis(700);

fn app_args(profile: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--fake-media".to_owned(),
        "--profile-dir".to_owned(),
        profile.display().to_string(),
        "--log-level".to_owned(),
        "info".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn app_joins_shows_video_chats_mutes_and_remembers_devices() {
    let artifacts = artifacts_dir("app-window");
    let screen = Xvfb::start().expect("a virtual screen");
    let driver = Driver::start(&screen.display, &artifacts.join("tauri-driver.log"))
        .expect("tauri-driver starts");
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let profile = work.path().join("profile");
    let app = bin("parley");

    // 1. Prejoin: pick the second synthetic camera; it is written to the profile.
    let session = choose_second_camera(&driver, &app, &profile, &artifacts);

    // 2. A link opened while the app runs joins in the open window.
    let mut bot = Participant::spawn(&sfu, work.path(), "Bot", &[]);
    let bot_id = bot.participant_id().await;
    start_again_with_a_link(&app, &profile, &sfu);
    bot.wait_for("the running app joining from the link", |v| {
        v["type"] == "participant_joined" && v["participant"]["name"] == "Linked"
    })
    .await;
    drop(session);

    // 3. Restart with auto-join: the choice is still selected, and the call starts.
    let session = driver
        .launch(
            &app,
            &app_args(
                &profile,
                &[
                    "--server",
                    &sfu.signaling_url,
                    "--room",
                    "call",
                    "--name",
                    "QA",
                    "--join",
                ],
            ),
        )
        .unwrap();
    let camera = session
        .wait_for(
            "the device pickers",
            UI_PATIENCE,
            "return document.getElementById('camera').value",
        )
        .unwrap();
    assert_eq!(
        camera, "synthetic:camera-2",
        "the camera choice survived a restart"
    );
    let joined = bot
        .wait_for("the app joining", |v| {
            v["type"] == "participant_joined" && v["participant"]["name"] == "QA"
        })
        .await;
    let app_id = joined["participant"]["id"].as_str().unwrap().to_owned();

    // 4. The bot's video is drawn: sampled pixels are not black and they move.
    assert_participant_video_moves(&session, &bot_id, UI_PATIENCE).await;
    std::thread::sleep(SETTLE);
    session.screenshot(&artifacts.join("2-call.png")).unwrap();

    // 5. Chat from the bot shows in the panel.
    bot.send_line("hello from the bot").await;
    session
        .wait_for(
            "the bot's chat",
            UI_PATIENCE,
            "return document.getElementById('messages').textContent.includes('hello from the bot')",
        )
        .unwrap();

    // 6. Chat typed in the UI reaches the bot.
    session.click("#chat-button").unwrap();
    session
        .type_into("#chat-input", &format!("hello from the app{ENTER}"))
        .unwrap();
    bot.wait_for("the app's chat", |v| {
        v["type"] == "chat_message" && v["text"] == "hello from the app"
    })
    .await;
    std::thread::sleep(SETTLE);
    session.screenshot(&artifacts.join("3-chat.png")).unwrap();

    // 7. Muting in the UI shows as muted at the bot.
    session.click("#mic").unwrap();
    bot.wait_for("the app muted", |v| {
        v["type"] == "track_muted"
            && v["participant_id"] == app_id.as_str()
            && v["track_id"] == "microphone"
            && v["muted"] == true
    })
    .await;
    std::thread::sleep(SETTLE);
    session.screenshot(&artifacts.join("4-muted.png")).unwrap();
    drop(session);
    bot.leave().await;
}

/// Starts the app a second time on the running one's profile with a join
/// link: it must hand the link over and exit at once, successfully.
fn start_again_with_a_link(app: &Path, profile: &Path, sfu: &SfuProcess) {
    let link = format!(
        "parley://join?server={}&room=call&name=Linked",
        sfu.signaling_url
    );
    let mut second = std::process::Command::new(app)
        .arg("--profile-dir")
        .arg(profile)
        .arg(&link)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + UI_PATIENCE;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second start did not hand over and exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut said).unwrap();
    assert!(status.success(), "second start: {status}: {said}");
    assert!(
        said.contains("already running"),
        "second start said: {said}"
    );
}

/// Picks "Synthetic camera 2" on the prejoin screen and waits until the
/// profile on disk holds it; the app stays open on the prejoin screen.
fn choose_second_camera<'a>(
    driver: &'a Driver,
    app: &Path,
    profile: &Path,
    artifacts: &Path,
) -> Session<'a> {
    let session = driver.launch(app, &app_args(profile, &[])).unwrap();
    session
        .wait_for(
            "the camera list",
            UI_PATIENCE,
            "return document.querySelector('#camera option[value=\"synthetic:camera-2\"]') !== null",
        )
        .unwrap();
    session
        .execute(
            "const s = document.getElementById('camera'); s.value = 'synthetic:camera-2'; \
             s.dispatchEvent(new Event('change')); return true;",
            &[],
        )
        .unwrap();
    let profile_file = profile.join("profile.toml");
    let deadline = std::time::Instant::now() + UI_PATIENCE;
    while !std::fs::read_to_string(&profile_file).is_ok_and(|t| t.contains("Synthetic camera 2")) {
        assert!(
            std::time::Instant::now() < deadline,
            "camera choice never saved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    session
        .wait_for(
            "the preview picture",
            UI_PATIENCE,
            "return !document.getElementById('preview-canvas').hidden",
        )
        .unwrap();
    std::thread::sleep(SETTLE);
    session
        .screenshot(&artifacts.join("1-prejoin.png"))
        .unwrap();
    session
}
