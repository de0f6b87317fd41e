//! Per-subscriber simulcast layer selection.
//!
//! The chosen layer is the highest that fits both the subscriber's tile (no
//! point sending 720p to a 320×180 tile) and its estimated bandwidth. Going
//! down is immediate — congestion hurts everyone on the link. Going up needs
//! headroom over the next layer's bitrate, and after congestion that headroom
//! must also hold for a while, so a recovering estimate does not flap between
//! layers (each switch costs a keyframe). Without recent congestion — a tile
//! was enlarged — the move up is immediate.

use std::time::{Duration, Instant};

/// Bandwidth needed above a layer's bitrate before moving up to it.
pub const UP_HEADROOM: f64 = 1.25;
/// How long that headroom must hold before moving up after congestion.
pub const UP_HOLD: Duration = Duration::from_secs(3);
/// How long a bandwidth-driven move down counts as recent congestion.
pub const CONGESTION_MEMORY: Duration = Duration::from_secs(10);
/// A fall of the estimate below this share of its value when the current
/// layer was chosen is congestion, not measurement noise.
pub const CONGESTION_DROP: f64 = 0.85;
/// How long the estimate may stay below the current layer's cost without
/// falling (it is catching up with more traffic) before moving down anyway.
pub const CATCH_UP: Duration = Duration::from_secs(4);

/// One layer the publisher sends, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub width: u32,
    pub height: u32,
    /// What the layer costs on the wire, measured or nominal.
    pub bitrate_bps: u64,
    /// False while the publisher has it paused (dynacast).
    pub available: bool,
}

/// What the subscriber asked for (from `update_subscription`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub paused: bool,
}

/// Chooses and remembers one subscriber's layer for one track.
#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    current: Option<usize>,
    /// Since when the bandwidth has allowed the next layer up.
    headroom_since: Option<Instant>,
    /// When the bandwidth last forced a move down.
    congested_at: Option<Instant>,
    /// The estimate when the current layer was chosen: a move down with a
    /// lower estimate is congestion, with the same one a layer that costs
    /// more than thought.
    chosen_at_estimate: u64,
    /// Since when the estimate has not carried the current layer.
    short_since: Option<Instant>,
    /// The size cap of the previous call, to see a tile grow.
    last_cap: Option<usize>,
    /// A tile grew and its layer is not served yet (it may still be paused
    /// at the publisher).
    upgrade_pending: bool,
    /// Until then, the estimate is still settling after serving a grown tile
    /// ahead of it: a fall means little (it was measured while little was sent).
    settling_until: Option<Instant>,
}

impl LayerSelector {
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer this subscriber would move to if every layer were flowing:
    /// what dynacast keeps the publisher encoding. Its tile's layer, unless
    /// recent congestion limits it to what the bandwidth carries.
    pub fn wanted(
        &self,
        layers: &[Layer],
        request: Request,
        estimate_bps: u64,
        now: Instant,
    ) -> Option<usize> {
        if request.paused || layers.is_empty() {
            return None;
        }
        let cap = size_cap(layers, request);
        let recovering = self
            .congested_at
            .is_some_and(|at| now.duration_since(at) < CONGESTION_MEMORY);
        if !recovering {
            return Some(cap);
        }
        Some(
            (0..=cap)
                .rev()
                .find(|&i| layers[i].bitrate_bps <= estimate_bps)
                .unwrap_or(0),
        )
    }

    /// Updates the choice; `None` means forward nothing.
    pub fn select(
        &mut self,
        layers: &[Layer],
        request: Request,
        estimate_bps: u64,
        now: Instant,
    ) -> Option<usize> {
        if request.paused || !layers.iter().any(|l| l.available) {
            self.current = None;
            self.headroom_since = None;
            return None;
        }
        let cap = size_cap(layers, request);
        // The highest available layer within the cap that the bandwidth carries,
        // and never less than the lowest available one: a picture beats none.
        let lowest = layers.iter().position(|l| l.available)?;
        let affordable = (0..=cap)
            .rev()
            .find(|&i| layers[i].available && layers[i].bitrate_bps <= estimate_bps)
            .unwrap_or(lowest)
            .max(lowest);
        // What the bandwidth carries whether or not it is flowing now (a
        // lower layer may be paused at the publisher until someone wants it).
        let fits = (0..=cap)
            .rev()
            .find(|&i| layers[i].bitrate_bps <= estimate_bps)
            .unwrap_or(0);
        let recovering = self
            .congested_at
            .is_some_and(|at| now.duration_since(at) < CONGESTION_MEMORY);
        if self.last_cap.is_some_and(|last| cap > last) {
            self.upgrade_pending = true;
        }
        self.last_cap = Some(cap);
        let chosen = match self.current.filter(|&c| c <= cap && layers[c].available) {
            // Nothing yet (or the old layer went away): take what fits.
            None => affordable,
            // A tile grew on a link with no recent congestion: serve it now.
            // An estimate measured while little was sent says little about
            // what the link carries; congestion, if any, shows within a second.
            Some(current) if self.upgrade_pending && !recovering => {
                let best = (current..=cap)
                    .rev()
                    .find(|&i| layers[i].available)
                    .unwrap_or(current);
                self.upgrade_pending = best < cap;
                if best > current {
                    self.settling_until = Some(now + CATCH_UP);
                }
                best
            }
            // The estimate no longer carries the current layer: down at once
            // when it fell (congestion), after a while when it has not caught
            // up. Congestion is noted even when no lower layer flows yet, so
            // that dynacast resumes one (see `wanted`).
            Some(current) if fits < current => {
                let settling = self.settling_until.is_some_and(|until| now < until);
                let fell = !settling
                    && (estimate_bps as f64) < self.chosen_at_estimate as f64 * CONGESTION_DROP;
                let short_for = self
                    .short_since
                    .map_or(Duration::ZERO, |since| now.duration_since(since));
                if fell || short_for >= CATCH_UP {
                    self.congested_at = Some(now);
                    self.upgrade_pending = false;
                    affordable
                } else {
                    current
                }
            }
            Some(current) => {
                let carried = |i: usize| {
                    layers[i].available
                        && estimate_bps as f64 >= layers[i].bitrate_bps as f64 * UP_HEADROOM
                };
                let best_up = (current + 1..=cap).rev().find(|&i| carried(i));
                match best_up {
                    // A tile grew and the link is fine: straight to the best fit.
                    Some(up) if !recovering => up,
                    // After congestion: one layer at a time, each held first.
                    Some(_) => {
                        let next = (current + 1..=cap)
                            .find(|&i| layers[i].available)
                            .expect("a layer above exists");
                        let since = *self.headroom_since.get_or_insert(now);
                        if carried(next) && now.duration_since(since) >= UP_HOLD {
                            next
                        } else {
                            current
                        }
                    }
                    None => {
                        self.headroom_since = None;
                        current
                    }
                }
            }
        };
        if Some(chosen) != self.current {
            self.headroom_since = None;
            self.chosen_at_estimate = estimate_bps;
        }
        self.short_since = if chosen > fits {
            Some(self.short_since.unwrap_or(now))
        } else {
            None
        };
        self.current = Some(chosen);
        Some(chosen)
    }
}

/// The smallest layer that covers the requested tile, or the top layer.
pub fn size_cap(layers: &[Layer], request: Request) -> usize {
    let top = layers.len() - 1;
    match (request.max_width, request.max_height) {
        (None, None) => top,
        (width, height) => layers
            .iter()
            .position(|l| {
                width.is_none_or(|w| l.width >= w) && height.is_none_or(|h| l.height >= h)
            })
            .unwrap_or(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulcast() -> [Layer; 3] {
        [
            Layer {
                width: 320,
                height: 180,
                bitrate_bps: 160_000,
                available: true,
            },
            Layer {
                width: 640,
                height: 360,
                bitrate_bps: 450_000,
                available: true,
            },
            Layer {
                width: 1280,
                height: 720,
                bitrate_bps: 1_700_000,
                available: true,
            },
        ]
    }

    fn tile(width: u32, height: u32) -> Request {
        Request {
            max_width: Some(width),
            max_height: Some(height),
            paused: false,
        }
    }

    const PLENTY: u64 = 10_000_000;

    #[test]
    fn the_tile_size_caps_the_layer() {
        let now = Instant::now();
        let layers = simulcast();
        let pick = |request| LayerSelector::default().select(&layers, request, PLENTY, now);
        assert_eq!(pick(tile(320, 180)), Some(0));
        assert_eq!(pick(tile(300, 170)), Some(0));
        assert_eq!(pick(tile(400, 225)), Some(1));
        assert_eq!(pick(tile(1920, 1080)), Some(2));
        assert_eq!(pick(Request::default()), Some(2));
        assert_eq!(
            pick(Request {
                paused: true,
                ..tile(640, 360)
            }),
            None
        );
    }

    #[test]
    fn a_bandwidth_drop_moves_down_at_once_and_recovery_moves_up_after_holding() {
        let layers = simulcast();
        let start = Instant::now();
        let mut selector = LayerSelector::default();
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, start),
            Some(2)
        );
        let t = |s: u64| start + Duration::from_secs(s);
        assert_eq!(
            selector.select(&layers, Request::default(), 600_000, t(1)),
            Some(1)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), 100_000, t(2)),
            Some(0),
            "never below the lowest"
        );
        // Bandwidth returns: up one layer at a time, each after its own hold.
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, t(3)),
            Some(0)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, t(5)),
            Some(0)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, t(6)),
            Some(1)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, t(7)),
            Some(1)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, t(9)),
            Some(1)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, t(10)),
            Some(2)
        );
    }

    #[test]
    fn an_estimate_hovering_at_a_threshold_does_not_flap() {
        let layers = simulcast();
        let start = Instant::now();
        let mut selector = LayerSelector::default();
        selector.select(&layers, Request::default(), 500_000, start);
        let mut switches = 0;
        let mut last = selector.current();
        for i in 1..200u64 {
            // ±10 % around the top layer's bitrate, every 100 ms.
            let estimate = if i % 2 == 0 { 1_870_000 } else { 1_530_000 };
            let now = start + Duration::from_millis(100 * i);
            let chosen = selector.select(&layers, Request::default(), estimate, now);
            switches += usize::from(chosen != last);
            last = chosen;
        }
        assert!(switches <= 1, "{switches} switches in 20 s");
        assert_eq!(last, Some(1), "the top layer needs 25 % headroom, held");
    }

    #[test]
    fn an_enlarged_tile_gets_the_bigger_layer_at_once() {
        let layers = simulcast();
        let now = Instant::now();
        let mut selector = LayerSelector::default();
        assert_eq!(
            selector.select(&layers, tile(320, 180), PLENTY, now),
            Some(0)
        );
        let later = now + Duration::from_millis(100);
        assert_eq!(
            selector.select(&layers, tile(1280, 720), PLENTY, later),
            Some(2),
            "one switch, one keyframe"
        );
        // And a smaller tile brings it down just as fast.
        assert_eq!(
            selector.select(&layers, tile(320, 180), PLENTY, later),
            Some(0)
        );
    }

    #[test]
    fn an_enlarged_tile_is_served_before_the_estimate_catches_up() {
        let layers = simulcast();
        let start = Instant::now();
        let t = |ms: u64| start + Duration::from_millis(ms);
        let mut selector = LayerSelector::default();
        // Receiving only the small layer, the estimate sank to what it carries.
        assert_eq!(
            selector.select(&layers, tile(320, 180), 2_500_000, t(0)),
            Some(0)
        );
        assert_eq!(
            selector.select(&layers, tile(320, 180), 300_000, t(2000)),
            Some(0)
        );
        assert_eq!(
            selector.select(&layers, tile(1280, 720), 300_000, t(2100)),
            Some(2),
            "a bigger tile is served at once"
        );
        // The estimate grows with the traffic: the layer stays.
        for (ms, estimate) in [(2200, 200_000), (3000, 900_000), (3500, 2_000_000)] {
            assert_eq!(
                selector.select(&layers, tile(1280, 720), estimate, t(ms)),
                Some(2)
            );
        }
    }

    #[test]
    fn a_layer_the_estimate_never_catches_up_with_is_left() {
        let layers = simulcast();
        let start = Instant::now();
        let t = |ms: u64| start + Duration::from_millis(ms);
        let mut selector = LayerSelector::default();
        selector.select(&layers, tile(320, 180), 300_000, t(0));
        assert_eq!(
            selector.select(&layers, tile(1280, 720), 300_000, t(100)),
            Some(2)
        );
        assert_eq!(
            selector.select(&layers, tile(1280, 720), 300_000, t(3000)),
            Some(2)
        );
        assert_eq!(
            selector.select(&layers, tile(1280, 720), 300_000, t(4200)),
            Some(0),
            "stuck below the layer's cost for the catch-up time"
        );
        assert_eq!(
            selector.select(&layers, tile(1280, 720), 300_000, t(5000)),
            Some(0),
            "and no immediate retry"
        );
    }

    #[test]
    fn paused_layers_are_skipped_and_a_vanished_layer_is_replaced() {
        let now = Instant::now();
        let mut layers = simulcast();
        layers[1].available = false;
        let mut selector = LayerSelector::default();
        assert_eq!(
            selector.select(&layers, tile(640, 360), PLENTY, now),
            Some(0)
        );
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, now),
            Some(2)
        );
        layers[2].available = false;
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, now),
            Some(0)
        );
        for layer in &mut layers {
            layer.available = false;
        }
        assert_eq!(
            selector.select(&layers, Request::default(), PLENTY, now),
            None
        );
    }
}
