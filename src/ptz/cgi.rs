//! PTZOptics HTTP-CGI control (`GET /cgi-bin/ptzctrl.cgi?ptzcmd&<action>&<args>`) with a
//! minimal HTTP/1.1 client over `std::net::TcpStream`, answering the camera's 401 with
//! Digest (preferred) or Basic using the camera's own credentials.
//!
//! Source: PTZOptics "HTTP-CGI Commands" (developer portal): arguments are bare values
//! joined by `&`; pan speed 1–24, tilt speed 1–20, zoom speed 1–7 (0–7 documented, 1–7
//! safe); `ptzstop&0&0`, `zoomstop&0`, `home`, `posset&N`, `poscall&N`. The camera has no
//! position query over HTTP. The appliance only ever requests these fixed paths: it never
//! proxies the camera's web UI or arbitrary CGI paths.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::auth::{self, Challenge, ChallengeError, DigestChallenge};
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

/// A parsed response: what the client needs of it.
struct Response {
    status: u16,
    /// `WWW-Authenticate` values.
    challenges: Vec<String>,
}

/// How to authenticate the next request, learned from the camera's last challenge.
enum AuthState {
    None,
    Basic,
    Digest { challenge: DigestChallenge, nc: u32 },
}

/// A one-request-per-connection HTTP/1.1 client for one camera. Credentials live here
/// and only leave as an `Authorization` header; nothing in here logs them or the header.
struct HttpClient {
    id: String,
    host: String,
    port: u16,
    username: String,
    password: Secret,
    auth: AuthState,
    addr: Option<SocketAddr>,
}

fn io_to_ptz(e: io::Error, what: &str) -> PtzError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => PtzError::Timeout,
        _ => PtzError::Camera(format!("{what}: {e}")),
    }
}

impl HttpClient {
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
        match &mut self.auth {
            AuthState::None => None,
            AuthState::Basic => Some(auth::basic_authorization(
                &self.username,
                self.password.expose(),
            )),
            AuthState::Digest { challenge, nc } => {
                *nc += 1;
                Some(auth::digest_authorization(
                    challenge,
                    &self.username,
                    self.password.expose(),
                    "GET",
                    path,
                    *nc,
                    &auth::cnonce(),
                ))
            }
        }
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
            self.auth = match ch {
                Challenge::Basic => AuthState::Basic,
                Challenge::Digest(challenge) => AuthState::Digest { challenge, nc: 0 },
            };
        }
        Err(PtzError::Camera(
            "camera kept asking for authentication (HTTP 401)".into(),
        ))
    }

    /// The camera's address, resolved once and again after a failed connect (a host
    /// name may move; a lookup per request would add its latency to every move).
    fn resolve(&mut self) -> Result<SocketAddr, PtzError> {
        if let Some(a) = self.addr {
            return Ok(a);
        }
        let a = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| PtzError::Camera(format!("cannot resolve {}", self.host)))?;
        self.addr = Some(a);
        Ok(a)
    }

    fn request(&mut self, path: &str, authorization: Option<&str>) -> Result<Response, PtzError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let addr = self.resolve()?;
        let where_ = format!("{}:{}", self.host, self.port);
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
            self.addr = None;
            io_to_ptz(e, &format!("cannot connect to {where_}"))
        })?;
        let _ = stream.set_nodelay(true);
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(|e| io_to_ptz(e, &where_))?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ptz-edge/{}\r\nAccept: */*\r\nConnection: close\r\n",
            self.host_header(),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(a) = authorization {
            req.push_str("Authorization: ");
            req.push_str(a);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .map_err(|e| io_to_ptz(e, &format!("sending to {where_}")))?;
        read_response(&mut stream, deadline)
            .map_err(|e| io_to_ptz(e, &format!("reading from {where_}")))
    }
}

/// Reads one response: the head, then the body by `Content-Length`, chunked framing or
/// connection close (the body is read to be polite, then discarded).
fn read_response(stream: &mut TcpStream, deadline: Instant) -> io::Result<Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let mut read_more = |buf: &mut Vec<u8>, eof: &mut bool| -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response timed out",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => *eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    };
    let (head_len, status, challenges, body_len, chunked) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let mut challenges = Vec::new();
                let mut body_len = None;
                let mut chunked = false;
                for h in resp.headers.iter() {
                    let v = String::from_utf8_lossy(h.value).into_owned();
                    if h.name.eq_ignore_ascii_case("www-authenticate") {
                        challenges.push(v);
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        body_len = v.trim().parse::<usize>().ok();
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = v.to_ascii_lowercase().contains("chunked");
                    }
                }
                break (n, status, challenges, body_len, chunked);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD && !eof => {
                read_more(&mut buf, &mut eof)?
            }
            Ok(httparse::Status::Partial) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "incomplete or oversized HTTP response head",
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed HTTP response: {e}"),
                ))
            }
        }
    };
    // Drain the body within the deadline; its content does not matter.
    loop {
        let body = &buf[head_len..];
        let done = eof
            || body.len() >= MAX_BODY
            || match (body_len, chunked) {
                (Some(n), _) => body.len() >= n,
                (None, true) => body.ends_with(b"0\r\n\r\n"),
                (None, false) => status == 204 || status == 304 || (100..200).contains(&status),
            };
        if done {
            break;
        }
        if read_more(&mut buf, &mut eof).is_err() {
            break;
        }
    }
    Ok(Response { status, challenges })
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
            client: HttpClient {
                id: camera_id.to_owned(),
                host: host.to_owned(),
                port,
                username: username.to_owned(),
                password,
                auth: AuthState::None,
                addr: None,
            },
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
