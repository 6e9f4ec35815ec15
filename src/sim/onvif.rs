//! The simulator's ONVIF side: reading the SOAP requests a device receives (device,
//! media and PTZ services), checking their WS-Security UsernameToken, writing the
//! replies the specifications define, and WS-Discovery ProbeMatch replies. The HTTP
//! server and the head it moves are `sim/ptz.rs`'s (ONVIF is served on the same port as
//! the HTTP-CGI, as on a PTZOptics camera); this file holds no sockets and no head.
//!
//! Written against the same specifications the client names (`crate::onvif`): ONVIF
//! Core 2.x, Media (ver10), PTZ (ver20 WSDL), SOAP 1.2, WSS UsernameToken 1.0,
//! WS-Discovery 2005/04.

use base64::Engine as _;

use crate::onvif::client::password_digest;
use crate::onvif::time::{civil_from_days, parse_utc_millis};
use crate::onvif::xml::{self, escape, Element};
use crate::onvif::{NS_DEVICE, NS_MEDIA, NS_PTZ, NS_SCHEMA, NS_SOAP, NS_WSSE, NS_WSU};

/// How far a token's `Created` may be from the device clock (devices use 5 s to a few
/// minutes; a strict one shows the offset correction at work).
pub const CREATED_TOLERANCE_MS: i64 = 5_000;

/// One media profile the simulated device offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimProfile {
    pub token: String,
    pub name: String,
    pub encoding: String,
    pub width: u32,
    pub height: u32,
    /// What `GetStreamUri` answers for it.
    pub uri: String,
    /// Whether the profile has a PTZ configuration.
    pub ptz: bool,
}

/// The device's ONVIF identity and settings.
#[derive(Debug, Clone)]
pub struct SimOnvif {
    /// WS-Security user and password; `None` accepts every request unauthenticated.
    pub credentials: Option<(String, String)>,
    /// The device clock runs this far ahead of ours (negative: behind), in milliseconds.
    pub clock_offset_ms: i64,
    pub profiles: Vec<SimProfile>,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub serial: String,
    /// `onvif://www.onvif.org/name/...` scope.
    pub name: String,
    /// `onvif://www.onvif.org/hardware/...` scope.
    pub hardware: String,
    /// The WS-Addressing endpoint reference (`urn:uuid:...`).
    pub endpoint: String,
    /// ONVIF presets: token, name, position in the generic spaces.
    pub presets: Vec<(String, String, (f64, f64, f64))>,
    pub next_preset: u32,
}

impl Default for SimOnvif {
    fn default() -> Self {
        SimOnvif {
            credentials: None,
            clock_offset_ms: 0,
            profiles: vec![SimProfile {
                token: "main".into(),
                name: "MainStream".into(),
                encoding: "H264".into(),
                width: 1280,
                height: 720,
                uri: "rtsp://127.0.0.1:554/1".into(),
                ptz: true,
            }],
            manufacturer: "ptz-edge".into(),
            model: "camera-sim".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            serial: "SIM-0001".into(),
            name: "camera-sim".into(),
            hardware: "camera-sim".into(),
            endpoint: format!(
                "urn:uuid:{}",
                crate::onvif::discovery::uuid(&crate::http_auth::cnonce())
            ),
            presets: Vec::new(),
            next_preset: 1,
        }
    }
}

/// A received UsernameToken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub username: String,
    pub password: String,
    pub digest: bool,
    pub nonce: Vec<u8>,
    pub created: String,
}

/// What a request asks for; PTZ velocities and positions in the generic spaces.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    GetSystemDateAndTime,
    GetCapabilities,
    GetServices,
    GetDeviceInformation,
    GetProfiles,
    GetStreamUri {
        profile: String,
        stream: String,
        protocol: String,
    },
    ContinuousMove {
        profile: String,
        pan: Option<f64>,
        tilt: Option<f64>,
        zoom: Option<f64>,
    },
    Stop {
        profile: String,
        pan_tilt: bool,
        zoom: bool,
    },
    GotoHomePosition {
        profile: String,
    },
    GotoPreset {
        profile: String,
        token: String,
    },
    SetPreset {
        profile: String,
        name: Option<String>,
        token: Option<String>,
    },
    GetPresets {
        profile: String,
    },
    GetStatus {
        profile: String,
    },
    /// Anything else: answered with `ter:ActionNotSupported`.
    Other(String),
}

impl Action {
    /// The profile token a PTZ or stream action names.
    pub fn profile(&self) -> Option<&str> {
        match self {
            Action::GetStreamUri { profile, .. }
            | Action::ContinuousMove { profile, .. }
            | Action::Stop { profile, .. }
            | Action::GotoHomePosition { profile }
            | Action::GotoPreset { profile, .. }
            | Action::SetPreset { profile, .. }
            | Action::GetPresets { profile }
            | Action::GetStatus { profile } => Some(profile),
            _ => None,
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct SoapRequest {
    pub action: Action,
    pub token: Option<Token>,
}

/// Reads a SOAP 1.2 request. `Err` holds the fault reason (malformed envelope).
pub fn parse_request(text: &str) -> Result<SoapRequest, String> {
    let root = xml::parse(text).map_err(|e| e.to_string())?;
    if !root.is(NS_SOAP, "Envelope") {
        return Err("not a SOAP 1.2 Envelope".into());
    }
    let token = root
        .child(NS_SOAP, "Header")
        .and_then(|h| h.child(NS_WSSE, "Security"))
        .and_then(|s| s.child(NS_WSSE, "UsernameToken"))
        .map(|t| {
            let pw = t.child(NS_WSSE, "Password");
            Token {
                username: t.child_text(NS_WSSE, "Username").unwrap_or("").to_owned(),
                password: pw.map(|p| p.text().to_owned()).unwrap_or_default(),
                digest: pw
                    .and_then(|p| p.attr("Type"))
                    .is_some_and(|t| t.ends_with("#PasswordDigest")),
                nonce: t
                    .child_text(NS_WSSE, "Nonce")
                    .and_then(|n| base64::engine::general_purpose::STANDARD.decode(n).ok())
                    .unwrap_or_default(),
                created: t.child_text(NS_WSU, "Created").unwrap_or("").to_owned(),
            }
        });
    let op = root
        .child(NS_SOAP, "Body")
        .and_then(|b| b.children.first())
        .ok_or("no SOAP Body element")?;
    Ok(SoapRequest {
        action: action(op),
        token,
    })
}

fn action(op: &Element) -> Action {
    let ptz_token = || {
        op.child_text(NS_PTZ, "ProfileToken")
            .unwrap_or("")
            .to_owned()
    };
    let ns = op.ns.as_deref().unwrap_or("");
    let f = |e: Option<&Element>, a: &str| {
        e.and_then(|e| e.attr(a))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let flag = |n: &str| {
        op.child_text(NS_PTZ, n)
            .is_none_or(|v| v == "true" || v == "1")
    };
    match (ns, op.name.as_str()) {
        (NS_DEVICE, "GetSystemDateAndTime") => Action::GetSystemDateAndTime,
        (NS_DEVICE, "GetCapabilities") => Action::GetCapabilities,
        (NS_DEVICE, "GetServices") => Action::GetServices,
        (NS_DEVICE, "GetDeviceInformation") => Action::GetDeviceInformation,
        (NS_MEDIA, "GetProfiles") => Action::GetProfiles,
        (NS_MEDIA, "GetStreamUri") => {
            let setup = op.child(NS_MEDIA, "StreamSetup");
            Action::GetStreamUri {
                profile: op
                    .child_text(NS_MEDIA, "ProfileToken")
                    .unwrap_or("")
                    .to_owned(),
                stream: setup
                    .and_then(|s| s.child_text(NS_SCHEMA, "Stream"))
                    .unwrap_or("")
                    .to_owned(),
                protocol: setup
                    .and_then(|s| s.path(&[(NS_SCHEMA, "Transport"), (NS_SCHEMA, "Protocol")]))
                    .map(|p| p.text().to_owned())
                    .unwrap_or_default(),
            }
        }
        (NS_PTZ, "ContinuousMove") => {
            let v = op.child(NS_PTZ, "Velocity");
            let pt = v.and_then(|v| v.child(NS_SCHEMA, "PanTilt"));
            let z = v.and_then(|v| v.child(NS_SCHEMA, "Zoom"));
            Action::ContinuousMove {
                profile: ptz_token(),
                pan: f(pt, "x"),
                tilt: f(pt, "y"),
                zoom: f(z, "x"),
            }
        }
        (NS_PTZ, "Stop") => Action::Stop {
            profile: ptz_token(),
            pan_tilt: flag("PanTilt"),
            zoom: flag("Zoom"),
        },
        (NS_PTZ, "GotoHomePosition") => Action::GotoHomePosition {
            profile: ptz_token(),
        },
        (NS_PTZ, "GotoPreset") => Action::GotoPreset {
            profile: ptz_token(),
            token: op
                .child_text(NS_PTZ, "PresetToken")
                .unwrap_or("")
                .to_owned(),
        },
        (NS_PTZ, "SetPreset") => Action::SetPreset {
            profile: ptz_token(),
            name: op.child_text(NS_PTZ, "PresetName").map(str::to_owned),
            token: op.child_text(NS_PTZ, "PresetToken").map(str::to_owned),
        },
        (NS_PTZ, "GetPresets") => Action::GetPresets {
            profile: ptz_token(),
        },
        (NS_PTZ, "GetStatus") => Action::GetStatus {
            profile: ptz_token(),
        },
        (_, name) => Action::Other(name.to_owned()),
    }
}

/// Checks the token as a device does (ONVIF Core 2.x 5.12.2): the user, the digest over
/// nonce + created + password, and `Created` within [`CREATED_TOLERANCE_MS`] of the
/// device clock (`device_now_ms`). `Err` is the fault reason.
pub fn check_token(
    token: Option<&Token>,
    user: &str,
    password: &str,
    device_now_ms: i64,
) -> Result<(), &'static str> {
    let t = token.ok_or("no WS-Security UsernameToken")?;
    if t.username != user {
        return Err("unknown user");
    }
    if !t.digest {
        // PasswordText is allowed by the profile, but ONVIF clients send digests.
        return if t.password == password {
            Ok(())
        } else {
            Err("wrong password")
        };
    }
    let created = parse_utc_millis(&t.created).ok_or("Created is not a UTC dateTime")?;
    if (created - device_now_ms).abs() > CREATED_TOLERANCE_MS {
        return Err("Created is too far from the device clock");
    }
    if password_digest(&t.nonce, &t.created, password) != t.password {
        return Err("wrong password digest");
    }
    Ok(())
}

/// A reply envelope around `body`.
pub fn envelope(body: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<env:Envelope xmlns:env=\"{}\" xmlns:tds=\"{}\" xmlns:trt=\"{}\" ",
            "xmlns:tptz=\"{}\" xmlns:tt=\"{}\" xmlns:ter=\"http://www.onvif.org/ver10/error\">",
            "<env:Body>{}</env:Body></env:Envelope>"
        ),
        NS_SOAP, NS_DEVICE, NS_MEDIA, NS_PTZ, NS_SCHEMA, body
    )
}

/// A SOAP 1.2 fault (`env:Sender` with an ONVIF `ter:` subcode).
pub fn fault(subcode: &str, reason: &str) -> String {
    envelope(&format!(
        concat!(
            "<env:Fault><env:Code><env:Value>env:Sender</env:Value>",
            "<env:Subcode><env:Value>ter:{}</env:Value></env:Subcode></env:Code>",
            "<env:Reason><env:Text xml:lang=\"en\">{}</env:Text></env:Reason></env:Fault>"
        ),
        subcode,
        escape(reason)
    ))
}

/// `GetSystemDateAndTimeResponse` for the device time `device_ms`.
pub fn system_date_and_time(device_ms: i64) -> String {
    let secs = device_ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    envelope(&format!(
        concat!(
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>",
            "<tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>",
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>",
            "<tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time>",
            "<tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime>",
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        ),
        r / 3600,
        r % 3600 / 60,
        r % 60,
        y,
        mo,
        d
    ))
}

/// Service paths the simulator serves.
pub const MEDIA_PATH: &str = "/onvif/media_service";
pub const PTZ_PATH: &str = "/onvif/ptz_service";

/// `GetCapabilitiesResponse` with the media and PTZ services under `base`
/// (`http://host:port`).
pub fn capabilities(base: &str) -> String {
    envelope(&format!(
        concat!(
            "<tds:GetCapabilitiesResponse><tds:Capabilities>",
            "<tt:Device><tt:XAddr>{b}/onvif/device_service</tt:XAddr></tt:Device>",
            "<tt:Media><tt:XAddr>{b}{m}</tt:XAddr><tt:StreamingCapabilities>",
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>",
            "</tt:StreamingCapabilities></tt:Media>",
            "<tt:PTZ><tt:XAddr>{b}{p}</tt:XAddr></tt:PTZ>",
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        ),
        b = base,
        m = MEDIA_PATH,
        p = PTZ_PATH
    ))
}

/// `GetServicesResponse` (ONVIF Core 2.x 8.1.2.1).
pub fn services(base: &str) -> String {
    let svc = |ns: &str, path: &str| {
        format!(
            "<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{base}{path}</tds:XAddr><tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
        )
    };
    envelope(&format!(
        "<tds:GetServicesResponse>{}{}{}</tds:GetServicesResponse>",
        svc(NS_DEVICE, "/onvif/device_service"),
        svc(NS_MEDIA, MEDIA_PATH),
        svc(NS_PTZ, PTZ_PATH)
    ))
}

impl SimOnvif {
    pub fn device_information(&self) -> String {
        envelope(&format!(
            concat!(
                "<tds:GetDeviceInformationResponse><tds:Manufacturer>{}</tds:Manufacturer>",
                "<tds:Model>{}</tds:Model><tds:FirmwareVersion>{}</tds:FirmwareVersion>",
                "<tds:SerialNumber>{}</tds:SerialNumber><tds:HardwareId>{}</tds:HardwareId>",
                "</tds:GetDeviceInformationResponse>"
            ),
            escape(&self.manufacturer),
            escape(&self.model),
            escape(&self.firmware),
            escape(&self.serial),
            escape(&self.hardware)
        ))
    }

    pub fn profiles(&self) -> String {
        let mut out = String::from("<trt:GetProfilesResponse>");
        for p in &self.profiles {
            out.push_str(&format!(
                concat!(
                    "<trt:Profiles fixed=\"true\" token=\"{t}\"><tt:Name>{n}</tt:Name>",
                    "<tt:VideoEncoderConfiguration token=\"vec-{t}\"><tt:Name>vec-{t}</tt:Name>",
                    "<tt:UseCount>1</tt:UseCount><tt:Encoding>{e}</tt:Encoding>",
                    "<tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height></tt:Resolution>",
                    "<tt:Quality>5</tt:Quality></tt:VideoEncoderConfiguration>"
                ),
                t = escape(&p.token),
                n = escape(&p.name),
                e = escape(&p.encoding),
                w = p.width,
                h = p.height
            ));
            if p.ptz {
                out.push_str(concat!(
                    "<tt:PTZConfiguration token=\"ptz0\"><tt:Name>ptz0</tt:Name><tt:UseCount>1</tt:UseCount>",
                    "<tt:NodeToken>node0</tt:NodeToken></tt:PTZConfiguration>"
                ));
            }
            out.push_str("</trt:Profiles>");
        }
        out.push_str("</trt:GetProfilesResponse>");
        envelope(&out)
    }

    pub fn profile(&self, token: &str) -> Option<&SimProfile> {
        self.profiles.iter().find(|p| p.token == token)
    }

    pub fn stream_uri(&self, uri: &str) -> String {
        envelope(&format!(
            concat!(
                "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{}</tt:Uri>",
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>",
                "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>",
                "</trt:MediaUri></trt:GetStreamUriResponse>"
            ),
            escape(uri)
        ))
    }

    pub fn presets_reply(&self) -> String {
        let mut out = String::from("<tptz:GetPresetsResponse>");
        for (t, n, (p, ti, z)) in &self.presets {
            out.push_str(&format!(
                "<tptz:Preset token=\"{}\"><tt:Name>{}</tt:Name><tt:PTZPosition><tt:PanTilt x=\"{p}\" y=\"{ti}\"/><tt:Zoom x=\"{z}\"/></tt:PTZPosition></tptz:Preset>",
                escape(t),
                escape(n)
            ));
        }
        out.push_str("</tptz:GetPresetsResponse>");
        envelope(&out)
    }

    /// Saves `pos` under the given token (overwriting) or a new one; returns the token.
    pub fn set_preset(
        &mut self,
        token: Option<&str>,
        name: Option<&str>,
        pos: (f64, f64, f64),
    ) -> String {
        let token = match token {
            Some(t) => t.to_owned(),
            None => {
                let t = format!("p{}", self.next_preset);
                self.next_preset += 1;
                t
            }
        };
        let name = name.unwrap_or(&token).to_owned();
        self.presets.retain(|(t, _, _)| *t != token);
        self.presets.push((token.clone(), name, pos));
        token
    }

    /// A `ProbeMatches` answering `relates_to` (the probe's MessageID), advertising the
    /// device service at `xaddr`.
    pub fn probe_match(&self, relates_to: &str, xaddr: &str) -> String {
        format!(
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                "<s:Envelope xmlns:s=\"{soap}\" xmlns:a=\"{wsa}\" xmlns:d=\"{wsd}\" xmlns:dn=\"{dn}\">",
                "<s:Header><a:MessageID>urn:uuid:{id}</a:MessageID><a:RelatesTo>{rel}</a:RelatesTo>",
                "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>",
                "<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>",
                "</s:Header><s:Body><d:ProbeMatches><d:ProbeMatch>",
                "<a:EndpointReference><a:Address>{ep}</a:Address></a:EndpointReference>",
                "<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>",
                "<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/type/ptz ",
                "onvif://www.onvif.org/Profile/Streaming onvif://www.onvif.org/name/{name} ",
                "onvif://www.onvif.org/hardware/{hw} onvif://www.onvif.org/location/country/nowhere</d:Scopes>",
                "<d:XAddrs>{xaddr}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>",
                "</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
            ),
            soap = NS_SOAP,
            wsa = crate::onvif::discovery::NS_WSA,
            wsd = crate::onvif::discovery::NS_WSD,
            dn = crate::onvif::discovery::NS_DN,
            id = crate::onvif::discovery::uuid(&crate::http_auth::cnonce()),
            rel = escape(relates_to),
            ep = escape(&self.endpoint),
            name = scope_escape(&self.name),
            hw = scope_escape(&self.hardware),
            xaddr = escape(xaddr),
        )
    }
}

/// Scope values are URIs: spaces and reserved characters percent-encoded.
fn scope_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onvif::{ptz_service, time::format_utc_millis};

    #[test]
    fn the_clients_bodies_parse_as_the_spec_defines() {
        let wrap = |b: &str| {
            format!(
                "<s:Envelope xmlns:s=\"{NS_SOAP}\" xmlns:tptz=\"{NS_PTZ}\" xmlns:tt=\"{NS_SCHEMA}\" xmlns:trt=\"{NS_MEDIA}\"><s:Body>{b}</s:Body></s:Envelope>"
            )
        };
        let a = |b: String| parse_request(&wrap(&b)).unwrap().action;
        assert_eq!(
            a(ptz_service::continuous_move("main", 0.5, -1.0, 0.0)),
            Action::ContinuousMove {
                profile: "main".into(),
                pan: Some(0.5),
                tilt: Some(-1.0),
                zoom: Some(0.0)
            }
        );
        assert_eq!(
            a(ptz_service::stop("main")),
            Action::Stop {
                profile: "main".into(),
                pan_tilt: true,
                zoom: true
            }
        );
        assert_eq!(
            a(crate::onvif::device::stream_uri_body("p&1")),
            Action::GetStreamUri {
                profile: "p&1".into(),
                stream: "RTP-Unicast".into(),
                protocol: "RTSP".into()
            }
        );
    }

    #[test]
    fn token_checks() {
        let now = 1_700_000_000_000;
        let created = format_utc_millis(now);
        let nonce = vec![1, 2, 3];
        let t = Token {
            username: "admin".into(),
            password: password_digest(&nonce, &created, "pw"),
            digest: true,
            nonce,
            created,
        };
        assert_eq!(check_token(Some(&t), "admin", "pw", now), Ok(()));
        assert!(check_token(Some(&t), "admin", "other", now).is_err());
        assert!(check_token(Some(&t), "root", "pw", now).is_err());
        assert!(check_token(Some(&t), "admin", "pw", now + 60_000).is_err());
        assert!(check_token(None, "admin", "pw", now).is_err());
    }
}
