//! The desktop app's frame delivery and memory, measured in a real window
//! on a private Xvfb screen (docs/benchmarks.md, "Desktop app").
//!
//! `cargo bench -p parley-e2e --bench app_window` (the app, SFU and CLI
//! from the same profile; `PARLEY_BIN_DIR` points elsewhere):
//!
//! 1. Frame delivery: `parley --bench-frames 1280x720,320x180*8` feeds one
//!    720p and eight 180p synthetic tiles at 30 fps into the frame hub, for
//!    each transport (local WebSocket, Tauri IPC channel). Over 20 s: CPU of
//!    the app and of WebKit's web process, pictures offered vs drawn, and
//!    the page's delivery latency (hand-over to drawn) p50/p95.
//! 2. Memory (PSS and RSS of the app and every WebKit process): idle on the
//!    prejoin screen, and in a 4-person call (the app and three bots).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parley_e2e::window::Xvfb;
use parley_e2e::{SfuProcess, bin};
use serde_json::Value;

const WARM_UP: Duration = Duration::from_secs(8);
const MEASURE: Duration = Duration::from_secs(20);
const MEMORY_SAMPLES: usize = 20;

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn launch(display: &str, args: &[&str], log: &Path) -> App {
    let log = std::fs::File::create(log).unwrap();
    App(Command::new(bin("parley"))
        .args(args)
        .env("DISPLAY", display)
        .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the app starts"))
}

/// `pid` and all its descendants, with their command names.
fn process_tree(pid: u32) -> Vec<(u32, String)> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut names = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        names.insert(child, stat[open + 1..close].to_owned());
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        if let Some(parent) = rest.get(1).and_then(|p| p.parse().ok()) {
            parents.entry(parent).or_default().push(child);
        }
    }
    let mut tree = vec![pid];
    let mut index = 0;
    while index < tree.len() {
        tree.extend(parents.get(&tree[index]).cloned().unwrap_or_default());
        index += 1;
    }
    tree.into_iter()
        .map(|p| (p, names.get(&p).cloned().unwrap_or_default()))
        .collect()
}

/// CPU ticks (user + system) of one process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

/// The process group a process belongs to in the report.
fn role(name: &str) -> &'static str {
    if name.starts_with("WebKitWebProces") {
        "web"
    } else if name.starts_with("WebKitNetworkPr") {
        "network"
    } else {
        "app"
    }
}

fn cpu_by_role(pid: u32) -> HashMap<&'static str, u64> {
    let mut ticks = HashMap::new();
    for (p, name) in process_tree(pid) {
        *ticks.entry(role(&name)).or_default() += cpu_ticks(p);
    }
    ticks
}

fn memory_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One reading of every process: total PSS and RSS (kB) and PSS by role.
struct MemorySample {
    pss: u64,
    rss: u64,
    parts: String,
}

fn memory_sample(pid: u32) -> MemorySample {
    let mut sample = MemorySample {
        pss: 0,
        rss: 0,
        parts: String::new(),
    };
    let mut parts = Vec::new();
    for (p, name) in process_tree(pid) {
        let (pss, rss) = (memory_kb(p, "Pss:"), memory_kb(p, "Rss:"));
        if rss == 0 {
            continue;
        }
        sample.pss += pss;
        sample.rss += rss;
        parts.push(format!("{}={:.0}", role(&name), pss as f64 / 1024.0));
    }
    sample.parts = parts.join(", ");
    sample
}

/// Reads memory once a second for `MEMORY_SAMPLES` seconds and reports the
/// median and the highest reading: the web process's size follows its
/// garbage collector, so one reading says little.
fn memory_report(label: &str, pid: u32) -> f64 {
    let mut samples: Vec<MemorySample> = (0..MEMORY_SAMPLES)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            memory_sample(pid)
        })
        .collect();
    samples.sort_by_key(|s| s.pss);
    let mb = |kb: u64| kb as f64 / 1024.0;
    let median = &samples[samples.len() / 2];
    let highest = samples.last().map_or(0, |s| s.pss);
    println!(
        "| {label} | {:.0} | {:.0} | {:.0} | {} |",
        mb(median.pss),
        mb(highest),
        mb(median.rss),
        median.parts
    );
    mb(median.pss)
}

/// The page's `frame delivery` log lines (one per 5 s).
fn frame_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("stats=").map(|(_, json)| json.to_owned()))
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect()
}

fn frame_delivery(display: &str, transport: &str, dir: &Path) {
    let log = dir.join(format!("frames-{transport}.log"));
    let profile = dir.join(format!("profile-{transport}"));
    let app = launch(
        display,
        &[
            "--bench-frames",
            "1280x720,320x180*8",
            "--frame-transport",
            transport,
            "--profile-dir",
            profile.to_str().unwrap(),
        ],
        &log,
    );
    std::thread::sleep(WARM_UP);
    let before_lines = frame_lines(&log).len();
    let before = cpu_by_role(app.0.id());
    std::thread::sleep(MEASURE);
    let after = cpu_by_role(app.0.id());
    // The page reports every 5 s; wait for the window's last report.
    std::thread::sleep(Duration::from_secs(5));
    let lines = frame_lines(&log);
    let window: Vec<&Value> = lines.iter().skip(before_lines).take(4).collect();
    let (Some(first), Some(last)) = (lines.get(before_lines.saturating_sub(1)), window.last())
    else {
        println!("| {transport} | no frame reports in {} |", log.display());
        return;
    };
    let drawn = last["drawn"].as_u64().unwrap_or(0) - first["drawn"].as_u64().unwrap_or(0);
    let received = last["received"].as_u64().unwrap_or(0) - first["received"].as_u64().unwrap_or(0);
    let seconds = MEASURE.as_secs_f64();
    let ticks_per_second = 100.0;
    let cpu = |role: &str| {
        (after.get(role).copied().unwrap_or(0) - before.get(role).copied().unwrap_or(0)) as f64
            / ticks_per_second
            / seconds
            * 100.0
    };
    let p50: Vec<f64> = window
        .iter()
        .filter_map(|w| w["latency_ms"]["p50"].as_f64())
        .collect();
    let p95: Vec<f64> = window
        .iter()
        .filter_map(|w| w["latency_ms"]["p95"].as_f64())
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let offered = 30.0 * 9.0 * seconds;
    println!(
        "| {transport} | {:.0} % | {:.0} % | {:.0} / {received} / {drawn} | {:.1} | {:.1} (worst 5 s: {:.1}) |",
        cpu("app"),
        cpu("web"),
        offered,
        mean(&p50),
        mean(&p95),
        p95.iter().copied().fold(0.0, f64::max),
    );
    drop(app);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks benches to list themselves; nothing to list.
        return;
    }
    let screen = Xvfb::start().expect("a virtual screen");
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "app: {}; {cores} cores; Xvfb 1280x800, software GL",
        bin("parley").display()
    );
    println!();
    println!(
        "Frame delivery, 1×1280x720 + 8×320x180 at 30 fps, {} s:",
        MEASURE.as_secs()
    );
    println!();
    println!(
        "| transport | app CPU | web process CPU | offered / received / drawn | latency p50 ms | latency p95 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for transport in ["websocket", "channel"] {
        frame_delivery(&screen.display, transport, dir.path());
    }

    println!();
    println!("Memory, all processes (MB):");
    println!();
    println!(
        "| state | PSS median of {MEMORY_SAMPLES} s | PSS highest | RSS median | PSS by process (median reading) |"
    );
    println!("|---|---|---|---|---|");
    let profile = dir.path().join("profile-memory");
    let idle = launch(
        &screen.display,
        &["--fake-media", "--profile-dir", profile.to_str().unwrap()],
        &dir.path().join("idle.log"),
    );
    std::thread::sleep(Duration::from_secs(10));
    let idle_pss = memory_report("idle (prejoin, preview on)", idle.0.id());
    drop(idle);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sfu = runtime.block_on(SfuProcess::start(&[])).unwrap();
    let mut bots: Vec<Child> = (0..3)
        .map(|i| {
            Command::new(bin("parley-cli"))
                .args(["join", &sfu.signaling_url, "--room", "bench", "--name"])
                .arg(format!("Bot {i}"))
                .args(["--fake-media", "--no-stdin", "--resolution", "640x360"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let call = launch(
        &screen.display,
        &[
            "--fake-media",
            "--profile-dir",
            profile.to_str().unwrap(),
            "--server",
            &sfu.signaling_url,
            "--room",
            "bench",
            "--name",
            "Bench",
            "--join",
        ],
        &dir.path().join("call.log"),
    );
    std::thread::sleep(Duration::from_secs(20));
    let call_pss = memory_report("4-person call, 20–40 s in", call.0.id());
    println!();
    println!(
        "A 4-person call adds {:.0} MB PSS over idle (median readings).",
        call_pss - idle_pss
    );
    drop(call);
    for bot in &mut bots {
        let _ = bot.kill();
        let _ = bot.wait();
    }
}
