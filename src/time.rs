//! Timestamps. Stored as integer microseconds since the Unix epoch (UTC) in both
//! databases; rendered in the two formats Label Studio uses (contract §0.2):
//! ISO 8601 with `Z` for model fields, Python's `str(datetime)` inside storage `meta`.

use chrono::{DateTime, Utc};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

fn datetime(us: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// `date`, `sep`, `time` with microseconds, then `suffix`. Written by hand: chrono's
/// `format` parses its pattern on every call, and exports format millions of these.
fn render(us: Micros, sep: char, suffix: &str) -> String {
    use chrono::{Datelike, Timelike};
    let dt = datetime(us);
    format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}.{:06}{suffix}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.timestamp_subsec_micros().min(999_999)
    )
}

/// `2026-11-28T18:58:17.423841Z`, the format of model datetime fields.
pub fn iso(us: Micros) -> String {
    render(us, 'T', "Z")
}

/// Like [`iso`], for nullable columns.
pub fn iso_opt(us: Option<Micros>) -> serde_json::Value {
    us.map_or(serde_json::Value::Null, |us| iso(us).into())
}

/// `2026-11-28 18:58:17.408272+00:00`, the format of timestamps inside storage `meta`.
pub fn meta(us: Micros) -> String {
    render(us, ' ', "+00:00")
}

/// Parses either format above (with or without fractional seconds) back to micros.
pub fn parse_any(s: &str) -> Option<Micros> {
    let normalized = s.trim().replacen(' ', "T", 1).replace("+00:00", "Z");
    DateTime::parse_from_rfc3339(&normalized).ok().map(|d| d.with_timezone(&Utc).timestamp_micros())
}

/// Django's `timesince` for `created_ago`: the two largest non-zero units, numbers and
/// units joined by a no-break space (`"2\u{a0}hours, 3\u{a0}minutes"`).
pub fn timesince(from: Micros, now: Micros) -> String {
    const UNITS: [(i64, &str, &str); 6] = [
        (60 * 60 * 24 * 365, "year", "years"),
        (60 * 60 * 24 * 30, "month", "months"),
        (60 * 60 * 24 * 7, "week", "weeks"),
        (60 * 60 * 24, "day", "days"),
        (60 * 60, "hour", "hours"),
        (60, "minute", "minutes"),
    ];
    let mut secs = ((now - from) / 1_000_000).max(0);
    let plural = |n: i64, one: &str, many: &str| format!("{n}\u{a0}{}", if n == 1 { one } else { many });
    let Some(first) = UNITS.iter().position(|(size, ..)| secs >= *size) else {
        return plural(0, "minute", "minutes");
    };
    let mut parts = Vec::new();
    for (size, one, many) in &UNITS[first..(first + 2).min(UNITS.len())] {
        let n = secs / size;
        secs -= n * size;
        if n > 0 {
            parts.push(plural(n, one, many));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_render_six_fraction_digits_and_parse_back() {
        let us = 1_795_892_297_423_841;
        assert_eq!(iso(us), "2026-11-28T18:58:17.423841Z");
        assert_eq!(meta(us), "2026-11-28 18:58:17.423841+00:00");
        assert_eq!(parse_any(&iso(us)), Some(us));
        assert_eq!(parse_any(&meta(us)), Some(us));
        assert_eq!(parse_any("2026-11-28 18:58:17+00:00"), Some(us - 423_841));
        assert_eq!(iso(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(iso(us - 423_841 + 7), "2026-11-28T18:58:17.000007Z");
    }

    #[test]
    fn timesince_matches_django() {
        let m = 60_000_000;
        assert_eq!(timesince(0, 10_000_000), "0\u{a0}minutes");
        assert_eq!(timesince(0, m), "1\u{a0}minute");
        assert_eq!(timesince(0, 123 * m), "2\u{a0}hours, 3\u{a0}minutes");
        assert_eq!(timesince(0, 120 * m), "2\u{a0}hours");
    }
}
