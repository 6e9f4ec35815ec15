//! Settings of the appliance, read from the environment (a systemd `EnvironmentFile`).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::Secret;

/// When a camera's H.264 is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Decode only while someone watches (viewer, MJPEG, a recent `/frame`); the RTSP
    /// session stays up and the packets since the last keyframe are kept.
    OnDemand,
    /// Decode every frame all the time.
    Always,
}

impl FromStr for DecodeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on-demand" | "ondemand" | "" => Ok(DecodeMode::OnDemand),
            "always" => Ok(DecodeMode::Always),
            other => Err(format!(
                "unknown decode mode {other:?} (on-demand | always)"
            )),
        }
    }
}

impl fmt::Display for DecodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeMode::OnDemand => "on-demand",
            DecodeMode::Always => "always",
        })
    }
}

/// Limits that keep a small device alive under bad or greedy clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_cameras: usize,
    pub max_websockets: usize,
    pub max_streams: usize,
    pub http_workers: usize,
    pub max_body_bytes: usize,
    pub max_ws_message_bytes: usize,
    pub idle_keep_alive: Duration,
    pub write_timeout: Duration,
    /// How long a request head may take to arrive (from the connection, or from its first
    /// byte on a kept-alive one), and a body after it; then 408 and close.
    pub head_timeout: Duration,
    /// Open connections from one peer address; more are refused with 503.
    pub max_conn_per_peer: usize,
    /// Open connections in all; 0 derives it from the file descriptor limit.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cameras: 16,
            max_websockets: 64,
            max_streams: 32,
            http_workers: 8,
            max_body_bytes: 64 * 1024,
            max_ws_message_bytes: 64 * 1024,
            idle_keep_alive: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            head_timeout: Duration::from_secs(10),
            max_conn_per_peer: 256,
            max_connections: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub decode: DecodeMode,
    /// Force one decoder element (e.g. `avdec_h264`); `None` picks by rank.
    pub decoder: Option<String>,
    /// Where connected cameras are kept across restarts; `None` disables persistence.
    pub state_file: Option<PathBuf>,
    /// Bearer token for the API; `None` leaves it open.
    pub token: Option<Secret>,
    /// Threads per camera for the software decoder.
    pub decoder_threads: u32,
    /// mDNS / DNS-SD announcement.
    pub mdns: crate::discovery::MdnsMode,
    /// ONVIF WS-Discovery (`GET /api/discover`): whether the probe goes to the multicast
    /// group 239.255.255.250:3702 (`PTZ_EDGE_DISCOVERY_MULTICAST`, on by default).
    pub discovery_multicast: bool,
    /// Extra unicast probe targets, `ip:port,...` (`PTZ_EDGE_DISCOVERY_TARGETS`): cameras
    /// on other subnets, and simulators on loopback in tests (multicast does not loop
    /// back on every host).
    pub discovery_targets: Vec<std::net::SocketAddr>,
    pub limits: Limits,
}

/// A setting that cannot be used. The appliance does not start: fix the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Variable `name` has a value that does not parse or is out of range (`why`).
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid { name, value, why } => {
                write!(f, "configuration: {name}={value:?}: {why}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 3000,
            decode: DecodeMode::OnDemand,
            decoder: None,
            state_file: None,
            token: None,
            decoder_threads: 1,
            mdns: crate::discovery::MdnsMode::On,
            discovery_multicast: true,
            discovery_targets: Vec::new(),
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// Reads `PORT`, `BIND`, `PTZ_EDGE_*` from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = nonempty("PORT") {
            c.port = parse(&v, "PORT")?;
        }
        if let Some(v) = nonempty("BIND") {
            c.bind = parse(&v, "BIND")?;
        }
        if let Some(v) = nonempty("PTZ_EDGE_DECODE") {
            c.decode = parse(&v, "PTZ_EDGE_DECODE")?;
        }
        c.decoder = nonempty("PTZ_EDGE_DECODER");
        c.state_file = match nonempty("PTZ_EDGE_STATE") {
            Some(v) if v == "off" || v == "none" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => default_state_file(&get),
        };
        c.token = nonempty("PTZ_EDGE_TOKEN").map(Secret::new);
        if let Some(v) = nonempty("PTZ_EDGE_DECODER_THREADS") {
            c.decoder_threads = parse(&v, "PTZ_EDGE_DECODER_THREADS")?;
        }
        if let Some(v) = nonempty("PTZ_EDGE_MDNS") {
            c.mdns = parse(&v, "PTZ_EDGE_MDNS")?;
        }
        if let Some(v) = nonempty("PTZ_EDGE_DISCOVERY_MULTICAST") {
            c.discovery_multicast = match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => true,
                "off" | "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "PTZ_EDGE_DISCOVERY_MULTICAST",
                        value: v,
                        why: "use on or off".into(),
                    })
                }
            };
        }
        if let Some(v) = nonempty("PTZ_EDGE_DISCOVERY_TARGETS") {
            c.discovery_targets = v
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| parse(t, "PTZ_EDGE_DISCOVERY_TARGETS"))
                .collect::<Result<_, _>>()?;
        }
        let l = &mut c.limits;
        if let Some(v) = nonempty("PTZ_EDGE_MAX_CAMERAS") {
            l.max_cameras = parse(&v, "PTZ_EDGE_MAX_CAMERAS")?;
        }
        if let Some(v) = nonempty("PTZ_EDGE_MAX_WEBSOCKETS") {
            l.max_websockets = parse(&v, "PTZ_EDGE_MAX_WEBSOCKETS")?;
        }
        if let Some(v) = nonempty("PTZ_EDGE_HTTP_WORKERS") {
            l.http_workers = parse::<usize>(&v, "PTZ_EDGE_HTTP_WORKERS")?.max(1);
        }
        if let Some(v) = nonempty("PTZ_EDGE_MAX_CONN_PER_PEER") {
            l.max_conn_per_peer = parse::<usize>(&v, "PTZ_EDGE_MAX_CONN_PER_PEER")?.max(1);
        }
        if let Some(v) = nonempty("PTZ_EDGE_MAX_CONNECTIONS") {
            l.max_connections = parse(&v, "PTZ_EDGE_MAX_CONNECTIONS")?;
        }
        if let Some(v) = nonempty("PTZ_EDGE_IDLE_KEEP_ALIVE_MS") {
            let ms: u64 = parse(&v, "PTZ_EDGE_IDLE_KEEP_ALIVE_MS")?;
            l.idle_keep_alive = Duration::from_millis(ms.max(1));
        }
        if let Some(v) = nonempty("PTZ_EDGE_HEAD_TIMEOUT_MS") {
            let ms: u64 = parse(&v, "PTZ_EDGE_HEAD_TIMEOUT_MS")?;
            l.head_timeout = Duration::from_millis(ms.max(1));
        }
        Ok(c)
    }
}

/// `$STATE_DIRECTORY` (systemd `StateDirectory=`), else `$XDG_STATE_HOME` or
/// `~/.local/state`, else none.
fn default_state_file(get: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = get("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        let first = dir.split(':').next().unwrap_or_default().to_owned();
        return Some(PathBuf::from(first).join("cameras.json"));
    }
    let base = get("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("ptz-edge").join("cameras.json"))
}

fn parse<T: FromStr>(v: &str, name: &'static str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| ConfigError::Invalid {
        name,
        value: v.to_owned(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert_eq!(c.decode, DecodeMode::OnDemand);
        assert!(c.token.is_none());
        assert!(c.state_file.is_none());
        assert_eq!(c.limits.max_conn_per_peer, 256);
        assert_eq!(c.limits.head_timeout, Duration::from_secs(10));
    }

    #[test]
    fn reads_connection_limits() {
        let c = cfg(&[
            ("PTZ_EDGE_MAX_CONN_PER_PEER", "12"),
            ("PTZ_EDGE_MAX_CONNECTIONS", "500"),
            ("PTZ_EDGE_HEAD_TIMEOUT_MS", "750"),
        ])
        .unwrap();
        assert_eq!(c.limits.max_conn_per_peer, 12);
        assert_eq!(c.limits.max_connections, 500);
        assert_eq!(c.limits.head_timeout, Duration::from_millis(750));
        assert!(cfg(&[("PTZ_EDGE_MAX_CONN_PER_PEER", "-1")]).is_err());
    }

    #[test]
    fn reads_settings() {
        let c = cfg(&[
            ("PORT", "8080"),
            ("BIND", "127.0.0.1"),
            ("PTZ_EDGE_DECODE", "always"),
            ("PTZ_EDGE_TOKEN", "abc"),
            ("STATE_DIRECTORY", "/var/lib/ptz-edge"),
        ])
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.decode, DecodeMode::Always);
        assert_eq!(c.token.unwrap().expose(), "abc");
        assert_eq!(
            c.state_file.unwrap(),
            PathBuf::from("/var/lib/ptz-edge/cameras.json")
        );
    }

    #[test]
    fn reads_discovery_settings() {
        let c = cfg(&[]).unwrap();
        assert!(c.discovery_multicast && c.discovery_targets.is_empty());
        let c = cfg(&[
            ("PTZ_EDGE_DISCOVERY_MULTICAST", "off"),
            ("PTZ_EDGE_DISCOVERY_TARGETS", "127.0.0.1:3702, [::1]:4000"),
        ])
        .unwrap();
        assert!(!c.discovery_multicast);
        assert_eq!(c.discovery_targets.len(), 2);
        assert_eq!(c.discovery_targets[1].port(), 4000);
        assert!(cfg(&[("PTZ_EDGE_DISCOVERY_TARGETS", "camera.local")]).is_err());
        assert!(cfg(&[("PTZ_EDGE_DISCOVERY_MULTICAST", "maybe")]).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(cfg(&[("PORT", "70000")]).is_err());
        assert!(cfg(&[("BIND", "nope")]).is_err());
        assert!(cfg(&[("PTZ_EDGE_DECODE", "sometimes")]).is_err());
    }
}
