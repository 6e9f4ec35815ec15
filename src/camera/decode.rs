//! The decoder of one camera session: `appsrc` of access units → decoder → appsink of
//! raw pictures, and the choice of decoder element (hardware where the device has one;
//! in software the lighter of OpenH264 and libav for the stream and the load, see
//! [`candidates_for`] and docs/memory.md).
//!
//! It runs only while someone watches (see `DecodeMode`), fed first with the access units
//! since the last keyframe so a picture comes within a few frames' decode time.
//!
//! Its input is bounded in frames and in time (see [`Decoder::push`]): when decoding falls
//! behind the camera, the access units up to the next keyframe are dropped and counted
//! instead of queued, so a viewer's latency stays bounded and memory flat under overload.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use parking_lot::Mutex;

use super::pipeline::{AccessUnit, DecoderPipeline, PipelineError, RawSink};
use super::Codec;
use crate::clock::unix_now;

/// The most access units that may wait for the decoder (about 1 s of a 30 fps camera).
pub const MAX_QUEUED_UNITS: u64 = 30;
/// The most camera time that may wait for the decoder, by the units' arrival times.
pub const MAX_QUEUED_TIME: Duration = Duration::from_secs(1);
/// The most units replayed at the start that are fed whatever the bound (the camera keeps
/// at most this many since the last keyframe for a fast first picture).
pub const MAX_REPLAYED_UNITS: u64 = 600;

/// A decoded picture, handed to the `on_picture` callback on the decoder's streaming
/// thread. `buffer` holds raw video (I420, NV12 or YV12) as described by `info`.
pub struct Picture {
    /// Unix seconds at which the camera's packet for this picture arrived.
    pub captured: f64,
    pub info: gst_video::VideoInfo,
    pub buffer: gst::Buffer,
}

/// Where decoded pictures go. Called on the decoder's streaming thread: keep it short.
pub type PictureSink = Arc<dyn Fn(Picture) + Send + Sync>;

/// How the decoder keeps up (for status: `droppedFrames`, `lagging`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecoderStats {
    /// Access units not fed to the decoder since it started: dropped because decoding was
    /// behind, with the units after them up to the next keyframe (which need them), and
    /// any delta units before the first keyframe.
    pub dropped: u64,
    /// Decoding is behind now: skipping to the next keyframe, or more than
    /// [`MAX_QUEUED_TIME`] of the camera's stream waits for the decoder.
    pub lagging: bool,
    /// Access units waiting for the decoder now.
    pub queued: u64,
}

/// Decoder elements that can take `codec`, best first: the override (if any), then by
/// rank. Elements of rank NONE are only used when named by the override.
pub fn candidates(codec: Codec, forced: Option<&str>) -> Vec<String> {
    let caps = gst::Caps::builder(codec.media_type()).build();
    let mut factories: Vec<gst::ElementFactory> = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_VIDEO,
        gst::Rank::MARGINAL,
    )
    .into_iter()
    .filter(|f| f.can_sink_any_caps(&caps))
    .collect();
    factories.sort_by_key(|f| std::cmp::Reverse(f.rank()));
    let mut names: Vec<String> = factories.iter().map(|f| f.name().to_string()).collect();
    if let Some(forced) = forced {
        names.retain(|n| n != forced);
        names.insert(0, forced.to_owned());
    }
    names
}

/// The OpenH264 decoder: a 1 MB library, where `avdec_h264` maps libav and its
/// dependency tree (about 27 MB more file-backed pages resident, 7 MB of relocations;
/// see docs/memory.md). It pays off while one camera decodes at a time: each running
/// OpenH264 decoder holds about 42 MB of 1080p buffers where `avdec_h264` holds 17 MB,
/// and it takes about 1.5 times the CPU; so it gives way when several decoders last
/// ([`openh264_crowded`]).
pub const OPENH264: &str = "openh264dec";

/// A decoder counts as lasting once it has run this long: a camera decodes for a second
/// or two at connect (its first picture), a watched one for longer.
pub const LASTING_AFTER: Duration = Duration::from_secs(5);

/// Decoders running now that have run for [`LASTING_AFTER`].
static LASTING: AtomicUsize = AtomicUsize::new(0);

/// Whether a lasting [`OPENH264`] decoder should give way to `avdec_h264`, with
/// `lasting` decoders (itself included) running at once: from two on, libav's pages and
/// `avdec_h264`'s smaller buffers cost less (at 1080p 68 MB against 84 for two, 119
/// against 168 for four), and it needs less CPU.
pub fn openh264_crowded(lasting: usize) -> bool {
    lasting >= 2
}

/// What the process has loaded already: the choice of a software H.264 decoder depends
/// on it (see [`OPENH264`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// gst-libav's plugin is loaded: its pages are resident whatever we choose now, and
    /// `avdec_h264` is then the lighter decoder.
    pub libav_loaded: bool,
    /// Decoders that have run for [`LASTING_AFTER`] and run still: with one more,
    /// OpenH264 would soon give way ([`openh264_crowded`]), so it is not started.
    pub lasting: usize,
}

impl Load {
    pub fn now() -> Load {
        Load {
            libav_loaded: gst::Registry::get()
                .find_plugin("libav")
                .is_some_and(|p| p.is_loaded()),
            lasting: LASTING.load(Ordering::SeqCst),
        }
    }
}

/// Decoder elements for the stream `caps` describes (what the parser gave), best first:
/// the override (if any), then by rank (hardware decoders first), except that
/// [`OPENH264`] comes before the software decoders when it decodes the stream exactly
/// ([`openh264_decodes`]), libav is not loaded yet and no other decoder lasts (`load`):
/// then libav is never loaded, unless a stream or the load needs it. A decoder that fails
/// at run time falls back to the next.
pub fn candidates_for(
    codec: Codec,
    caps: &gst::CapsRef,
    forced: Option<&str>,
    load: Load,
) -> Vec<String> {
    let mut names = candidates(codec, forced);
    if codec != Codec::H264
        || !openh264_decodes(caps)
        || load.libav_loaded
        || openh264_crowded(load.lasting + 1)
    {
        return names;
    }
    let start = usize::from(forced.is_some());
    let Some(at) = names.iter().skip(start).position(|n| n == OPENH264) else {
        return names;
    };
    let at = at + start;
    if let Some(first_sw) = names[start..at].iter().position(|n| !is_hardware(n)) {
        let name = names.remove(at);
        names.insert(start + first_sw, name);
    }
    names
}

/// Whether OpenH264 decodes a stream with these caps exactly: 8-bit 4:2:0 progressive
/// H.264 of a profile it takes. Checked against `avdec_h264` (bit-identical pictures)
/// for Constrained Baseline, Main and High without B-frames; it decodes B-frames wrongly
/// without an error (the caps cannot tell: [`Decoder::error`] notices them at run time)
/// and interlaced pictures not at all. Caps without a profile are not trusted.
pub fn openh264_decodes(caps: &gst::CapsRef) -> bool {
    let Some(s) = caps.structure(0) else {
        return false;
    };
    let is = |field: &str, wanted: &[&str]| match s.get::<&str>(field) {
        Ok(v) => wanted.contains(&v),
        Err(_) => !s.has_field(field),
    };
    s.name() == "video/x-h264"
        && s.get::<&str>("profile").is_ok_and(|p| {
            [
                "constrained-baseline",
                "baseline",
                "main",
                "high",
                "constrained-high",
                "progressive-high",
            ]
            .contains(&p)
        })
        && is("interlace-mode", &["progressive"])
        && is("coded-picture-structure", &["frame"])
        && is("chroma-format", &["4:2:0"])
        && s.get::<u32>("bit-depth-luma")
            .map_or(!s.has_field("bit-depth-luma"), |d| d == 8)
}

/// Whether an element name looks like a hardware decoder (for status and logs).
pub fn is_hardware(name: &str) -> bool {
    !(name.starts_with("avdec_") || name.starts_with("openh264") || name == "libde265dec")
}

/// Arrival times by PTS, oldest first.
///
/// Holds every unit fed and not yet out of the decoder: the gate lets at most
/// [`MAX_REPLAYED_UNITS`] + [`MAX_QUEUED_UNITS`] wait, plus the few inside the decoder.
/// (With fewer, a long replayed GOP lost its stamps and its old pictures were stamped
/// "now": passed off as new.)
const MAX_ARRIVALS: usize = (MAX_REPLAYED_UNITS + MAX_QUEUED_UNITS) as usize + 32;
type Arrivals = Arc<Mutex<VecDeque<(Option<gst::ClockTime>, f64)>>>;

/// The decoder's input bound: what waits in `appsrc`, and whether units are being skipped.
///
/// Units that arrived before the decoder started, pushed before any later one, are the
/// kept GOP the camera replays to get a picture fast: they are fed (up to
/// [`MAX_REPLAYED_UNITS`]) and do not count against the bound (their time counts as the
/// decoder's start). From the first live unit on, every unit counts (so a wall clock
/// stepped back cannot make units look replayed), and the bound holds:
/// more than [`MAX_QUEUED_UNITS`] live units waiting, or more than [`MAX_QUEUED_TIME`]
/// between the arrival of the oldest waiting unit and the newest, and the decoder is
/// behind. Then every unit is dropped up to a keyframe that comes once the queue has
/// drained (at most a quarter of the bound waiting, spanning at most half its time), so
/// no delta unit is ever fed whose reference was dropped.
struct Gate {
    /// Units in `appsrc` not yet taken by the decoder, oldest first: the arrival time
    /// counted for the bound, and whether the unit counts (arrived after the start).
    queued: VecDeque<(f64, bool)>,
    /// Unix seconds the decoder started.
    started: f64,
    /// Replayed units fed so far, or `None` once a live unit came (no more replay).
    replayed: Option<u64>,
    /// The latest counted arrival time fed or dropped.
    newest: f64,
    /// Only a keyframe may be fed next (at the start, and after a drop).
    need_keyframe: bool,
    /// The bound was hit: skipping until a keyframe after the queue has drained.
    behind: bool,
    dropped: u64,
}

impl Gate {
    fn new(started: f64) -> Gate {
        Gate {
            queued: VecDeque::with_capacity(64),
            started,
            replayed: Some(0),
            newest: started,
            need_keyframe: true,
            behind: false,
            dropped: 0,
        }
    }

    /// Forgets the units the decoder has taken: `appsrc` holds `level` now (FIFO).
    fn sync(&mut self, level: u64) {
        while self.queued.len() as u64 > level {
            self.queued.pop_front();
        }
    }

    fn live_units(&self) -> u64 {
        self.queued.iter().filter(|(_, live)| *live).count() as u64
    }

    /// Camera time waiting for the decoder, were a unit counted at `newest` added.
    fn lag(&self, newest: f64) -> f64 {
        self.queued.front().map_or(0.0, |(t, _)| newest - t)
    }

    /// Whether the unit `au` goes to the decoder (else it is dropped and counted).
    fn admit(&mut self, au: &AccessUnit) -> bool {
        let replay = match self.replayed {
            Some(n) if au.arrived < self.started && n < MAX_REPLAYED_UNITS => true,
            _ => {
                self.replayed = None;
                false
            }
        };
        let live = !replay;
        let at = au.arrived.max(self.started);
        self.newest = self.newest.max(at);
        let limit = MAX_QUEUED_TIME.as_secs_f64();
        if self.need_keyframe {
            let drained = self.live_units() <= MAX_QUEUED_UNITS / 4 && self.lag(at) <= limit / 2.0;
            if !au.keyframe || (self.behind && !drained) {
                self.dropped += 1;
                return false;
            }
            self.need_keyframe = false;
            self.behind = false;
        } else if live && (self.live_units() + 1 > MAX_QUEUED_UNITS || self.lag(at) > limit) {
            self.need_keyframe = true;
            self.behind = true;
            self.dropped += 1;
            return false;
        }
        if let (true, Some(n)) = (replay, self.replayed.as_mut()) {
            *n += 1;
        }
        self.queued.push_back((at, live));
        true
    }
}

/// Why [`Decoder::decode_one`] gave no picture: no candidate started (`element` is
/// `None`), or the one that did reported `error`.
#[derive(Debug)]
pub struct DecodeFailed {
    pub element: Option<String>,
    pub error: PipelineError,
}

impl std::fmt::Display for DecodeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

/// A running decoder. Dropping it stops it.
pub struct Decoder {
    pipeline: DecoderPipeline,
    element: String,
    /// Arrival times by PTS, to stamp each decoded picture with its capture time.
    arrivals: Arrivals,
    gate: Mutex<Gate>,
    /// For a decoder that cannot reorder pictures ([`OPENH264`]): the highest PTS fed,
    /// and whether a unit came with an earlier one (the stream has B-frames).
    reorder: Option<Mutex<Reorder>>,
    started: Instant,
    /// Counted in [`LASTING`].
    lasting: AtomicBool,
    /// An [`OPENH264`] decoder that may give way to `avdec_h264` (it is installed), and
    /// whether it has said so.
    may_give_way: bool,
    gave_way: AtomicBool,
    /// Only keyframes are fed (change watching while nobody views: about one picture a
    /// second at a 1 s GOP); the other units are skipped, not counted as dropped.
    keyframes_only: AtomicBool,
}

#[derive(Default)]
struct Reorder {
    newest: Option<gst::ClockTime>,
    seen: bool,
    reported: bool,
}

impl Decoder {
    /// Starts the first candidate that comes up; decoded pictures go to `on_picture`.
    pub fn start(
        caps: &gst::Caps,
        codec: Codec,
        candidates: &[String],
        threads: u32,
        on_picture: PictureSink,
    ) -> Result<Decoder, PipelineError> {
        let mut last_err =
            PipelineError::MissingElement(format!("a decoder for {}", codec.media_type()));
        for name in candidates {
            match Decoder::start_with(caps, name, threads, Arc::clone(&on_picture)) {
                Ok(d) => return Ok(d),
                Err(e) => {
                    log::warn!("decoder {name} failed to start ({e}); trying the next one");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    fn start_with(
        caps: &gst::Caps,
        name: &str,
        threads: u32,
        on_picture: PictureSink,
    ) -> Result<Decoder, PipelineError> {
        let arrivals: Arrivals = Arc::new(Mutex::new(VecDeque::with_capacity(64)));
        let arrivals_cb = Arc::clone(&arrivals);
        let on_raw: RawSink = Box::new(move |buffer, info| {
            let captured = take_arrival(&arrivals_cb, buffer.pts());
            on_picture(Picture {
                captured,
                info,
                buffer,
            });
        });
        let pipeline = DecoderPipeline::start(caps, name, threads, on_raw)?;
        Ok(Decoder {
            pipeline,
            element: name.to_owned(),
            arrivals,
            gate: Mutex::new(Gate::new(unix_now())),
            reorder: (name == OPENH264).then(Mutex::default),
            started: Instant::now(),
            lasting: AtomicBool::new(false),
            may_give_way: name == OPENH264 && gst::ElementFactory::find("avdec_h264").is_some(),
            gave_way: AtomicBool::new(false),
            keyframes_only: AtomicBool::new(false),
        })
    }

    pub fn element(&self) -> &str {
        &self.element
    }

    /// Decodes one keyframe with a decoder started for it and stopped after, waiting up
    /// to `wait` for the picture. What change watching does while nobody views: a
    /// decoder kept running between keyframes holds its pictures and state (about 20 MB
    /// at 1080p) for one picture a second; starting one costs a few milliseconds.
    /// `Ok(None)`: no picture in time and no error (a loaded machine).
    pub fn decode_one(
        caps: &gst::Caps,
        codec: Codec,
        candidates: &[String],
        threads: u32,
        keyframe: &AccessUnit,
        wait: Duration,
    ) -> Result<Option<Picture>, DecodeFailed> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sink: PictureSink = Arc::new(move |p| {
            let _ = tx.try_send(p);
        });
        let decoder = Decoder::start(caps, codec, candidates, threads, sink).map_err(|error| {
            DecodeFailed {
                element: None,
                error,
            }
        })?;
        decoder.set_keyframes_only();
        decoder.push(keyframe);
        decoder.pipeline.end_of_stream();
        match rx.recv_timeout(wait) {
            Ok(p) => Ok(Some(p)),
            Err(_) => match decoder.pipeline.error() {
                Some(e) => Err(DecodeFailed {
                    error: PipelineError::Run(format!("decoder {}: {e}", decoder.element)),
                    element: Some(decoder.element.clone()),
                }),
                // Slow (a loaded machine), not broken: the next keyframe tries again.
                None => Ok(None),
            },
        }
    }

    /// Hands one access unit to the decoder, or drops it (counted) when decoding is
    /// behind: see `Gate` for the bound. Never blocks.
    pub fn push(&self, au: &AccessUnit) {
        if !au.keyframe && self.keyframes_only.load(Ordering::Relaxed) {
            return;
        }
        if let (Some(r), Some(pts)) = (&self.reorder, au.buffer.pts()) {
            let mut r = r.lock();
            r.seen |= r.newest.is_some_and(|n| pts < n);
            r.newest = r.newest.max(Some(pts));
        }
        let level = self.level();
        {
            let mut gate = self.gate.lock();
            gate.sync(level);
            if !gate.admit(au) {
                return;
            }
        }
        {
            let mut a = self.arrivals.lock();
            if a.len() >= MAX_ARRIVALS {
                a.pop_front();
            }
            a.push_back((au.buffer.pts(), au.arrived));
        }
        self.pipeline.push(au.buffer.clone());
    }

    /// Feeds only keyframes from now on (set before the first push: a delta unit fed
    /// later would miss its references).
    pub fn set_keyframes_only(&self) {
        self.keyframes_only.store(true, Ordering::Relaxed);
    }

    pub fn keyframes_only(&self) -> bool {
        self.keyframes_only.load(Ordering::Relaxed)
    }

    fn level(&self) -> u64 {
        self.pipeline.level()
    }

    /// How the decoder keeps up now.
    pub fn stats(&self) -> DecoderStats {
        let level = self.level();
        let mut gate = self.gate.lock();
        gate.sync(level);
        DecoderStats {
            dropped: gate.dropped,
            lagging: gate.behind || gate.lag(gate.newest) > MAX_QUEUED_TIME.as_secs_f64(),
            queued: level,
        }
    }

    /// The decoder's error, if it reported one since the last call (the camera then
    /// falls back to the next candidate, from the kept keyframe).
    ///
    /// Two are ours, for [`OPENH264`]: a stream with B-frames (pictures out of
    /// presentation order; OpenH264 gives wrong pictures, no error), and several lasting
    /// decoders at once ([`openh264_crowded`]; only where `avdec_h264` is installed).
    pub fn error(&self) -> Option<String> {
        self.error_at(Instant::now())
    }

    fn error_at(&self, now: Instant) -> Option<String> {
        if now.saturating_duration_since(self.started) >= LASTING_AFTER
            && !self.lasting.swap(true, Ordering::SeqCst)
        {
            LASTING.fetch_add(1, Ordering::SeqCst);
        }
        if self.may_give_way && self.lasting.load(Ordering::SeqCst) {
            let lasting = LASTING.load(Ordering::SeqCst);
            if openh264_crowded(lasting) && !self.gave_way.swap(true, Ordering::SeqCst) {
                return Some(format!(
                    "decoder {}: {lasting} cameras decode at once, avdec_h264 needs less \
                     memory and CPU for that",
                    self.element
                ));
            }
        }
        if let Some(r) = &self.reorder {
            let mut r = r.lock();
            if r.seen && !r.reported {
                r.reported = true;
                return Some(format!(
                    "decoder {}: the stream has B-frames, which it cannot decode",
                    self.element
                ));
            }
        }
        self.pipeline
            .error()
            .map(|e| format!("decoder {}: {e}", self.element))
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        if *self.lasting.get_mut() {
            LASTING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn take_arrival(
    arrivals: &Mutex<VecDeque<(Option<gst::ClockTime>, f64)>>,
    pts: Option<gst::ClockTime>,
) -> f64 {
    let mut a = arrivals.lock();
    if let Some(i) = a.iter().position(|(p, _)| *p == pts && pts.is_some()) {
        let t = a[i].1;
        a.drain(..=i);
        return t;
    }
    unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264_caps() -> gst::Caps {
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build()
    }

    fn unit(arrived: f64, keyframe: bool) -> AccessUnit {
        gst::init().unwrap();
        AccessUnit {
            buffer: gst::Buffer::new(),
            caps: h264_caps(),
            codec: Codec::H264,
            arrived,
            keyframe,
        }
    }

    /// Feeds `units` (arrival, keyframe) with nothing taken by the decoder; returns
    /// which were admitted.
    fn feed(gate: &mut Gate, units: &[(f64, bool)]) -> Vec<bool> {
        units
            .iter()
            .map(|&(t, k)| gate.admit(&unit(t, k)))
            .collect()
    }

    #[test]
    fn the_gate_drops_to_a_keyframe_after_the_queue_drained() {
        let mut gate = Gate::new(100.0);
        let gop = |start: f64| -> Vec<(f64, bool)> {
            (0..40)
                .map(|i| (start + f64::from(i) / 60.0, i == 0))
                .collect()
        };
        // A delta before any keyframe is useless: dropped.
        assert_eq!(feed(&mut gate, &[(100.0, false)]), [false]);
        // 40 units at 60 fps: the 31st is over the bound, it and the rest are dropped.
        let fed = feed(&mut gate, &gop(101.0));
        assert_eq!(fed.iter().filter(|f| **f).count(), 30);
        assert!(fed[..30].iter().all(|f| *f) && !fed[30..].iter().any(|f| *f));
        assert!(gate.behind && gate.dropped == 11);
        // The next keyframe while 30 still wait: skipped too, with its GOP.
        assert!(!feed(&mut gate, &gop(101.7)).iter().any(|f| *f));
        // The decoder took all but 5 (a quarter of the bound at most, the oldest 0.4 s
        // before the keyframe, half the time bound at most): the next keyframe resumes.
        gate.sync(5);
        let fed = feed(&mut gate, &gop(101.8)[..10]);
        assert!(fed.iter().all(|f| *f), "{fed:?}");
        assert!(!gate.behind);
        // Time: units 0.2 s apart are over 1 s after 6 waiting.
        gate.sync(0);
        let slow: Vec<(f64, bool)> = (0..10)
            .map(|i| (104.0 + f64::from(i) * 0.2, false))
            .collect();
        let fed = feed(&mut gate, &slow);
        assert_eq!(
            fed,
            [true, true, true, true, true, true, false, false, false, false]
        );
    }

    #[test]
    fn replayed_units_are_fed_whole_but_only_before_live_ones() {
        let mut gate = Gate::new(100.0);
        // 90 units kept from before the start (3 s at 30 fps): all fed.
        let kept: Vec<(f64, bool)> = (0..90)
            .map(|i| (97.0 + f64::from(i) / 30.0, i % 30 == 0))
            .collect();
        assert!(feed(&mut gate, &kept).iter().all(|f| *f));
        assert_eq!(gate.dropped, 0);
        // A live unit; then the wall clock steps back an hour: units still count.
        assert_eq!(feed(&mut gate, &[(100.1, false)]), [true]);
        gate.sync(0);
        let stepped: Vec<(f64, bool)> = (0..40)
            .map(|i| (-3500.0 + f64::from(i) / 30.0, false))
            .collect();
        let fed = feed(&mut gate, &stepped);
        assert_eq!(fed.iter().filter(|f| **f).count(), 30, "{fed:?}");
    }

    #[test]
    fn candidates_rank_software_and_honour_the_override() {
        gst::init().unwrap();
        let all = candidates(Codec::H264, None);
        assert!(all.iter().any(|c| c == "avdec_h264"), "{all:?}");
        let forced = candidates(Codec::H264, Some("v4l2h264dec"));
        assert_eq!(forced[0], "v4l2h264dec");
        assert_eq!(forced.iter().filter(|c| *c == "v4l2h264dec").count(), 1);
        assert!(candidates(Codec::H265, None)
            .iter()
            .any(|c| c == "avdec_h265"));
        assert!(!is_hardware("avdec_h264"));
        assert!(is_hardware("nvv4l2decoder"));
    }

    fn parsed_caps(profile: &str, extra: &[(&str, &str)]) -> gst::Caps {
        gst::init().unwrap();
        let mut b = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .field("profile", profile)
            .field("chroma-format", "4:2:0")
            .field("bit-depth-luma", 8u32)
            .field("coded-picture-structure", "frame");
        for (k, v) in extra {
            b = b.field(*k, *v);
        }
        b.build()
    }

    #[test]
    fn openh264_only_for_the_streams_it_decodes() {
        for p in ["constrained-baseline", "baseline", "main", "high"] {
            assert!(openh264_decodes(&parsed_caps(p, &[])), "{p}");
        }
        // Fields the parser did not set are not held against it.
        assert!(openh264_decodes(
            &gst::Caps::builder("video/x-h264")
                .field("profile", "main")
                .build()
        ));
        for p in ["high-10", "high-4:2:2", "high-4:4:4", "extended"] {
            assert!(!openh264_decodes(&parsed_caps(p, &[])), "{p}");
        }
        // Interlaced (as h264parse says it), 4:0:0, no profile, H.265: not OpenH264's.
        assert!(!openh264_decodes(&parsed_caps(
            "high",
            &[("coded-picture-structure", "field")]
        )));
        assert!(!openh264_decodes(&parsed_caps(
            "high",
            &[("interlace-mode", "mixed")]
        )));
        assert!(!openh264_decodes(&parsed_caps(
            "high",
            &[("chroma-format", "4:0:0")]
        )));
        let ten_bit = gst::Caps::builder("video/x-h264")
            .field("profile", "high")
            .field("bit-depth-luma", 10u32)
            .build();
        assert!(!openh264_decodes(&ten_bit));
        assert!(!openh264_decodes(&h264_caps()));
        assert!(!openh264_decodes(
            &gst::Caps::builder("video/x-h265")
                .field("profile", "main")
                .build()
        ));
    }

    const ALONE: Load = Load {
        libav_loaded: false,
        lasting: 0,
    };

    #[test]
    fn openh264_comes_after_hardware_before_avdec() {
        let caps = parsed_caps("main", &[]);
        let names = candidates_for(Codec::H264, &caps, None, ALONE);
        let oh = names
            .iter()
            .position(|n| n == OPENH264)
            .expect("openh264dec");
        let av = names.iter().position(|n| n == "avdec_h264").expect("avdec");
        assert!(oh < av, "{names:?}");
        assert!(names[..oh].iter().all(|n| is_hardware(n)), "{names:?}");
        // The override stays first.
        let forced = candidates_for(Codec::H264, &caps, Some("avdec_h264"), ALONE);
        assert_eq!(forced[0], "avdec_h264");
        assert_eq!(forced.iter().filter(|n| *n == OPENH264).count(), 1);
        // A stream OpenH264 cannot decode keeps the ranks: avdec_h264 first.
        let interlaced = parsed_caps("high", &[("coded-picture-structure", "field")]);
        let by_rank = candidates(Codec::H264, None);
        let av = by_rank.iter().position(|n| n == "avdec_h264").unwrap();
        assert!(
            by_rank[av + 1..].iter().any(|n| n == OPENH264),
            "{by_rank:?}"
        );
        assert_eq!(
            candidates_for(Codec::H264, &interlaced, None, ALONE),
            by_rank
        );
        // libav loaded already (a stream needed it): avdec_h264 is the lighter, ranks stay.
        let libav = Load {
            libav_loaded: true,
            lasting: 0,
        };
        assert_eq!(candidates_for(Codec::H264, &caps, None, libav), by_rank);
        // Another camera has decoded for a while: OpenH264 would soon give way.
        let busy = Load {
            libav_loaded: false,
            lasting: 1,
        };
        assert_eq!(candidates_for(Codec::H264, &caps, None, busy), by_rank);
        assert_eq!(
            candidates_for(Codec::H265, &caps, None, ALONE),
            candidates(Codec::H265, None)
        );
    }

    /// `frames` access units of a moving 320x240 test picture, as h264parse gives them.
    fn encode(profile: &str, bframes: u32, frames: u32) -> Vec<AccessUnit> {
        gst::init().unwrap();
        let (pipeline, sink) = crate::camera::pipeline::test_source(&format!(
            "videotestsrc pattern=ball num-buffers={frames} \
             ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! x264enc speed-preset=fast bframes={bframes} key-int-max=15 \
             ! video/x-h264,profile={profile} ! h264parse \
             ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink sync=false"
        ));
        let mut units = Vec::new();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(20)) {
            let buffer = sample.buffer_owned().unwrap();
            units.push(AccessUnit {
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                buffer,
                caps: sample.caps_owned().unwrap(),
                codec: Codec::H264,
                arrived: unix_now(),
            });
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(units.len(), frames as usize, "x264enc gave too few units");
        units
    }

    /// Decodes `units` with `element`; returns the pictures' I420 planes, row by row.
    fn decode_all(element: &str, units: &[AccessUnit]) -> (Vec<Vec<u8>>, Option<String>) {
        use gst_video::prelude::*;
        let (tx, rx) = crossbeam_channel::unbounded();
        let d = Decoder::start(
            &units[0].caps,
            Codec::H264,
            &[element.to_owned()],
            1,
            Arc::new(move |p: Picture| {
                let frame =
                    gst_video::VideoFrameRef::from_buffer_ref_readable(&p.buffer, &p.info).unwrap();
                assert_eq!(p.info.format(), gst_video::VideoFormat::I420);
                let mut bytes = Vec::new();
                for plane in 0..3 {
                    let stride = frame.plane_stride()[plane] as usize;
                    let data = frame.plane_data(plane as u32).unwrap();
                    let (w, h) = (
                        frame.comp_width(plane as u32),
                        frame.comp_height(plane as u32),
                    );
                    for row in 0..h as usize {
                        bytes.extend_from_slice(&data[row * stride..row * stride + w as usize]);
                    }
                }
                let _ = tx.send(bytes);
            }),
        )
        .unwrap();
        assert_eq!(d.element(), element);
        for au in units {
            d.push(au);
        }
        let error = d.error();
        let mut pictures = Vec::new();
        if error.is_none() {
            // A decoder may hold back a few pictures until the stream ends: all but those.
            while pictures.len() < units.len() - 4 {
                match rx.recv_timeout(Duration::from_secs(20)) {
                    Ok(p) => pictures.push(p),
                    Err(_) => panic!(
                        "{element} gave {} pictures of {}",
                        pictures.len(),
                        units.len()
                    ),
                }
            }
        }
        (pictures, error)
    }

    #[test]
    fn openh264_pictures_match_avdec_without_b_frames() {
        for profile in ["constrained-baseline", "main", "high"] {
            let units = encode(profile, 0, 32);
            assert!(openh264_decodes(&units[0].caps), "{:?}", units[0].caps);
            let (ours, err) = decode_all(OPENH264, &units);
            assert_eq!(err, None);
            let (reference, _) = decode_all("avdec_h264", &units);
            let n = ours.len().min(reference.len());
            assert!(
                n >= 28,
                "{profile}: {} and {} pictures",
                ours.len(),
                reference.len()
            );
            for i in 0..n {
                assert!(ours[i] == reference[i], "{profile}: picture {i} differs");
            }
        }
    }

    #[test]
    fn b_frames_are_an_error_of_openh264_only() {
        let units = encode("high", 2, 32);
        assert!(openh264_decodes(&units[0].caps));
        let (_, err) = decode_all(OPENH264, &units);
        assert!(err.is_some_and(|e| e.contains("B-frames")));
        let (pictures, err) = decode_all("avdec_h264", &units);
        assert_eq!(err, None);
        assert!(pictures.len() >= 28);
    }

    #[test]
    fn openh264_gives_way_once_several_decoders_last() {
        assert!(!openh264_crowded(1));
        assert!(openh264_crowded(2));
        let units = encode("constrained-baseline", 0, 4);
        let start = |name: &str| {
            Decoder::start(
                &units[0].caps,
                Codec::H264,
                &[name.to_owned()],
                1,
                Arc::new(|_| {}),
            )
            .unwrap()
        };
        let ours = start(OPENH264);
        let other = start("avdec_h264");
        // Young decoders (a camera's first picture at connect) do not count.
        assert_eq!(ours.error_at(Instant::now()), None);
        assert_eq!(other.error_at(Instant::now()), None);
        let later = Instant::now() + LASTING_AFTER;
        assert_eq!(other.error_at(later), None, "avdec_h264 never gives way");
        let e = ours.error_at(later).expect("openh264dec gives way");
        assert!(e.contains("cameras decode at once"), "{e}");
        // Said once.
        assert_eq!(ours.error_at(later), None);
        drop(other);
        drop(ours);
    }

    #[test]
    fn falls_back_when_the_preferred_decoder_is_missing() {
        gst::init().unwrap();
        let names = vec!["nvv4l2decoder_not_here".to_owned(), "avdec_h264".to_owned()];
        let d = Decoder::start(&h264_caps(), Codec::H264, &names, 1, Arc::new(|_| {})).unwrap();
        assert_eq!(d.element(), "avdec_h264");
    }

    #[test]
    fn no_candidate_is_an_error() {
        gst::init().unwrap();
        let names = vec!["nothing_here".to_owned()];
        let err = Decoder::start(&h264_caps(), Codec::H264, &names, 1, Arc::new(|_| {}))
            .err()
            .expect("no decoder can start");
        assert_eq!(err, PipelineError::MissingElement("nothing_here".into()));
    }
}
