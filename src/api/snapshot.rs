//! Settled snapshots and preset tours over REST: `POST /api/cameras/{id}/snapshot` and
//! `POST /api/cameras/{id}/tour`. Parsing in `params`, the JSON in `status`, the work in
//! `crate::snapshot`; this file finds the camera and its head and maps the outcome.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use super::error::ApiError;
use super::request::{error, jpeg as jpeg_response, json as json_reply, Reply, Request};
use super::{params, status, Ctx};
use crate::camera::feed::Via;
use crate::camera::jpeg::JpegError;
use crate::camera::Camera;
use crate::fleet::FleetError;
use crate::ptz::{Controller, PtzError};
use crate::snapshot::{self, Head, SnapshotError};

/// The failure of a snapshot of camera `id`, as the API reports it.
fn api_error(id: &str, e: SnapshotError) -> ApiError {
    match e {
        SnapshotError::Picture(p) => ApiError::Picture(id.to_owned(), p),
        SnapshotError::Ptz(p) => ApiError::Ptz(p),
        SnapshotError::Timeout(m) => ApiError::Timeout(format!("camera {id}: {m}")),
        SnapshotError::Jpeg(JpegError::Busy) => ApiError::Busy(JpegError::Busy.to_string()),
        SnapshotError::Jpeg(e) => ApiError::Internal(format!("JPEG encoding failed: {e}")),
        SnapshotError::Cancelled => ApiError::Busy(SnapshotError::Cancelled.to_string()),
    }
}

/// A place among the snapshots and tours running at once (see [`snapshot::MAX_RUNNING`],
/// at most half the HTTP workers); given back on drop.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn take(ctx: &'a Ctx) -> Result<Running<'a>, ApiError> {
        let cap = snapshot::MAX_RUNNING
            .min(ctx.config.limits.http_workers / 2)
            .max(1);
        ctx.snapshots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .map_err(|_| {
                ApiError::Busy(format!(
                    "{cap} snapshots or tours are running already; try again shortly"
                ))
            })?;
        Ok(Running(&ctx.snapshots))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The camera and its PTZ controller (if it has one).
fn camera(
    ctx: &Ctx,
    id: &str,
) -> Result<(std::sync::Arc<Camera>, Option<std::sync::Arc<Controller>>), ApiError> {
    let cam = ctx
        .fleet
        .camera(id)
        .ok_or_else(|| ApiError::Fleet(FleetError::NotFound(id.to_owned())))?;
    let ptz = match ctx.fleet.ptz(id) {
        Ok(c) => Some(c),
        Err(FleetError::NoPtz(_)) => None,
        Err(e) => return Err(ApiError::Fleet(e)),
    };
    Ok((cam, ptz))
}

/// `POST /api/cameras/{id}/snapshot`: the settled picture as JPEG (headers say when it
/// was captured, where the head was and how long settling took), or as JSON with base64.
pub fn snapshot(req: &Request, id: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let ask = params::snapshot(&req.body)?;
    let (cam, ptz) = camera(ctx, id)?;
    let _running = Running::take(ctx)?;
    let cancel = &ctx.shutdown;
    let shot = match (ask.shot.preset, &ptz) {
        (Some(_), Some(ctrl)) => {
            let claim = ctrl.claim(&format!("a snapshot of camera {id}"))?;
            snapshot::take(&cam, Head::Held(&claim), ask.shot, cancel)
        }
        (Some(_), None) => return Err(ApiError::Fleet(FleetError::NoPtz(id.to_owned()))),
        (None, Some(ctrl)) => snapshot::take(&cam, Head::Watch(ctrl), ask.shot, cancel),
        (None, None) => snapshot::take(&cam, Head::None, ask.shot, cancel),
    }
    .map_err(|e| api_error(id, e))?;
    let j = &shot.jpeg;
    cam.feed.sent.record(Via::Rest, j.data.len(), j.captured);
    if ask.json {
        return Ok(json_reply(200, &status::snapshot(id, &shot)));
    }
    let mut headers = status::picture_headers(ask.shot.params.crop, j);
    headers.push(("X-Settle-Ms", shot.took.as_millis().to_string()));
    if let Some(p) = shot.position {
        headers.push(("X-Ptz-Position", format!("{},{},{}", p.pan, p.tilt, p.zoom)));
    }
    if let Some(p) = shot.preset {
        headers.push(("X-Preset", p.to_string()));
    }
    Ok(jpeg_response(j.data.clone(), &headers))
}

/// `POST /api/cameras/{id}/tour`: one settled snapshot per preset, in order, as JSON.
/// A failure names how far the tour got; a manual PTZ command during the tour stops it
/// with a 409 saying so.
pub fn tour(req: &Request, id: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let ask = params::tour(&req.body)?;
    let (cam, ptz) = camera(ctx, id)?;
    let ctrl = ptz.ok_or_else(|| ApiError::Fleet(FleetError::NoPtz(id.to_owned())))?;
    let _running = Running::take(ctx)?;
    let started = std::time::Instant::now();
    match snapshot::tour(&cam, &ctrl, &ask.stops, ask.per_stop, &ctx.shutdown) {
        Ok(shots) => {
            for s in &shots {
                cam.feed
                    .sent
                    .record(Via::Rest, s.jpeg.data.len(), s.jpeg.captured);
            }
            Ok(json_reply(
                200,
                &json!({
                    "cameraId": id,
                    "took": started.elapsed().as_secs_f64(),
                    "shots": shots.iter().map(|s| status::snapshot(id, s)).collect::<Vec<Value>>(),
                }),
            ))
        }
        Err(t) => {
            let e = api_error(id, t.error);
            if t.done.is_empty()
                && matches!(
                    e,
                    ApiError::Ptz(PtzError::Claimed(_) | PtzError::Invalid(_))
                )
            {
                return Err(e);
            }
            Ok(error(
                e.status(),
                format!(
                    "tour stopped after {} of {} presets: {e}",
                    t.done.len(),
                    ask.stops.len()
                ),
            ))
        }
    }
}
