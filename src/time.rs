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

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01:
/// Howard Hinnant's `civil_from_days`, a few integer operations where chrono's
/// conversions took most of a timestamp's rendering (four per exported document).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// A rendered timestamp, held on the stack: documents write four per annotation, so
/// the text is built by hand (no `core::fmt`, no allocation). Years outside 0–9999
/// fall back to `format!`, which widens the year as Python does not need to.
pub struct Stamp {
    buf: [u8; 40],
    len: usize,
}

impl Stamp {
    /// `date`, `sep`, `time` with microseconds, then `suffix` (at most 6 bytes).
    fn new(us: Micros, sep: u8, suffix: &str) -> Stamp {
        let mut stamp = Stamp { buf: [0; 40], len: 0 };
        let (secs, micros) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) as u32);
        let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (year, month, day) = civil_date(days);
        if !(0..=9999).contains(&year) || suffix.len() > 6 {
            use chrono::{Datelike, Timelike};
            let dt = datetime(us);
            let text = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}.{:06}{suffix}",
                dt.year(),
                dt.month(),
                dt.day(),
                sep as char,
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.timestamp_subsec_micros().min(999_999)
            );
            stamp.push(text.as_bytes());
            return stamp;
        }
        stamp.digits(year as u32, 4);
        stamp.push(b"-");
        stamp.digits(month, 2);
        stamp.push(b"-");
        stamp.digits(day, 2);
        stamp.push(&[sep]);
        stamp.digits(second_of_day / 3600, 2);
        stamp.push(b":");
        stamp.digits(second_of_day / 60 % 60, 2);
        stamp.push(b":");
        stamp.digits(second_of_day % 60, 2);
        stamp.push(b".");
        stamp.digits(micros, 6);
        stamp.push(suffix.as_bytes());
        stamp
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// `value` as exactly `width` decimal digits, zero-padded (`value` < 10^width).
    fn digits(&mut self, mut value: u32, width: usize) {
        for i in (0..width).rev() {
            self.buf[self.len + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += width;
    }

    /// The text's bytes (plain ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("a timestamp is ASCII")
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// [`iso`] without allocating: serialises as the same string.
pub fn iso_stamp(us: Micros) -> Stamp {
    Stamp::new(us, b'T', "Z")
}

fn render(us: Micros, sep: u8, suffix: &str) -> String {
    Stamp::new(us, sep, suffix).as_str().to_owned()
}

/// `2026-11-28T18:58:17.423841Z`, the format of model datetime fields.
pub fn iso(us: Micros) -> String {
    render(us, b'T', "Z")
}

/// Like [`iso`], for nullable columns.
pub fn iso_opt(us: Option<Micros>) -> serde_json::Value {
    us.map_or(serde_json::Value::Null, |us| iso(us).into())
}

/// `2026-11-28 18:58:17.408272+00:00`, the format of timestamps inside storage `meta`.
pub fn meta(us: Micros) -> String {
    render(us, b' ', "+00:00")
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
    // Written into every exported document: one allocation, no `core::fmt`.
    let mut out = String::with_capacity(32);
    let mut plural = |n: i64, one: &str, many: &str| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(itoa::Buffer::new().format(n));
        out.push('\u{a0}');
        out.push_str(if n == 1 { one } else { many });
    };
    let mut secs = ((now - from) / 1_000_000).max(0);
    let Some(first) = UNITS.iter().position(|(size, ..)| secs >= *size) else {
        plural(0, "minute", "minutes");
        return out;
    };
    for (size, one, many) in &UNITS[first..(first + 2).min(UNITS.len())] {
        let n = secs / size;
        secs -= n * size;
        if n > 0 {
            plural(n, one, many);
        }
    }
    out
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
        assert_eq!(serde_json::to_string(&iso_stamp(us)).unwrap(), "\"2026-11-28T18:58:17.423841Z\"");
    }

    #[test]
    fn years_past_9999_and_before_the_epoch_render_as_before() {
        // The hand-built text and the `format!` fallback agree at every edge.
        let y10k = 253_402_300_800_000_000; // 10000-01-01T00:00:00Z
        assert_eq!(iso(y10k), "10000-01-01T00:00:00.000000Z");
        assert_eq!(iso(y10k - 1), "9999-12-31T23:59:59.999999Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(meta(-62_135_596_800_000_000), "0001-01-01 00:00:00.000000+00:00");
    }

    #[test]
    fn civil_dates_match_chrono_from_year_0_to_9999() {
        use chrono::Datelike;
        let first = chrono::NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut date = first;
        while date.year() <= 9999 {
            let days = (date - epoch).num_days();
            assert_eq!(civil_date(days), (i64::from(date.year()), date.month(), date.day()), "{date}");
            date = date.succ_opt().unwrap();
        }
        assert_eq!(civil_date(-1), (1969, 12, 31));
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
