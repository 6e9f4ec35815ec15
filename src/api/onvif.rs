//! ONVIF discovery routes: `GET /api/discover` (a WS-Discovery probe, bounded wait) and
//! `POST /api/discover/inspect` (one device's identity, media profiles, stream URIs and
//! PTZ, with its credentials). Each blocks one HTTP worker for at most its bounded wait,
//! and few run at once, so discovery never starves the other routes. No reply carries a
//! password: stream URIs have their userinfo removed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::error::ApiError;
use super::params;
use super::request::Request;
use super::Ctx;
use crate::onvif::{device, discovery, Client};

/// Probes running at once; more get 503 (each holds a worker for up to 10 s).
const MAX_PROBES: usize = 1;
/// Inspections running at once (each makes up to ~4 + profiles exchanges of ≤ 3 s).
const MAX_INSPECTS: usize = 2;
/// Stream URIs asked per inspection (a device with more profiles lists the rest without).
const MAX_URIS: usize = 8;
/// No more stream URIs are asked once an inspection has taken this long (a slow device
/// must not hold a worker for a minute).
const INSPECT_BUDGET: Duration = Duration::from_secs(10);

static PROBES: AtomicUsize = AtomicUsize::new(0);
static INSPECTS: AtomicUsize = AtomicUsize::new(0);

/// A slot of a small counter, released on drop.
struct Slot(&'static AtomicUsize);

impl Slot {
    fn take(counter: &'static AtomicUsize, max: usize, what: &str) -> Result<Slot, ApiError> {
        if counter.fetch_add(1, Ordering::SeqCst) >= max {
            counter.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Busy(format!(
                "{what} already running; retry when it is done"
            )));
        }
        Ok(Slot(counter))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /api/discover?timeout=2`: `{"devices":[{address, endpoint, xaddrs, name,
/// hardware, scopes}]}`.
pub fn discover(req: &Request, ctx: &Ctx) -> Result<Value, ApiError> {
    let wait = params::discover_timeout(req)?;
    let _slot = Slot::take(&PROBES, MAX_PROBES, "a discovery is")?;
    let found = discovery::probe(
        ctx.config.bind,
        ctx.config.discovery_multicast,
        &ctx.config.discovery_targets,
        wait,
    )
    .map_err(|e| ApiError::Internal(format!("cannot send the WS-Discovery probe: {e}")))?;
    log::info!("discovery: {} ONVIF device(s) answered", found.len());
    Ok(json!({ "devices": found, "timeout": wait.as_secs_f64() }))
}

/// `POST /api/discover/inspect`: the device's information, profiles with codec,
/// resolution and RTSP URI, and whether it has PTZ.
pub fn inspect(req: &Request, _ctx: &Ctx) -> Result<Value, ApiError> {
    let body = params::inspect(&req.body)?;
    let _slot = Slot::take(&INSPECTS, MAX_INSPECTS, "two inspections are")?;
    let started = Instant::now();
    let mut client = Client::new(&body.host, body.port, &body.username, body.password);
    let info = device::device_information(&mut client)?;
    let found = device::discover(&mut client)?;
    let mut profiles = Vec::new();
    for (i, p) in found.profiles.iter().enumerate() {
        let mut v = serde_json::to_value(p).expect("a profile serialises");
        let in_budget = i < MAX_URIS && started.elapsed() < INSPECT_BUDGET;
        let uri = match (&found.services.media, in_budget) {
            (Some(media), true) => match device::stream_uri(&mut client, media, &p.token) {
                Ok(u) => json!(u),
                Err(e) => {
                    v["streamUriError"] = json!(e.to_string());
                    Value::Null
                }
            },
            _ => Value::Null,
        };
        v["streamUri"] = uri;
        profiles.push(v);
    }
    let has_ptz = found.services.ptz.is_some() && found.profiles.iter().any(|p| p.ptz);
    Ok(json!({
        "ip": body.host,
        "port": body.port,
        "deviceServiceUrl": client.device_url(),
        "manufacturer": info.manufacturer,
        "model": info.model,
        "firmwareVersion": info.firmware_version,
        "serialNumber": info.serial_number,
        "hardwareId": info.hardware_id,
        "ptz": has_ptz,
        "profiles": profiles,
        "clockOffsetMs": client.clock_offset_ms(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caps hold: past `max` a caller is refused (503) at once, and a slot is
    /// given back when its holder is dropped, whatever happened inside.
    #[test]
    fn slots_are_bounded_and_released() {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let a = Slot::take(&COUNTER, 2, "x is").expect("first");
        let b = Slot::take(&COUNTER, 2, "x is").expect("second");
        let e = Slot::take(&COUNTER, 2, "two x are")
            .err()
            .expect("third refused");
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("two x are already running"), "{e}");
        drop(a);
        let c = Slot::take(&COUNTER, 2, "x is").expect("a slot again");
        drop((b, c));
        assert_eq!(COUNTER.load(Ordering::SeqCst), 0);
    }
}
