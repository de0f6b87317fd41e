//! The real cpal capture and playout paths in a real call, on virtual
//! devices: a private PulseAudio server whose pipe source is fed synthetic
//! speech with latency markers, and whose null sink is recorded. One
//! `parley-cli` uses them as its microphone and speaker; a synthetic bot
//! talks to it and listens.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parley_e2e::SfuProcess;
use parley_e2e::pulse::{CPAL_DEVICE, PulseServer};
use parley_media::clock::unix_micros;
use parley_media::frame::AudioFrame;
use parley_media::synthetic_audio::{MarkerDetector, Signal, SyntheticAudio};
use tokio::io::AsyncReadExt;

use parley_e2e::participant::Participant;

/// Writes synthetic speech with markers into the virtual microphone at the
/// pace a real one would deliver it, until `stop`.
fn feed_microphone(fifo: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        let mut voice = SyntheticAudio::new(Signal::Speech, true);
        let mut frame = AudioFrame::silent();
        let started = std::time::Instant::now();
        let mut sent = 0u32;
        while !stop.load(Ordering::Relaxed) {
            voice.render(&mut frame, unix_micros());
            let bytes: Vec<u8> = frame.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            if pipe.write_all(&bytes).is_err() {
                return;
            }
            sent += 1;
            let due = Duration::from_millis(u64::from(sent) * 20);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    })
}

#[tokio::test]
async fn a_call_through_the_real_cpal_paths_on_virtual_devices() {
    let _turn = crate::one_at_a_time().await;
    let pulse = PulseServer::start().await.unwrap();
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed_microphone(pulse.mic_fifo(), Arc::clone(&stop));
    let mut speaker = pulse.record_speaker().unwrap();

    let mut bot = Participant::spawn(&sfu, dir.path(), "bot", &["--resolution", "320x180"]);
    let bot_id = bot.participant_id().await;
    let mut user = Participant::spawn_with_env(
        &sfu,
        dir.path(),
        "user",
        &[
            "--resolution",
            "320x180",
            "--microphone",
            CPAL_DEVICE,
            "--speaker",
            CPAL_DEVICE,
        ],
        pulse.client_env(),
    );
    let user_id = user.participant_id().await;

    // Capture: what the virtual microphone heard reaches the bot, markers and all.
    let heard = bot
        .wait_for("a marker from the user's virtual microphone", |v| {
            v["type"] == "cli_audio_latency"
        })
        .await;
    eprintln!("bot heard the virtual microphone: {heard}");

    // Playout: the bot's voice comes out of the virtual speaker.
    let mut stdout = speaker.stdout.take().unwrap();
    let mut bytes = vec![0u8; 48_000 * 4 * 8];
    let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_exact(&mut bytes)).await;
    assert!(read.is_ok(), "the virtual speaker was recorded for 8 s");
    let samples: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut detector = MarkerDetector::default();
    let markers: usize = samples
        .chunks(960)
        .enumerate()
        .map(|(i, chunk)| detector.push(chunk, i as u64 * 20_000).len())
        .sum();
    let loud = samples.iter().filter(|s| s.abs() > 0.05).count();
    let zero_runs = samples
        .windows(48)
        .step_by(48)
        .filter(|w| w.iter().all(|s| *s == 0.0))
        .count();
    eprintln!("1 ms stretches of digital silence: {zero_runs}");
    eprintln!("virtual speaker: {markers} markers, {loud} loud samples in 8 s");
    // Markers that fall on a resampler block edge twice over (48 → 44.1 kHz
    // at the device, 44.1 → 48 kHz at the monitor) can score under the
    // detection threshold; most arrive.
    assert!(markers >= 3, "the bot's markers played out ({markers})");
    assert!(loud > 48_000, "speech played out");

    let (stats, lines) = user.leave_with_lines().await;
    for line in lines.iter().filter(|v| v["type"] == "cli_audio_playout") {
        eprintln!("user playout: {}", line["speaker"]);
    }
    let from_bot =
        &parley_e2e::participant::remote(&stats, &bot_id, "microphone")["audio"]["playout"];
    assert!(
        from_bot["frames_played"].as_u64().unwrap() > 200,
        "{from_bot:#}"
    );
    assert!(
        !lines.iter().any(|v| v["type"] == "cli_audio_device_error"),
        "no device errors: {lines:?}"
    );
    let bot_stats = bot.leave().await;
    let from_user = &parley_e2e::participant::remote(&bot_stats, &user_id, "microphone")["audio"];
    assert!(
        from_user["frames_received"].as_u64().unwrap() > 200,
        "{from_user:#}"
    );
    stop.store(true, Ordering::Relaxed);
    drop(speaker);
    pulse.stop().await;
    let _ = feeder.join();
    sfu.terminate().await.unwrap();
}
