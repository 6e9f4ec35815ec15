//! Announces the appliance on the LAN with mDNS / DNS-SD (`_ptz-edge._tcp` and
//! `_http._tcp`, port and version in TXT), so the app finds it without typing an IP.

use std::fmt;
use std::str::FromStr;

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

pub const SERVICE_TYPE: &str = "_ptz-edge._tcp.local.";
pub const HTTP_SERVICE_TYPE: &str = "_http._tcp.local.";

/// Where to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnsMode {
    /// The interfaces the API listens on: every one for `BIND=0.0.0.0` (the default on
    /// a device), only loopback for `127.0.0.1`, only that interface for one address.
    On,
    Off,
    /// The loopback interface only (tests: no multicast leaves the machine).
    Loopback,
}

impl FromStr for MdnsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(MdnsMode::On),
            "off" | "false" | "0" | "no" => Ok(MdnsMode::Off),
            "loopback" => Ok(MdnsMode::Loopback),
            other => Err(format!("PTZ_EDGE_MDNS={other:?}: use on, off or loopback")),
        }
    }
}

impl fmt::Display for MdnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MdnsMode::On => "on",
            MdnsMode::Off => "off",
            MdnsMode::Loopback => "loopback",
        })
    }
}

/// A running announcement; `stop` sends the goodbye packets and ends the daemon thread.
pub struct Announcer {
    daemon: ServiceDaemon,
    names: Vec<String>,
}

/// The instance name: `ptz-edge on <hostname>`.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".into());
    format!("ptz-edge on {host}")
}

impl Announcer {
    pub fn start(
        mode: MdnsMode,
        bind: std::net::IpAddr,
        port: u16,
    ) -> Result<Option<Announcer>, String> {
        let only = match mode {
            MdnsMode::Off => return Ok(None),
            MdnsMode::Loopback => Some(IfKind::LoopbackV4),
            MdnsMode::On if bind.is_loopback() => Some(IfKind::LoopbackV4),
            MdnsMode::On if !bind.is_unspecified() => Some(IfKind::Addr(bind)),
            MdnsMode::On => None,
        };
        let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
        if let Some(kind) = only {
            daemon
                .disable_interface(IfKind::All)
                .and_then(|_| daemon.enable_interface(kind))
                .map_err(|e| format!("mDNS: {e}"))?;
        }
        let name = instance_name();
        let host = format!(
            "{}.local.",
            name.rsplit(' ')
                .next()
                .unwrap_or("ptz-edge")
                .replace('.', "-")
        );
        let props = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("path", "/"),
            ("api", "/api/cameras"),
            ("ws", "/ws"),
        ];
        let mut names = Vec::new();
        for ty in [SERVICE_TYPE, HTTP_SERVICE_TYPE] {
            let info = ServiceInfo::new(ty, &name, &host, "", port, &props[..])
                .map_err(|e| format!("mDNS: {e}"))?
                .enable_addr_auto();
            names.push(info.get_fullname().to_owned());
            daemon.register(info).map_err(|e| format!("mDNS: {e}"))?;
        }
        log::info!("mDNS: announcing \"{name}\" ({SERVICE_TYPE}, {HTTP_SERVICE_TYPE}) port {port}");
        Ok(Some(Announcer { daemon, names }))
    }

    pub fn stop(self) {
        for n in &self.names {
            if let Ok(rx) = self.daemon.unregister(n) {
                let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
            }
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}
