//! Speech through a real call: one `parley-cli` talks (synthetic speech with
//! latency markers, recorded as sent), another listens and records its
//! playout, with 0 %, 5 % and 15 % of incoming packets dropped. Mouth-to-ear
//! latency comes from the markers; speech quality is PESQ (P.862.2
//! wideband) of the playout against what was sent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use parley_e2e::SfuProcess;
use parley_media::resample;

use parley_e2e::participant::Participant;

/// How long the listener records once both sides hear each other: a marker
/// a second, and on a busy two-core machine the detector misses up to two
/// in three of them, so this leaves room for the five the test needs.
const LISTEN: Duration = Duration::from_secs(18);
/// 10 ms envelope frames at 48 kHz, for aligning the two recordings.
const HOP: usize = 480;

fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    reader.samples::<f32>().map(Result::unwrap).collect()
}

fn envelope(samples: &[f32]) -> Vec<f64> {
    samples
        .chunks_exact(HOP)
        .map(|c| {
            let energy = c.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / HOP as f64;
            (10.0 * energy.max(1e-10).log10()).max(-60.0)
        })
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    cov / (va.sqrt() * vb.sqrt()).max(1e-12)
}

/// The stretch of `reference` and `degraded` holding the same speech: the
/// two recordings start at different moments, so find the offset whose
/// envelopes agree best, then cut the overlap (at most `seconds` long).
fn align<'a>(reference: &'a [f32], degraded: &'a [f32], seconds: usize) -> (&'a [f32], &'a [f32]) {
    let (r, d) = (envelope(reference), envelope(degraded));
    let window = 600.min(r.len() / 2).min(d.len() / 2);
    let mut best = (f64::MIN, 0usize, 0usize);
    // The degraded recording's middle stretch, looked for anywhere in the reference.
    let d_start = (d.len() - window) / 2;
    for r_start in 0..=r.len() - window {
        let score = pearson(&r[r_start..r_start + window], &d[d_start..d_start + window]);
        if score > best.0 {
            best = (score, r_start, d_start);
        }
    }
    let (_, r_start, d_start) = best;
    let back = r_start.min(d_start);
    let (r_from, d_from) = ((r_start - back) * HOP, (d_start - back) * HOP);
    let len = (reference.len() - r_from)
        .min(degraded.len() - d_from)
        .min(seconds * 48_000);
    (
        &reference[r_from..r_from + len],
        &degraded[d_from..d_from + len],
    )
}

fn write_16k(path: &Path, samples: &[f32]) {
    let resampled = resample::convert(samples, 48_000, 16_000).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for s in resampled {
        writer
            .write_sample((s.clamp(-1.0, 1.0) * 32_767.0) as i16)
            .unwrap();
    }
    writer.finalize().unwrap();
}

/// PESQ through the tools environment `cargo xtask` sets up.
fn pesq(reference: &Path, degraded: &Path) -> f64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/pesq_score.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(reference)
        .arg(degraded)
        .output()
        .expect("python3 runs (cargo xtask test sets up its environment)");
    assert!(
        output.status.success(),
        "PESQ failed (run through `cargo xtask test`, which installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the listener hears the talker, listens for [`LISTEN`], and
/// has both leave; returns the listener's stats and printed lines.
async fn listen(
    mut listener: Participant,
    talker: Participant,
    talker_id: &str,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    listener
        .wait_for("audio from the talker", |v| {
            v["type"] == "cli_first_remote_frame"
                && v["participant_id"] == talker_id
                && v["kind"] == "audio"
        })
        .await;
    tokio::time::sleep(LISTEN).await;
    let heard = listener.leave_with_lines().await;
    talker.leave().await;
    heard
}

/// Every marker's mouth-to-ear latency the listener reported (ms).
fn mouth_to_ear(lines: &[serde_json::Value]) -> Vec<f64> {
    lines
        .iter()
        .filter(|v| v["type"] == "cli_audio_latency")
        .filter_map(|v| v["mouth_to_ear_ms"].as_f64())
        .collect()
}

struct Measured {
    mouth_to_ear_ms: Vec<f64>,
    pesq: f64,
    concealed: u64,
    recovered: u64,
}

async fn call_with_loss(sfu: &SfuProcess, dir: &Path, loss_percent: u32) -> Measured {
    let sent = dir.join(format!("sent-{loss_percent}.wav"));
    let heard = dir.join(format!("heard-{loss_percent}.wav"));
    let talker_name = format!("talker{loss_percent}");
    let mut talker = Participant::spawn(
        sfu,
        dir,
        &talker_name,
        &[
            "--resolution",
            "320x180",
            "--record-microphone",
            sent.to_str().unwrap(),
        ],
    );
    let talker_id = talker.participant_id().await;
    let loss = loss_percent.to_string();
    let listener = Participant::spawn(
        sfu,
        dir,
        &format!("listener{loss_percent}"),
        &[
            "--resolution",
            "320x180",
            "--simulate-loss",
            &loss,
            "--record-playout",
            heard.to_str().unwrap(),
        ],
    );
    let (stats, lines) = listen(listener, talker, &talker_id).await;
    let audio =
        &parley_e2e::participant::remote(&stats, &talker_id, "microphone")["audio"]["playout"];
    let mouth_to_ear_ms = mouth_to_ear(&lines);
    let (reference, degraded) = (read_wav(&sent), read_wav(&heard));
    let (reference, degraded) = align(&reference, &degraded, 10);
    let (ref16, deg16) = (
        dir.join(format!("ref16-{loss_percent}.wav")),
        dir.join(format!("deg16-{loss_percent}.wav")),
    );
    write_16k(&ref16, reference);
    write_16k(&deg16, degraded);
    Measured {
        mouth_to_ear_ms,
        pesq: pesq(&ref16, &deg16),
        concealed: audio["frames_concealed"].as_u64().unwrap_or(0),
        recovered: audio["frames_recovered"].as_u64().unwrap_or(0),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test]
async fn video_is_shown_when_its_audio_is_heard() {
    let _turn = crate::one_at_a_time().await;
    // The listener holds audio back 150 ms; video, which arrives sooner,
    // must wait for it: capture-to-screen of video follows mouth-to-ear.
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut talker = Participant::spawn(
        &sfu,
        dir.path(),
        "sync-talker",
        &["--resolution", "320x180"],
    );
    let talker_id = talker.participant_id().await;
    let listener = Participant::spawn(
        &sfu,
        dir.path(),
        "sync-listener",
        &["--resolution", "320x180", "--audio-min-delay", "150"],
    );
    let (stats, lines) = listen(listener, talker, &talker_id).await;
    let mut mouth_to_ear = mouth_to_ear(&lines);
    assert!(mouth_to_ear.len() >= 3, "{mouth_to_ear:?}");
    let audio_ms = median(&mut mouth_to_ear);
    let video = &parley_e2e::participant::remote(&stats, &talker_id, "camera")["video"];
    let video_ms = video["latency"]["p50_ms"].as_f64().unwrap();
    eprintln!(
        "lip sync: audio mouth-to-ear {audio_ms:.1} ms, video capture-to-screen {video_ms:.1} ms \
         (p95 {:.1} ms), offset {:.1} ms",
        video["latency"]["p95_ms"].as_f64().unwrap(),
        video_ms - audio_ms
    );
    assert!(
        audio_ms > 140.0,
        "the audio was held back ({audio_ms:.1} ms)"
    );
    assert!(
        (video_ms - audio_ms).abs() <= 45.0,
        "video {video_ms:.1} ms vs audio {audio_ms:.1} ms"
    );
    sfu.terminate().await.unwrap();
}

#[tokio::test]
async fn speech_quality_and_mouth_to_ear_at_0_5_and_15_percent_loss() {
    let _turn = crate::one_at_a_time().await;
    let sfu = SfuProcess::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut scores = Vec::new();
    for loss in [0, 5, 15] {
        let mut measured = call_with_loss(&sfu, dir.path(), loss).await;
        // A marker lost with its packet is concealed, not heard.
        let markers_needed = if loss == 0 { 5 } else { 1 };
        assert!(
            measured.mouth_to_ear_ms.len() >= markers_needed,
            "markers heard at {loss}% loss: {:?}",
            measured.mouth_to_ear_ms
        );
        let m2e = median(&mut measured.mouth_to_ear_ms);
        eprintln!(
            "{loss}% loss: PESQ {:.2}, mouth-to-ear median {m2e:.1} ms ({} markers), \
             {} frames recovered by FEC, {} concealed",
            measured.pesq,
            measured.mouth_to_ear_ms.len(),
            measured.recovered,
            measured.concealed
        );
        if loss == 0 {
            assert!(m2e < 100.0, "mouth-to-ear {m2e:.1} ms");
        } else {
            assert!(
                measured.recovered + measured.concealed > 0,
                "loss was repaired"
            );
        }
        scores.push(measured.pesq);
    }
    assert!(scores[0] >= 3.5, "clean call PESQ {:.2}", scores[0]);
    assert!(scores[1] >= 2.5, "5% loss PESQ {:.2}", scores[1]);
    assert!(
        scores[2] < scores[0],
        "15% loss must sound worse than none: {scores:?}"
    );
    sfu.terminate().await.unwrap();
}
