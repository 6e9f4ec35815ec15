//! A simulated PTZOptics-style control interface for tests and laptop runs: raw VISCA on
//! TCP and UDP, Sony-headered VISCA on UDP, and the HTTP-CGI endpoint (optionally behind
//! Digest or Basic auth), all on free ports, driving one pan / tilt / zoom state that
//! moves with the commanded velocity over time.
//!
//! Not part of the product: it speaks the protocols `crate::ptz` drives (and borrows its
//! wire constants and digest helpers), but nothing in `ptz` imports it. Its tests of the
//! product's drivers and controller are in `ptz_tests.rs` beside it.
//!
//! ```no_run
//! use ptz_edge::sim::ptz::PtzSim;
//! let sim = PtzSim::start("127.0.0.1".parse().unwrap());
//! println!("VISCA TCP on {}", sim.visca_tcp_port());
//! let handle = sim.handle(); // cheap to clone; e.g. for drawing the state into video
//! println!("pan {}", handle.state().pan);
//! ```
//!
//! Threads: `ptzsim-tcp` (accepts), `ptzsim-tcp-{n}` (one per connection),
//! `ptzsim-udp`, `ptzsim-sony`, `ptzsim-http`. All see a stop flag (readers poll it, the
//! accepting threads are woken by a connection) and are joined on drop.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::ptz::auth::{self, Algorithm, DigestInput};
use crate::ptz::cgi::CGI_PATH;
use crate::ptz::visca::{
    encode_nibbles16, sony_unwrap, sony_wrap, Framer, SONY_COMMAND, SONY_CONTROL,
    SONY_CONTROL_REPLY, SONY_INQUIRY, SONY_REPLY,
};
use crate::ptz::Protocol;
use crate::sim::onvif::{self as soap, Action, SimOnvif};

/// Pan and tilt units per second per speed step (speed 0x18 pans 960 units/s).
pub const UNITS_PER_SPEED: f64 = 40.0;
/// Zoom units per second per zoom speed step (p 0–7 → 500–4000 units/s).
pub const ZOOM_UNITS_PER_STEP: f64 = 500.0;
/// Travel limits in VISCA units (about ±170° pan, -30°..+90° tilt on a PTZOptics G2).
pub const PAN_LIMIT: f64 = 2448.0;
pub const TILT_MIN: f64 = -432.0;
pub const TILT_MAX: f64 = 1296.0;
pub const ZOOM_MAX: f64 = 16384.0;
/// With a preset travel time, how long the head takes to start moving after a recall
/// (a real camera's motors answer in a few hundred milliseconds; until then the picture
/// still shows the old view).
pub const TRAVEL_START: Duration = Duration::from_millis(300);
/// Received messages kept for inspection.
const LOG_CAP: usize = 4096;
/// How often idle sim threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Which interface a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimTransport {
    ViscaTcp,
    ViscaUdp,
    /// The VISCA payload of a Sony-headered datagram (header stripped; see `header`).
    ViscaSony,
    /// An HTTP request target (path and query), as bytes.
    Http,
    /// An ONVIF SOAP request: the whole envelope as received.
    Onvif,
}

/// One received message, for byte checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReceived {
    pub transport: SimTransport,
    pub at: Instant,
    pub bytes: Vec<u8>,
    /// The Sony 8-byte header, for `ViscaSony`.
    pub header: Option<[u8; 8]>,
}

/// HTTP authentication the CGI endpoint demands.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum SimAuth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    Digest {
        user: String,
        password: String,
    },
}

/// A snapshot of the simulated head.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPtzState {
    /// Position in VISCA units (what the inquiries answer).
    pub pan: i32,
    pub tilt: i32,
    pub zoom: i32,
    /// Any axis has a non-zero commanded velocity.
    pub moving: bool,
    /// Commanded velocities in units per second (positive: right, up, in).
    pub pan_velocity: f64,
    pub tilt_velocity: f64,
    pub zoom_velocity: f64,
    /// When the last command (not inquiry) was applied.
    pub last_command_at: Option<Instant>,
    /// Toggled by recalling preset 95, as on a PTZOptics camera.
    pub osd_menu: bool,
    /// Travelling to a preset or home (see [`PtzSim::set_preset_travel`]).
    pub travelling: bool,
    /// How long the head has been still (no velocity, no travel, no jump); `None` if it
    /// never moved. The picture hunts (see `sim::scene::HUNT`) for a moment after it stops.
    pub still_for: Option<Duration>,
}

/// A preset or home move under way: from where, to where, over what time.
struct Route {
    from: (f64, f64, f64),
    to: (f64, f64, f64),
    start: Instant,
    takes: Duration,
}

struct Core {
    pan: f64,
    tilt: f64,
    zoom: f64,
    v_pan: f64,
    v_tilt: f64,
    v_zoom: f64,
    updated: Instant,
    presets: HashMap<u8, (f64, f64, f64)>,
    last_command_at: Option<Instant>,
    osd_menu: bool,
    /// How long a preset or home move takes; `None`: the head arrives at once.
    travel: Option<Duration>,
    route: Option<Route>,
    /// When the head last moved (velocity, travel or jump).
    last_motion: Option<Instant>,
    received: VecDeque<SimReceived>,
    silent: bool,
    auth: SimAuth,
    nonce: String,
    old_nonces: Vec<String>,
    reply_address: u8,
    next_slot: u8,
    completions: bool,
    error_reply: Option<u8>,
    drop_datagrams: u32,
    onvif: SimOnvif,
}

impl Core {
    fn new() -> Core {
        Core {
            pan: 0.0,
            tilt: 0.0,
            zoom: 0.0,
            v_pan: 0.0,
            v_tilt: 0.0,
            v_zoom: 0.0,
            updated: Instant::now(),
            presets: HashMap::new(),
            last_command_at: None,
            osd_menu: false,
            travel: None,
            route: None,
            last_motion: None,
            received: VecDeque::new(),
            silent: false,
            auth: SimAuth::None,
            nonce: auth::cnonce(),
            old_nonces: Vec::new(),
            reply_address: 0x90,
            next_slot: 1,
            completions: true,
            error_reply: None,
            drop_datagrams: 0,
            onvif: SimOnvif::default(),
        }
    }

    /// Integrates the position up to `now`. A velocity command ends a preset route where
    /// the head is.
    fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        let driven = self.v_pan != 0.0 || self.v_tilt != 0.0 || self.v_zoom != 0.0;
        if driven {
            self.route = None;
            if dt > 0.0 {
                self.last_motion = Some(self.updated);
            }
        }
        self.pan = (self.pan + self.v_pan * dt).clamp(-PAN_LIMIT, PAN_LIMIT);
        self.tilt = (self.tilt + self.v_tilt * dt).clamp(TILT_MIN, TILT_MAX);
        self.zoom = (self.zoom + self.v_zoom * dt).clamp(0.0, ZOOM_MAX);
        if let Some(r) = self.route.as_ref().filter(|r| now >= r.start) {
            let done = now.saturating_duration_since(r.start).as_secs_f64()
                / r.takes.as_secs_f64().max(1e-6);
            let at = |a: f64, b: f64| a + (b - a) * done.min(1.0);
            self.pan = at(r.from.0, r.to.0);
            self.tilt = at(r.from.1, r.to.1);
            self.zoom = at(r.from.2, r.to.2);
            if done >= 1.0 {
                self.last_motion = Some(r.start + r.takes);
                self.route = None;
            } else {
                self.last_motion = Some(now);
            }
        }
    }

    /// Sends the head to `to` (pan, tilt, zoom in VISCA units, already clamped): at once,
    /// or over the preset travel time.
    fn go_to(&mut self, to: (f64, f64, f64)) {
        let now = Instant::now();
        self.advance(now);
        self.v_pan = 0.0;
        self.v_tilt = 0.0;
        self.v_zoom = 0.0;
        match self.travel {
            Some(takes) if !takes.is_zero() => {
                self.route = Some(Route {
                    from: (self.pan, self.tilt, self.zoom),
                    to,
                    start: now + TRAVEL_START,
                    takes,
                });
            }
            _ => {
                self.route = None;
                self.last_motion = Some(now);
                (self.pan, self.tilt, self.zoom) = to;
            }
        }
    }

    fn state(&mut self) -> SimPtzState {
        let now = Instant::now();
        self.advance(now);
        let moving = self.v_pan != 0.0 || self.v_tilt != 0.0 || self.v_zoom != 0.0;
        SimPtzState {
            pan: self.pan.round() as i32,
            tilt: self.tilt.round() as i32,
            zoom: self.zoom.round() as i32,
            moving,
            pan_velocity: self.v_pan,
            tilt_velocity: self.v_tilt,
            zoom_velocity: self.v_zoom,
            last_command_at: self.last_command_at,
            osd_menu: self.osd_menu,
            travelling: self.route.is_some(),
            still_for: if moving || self.route.as_ref().is_some_and(|r| now >= r.start) {
                Some(Duration::ZERO)
            } else {
                self.last_motion.map(|t| now.saturating_duration_since(t))
            },
        }
    }

    fn log(&mut self, transport: SimTransport, bytes: &[u8], header: Option<[u8; 8]>) {
        if self.received.len() >= LOG_CAP {
            self.received.pop_front();
        }
        self.received.push_back(SimReceived {
            transport,
            at: Instant::now(),
            bytes: bytes.to_vec(),
            header,
        });
    }

    fn applied(&mut self, now: Instant) {
        self.last_command_at = Some(now);
    }

    fn home(&mut self) {
        self.go_to((0.0, 0.0, self.zoom));
    }

    fn preset_set(&mut self, n: u8) {
        self.presets.insert(n, (self.pan, self.tilt, self.zoom));
    }

    fn preset_recall(&mut self, n: u8) {
        if n == 95 {
            self.osd_menu = !self.osd_menu;
            return;
        }
        // At once, or over the travel time as a real camera does at preset speed.
        if let Some(&to) = self.presets.get(&n) {
            self.go_to(to);
        }
    }

    /// Answers one VISCA message (terminator included) the way a PTZOptics camera does.
    fn visca(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        let now = Instant::now();
        self.advance(now);
        let a = self.reply_address;
        let syntax_error = vec![vec![a, 0x60, 0x02, 0xFF]];
        if msg.len() < 3 || msg[0] != 0x81 || msg[msg.len() - 1] != 0xFF {
            // Other addresses and broadcasts: not for us.
            return Vec::new();
        }
        let body = &msg[1..msg.len() - 1];
        if let (Some(code), [0x01, ..]) = (self.error_reply, body) {
            return vec![vec![a, 0x60, code, 0xFF]];
        }
        let ok = match *body {
            [0x09, 0x06, 0x12] => {
                let mut r = vec![a, 0x50];
                r.extend(encode_nibbles16(self.pan.round() as i16 as u16));
                r.extend(encode_nibbles16(self.tilt.round() as i16 as u16));
                r.push(0xFF);
                return vec![r];
            }
            [0x09, 0x04, 0x47] => {
                let mut r = vec![a, 0x50];
                r.extend(encode_nibbles16(self.zoom.round() as u16));
                r.push(0xFF);
                return vec![r];
            }
            [0x09, 0x04, 0x00] => return vec![vec![a, 0x50, 0x02, 0xFF]],
            [0x01, 0x06, 0x01, vv, ww, xx, yy]
                if (1..=0x18).contains(&vv)
                    && (1..=0x14).contains(&ww)
                    && (1..=3).contains(&xx)
                    && (1..=3).contains(&yy) =>
            {
                self.v_pan = match xx {
                    1 => -f64::from(vv) * UNITS_PER_SPEED,
                    2 => f64::from(vv) * UNITS_PER_SPEED,
                    _ => 0.0,
                };
                self.v_tilt = match yy {
                    1 => f64::from(ww) * UNITS_PER_SPEED,
                    2 => -f64::from(ww) * UNITS_PER_SPEED,
                    _ => 0.0,
                };
                true
            }
            [0x01, 0x04, 0x07, b] => match b {
                0x00 => {
                    self.v_zoom = 0.0;
                    true
                }
                0x20..=0x27 => {
                    self.v_zoom = f64::from(b - 0x20 + 1) * ZOOM_UNITS_PER_STEP;
                    true
                }
                0x30..=0x37 => {
                    self.v_zoom = -f64::from(b - 0x30 + 1) * ZOOM_UNITS_PER_STEP;
                    true
                }
                _ => false,
            },
            [0x01, 0x06, 0x04] => {
                self.home();
                true
            }
            [0x01, 0x04, 0x3F, op, pp] => match op {
                0x00 => {
                    self.presets.remove(&pp);
                    true
                }
                0x01 => {
                    self.preset_set(pp);
                    true
                }
                0x02 => {
                    self.preset_recall(pp);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return syntax_error;
        }
        self.applied(now);
        let slot = self.next_slot;
        self.next_slot = if slot == 1 { 2 } else { 1 };
        let mut replies = vec![vec![a, 0x40 | slot, 0xFF]];
        if self.completions {
            replies.push(vec![a, 0x50 | slot, 0xFF]);
        }
        replies
    }

    /// Applies one `ptzctrl.cgi` request target; returns the HTTP status.
    fn cgi(&mut self, target: &str) -> u16 {
        let now = Instant::now();
        self.advance(now);
        let Some((path, query)) = target.split_once('?') else {
            return 404;
        };
        if path != CGI_PATH {
            return 404;
        }
        let parts: Vec<&str> = query.split('&').collect();
        let num = |i: usize, lo: u8, hi: u8| -> Option<u8> {
            parts
                .get(i)
                .and_then(|s| s.parse::<u8>().ok())
                .filter(|v| (lo..=hi).contains(v))
        };
        if parts.first() != Some(&"ptzcmd") || parts.len() < 2 {
            return 400;
        }
        let ok = match parts[1] {
            dir @ ("up" | "down" | "left" | "right" | "leftup" | "rightup" | "leftdown"
            | "rightdown") => match (num(2, 1, 24), num(3, 1, 20)) {
                (Some(ps), Some(ts)) => {
                    let ps = f64::from(ps) * UNITS_PER_SPEED;
                    let ts = f64::from(ts) * UNITS_PER_SPEED;
                    self.v_pan = if dir.starts_with("left") {
                        -ps
                    } else if dir.starts_with("right") {
                        ps
                    } else {
                        0.0
                    };
                    self.v_tilt = if dir.ends_with("up") {
                        ts
                    } else if dir.ends_with("down") {
                        -ts
                    } else {
                        0.0
                    };
                    true
                }
                _ => false,
            },
            "ptzstop" => {
                self.v_pan = 0.0;
                self.v_tilt = 0.0;
                true
            }
            "zoomin" | "zoomout" => match num(2, 0, 7) {
                Some(s) => {
                    let v = f64::from(s + 1) * ZOOM_UNITS_PER_STEP;
                    self.v_zoom = if parts[1] == "zoomin" { v } else { -v };
                    true
                }
                None => false,
            },
            "zoomstop" => {
                self.v_zoom = 0.0;
                true
            }
            "home" => {
                self.home();
                true
            }
            "posset" | "poscall" => match num(2, 0, 254) {
                Some(n) if parts[1] == "posset" => {
                    self.preset_set(n);
                    true
                }
                Some(n) => {
                    self.preset_recall(n);
                    true
                }
                None => false,
            },
            _ => false,
        };
        if ok {
            self.applied(now);
            200
        } else {
            400
        }
    }

    /// The position in ONVIF's generic spaces: pan and tilt -1..1, zoom 0..1.
    fn normalized(&self) -> (f64, f64, f64) {
        let tilt = if self.tilt >= 0.0 {
            self.tilt / TILT_MAX
        } else {
            self.tilt / -TILT_MIN
        };
        (self.pan / PAN_LIMIT, tilt, self.zoom / ZOOM_MAX)
    }

    fn set_normalized(&mut self, (p, t, z): (f64, f64, f64)) {
        let tilt = if t >= 0.0 {
            t * TILT_MAX
        } else {
            t * -TILT_MIN
        };
        self.go_to((
            (p * PAN_LIMIT).clamp(-PAN_LIMIT, PAN_LIMIT),
            tilt.clamp(TILT_MIN, TILT_MAX),
            (z * ZOOM_MAX).clamp(0.0, ZOOM_MAX),
        ));
    }

    /// Answers one ONVIF SOAP request posted to `path`; `base` is `http://host:port` as
    /// the client reached us. Returns the HTTP status and the reply envelope. Velocities
    /// in the generic space map onto the VISCA speed range: 1.0 is pan speed 0x18, tilt
    /// 0x14, zoom 8 steps.
    fn onvif(&mut self, path: &str, body: &str, base: &str) -> (u16, String) {
        let now = Instant::now();
        self.advance(now);
        self.log(SimTransport::Onvif, body.as_bytes(), None);
        let req = match soap::parse_request(body) {
            Ok(r) => r,
            Err(e) => return (400, soap::fault("InvalidArgVal", &e)),
        };
        let service = match path {
            "/onvif/device_service" => crate::onvif::NS_DEVICE,
            soap::MEDIA_PATH => crate::onvif::NS_MEDIA,
            soap::PTZ_PATH => crate::onvif::NS_PTZ,
            _ => return (404, soap::fault("ActionNotSupported", "no such service")),
        };
        let in_service = match &req.action {
            Action::GetSystemDateAndTime
            | Action::GetCapabilities
            | Action::GetServices
            | Action::GetDeviceInformation => service == crate::onvif::NS_DEVICE,
            Action::GetProfiles | Action::GetStreamUri { .. } => service == crate::onvif::NS_MEDIA,
            Action::Other(_) => true,
            _ => service == crate::onvif::NS_PTZ,
        };
        if !in_service {
            return (
                400,
                soap::fault("ActionNotSupported", "not an operation of this service"),
            );
        }
        let device_now = crate::onvif::time::now_millis() + self.onvif.clock_offset_ms;
        if let (Some((user, password)), false) = (
            &self.onvif.credentials,
            req.action == Action::GetSystemDateAndTime,
        ) {
            if let Err(why) = soap::check_token(req.token.as_ref(), user, password, device_now) {
                return (
                    400,
                    soap::fault("NotAuthorized", &format!("Sender not Authorized: {why}")),
                );
            }
        }
        if let Some(p) = req.action.profile() {
            if self.onvif.profile(p).is_none() {
                return (400, soap::fault("NoProfile", &format!("no profile {p:?}")));
            }
        }
        let ok = |b: String| (200, b);
        let empty = |name: &str| (200, soap::envelope(&format!("<tptz:{name}Response/>")));
        match req.action {
            Action::GetSystemDateAndTime => ok(soap::system_date_and_time(device_now)),
            Action::GetCapabilities => ok(soap::capabilities(base)),
            Action::GetServices => ok(soap::services(base)),
            Action::GetDeviceInformation => ok(self.onvif.device_information()),
            Action::GetProfiles => ok(self.onvif.profiles()),
            Action::GetStreamUri {
                profile,
                stream,
                protocol,
            } => {
                if stream != "RTP-Unicast" || protocol != "RTSP" {
                    return (
                        400,
                        soap::fault("InvalidStreamSetup", "only RTP-Unicast over RTSP"),
                    );
                }
                let uri = self
                    .onvif
                    .profile(&profile)
                    .map(|p| p.uri.clone())
                    .unwrap_or_default();
                ok(self.onvif.stream_uri(&uri))
            }
            Action::ContinuousMove {
                pan, tilt, zoom, ..
            } => {
                let bad = [pan, tilt, zoom]
                    .iter()
                    .flatten()
                    .any(|v| !(-1.0..=1.0).contains(v));
                if bad {
                    return (
                        400,
                        soap::fault("InvalidVelocity", "velocity outside the generic space"),
                    );
                }
                if let Some(p) = pan {
                    self.v_pan = p * 24.0 * UNITS_PER_SPEED;
                }
                if let Some(t) = tilt {
                    self.v_tilt = t * 20.0 * UNITS_PER_SPEED;
                }
                if let Some(z) = zoom {
                    self.v_zoom = z * 8.0 * ZOOM_UNITS_PER_STEP;
                }
                self.applied(now);
                empty("ContinuousMove")
            }
            Action::Stop { pan_tilt, zoom, .. } => {
                if pan_tilt {
                    self.v_pan = 0.0;
                    self.v_tilt = 0.0;
                }
                if zoom {
                    self.v_zoom = 0.0;
                }
                self.applied(now);
                empty("Stop")
            }
            Action::GotoHomePosition { .. } => {
                self.home();
                self.applied(now);
                empty("GotoHomePosition")
            }
            Action::SetPreset { name, token, .. } => {
                let pos = self.normalized();
                let t = self
                    .onvif
                    .set_preset(token.as_deref(), name.as_deref(), pos);
                self.applied(now);
                ok(soap::envelope(&format!(
                    "<tptz:SetPresetResponse><tptz:PresetToken>{}</tptz:PresetToken></tptz:SetPresetResponse>",
                    crate::onvif::xml::escape(&t)
                )))
            }
            Action::GotoPreset { token, .. } => {
                let Some(pos) = self
                    .onvif
                    .presets
                    .iter()
                    .find(|p| p.0 == token)
                    .map(|p| p.2)
                else {
                    return (400, soap::fault("NoToken", &format!("no preset {token:?}")));
                };
                self.set_normalized(pos);
                self.applied(now);
                empty("GotoPreset")
            }
            Action::GetPresets { .. } => ok(self.onvif.presets_reply()),
            Action::GetStatus { .. } => {
                let (p, t, z) = self.normalized();
                let moving = |v: f64| if v != 0.0 { "MOVING" } else { "IDLE" };
                let travelling = if self.route.is_some() { 1.0 } else { 0.0 };
                ok(soap::envelope(&format!(
                    concat!(
                        "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>",
                        "<tt:PanTilt x=\"{:.6}\" y=\"{:.6}\"/><tt:Zoom x=\"{:.6}\"/></tt:Position>",
                        "<tt:MoveStatus><tt:PanTilt>{}</tt:PanTilt><tt:Zoom>{}</tt:Zoom></tt:MoveStatus>",
                        "<tt:UtcTime>{}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
                    ),
                    p,
                    t,
                    z,
                    moving(self.v_pan.abs() + self.v_tilt.abs() + travelling),
                    moving(self.v_zoom.abs() + travelling),
                    crate::onvif::time::format_utc_millis(device_now)
                )))
            }
            Action::Other(name) => (
                400,
                soap::fault("ActionNotSupported", &format!("{name} is not supported")),
            ),
        }
    }

    /// `None` if the request may proceed, else the `WWW-Authenticate` value for a 401.
    fn check_auth(
        &self,
        method: &str,
        target: &str,
        authorization: Option<&str>,
    ) -> Option<String> {
        match &self.auth {
            SimAuth::None => None,
            SimAuth::Basic { user, password } => {
                let want = auth::basic_authorization(user, password);
                (authorization != Some(want.as_str())).then(|| r#"Basic realm="ptz-sim""#.into())
            }
            SimAuth::Digest { user, password } => {
                let challenge = |stale: bool| {
                    format!(
                        r#"Digest realm="ptz-sim", qop="auth", nonce="{}", opaque="sim-opaque", algorithm=MD5{}"#,
                        self.nonce,
                        if stale { ", stale=true" } else { "" }
                    )
                };
                let Some(h) = authorization.and_then(|h| h.strip_prefix("Digest ")) else {
                    return Some(challenge(false));
                };
                let p = auth::parse_params(h);
                let get = |k: &str| auth::param(&p, k).unwrap_or("");
                let nonce = get("nonce");
                let nc_cnonce = (get("qop") == "auth").then(|| (get("nc"), get("cnonce")));
                let want = DigestInput {
                    algorithm: Algorithm::Md5,
                    username: user,
                    realm: "ptz-sim",
                    password,
                    method,
                    uri: target,
                    nonce,
                    nc_cnonce,
                }
                .response();
                let valid = get("username") == user
                    && get("uri") == target
                    && get("realm") == "ptz-sim"
                    && nc_cnonce.is_some()
                    && get("response") == want;
                if valid && nonce == self.nonce {
                    None
                } else if valid && self.old_nonces.iter().any(|n| n == nonce) {
                    Some(challenge(true))
                } else {
                    Some(challenge(false))
                }
            }
        }
    }
}

/// A cheap, cloneable view of the simulated head (e.g. for the video simulator to draw).
#[derive(Clone)]
pub struct PtzSimHandle {
    core: Arc<Mutex<Core>>,
}

/// Two handles are equal when they view the same simulated head.
impl PartialEq for PtzSimHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.core, &other.core)
    }
}

impl Eq for PtzSimHandle {}

impl std::fmt::Debug for PtzSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PtzSimHandle")
    }
}

impl PtzSimHandle {
    pub fn state(&self) -> SimPtzState {
        self.core.lock().state()
    }
}

struct Shared {
    stop: AtomicBool,
    core: Arc<Mutex<Core>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    /// Bumped by `kick_connections`; connections from an older generation close.
    kick: AtomicU64,
    accepted: AtomicU64,
}

/// The simulator: sockets bound, threads running until dropped.
pub struct PtzSim {
    shared: Arc<Shared>,
    bind: IpAddr,
    tcp_port: u16,
    udp_port: u16,
    sony_port: u16,
    http_port: u16,
    wsd_port: u16,
    threads: Vec<JoinHandle<()>>,
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name).spawn(f)
}

impl PtzSim {
    /// Binds every interface on `bind` with free ports. Panics if that fails (a test
    /// setup failure); see [`PtzSim::try_start`].
    pub fn start(bind: IpAddr) -> PtzSim {
        PtzSim::try_start(bind).expect("PTZ simulator could not bind its ports")
    }

    pub fn try_start(bind: IpAddr) -> io::Result<PtzSim> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            core: Arc::new(Mutex::new(Core::new())),
            conns: Mutex::new(Vec::new()),
            kick: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let any = SocketAddr::new(bind, 0);
        // Listeners block in accept (no polling delay on a connection); drop wakes them
        // with a connection of its own.
        let tcp = TcpListener::bind(any)?;
        let udp = UdpSocket::bind(any)?;
        udp.set_read_timeout(Some(POLL))?;
        let sony = UdpSocket::bind(any)?;
        sony.set_read_timeout(Some(POLL))?;
        let http = TcpListener::bind(any)?;
        let wsd = UdpSocket::bind(any)?;
        wsd.set_read_timeout(Some(POLL))?;
        let wsd_port = wsd.local_addr()?.port();
        let (tcp_port, udp_port, sony_port, http_port) = (
            tcp.local_addr()?.port(),
            udp.local_addr()?.port(),
            sony.local_addr()?.port(),
            http.local_addr()?.port(),
        );
        let mut sim = PtzSim {
            shared: shared.clone(),
            bind,
            tcp_port,
            udp_port,
            sony_port,
            http_port,
            wsd_port,
            threads: Vec::new(),
        };
        let xaddr = sim.onvif_device_url();
        let s = shared.clone();
        sim.threads.push(spawn("ptzsim-wsd".into(), move || {
            wsd_loop(&s, wsd, &xaddr)
        })?);
        let s = shared.clone();
        sim.threads
            .push(spawn("ptzsim-tcp".into(), move || accept_loop(&s, tcp))?);
        let s = shared.clone();
        sim.threads.push(spawn("ptzsim-udp".into(), move || {
            udp_loop(&s, udp, false)
        })?);
        let s = shared.clone();
        sim.threads.push(spawn("ptzsim-sony".into(), move || {
            udp_loop(&s, sony, true)
        })?);
        let s = shared;
        sim.threads
            .push(spawn("ptzsim-http".into(), move || http_loop(&s, http))?);
        Ok(sim)
    }

    pub fn visca_tcp_port(&self) -> u16 {
        self.tcp_port
    }

    pub fn visca_udp_port(&self) -> u16 {
        self.udp_port
    }

    pub fn visca_sony_port(&self) -> u16 {
        self.sony_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The port serving `protocol`.
    pub fn port(&self, protocol: Protocol) -> u16 {
        match protocol {
            Protocol::Cgi => self.http_port,
            Protocol::ViscaTcp => self.tcp_port,
            Protocol::ViscaUdp => self.udp_port,
            Protocol::ViscaSony => self.sony_port,
            // ONVIF shares the HTTP port with the CGI, as on a PTZOptics camera.
            Protocol::Onvif => self.http_port,
        }
    }

    pub fn state(&self) -> SimPtzState {
        self.shared.core.lock().state()
    }

    pub fn handle(&self) -> PtzSimHandle {
        PtzSimHandle {
            core: self.shared.core.clone(),
        }
    }

    /// Every message received so far (capped), oldest first.
    pub fn received(&self) -> Vec<SimReceived> {
        self.shared.core.lock().received.iter().cloned().collect()
    }

    pub fn clear_received(&self) {
        self.shared.core.lock().received.clear();
    }

    /// How long a preset recall, home or ONVIF preset takes: the head starts after
    /// [`TRAVEL_START`] and travels there in a straight line (position inquiries see it
    /// on the way) instead of arriving at once (`None`, the default).
    pub fn set_preset_travel(&self, takes: Option<Duration>) {
        self.shared.core.lock().travel = takes;
    }

    /// Silent: messages are logged but neither applied nor answered (a hung camera).
    pub fn set_silent(&self, silent: bool) {
        self.shared.core.lock().silent = silent;
    }

    /// HTTP authentication of the CGI and the ONVIF endpoint (ONVIF also checks its
    /// own WS-Security credentials, [`SimOnvif::credentials`]).
    pub fn set_auth(&self, auth: SimAuth) {
        self.shared.core.lock().auth = auth;
    }

    /// Changes the ONVIF device's settings (credentials, clock offset, profiles and
    /// their stream URIs, identity).
    pub fn set_onvif(&self, f: impl FnOnce(&mut SimOnvif)) {
        f(&mut self.shared.core.lock().onvif);
    }

    /// `http://127.0.0.1:port/onvif/device_service` (loopback for an unspecified bind).
    pub fn onvif_device_url(&self) -> String {
        format!(
            "http://{}{}",
            self.http_authority(),
            crate::onvif::DEVICE_SERVICE_PATH
        )
    }

    fn http_authority(&self) -> SocketAddr {
        let mut addr = SocketAddr::new(self.bind, self.http_port);
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        addr
    }

    /// The UDP port answering WS-Discovery probes sent to it (unicast).
    pub fn discovery_port(&self) -> u16 {
        self.wsd_port
    }

    /// Also answers probes sent to the WS-Discovery group 239.255.255.250:3702, joined
    /// on the interface of the bind address (loopback in tests; every sim in the process
    /// shares the port with `SO_REUSEADDR`, and each answers every probe).
    pub fn join_discovery_multicast(&mut self) -> io::Result<()> {
        use socket2::{Domain, Socket, Type};
        let iface = match self.bind {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let group = *crate::onvif::discovery::MULTICAST.ip();
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        sock.set_reuse_address(true)?;
        sock.bind(
            &SocketAddr::from(([0, 0, 0, 0], crate::onvif::discovery::MULTICAST.port())).into(),
        )?;
        sock.join_multicast_v4(&group, &iface)?;
        let sock: UdpSocket = sock.into();
        sock.set_read_timeout(Some(POLL))?;
        let xaddr = self.onvif_device_url();
        let s = self.shared.clone();
        self.threads.push(spawn("ptzsim-wsd-mc".into(), move || {
            wsd_loop(&s, sock, &xaddr)
        })?);
        Ok(())
    }

    /// Issues a new Digest nonce; the old one then gets `401 stale=true`.
    pub fn rotate_nonce(&self) {
        let mut c = self.shared.core.lock();
        let old = std::mem::replace(&mut c.nonce, auth::cnonce());
        c.old_nonces.push(old);
    }

    /// The first byte of VISCA replies (`0x90`; PTZOptics G3 firmware has sent `0xA0`).
    pub fn set_reply_address(&self, address: u8) {
        self.shared.core.lock().reply_address = address;
    }

    /// `false`: VISCA commands get an ACK but never a completion (both slots then look
    /// busy forever, as with firmware that skips completions).
    pub fn set_send_completions(&self, on: bool) {
        self.shared.core.lock().completions = on;
    }

    /// `Some(code)`: every VISCA command is answered `90 60 <code> FF` and not applied
    /// (03 buffers full, 41 not executable, ...); inquiries are still answered.
    pub fn set_error_reply(&self, code: Option<u8>) {
        self.shared.core.lock().error_reply = code;
    }

    /// Loses the next `n` UDP datagrams (raw or Sony), unlogged and unanswered.
    pub fn drop_datagrams(&self, n: u32) {
        self.shared.core.lock().drop_datagrams = n;
    }

    /// Closes every VISCA TCP connection, as a camera reboot would.
    pub fn kick_connections(&self) {
        self.shared.kick.fetch_add(1, Ordering::SeqCst);
    }

    /// VISCA TCP connections accepted so far.
    pub fn tcp_connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for PtzSim {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for port in [self.tcp_port, self.http_port] {
            let mut addr = SocketAddr::new(self.bind, port);
            if addr.ip().is_unspecified() {
                addr.set_ip(if self.bind.is_ipv4() {
                    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                });
            }
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(500));
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("PTZ simulator thread panicked");
            }
        }
        let conns: Vec<JoinHandle<()>> = self.shared.conns.lock().drain(..).collect();
        for t in conns {
            if t.join().is_err() {
                log::error!("PTZ simulator connection thread panicked");
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let n = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let s = shared.clone();
                match spawn(format!("ptzsim-tcp-{n}"), move || tcp_conn(&s, stream)) {
                    Ok(h) => {
                        let mut conns = shared.conns.lock();
                        conns.retain(|h| !h.is_finished());
                        conns.push(h);
                    }
                    Err(e) => log::error!("PTZ simulator cannot start a connection thread: {e}"),
                }
            }
            Err(e) => {
                log::warn!("PTZ simulator accept failed: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

/// What one read of a connection with a read timeout gave.
enum Step {
    Data(usize),
    /// The timeout passed with nothing to read: look at the stop flags, read again.
    Idle,
    /// The peer closed, or the connection broke.
    Closed,
}

fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Step {
    match stream.read(buf) {
        Ok(0) => Step::Closed,
        Ok(n) => Step::Data(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Step::Idle
        }
        Err(_) => Step::Closed,
    }
}

fn tcp_conn(shared: &Shared, mut stream: TcpStream) {
    let generation = shared.kick.load(Ordering::SeqCst);
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(POLL)).is_err()
        || stream.set_nodelay(true).is_err()
    {
        return;
    }
    let mut framer = Framer::default();
    let mut buf = [0u8; 512];
    while !shared.stop.load(Ordering::SeqCst) && shared.kick.load(Ordering::SeqCst) == generation {
        match read_some(&mut stream, &mut buf) {
            Step::Data(n) => framer.push(&buf[..n]),
            Step::Idle => continue,
            Step::Closed => return,
        }
        let mut out = Vec::new();
        while let Some(msg) = framer.next_message() {
            let mut core = shared.core.lock();
            core.log(SimTransport::ViscaTcp, &msg, None);
            if !core.silent {
                out.extend(core.visca(&msg).concat());
            }
        }
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn udp_loop(shared: &Shared, sock: UdpSocket, sony: bool) {
    let mut buf = [0u8; 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let data = &buf[..n];
        {
            let mut core = shared.core.lock();
            if core.drop_datagrams > 0 {
                core.drop_datagrams -= 1;
                continue;
            }
        }
        let replies: Vec<Vec<u8>> = if sony {
            let Some((ty, seq, payload)) = sony_unwrap(data) else {
                continue;
            };
            let mut header = [0u8; 8];
            header.copy_from_slice(&data[..8]);
            let mut core = shared.core.lock();
            core.log(SimTransport::ViscaSony, payload, Some(header));
            if core.silent {
                continue;
            }
            match ty {
                SONY_COMMAND | SONY_INQUIRY => core
                    .visca(payload)
                    .into_iter()
                    .map(|r| sony_wrap(SONY_REPLY, seq, &r))
                    .collect(),
                // RESET: acknowledged with the same payload.
                SONY_CONTROL => vec![sony_wrap(SONY_CONTROL_REPLY, seq, payload)],
                _ => Vec::new(),
            }
        } else {
            let mut framer = Framer::default();
            framer.push(data);
            let mut core = shared.core.lock();
            let mut replies = Vec::new();
            while let Some(msg) = framer.next_message() {
                core.log(SimTransport::ViscaUdp, &msg, None);
                if !core.silent {
                    replies.extend(core.visca(&msg));
                }
            }
            replies
        };
        for r in replies {
            let _ = sock.send_to(&r, peer);
        }
    }
}

/// Answers WS-Discovery Probes (unicast to this socket) with a ProbeMatch.
fn wsd_loop(shared: &Shared, sock: UdpSocket, xaddr: &str) {
    let mut buf = vec![0u8; 8192];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let Some(id) = crate::onvif::discovery::parse_probe(&text) else {
            continue;
        };
        let reply = {
            let core = shared.core.lock();
            if core.silent {
                continue;
            }
            core.onvif.probe_match(&id, xaddr)
        };
        let _ = sock.send_to(reply.as_bytes(), peer);
    }
}

fn http_loop(shared: &Shared, listener: TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => http_conn(shared, stream),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Serves one request on one connection (`Connection: close` either way): a CGI GET or
/// an ONVIF SOAP POST (body read by `Content-Length`, at most 256 KiB).
fn http_conn(shared: &Shared, mut stream: TcpStream) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let base = stream
        .local_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut head: Option<(String, String, Option<String>, usize, usize)> = None;
    let (method, target, authorization, body) = loop {
        if let Some((method, target, authorization, head_len, body_len)) = &head {
            if buf.len() >= head_len + body_len {
                let body =
                    String::from_utf8_lossy(&buf[*head_len..head_len + body_len]).into_owned();
                break (method.clone(), target.clone(), authorization.clone(), body);
            }
        }
        if shared.stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(3) {
            return;
        }
        match read_some(&mut stream, &mut chunk) {
            Step::Data(n) => buf.extend_from_slice(&chunk[..n]),
            Step::Idle => continue,
            Step::Closed => return,
        }
        if head.is_some() {
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let body_len = header("content-length")
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body_len > 256 * 1024 {
                    let _ = stream.write_all(&response(400, "", "body too large"));
                    return;
                }
                head = Some((
                    req.method.unwrap_or("GET").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                    header("authorization"),
                    n,
                    body_len,
                ));
            }
            Ok(httparse::Status::Partial) if buf.len() < 8192 => continue,
            _ => {
                let _ = stream.write_all(&response(400, "", ""));
                return;
            }
        }
    };
    let onvif = method == "POST" && target.starts_with("/onvif/");
    let (silent, reply) = {
        let mut core = shared.core.lock();
        if !onvif {
            core.log(SimTransport::Http, target.as_bytes(), None);
        }
        if core.silent {
            if onvif {
                core.log(SimTransport::Onvif, body.as_bytes(), None);
            }
            (true, Vec::new())
        } else if let Some(challenge) = core.check_auth(&method, &target, authorization.as_deref())
        {
            if onvif {
                core.log(SimTransport::Onvif, body.as_bytes(), None);
            }
            (
                false,
                response(
                    401,
                    &format!("WWW-Authenticate: {challenge}\r\n"),
                    "Unauthorized",
                ),
            )
        } else if onvif {
            let (status, xml) = core.onvif(&target, &body, &base);
            (
                false,
                response_typed(status, "application/soap+xml; charset=utf-8", "", &xml),
            )
        } else {
            let status = core.cgi(&target);
            (
                false,
                response(status, "", if status == 200 { "OK" } else { "Error" }),
            )
        }
    };
    if silent {
        // Hold the connection open, unanswered, until the client gives up.
        while !shared.stop.load(Ordering::SeqCst) {
            if let Step::Closed = read_some(&mut stream, &mut chunk) {
                return;
            }
        }
        return;
    }
    let _ = stream.write_all(&reply);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

fn response(status: u16, extra_headers: &str, body: &str) -> Vec<u8> {
    response_typed(status, "text/plain", extra_headers, body)
}

fn response_typed(status: u16, content_type: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visca_state_machine() {
        let mut c = Core::new();
        // Pan right at 0x10, tilt up at 0x08.
        let r = c.visca(&[0x81, 0x01, 0x06, 0x01, 0x10, 0x08, 0x02, 0x01, 0xFF]);
        assert_eq!(r, vec![vec![0x90, 0x41, 0xFF], vec![0x90, 0x51, 0xFF]]);
        assert_eq!(c.v_pan, 16.0 * UNITS_PER_SPEED);
        assert_eq!(c.v_tilt, 8.0 * UNITS_PER_SPEED);
        // Out-of-range speed → syntax error, nothing changes.
        let r = c.visca(&[0x81, 0x01, 0x06, 0x01, 0x19, 0x08, 0x02, 0x01, 0xFF]);
        assert_eq!(r, vec![vec![0x90, 0x60, 0x02, 0xFF]]);
        // Broadcasts are not answered.
        assert!(c.visca(&[0x88, 0x30, 0x01, 0xFF]).is_empty());
        c.pan = -2.0;
        c.v_pan = 0.0;
        c.v_tilt = 0.0;
        c.tilt = 291.0;
        let r = c.visca(&[0x81, 0x09, 0x06, 0x12, 0xFF]);
        assert_eq!(
            r,
            vec![vec![
                0x90, 0x50, 0xF, 0xF, 0xF, 0xE, 0x0, 0x1, 0x2, 0x3, 0xFF
            ]]
        );
        c.visca(&[0x81, 0x01, 0x04, 0x3F, 0x02, 0x5F, 0xFF]);
        assert!(c.osd_menu, "preset 95 toggles the OSD menu on PTZOptics");
    }

    #[test]
    fn cgi_state_machine() {
        let mut c = Core::new();
        assert_eq!(c.cgi("/cgi-bin/ptzctrl.cgi?ptzcmd&leftdown&24&20"), 200);
        assert!(c.v_pan < 0.0 && c.v_tilt < 0.0);
        assert_eq!(c.cgi("/cgi-bin/ptzctrl.cgi?ptzcmd&left&25&1"), 400);
        assert_eq!(c.cgi("/cgi-bin/ptzctrl.cgi?ptzcmd&ptzstop&0&0"), 200);
        assert_eq!((c.v_pan, c.v_tilt), (0.0, 0.0));
        assert_eq!(c.cgi("/cgi-bin/other.cgi?x"), 404);
        assert_eq!(c.cgi("/index.html"), 404);
    }
}
