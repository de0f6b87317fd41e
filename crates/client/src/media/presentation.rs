//! Decoded pictures held back for lip sync, shown in decode order per track.
//!
//! Each picture gets its own due time from lip sync, and those can step
//! backwards (the audio delay shrinks, a sender report corrects the clock).
//! Showing pictures by due time alone would then show a newer picture
//! before an older one of the same track. So a picture never waits behind a
//! later one: when a picture is due sooner than pictures of its track still
//! held, those are brought forward to its due time and go first.

/// A picture waiting to be shown.
#[derive(Debug)]
struct Held<K, F> {
    due_us: u64,
    /// Arrival order, which breaks ties between equal due times.
    order: u64,
    key: K,
    frame: F,
}

/// See the module docs. `K` names a track, `F` is a picture.
#[derive(Debug)]
pub struct HeldFrames<K, F> {
    held: Vec<Held<K, F>>,
    next_order: u64,
}

impl<K, F> Default for HeldFrames<K, F> {
    fn default() -> Self {
        Self {
            held: Vec::new(),
            next_order: 0,
        }
    }
}

impl<K: PartialEq, F> HeldFrames<K, F> {
    /// Adds a picture of track `key` due at `due_us` (`None`: at once).
    /// Returns this track's pictures to show now, oldest first: nothing
    /// when the picture waits; otherwise the track's held pictures and then
    /// this one. Other tracks' pictures wait for [`Self::take_due`].
    pub fn push(&mut self, key: K, frame: F, due_us: Option<u64>, now_us: u64) -> Vec<F> {
        let due_us = due_us.unwrap_or(now_us);
        let mut now = Vec::new();
        let mut index = 0;
        while index < self.held.len() {
            let held = &mut self.held[index];
            if held.key == key {
                held.due_us = held.due_us.min(due_us);
                if due_us <= now_us {
                    now.push(self.held.swap_remove(index));
                    continue;
                }
            }
            index += 1;
        }
        if due_us > now_us {
            let order = self.next_order;
            self.next_order += 1;
            self.held.push(Held {
                due_us,
                order,
                key,
                frame,
            });
            return Vec::new();
        }
        now.sort_by_key(|h| h.order);
        now.into_iter()
            .map(|h| h.frame)
            .chain(std::iter::once(frame))
            .collect()
    }

    /// Removes and returns every picture due by `until_us`, in the order
    /// they are to be shown.
    pub fn take_due(&mut self, until_us: u64) -> Vec<(K, F)> {
        let mut due = Vec::new();
        let mut index = 0;
        while index < self.held.len() {
            if self.held[index].due_us <= until_us {
                due.push(self.held.swap_remove(index));
            } else {
                index += 1;
            }
        }
        due.sort_by_key(|h| (h.due_us, h.order));
        due.into_iter().map(|h| (h.key, h.frame)).collect()
    }

    /// When the next held picture is due.
    pub fn next_due_us(&self) -> Option<u64> {
        self.held.iter().map(|h| h.due_us).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_wait_for_their_due_time() {
        let mut held = HeldFrames::default();
        assert!(held.push("a", 1, Some(150), 100).is_empty());
        assert!(held.push("a", 2, Some(180), 110).is_empty());
        assert_eq!(held.next_due_us(), Some(150));
        assert!(held.take_due(149).is_empty());
        assert_eq!(held.take_due(150), [("a", 1)]);
        assert_eq!(held.take_due(200), [("a", 2)]);
        assert_eq!(held.next_due_us(), None);
    }

    #[test]
    fn a_picture_due_at_once_first_shows_the_older_ones_of_its_track() {
        let mut held = HeldFrames::default();
        // Held for half a second on a wrong clock...
        assert!(held.push("a", 1, Some(600), 100).is_empty());
        assert!(held.push("b", 10, Some(600), 100).is_empty());
        assert!(held.push("a", 2, Some(630), 130).is_empty());
        // ...then the clock is corrected and the next one is late already.
        assert_eq!(held.push("a", 3, Some(120), 160), [1, 2, 3]);
        // Without a due time at all, the same.
        assert!(held.push("a", 4, Some(900), 170).is_empty());
        assert_eq!(held.push("a", 5, None, 180), [4, 5]);
        // The other track is untouched.
        assert_eq!(held.take_due(599), []);
        assert_eq!(held.take_due(600), [("b", 10)]);
    }

    #[test]
    fn a_picture_shown_at_once_never_takes_another_tracks_along() {
        let mut held = HeldFrames::default();
        assert!(held.push("b", 10, Some(150), 100).is_empty());
        // By now b's picture is due too, but it is for b's tile, shown
        // by take_due, not returned with a's.
        assert_eq!(held.push("a", 1, None, 200), [1]);
        assert_eq!(held.take_due(200), [("b", 10)]);
    }

    #[test]
    fn a_picture_due_sooner_brings_the_older_ones_forward() {
        let mut held = HeldFrames::default();
        assert!(held.push("a", 1, Some(600), 100).is_empty());
        assert!(held.push("a", 2, Some(300), 130).is_empty());
        assert_eq!(held.next_due_us(), Some(300));
        assert_eq!(held.take_due(300), [("a", 1), ("a", 2)]);
    }

    #[test]
    fn due_pictures_of_several_tracks_come_in_due_order() {
        let mut held = HeldFrames::default();
        for (key, frame, due) in [("a", 1, 300), ("b", 1, 200), ("a", 2, 330), ("b", 2, 230)] {
            assert!(held.push(key, frame, Some(due), 100).is_empty());
        }
        assert_eq!(
            held.take_due(1000),
            [("b", 1), ("b", 2), ("a", 1), ("a", 2)]
        );
    }
}
