//! UTC calendar arithmetic for WS-Security `Created` stamps and the device clock
//! (`GetSystemDateAndTime`): days from civil dates and back (Howard Hinnant's algorithms,
//! proleptic Gregorian), without a date crate for two conversions.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds of a UTC date and time; `None` when a field is out of range.
pub fn unix_from_utc(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s))
}

/// `2026-12-01T08:05:19.123Z` (xs:dateTime in UTC, as `wsu:Created` wants it).
pub fn format_utc_millis(unix_millis: i64) -> String {
    let secs = unix_millis.div_euclid(1000);
    let ms = unix_millis.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `2026-12-01T08:05:19Z`: whole seconds, the form of the WSS and ONVIF examples. Some
/// firmware refuses a fraction in `wsu:Created` (python-onvif-zeep and go2rtc send none
/// either), and the devices' tolerance is seconds anyway.
pub fn format_utc_secs(unix_millis: i64) -> String {
    let full = format_utc_millis(unix_millis);
    format!("{}Z", &full[..full.len() - 5])
}

/// Parses an xs:dateTime in UTC (`2026-12-01T08:05:19Z`, optional fraction, `Z` or
/// `+00:00`) to Unix milliseconds. Other offsets are applied.
pub fn parse_utc_millis(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't'])?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let o = i64::from(oh.parse::<u32>().ok()?) * 3600 + i64::from(om.parse::<u32>().ok()?) * 60;
        (c, sign * o)
    } else {
        (time, 0)
    };
    let mut tp = clock.splitn(3, ':');
    let h: u32 = tp.next()?.parse().ok()?;
    let mi: u32 = tp.next()?.parse().ok()?;
    let sec = tp.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: u32 = whole.parse().ok()?;
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        f.parse().ok()?
    };
    Some((unix_from_utc(y, mo, d, h, mi, s)? - offset_secs) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        for z in [-800_000, -1, 0, 59, 60, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        // 2009-02-13T23:31:30Z is Unix 1234567890.
        assert_eq!(
            format_utc_millis(1_234_567_890_042),
            "2009-02-13T23:31:30.042Z"
        );
        assert_eq!(
            parse_utc_millis("2009-02-13T23:31:30.042Z"),
            Some(1_234_567_890_042)
        );
        assert_eq!(
            parse_utc_millis("2009-02-14T00:31:30+01:00"),
            Some(1_234_567_890_000)
        );
        assert_eq!(format_utc_secs(1_234_567_890_999), "2009-02-13T23:31:30Z");
        assert_eq!(parse_utc_millis("2009-02-13 23:31:30"), None);
        assert_eq!(unix_from_utc(2024, 13, 1, 0, 0, 0), None);
    }
}
