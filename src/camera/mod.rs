//! Cameras: what to connect to (`CameraSpec`), one thread per camera (`supervisor`) fed
//! by its GStreamer pipelines (`pipeline`, `decode`), and what it offers viewers (`feed`:
//! the newest picture in `frame`, the `demand` for it, its `jpeg` encodings).
//!
//! One picture, one way: rtspsrc → depay/parse → access units (kept from the last
//! keyframe) → decoder (bounded input) → `FrameSlot` (newest only) → `JpegService` →
//! viewers. Demand flows back only as guard values (`demand::Demand`).

pub mod change;
pub mod decode;
pub mod demand;
pub mod feed;
pub mod frame;
pub mod jpeg;
pub mod pipeline;
pub mod supervisor;
pub mod thumb;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub use feed::{Feed, Viewer};
pub use frame::Frame;
pub use jpeg::{Jpeg, JpegParams};
pub use supervisor::{
    Camera, CameraOptions, CameraState, CameraStatus, Handle, Locate, PictureError, RetryReason,
    StreamLocation,
};

/// How RTP travels from the camera: the configured policy (see
/// `docs/rtsp-session-start.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP-interleaved first; UDP only when the camera cannot do TCP (SETUP refused,
    /// or no RTP after PLAY). Whatever streamed last is tried first on the next
    /// reconnect. Not rtspsrc's own `tcp+udp` order, which tries UDP first and waits
    /// out its whole UDP timeout before TCP when UDP brings nothing.
    #[default]
    Auto,
    /// RTP interleaved in the RTSP TCP connection: works through Wi-Fi, NAT and host
    /// firewalls.
    Tcp,
    /// RTP over UDP only (a clean LAN; no head-of-line blocking after a loss).
    Udp,
}

impl Transport {
    /// The lower transport a session tries first under this policy.
    pub fn first(self) -> LowerTransport {
        match self {
            Transport::Auto | Transport::Tcp => LowerTransport::Tcp,
            Transport::Udp => LowerTransport::Udp,
        }
    }
}

/// What one session's RTP actually travels over (RFC 2326 "lower-transport").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerTransport {
    Tcp,
    Udp,
}

impl LowerTransport {
    pub fn other(self) -> LowerTransport {
        match self {
            LowerTransport::Tcp => LowerTransport::Udp,
            LowerTransport::Udp => LowerTransport::Tcp,
        }
    }
}

impl fmt::Display for LowerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LowerTransport::Tcp => "TCP",
            LowerTransport::Udp => "UDP",
        })
    }
}

impl FromStr for Transport {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Transport::Auto),
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            other => Err(SpecError::Transport(other.to_owned())),
        }
    }
}

/// Why a camera spec is refused. Every variant means: fix that field of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// `cameraId` is empty.
    IdEmpty,
    /// `cameraId` is longer than 64 characters.
    IdTooLong,
    /// `cameraId` has characters that cannot be an API path segment.
    IdCharacters,
    /// `ip` is neither an IP address nor a host name (the text is what was given).
    Host(String),
    /// `streamPath` does not start with `/`.
    PathStart,
    /// `streamPath` is longer than 256 bytes.
    PathTooLong,
    /// `streamPath` has spaces, control characters, `@`, `#` or `\`.
    PathCharacters,
    /// `transport` is not auto, tcp or udp (the text is what was given).
    Transport(String),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::IdEmpty => f.write_str("cameraId must not be empty"),
            SpecError::IdTooLong => f.write_str("cameraId must be at most 64 characters"),
            SpecError::IdCharacters => {
                f.write_str("cameraId must not contain control characters or / ? # % \\")
            }
            SpecError::Host(h) => write!(
                f,
                "ip must be an IPv4 or IPv6 address or a host name, not {h:?}"
            ),
            SpecError::PathStart => f.write_str("streamPath must start with /"),
            SpecError::PathTooLong => f.write_str("streamPath is too long"),
            SpecError::PathCharacters => {
                f.write_str("streamPath must not contain spaces, control characters, @, # or \\")
            }
            SpecError::Transport(t) => {
                write!(f, "transport must be auto, tcp or udp, not {t:?}")
            }
        }
    }
}

impl std::error::Error for SpecError {}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// The video codec a camera sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn media_type(self) -> &'static str {
        match self {
            Codec::H264 => "video/x-h264",
            Codec::H265 => "video/x-h265",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        })
    }
}

/// Everything needed to reach one camera's stream. The password is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraSpec {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub username: String,
    #[serde(with = "secret_serde")]
    pub password: Secret,
    #[serde(default)]
    pub transport: Transport,
}

impl CameraSpec {
    /// The RTSP address without credentials (they go to rtspsrc as properties).
    pub fn location(&self) -> String {
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("rtsp://{host}:{}{}", self.port, self.path)
    }
}

/// The state file is the one place a password is written.
mod secret_serde {
    use crate::secret::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
        String::deserialize(de).map(Secret::new)
    }
}

/// Checks a camera id: 1 to 64 characters, no control characters, no `/`, `?`, `#`, `%`
/// (it is a path segment of the API).
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    if id.is_empty() {
        return Err(SpecError::IdEmpty);
    }
    if id.chars().count() > 64 {
        return Err(SpecError::IdTooLong);
    }
    if id
        .chars()
        .any(|c| c.is_control() || matches!(c, '/' | '?' | '#' | '%' | '\\'))
    {
        return Err(SpecError::IdCharacters);
    }
    Ok(())
}

/// Checks a camera address: an IPv4 or IPv6 address or a host name.
pub fn validate_host(host: &str) -> Result<(), SpecError> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !h.is_empty() && h.len() <= 253 && h.trim_end_matches('.').split('.').all(label_ok) {
        return Ok(());
    }
    Err(SpecError::Host(host.to_owned()))
}

/// Checks an RTSP path: starts with `/`, no spaces, `@`, control characters or fragment.
pub fn validate_path(path: &str) -> Result<(), SpecError> {
    if !path.starts_with('/') {
        return Err(SpecError::PathStart);
    }
    if path.len() > 256 {
        return Err(SpecError::PathTooLong);
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '#' || c == '\\')
    {
        return Err(SpecError::PathCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: &str) -> CameraSpec {
        CameraSpec {
            id: "c".into(),
            host: host.into(),
            port: 554,
            path: "/1".into(),
            username: "admin".into(),
            password: Secret::new("p@ss:w/rd#%"),
            transport: Transport::Auto,
        }
    }

    #[test]
    fn location_has_no_credentials_and_brackets_ipv6() {
        assert_eq!(spec("10.0.0.5").location(), "rtsp://10.0.0.5:554/1");
        assert_eq!(spec("fe80::1").location(), "rtsp://[fe80::1]:554/1");
        assert!(!format!("{:?}", spec("h")).contains("p@ss"));
    }

    #[test]
    fn validation() {
        assert!(validate_host("192.168.1.20").is_ok());
        assert!(validate_host("::1").is_ok());
        assert!(validate_host("[::1]").is_ok());
        assert!(validate_host("cam-1.local").is_ok());
        assert!(validate_host("a b").is_err());
        assert!(validate_host("user@host").is_err());
        assert!(validate_host("host/1").is_err());
        assert!(validate_host("").is_err());
        assert!(validate_path("/1").is_ok());
        assert!(validate_path("/stream1?x=1").is_ok());
        assert!(validate_path("1").is_err());
        assert!(validate_path("/a b").is_err());
        assert!(validate_path("/a@b").is_err());
        assert!(validate_id("cam-1").is_ok());
        assert!(validate_id("Kamera Süd").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(&"x".repeat(65)).is_err());
    }
}
