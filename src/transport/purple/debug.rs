//! libpurple's debug output into `tracing` (target `purple`), credential lines redacted.

use std::ffi::c_char;

use purple_sys as p;

use super::ffi::{guard, string};

/// The ui-ops struct for `purple_debug_set_ui_ops` (leaked: libpurple keeps it).
pub(super) fn ui_ops() -> &'static mut p::PurpleDebugUiOps {
    Box::leak(Box::new(p::PurpleDebugUiOps {
        print: Some(debug_print),
        is_enabled: Some(debug_is_enabled),
        ..Default::default()
    }))
}

/// Lines that may carry a credential (IRC `PASS`, NickServ, SASL) are cut after the verb.
fn redact(line: &str) -> String {
    const SECRETS: [&str; 5] = ["PASS ", "IDENTIFY", "AUTHENTICATE ", "password", "<auth "];
    for s in SECRETS {
        if let Some(i) = line.find(s) {
            return format!("{}{s}[redacted]", &line[..i]);
        }
    }
    line.to_owned()
}

unsafe extern "C" fn debug_print(
    level: p::PurpleDebugLevel,
    category: *const c_char,
    arg: *const c_char,
) {
    guard("debug_print", (), || {
        let cat = string(category);
        let text = redact(string(arg).trim_end());
        match level {
            p::PURPLE_DEBUG_FATAL | p::PURPLE_DEBUG_ERROR => {
                tracing::error!(target: "purple", "{cat}: {text}")
            }
            p::PURPLE_DEBUG_WARNING => tracing::warn!(target: "purple", "{cat}: {text}"),
            p::PURPLE_DEBUG_INFO => tracing::debug!(target: "purple", "{cat}: {text}"),
            _ => tracing::trace!(target: "purple", "{cat}: {text}"),
        }
    })
}

unsafe extern "C" fn debug_is_enabled(
    level: p::PurpleDebugLevel,
    _category: *const c_char,
) -> p::gboolean {
    guard("debug_is_enabled", 0, || {
        let on = match level {
            p::PURPLE_DEBUG_FATAL | p::PURPLE_DEBUG_ERROR => {
                tracing::enabled!(target: "purple", tracing::Level::ERROR)
            }
            p::PURPLE_DEBUG_WARNING => tracing::enabled!(target: "purple", tracing::Level::WARN),
            p::PURPLE_DEBUG_INFO => tracing::enabled!(target: "purple", tracing::Level::DEBUG),
            _ => tracing::enabled!(target: "purple", tracing::Level::TRACE),
        };
        on as p::gboolean
    })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("Sent: PASS hunter2"), "Sent: PASS [redacted]");
        assert_eq!(
            redact("PRIVMSG NickServ :IDENTIFY me pw"),
            "PRIVMSG NickServ :IDENTIFY[redacted]"
        );
        assert_eq!(redact("JOIN #x"), "JOIN #x");
    }
}
