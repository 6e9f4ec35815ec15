//! ptz-edge: an edge appliance that pulls PTZ cameras' RTSP streams, keeps the newest
//! picture and serves it as JPEG over REST and WebSocket, and drives pan / tilt / zoom.
//!
//! Calls go one way: `api` → `camera` and `ptz`; `camera` and `ptz` never import `api`
//! or each other.

pub mod api;
pub mod camera;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod fleet;
#[cfg(test)]
mod fuzz;
pub(crate) mod http_auth;
pub mod meter;
pub mod metrics;
pub mod motion;
pub mod onvif;
pub mod ptz;
pub mod secret;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod state;
