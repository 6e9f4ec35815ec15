//! The JSON the API answers about cameras and the appliance: one builder per object, so
//! REST replies and WebSocket pushes say the same thing the same way.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::camera::change::WatchStatus;
use crate::camera::jpeg::{Crop, Jpeg};
use crate::camera::{self, CameraState, CameraStatus, Codec};
use crate::clock::unix_now;
use crate::fleet::{CameraView, Fleet};
use crate::ptz::{LinkState, PtzHealth};
use crate::snapshot::Snapshot;

/// What a picture is, as HTTP headers (`/frame`, snapshots, each MJPEG part):
/// `X-Frame-Seq` (its number), `X-Frame-Timestamp` (unix seconds of capture),
/// `X-Frame-Age` (seconds from then to now); and only when a crop was asked (`asked`),
/// `X-Crop` the crop served (snapped fractions `x,y,w,h`), `X-Crop-Pixels` the source
/// pixels cut (`x,y,w,h`), `X-Source-Size` the decoded picture's size (`3840x2160`), so
/// replies without a crop are as they always were.
pub fn picture_headers(asked: Option<Crop>, jpeg: &Jpeg) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("X-Frame-Seq", jpeg.seq.to_string()),
        ("X-Frame-Timestamp", format!("{:.6}", jpeg.captured)),
        (
            "X-Frame-Age",
            format!("{:.3}", (unix_now() - jpeg.captured).max(0.0)),
        ),
    ];
    if let Some(crop) = asked {
        let r = jpeg.region;
        headers.extend([
            ("X-Crop", crop.to_string()),
            (
                "X-Crop-Pixels",
                format!("{},{},{},{}", r.x, r.y, r.width, r.height),
            ),
            (
                "X-Source-Size",
                format!("{}x{}", jpeg.source.0, jpeg.source.1),
            ),
        ]);
    }
    headers
}

/// The `crop` field of a WebSocket frame: the crop served as `[x, y, w, h]` (snapped
/// fractions).
pub fn crop_field(crop: Crop) -> Value {
    json!(crop.fractions())
}

/// The status object: the contract's fields first, then ours, then `ptz` (the control
/// link, `null` without PTZ).
pub fn camera(v: &CameraView) -> Value {
    let mut out = status(&v.status);
    if let Value::Object(m) = &mut out {
        m.insert("ptz".into(), v.ptz.as_ref().map_or(Value::Null, ptz));
    }
    out
}

/// The same as a WebSocket push: `{"type":"status",...}`.
pub fn push(v: &CameraView) -> Value {
    let mut out = camera(v);
    if let Value::Object(m) = &mut out {
        m.insert("type".into(), json!("status"));
    }
    out
}

fn status(s: &CameraStatus) -> Value {
    json!({
        "cameraId": s.id,
        "connected": s.state == CameraState::Streaming,
        "frameRate": s.frame_rate,
        "lastFrameTime": s.last_frame_time,
        "frameCount": s.frame_count,
        "state": s.state.to_string(),
        "lastError": s.last_error,
        "reconnects": s.reconnects,
        "codec": s.codec.map(|c| c.to_string()),
        "width": s.width,
        "height": s.height,
        "decoder": s.decoder,
        "decoding": s.decoding,
        "decodeMode": s.decode_mode.to_string(),
        "viewers": s.viewers,
        "jpegEncodes": s.jpeg_encodes,
        "droppedFrames": s.dropped_frames,
        "lagging": s.lagging,
        "watch": watch(&s.watch),
    })
}

/// Change watching: its settings, how pictures are scored now (`mode`: "keyframes"
/// while nobody views, "frames" while viewers make the camera decode every picture,
/// null while nothing is decoded for it), what it costs (`scoredPerSecond`,
/// `microsPerScore`) and what it gave.
pub fn watch(w: &WatchStatus) -> Value {
    let round = |v: f32| (f64::from(v) * 10_000.0).round() / 10_000.0;
    json!({
        "enabled": w.config.is_some(),
        "threshold": w.config.map(|c| round(c.threshold)),
        "cooldown": w.config.map(|c| c.cooldown.as_secs_f64()),
        "mode": w.mode.map(|m| m.as_str()),
        "scored": w.scored,
        "scoredPerSecond": w.scored_per_second,
        "microsPerScore": w.micros_per_score,
        "microsPerDecode": w.micros_per_decode,
        "events": w.events,
        "lastScore": w.last_score.map(round),
        "lastEventSeq": w.last_event.map(|e| e.0),
        "lastEventTime": w.last_event.map(|e| e.1),
    })
}

/// A change event as a WebSocket push.
pub fn change(ev: &camera::change::ChangeEvent) -> Value {
    json!({
        "type": "change",
        "cameraId": ev.camera_id,
        "seq": ev.seq,
        "score": (f64::from(ev.score) * 10_000.0).round() / 10_000.0,
        "timestamp": ev.captured,
    })
}

/// `{"protocol","port","link":"unknown"|"up"|"down","lastError"}`.
fn ptz(h: &PtzHealth) -> Value {
    json!({
        "protocol": h.protocol.as_str(),
        "port": h.port,
        "link": match h.link {
            LinkState::Unknown => "unknown",
            LinkState::Up => "up",
            LinkState::Down => "down",
        },
        "lastError": h.last_error,
        "busyWith": h.busy_with,
    })
}

/// `/health`: the contract's fields, then the decoders this device has (best first:
/// hardware wins by rank), those in use and the JPEG encoder.
pub fn health(fleet: &Fleet, forced_decoder: Option<&str>, uptime: Duration) -> Value {
    // Looked up once: the element registry does not change while we run.
    static DECODERS: OnceLock<Value> = OnceLock::new();
    let decoders = DECODERS.get_or_init(|| {
        json!({
            "h264": camera::decode::candidates(Codec::H264, forced_decoder),
            "h265": camera::decode::candidates(Codec::H265, forced_decoder),
        })
    });
    json!({
        "status": "ok",
        "activeCameras": fleet.len(),
        "uptime": uptime.as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
        "decoders": decoders,
        "decodersInUse": fleet.decoders_in_use(),
        "jpegEncoder": camera::jpeg::ENCODER,
    })
}

/// A settled snapshot (`POST .../snapshot` with `"format":"json"`, and each shot of a
/// tour): the picture as base64 and how it was got.
pub fn snapshot(camera_id: &str, s: &Snapshot) -> Value {
    let j = &s.jpeg;
    json!({
        "cameraId": camera_id,
        "preset": s.preset,
        "seq": j.seq,
        "timestamp": j.captured,
        "width": j.width,
        "height": j.height,
        "position": s.position.map(|p| json!({"pan": p.pan, "tilt": p.tilt, "zoom": p.zoom})),
        "settleMs": s.took.as_millis() as u64,
        "headMs": s.head.as_millis() as u64,
        "examined": s.examined,
        "crop": j.params.crop.map(crop_field),
        "data": j.base64(),
    })
}
