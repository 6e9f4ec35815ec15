//! The REST routes: the app's compatible surface (`/health`, connect, disconnect, status,
//! frame) and our extensions (camera list, sized frames, MJPEG). Errors are
//! `{"detail": "..."}` with one HTTP status per kind of failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tiny_http::{Response, StatusCode};

use super::request::{error, header, json as json_reply, percent_decode, Reply, Request};
use super::Ctx;
use crate::camera::frame::unix_now;
use crate::camera::jpeg::DEFAULT_QUALITY;
use crate::camera::{
    self, Camera, CameraSpec, CameraStatus, ConnectError, Frame, JpegParams, Transport,
};
use crate::ptz::PtzConfig;
use crate::secret::Secret;

/// How long connect waits for the first picture (the first version's 5 s).
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// A picture is fresh when it is at most this much older than the camera's newest packet
/// (a frame interval or two of decoding).
const FRESH: f64 = 0.05;
/// How long `/frame` waits for a fresh picture when decoding had stopped.
const FRAME_WAIT: Duration = Duration::from_millis(1500);

pub fn route(req: &Request, ctx: &Arc<Ctx>) -> Reply {
    if req.method == "OPTIONS" {
        return preflight(req);
    }
    let segs: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    if segs.as_slice() == ["health"] && get {
        return health(ctx);
    }
    // The viewer page holds no data; the API calls it makes carry the token.
    if segs.is_empty() && get {
        return index();
    }
    if !authorized(req, ctx) {
        return unauthorized();
    }
    match segs.as_slice() {
        ["ws"] if get => super::ws::upgrade(req, ctx),
        ["api", "cameras", "connect"] if post => connect(req, ctx),
        ["api", "cameras", "disconnect"] if post => disconnect(req, ctx),
        ["api", "cameras"] if get => list(ctx),
        ["api", "cameras", id, rest] => {
            let Some(id) = percent_decode(id) else {
                return error(400, "camera id is not valid percent-encoded UTF-8");
            };
            match (*rest, get) {
                ("status", true) => status(&id, ctx),
                ("frame", true) => frame(req, &id, ctx),
                ("ptz", _) if get || post => ptz_rest(req, &id, ctx),
                ("mjpeg", true) => match camera_or_404(&id, ctx) {
                    Ok(cam) => super::mjpeg::stream(req, cam, ctx),
                    Err(r) => r,
                },
                ("status" | "frame" | "mjpeg", false) => error(405, "Method Not Allowed"),
                _ => error(404, "Not Found"),
            }
        }
        ["health"] | ["ws"] | ["api", "cameras", "connect" | "disconnect"] | ["api", "cameras"] => {
            error(405, "Method Not Allowed")
        }
        _ => error(404, "Not Found"),
    }
}

fn index() -> Reply {
    Reply::Response(
        Response::from_data(include_str!("index.html"))
            .with_header(header("Content-Type", "text/html; charset=utf-8"))
            .boxed(),
    )
}

fn preflight(req: &Request) -> Reply {
    // Echo what the browser asks for only when it is a plain list of header names
    // (RFC 9110 tokens); anything else (non-ASCII, control bytes, a huge list) gets the
    // headers the API reads.
    const USUAL: &str = "Content-Type, Authorization";
    let asked = req.header("Access-Control-Request-Headers").and_then(|v| {
        let names: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        let tokens = names
            .iter()
            .all(|n| n.bytes().all(super::request::is_tchar));
        (tokens && !names.is_empty() && v.len() <= 1024).then(|| names.join(", "))
    });
    let allow_headers = asked.unwrap_or_else(|| USUAL.to_owned());
    Reply::Response(
        Response::empty(StatusCode(204))
            .with_header(header("Access-Control-Allow-Methods", "GET, POST, OPTIONS"))
            .with_header(header("Access-Control-Allow-Headers", &allow_headers))
            .with_header(header("Access-Control-Max-Age", "600"))
            .boxed(),
    )
}

/// `Authorization: Bearer <token>` or `?token=` (browsers cannot set WebSocket headers).
fn authorized(req: &Request, ctx: &Ctx) -> bool {
    let Some(token) = &ctx.config.token else {
        return true;
    };
    let presented = req
        .header("Authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
        .or_else(|| req.query_param("token"));
    presented.is_some_and(|p| token.constant_time_eq(p.as_bytes()))
}

fn unauthorized() -> Reply {
    match error(401, "Missing or invalid API token") {
        Reply::Response(r) => {
            Reply::Response(r.with_header(header("WWW-Authenticate", "Bearer")).boxed())
        }
        other => other,
    }
}

fn health(ctx: &Ctx) -> Reply {
    // The decoders this device has, best first (hardware wins by rank), looked up once.
    static DECODERS: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let decoders = DECODERS.get_or_init(|| {
        let forced = ctx.config.decoder.as_deref();
        json!({
            "h264": camera::decode::candidates(camera::Codec::H264, forced),
            "h265": camera::decode::candidates(camera::Codec::H265, forced),
        })
    });
    let in_use: Vec<String> = ctx
        .registry
        .statuses()
        .into_iter()
        .filter_map(|s| s.decoder)
        .collect();
    json_reply(
        200,
        &json!({
            "status": "ok",
            "activeCameras": ctx.registry.len(),
            "uptime": ctx.started.elapsed().as_secs_f64(),
            "version": env!("CARGO_PKG_VERSION"),
            "decoders": decoders,
            "decodersInUse": in_use,
            "jpegEncoder": camera::jpeg::ENCODER,
        }),
    )
}

/// The parsed body of `POST /api/cameras/connect`.
struct ConnectBody {
    spec: CameraSpec,
    ptz: Option<PtzConfig>,
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(422, "request body must be a JSON object")),
        Err(e) => Err(error(400, format!("request body is not valid JSON: {e}"))),
    }
}

fn str_field(m: &Map<String, Value>, name: &str, default: Option<&str>) -> Result<String, Reply> {
    match m.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => default
            .map(str::to_owned)
            .ok_or_else(|| error(422, format!("field '{name}' is required"))),
        Some(_) => Err(error(422, format!("field '{name}' must be a string"))),
    }
}

fn parse_connect(body: &[u8]) -> Result<ConnectBody, Reply> {
    let m = parse_object(body)?;
    let id = str_field(&m, "cameraId", None)?;
    camera::validate_id(&id).map_err(|e| error(422, e))?;
    let host = str_field(&m, "ip", None)?.trim().to_owned();
    camera::validate_host(&host).map_err(|e| error(422, e))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let username = str_field(&m, "username", Some(""))?;
    let password = Secret::new(str_field(&m, "password", Some(""))?);
    let path = str_field(&m, "streamPath", Some("/1"))?;
    camera::validate_path(&path).map_err(|e| error(422, e))?;
    let port = match m.get("port") {
        None | Some(Value::Null) => 554,
        Some(v) => match v.as_u64() {
            Some(p @ 1..=65535) => p as u16,
            _ => {
                return Err(error(
                    422,
                    "field 'port' must be an integer from 1 to 65535",
                ))
            }
        },
    };
    let transport = match m.get("transport") {
        None | Some(Value::Null) => Transport::Auto,
        Some(Value::String(s)) => s.parse().map_err(|e: String| error(422, e))?,
        Some(_) => return Err(error(422, "field 'transport' must be a string")),
    };
    let ptz = PtzConfig::parse(m.get("ptz").unwrap_or(&Value::Null))
        .map_err(|e| error(422, format!("ptz: {e}")))?;
    Ok(ConnectBody {
        ptz,
        spec: CameraSpec {
            id,
            host,
            port,
            path,
            username,
            password,
            transport,
        },
    })
}

fn connect(req: &Request, ctx: &Ctx) -> Reply {
    let body = match parse_connect(&req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = body.spec.id.clone();
    let started = Instant::now();
    match ctx.registry.connect(body.spec.clone(), CONNECT_WAIT) {
        Ok(_) => {
            log::info!(
                "{id}: connected, first picture after {} ms",
                started.elapsed().as_millis()
            );
            match body.ptz {
                Some(cfg) => {
                    let s = &body.spec;
                    ctx.ptz.attach(&id, &s.host, cfg, &s.username, &s.password);
                }
                None => {
                    ctx.ptz.detach(&id);
                }
            }
            ctx.persist();
            json_reply(
                200,
                &json!({"success": true, "cameraId": id, "message": "Camera connected successfully"}),
            )
        }
        Err(e) => {
            log::warn!("{id}: connect failed: {e}");
            // A failed re-connect removed the camera: its PTZ control and saved entry go
            // too. (When the camera limit refused it, the old camera is still there.)
            if ctx.registry.get(&id).is_none() {
                ctx.ptz.detach(&id);
                ctx.persist();
            }
            let status = match e {
                ConnectError::Timeout(_) => 504,
                ConnectError::Failed(_) => 502,
                ConnectError::Full(_) => 503,
                ConnectError::Internal(_) => 500,
            };
            error(status, e.to_string())
        }
    }
}

fn disconnect(req: &Request, ctx: &Ctx) -> Reply {
    let m = match parse_object(&req.body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let id = match str_field(&m, "cameraId", None) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let had_ptz = ctx.ptz.detach(&id);
    if ctx.registry.disconnect(&id) || had_ptz {
        log::info!("{id}: disconnected");
        ctx.persist();
    }
    json_reply(
        200,
        &json!({"success": true, "message": "Camera disconnected"}),
    )
}

/// The status object with the camera's PTZ control, if it has one: `{"protocol",
/// "port","link":"unknown"|"up"|"down","lastError"}` (`null` without PTZ).
pub fn status_with_ptz(s: &CameraStatus, ctx: &Ctx) -> Value {
    let mut v = status_json(s);
    let ptz = ctx.ptz.get(&s.id).map(|c| {
        let h = c.health();
        json!({
            "protocol": h.protocol.as_str(),
            "port": h.port,
            "link": match h.link {
                crate::ptz::LinkState::Unknown => "unknown",
                crate::ptz::LinkState::Up => "up",
                crate::ptz::LinkState::Down => "down",
            },
            "lastError": h.last_error,
        })
    });
    if let Value::Object(m) = &mut v {
        m.insert("ptz".into(), ptz.unwrap_or(Value::Null));
    }
    v
}

/// The status object: the contract's fields first, then ours.
pub fn status_json(s: &CameraStatus) -> Value {
    json!({
        "cameraId": s.id,
        "connected": s.state == camera::CameraState::Streaming,
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
    })
}

fn list(ctx: &Ctx) -> Reply {
    let cams: Vec<Value> = ctx
        .registry
        .statuses()
        .iter()
        .map(|s| status_with_ptz(s, ctx))
        .collect();
    json_reply(200, &json!({ "cameras": cams }))
}

fn camera_or_404(id: &str, ctx: &Ctx) -> Result<Arc<Camera>, Reply> {
    ctx.registry
        .get(id)
        .ok_or_else(|| error(404, format!("Camera {id} not found")))
}

fn status(id: &str, ctx: &Ctx) -> Reply {
    match camera_or_404(id, ctx) {
        Ok(c) => json_reply(200, &status_with_ptz(&c.status(), ctx)),
        Err(r) => r,
    }
}

/// `width` and `quality` from the query: `Err` with a 422 reply when out of range.
pub fn jpeg_params(req: &Request) -> Result<JpegParams, Reply> {
    let width = match req.query_param("width") {
        None => None,
        Some(w) => match w.parse::<u32>() {
            Ok(w @ 16..=7680) => Some(w),
            _ => return Err(error(422, "width must be an integer from 16 to 7680")),
        },
    };
    let quality = match req.query_param("quality") {
        None => DEFAULT_QUALITY,
        Some(q) => match q.parse::<u8>() {
            Ok(q @ 1..=100) => q,
            _ => return Err(error(422, "quality must be an integer from 1 to 100")),
        },
    };
    Ok(JpegParams { width, quality })
}

/// The newest picture, refreshed if decoding had stopped (on-demand cameras).
///
/// Fresh means: the picture of the camera's newest packet at the time of the request (a
/// decoder that had paused first replays the kept keyframe and the frames after it; those
/// older pictures are not served).
pub fn fresh_frame(cam: &Camera) -> Option<Arc<Frame>> {
    let listener = cam.feed.listen();
    cam.request_picture();
    let newest = cam.last_packet_time().unwrap_or_else(unix_now);
    let deadline = Instant::now() + FRAME_WAIT;
    loop {
        let latest = cam.feed.latest();
        if let Some(f) = &latest {
            if f.captured >= newest - FRESH {
                return latest;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return latest;
        }
        let _ = listener.wakeups().recv_timeout(left);
    }
}

fn frame(req: &Request, id: &str, ctx: &Ctx) -> Reply {
    let params = match jpeg_params(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let cam = match camera_or_404(id, ctx) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(frame) = fresh_frame(&cam) else {
        return error(404, format!("No frame available yet for camera {id}"));
    };
    match cam.feed.jpeg.get(&frame, params) {
        Ok(jpeg) => Reply::Response(
            Response::from_data(jpeg.data.clone())
                .with_header(header("Content-Type", "image/jpeg"))
                .with_header(header("Cache-Control", "no-store"))
                .with_header(header("X-Frame-Seq", &jpeg.seq.to_string()))
                .with_header(header(
                    "X-Frame-Timestamp",
                    &format!("{:.6}", jpeg.captured),
                ))
                .with_header(header(
                    "Access-Control-Expose-Headers",
                    "X-Frame-Seq, X-Frame-Timestamp",
                ))
                .boxed(),
        ),
        Err(e) => {
            log::error!("{id}: JPEG encoding failed: {e}");
            error(500, format!("JPEG encoding failed: {e}"))
        }
    }
}

/// The PTZ controller of a connected camera, or the reply saying why there is none.
fn ptz_controller(id: &str, ctx: &Ctx) -> Result<Arc<crate::ptz::Controller>, (u16, String)> {
    if ctx.registry.get(id).is_none() {
        return Err((404, format!("Camera {id} not found")));
    }
    ctx.ptz
        .get(id)
        .ok_or_else(|| super::ptz::not_configured(id))
}

/// `POST /api/cameras/{id}/ptz` (a command) and `GET` (the position).
fn ptz_rest(req: &Request, id: &str, ctx: &Ctx) -> Reply {
    let result = ptz_controller(id, ctx).and_then(|ctrl| {
        if req.method == "POST" {
            let body = serde_json::from_slice::<Value>(&req.body)
                .map_err(|e| (400, format!("request body is not valid JSON: {e}")))?;
            super::ptz::command(&ctrl, &body)
        } else {
            super::ptz::position(&ctrl)
        }
    });
    match result {
        Ok(v) => json_reply(200, &v),
        Err((status, detail)) => error(status, detail),
    }
}

/// A PTZ command from the WebSocket: the reply text.
pub fn ptz_ws(camera_id: &str, command: &Value, ctx: &Ctx) -> String {
    match ptz_controller(camera_id, ctx).and_then(|c| super::ptz::command(&c, command)) {
        Ok(_) => json!({"type": "ptz", "cameraId": camera_id, "success": true}).to_string(),
        Err((_, message)) => json!({"type": "error", "message": message}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<CameraSpec, u16> {
        parse_connect(v.to_string().as_bytes())
            .map(|b| b.spec)
            .map_err(|r| match r {
                Reply::Response(r) => r.status_code().0,
                Reply::Takeover(_) => 0,
            })
    }

    #[test]
    fn connect_defaults_and_validation() {
        let s =
            parse(json!({"cameraId":"c1","ip":"10.0.0.9","username":"u","password":"p"})).unwrap();
        assert_eq!((s.port, s.path.as_str()), (554, "/1"));
        assert_eq!(s.transport, Transport::Auto);
        let s = parse(
            json!({"cameraId":"c1","ip":"[::1]","port":8554,"streamPath":"/s","transport":"tcp"}),
        )
        .unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 8554));
        assert_eq!(parse(json!({"ip":"10.0.0.9"})), Err(422));
        assert_eq!(parse(json!({"cameraId":"c","ip":"a b"})), Err(422));
        assert_eq!(parse(json!({"cameraId":"c","ip":"h","port":0})), Err(422));
        assert_eq!(
            parse(json!({"cameraId":"c","ip":"h","port":"80"})),
            Err(422)
        );
        assert_eq!(
            parse(json!({"cameraId":"c","ip":"h","streamPath":"x@y"})),
            Err(422)
        );
        assert_eq!(parse(json!({"cameraId":5,"ip":"h"})), Err(422));
        assert_eq!(parse(json!([1, 2])), Err(422));
        assert!(
            matches!(parse_connect(b"{nope"), Err(Reply::Response(r)) if r.status_code().0 == 400)
        );
    }

    /// Mutated connect bodies never panic, and whatever is accepted is valid.
    #[test]
    fn fuzz_connect_bodies() {
        let seed = br#"{"cameraId":"c1","ip":"192.168.1.20","username":"admin","password":"p@ss","streamPath":"/1","port":554,"transport":"tcp","ptz":{"protocol":"visca-tcp"}}"#;
        let mut m = crate::fuzz::Mutator::new(0xD1B5_4A32_D192_ED03, b"{}[]\",:@/ 0-", 5);
        for _ in 0..20_000 {
            if let Ok(b) = parse_connect(&m.mutate(seed)) {
                assert!(camera::validate_id(&b.spec.id).is_ok());
                assert!(camera::validate_host(&b.spec.host).is_ok());
                assert!(camera::validate_path(&b.spec.path).is_ok());
                assert!(b.spec.port > 0);
            }
        }
    }
}
