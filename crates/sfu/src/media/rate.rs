//! A cheap bitrate meter for received layers: bytes per half-second window,
//! smoothed, so layer choice follows what a layer really costs.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_millis(500);
/// A window this long means the stream stopped in between.
const IDLE_RESTART: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    bps: u64,
}

impl RateMeter {
    pub fn record(&mut self, bytes: usize, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= IDLE_RESTART {
            // The stream was paused: measure afresh rather than average the pause in.
            self.window_start = Some(now);
            self.bytes = bytes as u64;
            return;
        }
        if elapsed >= WINDOW {
            let measured = (self.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            self.bps = if self.bps == 0 {
                measured
            } else {
                (self.bps * 3 + measured) / 4
            };
            self.window_start = Some(now);
            self.bytes = 0;
        }
        self.bytes += bytes as u64;
    }

    /// Smoothed bits per second; 0 until a window has completed.
    pub fn bps(&self) -> u64 {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_steady_stream() {
        let start = Instant::now();
        let mut meter = RateMeter::default();
        // 1000 bytes every 10 ms = 800 kbit/s.
        for i in 0..300 {
            meter.record(1000, start + Duration::from_millis(i * 10));
        }
        let bps = meter.bps();
        assert!((780_000..=820_000).contains(&bps), "{bps}");
    }
}
