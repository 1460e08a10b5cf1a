//! Parsing of the SASL PLAIN mechanism message (RFC 4616).
//!
//! Implements the server-side decoding of
//! `message = [authzid] UTF8NUL authcid UTF8NUL passwd` (RFC 4616 §2):
//! the message must be UTF-8, contain exactly two NUL separators, and have a
//! non-empty authentication identity and password. Messages longer than
//! [`MAX_MESSAGE_LEN`] bytes are rejected (RFC 4616 only requires each field
//! up to 255 octets to be accepted).
//!
//! Nothing is normalised here: the caller prepares the authcid for the
//! account lookup and checks the password with
//! [`super::scram::verify_password`], which applies SASLprep (RFC 4013).
//! Whether an authzid is acceptable is also for the caller to decide
//! (RFC 6120 `invalid-authzid`). PLAIN must only be offered over TLS.

use std::fmt;

/// Largest PLAIN message accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The three fields of a PLAIN message, borrowed from it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PlainCredentials<'a> {
    /// Authorization identity; `None` if empty (act as `authcid`).
    pub authzid: Option<&'a str>,
    /// Authentication identity; never empty.
    pub authcid: &'a str,
    /// Password; never empty.
    pub password: &'a str,
}

impl fmt::Debug for PlainCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a PLAIN message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("PLAIN message longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    #[error("PLAIN message is not valid UTF-8")]
    InvalidUtf8,
    #[error("PLAIN message must have exactly three NUL-separated fields")]
    Malformed,
    #[error("PLAIN authentication identity is empty")]
    EmptyAuthcid,
    #[error("PLAIN password is empty")]
    EmptyPassword,
}

impl PlainError {
    /// The RFC 6120 §6.5 SASL failure condition to send to the client.
    pub fn condition(&self) -> &'static str {
        "malformed-request"
    }
}

/// Parse `[authzid] NUL authcid NUL passwd`.
pub fn parse(msg: &[u8]) -> Result<PlainCredentials<'_>, PlainError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(PlainError::TooLong);
    }
    let text = std::str::from_utf8(msg).map_err(|_| PlainError::InvalidUtf8)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PlainError::Malformed);
    };
    if authcid.is_empty() {
        return Err(PlainError::EmptyAuthcid);
    }
    if password.is_empty() {
        return Err(PlainError::EmptyPassword);
    }
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then_some(authzid),
        authcid,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_messages() {
        assert_eq!(
            parse(b"\0tim\0tanstaaftanstaaf"),
            Ok(PlainCredentials {
                authzid: None,
                authcid: "tim",
                password: "tanstaaftanstaaf",
            })
        );
        assert_eq!(
            parse(b"Ursel\0Kurt\0xipj3plmq"),
            Ok(PlainCredentials {
                authzid: Some("Ursel"),
                authcid: "Kurt",
                password: "xipj3plmq",
            })
        );
        let creds = parse("\0j\u{f6}rg\0p\u{e4}ss w\u{f6}rd".as_bytes()).unwrap();
        assert_eq!(creds.authcid, "j\u{f6}rg");
        assert_eq!(creds.password, "p\u{e4}ss w\u{f6}rd");
    }

    #[test]
    fn rejected_messages() {
        let cases: &[(&[u8], PlainError)] = &[
            (b"", PlainError::Malformed),
            (b"tim", PlainError::Malformed),
            (b"\0tim", PlainError::Malformed),
            (b"\0tim\0pw\0", PlainError::Malformed),
            (b"\0tim\0p\0w", PlainError::Malformed),
            (b"a\0b\0c\0d", PlainError::Malformed),
            (b"\0\0pw", PlainError::EmptyAuthcid),
            (b"zid\0\0pw", PlainError::EmptyAuthcid),
            (b"\0tim\0", PlainError::EmptyPassword),
            (b"\0\0", PlainError::EmptyAuthcid),
            (b"\0t\xffim\0pw", PlainError::InvalidUtf8),
            (b"\0tim\0\xc3", PlainError::InvalidUtf8),
        ];
        for (msg, expected) in cases {
            assert_eq!(parse(msg), Err(*expected), "{msg:?}");
            assert_eq!(expected.condition(), "malformed-request");
        }
    }

    #[test]
    fn length_limit() {
        let mut msg = b"\0tim\0".to_vec();
        msg.resize(MAX_MESSAGE_LEN, b'x');
        assert!(parse(&msg).is_ok());
        msg.push(b'x');
        assert_eq!(parse(&msg), Err(PlainError::TooLong));
    }

    #[test]
    fn debug_redacts_password() {
        let creds = parse(b"\0tim\0hunter2").unwrap();
        let dbg = format!("{creds:?}");
        assert!(dbg.contains("tim"));
        assert!(!dbg.contains("hunter2"));
    }

    #[test]
    fn no_panic_on_any_prefix_or_mutation() {
        let msg = "zid\0j\u{f6}rg\0password".as_bytes();
        for len in 0..=msg.len() {
            let _ = parse(&msg[..len]);
        }
        for i in 0..msg.len() {
            for r in [0u8, 0xff, 0xc3, b'a'] {
                let mut m = msg.to_vec();
                m[i] = r;
                let _ = parse(&m);
            }
        }
    }
}

/// Property tests (`PROPTEST_CASES` sets the number of cases): any bytes give a result, and
/// what parses is exactly the message's three fields.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_parse_back(
            msg in proptest::collection::vec(any::<u8>(), 0..(MAX_MESSAGE_LEN + 64)),
        ) {
            if let Ok(c) = parse(&msg) {
                let again = format!("{}\0{}\0{}", c.authzid.unwrap_or(""), c.authcid, c.password);
                prop_assert_eq!(again.as_bytes(), &msg[..]);
            }
        }

        #[test]
        fn nul_heavy_messages(
            parts in proptest::collection::vec(
                prop_oneof![Just("\0".to_owned()), "[^\u{0}]{0,8}"], 0..12),
        ) {
            let msg = parts.concat();
            let nuls = msg.matches('\0').count();
            let parsed = parse(msg.as_bytes());
            if nuls != 2 {
                prop_assert_eq!(parsed, Err(PlainError::Malformed));
            }
        }

        #[test]
        fn well_formed_messages_parse(
            authzid in "[^\u{0}]{0,20}",
            authcid in "[^\u{0}]{1,20}",
            password in "[^\u{0}]{1,20}",
        ) {
            let msg = format!("{authzid}\0{authcid}\0{password}");
            let c = parse(msg.as_bytes()).unwrap();
            prop_assert_eq!(c.authzid, (!authzid.is_empty()).then_some(authzid.as_str()));
            prop_assert_eq!(c.authcid, authcid.as_str());
            prop_assert_eq!(c.password, password.as_str());
        }
    }
}
