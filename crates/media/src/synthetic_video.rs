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

/// Amplitude of the per-frame sensor noise added to luma, in code values.
const SENSOR_NOISE: i8 = 2;

/// Generates frames; time is passed in, so it runs as fast as its caller.
///
/// The picture is built to cost an encoder what a webcam does: a detailed
/// texture scrolling under colour bars, a square bouncing over it, and fresh
/// sensor noise every frame. (Flat bars alone encode in a few bytes and say
/// nothing about quality at a given bitrate.)
#[derive(Debug)]
pub struct SyntheticVideo {
    width: u32,
    height: u32,
    frame_number: u32,
    pool: FramePool,
    /// Luma texture twice the frame width, scrolled horizontally.
    texture: Vec<u8>,
    /// Zero-mean noise, longer than a frame, read from a varying offset.
    noise: Vec<i8>,
    u_row: Vec<u8>,
    v_row: Vec<u8>,
}

/// Small deterministic generator for the texture and noise (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl SyntheticVideo {
    /// Even, non-zero dimensions.
    pub fn new(width: u32, height: u32, pool: FramePool) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        // Value noise: random levels on a coarse grid, interpolated, plus fine grain.
        let cell = (w / 80).max(4);
        let grid_w = 2 * w / cell + 2;
        let grid_h = h / cell + 2;
        let grid: Vec<f32> = (0..grid_w * grid_h)
            .map(|_| 60.0 + (rng.next() % 120) as f32)
            .collect();
        let mut texture = vec![0u8; 2 * w * h];
        for y in 0..h {
            let (gy, fy) = (y / cell, (y % cell) as f32 / cell as f32);
            for x in 0..2 * w {
                let (gx, fx) = (x / cell, (x % cell) as f32 / cell as f32);
                let at = |gx: usize, gy: usize| grid[gy * grid_w + gx];
                let top = at(gx, gy) * (1.0 - fx) + at(gx + 1, gy) * fx;
                let bottom = at(gx, gy + 1) * (1.0 - fx) + at(gx + 1, gy + 1) * fx;
                let grain = (rng.next() % 11) as f32 - 5.0;
                texture[y * 2 * w + x] =
                    (top * (1.0 - fy) + bottom * fy + grain).clamp(16.0, 235.0) as u8;
            }
        }
        let span = i64::from(SENSOR_NOISE) * 2 + 1;
        let noise = (0..w * h + 8192)
            .map(|_| (rng.next() % span as u64) as i8 - SENSOR_NOISE)
            .collect();
        Self {
            width,
            height,
            frame_number: 0,
            pool,
            texture,
            noise,
            u_row: vec![0; w / 2],
            v_row: vec![0; w / 2],
        }
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The next frame, stamped with its number and `captured_at_us`.
    pub fn render(&mut self, captured_at_us: u64) -> VideoFrame {
        let (width, height) = (self.width as usize, self.height as usize);
        let mut frame = self.pool.take(self.width, self.height);
        frame.captured_at_us = captured_at_us;
        let n = self.frame_number as usize;
        let scroll = (n * (width / 320).max(1)) % width;
        let bar_width = (width / BARS.len()).max(2);
        for x in 0..width / 2 {
            let (_, u, v) = BARS[((x * 2 + scroll) / bar_width) % BARS.len()];
            self.u_row[x] = u;
            self.v_row[x] = v;
        }
        let noise_start = (n * 7919) % 8192;
        let (y_plane, u_plane, v_plane) = frame.planes_mut();
        for (row, line) in y_plane.chunks_exact_mut(width).enumerate() {
            let texture_row = &self.texture[row * 2 * width + scroll..][..width];
            let noise_row = &self.noise[noise_start + row * width..][..width];
            for ((px, &base), &grain) in line.iter_mut().zip(texture_row).zip(noise_row) {
                *px = base.saturating_add_signed(grain);
            }
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
            if cycle < travel {
                cycle
            } else {
                2 * travel - cycle
            }
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
    fn small_four_by_three_frames_work() {
        let mut source = SyntheticVideo::new(160, 120, FramePool::new(1));
        let frame = source.render(5);
        assert_eq!(stamp::read_stamp(&frame).unwrap().captured_at_us, 5);
    }
}
