//! Pan / tilt / zoom control of cameras: the connect block ([`PtzConfig`]), the commands
//! ([`PtzCommand`]), the [`PtzDriver`] trait with one driver per protocol ([`cgi`],
//! [`visca`]), and the per-camera control thread ([`Controller`]) that serialises a
//! camera's commands and stops a move nobody refreshes.
//!
//! `ptz` never imports `camera`, `api` or `sim`: the API hands it a host, a [`PtzConfig`]
//! and the camera's credentials, and gets back `Result<_, PtzError>`. The simulated head
//! it is tested against lives in `src/sim/ptz.rs`, whose tests exercise these drivers.

// HTTP Basic/Digest helpers, shared with the ONVIF client (src/http_auth.rs); the PTZ
// simulator (src/sim/ptz.rs) answers digest challenges with them too.
pub(crate) use crate::http_auth as auth;
pub mod cgi;
mod controller;
pub mod onvif;
pub mod visca;

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use controller::{Claim, Controller, Controllers, LinkState, PtzHealth, REPLY_WAIT};

/// A camera's control protocol, as the connect block names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// PTZOptics HTTP-CGI (`/cgi-bin/ptzctrl.cgi`), port 80 by default.
    Cgi,
    /// Raw VISCA over TCP (PTZOptics), port 5678 by default.
    ViscaTcp,
    /// Raw VISCA over UDP, no header (PTZOptics), port 1259 by default.
    ViscaUdp,
    /// Sony VISCA over IP (8-byte header, UDP 52381), for other vendors' cameras only.
    ViscaSony,
    /// ONVIF PTZ service (SOAP over HTTP; device service at `/onvif/device_service`),
    /// port 80 by default.
    Onvif,
}

/// Every protocol, for messages and tests.
pub const PROTOCOLS: [Protocol; 5] = [
    Protocol::Cgi,
    Protocol::ViscaTcp,
    Protocol::ViscaUdp,
    Protocol::ViscaSony,
    Protocol::Onvif,
];

impl Protocol {
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Cgi => 80,
            Protocol::ViscaTcp => 5678,
            Protocol::ViscaUdp => 1259,
            Protocol::ViscaSony => 52381,
            Protocol::Onvif => 80,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Cgi => "cgi",
            Protocol::ViscaTcp => "visca-tcp",
            Protocol::ViscaUdp => "visca-udp",
            Protocol::ViscaSony => "visca-sony",
            Protocol::Onvif => "onvif",
        }
    }

    /// Preset numbers the camera uses for its own functions, never for positions.
    /// PTZOptics: 90–99 run camera functions, and recalling 95 opens or closes the
    /// on-screen menu (PTZOptics VISCA and HTTP-CGI command lists; presets are 0–89 and
    /// 100–254). The PTZOptics protocols assume a PTZOptics camera; the Sony variant does not.
    pub fn reserved_presets(self) -> Option<RangeInclusive<u8>> {
        match self {
            Protocol::Cgi | Protocol::ViscaTcp | Protocol::ViscaUdp => Some(90..=99),
            Protocol::ViscaSony | Protocol::Onvif => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = PtzConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PROTOCOLS
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| PtzConfigError::UnknownProtocol(s.to_owned()))
    }
}

/// Where and how to reach a camera's PTZ control. The credentials are the camera's own
/// (CGI reuses them; VISCA has no authentication), so they are not in here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPtzConfig")]
pub struct PtzConfig {
    pub protocol: Protocol,
    pub port: u16,
}

/// The serialized form before validation: `port` may be missing.
#[derive(Deserialize)]
struct RawPtzConfig {
    protocol: Protocol,
    #[serde(default)]
    port: Option<u16>,
}

impl TryFrom<RawPtzConfig> for PtzConfig {
    type Error = PtzConfigError;

    fn try_from(raw: RawPtzConfig) -> Result<Self, Self::Error> {
        PtzConfig::new(raw.protocol, raw.port)
    }
}

impl PtzConfig {
    /// A validated config; `port: None` takes the protocol's default.
    pub fn new(protocol: Protocol, port: Option<u16>) -> Result<PtzConfig, PtzConfigError> {
        let port = port.unwrap_or(protocol.default_port());
        if port == 0 {
            return Err(PtzConfigError::BadPort);
        }
        match (protocol, port) {
            // PTZOptics cameras ignore a packet with the Sony header (ptz-protocols.md), and
            // a half-understood control channel is worse than a refused config.
            (Protocol::ViscaSony, 1259 | 5678) => Err(PtzConfigError::SonyHeaderOnRawPort(port)),
            (Protocol::ViscaTcp | Protocol::ViscaUdp, 52381) => {
                Err(PtzConfigError::RawViscaOnSonyPort(protocol))
            }
            _ => Ok(PtzConfig { protocol, port }),
        }
    }

    /// Reads the connect request's `ptz` block: `null` or a missing block (pass
    /// `Value::Null`) and `{"protocol":"none"}` mean no PTZ control.
    pub fn parse(value: &Value) -> Result<Option<PtzConfig>, PtzConfigError> {
        let m = match value {
            Value::Null => return Ok(None),
            Value::Object(m) => m,
            _ => return Err(PtzConfigError::NotAnObject),
        };
        let protocol = match m.get("protocol") {
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("none") => return Ok(None),
            Some(Value::String(s)) => s.parse::<Protocol>()?,
            None | Some(Value::Null) => return Err(PtzConfigError::MissingProtocol),
            Some(_) => return Err(PtzConfigError::ProtocolNotAString),
        };
        let port = match m.get("port") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(p @ 1..=65535) => Some(p as u16),
                _ => return Err(PtzConfigError::BadPort),
            },
        };
        PtzConfig::new(protocol, port).map(Some)
    }
}

/// Why a `ptz` block (in a connect request or the state file) was refused. The caller
/// should refuse the request that carried it (HTTP: `PtzError::from(e)`, which is
/// [`PtzError::Invalid`], 422, with this text) and not start PTZ control; the user
/// fixes the block as the variant says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtzConfigError {
    /// The block is neither an object nor null: send `{"protocol":"visca-tcp"}` (or
    /// `null`, or `{"protocol":"none"}`, for no PTZ).
    NotAnObject,
    /// No `protocol` field: name one of cgi, visca-tcp, visca-udp, visca-sony, onvif or none.
    MissingProtocol,
    /// `protocol` is not a string: send one of the names as a string.
    ProtocolNotAString,
    /// `protocol` names no protocol this appliance speaks (the value given): use one of
    /// the names listed.
    UnknownProtocol(String),
    /// `port` is not an integer from 1 to 65535: fix it, or leave it out for the
    /// protocol's default.
    BadPort,
    /// `visca-sony` on a PTZOptics raw VISCA port (1259 or 5678, the value given):
    /// PTZOptics cameras ignore the Sony header, so use visca-udp or visca-tcp.
    SonyHeaderOnRawPort(u16),
    /// Raw VISCA (the protocol given) on port 52381, Sony VISCA over IP: use
    /// visca-sony, or the raw protocol on the camera's raw VISCA port.
    RawViscaOnSonyPort(Protocol),
}

impl fmt::Display for PtzConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtzConfigError::NotAnObject => {
                f.write_str("field 'ptz' must be an object like {\"protocol\":\"visca-tcp\"}")
            }
            PtzConfigError::MissingProtocol => f.write_str(
                "field 'ptz.protocol' is required (cgi, visca-tcp, visca-udp, visca-sony, onvif or none)",
            ),
            PtzConfigError::ProtocolNotAString => {
                f.write_str("field 'ptz.protocol' must be a string")
            }
            PtzConfigError::UnknownProtocol(s) => write!(
                f,
                "field 'ptz.protocol' must be one of cgi, visca-tcp, visca-udp, visca-sony, onvif, none (got {s:?})"
            ),
            PtzConfigError::BadPort => {
                f.write_str("field 'ptz.port' must be an integer from 1 to 65535")
            }
            PtzConfigError::SonyHeaderOnRawPort(port) => write!(
                f,
                "port {port} is a PTZOptics raw VISCA port; the Sony header (visca-sony) \
                 is only for other vendors' cameras (default port 52381); use visca-udp or visca-tcp"
            ),
            PtzConfigError::RawViscaOnSonyPort(protocol) => write!(
                f,
                "port 52381 is Sony VISCA over IP, which needs the Sony header; \
                 use protocol visca-sony, or {protocol} on the camera's raw VISCA port"
            ),
        }
    }
}

impl std::error::Error for PtzConfigError {}

/// A refused `ptz` block is a malformed request: [`PtzError::Invalid`].
impl From<PtzConfigError> for PtzError {
    fn from(e: PtzConfigError) -> PtzError {
        PtzError::Invalid(e.to_string())
    }
}

/// What a preset command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetOp {
    /// Move to the stored position (VISCA "recall", CGI `poscall`).
    Goto,
    /// Store the current position (VISCA "set", CGI `posset`).
    Save,
}

impl fmt::Display for PresetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PresetOp::Goto => "goto",
            PresetOp::Save => "save",
        })
    }
}

impl FromStr for PresetOp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "goto" => Ok(PresetOp::Goto),
            "save" => Ok(PresetOp::Save),
            _ => Err(format!(
                "field 'op' must be \"goto\" or \"save\" (got {s:?})"
            )),
        }
    }
}

/// The highest preset number any protocol here can address (VISCA `pp` is one byte, and
/// PTZOptics documents 0–254).
pub const PRESET_MAX: u8 = 254;

/// One command from the app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PtzCommand {
    /// Continuous move; each velocity in -1..=1 (negative pan is left, negative tilt
    /// down, negative zoom out; 0 stops that axis). Lasts until replaced, stopped, or
    /// not refreshed for [`DEADMAN`].
    Move {
        pan: f64,
        tilt: f64,
        zoom: f64,
    },
    Stop,
    Home,
    Preset {
        op: PresetOp,
        index: u8,
    },
}

/// A move that is not refreshed for this long is stopped by the appliance.
pub const DEADMAN: std::time::Duration = std::time::Duration::from_secs(1);

fn velocity(m: &serde_json::Map<String, Value>, axis: &str) -> Result<f64, String> {
    match m.get(axis) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if (-1.0..=1.0).contains(&v) => Ok(v),
            _ => Err(format!(
                "field '{axis}' must be a number from -1 to 1 (got {n})"
            )),
        },
        Some(_) => Err(format!("field '{axis}' must be a number from -1 to 1")),
    }
}

impl PtzCommand {
    /// The command's name in the API (`move`, `stop`, `home`, `preset goto`...).
    pub fn action(&self) -> &'static str {
        match self {
            PtzCommand::Move { .. } => "move",
            PtzCommand::Stop => "stop",
            PtzCommand::Home => "home",
            PtzCommand::Preset {
                op: PresetOp::Goto, ..
            } => "preset goto",
            PtzCommand::Preset {
                op: PresetOp::Save, ..
            } => "preset save",
        }
    }

    /// Reads `{"action":"move","pan":v,"tilt":v,"zoom":v}` (missing axes are 0),
    /// `{"action":"stop"}`, `{"action":"home"}` and
    /// `{"action":"preset","op":"goto"|"save","index":n}`. Other fields are ignored.
    /// Protocol-specific limits (reserved presets) are checked by [`Controller::command`].
    /// A malformed command is [`PtzError::Invalid`] with the reason.
    pub fn parse(value: &Value) -> Result<PtzCommand, PtzError> {
        Self::parse_fields(value).map_err(PtzError::Invalid)
    }

    fn parse_fields(value: &Value) -> Result<PtzCommand, String> {
        let Value::Object(m) = value else {
            return Err("PTZ command must be a JSON object".into());
        };
        let action = match m.get("action") {
            Some(Value::String(a)) => a.as_str(),
            None | Some(Value::Null) => {
                return Err("field 'action' is required (move, stop, home or preset)".into())
            }
            Some(_) => return Err("field 'action' must be a string".into()),
        };
        match action {
            "move" => Ok(PtzCommand::Move {
                pan: velocity(m, "pan")?,
                tilt: velocity(m, "tilt")?,
                zoom: velocity(m, "zoom")?,
            }),
            "stop" => Ok(PtzCommand::Stop),
            "home" => Ok(PtzCommand::Home),
            "preset" => {
                let op = match m.get("op") {
                    Some(Value::String(s)) => s.parse()?,
                    _ => return Err("field 'op' must be \"goto\" or \"save\"".into()),
                };
                let index = match m.get("index").and_then(Value::as_u64) {
                    Some(i) if i <= u64::from(PRESET_MAX) => i as u8,
                    _ => {
                        return Err(format!(
                            "field 'index' must be an integer from 0 to {PRESET_MAX}"
                        ))
                    }
                };
                Ok(PtzCommand::Preset { op, index })
            }
            other => Err(format!(
                "unknown PTZ action {other:?} (expected move, stop, home or preset)"
            )),
        }
    }

    /// Checks values against the protocol's limits; `parse` output always passes the
    /// generic ones, a hand-built command might not.
    pub fn validate(&self, protocol: Protocol) -> Result<(), PtzError> {
        match *self {
            PtzCommand::Move { pan, tilt, zoom } => {
                for (name, v) in [("pan", pan), ("tilt", tilt), ("zoom", zoom)] {
                    if !(-1.0..=1.0).contains(&v) {
                        return Err(PtzError::Invalid(format!(
                            "{name} velocity must be from -1 to 1 (got {v})"
                        )));
                    }
                }
                Ok(())
            }
            PtzCommand::Preset { index, .. } => check_preset(protocol, index),
            PtzCommand::Stop | PtzCommand::Home => Ok(()),
        }
    }
}

/// Refuses preset numbers the camera reserves (see [`Protocol::reserved_presets`]).
pub fn check_preset(protocol: Protocol, index: u8) -> Result<(), PtzError> {
    if index > PRESET_MAX {
        return Err(PtzError::Invalid(format!(
            "preset index must be from 0 to {PRESET_MAX} (got {index})"
        )));
    }
    if let Some(r) = protocol.reserved_presets() {
        if r.contains(&index) {
            return Err(PtzError::Invalid(format!(
                "preset {index} is reserved on PTZOptics cameras ({}-{} run camera functions; \
                 95 opens the on-screen menu): use 0-89 or 100-{PRESET_MAX}",
                r.start(),
                r.end()
            )));
        }
    }
    Ok(())
}

/// Absolute position in the camera's own units (VISCA: pan and tilt signed 16-bit,
/// zoom 0 (wide) to 0x4000 (optical tele) on PTZOptics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub pan: i32,
    pub tilt: i32,
    pub zoom: i32,
}

/// Why a PTZ request failed. Each variant's doc says what the caller should do;
/// The API maps each variant to an HTTP status (`api::error`). The text (`Display`) is fit
/// for the reply's `detail` and never contains a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtzError {
    /// The request is malformed or out of range (a bad command, a reserved preset, a
    /// refused `ptz` block): refuse it with the text; the sender must fix it, and
    /// retrying it unchanged fails again (422). Says nothing about the camera.
    Invalid(String),
    /// The camera's protocol cannot do this (e.g. position over HTTP-CGI): tell the user
    /// to connect the camera with a protocol that can; do not retry (501).
    Unsupported(String),
    /// The camera did not answer in time: it may be off, unreachable or hung; report it,
    /// and retry later (504). A move may still have been executed: send a stop if the
    /// user lets go.
    Timeout,
    /// The camera could not be reached, refused the request or answered with an error
    /// (wrong password, VISCA error reply; the text says which): report it; retrying
    /// helps only once the camera or its settings are fixed (502).
    Camera(String),
    /// The camera's command buffers or the queue in front of it are full (callers
    /// already waiting): retry shortly, or drop the command if a newer one follows (503).
    Busy,
    /// This camera's PTZ control has stopped (the camera was disconnected or replaced):
    /// do not retry on this controller; connect the camera again (503).
    Closed,
    /// The head is claimed by an automated run (a tour or settled snapshot; the text
    /// says which): wait for it to end, or send a manual command, which ends it (409).
    Claimed(String),
    /// A manual command ended this automated run (the text says which command): report
    /// it to whoever started the run; do not retry without the user's say (409).
    Interrupted(String),
}

impl fmt::Display for PtzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtzError::Invalid(m) | PtzError::Unsupported(m) => f.write_str(m),
            PtzError::Timeout => f.write_str("the camera did not answer the PTZ command in time"),
            PtzError::Camera(m) => write!(f, "camera PTZ error: {m}"),
            PtzError::Busy => {
                f.write_str("the camera is busy with other PTZ commands; retry shortly")
            }
            PtzError::Closed => f.write_str("PTZ control of this camera has stopped"),
            PtzError::Claimed(what) => write!(f, "the camera's head is busy with {what}"),
            PtzError::Interrupted(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for PtzError {}

/// One protocol's way of driving a camera. Called from one thread only (the camera's
/// [`Controller`]), so a driver owns its connection and needs no locks. Velocities are
/// already validated (-1..=1); every call blocks at most about a second per camera
/// exchange and returns the camera's verdict.
pub trait PtzDriver: Send {
    /// Starts (or changes) a continuous move; 0 on an axis stops that axis.
    fn move_continuous(&mut self, pan: f64, tilt: f64, zoom: f64) -> Result<(), PtzError>;
    /// Stops pan, tilt and zoom. Must be sent even if the driver believes the camera is
    /// still: the last move may have been executed without a reply.
    fn stop(&mut self) -> Result<(), PtzError>;
    fn home(&mut self) -> Result<(), PtzError>;
    fn preset_goto(&mut self, index: u8) -> Result<(), PtzError>;
    fn preset_save(&mut self, index: u8) -> Result<(), PtzError>;
    fn position(&mut self) -> Result<Position, PtzError>;
    /// Called when the control thread has been idle for a while: a cheap exchange that
    /// notices a dead connection (and reconnects). `None`: the protocol has no keep-alive
    /// (HTTP-CGI opens a connection per request), the default.
    fn keepalive(&mut self) -> Option<Result<(), PtzError>> {
        None
    }
}

/// Builds the driver for a config. The password is handed to the CGI and ONVIF drivers only.
pub fn open_driver(
    camera_id: &str,
    host: &str,
    cfg: PtzConfig,
    username: &str,
    password: &crate::secret::Secret,
) -> Box<dyn PtzDriver> {
    match cfg.protocol {
        Protocol::Cgi => Box::new(cgi::CgiDriver::new(
            camera_id,
            host,
            cfg.port,
            username,
            password.clone(),
        )),
        Protocol::ViscaTcp | Protocol::ViscaUdp | Protocol::ViscaSony => {
            Box::new(visca::ViscaDriver::new(camera_id, host, cfg))
        }
        Protocol::Onvif => Box::new(onvif::OnvifDriver::new(
            camera_id,
            host,
            cfg.port,
            username,
            password.clone(),
        )),
    }
}

/// One axis of a continuous move in the camera's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Stop,
    /// Left, down or out (wide), at this speed.
    Negative(u8),
    /// Right, up or in (tele), at this speed.
    Positive(u8),
}

/// Velocities this close to 0 stop the axis: joysticks rarely rest at exactly 0.
pub const DEAD_ZONE: f64 = 0.01;

/// Maps a velocity in -1..=1 onto the camera's speed range `min..=max`, linearly and
/// evenly: the range is cut into `max - min + 1` equal steps, so 1.0 is `max` and the
/// smallest velocity outside [`DEAD_ZONE`] is `min`.
pub fn axis(v: f64, min: u8, max: u8) -> Axis {
    if !v.is_finite() || v.abs() < DEAD_ZONE {
        return Axis::Stop;
    }
    let steps = f64::from(max - min + 1);
    let speed = (f64::from(min) + (v.abs().min(1.0) * steps).ceil() - 1.0)
        .clamp(f64::from(min), f64::from(max)) as u8;
    if v < 0.0 {
        Axis::Negative(speed)
    } else {
        Axis::Positive(speed)
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_defaults_and_none() {
        let p = |v: Value| PtzConfig::parse(&v);
        assert_eq!(p(Value::Null), Ok(None));
        assert_eq!(p(json!({"protocol": "none", "port": 12})), Ok(None));
        for (name, port) in [
            ("cgi", 80),
            ("visca-tcp", 5678),
            ("visca-udp", 1259),
            ("visca-sony", 52381),
            ("onvif", 80),
        ] {
            let c = p(json!({ "protocol": name })).unwrap().unwrap();
            assert_eq!((c.protocol.as_str(), c.port), (name, port));
        }
        assert_eq!(
            p(json!({"protocol": "VISCA-TCP", "port": 6000})),
            Ok(Some(PtzConfig {
                protocol: Protocol::ViscaTcp,
                port: 6000
            }))
        );
    }

    #[test]
    fn config_errors() {
        let e = |v: Value| PtzConfig::parse(&v).unwrap_err().to_string();
        assert!(e(json!({"protocol": "onvif2"})).contains("must be one of"));
        assert!(e(json!({})).contains("required"));
        assert!(e(json!({"protocol": 3})).contains("string"));
        assert!(e(json!({"protocol": "cgi", "port": 0})).contains("1 to 65535"));
        assert!(e(json!({"protocol": "cgi", "port": 70000})).contains("1 to 65535"));
        assert!(e(json!({"protocol": "cgi", "port": "80"})).contains("1 to 65535"));
        assert!(e(json!("cgi")).contains("object"));
        // The Sony header never goes to a PTZOptics port, nor raw VISCA to the Sony port.
        assert!(e(json!({"protocol": "visca-sony", "port": 1259})).contains("PTZOptics"));
        assert!(e(json!({"protocol": "visca-sony", "port": 5678})).contains("PTZOptics"));
        assert!(e(json!({"protocol": "visca-udp", "port": 52381})).contains("visca-sony"));
        // The variants, for callers that act on the kind rather than the text.
        let k = |v: Value| PtzConfig::parse(&v).unwrap_err();
        assert_eq!(
            k(json!({"protocol": "onvif2"})),
            PtzConfigError::UnknownProtocol("onvif2".into())
        );
        assert_eq!(k(json!({})), PtzConfigError::MissingProtocol);
        assert_eq!(
            k(json!({"protocol": 3})),
            PtzConfigError::ProtocolNotAString
        );
        assert_eq!(
            k(json!({"protocol": "cgi", "port": 0})),
            PtzConfigError::BadPort
        );
        assert_eq!(k(json!(1)), PtzConfigError::NotAnObject);
        assert_eq!(
            k(json!({"protocol": "visca-sony", "port": 5678})),
            PtzConfigError::SonyHeaderOnRawPort(5678)
        );
        assert_eq!(
            PtzConfig::new(Protocol::ViscaTcp, Some(52381)),
            Err(PtzConfigError::RawViscaOnSonyPort(Protocol::ViscaTcp))
        );
        assert_eq!(
            "udp".parse::<Protocol>(),
            Err(PtzConfigError::UnknownProtocol("udp".into()))
        );
        // A refused block is Invalid, like every malformed PTZ request.
        let e = PtzError::from(PtzConfigError::BadPort);
        assert_eq!(e, PtzError::Invalid(PtzConfigError::BadPort.to_string()));
    }

    #[test]
    fn config_serde_round_trip() {
        let c = PtzConfig::new(Protocol::ViscaUdp, None).unwrap();
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(s, r#"{"protocol":"visca-udp","port":1259}"#);
        assert_eq!(serde_json::from_str::<PtzConfig>(&s).unwrap(), c);
        let d: PtzConfig = serde_json::from_str(r#"{"protocol":"cgi"}"#).unwrap();
        assert_eq!(d.port, 80);
        assert!(
            serde_json::from_str::<PtzConfig>(r#"{"protocol":"visca-sony","port":1259}"#).is_err()
        );
    }

    #[test]
    fn command_parse() {
        let p = |v: Value| PtzCommand::parse(&v);
        assert_eq!(
            p(json!({"action": "move", "pan": 0.5})),
            Ok(PtzCommand::Move {
                pan: 0.5,
                tilt: 0.0,
                zoom: 0.0
            })
        );
        assert_eq!(
            p(json!({"action": "move", "pan": -1, "tilt": 1, "zoom": null})),
            Ok(PtzCommand::Move {
                pan: -1.0,
                tilt: 1.0,
                zoom: 0.0
            })
        );
        assert_eq!(p(json!({"action": "stop"})), Ok(PtzCommand::Stop));
        assert_eq!(
            p(json!({"action": "home", "extra": 1})),
            Ok(PtzCommand::Home)
        );
        assert_eq!(
            p(json!({"action": "preset", "op": "save", "index": 254})),
            Ok(PtzCommand::Preset {
                op: PresetOp::Save,
                index: 254
            })
        );
    }

    #[test]
    fn command_parse_errors() {
        let e = |v: Value| PtzCommand::parse(&v).unwrap_err().to_string();
        assert!(e(json!({"action": "move", "pan": 1.5}))
            .contains("'pan' must be a number from -1 to 1"));
        assert!(e(json!({"action": "move", "zoom": "fast"})).contains("'zoom'"));
        assert!(e(json!({"action": "preset", "op": "goto", "index": 255})).contains("0 to 254"));
        assert!(e(json!({"action": "preset", "op": "goto", "index": -1})).contains("0 to 254"));
        assert!(e(json!({"action": "preset", "op": "goto", "index": 1.5})).contains("0 to 254"));
        assert!(e(json!({"action": "preset", "op": "delete", "index": 1})).contains("'op'"));
        assert!(e(json!({"action": "preset", "index": 1})).contains("'op'"));
        assert!(e(json!({"action": "focus"})).contains("unknown PTZ action"));
        assert!(e(json!({"pan": 1})).contains("'action' is required"));
        assert!(e(json!([1])).contains("object"));
    }

    #[test]
    fn reserved_presets_per_protocol() {
        for p in [Protocol::Cgi, Protocol::ViscaTcp, Protocol::ViscaUdp] {
            for i in 90..=99 {
                let e = check_preset(p, i).unwrap_err();
                assert!(matches!(e, PtzError::Invalid(_)), "{e}");
                assert!(e.to_string().contains("reserved"), "{e}");
            }
            assert!(check_preset(p, 89).is_ok() && check_preset(p, 100).is_ok());
        }
        assert!(check_preset(Protocol::ViscaSony, 95).is_ok());
        assert!(check_preset(Protocol::Cgi, 255).is_err());
    }

    #[test]
    fn axis_mapping_covers_the_range() {
        // VISCA pan 0x01-0x18.
        assert_eq!(axis(0.0, 1, 0x18), Axis::Stop);
        assert_eq!(axis(0.005, 1, 0x18), Axis::Stop);
        assert_eq!(axis(0.02, 1, 0x18), Axis::Positive(1));
        assert_eq!(axis(0.5, 1, 0x18), Axis::Positive(12));
        assert_eq!(axis(1.0, 1, 0x18), Axis::Positive(0x18));
        assert_eq!(axis(-1.0, 1, 0x14), Axis::Negative(0x14));
        // VISCA zoom 0-7: eight steps.
        assert_eq!(axis(0.1, 0, 7), Axis::Positive(0));
        assert_eq!(axis(1.0, 0, 7), Axis::Positive(7));
        assert_eq!(axis(-0.5, 0, 7), Axis::Negative(3));
        // CGI zoom 1-7.
        assert_eq!(axis(1.0, 1, 7), Axis::Positive(7));
        assert_eq!(axis(f64::NAN, 1, 7), Axis::Stop);
        // Monotonic.
        let mut last = 0;
        for i in 1..=100 {
            let Axis::Positive(s) = axis(f64::from(i) / 100.0, 1, 24) else {
                panic!()
            };
            assert!(s >= last);
            last = s;
        }
    }
}
