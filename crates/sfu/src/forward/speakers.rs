//! Active-speaker detection from the audio levels publishers put in every
//! packet (RFC 6464: 0 dBov loudest, 127 silence).
//!
//! Each participant's level is smoothed (fast attack, slow release); someone counts
//! as speaking once their smoothed level stays above a threshold for a
//! moment, and stops after a longer quiet spell, so a cough or a breath
//! between words does not flip the highlighted tile. Announcements are rate
//! limited: the room hears a change at most every [`ANNOUNCE_INTERVAL`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Smoothing time constant while the level rises (speech starts fast)...
pub const ATTACK: Duration = Duration::from_millis(60);
/// ...and while it falls (a pause between words keeps the level up).
pub const RELEASE: Duration = Duration::from_millis(300);
/// Levels (in dBov, negated RFC 6464 value) louder than this count as speech.
pub const SPEECH_DBOV: f32 = -50.0;
/// Speech must last this long to make someone a speaker...
pub const START_AFTER: Duration = Duration::from_millis(200);
/// ...and silence this long to stop it.
pub const STOP_AFTER: Duration = Duration::from_millis(1200);
/// The shortest time between two announcements.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(300);
/// How much louder than the current leader someone must be to take the lead.
pub const LEAD_MARGIN_DB: f32 = 3.0;

#[derive(Debug, Clone)]
struct Talker {
    /// Exponentially smoothed level in dBov.
    level_dbov: f32,
    last_update: Instant,
    loud_since: Option<Instant>,
    quiet_since: Option<Instant>,
    speaking: bool,
}

/// One announced speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker {
    pub participant: String,
    /// 0.0 (silence) to 1.0 (full scale), for the UI's level ring.
    pub level: f32,
}

/// Tracks who is speaking in one room.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    talkers: HashMap<String, Talker>,
    announced: Vec<String>,
    last_announce: Option<Instant>,
}

impl SpeakerDetector {
    /// Feeds one packet's audio level (RFC 6464 value, 0..=127).
    pub fn record(&mut self, participant: &str, rfc6464_level: u8, now: Instant) {
        let dbov = -f32::from(rfc6464_level.min(127));
        // Looked up before inserting: this runs for every audio packet.
        if !self.talkers.contains_key(participant) {
            self.talkers.insert(
                participant.to_owned(),
                Talker {
                    level_dbov: -127.0,
                    last_update: now,
                    loud_since: None,
                    quiet_since: None,
                    speaking: false,
                },
            );
        }
        let talker = self.talkers.get_mut(participant).expect("inserted above");
        let elapsed = now
            .saturating_duration_since(talker.last_update)
            .as_secs_f32();
        let constant = if dbov > talker.level_dbov {
            ATTACK
        } else {
            RELEASE
        };
        // At least one packet's worth (20 ms) of weight: levels arrive per packet.
        let weight = (elapsed.max(0.02) / constant.as_secs_f32()).min(1.0);
        talker.level_dbov += (dbov - talker.level_dbov) * weight;
        talker.last_update = now;
        if talker.level_dbov > SPEECH_DBOV {
            talker.quiet_since = None;
            let since = *talker.loud_since.get_or_insert(now);
            if now.duration_since(since) >= START_AFTER {
                talker.speaking = true;
            }
        } else {
            talker.loud_since = None;
            let since = *talker.quiet_since.get_or_insert(now);
            if now.duration_since(since) >= STOP_AFTER {
                talker.speaking = false;
            }
        }
    }

    /// The participant left: forget them.
    pub fn remove(&mut self, participant: &str) {
        self.talkers.remove(participant);
    }

    /// The speakers to announce, loudest first, if the set changed and the
    /// last announcement is old enough. A talker that stopped sending audio
    /// (muted, left) stops speaking after [`STOP_AFTER`].
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Speaker>> {
        for talker in self.talkers.values_mut() {
            if talker.speaking && now.saturating_duration_since(talker.last_update) >= STOP_AFTER {
                talker.speaking = false;
            }
        }
        if self
            .last_announce
            .is_some_and(|at| now.saturating_duration_since(at) < ANNOUNCE_INTERVAL)
        {
            return None;
        }
        let mut speakers: Vec<(&String, &Talker)> =
            self.talkers.iter().filter(|(_, t)| t.speaking).collect();
        // The loudest speaker keeps the lead until someone is clearly louder,
        // so two people at similar levels do not swap places every interval.
        let leader = self.announced.first().cloned();
        let effective = |id: &String, t: &Talker| {
            t.level_dbov
                + if Some(id) == leader.as_ref() {
                    LEAD_MARGIN_DB
                } else {
                    0.0
                }
        };
        speakers.sort_by(|a, b| {
            effective(b.0, b.1)
                .total_cmp(&effective(a.0, a.1))
                .then(a.0.cmp(b.0))
        });
        let ids: Vec<String> = speakers.iter().map(|(id, _)| (*id).clone()).collect();
        if ids == self.announced {
            return None;
        }
        self.announced = ids;
        self.last_announce = Some(now);
        Some(
            speakers
                .into_iter()
                .map(|(id, t)| Speaker {
                    participant: id.clone(),
                    level: 10f32.powf(t.level_dbov / 20.0).clamp(0.0, 1.0),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms packets for `ms` milliseconds at `level`.
    fn talk(
        detector: &mut SpeakerDetector,
        who: &str,
        level: u8,
        start: Instant,
        ms: u64,
    ) -> Instant {
        let mut now = start;
        for _ in 0..ms / 20 {
            detector.record(who, level, now);
            now += Duration::from_millis(20);
        }
        now
    }

    #[test]
    fn a_talker_becomes_a_speaker_and_stops_after_silence() {
        let mut detector = SpeakerDetector::default();
        let start = Instant::now();
        let t = talk(&mut detector, "ada", 30, start, 100);
        assert_eq!(detector.poll(t), None, "too short to count yet");
        let t = talk(&mut detector, "ada", 30, t, 400);
        let speakers = detector.poll(t).unwrap();
        assert_eq!(speakers.len(), 1);
        assert_eq!(speakers[0].participant, "ada");
        assert!(speakers[0].level > 0.01 && speakers[0].level <= 1.0);
        // A breath between words changes nothing.
        let t = talk(&mut detector, "ada", 127, t, 300);
        let t = talk(&mut detector, "ada", 30, t, 300);
        assert_eq!(detector.poll(t), None);
        // Real silence ends it.
        let t = talk(&mut detector, "ada", 127, t, 2000);
        assert_eq!(detector.poll(t), Some(vec![]));
    }

    #[test]
    fn loudest_first_and_announcements_are_rate_limited() {
        let mut detector = SpeakerDetector::default();
        let start = Instant::now();
        let mut now = start;
        for _ in 0..30 {
            detector.record("ada", 20, now);
            detector.record("bob", 45, now);
            now += Duration::from_millis(20);
        }
        let speakers = detector.poll(now).unwrap();
        let order: Vec<&str> = speakers.iter().map(|s| s.participant.as_str()).collect();
        assert_eq!(order, ["ada", "bob"]);
        // Bob goes quiet; the change waits for the announce interval and the stop delay.
        let mut announcements = 0;
        for _ in 0..100 {
            detector.record("ada", 20, now);
            detector.record("bob", 127, now);
            now += Duration::from_millis(20);
            announcements += usize::from(detector.poll(now).is_some());
        }
        assert_eq!(announcements, 1, "exactly one change announced");
    }

    #[test]
    fn someone_who_stops_sending_stops_speaking() {
        let mut detector = SpeakerDetector::default();
        let start = Instant::now();
        let t = talk(&mut detector, "ada", 20, start, 500);
        assert!(detector.poll(t).is_some());
        // Muted: no packets at all.
        assert_eq!(detector.poll(t + STOP_AFTER), Some(vec![]));
        detector.remove("ada");
        assert_eq!(detector.poll(t + STOP_AFTER * 2), None);
    }
}
