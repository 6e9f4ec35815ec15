//! ONVIF PTZ driver (Profile S PTZ, ONVIF PTZ Service Specification with the ver20 PTZ
//! WSDL): `ContinuousMove` in the generic velocity space (our -1..1 velocities as they
//! are), `Stop`, `GotoHomePosition`, `GotoPreset` / `SetPreset` (by `GetPresets`), and
//! `GetStatus` for the position. The SOAP, WS-Security and HTTP work is
//! [`crate::onvif`]'s; this file only maps the [`PtzDriver`] calls onto it.
//!
//! On the first command the driver asks the device service where the PTZ and media
//! services are (`GetCapabilities`, or `GetServices`) and which media profile to drive
//! (`GetProfiles`: the first with a PTZ configuration), and keeps both. The controller's
//! dead-man stop works as for the other protocols: `ContinuousMove` carries no
//! `Timeout`, the controller sends `Stop`.
//!
//! Presets: ONVIF presets have device-chosen tokens and free names, while our API numbers
//! them 0-254. Preset `N` is the device preset named `N`, else the one whose token is `N`
//! (Hikvision and Dahua use numeric tokens); saving `N` overwrites that preset, or creates
//! one named `N` and remembers the token the device returns.

use std::collections::HashMap;

use super::{check_preset, Position, Protocol, PtzDriver, PtzError, DEAD_ZONE};
use crate::onvif::{self, device, ptz_service, Client, OnvifError};
use crate::secret::Secret;

/// `GetStatus` positions are reported in ten-thousandths of the generic spaces: pan and
/// tilt -10000..10000, zoom 0..10000 (the API's position is integers).
pub const POSITION_SCALE: f64 = 10_000.0;
/// One SOAP exchange, connect to last byte: as the CGI driver's, so a hung camera
/// answers a PTZ command with a timeout well inside the controller's reply wait.
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl From<OnvifError> for PtzError {
    fn from(e: OnvifError) -> PtzError {
        match e {
            OnvifError::Timeout => PtzError::Timeout,
            OnvifError::Unsupported(s) => PtzError::Unsupported(s),
            other => PtzError::Camera(other.to_string()),
        }
    }
}

/// Where to send PTZ calls, once found.
struct Target {
    ptz_url: String,
    profile: String,
}

pub struct OnvifDriver {
    id: String,
    client: Client,
    target: Option<Target>,
    /// Preset index → device token, learned from `GetPresets` / `SetPreset`.
    presets: HashMap<u8, String>,
}

impl OnvifDriver {
    /// A driver for the device whose device service is at `http://host:port/onvif/device_service`.
    /// Never does I/O here; the first command finds the services.
    pub fn new(
        camera_id: &str,
        host: &str,
        port: u16,
        username: &str,
        password: Secret,
    ) -> OnvifDriver {
        OnvifDriver {
            id: camera_id.to_owned(),
            client: Client::with_timeout(host, port, username, password, EXCHANGE_TIMEOUT),
            target: None,
            presets: HashMap::new(),
        }
    }

    fn target(&mut self) -> Result<(String, String), PtzError> {
        if let Some(t) = &self.target {
            return Ok((t.ptz_url.clone(), t.profile.clone()));
        }
        let found = device::discover(&mut self.client)?;
        let ptz_url = found.services.ptz.ok_or_else(|| {
            PtzError::Unsupported(
                "the ONVIF device has no PTZ service: connect it without \"ptz\"".into(),
            )
        })?;
        let profile = found
            .profiles
            .iter()
            .find(|p| p.ptz)
            .or_else(|| found.profiles.first())
            .ok_or_else(|| {
                PtzError::Unsupported("the ONVIF device has no media profile to drive".into())
            })?
            .token
            .clone();
        log::info!(
            "{}: ONVIF PTZ service {} (profile {profile})",
            self.id,
            onvif::strip_userinfo(&ptz_url)
        );
        self.target = Some(Target {
            ptz_url: ptz_url.clone(),
            profile: profile.clone(),
        });
        Ok((ptz_url, profile))
    }

    /// Calls the PTZ service with the body `make(profile)` builds.
    fn call(
        &mut self,
        make: impl FnOnce(&str) -> String,
    ) -> Result<crate::onvif::xml::Element, PtzError> {
        let (url, profile) = self.target()?;
        match self.client.call(&url, &make(&profile)) {
            Ok(r) => Ok(r),
            Err(e) => {
                if matches!(e, OnvifError::Http(404) | OnvifError::Unreachable(_)) {
                    // Services may have moved (firmware update, another port): ask again next time.
                    self.target = None;
                }
                Err(e.into())
            }
        }
    }

    /// The device token of preset `index`, asking the device when not known.
    fn preset_token(&mut self, index: u8, refresh: bool) -> Result<Option<String>, PtzError> {
        if !refresh {
            if let Some(t) = self.presets.get(&index) {
                return Ok(Some(t.clone()));
            }
        }
        let all = ptz_service::parse_presets(&self.call(ptz_service::get_presets)?);
        let want = index.to_string();
        let found = all
            .iter()
            .find(|(_, name)| *name == want)
            .or_else(|| all.iter().find(|(token, _)| *token == want))
            .map(|(token, _)| token.clone());
        match &found {
            Some(t) => {
                self.presets.insert(index, t.clone());
            }
            None => {
                self.presets.remove(&index);
            }
        }
        Ok(found)
    }
}

impl PtzDriver for OnvifDriver {
    fn move_continuous(&mut self, pan: f64, tilt: f64, zoom: f64) -> Result<(), PtzError> {
        let cut = |v: f64| if v.abs() < DEAD_ZONE { 0.0 } else { v };
        let (pan, tilt, zoom) = (cut(pan), cut(tilt), cut(zoom));
        if pan == 0.0 && tilt == 0.0 && zoom == 0.0 {
            return self.stop();
        }
        self.call(|p| ptz_service::continuous_move(p, pan, tilt, zoom))
            .map(|_| ())
    }

    fn stop(&mut self) -> Result<(), PtzError> {
        self.call(ptz_service::stop).map(|_| ())
    }

    fn home(&mut self) -> Result<(), PtzError> {
        self.call(ptz_service::goto_home).map(|_| ())
    }

    fn preset_goto(&mut self, index: u8) -> Result<(), PtzError> {
        check_preset(Protocol::Onvif, index)?;
        let token = match self.preset_token(index, false)? {
            Some(t) => t,
            None => {
                return Err(PtzError::Camera(format!(
                    "the camera has no preset {index} (save it first)"
                )))
            }
        };
        match self.call(|p| ptz_service::goto_preset(p, &token)) {
            // A token we remembered may have been deleted on the device: look again once.
            Err(PtzError::Camera(_))
                if self.preset_token(index, true)?.as_ref() != Some(&token) =>
            {
                let token = self.presets.get(&index).cloned().ok_or_else(|| {
                    PtzError::Camera(format!("the camera has no preset {index} (save it first)"))
                })?;
                self.call(|p| ptz_service::goto_preset(p, &token))
                    .map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    fn preset_save(&mut self, index: u8) -> Result<(), PtzError> {
        check_preset(Protocol::Onvif, index)?;
        let existing = self.preset_token(index, true)?;
        let name = index.to_string();
        let resp = self.call(|p| ptz_service::set_preset(p, &name, existing.as_deref()))?;
        let token = ptz_service::parse_set_preset(&resp)
            .ok()
            .or(existing)
            .ok_or_else(|| PtzError::Camera("SetPreset returned no PresetToken".into()))?;
        self.presets.insert(index, token);
        Ok(())
    }

    fn position(&mut self) -> Result<Position, PtzError> {
        let (pan, tilt, zoom) = ptz_service::parse_status(&self.call(ptz_service::get_status)?)?;
        let scale = |v: f64| (v * POSITION_SCALE).round() as i32;
        Ok(Position {
            pan: scale(pan),
            tilt: scale(tilt),
            zoom: scale(zoom),
        })
    }
}
