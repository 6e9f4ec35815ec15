//! `ApiError`: every way a request can fail, and the one function that maps it to an HTTP
//! status (WebSocket replies use the same text in `{"type":"error","message":..}`).

use std::fmt;
use std::time::Duration;

use crate::camera::PictureError;
use crate::fleet::FleetError;
use crate::onvif::OnvifError;
use crate::ptz::PtzError;

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The request cannot be parsed (bad JSON, bad percent-encoding): fix it (400).
    BadRequest(String),
    /// The request parses but a value is missing or out of range: fix it (422).
    Invalid(String),
    /// A fleet operation failed (unknown camera, limit, camera unreachable...).
    Fleet(FleetError),
    /// A PTZ command failed.
    Ptz(PtzError),
    /// An ONVIF device (discovery, inspect) failed: unreachable or refusing (502; the
    /// text names a rejected password), silent (504), lacking a service (501).
    Onvif(OnvifError),
    /// No picture can be served for camera `id` now.
    Picture(String, PictureError),
    /// JPEG encoding is at its limits: retry shortly (503).
    Busy(String),
    /// Something failed inside (a pipeline would not start): retry; see the log (500).
    Internal(String),
    /// A time limit the request set ran out (a snapshot that did not settle): the text
    /// says what was still moving; retry with a longer limit or a still scene (504).
    Timeout(String),
}

impl ApiError {
    /// The one mapping of failures to HTTP statuses.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Invalid(_) => 422,
            ApiError::Fleet(e) => match e {
                FleetError::NotFound(_) | FleetError::NoPtz(_) => 404,
                FleetError::Full(_) => 503,
                FleetError::Timeout(_) => 504,
                FleetError::Unreachable(_) => 502,
                FleetError::Internal(_) => 500,
            },
            ApiError::Ptz(e) => match e {
                PtzError::Invalid(_) => 422,
                PtzError::Unsupported(_) => 501,
                PtzError::Timeout => 504,
                PtzError::Camera(_) => 502,
                PtzError::Busy | PtzError::Closed => 503,
                PtzError::Claimed(_) | PtzError::Interrupted(_) => 409,
            },
            ApiError::Onvif(e) => match e {
                OnvifError::Timeout => 504,
                OnvifError::Unsupported(_) => 501,
                _ => 502,
            },
            ApiError::Picture(_, PictureError::NotYet { .. }) => 404,
            ApiError::Picture(_, PictureError::Out { .. }) => 503,
            ApiError::Busy(_) => 503,
            ApiError::Internal(_) => 500,
            ApiError::Timeout(_) => 504,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(s)
            | ApiError::Invalid(s)
            | ApiError::Busy(s)
            | ApiError::Internal(s)
            | ApiError::Timeout(s) => f.write_str(s),
            ApiError::Fleet(e) => e.fmt(f),
            ApiError::Ptz(e) => e.fmt(f),
            ApiError::Onvif(e) => e.fmt(f),
            ApiError::Picture(id, PictureError::NotYet { why }) => {
                write!(f, "No frame available yet for camera {id}")?;
                if let Some(why) = why {
                    write!(f, ": {why}")?;
                }
                Ok(())
            }
            ApiError::Picture(id, PictureError::Out { since, why }) => {
                write!(f, "Camera {id} has no live picture")?;
                match since {
                    Some(d) => write!(f, " (no data for {})", secs(*d))?,
                    None => f.write_str(" (no data yet)")?,
                }
                if let Some(why) = why {
                    write!(f, ": {why}")?;
                }
                Ok(())
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        ApiError::Fleet(e)
    }
}

impl From<OnvifError> for ApiError {
    fn from(e: OnvifError) -> Self {
        ApiError::Onvif(e)
    }
}

impl From<PtzError> for ApiError {
    fn from(e: PtzError) -> Self {
        ApiError::Ptz(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptz_statuses() {
        let st = |e: PtzError| ApiError::Ptz(e).status();
        assert_eq!(st(PtzError::Invalid("x".into())), 422);
        assert_eq!(st(PtzError::Unsupported("x".into())), 501);
        assert_eq!(st(PtzError::Timeout), 504);
        assert_eq!(st(PtzError::Camera("x".into())), 502);
        assert_eq!(st(PtzError::Busy), 503);
        assert_eq!(st(PtzError::Closed), 503);
        assert_eq!(st(PtzError::Claimed("a tour".into())), 409);
        assert_eq!(st(PtzError::Interrupted("stopped".into())), 409);
    }

    #[test]
    fn picture_statuses() {
        let nf = ApiError::Picture("c".into(), PictureError::NotYet { why: None });
        assert_eq!(nf.status(), 404);
        let out = ApiError::Picture(
            "c".into(),
            PictureError::Out {
                since: Some(Duration::from_millis(4200)),
                why: Some("no data from the camera for 2.0 s".into()),
            },
        );
        assert_eq!(out.status(), 503);
        assert_eq!(
            out.to_string(),
            "Camera c has no live picture (no data for 4.2 s): no data from the camera for 2.0 s"
        );
    }
}
