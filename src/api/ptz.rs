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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptz::sim::PtzSim;
    use crate::ptz::{Protocol, PtzConfig};
    use crate::secret::Secret;

    #[test]
    fn command_and_position_bodies() {
        let sim = PtzSim::start("127.0.0.1".parse().unwrap());
        let cfg = PtzConfig::new(Protocol::ViscaTcp, Some(sim.visca_tcp_port())).unwrap();
        let ctrl = Controller::start("api", "127.0.0.1", cfg, "", &Secret::default());
        assert_eq!(
            command(&ctrl, &json!({"action": "move", "pan": 1})),
            Ok(json!({"success": true}))
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            command(&ctrl, &json!({"action": "stop"})),
            Ok(json!({"success": true}))
        );
        let p = position(&ctrl).unwrap();
        assert!(p["pan"].as_i64().unwrap() > 0, "{p}");
        assert!(p["tilt"].is_i64() && p["zoom"].is_i64());
        let (status, detail) = command(
            &ctrl,
            &json!({"action": "preset", "op": "goto", "index": 95}),
        )
        .unwrap_err();
        assert_eq!(status, 422);
        assert!(detail.contains("reserved"), "{detail}");
        let (status, _) = command(&ctrl, &json!({"action": "jump"})).unwrap_err();
        assert_eq!(status, 422);
        ctrl.stop_thread();
    }

    #[test]
    fn cgi_position_is_501() {
        let sim = PtzSim::start("127.0.0.1".parse().unwrap());
        let cfg = PtzConfig::new(Protocol::Cgi, Some(sim.http_port())).unwrap();
        let ctrl = Controller::start("api-cgi", "127.0.0.1", cfg, "", &Secret::default());
        assert_eq!(position(&ctrl).unwrap_err().0, 501);
        assert_eq!(not_configured("x").0, 404);
    }
}
