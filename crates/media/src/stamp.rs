//! A frame number and capture time drawn into the picture itself, so any
//! receiver — after scaling, encoding, the network and decoding — can tell
//! which frame it got and how old it is.
//!
//! The stamp is a grid of 32 × 3 blocks across the top eighth of the frame,
//! each block black or white (one bit). Block sizes are fractions of the frame
//! (1/32 of the width, 1/24 of the height), so the grid survives simulcast
//! downscaling: at 320×180 a block is 10×7.5 pixels, large enough for the
//! encoder to keep its average even at the lowest layer's bitrate. Readers
//! average the middle of each block and compare with mid-grey.
//!
//! Layout (96 bits, most significant first): 8-bit marker, 32-bit frame
//! number, 48-bit capture time (microseconds since the Unix epoch, modulo
//! 2^48 ≈ 8.9 years), 8-bit CRC over the rest.

use crc::{CRC_8_SMBUS, Crc};

use crate::frame::VideoFrame;

const COLUMNS: u32 = 32;
const ROWS: u32 = 3;
/// Block height as a fraction of the frame height.
const ROW_DIVISOR: u32 = 24;
const MARKER: u8 = 0xA7;
const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const LUMA_ONE: u8 = 235;
const LUMA_ZERO: u8 = 16;
const CRC8: Crc<u8> = Crc::<u8>::new(&CRC_8_SMBUS);

/// What a stamp carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub frame_number: u32,
    /// Capture time in microseconds since the Unix epoch, modulo 2^48.
    pub captured_at_us: u64,
}

impl Stamp {
    /// Microseconds from capture to `now_us`, allowing for the 48-bit wrap;
    /// negative when the sender's clock runs ahead of ours.
    pub fn age_us(&self, now_us: u64) -> i64 {
        // Sign-extend the 48-bit difference.
        (((now_us.wrapping_sub(self.captured_at_us) & TIME_MASK) << 16) as i64) >> 16
    }
}

/// Height in pixels of the band the stamp occupies at the top of a frame.
pub fn band_height(frame_height: u32) -> u32 {
    (frame_height * ROWS).div_ceil(ROW_DIVISOR)
}

/// Draws `stamp` into the top band of `frame`, in luma, with neutral chroma.
pub fn write_stamp(frame: &mut VideoFrame, stamp: Stamp) {
    let bits = encode(stamp);
    let (width, height) = (frame.width(), frame.height());
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    for row in 0..ROWS {
        let (top, bottom) = (row * height / ROW_DIVISOR, (row + 1) * height / ROW_DIVISOR);
        for line in top..bottom {
            let line_start = (line * width) as usize;
            for column in 0..COLUMNS {
                let (left, right) = (column * width / COLUMNS, (column + 1) * width / COLUMNS);
                let bit = (bits >> (95 - (row * COLUMNS + column))) & 1 == 1;
                let value = if bit { LUMA_ONE } else { LUMA_ZERO };
                y_plane[line_start + left as usize..line_start + right as usize].fill(value);
            }
        }
    }
    let chroma_width = (width / 2) as usize;
    let chroma_rows = band_height(height).div_ceil(2) as usize;
    let band = chroma_rows * chroma_width;
    u_plane[..band].fill(128);
    v_plane[..band].fill(128);
}

/// Reads the stamp back, or `None` when the band does not hold a valid one.
pub fn read_stamp(frame: &VideoFrame) -> Option<Stamp> {
    let (width, height) = (frame.width(), frame.height());
    let y_plane = frame.y();
    let mut bits: u128 = 0;
    for row in 0..ROWS {
        let (top, bottom) = (row * height / ROW_DIVISOR, (row + 1) * height / ROW_DIVISOR);
        // Sample the middle half of each block: edges blur when scaled.
        let (inner_top, inner_bottom) = inner(top, bottom);
        for column in 0..COLUMNS {
            let (left, right) = inner(column * width / COLUMNS, (column + 1) * width / COLUMNS);
            let mut sum = 0u32;
            let mut count = 0u32;
            for line in inner_top..inner_bottom {
                let start = (line * width + left) as usize;
                let end = (line * width + right) as usize;
                sum += y_plane[start..end]
                    .iter()
                    .map(|&v| u32::from(v))
                    .sum::<u32>();
                count += right - left;
            }
            let one = count > 0 && sum / count > u32::from(LUMA_ONE + LUMA_ZERO) / 2;
            bits = (bits << 1) | u128::from(one);
        }
    }
    decode(bits)
}

fn inner(start: u32, end: u32) -> (u32, u32) {
    let quarter = (end - start) / 4;
    (start + quarter, (end - quarter).max(start + quarter + 1))
}

fn encode(stamp: Stamp) -> u128 {
    let mut payload = [0u8; 11];
    payload[0] = MARKER;
    payload[1..5].copy_from_slice(&stamp.frame_number.to_be_bytes());
    payload[5..11].copy_from_slice(&(stamp.captured_at_us & TIME_MASK).to_be_bytes()[2..]);
    let mut bits: u128 = 0;
    for byte in payload
        .iter()
        .chain(std::iter::once(&CRC8.checksum(&payload)))
    {
        bits = (bits << 8) | u128::from(*byte);
    }
    bits
}

fn decode(bits: u128) -> Option<Stamp> {
    let bytes = bits.to_be_bytes();
    // 96 bits: the low 12 bytes of the u128.
    let (payload, crc) = (&bytes[4..15], bytes[15]);
    if payload[0] != MARKER || CRC8.checksum(payload) != crc {
        return None;
    }
    let frame_number = u32::from_be_bytes(payload[1..5].try_into().ok()?);
    let mut time = [0u8; 8];
    time[2..].copy_from_slice(&payload[5..11]);
    Some(Stamp {
        frame_number,
        captured_at_us: u64::from_be_bytes(time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_every_simulcast_size() {
        for (w, h) in [(1280, 720), (640, 360), (320, 180), (640, 480), (160, 90)] {
            let mut frame = VideoFrame::new(w, h);
            let stamp = Stamp {
                frame_number: 0xDEAD_BEEF,
                captured_at_us: 1_795_311_587_657_123 % (TIME_MASK + 1),
            };
            write_stamp(&mut frame, stamp);
            assert_eq!(read_stamp(&frame), Some(stamp), "{w}x{h}");
        }
    }

    #[test]
    fn a_frame_without_a_stamp_reads_as_none() {
        let frame = VideoFrame::new(320, 180);
        assert_eq!(read_stamp(&frame), None);
    }

    #[test]
    fn a_damaged_stamp_is_rejected_by_its_crc() {
        let mut frame = VideoFrame::new(320, 180);
        write_stamp(
            &mut frame,
            Stamp {
                frame_number: 7,
                captured_at_us: 99,
            },
        );
        // Flip the block holding one bit of the frame number.
        let (y, _, _) = frame.planes_mut();
        let block_left = 20 * 320 / 32;
        for line in 0..7 {
            for x in block_left..block_left + 10 {
                y[line * 320 + x as usize] = 255 - y[line * 320 + x as usize];
            }
        }
        assert_eq!(read_stamp(&frame), None);
    }

    #[test]
    fn age_allows_for_the_wrap() {
        let stamp = Stamp {
            frame_number: 0,
            captured_at_us: TIME_MASK - 10,
        };
        assert_eq!(stamp.age_us((1 << TIME_BITS) + 5), 16);
        let now = 1_795_311_587_657_123u64;
        let fresh = Stamp {
            frame_number: 0,
            captured_at_us: (now - 40_000) & TIME_MASK,
        };
        assert_eq!(fresh.age_us(now), 40_000);
        let ahead = Stamp {
            frame_number: 0,
            captured_at_us: (now + 3_000) & TIME_MASK,
        };
        assert_eq!(ahead.age_us(now), -3_000, "a sender clock slightly ahead");
    }
}
