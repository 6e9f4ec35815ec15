//! ONVIF client: SOAP 1.2 over HTTP with WS-Security UsernameToken ([`client`]), the
//! device and media service calls the appliance needs ([`device`]), the PTZ service's
//! request bodies ([`ptz_service`]), and WS-Discovery ([`discovery`]).
//!
//! Specifications followed (the versions named here are the ones the bodies were
//! written against; later 2.x versions keep these operations unchanged):
//! - ONVIF Core Specification 2.x (device service, `GetSystemDateAndTime`,
//!   `GetCapabilities`, `GetServices`, `GetDeviceInformation`; section 5.12 on
//!   WS-Security UsernameToken; section 7 on WS-Discovery), schema
//!   <http://www.onvif.org/ver10/device/wsdl>.
//! - ONVIF Media Service Specification (ver10: `GetProfiles`, `GetStreamUri`), schema
//!   <http://www.onvif.org/ver10/media/wsdl>.
//! - ONVIF PTZ Service Specification (ver20 WSDL: `ContinuousMove`, `Stop`,
//!   `GotoHomePosition`, `GotoPreset`, `SetPreset`, `GetPresets`, `GetStatus`), schema
//!   <http://www.onvif.org/ver20/ptz/wsdl>, types in <http://www.onvif.org/ver10/schema>.
//! - SOAP 1.2 envelope <http://www.w3.org/2003/05/soap-envelope>; OASIS WSS
//!   UsernameToken Profile 1.0 (PasswordDigest); WS-Discovery 1.0 (2005/04).
//!
//! Calls go one way: `ptz::onvif` and `api` use this module; it imports neither (only
//! the leaf helpers `http_auth` and `secret`).

pub mod client;
pub mod device;
pub mod discovery;
pub mod ptz_service;
pub mod time;
pub mod xml;

use std::fmt;

pub use client::Client;

/// SOAP 1.2 envelope.
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// SOAP 1.1 envelope: only read (faults of old firmware), never sent.
pub const NS_SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// ONVIF common types (`tt:`).
pub const NS_SCHEMA: &str = "http://www.onvif.org/ver10/schema";
/// Device service (`tds:`).
pub const NS_DEVICE: &str = "http://www.onvif.org/ver10/device/wsdl";
/// Media service ver10 (`trt:`).
pub const NS_MEDIA: &str = "http://www.onvif.org/ver10/media/wsdl";
/// PTZ service ver20 (`tptz:`).
pub const NS_PTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";
/// WS-Security extension (`wsse:`).
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility (`wsu:`).
pub const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// `wsse:Password/@Type` for a digest.
pub const PASSWORD_DIGEST: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
/// `wsse:Nonce/@EncodingType`.
pub const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";
/// Where the device service lives (ONVIF Core 2.x, 5.1.1: "http://<host>/onvif/device_service").
pub const DEVICE_SERVICE_PATH: &str = "/onvif/device_service";

/// Why an ONVIF call failed. `Display` is fit for an API reply's `detail`: it carries
/// addresses without credentials and the device's own fault text, never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnvifError {
    /// No connection (refused, unreachable, no route, DNS): check the address and port.
    Unreachable(String),
    /// The device did not answer in time: it may be off or hung; retry later.
    Timeout,
    /// The device rejected the username or password (WS-Security `NotAuthorized` /
    /// `FailedAuthentication` fault, or HTTP 401 after answering its challenge): fix
    /// the credentials. The text says which check failed.
    Auth(String),
    /// The device answered with a SOAP fault: its code, subcode and reason text. The
    /// request was understood and refused; retrying it unchanged fails again.
    Fault {
        code: String,
        subcode: Option<String>,
        reason: String,
    },
    /// An HTTP error without a SOAP fault (404: no ONVIF service at that address).
    Http(u16),
    /// The reply is not the SOAP the specification defines (malformed XML, a missing
    /// element): a firmware quirk to report; the text names what was missing.
    Protocol(String),
    /// The device lacks the service (e.g. no PTZ service): connect without ONVIF PTZ.
    Unsupported(String),
}

impl OnvifError {
    /// Whether the device said the credentials are wrong.
    pub fn is_auth(&self) -> bool {
        matches!(self, OnvifError::Auth(_))
    }
}

impl fmt::Display for OnvifError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnvifError::Unreachable(s) => write!(f, "ONVIF device unreachable: {s}"),
            OnvifError::Timeout => f.write_str("the ONVIF device did not answer in time"),
            OnvifError::Auth(s) => write!(
                f,
                "ONVIF authentication failed: the device rejected the username or password ({s})"
            ),
            OnvifError::Fault {
                code,
                subcode,
                reason,
            } => {
                write!(f, "ONVIF device fault {code}")?;
                if let Some(s) = subcode {
                    write!(f, "/{s}")?;
                }
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            OnvifError::Http(s) => write!(f, "ONVIF device answered HTTP {s} without a SOAP reply"),
            OnvifError::Protocol(s) => write!(f, "unexpected ONVIF reply: {s}"),
            OnvifError::Unsupported(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for OnvifError {}

/// How a camera connected by ONVIF finds its stream: the device's address, ONVIF HTTP port and
/// the media profile (`None`: the first, the main stream). Kept with the camera (and in
/// the state file) so the stream URI can be asked again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnvifSource {
    /// The device's address (the stream URI may name another host).
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// `userinfo@` removed from a URI (`rtsp://admin:pw@10.0.0.5/x` → `rtsp://10.0.0.5/x`):
/// some devices embed the credentials in `GetStreamUri` replies, and no reply of ours may
/// carry a password.
pub fn strip_userinfo(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{tail}")
}

/// The parts of an `rtsp://host[:port]/path` URI (userinfo dropped, IPv6 brackets
/// removed, port 554 when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspUri {
    pub host: String,
    pub port: u16,
    /// The path with its query, starting with `/`.
    pub path: String,
}

pub fn parse_rtsp_uri(uri: &str) -> Result<RtspUri, OnvifError> {
    let bad = || {
        OnvifError::Protocol(format!(
            "stream URI {} is not rtsp://host[:port]/path",
            strip_userinfo(uri)
        ))
    };
    let rest = uri
        .strip_prefix("rtsp://")
        .or_else(|| uri.strip_prefix("RTSP://"))
        .ok_or_else(bad)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 554,
            None => return Err(bad()),
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
            None => (hostport.to_owned(), 554),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    let path = if tail.is_empty() {
        "/".to_owned()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_owned()
    };
    Ok(RtspUri { host, port, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("rtsp://admin:p@ss@10.0.0.5:554/Streaming/101?a=b@c"),
            "rtsp://10.0.0.5:554/Streaming/101?a=b@c"
        );
        assert_eq!(strip_userinfo("rtsp://10.0.0.5/x"), "rtsp://10.0.0.5/x");
        assert_eq!(strip_userinfo("not a uri"), "not a uri");
    }

    #[test]
    fn rtsp_uris_split() {
        let u = parse_rtsp_uri("rtsp://u:p@10.0.0.5:8554/cam/1?x=y").unwrap();
        assert_eq!(
            u,
            RtspUri {
                host: "10.0.0.5".into(),
                port: 8554,
                path: "/cam/1?x=y".into()
            }
        );
        let u = parse_rtsp_uri("rtsp://[fe80::1]/s").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("fe80::1", 554, "/s")
        );
        assert_eq!(parse_rtsp_uri("rtsp://h").unwrap().path, "/");
        assert!(parse_rtsp_uri("http://h/x").is_err());
        assert!(parse_rtsp_uri("rtsp://h:0/x").is_err());
        assert!(parse_rtsp_uri("rtsp://:554/x").is_err());
        // The error never repeats a password.
        let e = parse_rtsp_uri("rtsp://u:secret@h:x/")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
