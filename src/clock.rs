//! Time: the one place that reads the wall clock and formats it.
//!
//! The store keeps instants as integer milliseconds since the Unix epoch (cheap to
//! index and compare); the API shows them as RFC 3339 UTC with milliseconds
//! (`2025-10-20T14:37:31.176Z`, SPEC §4). Formatting is a few lines of civil-date
//! arithmetic, so no date crate is needed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds for an epoch-milliseconds instant.
pub fn rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(&mut out, ms);
    out
}

/// The 24 bytes of `YYYY-MM-DDTHH:MM:SS.mmmZ` for years 0–9999, on the stack.
/// Every timestamp in every response goes through here (five per task), so the
/// digits are written by hand rather than by `fmt` (about ten times cheaper).
pub(crate) struct Stamp([u8; 24]);

impl Stamp {
    pub fn new(ms: i64) -> Option<Stamp> {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u32;
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        if !(0..=9999).contains(&y) {
            return None;
        }
        let y = y as u32;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, sod / 3600);
        put(14, 2, sod % 3600 / 60);
        put(17, 2, sod % 60);
        put(20, 3, millis);
        Some(Stamp(b))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Calls `f` with the RFC 3339 form of `ms`: from a stack buffer for years 0–9999,
/// allocated only outside them. What serializers and handlers use.
pub(crate) fn with_rfc3339<R>(ms: i64, f: impl FnOnce(&str) -> R) -> R {
    match Stamp::new(ms) {
        Some(s) => f(s.as_str()),
        None => f(&rfc3339(ms)),
    }
}

/// Appends the RFC 3339 form of `ms` to `out` (no allocation of its own).
pub(crate) fn write_rfc3339(out: &mut String, ms: i64) {
    if let Some(s) = Stamp::new(ms) {
        return out.push_str(s.as_str());
    }
    // Years before 0 or after 9999: not from this service's clock, but shown as-is.
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let (hh, mm, ss) = (sod / 3600, sod % 3600 / 60, sod % 60);
    use std::fmt::Write;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z"
    );
}

/// Current time as RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(now_ms())
}

/// `YYYYMMDD-HHMMSS` (UTC) for an epoch-milliseconds instant: the stamp in backup and
/// pre-restore file names, sortable as text.
pub(crate) fn file_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Process start, for uptime. Set once by `init`.
static START: std::sync::OnceLock<(Instant, i64)> = std::sync::OnceLock::new();

/// Records the process start; call first thing in `main`.
pub fn init() {
    START.get_or_init(|| (Instant::now(), now_ms()));
}

/// Whole seconds since start.
pub(crate) fn uptime_secs() -> u64 {
    START
        .get_or_init(|| (Instant::now(), now_ms()))
        .0
        .elapsed()
        .as_secs()
}

/// Epoch milliseconds at process start.
pub(crate) fn start_ms() -> i64 {
    START.get_or_init(|| (Instant::now(), now_ms())).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_760_971_051_176), "2025-10-20T14:37:31.176Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // Outside 0–9999 the slow path keeps the same shape.
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-62_167_219_200_001), "-001-12-31T23:59:59.999Z");
    }

    #[test]
    fn hand_written_digits_match_fmt() {
        let mut ms = -62_167_219_200_000i64; // 0000-01-01
        while ms < 253_402_300_800_000 {
            let fast = Stamp::new(ms).expect("in range");
            let secs = ms.div_euclid(1000);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            let slow = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                sod / 3600,
                sod % 3600 / 60,
                sod % 60,
                ms.rem_euclid(1000)
            );
            assert_eq!(fast.as_str(), slow);
            ms += 86_399_937_911; // about 1000 days and an odd remainder
        }
    }

    #[test]
    fn file_stamps_are_utc_and_sortable() {
        assert_eq!(file_stamp(0), "19700101-000000");
        assert_eq!(file_stamp(1_760_971_051_176), "20251020-143731");
        assert_eq!(file_stamp(951_868_799_999), "20000229-235959");
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch milliseconds of an RFC 3339 timestamp (`2026-12-01T10:00:00Z`, fractions
/// and numeric offsets allowed), or `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if d < 1 || d > days_in_month || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        ms = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *c == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59);
    Some((secs - offset_min * 60) * 1000 + ms)
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_rejects_garbage() {
        for ms in [0, 1_764_547_200_123, 951_782_400_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-12-01T10:00:00+01:00"),
            parse_rfc3339("2026-12-01T09:00:00Z")
        );
        for bad in [
            "",
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-01T00:00:00",
            "2026-12-01T00:00:00Zx",
            "2026-12-01T00:00:00.Z",
            "٢٠٢٦-12-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
