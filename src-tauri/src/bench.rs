//! `--bench-frames`: synthetic pictures fed straight into the frame hub at
//! 30 fps, one thread per tile, with no call, so frame delivery to the page
//! is measured on its own (docs/benchmarks.md, "Frame delivery").

use std::sync::Arc;

use parley_client::media::video::VideoSink as _;
use parley_media::capture::Pacer;
use parley_media::clock::unix_micros;
use parley_media::frame::FramePool;
use parley_media::synthetic_video::SyntheticVideo;
use serde::Serialize;

use crate::frames::FrameHub;

const FPS: u32 = 30;
const MAX_TILES: usize = 25;

#[derive(Debug, Clone, Serialize)]
pub struct BenchTile {
    pub id: String,
    pub width: u32,
    pub height: u32,
}

/// The tiles of `--bench-frames`.
#[derive(Debug, Clone)]
pub struct BenchSpec(pub Vec<BenchTile>);

/// `1280x720,320x180*8`: sizes, each optionally repeated.
pub fn parse(spec: &str) -> Result<BenchSpec, String> {
    let mut tiles = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (size, count) = part.split_once('*').unwrap_or((part, "1"));
        let count: usize = count
            .parse()
            .map_err(|_| format!("`{part}`: the count after * is not a number"))?;
        let (width, height) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|(w, h)| (16..=3840).contains(w) && (16..=2160).contains(h))
            .filter(|(w, h)| w % 2 == 0 && h % 2 == 0)
            .ok_or_else(|| {
                format!("`{part}`: sizes are even WIDTHxHEIGHT from 16x16 to 3840x2160")
            })?;
        for _ in 0..count {
            tiles.push(BenchTile {
                id: format!("bench-{}", tiles.len()),
                width,
                height,
            });
        }
    }
    if tiles.is_empty() || tiles.len() > MAX_TILES {
        return Err(format!("between 1 and {MAX_TILES} tiles"));
    }
    Ok(BenchSpec(tiles))
}

pub fn start(hub: &Arc<FrameHub>, tiles: &[BenchTile]) {
    for tile in tiles {
        let (hub, tile) = (Arc::clone(hub), tile.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("bench-{}", tile.id))
            .spawn(move || {
                let pool = FramePool::new(2);
                let mut source = SyntheticVideo::new(tile.width, tile.height, pool.clone());
                let mut pacer = Pacer::new(std::time::Duration::from_secs(1) / FPS);
                loop {
                    pacer.wait();
                    let frame = source.render(unix_micros());
                    hub.show(&tile.id, &frame);
                    pool.recycle(frame);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "bench tile not started");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let tiles = parse("1280x720,320x180*8").unwrap().0;
        assert_eq!(tiles.len(), 9);
        assert_eq!((tiles[0].width, tiles[8].height), (1280, 720 / 4));
        for bad in ["", "1280", "1281x720", "1280x720*x", "16x16*26", "8x8"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
