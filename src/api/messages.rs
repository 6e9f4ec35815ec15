//! The WebSocket messages the app sends, parsed into types with clear errors. Pure: no
//! I/O, no state, so it is fuzzed in its tests.

use serde_json::Value;

use super::error::ApiError;
use super::params::{check_fps, check_quality, check_width, crop_value, DEFAULT_FPS};
use crate::camera::jpeg::DEFAULT_QUALITY;
use crate::camera::JpegParams;

#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeRequest {
    pub camera_id: String,
    pub fps: f64,
    pub binary: bool,
    pub params: JpegParams,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Ping,
    Unsubscribe,
    Subscribe(SubscribeRequest),
    /// Change events (no frames) of these cameras, replacing an earlier list.
    Watch {
        camera_ids: Vec<String>,
    },
    /// No more change events from `watch` (a subscription's own camera's still come).
    Unwatch,
    /// A PTZ command for a camera; `command` is the REST body of `/ptz`.
    Ptz {
        camera_id: String,
        command: Value,
    },
}

/// Parses one text message. The error's text is the `{"type":"error"}` reply.
pub fn parse(text: &str) -> Result<ClientMessage, ApiError> {
    let invalid = |s: &str| ApiError::Invalid(s.to_owned());
    let v: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err(invalid("message must be a JSON object")),
        Err(e) => return Err(ApiError::BadRequest(format!("invalid JSON: {e}"))),
    };
    match v.get("action").and_then(Value::as_str) {
        Some("ping") => Ok(ClientMessage::Ping),
        Some("unsubscribe") => Ok(ClientMessage::Unsubscribe),
        Some("watch") => watch(&v),
        Some("unwatch") => Ok(ClientMessage::Unwatch),
        Some("subscribe") => subscribe(&v).map(ClientMessage::Subscribe),
        Some("ptz") => {
            let camera_id = camera_id(&v, "ptz")?;
            match v.get("command") {
                Some(c @ Value::Object(_)) => Ok(ClientMessage::Ptz {
                    camera_id,
                    command: c.clone(),
                }),
                _ => Err(invalid("ptz needs a \"command\" object")),
            }
        }
        Some(other) => Err(ApiError::Invalid(format!("unknown action {other:?}"))),
        None => Err(invalid("message needs an \"action\" string")),
    }
}

/// The most cameras one `watch` may name.
pub const MAX_WATCHED: usize = 64;

fn watch(v: &Value) -> Result<ClientMessage, ApiError> {
    let bad = || {
        ApiError::Invalid(format!(
            "watch needs \"cameraIds\": a list of 1 to {MAX_WATCHED} camera id strings"
        ))
    };
    let ids = v
        .get("cameraIds")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    if ids.is_empty() || ids.len() > MAX_WATCHED {
        return Err(bad());
    }
    let mut camera_ids: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.as_str().ok_or_else(bad)?;
        if !camera_ids.iter().any(|c| c == id) {
            camera_ids.push(id.to_owned());
        }
    }
    Ok(ClientMessage::Watch { camera_ids })
}

fn camera_id(v: &Value, action: &str) -> Result<String, ApiError> {
    v.get("cameraId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::Invalid(format!("{action} needs a cameraId string")))
}

fn subscribe(v: &Value) -> Result<SubscribeRequest, ApiError> {
    let camera_id = camera_id(v, "subscribe")?;
    let fps = match v.get("fps") {
        None | Some(Value::Null) => DEFAULT_FPS,
        Some(f) => check_fps(f.as_f64())?,
    };
    let binary = match v.get("binary") {
        None | Some(Value::Null) => false,
        Some(b) => b
            .as_bool()
            .ok_or_else(|| ApiError::Invalid("binary must be true or false".into()))?,
    };
    let width = match v.get("width") {
        None | Some(Value::Null) => None,
        Some(w) => Some(check_width(w.as_u64())?),
    };
    let quality = match v.get("quality") {
        None | Some(Value::Null) => DEFAULT_QUALITY,
        Some(q) => check_quality(q.as_u64())?,
    };
    let crop = crop_value(v.get("crop"))?;
    Ok(SubscribeRequest {
        camera_id,
        fps,
        binary,
        params: JpegParams {
            width,
            quality,
            crop,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_messages() {
        assert_eq!(
            parse(r#"{"action":"watch","cameraIds":["a","b","a"]}"#),
            Ok(ClientMessage::Watch {
                camera_ids: vec!["a".into(), "b".into()]
            })
        );
        assert_eq!(parse(r#"{"action":"unwatch"}"#), Ok(ClientMessage::Unwatch));
        let many: Vec<String> = (0..=MAX_WATCHED).map(|i| format!("c{i}")).collect();
        for bad in [
            r#"{"action":"watch"}"#.to_owned(),
            r#"{"action":"watch","cameraIds":[]}"#.to_owned(),
            r#"{"action":"watch","cameraIds":"a"}"#.to_owned(),
            r#"{"action":"watch","cameraIds":[1]}"#.to_owned(),
            serde_json::json!({"action":"watch","cameraIds":many}).to_string(),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(
                e.to_string().contains("watch needs \"cameraIds\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_apps_messages() {
        assert_eq!(parse(r#"{"action":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            parse(r#"{"action":"unsubscribe"}"#),
            Ok(ClientMessage::Unsubscribe)
        );
        let s = parse(r#"{"action":"subscribe","cameraId":"c1"}"#).unwrap();
        assert_eq!(
            s,
            ClientMessage::Subscribe(SubscribeRequest {
                camera_id: "c1".into(),
                fps: 15.0,
                binary: false,
                params: JpegParams::default(),
            })
        );
        let s = parse(r#"{"action":"subscribe","cameraId":"c1","fps":30,"binary":true,"width":640,"quality":60}"#)
            .unwrap();
        let ClientMessage::Subscribe(s) = s else {
            panic!("not a subscribe")
        };
        assert_eq!(
            (s.fps, s.binary, s.params.width, s.params.quality),
            (30.0, true, Some(640), 60)
        );
        assert_eq!(s.params.crop, None);
        // A crop as an array or as the query's string form.
        for crop in [r#"[0.25,0.25,0.5,0.5]"#, r#""0.25,0.25,0.5,0.5""#] {
            let msg = format!(r#"{{"action":"subscribe","cameraId":"c1","crop":{crop}}}"#);
            let ClientMessage::Subscribe(s) = parse(&msg).unwrap() else {
                panic!("not a subscribe")
            };
            assert_eq!(
                s.params.crop.map(|c| c.fractions()),
                Some([0.25, 0.25, 0.5, 0.5])
            );
        }
    }

    #[test]
    fn bad_messages_are_errors_with_reasons() {
        for (msg, want) in [
            ("nope", "invalid JSON"),
            ("[1]", "JSON object"),
            ("{}", "action"),
            (r#"{"action":5}"#, "action"),
            (r#"{"action":"dance"}"#, "unknown action"),
            (r#"{"action":"subscribe"}"#, "cameraId"),
            (r#"{"action":"subscribe","cameraId":"c","fps":0}"#, "fps"),
            (r#"{"action":"subscribe","cameraId":"c","fps":61}"#, "fps"),
            (r#"{"action":"subscribe","cameraId":"c","fps":"10"}"#, "fps"),
            (
                r#"{"action":"subscribe","cameraId":"c","binary":1}"#,
                "binary",
            ),
            (
                r#"{"action":"subscribe","cameraId":"c","width":8}"#,
                "width",
            ),
            (
                r#"{"action":"subscribe","cameraId":"c","quality":0}"#,
                "quality",
            ),
            (
                r#"{"action":"subscribe","cameraId":"c","crop":[0.5,0,0.6,1]}"#,
                "crop: the region must lie inside the picture",
            ),
            (
                r#"{"action":"subscribe","cameraId":"c","crop":"0,0,0"}"#,
                "crop must be four numbers",
            ),
            (
                r#"{"action":"subscribe","cameraId":"c","crop":true}"#,
                "crop must be",
            ),
            (r#"{"action":"ptz","cameraId":"c"}"#, "command"),
        ] {
            let err = parse(msg).expect_err(msg).to_string();
            assert!(err.contains(want), "{msg}: {err}");
        }
    }

    /// Random bytes and mutated valid messages never panic and always give an answer.
    #[test]
    fn fuzz_never_panics() {
        let seeds = [
            r#"{"action":"subscribe","cameraId":"c1","fps":30,"binary":true,"width":640}"#,
            r#"{"action":"subscribe","cameraId":"c1","crop":[0.25,0.25,0.5,0.5],"width":640}"#,
            r#"{"action":"ptz","cameraId":"c1","command":{"action":"move","pan":0.5}}"#,
            r#"{"action":"ping"}"#,
        ];
        let mut m = crate::fuzz::Mutator::new(0x9E37_79B9_7F4A_7C15, b"{}[]\",:0-e.9\\", 5);
        for i in 0..20_000 {
            let bytes = m.mutate(seeds[i % seeds.len()].as_bytes());
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }
    }
}
