//! PTZ requests, for the REST route `POST/GET /api/cameras/{id}/ptz` and the WebSocket
//! action `{"action":"ptz","cameraId":..,"command":{..}}`: find the camera's controller,
//! parse the command, run it, and answer JSON or an [`ApiError`]. No routing here.

use std::sync::Arc;

use serde_json::{json, Value};

use super::error::ApiError;
use crate::fleet::Fleet;
use crate::ptz::{Controller, PtzCommand};

/// The camera's controller, or why there is none (unknown camera, no PTZ block).
pub fn controller(fleet: &Fleet, camera_id: &str) -> Result<Arc<Controller>, ApiError> {
    Ok(fleet.ptz(camera_id)?)
}

/// Parses and runs one command (`{"action":"move"|"stop"|"home"|"preset",...}`).
/// Success: `{"success":true}`. A malformed or out-of-range command (including
/// PTZOptics' reserved presets 90-99) is [`ApiError::Invalid`].
pub fn command(ctrl: &Controller, body: &Value) -> Result<Value, ApiError> {
    let cmd = PtzCommand::parse(body)?;
    ctrl.command(cmd).map_err(|e| {
        log::debug!("{}: PTZ {cmd:?} failed: {e}", ctrl.camera_id());
        ApiError::Ptz(e)
    })?;
    Ok(json!({"success": true}))
}

/// The camera's position: `{"pan":int,"tilt":int,"zoom":int}` in its own units
/// (501 for HTTP-CGI, which cannot report it).
pub fn position(ctrl: &Controller) -> Result<Value, ApiError> {
    let p = ctrl.position()?;
    Ok(json!({"pan": p.pan, "tilt": p.tilt, "zoom": p.zoom}))
}

/// A PTZ command from the WebSocket: the reply message.
pub fn ws_command(fleet: &Fleet, camera_id: &str, body: &Value) -> Value {
    match controller(fleet, camera_id).and_then(|c| command(&c, body)) {
        Ok(_) => json!({"type": "ptz", "cameraId": camera_id, "success": true}),
        Err(e) => json!({"type": "error", "message": e.to_string()}),
    }
}
