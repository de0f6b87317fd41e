//! Dynacast: pause the simulcast layers no subscriber wants, so the
//! publisher stops scaling and encoding them.
//!
//! A layer resumes the moment someone wants it (the publisher then sends a
//! keyframe on it), and pauses only after nobody has wanted it for
//! [`PAUSE_AFTER`], so a subscriber flicking between sizes does not make the
//! publisher's encoder start and stop.

use std::time::{Duration, Instant};

/// How long a layer must go unwanted before the publisher is told to pause it.
pub const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// A change to tell the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerChange {
    pub layer: usize,
    pub active: bool,
}

/// Tracks one published video track's layers.
#[derive(Debug, Clone)]
pub struct Dynacast {
    active: Vec<bool>,
    unwanted_since: Vec<Option<Instant>>,
}

impl Dynacast {
    /// All `layers` start active: the publisher sends everything until told otherwise.
    pub fn new(layers: usize) -> Self {
        Self {
            active: vec![true; layers],
            unwanted_since: vec![None; layers],
        }
    }

    pub fn is_active(&self, layer: usize) -> bool {
        self.active.get(layer).copied().unwrap_or(false)
    }

    /// `wanted` holds the layer each subscriber would like (its tile and
    /// bandwidth, as if every layer were available). Returns the changes to
    /// send to the publisher.
    pub fn update(
        &mut self,
        wanted: impl IntoIterator<Item = usize>,
        now: Instant,
    ) -> Vec<LayerChange> {
        let mut demand = vec![false; self.active.len()];
        for layer in wanted {
            if let Some(slot) = demand.get_mut(layer) {
                *slot = true;
            }
        }
        let mut changes = Vec::new();
        for (layer, wanted) in demand.into_iter().enumerate() {
            if wanted {
                self.unwanted_since[layer] = None;
                if !self.active[layer] {
                    self.active[layer] = true;
                    changes.push(LayerChange {
                        layer,
                        active: true,
                    });
                }
            } else if self.active[layer] {
                let since = *self.unwanted_since[layer].get_or_insert(now);
                if now.duration_since(since) >= PAUSE_AFTER {
                    self.active[layer] = false;
                    changes.push(LayerChange {
                        layer,
                        active: false,
                    });
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwatched_layers_pause_after_a_while_and_resume_at_once() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut dynacast = Dynacast::new(3);
        // Two subscribers with small tiles: only the quarter layer is wanted.
        assert_eq!(dynacast.update([0, 0], at(0)), []);
        assert_eq!(dynacast.update([0, 0], at(1_999)), []);
        assert_eq!(
            dynacast.update([0, 0], at(2_000)),
            [
                LayerChange {
                    layer: 1,
                    active: false
                },
                LayerChange {
                    layer: 2,
                    active: false
                }
            ]
        );
        assert!(dynacast.is_active(0) && !dynacast.is_active(2));
        // Someone maximises the tile: the full layer comes back at once.
        assert_eq!(
            dynacast.update([0, 2], at(2_100)),
            [LayerChange {
                layer: 2,
                active: true
            }]
        );
        // Nobody watching at all: everything pauses, after the delay.
        assert_eq!(dynacast.update([], at(2_200)), []);
        let paused = dynacast.update([], at(4_200));
        assert_eq!(paused.len(), 2, "{paused:?}");
        assert!((0..3).all(|l| !dynacast.is_active(l)));
    }

    #[test]
    fn flicking_between_sizes_does_not_toggle_the_encoder() {
        let start = Instant::now();
        let mut dynacast = Dynacast::new(3);
        let mut changes = 0;
        for i in 0..100u64 {
            // A subscriber alternating between half and full every 500 ms.
            let wanted = if (i / 5) % 2 == 0 { 1 } else { 2 };
            changes += dynacast
                .update([0, wanted], start + Duration::from_millis(i * 100))
                .len();
        }
        assert_eq!(changes, 0);
    }

    #[test]
    fn layers_that_do_not_exist_are_ignored() {
        let mut dynacast = Dynacast::new(2);
        assert_eq!(dynacast.update([0, 7], Instant::now()), []);
        assert!(!dynacast.is_active(7));
    }
}
