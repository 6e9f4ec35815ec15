//! The device (ver10 device WSDL) and media (ver10 media WSDL) calls the appliance makes:
//! the device clock, where the media and PTZ services live, device information, media
//! profiles and their stream URIs. Request bodies follow ONVIF Core Specification 2.x
//! and the Media Service Specification; replies are read by namespace and local name.

use serde::Serialize;

use super::client::Client;
use super::xml::{escape, Element};
use super::{strip_userinfo, OnvifError, NS_DEVICE, NS_MEDIA, NS_SCHEMA};

/// Where a device's services live (already pointed at the address we reach it on).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Services {
    pub media: Option<String>,
    pub ptz: Option<String>,
}

/// `GetDeviceInformation`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub manufacturer: String,
    pub model: String,
    pub firmware_version: String,
    pub serial_number: String,
    pub hardware_id: String,
}

/// One media profile (`trt:Profiles`), with what a user picks a stream by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub token: String,
    pub name: String,
    /// `H264`, `H265`, `JPEG`, `MPEG4` as the device names it; `None` without a video
    /// encoder configuration.
    pub encoding: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The profile has a PTZ configuration (it can be driven over the PTZ service).
    pub ptz: bool,
}

fn missing(what: &str) -> OnvifError {
    OnvifError::Protocol(format!("no {what} in the reply"))
}

/// Media and PTZ service addresses: `GetCapabilities` (every Profile S device), and
/// `GetServices` for devices that answer the former with a fault (some newer firmware
/// has dropped it).
pub fn services(client: &mut Client) -> Result<Services, OnvifError> {
    let url = client.device_url();
    match client.call(
        &url,
        "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>",
    ) {
        Ok(resp) => {
            let caps = resp
                .child(NS_DEVICE, "Capabilities")
                .ok_or_else(|| missing("Capabilities"))?;
            let xaddr = |name: &str| {
                caps.child(NS_SCHEMA, name)
                    .and_then(|c| c.child_local("XAddr"))
                    .map(|x| client.service_url(x.text()))
            };
            Ok(Services {
                media: xaddr("Media"),
                ptz: xaddr("PTZ"),
            })
        }
        Err(OnvifError::Fault { .. }) => {
            let resp = client.call(
                &url,
                "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
            )?;
            let mut s = Services::default();
            for svc in resp.children_named(NS_DEVICE, "Service") {
                let ns = svc.child_text(NS_DEVICE, "Namespace").unwrap_or("");
                let Some(x) = svc.child_text(NS_DEVICE, "XAddr") else {
                    continue;
                };
                match ns {
                    super::NS_MEDIA => s.media = Some(client.service_url(x)),
                    super::NS_PTZ => s.ptz = Some(client.service_url(x)),
                    _ => {}
                }
            }
            Ok(s)
        }
        Err(e) => Err(e),
    }
}

/// `GetDeviceInformation`.
pub fn device_information(client: &mut Client) -> Result<DeviceInfo, OnvifError> {
    let url = client.device_url();
    let r = client.call(&url, "<tds:GetDeviceInformation/>")?;
    let f = |n: &str| r.child_text(NS_DEVICE, n).unwrap_or("").to_owned();
    Ok(DeviceInfo {
        manufacturer: f("Manufacturer"),
        model: f("Model"),
        firmware_version: f("FirmwareVersion"),
        serial_number: f("SerialNumber"),
        hardware_id: f("HardwareId"),
    })
}

/// Reads a `GetProfilesResponse`.
pub fn parse_profiles(resp: &Element) -> Vec<Profile> {
    resp.children_named(NS_MEDIA, "Profiles")
        .filter_map(|p| {
            let token = p.attr("token")?.to_owned();
            let enc = p.child(NS_SCHEMA, "VideoEncoderConfiguration");
            let res = enc.and_then(|e| e.child(NS_SCHEMA, "Resolution"));
            let dim = |n: &str| {
                res.and_then(|r| r.child_text(NS_SCHEMA, n))
                    .and_then(|t| t.parse().ok())
            };
            Some(Profile {
                name: p.child_text(NS_SCHEMA, "Name").unwrap_or(&token).to_owned(),
                encoding: enc
                    .and_then(|e| e.child_text(NS_SCHEMA, "Encoding"))
                    .map(str::to_owned),
                width: dim("Width"),
                height: dim("Height"),
                ptz: p.child(NS_SCHEMA, "PTZConfiguration").is_some(),
                token,
            })
        })
        .collect()
}

/// `GetProfiles` on the media service.
pub fn profiles(client: &mut Client, media_url: &str) -> Result<Vec<Profile>, OnvifError> {
    let r = client.call(media_url, "<trt:GetProfiles/>")?;
    Ok(parse_profiles(&r))
}

/// The `GetStreamUri` body for RTSP over RTP unicast (Media Service Specification,
/// `trt:StreamSetup` with `tt:Stream` RTP-Unicast and `tt:Transport/tt:Protocol` RTSP).
pub fn stream_uri_body(profile_token: &str) -> String {
    format!(
        concat!(
            "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>",
            "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>",
            "<trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>"
        ),
        escape(profile_token)
    )
}

/// `GetStreamUri`: the RTSP URI of a profile, any credentials the device embedded in it
/// removed (they are ours; rtspsrc gets them as properties).
pub fn stream_uri(
    client: &mut Client,
    media_url: &str,
    profile_token: &str,
) -> Result<String, OnvifError> {
    let r = client.call(media_url, &stream_uri_body(profile_token))?;
    let uri = r
        .child(NS_MEDIA, "MediaUri")
        .and_then(|m| m.child_text(NS_SCHEMA, "Uri"))
        .ok_or_else(|| missing("MediaUri/Uri"))?;
    Ok(strip_userinfo(uri))
}

/// What the appliance keeps of a device for streaming and PTZ: the services and the
/// profiles.
pub struct Discovered {
    pub services: Services,
    pub profiles: Vec<Profile>,
}

/// Services, then the media profiles (none when the device has no media service).
pub fn discover(client: &mut Client) -> Result<Discovered, OnvifError> {
    let services = services(client)?;
    let profiles = match &services.media {
        Some(m) => profiles(client, m)?,
        None => Vec::new(),
    };
    Ok(Discovered { services, profiles })
}

/// The profile with this token, or the first one (the main stream) for `None`.
pub fn pick_profile<'a>(
    profiles: &'a [Profile],
    token: Option<&str>,
) -> Result<&'a Profile, OnvifError> {
    match token {
        Some(t) => profiles.iter().find(|p| p.token == t).ok_or_else(|| {
            let known: Vec<&str> = profiles.iter().map(|p| p.token.as_str()).collect();
            OnvifError::Unsupported(format!(
                "the device has no media profile {t:?} (it has {known:?})"
            ))
        }),
        None => profiles
            .first()
            .ok_or_else(|| OnvifError::Unsupported("the device has no media profiles".into())),
    }
}

/// The RTSP URI of a profile (`None`: the first, the main stream), asking the device
/// for its services and profiles first: what connecting by ONVIF needs.
pub fn stream_uri_of_profile(
    client: &mut Client,
    profile: Option<&str>,
) -> Result<String, OnvifError> {
    let found = discover(client)?;
    let media =
        found.services.media.as_deref().ok_or_else(|| {
            OnvifError::Unsupported("the ONVIF device has no media service".into())
        })?;
    let p = pick_profile(&found.profiles, profile)?;
    stream_uri(client, media, &p.token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onvif::client::read_reply;

    /// A GetProfiles reply shaped like Hikvision firmware 5.5's (prefixes `trt`/`tt`,
    /// a second profile without PTZ, a third without a video encoder).
    #[test]
    fn profiles_are_read() {
        let doc = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"><env:Body><trt:GetProfilesResponse>
<trt:Profiles fixed="true" token="Profile_1"><tt:Name>mainStream</tt:Name><tt:VideoEncoderConfiguration token="VEC1"><tt:Name>VEC1</tt:Name><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration><tt:PTZConfiguration token="PTZ1"/></trt:Profiles>
<trt:Profiles token="Profile_2"><tt:Name>subStream</tt:Name><tt:VideoEncoderConfiguration><tt:Encoding>H265</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width><tt:Height>360</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>
<trt:Profiles token="audio"/></trt:GetProfilesResponse></env:Body></env:Envelope>"#;
        let p = parse_profiles(&read_reply(200, doc).unwrap());
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Profile {
                token: "Profile_1".into(),
                name: "mainStream".into(),
                encoding: Some("H264".into()),
                width: Some(1920),
                height: Some(1080),
                ptz: true
            }
        );
        assert!(!p[1].ptz);
        assert_eq!(p[2].encoding, None);
        assert_eq!(pick_profile(&p, None).unwrap().token, "Profile_1");
        assert_eq!(
            pick_profile(&p, Some("Profile_2")).unwrap().name,
            "subStream"
        );
        assert!(pick_profile(&p, Some("x")).is_err());
    }
}
