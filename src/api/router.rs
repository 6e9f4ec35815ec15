//! The router: the app's compatible surface (`/health`, connect, disconnect, status,
//! frame) and our extensions (camera list, sized frames, MJPEG, PTZ, WebSocket, metrics,
//! the OpenAPI description). Every route is listed in [`ROUTES`]. Routes
//! parse with `params`, act through the `Fleet`, answer with `status` JSON, and fail
//! with an `ApiError` (one status per kind, `{"detail": "..."}`). Imports go down from
//! here: nothing imports the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tiny_http::{Response, StatusCode};

use super::error::ApiError;
use super::request::{
    error, header, jpeg as jpeg_response, json as json_reply, percent_decode, Reply, Request,
};
use super::{console, mjpeg, onvif, params, ptz, snapshot, status, ws, Ctx};
use crate::camera::feed::Via;
use crate::camera::jpeg::{Crop, JpegError};
use crate::camera::Camera;

use crate::metrics;

/// How long connect waits for the first picture (the first version's 5 s).
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// A picture is fresh when it is at most this much older than the camera's newest packet
/// (a frame interval or two of decoding).
const FRESH: Duration = Duration::from_millis(50);
/// How long `/frame` waits for a fresh picture when decoding had stopped.
const FRAME_WAIT: Duration = Duration::from_millis(1500);

/// Every route, as (method, path pattern); `{name}` is one path segment. `HEAD` goes
/// wherever `GET` does, `OPTIONS` (CORS preflight) anywhere. The router answers `405` for
/// a path of this table with another method and `404` off it; `docs/openapi.json` has
/// exactly these paths and methods (its test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/console/{file}"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/ws"),
    ("GET", "/api/cameras"),
    ("POST", "/api/cameras/connect"),
    ("POST", "/api/cameras/disconnect"),
    ("GET", "/api/cameras/{cameraId}/status"),
    ("GET", "/api/cameras/{cameraId}/frame"),
    ("GET", "/api/cameras/{cameraId}/mjpeg"),
    ("POST", "/api/cameras/{cameraId}/snapshot"),
    ("POST", "/api/cameras/{cameraId}/tour"),
    ("GET", "/api/cameras/{cameraId}/ptz"),
    ("POST", "/api/cameras/{cameraId}/ptz"),
    ("GET", "/api/cameras/{cameraId}/watch"),
    ("POST", "/api/cameras/{cameraId}/watch"),
    ("GET", "/api/discover"),
    ("POST", "/api/discover/inspect"),
];

/// The reply for a failure.
fn fail(e: ApiError) -> Reply {
    error(e.status(), e.to_string())
}

/// 200 with the JSON, or the failure.
fn result(r: Result<Value, ApiError>) -> Reply {
    match r {
        Ok(v) => json_reply(200, &v),
        Err(e) => fail(e),
    }
}

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
    // The console's files hold no data; the API calls the page makes carry the token.
    match segs.as_slice() {
        [] if get => return console::page(req),
        ["console", name] if get => return console::asset(req, name),
        _ => {}
    }
    // The API's description holds no data either.
    if segs.as_slice() == ["openapi.json"] && get {
        return openapi();
    }
    if !authorized(req, ctx) {
        return unauthorized();
    }
    match segs.as_slice() {
        ["ws"] if get => ws::upgrade(req, ctx),
        ["metrics"] if get => metrics(req, ctx),
        ["api", "cameras", "connect"] if post => connect(req, ctx),
        ["api", "cameras", "disconnect"] if post => disconnect(req, ctx),
        ["api", "cameras"] if get => list(ctx),
        // ONVIF discovery (api/onvif.rs).
        ["api", "discover"] if get => result(onvif::discover(req, ctx)),
        ["api", "discover", "inspect"] if post => result(onvif::inspect(req, ctx)),
        ["api", "cameras", id, rest] => {
            let Some(id) = percent_decode(id) else {
                return fail(ApiError::BadRequest(
                    "camera id is not valid percent-encoded UTF-8".into(),
                ));
            };
            match (*rest, get) {
                ("status", true) => status(&id, ctx),
                ("frame", true) => frame(req, &id, ctx),
                ("ptz", _) if get || post => ptz_rest(req, &id, ctx),
                ("snapshot", false) if post => {
                    snapshot::snapshot(req, &id, ctx).unwrap_or_else(fail)
                }
                ("tour", false) if post => snapshot::tour(req, &id, ctx).unwrap_or_else(fail),
                ("watch", _) if get || post => watch(req, &id, ctx, post),
                ("mjpeg", true) => match camera_or_404(&id, ctx) {
                    Ok(cam) => mjpeg::stream(req, cam, ctx),
                    Err(r) => r,
                },
                _ => unrouted(&segs),
            }
        }
        _ => unrouted(&segs),
    }
}

/// The answer to a request no route took: `405` (with `Allow`) when [`ROUTES`] has its
/// path with other methods, else `404`.
fn unrouted(segs: &[&str]) -> Reply {
    let mut allow: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, pattern)| path_matches(pattern, segs))
        .map(|(method, _)| *method)
        .collect();
    if allow.is_empty() {
        return error(404, "Not Found");
    }
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    allow.push("OPTIONS");
    match error(405, "Method Not Allowed") {
        Reply::Response(r) => {
            Reply::Response(r.with_header(header("Allow", &allow.join(", "))).boxed())
        }
        other => other,
    }
}

/// Whether path segments `segs` fit `pattern` (`{name}` stands for any non-empty segment).
fn path_matches(pattern: &str, segs: &[&str]) -> bool {
    let pat: Vec<&str> = pattern.trim_end_matches('/').split('/').skip(1).collect();
    pat.len() == segs.len()
        && pat
            .iter()
            .zip(segs)
            .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
}

/// `GET /metrics`: Prometheus text (OpenMetrics when the scraper asks for it).
fn metrics(req: &Request, ctx: &Ctx) -> Reply {
    let format = metrics::Format::from_accept(req.header("Accept"));
    match metrics::render(&ctx.fleet, format) {
        Ok(text) => Reply::Response(
            Response::from_data(text)
                .with_header(header("Content-Type", format.content_type()))
                .with_header(header("Cache-Control", "no-store"))
                .boxed(),
        ),
        Err(_) => fail(ApiError::Internal("cannot encode the metrics".into())),
    }
}

/// The OpenAPI 3.1 description of this API (docs/openapi.json, kept equal to [`ROUTES`]
/// by its test).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

fn openapi() -> Reply {
    Reply::Response(
        Response::from_data(OPENAPI)
            .with_header(header("Content-Type", "application/json"))
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
    json_reply(
        200,
        &status::health(
            &ctx.fleet,
            ctx.config.decoder.as_deref(),
            ctx.started.elapsed(),
        ),
    )
}

fn connect(req: &Request, ctx: &Ctx) -> Reply {
    let body = match params::connect(&req.body) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let id = body.spec.id.clone();
    let started = Instant::now();
    match ctx.fleet.connect(body, CONNECT_WAIT) {
        Ok(()) => {
            log::info!(
                "{id}: connected, first picture after {} ms",
                started.elapsed().as_millis()
            );
            json_reply(
                200,
                &json!({"success": true, "cameraId": id, "message": "Camera connected successfully"}),
            )
        }
        Err(e) => {
            log::warn!("{id}: connect failed: {e}");
            fail(e.into())
        }
    }
}

fn disconnect(req: &Request, ctx: &Ctx) -> Reply {
    let id = match params::object(&req.body).and_then(|m| params::str_field(&m, "cameraId", None)) {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    ctx.fleet.disconnect(&id);
    json_reply(
        200,
        &json!({"success": true, "message": "Camera disconnected"}),
    )
}

fn list(ctx: &Ctx) -> Reply {
    let cams: Vec<Value> = ctx.fleet.list().iter().map(status::camera).collect();
    json_reply(200, &json!({ "cameras": cams }))
}

fn camera_or_404(id: &str, ctx: &Ctx) -> Result<Arc<Camera>, Reply> {
    ctx.fleet
        .camera(id)
        .ok_or_else(|| fail(crate::fleet::FleetError::NotFound(id.to_owned()).into()))
}

fn status(id: &str, ctx: &Ctx) -> Reply {
    match ctx.fleet.view(id) {
        Some(v) => json_reply(200, &status::camera(&v)),
        None => fail(crate::fleet::FleetError::NotFound(id.to_owned()).into()),
    }
}

/// The JPEG of a picture, with its seq, capture time and age (and the crop, if asked).
fn jpeg_reply(cam: &Camera, jpeg: &crate::camera::Jpeg, crop: Option<Crop>) -> Reply {
    // Counted as the reply is handed to the connection, which writes it at once.
    cam.feed
        .sent
        .record(Via::Rest, jpeg.data.len(), jpeg.captured);
    jpeg_response(jpeg.data.clone(), &status::picture_headers(crop, jpeg))
}

/// `/frame?seq=N`: the picture of a change event, while it is kept (the camera keeps
/// the last few, at the default size and quality).
fn event_frame(req: &Request, cam: &Camera, seq: &str) -> Reply {
    if ["width", "quality", "crop"]
        .iter()
        .any(|p| req.query_param(p).is_some())
    {
        return fail(ApiError::Invalid(
            "seq gives a change event's picture as kept (default size and quality): \
             leave width, quality and crop out"
                .into(),
        ));
    }
    let Ok(seq) = seq.parse::<u64>() else {
        return fail(ApiError::Invalid(
            "seq must be a picture number (a change event's seq)".into(),
        ));
    };
    match cam.event_picture(seq) {
        Some(jpeg) => jpeg_reply(cam, &jpeg, None),
        None => error(
            404,
            format!(
                "Picture {seq} of camera {} is not kept: only the pictures of its last {} \
                 change events are",
                cam.id(),
                crate::camera::supervisor::EVENT_PICTURES
            ),
        ),
    }
}

/// A camera's change watching: `GET` reads it, `POST` (a watch block) sets it; both
/// answer the status's `watch` object.
fn watch(req: &Request, id: &str, ctx: &Ctx, set: bool) -> Reply {
    if set {
        let config = match params::watch_body(&req.body) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        if let Err(e) = ctx.fleet.set_watch(id, config) {
            return fail(e.into());
        }
        log::info!(
            "{id}: change watching {}",
            if config.is_some() { "on" } else { "off" }
        );
    }
    match camera_or_404(id, ctx) {
        Ok(cam) => json_reply(200, &status::watch(&cam.watch_status())),
        Err(r) => r,
    }
}

/// The newest picture as JPEG. During an outage (no packet for a few seconds) it is
/// 503, never an old picture passed off as new; `X-Frame-Age` says how old the picture
/// is (seconds since its packet arrived).
fn frame(req: &Request, id: &str, ctx: &Ctx) -> Reply {
    let params = match params::jpeg(req) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let cam = match camera_or_404(id, ctx) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(seq) = req.query_param("seq") {
        return event_frame(req, &cam, &seq);
    }
    let frame = match cam.fresh_frame(FRAME_WAIT, FRESH) {
        Ok(f) => f,
        Err(e) => return fail(ApiError::Picture(id.to_owned(), e)),
    };
    match cam.feed.jpeg.get(&frame, params) {
        Ok(jpeg) => jpeg_reply(&cam, &jpeg, params.crop),
        Err(JpegError::Busy) => fail(ApiError::Busy(JpegError::Busy.to_string())),
        Err(e) => {
            log::error!("{id}: JPEG encoding failed: {e}");
            fail(ApiError::Internal(format!("JPEG encoding failed: {e}")))
        }
    }
}

/// `POST /api/cameras/{id}/ptz` (a command) and `GET` (the position).
fn ptz_rest(req: &Request, id: &str, ctx: &Ctx) -> Reply {
    let result = ptz::controller(&ctx.fleet, id).and_then(|ctrl| {
        if req.method == "POST" {
            let body = serde_json::from_slice::<Value>(&req.body).map_err(|e| {
                ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
            })?;
            ptz::command(&ctrl, &body)
        } else {
            ptz::position(&ctrl)
        }
    });
    match result {
        Ok(v) => json_reply(200, &v),
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::CameraOptions;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::fleet::Fleet;

    fn ctx() -> Arc<Ctx> {
        gstreamer::init().expect("GStreamer init");
        let config = Config::default();
        let fleet = Fleet::new(
            CameraOptions {
                decode: config.decode,
                decoder: None,
                decoder_threads: 1,
            },
            4,
            None,
            Clock::system(),
        );
        Ctx::new(Arc::new(fleet), config)
    }

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: Vec::new(),
            body: Vec::new(),
            peer: "127.0.0.1:9".parse().expect("an address"),
            http_minor: 1,
        }
    }

    /// The status, `Allow` header and body of what the router answers.
    fn answer(ctx: &Arc<Ctx>, method: &str, path: &str) -> (u16, Option<String>, String) {
        match route(&request(method, path), ctx) {
            Reply::Response(r) => {
                let status = r.status_code().0;
                let allow = r
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Allow"))
                    .map(|h| h.value.to_string());
                let mut raw = Vec::new();
                r.raw_print(&mut raw, tiny_http::HTTPVersion(1, 1), &[], false, None)
                    .expect("print to memory");
                let text = String::from_utf8_lossy(&raw).into_owned();
                let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_owned();
                (status, allow, body)
            }
            Reply::Takeover(_) => (101, None, String::new()),
        }
    }

    fn concrete(pattern: &str) -> String {
        pattern
            .replace("{cameraId}", "nocam")
            .replace("{file}", "app.js")
    }

    /// Every route of the table reaches a handler: not 405, and not the 404 of a path
    /// no route has (a handler's 404 names the camera).
    #[test]
    fn every_route_of_the_table_is_routed() {
        let ctx = ctx();
        for (method, pattern) in ROUTES {
            let path = concrete(pattern);
            let (status, _, body) = answer(&ctx, method, &path);
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(
                !(status == 404 && body.contains("\"Not Found\"")),
                "{method} {path} is in ROUTES but the router does not route it: {body}"
            );
        }
    }

    /// A path of the table with a method it does not list is 405 with `Allow`; a path
    /// off the table is 404.
    #[test]
    fn other_methods_are_405_and_other_paths_404() {
        let ctx = ctx();
        for (_, pattern) in ROUTES {
            let listed: Vec<&str> = ROUTES
                .iter()
                .filter(|(_, p)| p == pattern)
                .map(|(m, _)| *m)
                .collect();
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                if listed.contains(&method) {
                    continue;
                }
                let path = concrete(pattern);
                let (status, allow, body) = answer(&ctx, method, &path);
                assert_eq!(status, 405, "{method} {path}: {body}");
                let allow = allow.expect("405 carries Allow");
                for m in &listed {
                    assert!(allow.contains(m), "{method} {path}: Allow {allow:?}");
                }
            }
        }
        for path in [
            "/nope",
            "/api",
            "/api/cameras/x/nope",
            "/api/cameras/x/status/more",
            "/health/x",
        ] {
            let (status, _, body) = answer(&ctx, "GET", path);
            assert_eq!(status, 404, "GET {path}: {body}");
        }
    }

    #[test]
    fn path_patterns() {
        assert!(path_matches("/", &[]));
        assert!(path_matches(
            "/api/cameras/{cameraId}/status",
            &["api", "cameras", "c", "status"]
        ));
        assert!(!path_matches(
            "/api/cameras/{cameraId}/status",
            &["api", "cameras", "", "status"]
        ));
        assert!(!path_matches("/api/cameras", &["api", "cameras", "c"]));
        assert!(!path_matches("/health", &[]));
    }
}
