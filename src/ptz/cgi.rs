//! PTZOptics HTTP-CGI control (`GET /cgi-bin/ptzctrl.cgi?ptzcmd&<action>&<args>`) over
//! ureq (the synchronous HTTP client the ONVIF side uses too), answering the camera's
//! 401 with Digest (preferred) or Basic using the camera's own credentials.
//!
//! Source: PTZOptics "HTTP-CGI Commands" (developer portal): arguments are bare values
//! joined by `&`; pan speed 1–24, tilt speed 1–20, zoom speed 1–7 (0–7 documented, 1–7
//! safe); `ptzstop&0&0`, `zoomstop&0`, `home`, `posset&N`, `poscall&N`. The camera has no
//! position query over HTTP. The appliance only ever requests these fixed paths: it never
//! proxies the camera's web UI or arbitrary CGI paths.

use std::io;
use std::time::Duration;

use super::auth::{self, AuthState, Challenge, ChallengeError};
use super::{axis, check_preset, Axis, Position, PresetOp, Protocol, PtzDriver, PtzError};
use crate::secret::Secret;

pub const CGI_PATH: &str = "/cgi-bin/ptzctrl.cgi";
pub const PAN_SPEED_MAX: u8 = 24;
pub const TILT_SPEED_MAX: u8 = 20;
pub const ZOOM_SPEED_MAX: u8 = 7;
/// `ptzstop&0&0`: stops pan and tilt.
pub const STOP_PATH: &str = "/cgi-bin/ptzctrl.cgi?ptzcmd&ptzstop&0&0";
/// `zoomstop&0`: stops the zoom.
pub const ZOOM_STOP_PATH: &str = "/cgi-bin/ptzctrl.cgi?ptzcmd&zoomstop&0";
/// `home`.
pub const HOME_PATH: &str = "/cgi-bin/ptzctrl.cgi?ptzcmd&home";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The whole exchange, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// `…?ptzcmd&<direction>&<pan speed>&<tilt speed>`, or the stop path when both axes stop.
/// Directions: up down left right leftup rightup leftdown rightdown. The idle axis of a
/// one-axis move carries speed 1, the lowest valid value.
pub fn move_path(pan: Axis, tilt: Axis) -> String {
    let (h, ps) = match pan {
        Axis::Stop => ("", 1),
        Axis::Negative(s) => ("left", s),
        Axis::Positive(s) => ("right", s),
    };
    let (v, ts) = match tilt {
        Axis::Stop => ("", 1),
        Axis::Positive(s) => ("up", s),
        Axis::Negative(s) => ("down", s),
    };
    if h.is_empty() && v.is_empty() {
        return STOP_PATH.to_owned();
    }
    format!(
        "{CGI_PATH}?ptzcmd&{h}{v}&{}&{}",
        ps.clamp(1, PAN_SPEED_MAX),
        ts.clamp(1, TILT_SPEED_MAX)
    )
}

/// `…?ptzcmd&zoomin&<s>` / `zoomout&<s>` / `zoomstop&0`.
pub fn zoom_path(zoom: Axis) -> String {
    match zoom {
        Axis::Stop => ZOOM_STOP_PATH.to_owned(),
        Axis::Positive(s) => format!("{CGI_PATH}?ptzcmd&zoomin&{}", s.clamp(1, ZOOM_SPEED_MAX)),
        Axis::Negative(s) => format!("{CGI_PATH}?ptzcmd&zoomout&{}", s.clamp(1, ZOOM_SPEED_MAX)),
    }
}

/// `…?ptzcmd&posset&N` (save) / `poscall&N` (recall).
pub fn preset_path(op: PresetOp, index: u8) -> String {
    let action = match op {
        PresetOp::Save => "posset",
        PresetOp::Goto => "poscall",
    };
    format!("{CGI_PATH}?ptzcmd&{action}&{index}")
}

/// A response: what the client needs of it.
struct Response {
    status: u16,
    /// `WWW-Authenticate` values.
    challenges: Vec<String>,
}

/// An HTTP/1.1 client for one camera, on ureq (the synchronous client the ONVIF side
/// uses too; keep-alive where the camera offers it). Credentials live here and only
/// leave as an `Authorization` header; nothing in here logs them or the header.
struct HttpClient {
    id: String,
    host: String,
    port: u16,
    username: String,
    password: Secret,
    auth: AuthState,
    agent: ureq::Agent,
}

fn transport_error(e: ureq::Error, where_: &str) -> PtzError {
    match e {
        ureq::Error::Timeout(_) => PtzError::Timeout,
        ureq::Error::Io(ref io)
            if matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            PtzError::Timeout
        }
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            PtzError::Camera(format!("cannot connect to {where_}: {e}"))
        }
        ureq::Error::Io(ref io)
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ) =>
        {
            PtzError::Camera(format!("cannot connect to {where_}: {e}"))
        }
        other => PtzError::Camera(format!("HTTP exchange with {where_} failed: {other}")),
    }
}

impl HttpClient {
    fn new(id: &str, host: &str, port: u16, username: &str, password: Secret) -> HttpClient {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            // Every status is looked at here (401 carries the challenge).
            .http_status_as_error(false)
            // The camera is on the LAN; never through an environment proxy.
            .proxy(None)
            .max_redirects(0)
            .max_response_header_size(MAX_HEAD)
            .user_agent(concat!("ptz-edge/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpClient {
            id: id.to_owned(),
            host: host.to_owned(),
            port,
            username: username.to_owned(),
            password,
            auth: AuthState::None,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn authorization(&mut self, path: &str) -> Option<String> {
        self.auth
            .authorization(&self.username, self.password.expose(), "GET", path)
    }

    /// GETs `path`, answering one authentication challenge (two if the camera says the
    /// nonce went stale). Ok for a 2xx answer.
    fn get(&mut self, path: &str) -> Result<(), PtzError> {
        for attempt in 0..3 {
            let authz = self.authorization(path);
            let resp = self.request(path, authz.as_deref())?;
            log::trace!("{}: PTZ CGI {path} -> HTTP {}", self.id, resp.status);
            match resp.status {
                200..=299 => return Ok(()),
                401 => {}
                403 => {
                    return Err(PtzError::Camera(
                        "camera refused the request (HTTP 403 Forbidden): the user may lack PTZ rights"
                            .into(),
                    ))
                }
                404 => {
                    return Err(PtzError::Camera(format!(
                        "camera has no {CGI_PATH} (HTTP 404): not a PTZOptics camera, or HTTP-CGI control is off"
                    )))
                }
                s => return Err(PtzError::Camera(format!("camera answered HTTP {s}"))),
            }
            let ch = match auth::best_challenge(resp.challenges.iter().map(String::as_str)) {
                Ok(c) => c,
                Err(ChallengeError::Missing) => {
                    return Err(PtzError::Camera(
                        "camera answered HTTP 401 without an authentication challenge".into(),
                    ))
                }
                Err(ChallengeError::Unsupported(what)) => {
                    return Err(PtzError::Camera(format!(
                        "camera asks for authentication ptz-edge cannot answer ({what})"
                    )))
                }
            };
            if self.username.is_empty() && self.password.is_empty() {
                return Err(PtzError::Camera(
                    "camera requires a username and password (HTTP 401); none were given at connect"
                        .into(),
                ));
            }
            let stale = matches!(&ch, Challenge::Digest(d) if d.stale);
            if attempt > 0 && !stale {
                self.auth = AuthState::None;
                log::warn!("{}: PTZ camera rejected the username or password", self.id);
                return Err(PtzError::Camera(
                    "camera rejected the username or password (HTTP 401 Unauthorized)".into(),
                ));
            }
            self.auth = AuthState::from_challenge(ch);
        }
        Err(PtzError::Camera(
            "camera kept asking for authentication (HTTP 401)".into(),
        ))
    }

    /// One exchange, connect to last byte within [`REQUEST_TIMEOUT`]; the body is read
    /// (up to [`MAX_BODY`]) and discarded.
    fn request(&mut self, path: &str, authorization: Option<&str>) -> Result<Response, PtzError> {
        let where_ = format!("{}:{}", self.host, self.port);
        let url = format!("http://{}{path}", self.host_header());
        let mut req = self.agent.get(&url);
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| transport_error(e, &where_))?;
        let status = resp.status().as_u16();
        let challenges = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        // Drained to be polite (and to keep a kept-alive connection usable); its
        // content does not matter, nor does a body cut short.
        let mut body = resp.into_body();
        let _ = io::copy(
            &mut body.with_config().limit(MAX_BODY as u64).reader(),
            &mut io::sink(),
        );
        Ok(Response { status, challenges })
    }
}

/// PTZOptics HTTP-CGI driver. Remembers what it last sent so an unchanged pan-tilt or
/// zoom drive costs no request.
pub struct CgiDriver {
    client: HttpClient,
    last_pan_tilt: Option<(Axis, Axis)>,
    last_zoom: Option<Axis>,
}

impl CgiDriver {
    pub fn new(
        camera_id: &str,
        host: &str,
        port: u16,
        username: &str,
        password: Secret,
    ) -> CgiDriver {
        CgiDriver {
            client: HttpClient::new(camera_id, host, port, username, password),
            last_pan_tilt: None,
            last_zoom: None,
        }
    }
}

impl PtzDriver for CgiDriver {
    fn move_continuous(&mut self, pan: f64, tilt: f64, zoom: f64) -> Result<(), PtzError> {
        let pt = (axis(pan, 1, PAN_SPEED_MAX), axis(tilt, 1, TILT_SPEED_MAX));
        let z = axis(zoom, 1, ZOOM_SPEED_MAX);
        if self.last_pan_tilt != Some(pt) {
            self.last_pan_tilt = None;
            self.client.get(&move_path(pt.0, pt.1))?;
            self.last_pan_tilt = Some(pt);
        }
        if self.last_zoom != Some(z) {
            self.last_zoom = None;
            self.client.get(&zoom_path(z))?;
            self.last_zoom = Some(z);
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PtzError> {
        self.last_pan_tilt = None;
        self.last_zoom = None;
        // Both, even if the first fails.
        let pt = self.client.get(STOP_PATH);
        let z = self.client.get(ZOOM_STOP_PATH);
        if pt.is_ok() {
            self.last_pan_tilt = Some((Axis::Stop, Axis::Stop));
        }
        if z.is_ok() {
            self.last_zoom = Some(Axis::Stop);
        }
        pt.and(z)
    }

    fn home(&mut self) -> Result<(), PtzError> {
        self.last_pan_tilt = None;
        self.client.get(HOME_PATH)
    }

    fn preset_goto(&mut self, index: u8) -> Result<(), PtzError> {
        check_preset(Protocol::Cgi, index)?;
        self.last_pan_tilt = None;
        self.last_zoom = None;
        self.client.get(&preset_path(PresetOp::Goto, index))
    }

    fn preset_save(&mut self, index: u8) -> Result<(), PtzError> {
        check_preset(Protocol::Cgi, index)?;
        self.client.get(&preset_path(PresetOp::Save, index))
    }

    fn position(&mut self) -> Result<Position, PtzError> {
        Err(PtzError::Unsupported(
            "PTZOptics HTTP-CGI has no position query; connect with protocol visca-tcp or \
             visca-udp to read the position"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths as the PTZOptics HTTP-CGI command list spells them.
    #[test]
    fn paths_match_the_ptzoptics_document() {
        use Axis::*;
        assert_eq!(
            move_path(Stop, Positive(20)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&up&1&20"
        );
        assert_eq!(
            move_path(Stop, Negative(3)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&down&1&3"
        );
        assert_eq!(
            move_path(Negative(24), Stop),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&left&24&1"
        );
        assert_eq!(
            move_path(Positive(12), Stop),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&right&12&1"
        );
        assert_eq!(
            move_path(Negative(2), Positive(3)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&leftup&2&3"
        );
        assert_eq!(
            move_path(Positive(2), Positive(3)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&rightup&2&3"
        );
        assert_eq!(
            move_path(Negative(2), Negative(3)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&leftdown&2&3"
        );
        assert_eq!(
            move_path(Positive(2), Negative(3)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&rightdown&2&3"
        );
        assert_eq!(
            move_path(Positive(99), Positive(99)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&rightup&24&20"
        );
        assert_eq!(
            move_path(Stop, Stop),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&ptzstop&0&0"
        );
        assert_eq!(
            zoom_path(Positive(7)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&zoomin&7"
        );
        assert_eq!(
            zoom_path(Negative(1)),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&zoomout&1"
        );
        assert_eq!(zoom_path(Stop), "/cgi-bin/ptzctrl.cgi?ptzcmd&zoomstop&0");
        assert_eq!(HOME_PATH, "/cgi-bin/ptzctrl.cgi?ptzcmd&home");
        assert_eq!(
            preset_path(PresetOp::Save, 12),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&posset&12"
        );
        assert_eq!(
            preset_path(PresetOp::Goto, 254),
            "/cgi-bin/ptzctrl.cgi?ptzcmd&poscall&254"
        );
    }

    #[test]
    fn host_header_brackets_ipv6_and_omits_port_80() {
        let mut d = CgiDriver::new("c", "fe80::1", 8080, "", Secret::default());
        assert_eq!(d.client.host_header(), "[fe80::1]:8080");
        d.client.host = "10.0.0.5".into();
        d.client.port = 80;
        assert_eq!(d.client.host_header(), "10.0.0.5");
    }

    #[test]
    fn reserved_presets_and_position_are_refused_without_io() {
        let mut d = CgiDriver::new("c", "192.0.2.1", 80, "", Secret::default());
        assert!(matches!(d.preset_goto(95), Err(PtzError::Invalid(_))));
        assert!(matches!(d.preset_save(90), Err(PtzError::Invalid(_))));
        assert!(matches!(d.position(), Err(PtzError::Unsupported(_))));
    }
}
