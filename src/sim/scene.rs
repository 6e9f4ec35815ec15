//! What the simulated camera looks at, beyond the test pattern: an object that appears
//! and goes on demand (so change detection has something to find), and the moment of
//! autofocus / exposure hunting a real PTZ camera shows right after its head stops (so a
//! settled snapshot has something to wait out).
//!
//! The background is still by default (`SimConfig::scroll` makes the bars scroll, for
//! load figures comparable with a busy scene); only the frame code changes every frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the picture hunts after the head stops: its brightness swings by up to
/// [`HUNT_SWING`] grey levels, alternating every frame and fading out over this time.
pub const HUNT: Duration = Duration::from_millis(600);
/// The largest brightness swing of the hunt (grey levels, at the moment of the stop).
pub const HUNT_SWING: i32 = 48;

/// The object's place, as fractions of the picture: (left, top, width, height). A box
/// of 12 % of the picture, clear of the codes and of the PTZ target's home.
pub const OBJECT: (f64, f64, f64, f64) = (0.58, 0.5, 0.3, 0.4);

/// A handle on the scene: cheap to clone, shared with every stream of a simulator.
#[derive(Clone, Default)]
pub struct Scene {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    object: AtomicBool,
    changes: AtomicU64,
}

impl std::fmt::Debug for Scene {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scene")
            .field("object", &self.object())
            .finish()
    }
}

/// Two handles are equal when they show the same scene.
impl PartialEq for Scene {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Scene {}

impl Scene {
    /// Whether the object is in the picture.
    pub fn object(&self) -> bool {
        self.inner.object.load(Ordering::SeqCst)
    }

    /// Puts the object in the picture (`true`) or takes it out, from the next frame on.
    pub fn set_object(&self, on: bool) {
        if self.inner.object.swap(on, Ordering::SeqCst) != on {
            self.inner.changes.fetch_add(1, Ordering::SeqCst);
            log::info!("sim scene: object {}", if on { "appears" } else { "goes" });
        }
    }

    /// Toggles the object; returns whether it is now in the picture.
    pub fn toggle_object(&self) -> bool {
        let on = !self.object();
        self.set_object(on);
        on
    }

    /// How many times the scene changed so far.
    pub fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::SeqCst)
    }
}

/// Draws the object into an 8-bit luma plane: the box's grey levels inverted, so it
/// stands out on every bar of the pattern (a bright bar turns dark and a dark one bright).
pub(crate) fn draw_object(luma: &mut [u8], stride: usize, width: u32, height: u32) {
    let (l, t, w, h) = OBJECT;
    let px = |f: f64, n: u32| ((f * f64::from(n)) as usize).min(n as usize);
    let (x0, x1) = (px(l, width), px(l + w, width));
    let (y0, y1) = (px(t, height), px(t + h, height));
    for y in y0..y1 {
        if let Some(line) = luma.get_mut(y * stride + x0..y * stride + x1) {
            line.iter_mut().for_each(|v| *v = 255 - *v);
        }
    }
}

/// The hunt's brightness offset for a frame: `still_for` after the head stopped,
/// alternating in sign with `frame` (0 once the hunt is over).
pub(crate) fn hunt_offset(still_for: Duration, frame: u32) -> i32 {
    if still_for >= HUNT {
        return 0;
    }
    let left = 1.0 - still_for.as_secs_f64() / HUNT.as_secs_f64();
    let swing = (f64::from(HUNT_SWING) * left).round() as i32;
    if frame % 2 == 0 {
        swing
    } else {
        -swing
    }
}

/// Shifts every luma value by `offset`, clamped to video range (16..235).
pub(crate) fn shift_brightness(luma: &mut [u8], offset: i32) {
    if offset == 0 {
        return;
    }
    for v in luma.iter_mut() {
        *v = (i32::from(*v) + offset).clamp(16, 235) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunt_swings_then_fades_out() {
        assert_eq!(hunt_offset(Duration::ZERO, 0), HUNT_SWING);
        assert_eq!(hunt_offset(Duration::ZERO, 1), -HUNT_SWING);
        let half = hunt_offset(HUNT / 2, 2);
        assert!(
            (HUNT_SWING / 2 - 1..=HUNT_SWING / 2 + 1).contains(&half),
            "{half}"
        );
        assert_eq!(hunt_offset(HUNT, 0), 0);
        assert_eq!(hunt_offset(Duration::from_secs(60), 1), 0);
    }

    #[test]
    fn object_inverts_its_box_only() {
        let (w, h) = (100u32, 50u32);
        let mut luma = vec![40u8; (w * h) as usize];
        draw_object(&mut luma, w as usize, w, h);
        assert_eq!(luma[0], 40);
        assert_eq!(luma[(30 * w + 70) as usize], 215);
        let changed = luma.iter().filter(|&&v| v != 40).count();
        assert_eq!(changed, 30 * 20, "0.3 x 0.4 of the picture");
    }

    #[test]
    fn toggling_counts_changes() {
        let s = Scene::default();
        assert!(!s.object());
        assert!(s.toggle_object());
        s.set_object(true);
        assert!(!s.toggle_object());
        assert_eq!(s.changes(), 2);
        assert_eq!(s.clone(), s);
    }
}
