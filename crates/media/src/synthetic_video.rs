//! A moving test pattern at any size and frame rate, stamped with its frame
//! number and capture time (see [`crate::stamp`]).

use crate::frame::{FramePool, VideoFrame};
use crate::stamp::{self, Stamp};

/// Colour bars (Y, U, V), limited range: white, yellow, cyan, green, magenta,
/// red, blue, grey.
const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (126, 128, 128),
];

/// Generates frames; time is passed in, so it runs as fast as its caller.
#[derive(Debug)]
pub struct SyntheticVideo {
    width: u32,
    height: u32,
    frame_number: u32,
    pool: FramePool,
    luma_row: Vec<u8>,
    u_row: Vec<u8>,
    v_row: Vec<u8>,
}

impl SyntheticVideo {
    /// Even, non-zero dimensions.
    pub fn new(width: u32, height: u32, pool: FramePool) -> Self {
        Self {
            width,
            height,
            frame_number: 0,
            pool,
            luma_row: vec![0; width as usize],
            u_row: vec![0; width as usize / 2],
            v_row: vec![0; width as usize / 2],
        }
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The next frame: bars scrolling left, a square bouncing, and the stamp.
    pub fn render(&mut self, captured_at_us: u64) -> VideoFrame {
        let (width, height) = (self.width as usize, self.height as usize);
        let mut frame = self.pool.take(self.width, self.height);
        frame.captured_at_us = captured_at_us;
        let n = self.frame_number as usize;
        let bar_width = (width / BARS.len()).max(2);
        let offset = n * (width / 160).max(1) * 2;
        for (x, px) in self.luma_row.iter_mut().enumerate() {
            *px = BARS[((x + offset) / bar_width) % BARS.len()].0;
        }
        for x in 0..width / 2 {
            let (_, u, v) = BARS[((x * 2 + offset) / bar_width) % BARS.len()];
            self.u_row[x] = u;
            self.v_row[x] = v;
        }
        let (y_plane, u_plane, v_plane) = frame.planes_mut();
        for row in y_plane.chunks_exact_mut(width) {
            row.copy_from_slice(&self.luma_row);
        }
        for (u_line, v_line) in u_plane
            .chunks_exact_mut(width / 2)
            .zip(v_plane.chunks_exact_mut(width / 2))
        {
            u_line.copy_from_slice(&self.u_row);
            v_line.copy_from_slice(&self.v_row);
        }
        // A dark square bouncing diagonally gives the encoder real motion.
        let side = (height / 5).max(2) & !1;
        let band = stamp::band_height(self.height) as usize;
        let travel_x = width - side;
        let travel_y = height.saturating_sub(side + band).max(1);
        let bounce = |pos: usize, travel: usize| {
            let cycle = pos % (2 * travel);
            if cycle < travel { cycle } else { 2 * travel - cycle }
        };
        let left = bounce(n * 6, travel_x) & !1;
        let top = (band + bounce(n * 4, travel_y)) & !1;
        for line in top..top + side {
            y_plane[line * width + left..line * width + left + side].fill(40);
        }
        stamp::write_stamp(
            &mut frame,
            Stamp {
                frame_number: self.frame_number,
                captured_at_us,
            },
        );
        self.frame_number = self.frame_number.wrapping_add(1);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_carry_their_stamp() {
        let mut source = SyntheticVideo::new(640, 360, FramePool::new(4));
        let first = source.render(1_000);
        let second = source.render(34_333);
        assert_ne!(first.y(), second.y(), "the picture moves");
        assert_eq!(stamp::read_stamp(&first).unwrap().frame_number, 0);
        let stamp = stamp::read_stamp(&second).unwrap();
        assert_eq!((stamp.frame_number, stamp.captured_at_us), (1, 34_333));
        assert_eq!(second.captured_at_us, 34_333);
    }

    #[test]
    fn odd_aspect_ratios_work() {
        let mut source = SyntheticVideo::new(160, 120, FramePool::new(1));
        let frame = source.render(5);
        assert_eq!(stamp::read_stamp(&frame).unwrap().captured_at_us, 5);
    }
}
