//! Lip sync: when to show a participant's video frame so it matches the
//! audio being heard from them.
//!
//! Each stream's RTP clock is tied to the sender's wall clock by its latest
//! RTCP sender report ([`SenderClock`]). The playout side tells [`LipSync`]
//! which audio (by capture time) is being heard and when; the difference is
//! the audio's delay, and a video frame is shown at its own capture time plus
//! that delay. Video that is later than the audio is shown at once (holding
//! the audio back for it is the jitter buffer's concern, not ours).

/// How far (in seconds of media) a sender report's RTP time may be from the
/// media that follows it. Reports come every few seconds at most, so a
/// genuine one is never this far from the packets around it.
const MAX_REPORT_DISTANCE_S: i64 = 10;

/// Maps RTP times of one stream to the sender's wall clock (Unix µs).
#[derive(Debug, Clone, Copy)]
pub struct SenderClock {
    clock_rate: u32,
    report: Option<(i64, u32)>,
    /// The last report not believed: every frame carries the newest report,
    /// so the same one comes again until the next.
    refused: Option<(u64, u32)>,
}

/// What [`SenderClock::update`] did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportUse {
    Taken,
    /// Not believed, seen for the first time.
    Refused,
    /// Not believed, as when it came before.
    RefusedAgain,
}

impl SenderClock {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            report: None,
            refused: None,
        }
    }

    /// A sender report: RTP time `rtp_time` was wall-clock `ntp_us` at the
    /// sender. `packet_rtp` is the RTP time of media that arrived after it.
    ///
    /// A report far from the media is not believed: a sender that has
    /// written nothing yet (or whose clock bookkeeping went wrong) reports
    /// RTP time 0, and following it would hold every picture back by the
    /// longest hold until the next report comes.
    pub fn update(&mut self, ntp_us: u64, rtp_time: u64, packet_rtp: u64) -> ReportUse {
        let distance = i64::from((packet_rtp as u32).wrapping_sub(rtp_time as u32) as i32).abs();
        if distance > MAX_REPORT_DISTANCE_S * i64::from(self.clock_rate.max(1)) {
            let report = (ntp_us, rtp_time as u32);
            if self.refused == Some(report) {
                return ReportUse::RefusedAgain;
            }
            self.refused = Some(report);
            return ReportUse::Refused;
        }
        self.report = Some((ntp_us as i64, rtp_time as u32));
        ReportUse::Taken
    }

    /// The sender's wall-clock time of `rtp_time`, once a report has come.
    /// RTP time is compared in its 32-bit wire form, so wrap-around and an
    /// unextended report value both work within ±half the range.
    pub fn wall_time_us(&self, rtp_time: u64) -> Option<i64> {
        let (ntp_us, report_rtp) = self.report?;
        let ticks = i64::from((rtp_time as u32).wrapping_sub(report_rtp) as i32);
        Some(ntp_us + ticks * 1_000_000 / i64::from(self.clock_rate.max(1)))
    }
}

/// Longest a video frame is held back to wait for its audio.
pub const MAX_HOLD_US: i64 = 500_000;

/// The audio delay of one participant, and the render times it implies.
#[derive(Debug, Clone, Copy, Default)]
pub struct LipSync {
    audio_delay_us: Option<f64>,
}

impl LipSync {
    /// Audio captured at `captured_us` (sender's clock) is heard at `heard_us`.
    pub fn audio_heard(&mut self, captured_us: i64, heard_us: i64) {
        let delay = (heard_us - captured_us) as f64;
        // Smoothed over about ten frames: the delay steps when the jitter
        // buffer resizes, and video should follow it gently.
        self.audio_delay_us = Some(match self.audio_delay_us {
            Some(previous) => 0.9 * previous + 0.1 * delay,
            None => delay,
        });
    }

    pub fn audio_delay_us(&self) -> Option<f64> {
        self.audio_delay_us
    }

    /// When to show a video frame captured at `captured_us` (sender's clock):
    /// `None` when there is no audio to follow (show it at once).
    pub fn render_at_us(&self, captured_us: i64, now_us: i64) -> Option<i64> {
        let delay = self.audio_delay_us?;
        let due = captured_us + delay as i64;
        Some(due.min(now_us + MAX_HOLD_US))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_reports_map_rtp_time_across_wrap_around() {
        let mut clock = SenderClock::new(90_000);
        assert_eq!(clock.wall_time_us(1_000), None);
        // Just before the 32-bit wrap.
        assert_eq!(
            clock.update(1_000_000_000, u64::from(u32::MAX) - 899, 100),
            ReportUse::Taken
        );
        // 900 ticks later, past the wrap, is 10 ms later.
        assert_eq!(
            clock.wall_time_us(u64::from(u32::MAX) + 1),
            Some(1_000_010_000)
        );
        // And an extended value before the report maps backwards.
        assert_eq!(
            clock.wall_time_us(u64::from(u32::MAX) - 899 - 90_000),
            Some(999_000_000)
        );
    }

    #[test]
    fn a_report_far_from_the_media_is_not_believed() {
        let mut clock = SenderClock::new(90_000);
        let media = 599_223_704;
        // A sender that had written nothing yet reports RTP time 0; the
        // next frames carry the same report.
        assert_eq!(clock.update(1_000_000_000, 0, media), ReportUse::Refused);
        assert_eq!(
            clock.update(1_000_000_000, 0, media + 3000),
            ReportUse::RefusedAgain
        );
        assert_eq!(clock.wall_time_us(media), None);
        // A genuine report a second before the media is taken.
        assert_eq!(
            clock.update(1_000_000_000, media - 90_000, media),
            ReportUse::Taken
        );
        assert_eq!(clock.wall_time_us(media), Some(1_001_000_000));
        // And a later bogus one does not replace it.
        assert_eq!(
            clock.update(2_000_000_000, 0, media + 90_000),
            ReportUse::Refused
        );
        assert_eq!(clock.wall_time_us(media), Some(1_001_000_000));
    }

    #[test]
    fn video_is_shown_when_its_audio_is_heard() {
        // Audio is heard 180 ms after capture; video arrives 40 ms after.
        let mut sync = LipSync::default();
        for frame in 0..50i64 {
            let captured = frame * 20_000;
            sync.audio_heard(captured, captured + 180_000);
        }
        let captured = 2_000_000;
        let arrived = captured + 40_000;
        let shown = sync.render_at_us(captured, arrived).unwrap();
        assert_eq!(shown - captured, 180_000, "shown with its audio");
        // Video later than the audio is shown at once, not in the past.
        let late = sync.render_at_us(captured, captured + 300_000).unwrap();
        assert!(late <= captured + 300_000);
        // Never held beyond the cap.
        let mut slow = LipSync::default();
        slow.audio_heard(0, 2_000_000);
        assert_eq!(slow.render_at_us(0, 10).unwrap(), 10 + MAX_HOLD_US);
        assert!(LipSync::default().render_at_us(0, 0).is_none());
    }
}
