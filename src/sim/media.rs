//! One simulated camera stream: the shared RTSP media factory for a path, its encoder
//! pipeline description, and the pad probe that stamps the frame code into every frame.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::barcode::{self, FrameCode};
use super::scene::{self, Scene};
use super::SimCodec;
use crate::sim::ptz::{PtzSimHandle, SimPtzState};

/// Elements the pipeline needs, checked before the server starts because the factory only
/// parses its launch line when the first client arrives.
pub(crate) fn required_elements(codec: SimCodec, audio: bool) -> Vec<&'static str> {
    let mut v = match codec {
        SimCodec::H264 => vec!["videotestsrc", "capsfilter", "x264enc", "rtph264pay"],
        SimCodec::H265 => vec!["videotestsrc", "capsfilter", "x265enc", "rtph265pay"],
    };
    if audio {
        v.extend([
            "audiotestsrc",
            "audioconvert",
            "audioresample",
            "opusenc",
            "rtpopuspay",
        ]);
    }
    v
}

/// Name of the test source in the launch line; the probe goes on its src pad.
const SOURCE_NAME: &str = "simsrc";

/// What one path streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamFormat {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub codec: SimCodec,
    /// Seconds between keyframes.
    pub gop_secs: u32,
    /// H.264 B-frames between references; more than 0 switches to the High profile.
    pub bframes: u32,
    /// An Opus audio track (`pay1`) beside the video.
    pub audio: bool,
    /// The colour bars scroll (a busy scene, for load figures); otherwise they stand
    /// still and only the frame code, the PTZ target and the scene's object change.
    pub scroll: bool,
}

impl StreamFormat {
    /// H.264 bitrate in kbit/s: about 4 Mbit/s at 1080p30, scaled by pixel rate and
    /// clamped. The scrolling bars compress well, so this is a ceiling, not a target.
    fn bitrate_kbps(&self) -> u64 {
        let pixel_rate = u64::from(self.width) * u64::from(self.height) * u64::from(self.fps);
        (pixel_rate / 15_552).clamp(300, 8_000)
    }

    /// The factory's launch line. Choices, all for low CPU and easy decoding:
    /// - `pattern=smpte`: colour bars, still unless `scroll` (`horizontal-speed=4`);
    ///   scrolling bars cost videotestsrc about a third of what `pattern=ball` does
    ///   (measured at 1080p30: 9 % vs 29 % of a core).
    /// - `key-int-max = fps`: one IDR per second, so a client joining the shared stream
    ///   waits at most a second; `config-interval=-1` sends SPS/PPS with every IDR, so the
    ///   stream decodes from any keyframe.
    /// - `bframes=0`, `tune=zerolatency` (no lookahead), `threads=1`: one frame in, one
    ///   out, and no thread pool competing with the appliance on small boards.
    pub(crate) fn launch_line(&self) -> String {
        let Self {
            width,
            height,
            fps,
            codec,
            gop_secs,
            bframes,
            audio,
            scroll,
        } = *self;
        let speed = if scroll { 4 } else { 0 };
        let gop = fps * gop_secs.max(1);
        let audio = if audio {
            " audiotestsrc is-live=true wave=sine volume=0.1 ! audioconvert ! audioresample \
             ! opusenc ! rtpopuspay name=pay1 pt=97"
        } else {
            ""
        };
        if codec == SimCodec::H265 {
            // x265's zerolatency tune has no B-frames and no lookahead; SPS/PPS/VPS
            // repeated so decoding can start at any keyframe.
            return format!(
                "( videotestsrc name={SOURCE_NAME} is-live=true pattern=smpte horizontal-speed={speed} \
                 ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
                 ! x265enc speed-preset=ultrafast tune=zerolatency key-int-max={gop} \
                   bitrate={bitrate} \
                 ! rtph265pay name=pay0 pt=96 config-interval=-1{audio} )",
                bitrate = self.bitrate_kbps(),
            );
        }
        if bframes > 0 {
            // The interop case: High profile with B-frames (reordered output, as many
            // cameras' main streams send), no zero-latency tune.
            return format!(
                "( videotestsrc name={SOURCE_NAME} is-live=true pattern=smpte horizontal-speed={speed} \
                 ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
                 ! x264enc speed-preset=ultrafast key-int-max={gop} bframes={bframes} \
                   b-adapt=false threads=1 bitrate={bitrate} \
                 ! video/x-h264,profile=high \
                 ! rtph264pay name=pay0 pt=96 config-interval=-1{audio} )",
                bitrate = self.bitrate_kbps(),
            );
        }
        format!(
            "( videotestsrc name={SOURCE_NAME} is-live=true pattern=smpte horizontal-speed={speed} \
             ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
             ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={gop} bframes=0 \
               threads=1 bitrate={bitrate} \
             ! video/x-h264,profile=constrained-baseline \
             ! rtph264pay name=pay0 pt=96 config-interval=-1{audio} )",
            bitrate = self.bitrate_kbps(),
        )
    }
}

/// Builds the shared factory for `path`. When `role` is set, only tokens carrying that
/// media-factory role may see or construct the media (RTSP basic auth).
pub(crate) fn factory(
    path: &str,
    format: StreamFormat,
    role: Option<&str>,
    ptz_view: Option<PtzSimHandle>,
    scene: Scene,
    tcp_only: bool,
) -> rtsp::RTSPMediaFactory {
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(&format.launch_line());
    if tcp_only {
        // RTP interleaved in the RTSP connection only: a UDP SETUP is refused (461).
        factory.set_protocols(rtsp::gst_rtsp::RTSPLowerTrans::TCP);
    }
    // One encoder per path, whatever the number of clients; it is built for the first
    // client and torn down after the last one leaves.
    factory.set_shared(true);
    if let Some(role) = role {
        let permissions = gst::Structure::builder(role)
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
            .build();
        factory.add_role_from_structure(&permissions);
    }
    let path = path.to_owned();
    factory.connect_media_configure(move |_, media| {
        configure_media(&path, format, media, ptz_view.clone(), scene.clone())
    });
    factory
}

/// Runs for each new media (encoder pipeline): installs the frame-code probe and logs the
/// encoder's start and stop.
fn configure_media(
    path: &str,
    format: StreamFormat,
    media: &rtsp::RTSPMedia,
    ptz_view: Option<PtzSimHandle>,
    scene: Scene,
) {
    log::info!(
        "sim {path}: encoder starting, {}x{}@{}",
        format.width,
        format.height,
        format.fps
    );
    let stopped_path = path.to_owned();
    media.connect_unprepared(move |_| log::info!("sim {stopped_path}: encoder stopped"));

    let element = media.element();
    let Some(source) = element
        .downcast_ref::<gst::Bin>()
        .and_then(|bin| bin.by_name(SOURCE_NAME))
    else {
        log::error!("sim {path}: no {SOURCE_NAME} in the media; frames carry no code");
        return;
    };
    let Some(pad) = source.static_pad("src") else {
        log::error!("sim {path}: {SOURCE_NAME} has no src pad; frames carry no code");
        return;
    };
    let info = match gst_video::VideoInfo::builder(
        gst_video::VideoFormat::I420,
        format.width,
        format.height,
    )
    .fps(gst::Fraction::new(format.fps as i32, 1))
    .build()
    {
        Ok(info) => info,
        Err(err) => {
            log::error!("sim {path}: video info: {err}; frames carry no code");
            return;
        }
    };
    let stamper = Stamper {
        path: path.to_owned(),
        info,
        counter: AtomicU32::new(0),
        warned: AtomicBool::new(false),
        copy_logged: AtomicBool::new(false),
        ptz_view,
        scene,
    };
    let stamper = Arc::new(stamper);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
        if let Some(buffer) = probe.buffer_mut() {
            stamper.stamp(buffer);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Draws the frame code into raw frames of one media. The counter restarts at 0 with each
/// new media, i.e. when a client arrives after the path had none.
struct Stamper {
    path: String,
    info: gst_video::VideoInfo,
    counter: AtomicU32,
    /// Set after the first mapping failure, so a broken stream logs once, not per frame.
    warned: AtomicBool,
    /// Set after the first buffer that had to be copied to be drawn on.
    copy_logged: AtomicBool,
    /// The simulated PTZ head, if any: drawn as a moving target and a code, and the
    /// picture hunts for a moment after it stops.
    ptz_view: Option<PtzSimHandle>,
    /// The object that appears on demand.
    scene: Scene,
}

impl Stamper {
    fn stamp(&self, buffer: &mut gst::Buffer) {
        // videotestsrc hands out pooled buffers with one reference, so this should not
        // copy; say so once if it does (a 1080p copy is 3 MB per frame).
        if !buffer.is_writable() && !self.copy_logged.swap(true, Ordering::Relaxed) {
            log::debug!(
                "sim {}: frame buffers are shared; copying them to draw",
                self.path
            );
        }
        let buffer = buffer.make_mut();
        let mut frame = match gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &self.info)
        {
            Ok(frame) => frame,
            Err(err) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "sim {}: cannot map frame: {err}; frames carry no code",
                        self.path
                    );
                }
                return;
            }
        };
        let Some(stride) = frame
            .plane_stride()
            .first()
            .and_then(|&s| usize::try_from(s).ok())
        else {
            return;
        };
        let (width, height) = (frame.width(), frame.height());
        if let Ok(luma) = frame.plane_data_mut(0) {
            let counter = self.counter.fetch_add(1, Ordering::Relaxed);
            let head = self.ptz_view.as_ref().map(PtzSimHandle::state);
            if self.scene.object() {
                scene::draw_object(luma, stride, width, height);
            }
            if let Some(still_for) = head.as_ref().and_then(|s| s.still_for) {
                scene::shift_brightness(luma, scene::hunt_offset(still_for, counter));
            }
            let code = FrameCode {
                counter,
                sent_ms: barcode::now_ms32(),
            };
            barcode::draw(luma, stride, width, height, code);
            if let Some(s) = &head {
                draw_ptz_view(luma, stride, width, height, s);
            }
        }
        neutralise_code_chroma(&mut frame);
    }
}

/// Shows the simulated head's position: a target square that moves against pan and tilt
/// (the scene stays, the camera turns) and grows with zoom, plus the position as a code.
fn draw_ptz_view(luma: &mut [u8], stride: usize, width: u32, height: u32, s: &SimPtzState) {
    use crate::sim::ptz::{PAN_LIMIT, TILT_MAX, TILT_MIN, ZOOM_MAX};
    let (w, h) = (f64::from(width), f64::from(height));
    let zoom = (f64::from(s.zoom) / ZOOM_MAX).clamp(0.0, 1.0);
    let side = (h / 8.0 * (1.0 + 3.0 * zoom)).round();
    // Pan over the full travel moves the target one picture width; tilt one height.
    let cx = w / 2.0 - f64::from(s.pan) / PAN_LIMIT * w / 2.0;
    let tilt_mid = (TILT_MAX + TILT_MIN) / 2.0;
    let cy = h / 2.0 + (f64::from(s.tilt) - tilt_mid) / (TILT_MAX - TILT_MIN) * h;
    let top = f64::from(barcode::code_height(width) * 2);
    let (x0, x1) = ((cx - side / 2.0).max(0.0), (cx + side / 2.0).min(w));
    let (y0, y1) = ((cy - side / 2.0).max(top), (cy + side / 2.0).min(h));
    if x0 < x1 && y0 < y1 {
        for y in y0 as usize..y1 as usize {
            if let Some(line) = luma.get_mut(y * stride + x0 as usize..y * stride + x1 as usize) {
                line.fill(235);
            }
        }
    }
    let clamp16 = |v: i32| v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    barcode::draw_ptz(
        luma,
        stride,
        width,
        height,
        barcode::PtzCode {
            pan: clamp16(s.pan),
            tilt: clamp16(s.tilt),
            zoom: s.zoom.clamp(0, 0xFFFF) as u16,
        },
    );
}

/// Greys the chroma (128) under the code, so it shows black and white rather than tinted
/// by the bars beneath, and survives consumers that go through RGB before reading luma.
fn neutralise_code_chroma(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>) {
    let width = frame.width();
    let (code_w, code_h) = (barcode::code_width(width), barcode::code_height(width));
    for plane in 1..frame.n_planes() {
        let (Some(&stride), Some(&w_sub), Some(&h_sub)) = (
            frame.plane_stride().get(plane as usize),
            frame.format_info().w_sub().get(plane as usize),
            frame.format_info().h_sub().get(plane as usize),
        ) else {
            continue;
        };
        let Ok(stride) = usize::try_from(stride) else {
            continue;
        };
        // Round up so the chroma sample shared with the code's last column/line is grey too.
        let cols = code_w.div_ceil(1 << w_sub) as usize;
        let lines = code_h.div_ceil(1 << h_sub) as usize;
        let Ok(data) = frame.plane_data_mut(plane) else {
            continue;
        };
        for line in data.chunks_mut(stride).take(lines) {
            let end = cols.min(line.len());
            line[..end].fill(128);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_line_carries_format() {
        let line = StreamFormat {
            width: 1920,
            height: 1080,
            fps: 30,
            codec: SimCodec::H264,
            gop_secs: 1,
            bframes: 0,
            audio: false,
            scroll: false,
        }
        .launch_line();
        assert!(line.contains("horizontal-speed=0 "), "{line}");
        assert!(
            line.contains("width=1920,height=1080,framerate=30/1"),
            "{line}"
        );
        assert!(line.contains("key-int-max=30"), "{line}");
        assert!(line.contains("bitrate=4000"), "{line}");
        assert!(line.contains("name=pay0"), "{line}");
        assert!(line.contains("config-interval=-1"), "{line}");
        assert!(!line.contains("pay1"), "{line}");
        let line = StreamFormat {
            width: 640,
            height: 360,
            fps: 25,
            codec: SimCodec::H264,
            gop_secs: 4,
            bframes: 2,
            audio: true,
            scroll: true,
        }
        .launch_line();
        assert!(line.contains("horizontal-speed=4 "), "{line}");
        assert!(line.contains("key-int-max=100"), "{line}");
        assert!(
            line.contains("bframes=2") && line.contains("profile=high"),
            "{line}"
        );
        assert!(line.contains("rtpopuspay name=pay1"), "{line}");
    }

    #[test]
    fn bitrate_is_clamped() {
        let tiny = StreamFormat {
            width: 64,
            height: 64,
            fps: 1,
            codec: SimCodec::H264,
            gop_secs: 1,
            bframes: 0,
            audio: false,
            scroll: false,
        };
        assert_eq!(tiny.bitrate_kbps(), 300);
        let huge = StreamFormat {
            width: 7680,
            height: 4320,
            fps: 60,
            codec: SimCodec::H264,
            gop_secs: 1,
            bframes: 0,
            audio: false,
            scroll: false,
        };
        assert_eq!(huge.bitrate_kbps(), 8_000);
    }
}
