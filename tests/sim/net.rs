//! A seeded network: per-destination links with delay, jitter, loss,
//! duplication and an optional bottleneck with a drop-tail queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How one destination's incoming link behaves.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    pub delay: Duration,
    /// Uniform extra delay in `0..jitter`; enough of it reorders packets.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// A bottleneck: packets serialise at this rate behind a queue.
    pub capacity_bps: Option<u64>,
}

/// A bottleneck queue holding more than this much delay drops new packets.
const MAX_QUEUE_DELAY: Duration = Duration::from_millis(300);

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Link {
    config: LinkConfig,
    /// When the bottleneck finishes sending what is queued.
    busy_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Net {
    rng: StdRng,
    default: LinkConfig,
    links: HashMap<SocketAddr, Link>,
    in_flight: BinaryHeap<Reverse<(Instant, u64, Datagram)>>,
    sequence: u64,
}

impl Net {
    pub fn new(seed: u64, default: LinkConfig) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            default,
            links: HashMap::new(),
            in_flight: BinaryHeap::new(),
            sequence: 0,
        }
    }

    pub fn set_link(&mut self, destination: SocketAddr, config: LinkConfig) {
        self.links.insert(
            destination,
            Link {
                config,
                busy_until: None,
            },
        );
    }

    pub fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8], now: Instant) {
        let default = self.default;
        let link = self.links.entry(destination).or_insert(Link {
            config: default,
            busy_until: None,
        });
        let config = link.config;
        if self.rng.random_bool(config.loss) {
            return;
        }
        let mut departs = now;
        if let Some(capacity) = config.capacity_bps {
            let start = link.busy_until.map_or(now, |busy| busy.max(now));
            if start.duration_since(now) > MAX_QUEUE_DELAY {
                return;
            }
            let serialise =
                Duration::from_secs_f64((data.len() as f64 + 28.0) * 8.0 / capacity as f64);
            departs = start + serialise;
            link.busy_until = Some(departs);
        }
        let copies = if self.rng.random_bool(config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = config.jitter.mul_f64(self.rng.random::<f64>());
            let at = departs + config.delay + jitter;
            self.sequence += 1;
            let copy = Datagram {
                source,
                destination,
                data: data.to_vec(),
            };
            self.in_flight.push(Reverse((at, self.sequence, copy)));
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next datagram due at or before `now`.
    pub fn deliver(&mut self, now: Instant) -> Option<Datagram> {
        if self.next_delivery()? > now {
            return None;
        }
        self.in_flight.pop().map(|Reverse((_, _, d))| d)
    }
}
