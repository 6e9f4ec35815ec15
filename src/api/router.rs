//! The router: the app's compatible surface (`/health`, connect, disconnect, status,
//! frame) and our extensions (camera list, sized frames, MJPEG, PTZ, WebSocket). Routes
//! parse with `params`, act through the `Fleet`, answer with `status` JSON, and fail
//! with an `ApiError` (one status per kind, `{"detail": "..."}`). Imports go down from
//! here: nothing imports the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tiny_http::{Response, StatusCode};

use super::error::ApiError;
use super::request::{error, header, json as json_reply, percent_decode, Reply, Request};
use super::{mjpeg, onvif, params, ptz, status, ws, Ctx};
use crate::camera::jpeg::JpegError;
use crate::camera::Camera;
use crate::clock::unix_now;

/// How long connect waits for the first picture (the first version's 5 s).
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// A picture is fresh when it is at most this much older than the camera's newest packet
/// (a frame interval or two of decoding).
const FRESH: Duration = Duration::from_millis(50);
/// How long `/frame` waits for a fresh picture when decoding had stopped.
const FRAME_WAIT: Duration = Duration::from_millis(1500);

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
    // The viewer page holds no data; the API calls it makes carry the token.
    if segs.is_empty() && get {
        return index();
    }
    if !authorized(req, ctx) {
        return unauthorized();
    }
    match segs.as_slice() {
        ["ws"] if get => ws::upgrade(req, ctx),
        ["api", "cameras", "connect"] if post => connect(req, ctx),
        ["api", "cameras", "disconnect"] if post => disconnect(req, ctx),
        ["api", "cameras"] if get => list(ctx),
        // ONVIF discovery (api/onvif.rs).
        ["api", "discover"] if get => result(onvif::discover(req, ctx)),
        ["api", "discover", "inspect"] if post => result(onvif::inspect(req, ctx)),
        ["api", "discover"] | ["api", "discover", "inspect"] => error(405, "Method Not Allowed"),
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
                ("mjpeg", true) => match camera_or_404(&id, ctx) {
                    Ok(cam) => mjpeg::stream(req, cam, ctx),
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
    let frame = match cam.fresh_frame(FRAME_WAIT, FRESH) {
        Ok(f) => f,
        Err(e) => return fail(ApiError::Picture(id.to_owned(), e)),
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
                    "X-Frame-Age",
                    &format!("{:.3}", (unix_now() - jpeg.captured).max(0.0)),
                ))
                .with_header(header(
                    "Access-Control-Expose-Headers",
                    "X-Frame-Seq, X-Frame-Timestamp, X-Frame-Age",
                ))
                .boxed(),
        ),
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
