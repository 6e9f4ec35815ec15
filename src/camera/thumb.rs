//! `Thumb`: a small grey thumbnail of a decoded picture, and how much two of them differ.
//! The one measure of "the picture changed" that settled snapshots (has the picture
//! stopped changing?) and change events (did the scene change?) share.
//!
//! Cost: the thumbnail averages a sparse grid of luma samples (at most [`SAMPLES`] per
//! cell), so a 4K picture costs about as much as a 720p one: a few tens of microseconds,
//! no allocation beyond the thumbnail itself, no GStreamer element.

use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::frame::Frame;

/// Thumbnail width in cells; the height follows the picture's aspect (36 for 16:9).
pub const WIDTH: usize = 64;
/// Luma samples averaged per cell and axis (so up to `SAMPLES²` per cell).
const SAMPLES: usize = 4;
/// A cell counts as changed when its grey level moved by more than this (0..255): above
/// sensor noise and compression flicker, below any real object or light change.
pub const CELL_THRESHOLD: u8 = 24;

/// A grey thumbnail: `w`×`h` cells, each the mean luma of its part of the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumb {
    pub w: usize,
    pub h: usize,
    pub cells: Vec<u8>,
}

impl Thumb {
    /// The thumbnail of a decoded picture (I420, NV12 or YV12: luma is plane 0), or
    /// `None` if its buffer cannot be read.
    pub fn of(frame: &Frame) -> Option<Thumb> {
        let vf =
            gst_video::VideoFrameRef::from_buffer_ref_readable(&frame.buffer, &frame.info).ok()?;
        let stride = usize::try_from(*vf.plane_stride().first()?).ok()?;
        let luma = vf.plane_data(0).ok()?;
        Some(Thumb::from_luma(
            luma,
            stride,
            frame.width() as usize,
            frame.height() as usize,
        ))
    }

    /// The thumbnail of an 8-bit luma plane (`stride` bytes per line). A plane shorter
    /// than `stride * height` reads as black where it is missing (never panics).
    pub fn from_luma(luma: &[u8], stride: usize, width: usize, height: usize) -> Thumb {
        let w = WIDTH.min(width.max(1));
        let h = ((height * w + width / 2) / width.max(1)).clamp(1, height.max(1));
        let mut cells = Vec::with_capacity(w * h);
        for cy in 0..h {
            let (y0, y1) = (
                cy * height / h,
                ((cy + 1) * height / h).max(cy * height / h + 1),
            );
            for cx in 0..w {
                let (x0, x1) = (
                    cx * width / w,
                    ((cx + 1) * width / w).max(cx * width / w + 1),
                );
                let (mut sum, mut n) = (0u32, 0u32);
                for sy in 0..SAMPLES {
                    let y = y0 + (y1 - y0) * (2 * sy + 1) / (2 * SAMPLES);
                    for sx in 0..SAMPLES {
                        let x = x0 + (x1 - x0) * (2 * sx + 1) / (2 * SAMPLES);
                        sum += u32::from(luma.get(y * stride + x).copied().unwrap_or(0));
                        n += 1;
                    }
                }
                cells.push((sum / n.max(1)) as u8);
            }
        }
        Thumb { w, h, cells }
    }

    /// How different `other` is: the fraction (0..1) of cells whose grey level moved by
    /// more than [`CELL_THRESHOLD`]. Thumbnails of different shapes (the picture size
    /// changed) differ completely: 1.
    pub fn changed(&self, other: &Thumb) -> f32 {
        if self.w != other.w || self.h != other.h || self.cells.is_empty() {
            return 1.0;
        }
        let moved = self
            .cells
            .iter()
            .zip(&other.cells)
            .filter(|(a, b)| a.abs_diff(**b) > CELL_THRESHOLD)
            .count();
        moved as f32 / self.cells.len() as f32
    }

    /// The grey-level difference (0..255) that a `share` (0..1) of the cells stay within:
    /// with `share` 0.75, most of the picture moved by at most this much. A small part
    /// changing (an on-screen clock, the simulator's frame code, someone walking by)
    /// leaves it low; the whole picture moving, blurring or changing brightness (a head
    /// still moving, focus or exposure hunting) raises it. Different shapes: 255.
    pub fn spread(&self, other: &Thumb, share: f32) -> f32 {
        if self.w != other.w || self.h != other.h || self.cells.is_empty() {
            return 255.0;
        }
        let mut histogram = [0u32; 256];
        for (a, b) in self.cells.iter().zip(&other.cells) {
            histogram[usize::from(a.abs_diff(*b))] += 1;
        }
        let want = (share.clamp(0.0, 1.0) * self.cells.len() as f32).ceil() as u32;
        let mut seen = 0;
        for (diff, n) in histogram.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return diff as f32;
            }
        }
        255.0
    }

    /// The mean absolute difference of grey levels (0..255): small movements (a blurred
    /// or hunting picture) that [`Thumb::changed`] does not count show here. Different
    /// shapes: 255.
    pub fn distance(&self, other: &Thumb) -> f32 {
        if self.w != other.w || self.h != other.h || self.cells.is_empty() {
            return 255.0;
        }
        let sum: u64 = self
            .cells
            .iter()
            .zip(&other.cells)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        sum as f32 / self.cells.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(
        width: usize,
        height: usize,
        stride: usize,
        f: impl Fn(usize, usize) -> u8,
    ) -> Vec<u8> {
        let mut v = vec![0u8; stride * height];
        for y in 0..height {
            for x in 0..width {
                v[y * stride + x] = f(x, y);
            }
        }
        v
    }

    #[test]
    fn shape_follows_aspect() {
        let p = plane(1920, 1080, 1920, |_, _| 100);
        let t = Thumb::from_luma(&p, 1920, 1920, 1080);
        assert_eq!((t.w, t.h), (64, 36));
        assert!(t.cells.iter().all(|&c| c == 100));
        let p = plane(40, 30, 48, |_, _| 7);
        let t = Thumb::from_luma(&p, 48, 40, 30);
        assert_eq!((t.w, t.h), (40, 30));
    }

    #[test]
    fn an_object_changes_its_share_of_cells() {
        let (w, h) = (1280, 720);
        let still = plane(w, h, w, |x, _| (x / 10) as u8);
        // A bright box over a quarter of the picture (half width, half height).
        let object = plane(w, h, w, |x, y| {
            if x >= 640 && y >= 360 {
                235
            } else {
                (x / 10) as u8
            }
        });
        let a = Thumb::from_luma(&still, w, w, h);
        let b = Thumb::from_luma(&object, w, w, h);
        let c = b.changed(&a);
        assert!(
            (0.2..=0.3).contains(&c),
            "a quarter of the cells changed: {c}"
        );
        assert_eq!(a.changed(&a), 0.0);
        assert_eq!(a.distance(&a), 0.0);
        // Brightness moved a little everywhere: no cell "changed", but the distance shows.
        let dimmer = plane(w, h, w, |x, _| (x / 10) as u8 + 10);
        let d = Thumb::from_luma(&dimmer, w, w, h);
        assert_eq!(d.changed(&a), 0.0);
        assert!((9.0..=11.0).contains(&d.distance(&a)), "{}", d.distance(&a));
    }

    #[test]
    fn spread_ignores_a_small_changing_part() {
        let (w, h) = (640, 360);
        let base = plane(w, h, w, |x, _| (x / 3) as u8);
        // A code strip over the top 13 % changes completely; the rest stays.
        let strip = plane(w, h, w, |x, y| {
            if y < 48 {
                255 - (x / 3) as u8
            } else {
                (x / 3) as u8
            }
        });
        let (a, b) = (
            Thumb::from_luma(&base, w, w, h),
            Thumb::from_luma(&strip, w, w, h),
        );
        assert_eq!(a.spread(&b, 0.75), 0.0);
        assert!(
            a.distance(&b) > 5.0,
            "the mean sees the strip: {}",
            a.distance(&b)
        );
        // The whole picture 20 levels brighter: the spread sees it.
        let bright = plane(w, h, w, |x, _| (x / 3) as u8 + 20);
        let c = Thumb::from_luma(&bright, w, w, h);
        assert_eq!(a.spread(&c, 0.75), 20.0);
        assert_eq!(a.spread(&a, 1.0), 0.0);
    }

    #[test]
    fn short_planes_and_tiny_pictures_do_not_panic() {
        let t = Thumb::from_luma(&[1, 2, 3], 100, 100, 100);
        assert_eq!(t.w, 64);
        let t = Thumb::from_luma(&[], 0, 0, 0);
        assert_eq!((t.w, t.h), (1, 1));
        let other = Thumb::from_luma(&[9; 4], 2, 2, 2);
        assert_eq!(t.changed(&other), 1.0);
        assert_eq!(t.distance(&other), 255.0);
        assert_eq!(t.spread(&other, 0.5), 255.0);
    }
}
