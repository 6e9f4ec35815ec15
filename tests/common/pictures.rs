//! JPEG pictures and the simulator's frame code drawn in them (latency, duplicates).

use std::time::{SystemTime, UNIX_EPOCH};

use ptz_edge::sim::barcode::{self, FrameCode};

/// Decodes a JPEG to (width, height, luma plane with stride = width).
#[track_caller]
pub fn decode_jpeg(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    assert!(
        bytes.starts_with(&[0xFF, 0xD8]),
        "not a JPEG: starts with {:02X?}",
        &bytes[..bytes.len().min(4)]
    );
    let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
    let pixels = dec
        .decode()
        .unwrap_or_else(|e| panic!("JPEG of {} bytes does not decode: {e}", bytes.len()));
    let info = dec.info().expect("info after decode");
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let luma = to_luma(&pixels, info.pixel_format, pixels.len())
        .unwrap_or_else(|e| panic!("JPEG of {} bytes: {e}", bytes.len()));
    assert_eq!(luma.len(), (w * h) as usize, "luma plane size");
    (w, h, luma)
}

/// Decodes a JPEG and reads the simulator's frame code; panics if there is none.
/// Returns the JPEG's full size. See [`read_code`].
#[track_caller]
pub fn jpeg_code(bytes: &[u8]) -> (u32, u32, FrameCode) {
    match read_code(bytes) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// The JPEG's full size and the simulator's frame code in it. The code is read from a
/// picture decoded at 1/2, 1/4 or 1/8 scale (DCT scaling, aspect kept, at least 320 px
/// wide; the code's geometry scales with the width), and only the lines the code covers
/// are turned into luma: an unoptimised full decode costs over 100 ms at 640x360, too
/// slow to check every frame of a stream.
pub fn read_code(jpeg: &[u8]) -> Result<(u32, u32, FrameCode), String> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(format!(
            "not a JPEG: starts with {:02X?}",
            &jpeg[..jpeg.len().min(4)]
        ));
    }
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.read_info()
        .map_err(|e| format!("JPEG of {} bytes has no readable header: {e}", jpeg.len()))?;
    let info = d.info().ok_or("JPEG without info")?;
    let (full_w, full_h) = (u32::from(info.width), u32::from(info.height));
    let want_w = (info.width / 8).max(320).min(info.width);
    let want_h = (full_h * u32::from(want_w) / full_w.max(1)) as u16;
    let (w, h) = d
        .scale(want_w, want_h)
        .map_err(|e| format!("cannot scale a {full_w}x{full_h} JPEG: {e}"))?;
    // jpeg-decoder 0.3's ColorTransform::None panics on padded lines: take its RGB and
    // compute the luma of the lines the code covers.
    let pixels = d
        .decode()
        .map_err(|e| format!("JPEG of {} bytes does not decode: {e}", jpeg.len()))?;
    let (w, h) = (u32::from(w), u32::from(h));
    let lines = barcode::code_height(w).min(h);
    let luma = to_luma(&pixels, info.pixel_format, (lines * w) as usize)?;
    barcode::read(&luma, w as usize, w, lines)
        .map(|code| (full_w, full_h, code))
        .ok_or_else(|| {
            format!("no frame code readable in a {full_w}x{full_h} JPEG (read at {w}x{h})")
        })
}

/// BT.601 luma of the first `n` pixels.
fn to_luma(pixels: &[u8], format: jpeg_decoder::PixelFormat, n: usize) -> Result<Vec<u8>, String> {
    match format {
        jpeg_decoder::PixelFormat::L8 => Ok(pixels[..n.min(pixels.len())].to_vec()),
        jpeg_decoder::PixelFormat::RGB24 => Ok(pixels
            .chunks_exact(3)
            .take(n)
            .map(|p| {
                let y = 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]);
                (y / 1000) as u8
            })
            .collect()),
        other => Err(format!("unexpected JPEG pixel format {other:?}")),
    }
}

/// Milliseconds from when the simulator drew `code` until now.
pub fn code_age_ms(code: &FrameCode) -> u32 {
    barcode::latency_ms(code, barcode::now_ms32())
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
