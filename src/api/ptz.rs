//! PTZ request handling for the REST route `POST/GET /api/cameras/{id}/ptz` and the
//! WebSocket action `{"action":"ptz","cameraId":..,"command":{..}}`: parse the command,
//! run it on the camera's `ptz::Controller`, and turn the outcome into a JSON body or an
//! `(HTTP status, detail)` pair. No routing here.

use serde_json::{json, Value};

use crate::ptz::{Controller, PtzCommand};

/// Parses and runs one command (`{"action":"move"|"stop"|"home"|"preset",...}`).
/// Success: `{"success":true}`. Errors: 422 for a malformed or out-of-range command
/// (including PTZOptics' reserved presets 90-99), else [`crate::ptz::PtzError::http_status`].
pub fn command(ctrl: &Controller, body: &Value) -> Result<Value, (u16, String)> {
    let cmd = PtzCommand::parse(body).map_err(|e| (422, e))?;
    ctrl.command(cmd).map_err(|e| {
        log::debug!("{}: PTZ {cmd:?} failed: {e}", ctrl.camera_id());
        (e.http_status(), e.to_string())
    })?;
    Ok(json!({"success": true}))
}

/// The camera's position: `{"pan":int,"tilt":int,"zoom":int}` in its own units
/// (501 for HTTP-CGI, which cannot report it).
pub fn position(ctrl: &Controller) -> Result<Value, (u16, String)> {
    let p = ctrl
        .position()
        .map_err(|e| (e.http_status(), e.to_string()))?;
    Ok(json!({"pan": p.pan, "tilt": p.tilt, "zoom": p.zoom}))
}

/// The error for a camera that has no PTZ control configured (connected without a
/// `ptz` block, or with `"protocol":"none"`).
pub fn not_configured(camera_id: &str) -> (u16, String) {
    (
        404,
        format!("Camera {camera_id} has no PTZ control (connect it with a \"ptz\" block)"),
    )
}

// The bodies of `command` and `position` against a real controller and the PTZ simulator
// are tested in src/sim/ptz_tests.rs (product modules never import the simulator).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_configured_is_404_and_names_the_camera() {
        let (status, detail) = not_configured("cam7");
        assert_eq!(status, 404);
        assert!(detail.contains("cam7"), "{detail}");
    }
}
