//! Time: the one place that reads the wall clock and formats it.
//!
//! The store keeps instants as integer milliseconds since the Unix epoch (cheap to
//! index and compare); the API shows them as RFC 3339 UTC with milliseconds
//! (`2025-10-20T14:37:31.176Z`, SPEC §4). Formatting is a few lines of civil-date
//! arithmetic, so no date crate is needed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds for an epoch-milliseconds instant.
pub(crate) fn rfc3339(ms: i64) -> String {
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
