//! XEP-0202 Entity Time: the server's UTC time and its local offset (`tzo`), in the XEP-0082
//! formats, answered when the request is for the server (no `to` or a hosted domain). Accounts'
//! bare JIDs get `service-unavailable`: their clients answer at full JIDs.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::Module;
use crate::core::stanza::Condition;
use crate::xml::{Element, ns};

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
    s.iqs()
        .rule(ns::TIME, "time")
        .get(|iq| match addressee(&iq) {
            Addressee::Unaddressed | Addressee::Server => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let now = i64::try_from(now).unwrap_or(0);
                let t = Element::new("time", ns::TIME)
                    .child(Element::new("tzo", ns::TIME).text(format_offset(utc_offset(now))))
                    .child(Element::new("utc", ns::TIME).text(format_utc(now)));
                iq.result(Some(t));
            }
            _ => iq.fail(Condition::ServiceUnavailable, ""),
        });
}

/// The local time zone's offset from UTC at `unix` seconds, in seconds (0 if unknown).
fn utc_offset(unix: i64) -> i64 {
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
fn format_offset(secs: i64) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.abs() / 60;
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// XEP-0082 DateTime in UTC: `CCYY-MM-DDThh:mm:ssZ`.
fn format_utc(unix: i64) -> String {
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

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_xep_0082() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        // The example of XEP-0202: 2006-12-19T17:58:35Z.
        assert_eq!(format_utc(1_166_551_115), "2006-12-19T17:58:35Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_offset(-6 * 3600), "-06:00");
        assert_eq!(format_offset(5 * 3600 + 1800), "+05:30");
        assert_eq!(format_offset(0), "+00:00");
    }
}
