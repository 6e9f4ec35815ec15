//! PTZ service (ONVIF PTZ Service Specification, WSDL
//! <http://www.onvif.org/ver20/ptz/wsdl>, types in ver10 schema) request bodies and the
//! replies the driver reads. Velocities and positions are in the generic spaces every
//! ONVIF PTZ node supports: pan/tilt velocity -1..1 (`VelocityGenericSpace`), zoom
//! velocity -1..1, pan/tilt position -1..1 and zoom position 0..1
//! (`PositionGenericSpace`, `ZoomGenericSpace`); no space attribute means these.

use super::xml::{escape, Element};
use super::{OnvifError, NS_PTZ, NS_SCHEMA};

/// A number as the schema's xs:float wants it (no exponent, at most 4 decimals).
fn num(v: f64) -> String {
    let v = if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn token(profile: &str) -> String {
    format!("<tptz:ProfileToken>{}</tptz:ProfileToken>", escape(profile))
}

/// `ContinuousMove` with `tt:PanTilt x y` and `tt:Zoom x`; no `Timeout`: the
/// controller's dead-man sends the stop.
pub fn continuous_move(profile: &str, pan: f64, tilt: f64, zoom: f64) -> String {
    format!(
        "<tptz:ContinuousMove>{}<tptz:Velocity><tt:PanTilt x=\"{}\" y=\"{}\"/><tt:Zoom x=\"{}\"/></tptz:Velocity></tptz:ContinuousMove>",
        token(profile),
        num(pan),
        num(tilt),
        num(zoom)
    )
}

/// `Stop` of pan/tilt and zoom.
pub fn stop(profile: &str) -> String {
    format!(
        "<tptz:Stop>{}<tptz:PanTilt>true</tptz:PanTilt><tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
        token(profile)
    )
}

pub fn goto_home(profile: &str) -> String {
    format!(
        "<tptz:GotoHomePosition>{}</tptz:GotoHomePosition>",
        token(profile)
    )
}

pub fn goto_preset(profile: &str, preset_token: &str) -> String {
    format!(
        "<tptz:GotoPreset>{}<tptz:PresetToken>{}</tptz:PresetToken></tptz:GotoPreset>",
        token(profile),
        escape(preset_token)
    )
}

/// `SetPreset`: overwrite `preset_token` when given, else let the device make one;
/// `name` is the preset's name either way.
pub fn set_preset(profile: &str, name: &str, preset_token: Option<&str>) -> String {
    format!(
        "<tptz:SetPreset>{}<tptz:PresetName>{}</tptz:PresetName>{}</tptz:SetPreset>",
        token(profile),
        escape(name),
        preset_token
            .map(|t| format!("<tptz:PresetToken>{}</tptz:PresetToken>", escape(t)))
            .unwrap_or_default()
    )
}

pub fn get_presets(profile: &str) -> String {
    format!("<tptz:GetPresets>{}</tptz:GetPresets>", token(profile))
}

pub fn get_status(profile: &str) -> String {
    format!("<tptz:GetStatus>{}</tptz:GetStatus>", token(profile))
}

/// `(token, name)` of each preset in a `GetPresetsResponse`.
pub fn parse_presets(resp: &Element) -> Vec<(String, String)> {
    resp.children_named(NS_PTZ, "Preset")
        .filter_map(|p| {
            Some((
                p.attr("token")?.to_owned(),
                p.child_text(NS_SCHEMA, "Name").unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

/// The token a `SetPresetResponse` returns.
pub fn parse_set_preset(resp: &Element) -> Result<String, OnvifError> {
    resp.child_text(NS_PTZ, "PresetToken")
        .map(str::to_owned)
        .ok_or_else(|| OnvifError::Protocol("no PresetToken in SetPresetResponse".into()))
}

/// Pan, tilt (-1..1) and zoom (0..1) from a `GetStatusResponse`'s `PTZStatus/Position`.
pub fn parse_status(resp: &Element) -> Result<(f64, f64, f64), OnvifError> {
    let pos = resp
        .child(NS_PTZ, "PTZStatus")
        .and_then(|s| s.child(NS_SCHEMA, "Position"))
        .ok_or_else(|| OnvifError::Protocol("no PTZStatus/Position in GetStatusResponse".into()))?;
    let attr = |el: Option<&Element>, a: &str| {
        el.and_then(|e| e.attr(a))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let pt = pos.child(NS_SCHEMA, "PanTilt");
    let z = pos.child(NS_SCHEMA, "Zoom");
    Ok((
        attr(pt, "x").unwrap_or(0.0),
        attr(pt, "y").unwrap_or(0.0),
        attr(z, "x").unwrap_or(0.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain() {
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(-1.0), "-1");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.00001), "0");
        assert_eq!(num(2.0), "1");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(1.0 / 3.0), "0.3333");
    }

    #[test]
    fn bodies_escape_tokens() {
        assert_eq!(
            goto_preset("a<b", "1"),
            "<tptz:GotoPreset><tptz:ProfileToken>a&lt;b</tptz:ProfileToken><tptz:PresetToken>1</tptz:PresetToken></tptz:GotoPreset>"
        );
        assert!(set_preset("p", "7", None)
            .ends_with("<tptz:PresetName>7</tptz:PresetName></tptz:SetPreset>"));
    }
}
