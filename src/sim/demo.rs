//! `--demo`: the bundled simulator (picture and PTZ head) on loopback, connected to the
//! appliance's fleet as camera `demo` with VISCA over TCP. The one way `main` enters `sim`.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ptz::PtzSim;
use super::{Scene, SimConfig, Simulator};
use crate::camera::{CameraSpec, Transport};
use crate::fleet::{ConnectRequest, Fleet};
use crate::ptz::{Protocol, PtzConfig};
use crate::secret::Secret;

/// How often the demo's scene changes: an object appears for [`OBJECT_SHOWN`] once in
/// this time, so the camera's change events show without anyone touching anything.
const SCENE_EVERY: Duration = Duration::from_secs(30);
const OBJECT_SHOWN: Duration = Duration::from_secs(10);

/// The running demo camera. Dropping it stops the scene thread and the simulator
/// (disconnect the camera first, or let the fleet's shutdown do it).
pub struct Demo {
    scene: Option<(crossbeam_channel::Sender<()>, JoinHandle<()>)>,
    sim: Option<Simulator>,
    _ptz: PtzSim,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.scene.take() {
            drop(stop);
            let _ = thread.join();
        }
        if let Some(sim) = self.sim.take() {
            sim.stop();
        }
    }
}

/// `demo-scene`: puts the object into the scene for [`OBJECT_SHOWN`] every
/// [`SCENE_EVERY`], until `stop` is dropped.
fn scene_thread(scene: Scene) -> Result<(crossbeam_channel::Sender<()>, JoinHandle<()>), String> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("demo-scene".into())
        .spawn(move || loop {
            // Wait, then show the object; wait, then take it away.
            for (wait, show) in [(SCENE_EVERY - OBJECT_SHOWN, true), (OBJECT_SHOWN, false)] {
                match stopped.recv_timeout(wait) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => scene.set_object(show),
                    _ => return,
                }
            }
        })
        .map_err(|e| format!("demo scene thread: {e}"))?;
    Ok((stop, thread))
}

/// Starts the simulator and connects it as camera `demo`; `api` is where the appliance
/// listens (for the hints it logs).
pub fn start(fleet: &Fleet, api: SocketAddr) -> Result<Demo, String> {
    let ptz_sim = PtzSim::try_start([127, 0, 0, 1].into()).map_err(|e| e.to_string())?;
    // Presets take a moment to reach, as on a real camera.
    ptz_sim.set_preset_travel(Some(Duration::from_millis(1200)));
    let scene = Scene::default();
    let sim = Simulator::start(SimConfig {
        ptz_view: Some(ptz_sim.handle()),
        scene: scene.clone(),
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
                // The demo shows change events: its scene changes every 30 s.
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
    log::info!(
        "  an object enters the demo scene for 10 s every 30 s: change events on the \
         WebSocket ({{\"action\":\"watch\",\"cameraIds\":[\"demo\"]}})"
    );
    Ok(Demo {
        scene: Some(scene_thread(scene)?),
        sim: Some(sim),
        _ptz: ptz_sim,
    })
}
