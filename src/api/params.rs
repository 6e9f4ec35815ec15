//! Request parameters: every default and range the API accepts, parsed and validated in
//! one place (query strings, the connect body, and the WebSocket subscribe fields).
//! Snapping sizes and qualities to what is cached is the JPEG service's policy, not ours.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::Request;
use crate::camera::change::WatchConfig;
use crate::camera::jpeg::{Crop, DEFAULT_QUALITY};
use crate::camera::{self, CameraSpec, JpegParams, Transport};
use crate::fleet::ConnectRequest;
use crate::onvif::OnvifSource;
use crate::ptz::{Protocol, PtzConfig};
use crate::secret::Secret;
use crate::snapshot::{self, Shot, Stop};

/// `width` of a picture, in pixels (scaled down only, aspect kept).
pub const WIDTH: RangeInclusive<u64> = 16..=7680;
/// JPEG `quality`.
pub const QUALITY: RangeInclusive<u64> = 1..=100;
/// Pictures per second of a stream (`fps`).
pub const FPS: RangeInclusive<f64> = 0.1..=60.0;
/// A stream's rate when `fps` is not given (the first version's default).
pub const DEFAULT_FPS: f64 = 15.0;
/// The RTSP port when connect does not name one.
pub const DEFAULT_RTSP_PORT: u16 = 554;
/// The stream path when connect does not name one (the contract's default).
pub const DEFAULT_STREAM_PATH: &str = "/1";

/// How far `x + w` (or `y + h`) may pass 1 and still count as 1: decimal fractions that
/// add up to 1 can sum to 1.0000000000000002 in binary floating point.
const CROP_SUM_SLACK: f64 = 1e-9;

/// A watch block's `threshold`: the share of thumbnail cells that must change.
pub const WATCH_THRESHOLD: RangeInclusive<f64> = 0.01..=1.0;
/// A watch block's `cooldown`, in seconds: the least time between two change events.
pub const WATCH_COOLDOWN: RangeInclusive<f64> = 0.5..=3600.0;

/// A watch block (connect's `watch` field, or the body of `POST .../watch`): `true`
/// (defaults), `false` or null (off), or `{"enabled", "threshold", "cooldown"}` (each
/// optional; `enabled` defaults to true, absent values to their defaults). `Ok(None)`
/// is "off".
pub fn watch(v: &Value) -> Result<Option<WatchConfig>, ApiError> {
    let invalid = |s: String| ApiError::Invalid(s);
    let o = match v {
        Value::Null | Value::Bool(false) => return Ok(None),
        Value::Bool(true) => return Ok(Some(WatchConfig::default())),
        Value::Object(o) => o,
        _ => {
            return Err(invalid(
                "watch must be true, false or {\"threshold\": 0.05, \"cooldown\": 2}".into(),
            ))
        }
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "enabled" | "threshold" | "cooldown"))
    {
        return Err(invalid(format!(
            "watch has an unknown field {k:?} (known: enabled, threshold, cooldown)"
        )));
    }
    match o.get("enabled") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(None),
        Some(_) => return Err(invalid("watch.enabled must be true or false".into())),
    }
    let mut config = WatchConfig::default();
    match o.get("threshold") {
        None | Some(Value::Null) => {}
        Some(t) => {
            let t = t
                .as_f64()
                .filter(|t| WATCH_THRESHOLD.contains(t))
                .ok_or_else(|| {
                    out_of_range(
                        "watch.threshold",
                        "a number (the share of changed cells)",
                        &WATCH_THRESHOLD,
                    )
                })?;
            config.threshold = t as f32;
        }
    }
    match o.get("cooldown") {
        None | Some(Value::Null) => {}
        Some(c) => {
            let c = c
                .as_f64()
                .filter(|c| WATCH_COOLDOWN.contains(c))
                .ok_or_else(|| {
                    out_of_range("watch.cooldown", "a number of seconds", &WATCH_COOLDOWN)
                })?;
            config.cooldown = std::time::Duration::from_secs_f64(c);
        }
    }
    Ok(Some(config))
}

/// The body of `POST /api/cameras/{id}/watch`: a watch block.
pub fn watch_body(body: &[u8]) -> Result<Option<WatchConfig>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => watch(&v),
        Err(e) => Err(ApiError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

/// A value out of its range: 422 with what the range is.
fn out_of_range<T: std::fmt::Display>(name: &str, kind: &str, r: &RangeInclusive<T>) -> ApiError {
    ApiError::Invalid(format!(
        "{name} must be {kind} from {} to {}",
        r.start(),
        r.end()
    ))
}

pub fn check_width(w: Option<u64>) -> Result<u32, ApiError> {
    w.filter(|w| WIDTH.contains(w))
        .map(|w| w as u32)
        .ok_or_else(|| out_of_range("width", "an integer", &WIDTH))
}

pub fn check_quality(q: Option<u64>) -> Result<u8, ApiError> {
    q.filter(|q| QUALITY.contains(q))
        .map(|q| q as u8)
        .ok_or_else(|| out_of_range("quality", "an integer", &QUALITY))
}

pub fn check_fps(f: Option<f64>) -> Result<f64, ApiError> {
    f.filter(|f| FPS.contains(f))
        .ok_or_else(|| out_of_range("fps", "a number", &FPS))
}

/// A crop `[x, y, w, h]` (fractions of the picture: left, top, width, height), checked
/// and snapped to the grid of [`Crop`] (steps of 1/[`CROP_GRID`](crate::camera::jpeg::CROP_GRID)). `x` and `y` from 0,
/// `w` and `h` above 0, `x + w` and `y + h` at most 1.
pub fn check_crop(v: [f64; 4]) -> Result<Crop, ApiError> {
    let [x, y, w, h] = v;
    let invalid = |s: &str| Err(ApiError::Invalid(format!("crop: {s}")));
    if v.iter().any(|f| !f.is_finite()) {
        return invalid("x, y, w and h must be finite numbers");
    }
    if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
        return invalid(&format!(
            "x and y (left and top) must be fractions from 0 to 1, got {x},{y}"
        ));
    }
    if w <= 0.0 || h <= 0.0 || w > 1.0 || h > 1.0 {
        return invalid(&format!(
            "w and h (width and height) must be fractions above 0 and at most 1, got {w},{h}"
        ));
    }
    if x + w > 1.0 + CROP_SUM_SLACK || y + h > 1.0 + CROP_SUM_SLACK {
        return invalid(&format!(
            "the region must lie inside the picture (x + w and y + h at most 1), got {x},{y},{w},{h}"
        ));
    }
    Ok(Crop::new(x, y, w, h))
}

/// A crop in its text form `x,y,w,h` (the query parameter; WebSocket also takes it).
pub fn parse_crop(text: &str) -> Result<Crop, ApiError> {
    let parts: Vec<Option<f64>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    match parts[..] {
        [Some(x), Some(y), Some(w), Some(h)] => check_crop([x, y, w, h]),
        _ => Err(ApiError::Invalid(format!(
            "crop must be four numbers x,y,w,h (fractions of the picture: left, top, width, \
             height, e.g. 0.25,0.25,0.5,0.5), got {:?}",
            text.chars().take(64).collect::<String>()
        ))),
    }
}

/// A crop in a JSON body or message: an array `[x, y, w, h]` of numbers or the string
/// `"x,y,w,h"`; absent or null is no crop.
pub fn crop_value(v: Option<&Value>) -> Result<Option<Crop>, ApiError> {
    let numbers = |a: &Vec<Value>| -> Option<[f64; 4]> {
        match a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>()?[..] {
            [x, y, w, h] => Some([x, y, w, h]),
            _ => None,
        }
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_crop(s).map(Some),
        Some(Value::Array(a)) => match numbers(a) {
            Some(v) => check_crop(v).map(Some),
            None => Err(ApiError::Invalid(
                "crop must be an array of four numbers [x, y, w, h] (fractions of the \
                 picture: left, top, width, height) or the string \"x,y,w,h\""
                    .into(),
            )),
        },
        Some(_) => Err(ApiError::Invalid(
            "crop must be [x, y, w, h] (fractions of the picture) or \"x,y,w,h\"".into(),
        )),
    }
}

/// `width`, `quality` and `crop` from the query.
pub fn jpeg(req: &Request) -> Result<JpegParams, ApiError> {
    let width = match req.query_param("width") {
        None => None,
        Some(w) => Some(check_width(w.parse().ok())?),
    };
    let quality = match req.query_param("quality") {
        None => DEFAULT_QUALITY,
        Some(q) => check_quality(q.parse().ok())?,
    };
    let crop = match req.query_param("crop") {
        None => None,
        Some(c) => Some(parse_crop(&c)?),
    };
    Ok(JpegParams {
        width,
        quality,
        crop,
    })
}

/// `fps` from the query.
pub fn fps(req: &Request) -> Result<f64, ApiError> {
    match req.query_param("fps") {
        None => Ok(DEFAULT_FPS),
        Some(f) => check_fps(f.parse().ok().filter(|f: &f64| f.is_finite())),
    }
}

/// A snapshot's time limit, in seconds (`timeout`).
pub const SNAPSHOT_TIMEOUT: RangeInclusive<f64> = 0.5..=60.0;

/// What `POST /api/cameras/{id}/snapshot` asks for, and whether the reply is JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotRequest {
    pub shot: Shot,
    pub json: bool,
}

/// What `POST /api/cameras/{id}/tour` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TourRequest {
    pub stops: Vec<Stop>,
    pub per_stop: Duration,
}

/// An optional integer field within `range`.
fn int_field(
    m: &Map<String, Value>,
    name: &str,
    range: RangeInclusive<u64>,
) -> Result<Option<u64>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| out_of_range(&format!("field '{name}'"), "an integer", &range)),
    }
}

/// `width`, `quality` and `crop` of a JSON body (as the query's; `crop` as on the
/// WebSocket: `[x,y,w,h]` or `"x,y,w,h"`).
fn jpeg_fields(m: &Map<String, Value>) -> Result<JpegParams, ApiError> {
    let width = int_field(m, "width", WIDTH)?.map(|w| w as u32);
    let quality = int_field(m, "quality", QUALITY)?.map_or(DEFAULT_QUALITY, |q| q as u8);
    let crop = crop_value(m.get("crop"))?;
    Ok(JpegParams {
        width,
        quality,
        crop,
    })
}

/// `timeout` (seconds) of a JSON body.
fn timeout_field(m: &Map<String, Value>) -> Result<Duration, ApiError> {
    match m.get("timeout") {
        None | Some(Value::Null) => Ok(snapshot::DEFAULT_TIMEOUT),
        Some(v) => v
            .as_f64()
            .filter(|t| SNAPSHOT_TIMEOUT.contains(t))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                out_of_range("field 'timeout'", "a number of seconds", &SNAPSHOT_TIMEOUT)
            }),
    }
}

/// The snapshot body (may be empty): `preset`, `width`, `quality`, `crop`, `timeout` (seconds),
/// `format` (`"jpeg"`, the default, or `"json"`).
pub fn snapshot(body: &[u8]) -> Result<SnapshotRequest, ApiError> {
    let m = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        object(body)?
    };
    let json = match m.get("format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "jpeg" => false,
        Some(Value::String(f)) if f == "json" => true,
        Some(_) => {
            return Err(ApiError::Invalid(
                "field 'format' must be \"jpeg\" or \"json\"".into(),
            ))
        }
    };
    Ok(SnapshotRequest {
        shot: Shot {
            preset: int_field(&m, "preset", 0..=255)?.map(|p| p as u8),
            params: jpeg_fields(&m)?,
            timeout: timeout_field(&m)?,
        },
        json,
    })
}

/// The tour body: `stops` (1 to 16 presets, each a number or `{"preset": n}` with its
/// own `width`, `quality`, `crop`), and `width`, `quality`, `crop` and `timeout` (seconds
/// per stop) for all of them.
pub fn tour(body: &[u8]) -> Result<TourRequest, ApiError> {
    let m = object(body)?;
    let params = jpeg_fields(&m)?;
    let Some(Value::Array(list)) = m.get("stops") else {
        return Err(ApiError::Invalid(
            "field 'stops' must be an array of presets".into(),
        ));
    };
    if list.is_empty() || list.len() > snapshot::MAX_STOPS {
        return Err(ApiError::Invalid(format!(
            "field 'stops' must list 1 to {} presets",
            snapshot::MAX_STOPS
        )));
    }
    let stops = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = || {
                ApiError::Invalid(format!(
                    "stops[{i}] must be a preset number 0-255 or {{\"preset\": n}}"
                ))
            };
            let (preset, own) = match v {
                Value::Number(_) => (v.as_u64(), None),
                Value::Object(o) => (o.get("preset").and_then(Value::as_u64), Some(o)),
                _ => return Err(bad()),
            };
            let preset = preset.filter(|p| *p <= 255).ok_or_else(bad)? as u8;
            // A stop's own width, quality and crop win over the tour's.
            let params = match own {
                Some(o) => {
                    let mine = jpeg_fields(o)?;
                    JpegParams {
                        width: mine.width.or(params.width),
                        quality: if o.contains_key("quality") {
                            mine.quality
                        } else {
                            params.quality
                        },
                        crop: mine.crop.or(params.crop),
                    }
                }
                None => params,
            };
            Ok(Stop { preset, params })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TourRequest {
        stops,
        per_stop: timeout_field(&m)?,
    })
}

/// A JSON object body.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::Invalid(
            "request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

/// A string field; `default` when absent or null, else required.
pub fn str_field(
    m: &Map<String, Value>,
    name: &str,
    default: Option<&str>,
) -> Result<String, ApiError> {
    match m.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => default
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Invalid(format!("field '{name}' is required"))),
        Some(_) => Err(ApiError::Invalid(format!(
            "field '{name}' must be a string"
        ))),
    }
}

/// The connect body's ONVIF form: `"onvif": true` (the first profile) or
/// `{"profile": "<token>"}`, with `onvifPort` (default: the `ptz` block's port when it
/// is ONVIF, else 80). An ONVIF `ptz` block without a port takes `onvifPort`.
fn onvif_source(
    m: &Map<String, Value>,
    host: &str,
    ptz: Option<PtzConfig>,
) -> Result<(Option<OnvifSource>, Option<PtzConfig>), ApiError> {
    let ptz_port_given = m
        .get("ptz")
        .and_then(|p| p.get("port"))
        .is_some_and(|p| !p.is_null());
    let onvif_ptz = ptz.filter(|p| p.protocol == Protocol::Onvif);
    let default_port = match onvif_ptz {
        Some(p) if ptz_port_given => p.port,
        _ => DEFAULT_ONVIF_PORT,
    };
    let port = port_field(m, "onvifPort", default_port)?;
    let ptz = match ptz {
        Some(p) if p.protocol == Protocol::Onvif && !ptz_port_given => {
            Some(PtzConfig { port, ..p })
        }
        other => other,
    };
    let profile = match m.get("onvif") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok((None, ptz)),
        Some(Value::Bool(true)) => None,
        Some(Value::Object(o)) => match o.get("profile") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => Some(t.clone()),
            Some(_) => {
                return Err(ApiError::Invalid(
                    "field 'onvif.profile' must be a profile token (1 to 64 characters)".into(),
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::Invalid(
                "field 'onvif' must be true or {\"profile\": \"<token>\"}".into(),
            ))
        }
    };
    Ok((
        Some(OnvifSource {
            host: host.to_owned(),
            port,
            profile,
        }),
        ptz,
    ))
}

/// The body of `POST /api/cameras/connect`.
pub fn connect(body: &[u8]) -> Result<ConnectRequest, ApiError> {
    let invalid = ApiError::Invalid;
    let bad = |e: camera::SpecError| ApiError::Invalid(e.to_string());
    let m = object(body)?;
    let id = str_field(&m, "cameraId", None)?;
    camera::validate_id(&id).map_err(bad)?;
    let host = str_field(&m, "ip", None)?.trim().to_owned();
    camera::validate_host(&host).map_err(bad)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let username = str_field(&m, "username", Some(""))?;
    let password = Secret::new(str_field(&m, "password", Some(""))?);
    let ptz = PtzConfig::parse(m.get("ptz").unwrap_or(&Value::Null))
        .map_err(|e| invalid(format!("ptz: {e}")))?;
    let (onvif, ptz) = onvif_source(&m, &host, ptz)?;
    if onvif.is_some() && !matches!(m.get("streamPath"), None | Some(Value::Null)) {
        return Err(invalid(
            "give either 'streamPath' or 'onvif' (the device then names the stream)".into(),
        ));
    }
    let path = str_field(&m, "streamPath", Some(DEFAULT_STREAM_PATH))?;
    camera::validate_path(&path).map_err(bad)?;
    let port = match m.get("port") {
        None | Some(Value::Null) => DEFAULT_RTSP_PORT,
        Some(v) => match v.as_u64() {
            Some(p @ 1..=65535) => p as u16,
            _ => {
                return Err(invalid(
                    "field 'port' must be an integer from 1 to 65535".into(),
                ))
            }
        },
    };
    let transport = match m.get("transport") {
        None | Some(Value::Null) => Transport::Auto,
        Some(Value::String(s)) => s.parse().map_err(bad)?,
        Some(_) => return Err(invalid("field 'transport' must be a string".into())),
    };
    let watch = watch(m.get("watch").unwrap_or(&Value::Null))?;
    Ok(ConnectRequest {
        ptz,
        onvif,
        watch,
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

/// `timeout` of `GET /api/discover`, in seconds.
pub const DISCOVER_TIMEOUT: RangeInclusive<f64> = 0.1..=10.0;
pub const DEFAULT_DISCOVER_TIMEOUT: f64 = 2.0;
/// The ONVIF HTTP port when a request does not name one.
pub const DEFAULT_ONVIF_PORT: u16 = 80;

/// `?timeout=` seconds for a WS-Discovery probe.
pub fn discover_timeout(req: &Request) -> Result<std::time::Duration, ApiError> {
    let secs = match req.query_param("timeout") {
        None => DEFAULT_DISCOVER_TIMEOUT,
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|t| DISCOVER_TIMEOUT.contains(t))
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "timeout must be a number of seconds from {} to {}",
                    DISCOVER_TIMEOUT.start(),
                    DISCOVER_TIMEOUT.end()
                ))
            })?,
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A port field: absent or null gives `default`.
fn port_field(m: &Map<String, Value>, name: &str, default: u16) -> Result<u16, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(p @ 1..=65535) => Ok(p as u16),
            _ => Err(ApiError::Invalid(format!(
                "field '{name}' must be an integer from 1 to 65535"
            ))),
        },
    }
}

/// The body of `POST /api/discover/inspect`: `{ip, port?, username?, password?}`.
pub struct InspectRequest {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
}

pub fn inspect(body: &[u8]) -> Result<InspectRequest, ApiError> {
    let m = object(body)?;
    let host = str_field(&m, "ip", None)?.trim().to_owned();
    camera::validate_host(&host).map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(InspectRequest {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: port_field(&m, "port", DEFAULT_ONVIF_PORT)?,
        username: str_field(&m, "username", Some(""))?,
        password: Secret::new(str_field(&m, "password", Some(""))?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CameraSpec, u16> {
        connect(v.to_string().as_bytes())
            .map(|b| b.spec)
            .map_err(|e| e.status())
    }

    #[test]
    fn watch_blocks() {
        let w = |v: Value| watch(&v).map_err(|e| (e.status(), e.to_string()));
        assert_eq!(w(json!(null)), Ok(None));
        assert_eq!(w(json!(false)), Ok(None));
        assert_eq!(w(json!({"enabled": false, "threshold": 0.5})), Ok(None));
        assert_eq!(w(json!(true)), Ok(Some(WatchConfig::default())));
        assert_eq!(w(json!({})), Ok(Some(WatchConfig::default())));
        let c = w(json!({"threshold": 0.1, "cooldown": 0.5}))
            .unwrap()
            .unwrap();
        assert_eq!(c.threshold, 0.1);
        assert_eq!(c.cooldown, std::time::Duration::from_millis(500));
        for (bad, says) in [
            (json!({"threshold": 0}), "watch.threshold must be a number"),
            (json!({"threshold": 1.5}), "from 0.01 to 1"),
            (json!({"threshold": "0.1"}), "watch.threshold"),
            (
                json!({"cooldown": 0.1}),
                "watch.cooldown must be a number of seconds from 0.5 to 3600",
            ),
            (json!({"cooldown": -1}), "watch.cooldown"),
            (
                json!({"enabled": "yes"}),
                "watch.enabled must be true or false",
            ),
            (json!({"treshold": 0.1}), "unknown field \"treshold\""),
            (json!(1), "watch must be true, false or"),
        ] {
            let (status, text) = w(bad.clone()).unwrap_err();
            assert_eq!(status, 422, "{bad}");
            assert!(text.contains(says), "{bad}: {text}");
        }
        assert_eq!(watch_body(b"{").map_err(|e| e.status()), Err(400));
        assert_eq!(watch_body(b"true").unwrap(), Some(WatchConfig::default()));
        let r = connect(br#"{"cameraId":"c","ip":"h","watch":{"cooldown":3}}"#).unwrap();
        assert_eq!(r.watch.unwrap().cooldown, std::time::Duration::from_secs(3));
        assert_eq!(
            connect(br#"{"cameraId":"c","ip":"h"}"#).unwrap().watch,
            None
        );
        assert_eq!(
            connect(br#"{"cameraId":"c","ip":"h","watch":"on"}"#)
                .map(|_| ())
                .map_err(|e| e.status()),
            Err(422)
        );
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
        assert_eq!(
            connect(b"{nope").map(|_| ()).map_err(|e| e.status()),
            Err(400)
        );
    }

    /// Mutated connect bodies never panic, and whatever is accepted is valid.
    #[test]
    fn fuzz_connect_bodies() {
        let seed = br#"{"cameraId":"c1","ip":"192.168.1.20","username":"admin","password":"p@ss","streamPath":"/1","port":554,"transport":"tcp","ptz":{"protocol":"visca-tcp"}}"#;
        let mut m = crate::fuzz::Mutator::new(0xD1B5_4A32_D192_ED03, b"{}[]\",:@/ 0-", 5);
        for _ in 0..20_000 {
            if let Ok(b) = connect(&m.mutate(seed)) {
                assert!(camera::validate_id(&b.spec.id).is_ok());
                assert!(camera::validate_host(&b.spec.host).is_ok());
                assert!(camera::validate_path(&b.spec.path).is_ok());
                assert!(b.spec.port > 0);
            }
        }
    }

    #[test]
    fn connect_by_onvif() {
        let req = |v: Value| connect(v.to_string().as_bytes());
        let base = json!({"cameraId": "c", "ip": "10.0.0.5", "onvif": true});
        let r = req(base.clone()).unwrap();
        assert_eq!(
            r.onvif,
            Some(OnvifSource {
                host: "10.0.0.5".into(),
                port: 80,
                profile: None
            })
        );
        assert!(r.ptz.is_none());
        let mut b = base.clone();
        b["onvif"] = json!({"profile": "Profile_2"});
        b["onvifPort"] = json!(8000);
        b["ptz"] = json!({"protocol": "onvif"});
        let r = req(b).unwrap();
        assert_eq!(
            r.onvif,
            Some(OnvifSource {
                host: "10.0.0.5".into(),
                port: 8000,
                profile: Some("Profile_2".into())
            })
        );
        assert_eq!(
            r.ptz.map(|p| p.port),
            Some(8000),
            "the PTZ block takes onvifPort"
        );
        let mut b = base.clone();
        b["ptz"] = json!({"protocol": "onvif", "port": 8080});
        assert_eq!(req(b).unwrap().onvif.map(|o| o.port), Some(8080));
        // The contract's form is unchanged.
        let r = req(json!({"cameraId": "c", "ip": "h", "streamPath": "/s"})).unwrap();
        assert!(r.onvif.is_none());
        let st = |v: Value| req(v).map(|_| ()).map_err(|e| e.status());
        let mut b = base.clone();
        b["streamPath"] = json!("/1");
        assert_eq!(st(b), Err(422));
        for bad in [
            json!(1),
            json!("yes"),
            json!({"profile": 3}),
            json!({"profile": ""}),
        ] {
            let mut b = base.clone();
            b["onvif"] = bad;
            assert_eq!(st(b), Err(422));
        }
        let mut b = base.clone();
        b["onvifPort"] = json!(0);
        assert_eq!(st(b), Err(422));
        let mut b = base;
        b["onvif"] = json!(false);
        assert!(req(b).unwrap().onvif.is_none());
    }

    #[test]
    fn inspect_bodies() {
        let ok = inspect(br#"{"ip":"[::1]","username":"u","password":"p"}"#).unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("::1", 80));
        let ok = inspect(br#"{"ip":"10.0.0.5","port":8000}"#).unwrap();
        assert_eq!((ok.port, ok.username.as_str()), (8000, ""));
        let st = |b: &[u8]| inspect(b).map(|_| ()).map_err(|e| e.status());
        assert_eq!(st(br#"{"port":80}"#), Err(422));
        assert_eq!(st(br#"{"ip":"a b"}"#), Err(422));
        assert_eq!(st(br#"{"ip":"h","port":0}"#), Err(422));
        assert_eq!(st(b"nope"), Err(400));
    }

    /// Mutated ONVIF connect and inspect bodies never panic; what is accepted is valid.
    #[test]
    fn fuzz_onvif_bodies() {
        let seed = br#"{"cameraId":"c1","ip":"192.168.1.20","username":"admin","password":"p","onvif":{"profile":"Profile_1"},"onvifPort":8000,"ptz":{"protocol":"onvif"}}"#;
        let mut m = crate::fuzz::Mutator::new(0x5EED_0F0F_1234_ABCD, b"{}[]\",:@/ 0-tf", 5);
        for _ in 0..20_000 {
            let body = m.mutate(seed);
            if let Ok(b) = connect(&body) {
                if let Some(o) = &b.onvif {
                    assert!(o.port > 0);
                    assert!(o
                        .profile
                        .as_ref()
                        .is_none_or(|p| !p.is_empty() && p.len() <= 64));
                    assert_eq!(o.host, b.spec.host);
                }
            }
            if let Ok(i) = inspect(&body) {
                assert!(camera::validate_host(&i.host).is_ok() && i.port > 0);
            }
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(check_width(Some(16)), Ok(16));
        assert_eq!(
            check_width(Some(8)).unwrap_err().to_string(),
            "width must be an integer from 16 to 7680"
        );
        assert!(check_width(Some(15)).is_err());
        assert!(check_width(None).is_err());
        assert_eq!(check_quality(Some(100)), Ok(100));
        assert!(check_quality(Some(0)).is_err());
        assert!(check_fps(Some(60.5)).is_err());
        assert_eq!(check_fps(Some(0.1)), Ok(0.1));
    }

    #[test]
    fn crops() {
        let ok = |s: &str| parse_crop(s).map(|c| c.to_string());
        assert_eq!(ok("0.25,0.25,0.5,0.5").unwrap(), "0.25,0.25,0.5,0.5");
        assert_eq!(ok(" 0 , 0 ,1, 1 ").unwrap(), "0,0,1,1");
        assert_eq!(ok("0.1234,0,0.5,0.5").unwrap(), "0.123,0,0.5,0.5");
        assert_eq!(ok("0.7,0.6,0.3,0.4").unwrap(), "0.7,0.6,0.3,0.4");
        for (bad, why) in [
            ("", "four numbers"),
            ("0.1,0.1,0.5", "four numbers"),
            ("0.1,0.1,0.5,0.5,0.5", "four numbers"),
            ("a,b,c,d", "four numbers"),
            ("NaN,0,0.5,0.5", "finite"),
            ("inf,0,0.5,0.5", "finite"),
            ("-0.1,0,0.5,0.5", "x and y"),
            ("0,1.5,0.5,0.5", "x and y"),
            ("0,0,0,0.5", "w and h"),
            ("0,0,0.5,-1", "w and h"),
            ("0,0,1.5,1", "w and h"),
            ("0.6,0,0.5,0.5", "inside the picture"),
            ("0,0.5,0.5,0.51", "inside the picture"),
        ] {
            let e = parse_crop(bad).expect_err(bad);
            assert_eq!(e.status(), 422, "{bad}");
            let text = e.to_string();
            assert!(text.starts_with("crop"), "{bad}: {text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
        // JSON forms: an array or the string; null is none.
        use serde_json::json;
        let v = |v: Value| crop_value(Some(&v)).map(|c| c.map(|c| c.to_string()));
        assert_eq!(
            v(json!([0.25, 0.25, 0.5, 0.5])).unwrap().unwrap(),
            "0.25,0.25,0.5,0.5"
        );
        assert_eq!(v(json!([0, 0, 1, 1])).unwrap().unwrap(), "0,0,1,1");
        assert_eq!(v(json!("0,0,0.1,0.1")).unwrap().unwrap(), "0,0,0.1,0.1");
        assert_eq!(v(Value::Null).unwrap(), None);
        assert_eq!(crop_value(None).unwrap(), None);
        for bad in [
            json!([0, 0, 1]),
            json!([0, 0, "1", 1]),
            json!(5),
            json!({"x": 0}),
            json!([0, 0, 2, 1]),
        ] {
            let e = v(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(e.status(), 422);
            assert!(e.to_string().starts_with("crop"), "{e}");
        }
    }
}
