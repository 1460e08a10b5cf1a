//! Time as the server shows it: the mailbox's Unix microseconds and XEP-0082 date-times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix microseconds (the mailbox's `ts`).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// XEP-0082 DateTime in UTC with milliseconds, e.g. `2026-03-01T12:00:00.250Z`.
pub fn datetime(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let millis = micros.rem_euclid(1_000_000) / 1000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    now_micros().div_euclid(1_000_000)
}

/// The local time zone's offset from UTC at `unix` seconds, in seconds (0 if unknown).
pub fn utc_offset(unix: i64) -> i64 {
    // A no-op where time_t has 64 bits; elsewhere fine until 2038.
    let t = unix as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r is the thread-safe variant; it only writes the `tm` we own, and on
    // success (non-null return) has initialised it.
    let tm = unsafe {
        if libc::localtime_r(&t, tm.as_mut_ptr()).is_null() {
            return 0;
        }
        tm.assume_init()
    };
    tm.tm_gmtoff as i64
}

/// XEP-0082 time zone offset: `+hh:mm` / `-hh:mm`.
pub fn format_offset(secs: i64) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.abs() / 60;
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// XEP-0082 DateTime in UTC: `CCYY-MM-DDThh:mm:ssZ`.
pub fn datetime_secs(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(datetime(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(datetime(1_700_000_000_123_456), "2023-11-14T22:13:20.123Z");
        assert_eq!(datetime(951_825_600_000_000), "2000-02-29T12:00:00.000Z");
        assert_eq!(datetime(4_107_542_400_000_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(datetime(-1_000), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_xep_0082() {
        assert_eq!(datetime_secs(0), "1970-01-01T00:00:00Z");
        // The example of XEP-0202: 2006-12-19T17:58:35Z.
        assert_eq!(datetime_secs(1_166_551_115), "2006-12-19T17:58:35Z");
        assert_eq!(datetime_secs(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(datetime_secs(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_offset(-6 * 3600), "-06:00");
        assert_eq!(format_offset(5 * 3600 + 1800), "+05:30");
        assert_eq!(format_offset(0), "+00:00");
    }
}
