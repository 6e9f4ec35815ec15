//! The simulator's frame code: a block barcode in the top-left of the luma plane that
//! carries a frame counter and the wall-clock time the frame was drawn.
//!
//! # Layout
//!
//! Three rows of 32 square blocks, starting at pixel (0, 0). Row 0 holds `counter`, row 1
//! holds `sent_ms`, row 2 holds the check word `counter ^ sent_ms ^ 0xA5A5_A5A5`. Each row
//! is written most significant bit first (bit 31 is the leftmost block). A 1 bit is white
//! (luma 235), a 0 bit black (luma 16).
//!
//! # Geometry scales with the picture
//!
//! The block side is `width / 40` as a real number: block `i` spans columns
//! `i * width / 40 .. (i + 1) * width / 40` (integer division of the product), and row `r`
//! spans lines `r * width / 40 .. (r + 1) * width / 40`. The code therefore covers 80 % of
//! the width and `3 * width / 40` lines, and it sits at the same *relative* place at any
//! size: a picture drawn at 1920x1080 and downscaled to 640x360 is read by calling
//! [`read`] with the *scaled* width (640). Only scaling that keeps the aspect ratio is
//! supported, and pictures narrower than 320 px (blocks under 8 px) may not survive lossy
//! coding.
//!
//! [`read`] averages the central half of each block (in both directions) and thresholds
//! at 128, so block edges blurred by scaling, H.264 or JPEG do not matter.

use std::time::{SystemTime, UNIX_EPOCH};

/// Blocks per row: one per bit of a `u32`.
pub const BLOCKS_PER_ROW: u32 = 32;
/// Rows of blocks: counter, sent time, check word.
pub const ROWS: u32 = 3;
/// Rows of the optional PTZ code below the frame code: pan/tilt, zoom, check word.
pub const PTZ_ROWS: u32 = 3;
const PTZ_CHECK_XOR: u32 = 0x5A5A_5A5A;
/// The block side is `width / WIDTH_DIVISOR` pixels.
pub const WIDTH_DIVISOR: u32 = 40;

const BLACK: u8 = 16;
const WHITE: u8 = 235;
const THRESHOLD: u32 = 128;
const CHECK_XOR: u32 = 0xA5A5_A5A5;

/// What one frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameCode {
    /// Frames drawn before this one by the same encoder pipeline (starts at 0).
    pub counter: u32,
    /// Low 32 bits of the Unix time in milliseconds when the frame was drawn
    /// (see [`now_ms32`]); compare with [`latency_ms`], which handles the wrap.
    pub sent_ms: u32,
}

impl FrameCode {
    fn check(&self) -> u32 {
        self.counter ^ self.sent_ms ^ CHECK_XOR
    }
}

/// The simulated head's position, drawn below the frame code when the simulator has PTZ
/// (VISCA units: signed 16-bit pan and tilt, zoom 0..=0x4000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PtzCode {
    pub pan: i16,
    pub tilt: i16,
    pub zoom: u16,
}

impl PtzCode {
    fn words(&self) -> [u32; 3] {
        let pt = (u32::from(self.pan as u16) << 16) | u32::from(self.tilt as u16);
        let z = u32::from(self.zoom);
        [pt, z, pt ^ z ^ PTZ_CHECK_XOR]
    }
}

/// Draws `code` in rows 3..6, below the frame code (same block geometry).
pub fn draw_ptz(luma: &mut [u8], stride: usize, width: u32, height: u32, code: PtzCode) {
    draw_words(luma, stride, width, height, ROWS, &code.words());
}

/// Reads a [`PtzCode`] drawn by [`draw_ptz`]; `None` if absent or damaged.
pub fn read_ptz(luma: &[u8], stride: usize, width: u32, height: u32) -> Option<PtzCode> {
    let w = read_words(luma, stride, width, height, ROWS, PTZ_ROWS)?;
    let code = PtzCode {
        pan: (w[0] >> 16) as u16 as i16,
        tilt: w[0] as u16 as i16,
        zoom: u16::try_from(w[1]).ok()?,
    };
    (code.words()[2] == w[2]).then_some(code)
}

/// Offset in pixels of the `i`-th block edge for a picture `width` pixels wide.
fn edge(i: u32, width: u32) -> usize {
    // u64: no overflow for any u32 width.
    (u64::from(i) * u64::from(width) / u64::from(WIDTH_DIVISOR)) as usize
}

/// Lines the code covers at the top of a picture `width` pixels wide.
pub fn code_height(width: u32) -> u32 {
    edge(ROWS, width) as u32
}

/// Columns the code covers at the left of a picture `width` pixels wide.
pub fn code_width(width: u32) -> u32 {
    edge(BLOCKS_PER_ROW, width) as u32
}

/// Draws `code` into the top-left of an 8-bit luma plane (`stride` bytes per line,
/// `width` x `height` pixels). Lines that are missing from `luma` or beyond `height` are
/// clipped, never written out of bounds.
pub fn draw(luma: &mut [u8], stride: usize, width: u32, height: u32, code: FrameCode) {
    draw_words(
        luma,
        stride,
        width,
        height,
        0,
        &[code.counter, code.sent_ms, code.check()],
    );
}

/// Draws `words`, one row of blocks each, from block row `first_row` down.
fn draw_words(
    luma: &mut [u8],
    stride: usize,
    width: u32,
    height: u32,
    first_row: u32,
    words: &[u32],
) {
    if stride == 0 {
        return;
    }
    let lines = (height as usize).min(luma.len() / stride);
    for (r, &word) in (first_row..).zip(words) {
        let (y0, y1) = (edge(r, width), edge(r + 1, width).min(lines));
        for y in y0..y1 {
            let line = &mut luma[y * stride..(y + 1) * stride];
            for i in 0..BLOCKS_PER_ROW {
                let bit = (word >> (BLOCKS_PER_ROW - 1 - i)) & 1;
                let value = if bit == 1 { WHITE } else { BLACK };
                let (x0, x1) = (edge(i, width), edge(i + 1, width).min(stride));
                if x0 < x1 {
                    line[x0..x1].fill(value);
                }
            }
        }
    }
}

/// Reads the code from an 8-bit luma plane laid out as for [`draw`]. `width` and `height`
/// are the plane's *current* size (after any scaling). Returns `None` when the picture is
/// too small to hold a code (blocks under 2 px or fewer than [`code_height`] lines), when
/// `luma` is shorter than the geometry says, or when the check row does not match.
pub fn read(luma: &[u8], stride: usize, width: u32, height: u32) -> Option<FrameCode> {
    let words = read_words(luma, stride, width, height, 0, ROWS)?;
    let code = FrameCode {
        counter: words[0],
        sent_ms: words[1],
    };
    (code.check() == words[2]).then_some(code)
}

/// Reads `rows` rows of blocks from block row `first_row` down; `None` when the picture
/// cannot hold them.
fn read_words(
    luma: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    first_row: u32,
    rows: u32,
) -> Option<Vec<u32>> {
    if edge(1, width) < 2 || stride < edge(BLOCKS_PER_ROW, width) {
        return None;
    }
    let lines = edge(first_row + rows, width);
    if lines > height as usize || luma.len() < (lines - 1) * stride + edge(BLOCKS_PER_ROW, width) {
        return None;
    }
    let mut words = vec![0u32; rows as usize];
    for (r, word) in (first_row..).zip(words.iter_mut()) {
        let (y0, y1) = central_half(edge(r, width), edge(r + 1, width));
        for i in 0..BLOCKS_PER_ROW {
            let (x0, x1) = central_half(edge(i, width), edge(i + 1, width));
            let mut sum = 0u64;
            for y in y0..y1 {
                let line = &luma[y * stride..];
                sum += line[x0..x1].iter().map(|&v| u64::from(v)).sum::<u64>();
            }
            let count = ((y1 - y0) * (x1 - x0)) as u64;
            let bit = u32::from(sum >= u64::from(THRESHOLD) * count);
            *word = (*word << 1) | bit;
        }
    }
    Some(words)
}

/// The middle half of `start..end` (at least one pixel when `end > start`).
fn central_half(start: usize, end: usize) -> (usize, usize) {
    let quarter = (end - start) / 4;
    let (a, b) = (start + quarter, end - quarter);
    if a < b {
        (a, b)
    } else {
        (start, end)
    }
}

/// Low 32 bits of the current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms32() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u32)
        .unwrap_or(0)
}

/// Milliseconds from when `code` was drawn to `at_ms32` (a [`now_ms32`] value), correct
/// across the 49.7-day wrap of the 32-bit clock.
pub fn latency_ms(code: &FrameCode, at_ms32: u32) -> u32 {
    at_ms32.wrapping_sub(code.sent_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptz_code_round_trips_below_the_frame_code() {
        let (w, h) = (640u32, 360u32);
        let mut luma = vec![128u8; (w * h) as usize];
        let frame = FrameCode {
            counter: 7,
            sent_ms: 123_456,
        };
        let ptz = PtzCode {
            pan: -1200,
            tilt: 300,
            zoom: 0x4000,
        };
        draw(&mut luma, w as usize, w, h, frame);
        assert_eq!(read_ptz(&luma, w as usize, w, h), None);
        draw_ptz(&mut luma, w as usize, w, h, ptz);
        assert_eq!(read(&luma, w as usize, w, h), Some(frame));
        assert_eq!(read_ptz(&luma, w as usize, w, h), Some(ptz));
    }

    /// A mid-grey picture with some texture, like a camera's.
    fn picture(width: u32, height: u32, stride: usize) -> Vec<u8> {
        let mut luma = vec![0u8; stride * height as usize];
        for y in 0..height as usize {
            for x in 0..width as usize {
                luma[y * stride + x] = (100 + (x * 7 + y * 3) % 50) as u8;
            }
        }
        luma
    }

    /// Deterministic xorshift noise of +-`amplitude` added to every pixel.
    fn add_noise(luma: &mut [u8], amplitude: i32) {
        let mut state = 0x1234_5678u32;
        for v in luma.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let delta = (state % (2 * amplitude as u32 + 1)) as i32 - amplitude;
            *v = (i32::from(*v) + delta).clamp(0, 255) as u8;
        }
    }

    /// Area-average downscale by an integer factor (what videoscale does, roughly).
    fn downscale(luma: &[u8], stride: usize, width: u32, height: u32, f: u32) -> Vec<u8> {
        let (w, h, f) = ((width / f) as usize, (height / f) as usize, f as usize);
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in 0..f {
                    for dx in 0..f {
                        sum += u32::from(luma[(y * f + dy) * stride + x * f + dx]);
                    }
                }
                out[y * w + x] = (sum / (f * f) as u32) as u8;
            }
        }
        out
    }

    const CODES: [FrameCode; 4] = [
        FrameCode {
            counter: 0,
            sent_ms: 0,
        },
        FrameCode {
            counter: 1,
            sent_ms: 0xFFFF_FFFF,
        },
        FrameCode {
            counter: 0xDEAD_BEEF,
            sent_ms: 0x1234_5678,
        },
        FrameCode {
            counter: u32::MAX,
            sent_ms: 0x8000_0001,
        },
    ];

    #[test]
    fn round_trip_at_common_sizes() {
        for (width, height, stride) in [(1920, 1080, 1920), (1280, 720, 1280), (640, 360, 704)] {
            for code in CODES {
                let mut luma = picture(width, height, stride);
                draw(&mut luma, stride, width, height, code);
                assert_eq!(read(&luma, stride, width, height), Some(code), "{width}");
            }
        }
    }

    #[test]
    fn odd_widths_round_trip() {
        for width in [321u32, 333, 854, 1023] {
            let (height, stride) = (width / 2, width as usize + 3);
            let code = CODES[2];
            let mut luma = picture(width, height, stride);
            draw(&mut luma, stride, width, height, code);
            assert_eq!(read(&luma, stride, width, height), Some(code), "{width}");
        }
    }

    #[test]
    fn survives_noise() {
        let (width, height) = (1280, 720);
        for code in CODES {
            let mut luma = picture(width, height, width as usize);
            draw(&mut luma, width as usize, width, height, code);
            add_noise(&mut luma, 60);
            assert_eq!(read(&luma, width as usize, width, height), Some(code));
        }
    }

    #[test]
    fn survives_downscale_to_640() {
        let (width, height) = (1920, 1080);
        let code = CODES[2];
        let mut luma = picture(width, height, width as usize);
        draw(&mut luma, width as usize, width, height, code);
        add_noise(&mut luma, 30);
        let small = downscale(&luma, width as usize, width, height, 3);
        assert_eq!(read(&small, 640, 640, 360), Some(code));
    }

    #[test]
    fn no_code_is_none() {
        let (width, height) = (640, 360);
        let luma = picture(width, height, width as usize);
        assert_eq!(read(&luma, width as usize, width, height), None);
        let black = vec![BLACK; (width * height) as usize];
        // All-black reads as counter 0, sent 0, check 0, which does not match the check.
        assert_eq!(read(&black, width as usize, width, height), None);
    }

    #[test]
    fn corrupted_bit_is_rejected() {
        let (width, height) = (640u32, 360u32);
        let stride = width as usize;
        let mut luma = picture(width, height, stride);
        draw(&mut luma, stride, width, height, CODES[2]);
        // Flip the leftmost block of the counter row.
        let side = edge(1, width);
        for y in 0..side {
            for v in &mut luma[y * stride..y * stride + side] {
                *v = 255 - *v;
            }
        }
        assert_eq!(read(&luma, stride, width, height), None);
    }

    #[test]
    fn short_or_tiny_pictures_do_not_panic() {
        let mut luma = vec![0u8; 100];
        draw(&mut luma, 10, 640, 360, CODES[1]);
        assert_eq!(read(&luma, 10, 640, 360), None);
        draw(&mut luma, 10, 10, 10, CODES[1]);
        assert_eq!(read(&luma, 10, 10, 10), None);
        draw(&mut [], 0, 640, 360, CODES[1]);
        assert_eq!(read(&[], 0, 640, 360), None);
        // Picture too short for the three rows.
        let mut wide = vec![0u8; 640 * 20];
        draw(&mut wide, 640, 640, 20, CODES[1]);
        assert_eq!(read(&wide, 640, 640, 20), None);
    }

    #[test]
    fn latency_wraps() {
        let code = FrameCode {
            counter: 0,
            sent_ms: u32::MAX - 4,
        };
        assert_eq!(latency_ms(&code, 5), 10);
        let now = now_ms32();
        let code = FrameCode {
            counter: 0,
            sent_ms: now,
        };
        assert_eq!(latency_ms(&code, now.wrapping_add(42)), 42);
    }
}
