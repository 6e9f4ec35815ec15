//! WS-Discovery (ONVIF Core Specification 2.x section 7; WS-Discovery 1.0, April 2005,
//! the version ONVIF uses): one `Probe` for `dn:NetworkVideoTransmitter` sent to the
//! multicast group 239.255.255.250:3702 (and to any unicast targets given, which is how
//! tests reach a simulator on loopback), then the `ProbeMatches` that arrive within a
//! bounded wait. Synchronous: one UDP socket with a read timeout, no thread.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::xml::{self, escape};
use super::NS_SOAP;

/// WS-Addressing 2004/08, as WS-Discovery 2005/04 uses it.
pub const NS_WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
pub const NS_WSD: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
/// ONVIF network types (`dn:NetworkVideoTransmitter`).
pub const NS_DN: &str = "http://www.onvif.org/ver10/network/wsdl";
pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);
/// The longest wait a caller may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Answers kept (a busy LAN has tens of cameras; a flood stops here).
pub const MAX_DEVICES: usize = 256;

/// One device that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// The IP address the answer came from.
    pub address: String,
    /// The device's WS-Addressing endpoint (`urn:uuid:...`).
    pub endpoint: String,
    /// Device service URLs it advertises (`XAddrs`), credentials stripped.
    pub xaddrs: Vec<String>,
    /// From the `onvif://www.onvif.org/name/...` scope, percent-decoded.
    pub name: Option<String>,
    /// From the `onvif://www.onvif.org/hardware/...` scope.
    pub hardware: Option<String>,
    pub scopes: Vec<String>,
}

/// The Probe message with `message_id` (`urn:uuid:...`).
pub fn probe_message(message_id: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<s:Envelope xmlns:s=\"{}\" xmlns:a=\"{}\" xmlns:d=\"{}\" xmlns:dn=\"{}\">",
            "<s:Header><a:MessageID>{}</a:MessageID>",
            "<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>",
            "<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>",
            "</s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe>",
            "</s:Body></s:Envelope>"
        ),
        NS_SOAP,
        NS_WSA,
        NS_WSD,
        NS_DN,
        escape(message_id)
    )
}

/// Whether a datagram is a Probe; `Some(message id)` if so (for responders).
pub fn parse_probe(text: &str) -> Option<String> {
    let root = xml::parse(text).ok()?;
    root.child(NS_SOAP, "Body")?.child(NS_WSD, "Probe")?;
    Some(
        root.child(NS_SOAP, "Header")
            .and_then(|h| h.child_text(NS_WSA, "MessageID"))
            .unwrap_or("")
            .to_owned(),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The matches in a `ProbeMatches` answering `message_id`, from `from`.
pub fn parse_probe_matches(text: &str, message_id: &str, from: IpAddr) -> Vec<Found> {
    let Ok(root) = xml::parse(text) else {
        return Vec::new();
    };
    let relates = root
        .child(NS_SOAP, "Header")
        .and_then(|h| h.child_text(NS_WSA, "RelatesTo"));
    if relates.is_some_and(|r| r != message_id) {
        return Vec::new();
    }
    let Some(matches) = root
        .child(NS_SOAP, "Body")
        .and_then(|b| b.child(NS_WSD, "ProbeMatches"))
    else {
        return Vec::new();
    };
    matches
        .children_named(NS_WSD, "ProbeMatch")
        .map(|m| {
            let scopes: Vec<String> = m
                .child_text(NS_WSD, "Scopes")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let scope = |kind: &str| {
                let prefix = format!("onvif://www.onvif.org/{kind}/");
                scopes
                    .iter()
                    .find_map(|s| s.strip_prefix(&prefix))
                    .map(percent_decode)
            };
            Found {
                address: from.to_string(),
                endpoint: m
                    .child(NS_WSA, "EndpointReference")
                    .and_then(|e| e.child_text(NS_WSA, "Address"))
                    .unwrap_or("")
                    .to_owned(),
                xaddrs: m
                    .child_text(NS_WSD, "XAddrs")
                    .unwrap_or("")
                    .split_whitespace()
                    .map(super::strip_userinfo)
                    .collect(),
                name: scope("name"),
                hardware: scope("hardware"),
                scopes: scopes.clone(),
            }
        })
        .collect()
}

/// The IPv4 interface addresses a probe from `bind` goes out of: that address alone, or
/// for an unspecified bind every IPv4 interface that is up (loopback included, where a
/// local simulator or a camera proxy may answer).
fn probe_interfaces(bind: IpAddr) -> Vec<Ipv4Addr> {
    match bind {
        IpAddr::V4(v4) if !v4.is_unspecified() => vec![v4],
        _ => match if_addrs::get_if_addrs() {
            Ok(all) => {
                let mut v: Vec<Ipv4Addr> = all
                    .iter()
                    .filter(|i| i.is_oper_up() || i.is_loopback())
                    .filter_map(|i| match i.ip() {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            Err(e) => {
                log::warn!("cannot list network interfaces ({e}); probing on the default one");
                vec![Ipv4Addr::UNSPECIFIED]
            }
        },
    }
}

/// Sends one Probe to the multicast group out of each interface `bind` covers (when
/// `multicast`) and to each of `unicast`, and collects answers for `wait` (capped at
/// [`MAX_WAIT`]). Devices are listed once each (by endpoint, else by address), in
/// order of answer.
pub fn probe(
    bind: IpAddr,
    multicast: bool,
    unicast: &[SocketAddr],
    wait: Duration,
) -> io::Result<Vec<Found>> {
    let wait = wait.min(MAX_WAIT);
    let local = match bind {
        IpAddr::V4(_) => bind,
        // The group is IPv4.
        IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    sock.bind(&SocketAddr::new(local, 0).into())?;
    // Link-local by the WS-Discovery spec: the probe never leaves the LAN.
    sock.set_multicast_ttl_v4(1)?;
    sock.set_multicast_loop_v4(true)?;
    let sock: UdpSocket = sock.into();
    let id = format!("urn:uuid:{}", uuid(&crate::http_auth::cnonce()));
    let msg = probe_message(&id);
    let mut sent = 0;
    let mut last_err = None;
    let mut note = |r: io::Result<usize>, to: &dyn std::fmt::Display| match r {
        Ok(_) => sent += 1,
        // No multicast route on one interface: the others and the unicast targets may
        // still answer.
        Err(e) => {
            log::debug!("WS-Discovery probe to {to} failed: {e}");
            last_err = Some(e);
        }
    };
    if multicast {
        let s2 = socket2::SockRef::from(&sock);
        for iface in probe_interfaces(local) {
            let r = s2
                .set_multicast_if_v4(&iface)
                .and_then(|()| sock.send_to(msg.as_bytes(), SocketAddr::V4(MULTICAST)));
            note(r, &format!("{MULTICAST} via {iface}"));
        }
    }
    for to in unicast {
        note(sock.send_to(msg.as_bytes(), to), to);
    }
    if sent == 0 {
        if let Some(e) = last_err {
            return Err(e);
        }
    }
    let deadline = Instant::now() + wait;
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || found.len() >= MAX_DEVICES {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            // ICMP port unreachable from a unicast target: keep listening for the others.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        for f in parse_probe_matches(&text, &id, from.ip()) {
            let key = if f.endpoint.is_empty() {
                f.address.clone()
            } else {
                f.endpoint.clone()
            };
            if seen.insert(key) {
                found.push(f);
            }
        }
    }
    Ok(found)
}

/// `8-4-4-4-12` from 32 hex digits (the simulator's device ids use it too).
pub(crate) fn uuid(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ProbeMatch shaped like an Axis M5525's (firmware 9.80): scopes with
    /// percent-encoded names, two XAddrs (IPv4 and link-local IPv6).
    #[test]
    fn probe_matches_are_read() {
        let id = "urn:uuid:1";
        let doc = format!(
            r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}" xmlns:wsa="{NS_WSA}" xmlns:d="{NS_WSD}"><SOAP-ENV:Header><wsa:RelatesTo>{id}</wsa:RelatesTo></SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>urn:uuid:abc</wsa:Address></wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/AXIS%20M5525-E onvif://www.onvif.org/hardware/M5525-E</d:Scopes><d:XAddrs>http://root:pw@192.168.1.90/onvif/device_service http://[fe80::1]/onvif/device_service</d:XAddrs></d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        );
        let f = parse_probe_matches(&doc, id, "192.168.1.90".parse().unwrap());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name.as_deref(), Some("AXIS M5525-E"));
        assert_eq!(f[0].hardware.as_deref(), Some("M5525-E"));
        assert_eq!(f[0].endpoint, "urn:uuid:abc");
        assert_eq!(f[0].xaddrs[0], "http://192.168.1.90/onvif/device_service");
        // An answer to someone else's probe is ignored.
        assert!(parse_probe_matches(&doc, "urn:uuid:2", "10.0.0.1".parse().unwrap()).is_empty());
        assert_eq!(
            parse_probe(&probe_message("urn:uuid:9")).as_deref(),
            Some("urn:uuid:9")
        );
        assert_eq!(parse_probe(&doc), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
        assert_eq!(percent_decode("%é"), "%é");
    }
}
