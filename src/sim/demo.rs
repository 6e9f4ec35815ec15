//! `--demo`: the bundled simulator (picture and PTZ head) on loopback, connected to the
//! appliance's fleet as camera `demo` with VISCA over TCP. The one way `main` enters `sim`.

use std::net::SocketAddr;
use std::time::Duration;

use super::ptz::PtzSim;
use super::{SimConfig, Simulator};
use crate::camera::{CameraSpec, Transport};
use crate::fleet::{ConnectRequest, Fleet};
use crate::ptz::{Protocol, PtzConfig};
use crate::secret::Secret;

/// The running demo camera. Dropping it stops the simulator (disconnect the camera
/// first, or let the fleet's shutdown do it).
pub struct Demo {
    sim: Option<Simulator>,
    _ptz: PtzSim,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            sim.stop();
        }
    }
}

/// Starts the simulator and connects it as camera `demo`; `api` is where the appliance
/// listens (for the hints it logs).
pub fn start(fleet: &Fleet, api: SocketAddr) -> Result<Demo, String> {
    let ptz_sim = PtzSim::try_start([127, 0, 0, 1].into()).map_err(|e| e.to_string())?;
    // Presets take a moment to reach, as on a real camera.
    ptz_sim.set_preset_travel(Some(Duration::from_millis(1200)));
    let sim = Simulator::start(SimConfig {
        ptz_view: Some(ptz_sim.handle()),
        ..SimConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let spec = CameraSpec {
        id: "demo".into(),
        host: "127.0.0.1".into(),
        port: sim.rtsp_port(),
        path: "/1".into(),
        username: String::new(),
        password: Secret::default(),
        transport: Transport::Tcp,
    };
    let ptz = PtzConfig::new(Protocol::ViscaTcp, Some(ptz_sim.visca_tcp_port()))
        .map_err(|e| e.to_string())?;
    fleet
        .connect(
            ConnectRequest {
                spec,
                ptz: Some(ptz),
                onvif: None,
                // The demo shows change events (SIGUSR1 to a camera-sim, or the scene).
                watch: Some(crate::camera::change::WatchConfig::default()),
            },
            Duration::from_secs(10),
        )
        .map_err(|e| format!("demo camera: {e}"))?;
    let port = api.port();
    log::info!("demo camera connected: try");
    log::info!("  curl http://127.0.0.1:{port}/api/cameras/demo/status");
    log::info!("  curl -o frame.jpg http://127.0.0.1:{port}/api/cameras/demo/frame");
    log::info!(
        "  open http://127.0.0.1:{port}/ for the console (camera demo's page has a PTZ joystick)"
    );
    Ok(Demo {
        sim: Some(sim),
        _ptz: ptz_sim,
    })
}
