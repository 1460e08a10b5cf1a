//! XEP-0220 Server Dialback: the keys (§2.1.2's recommended recipe) and the secret behind
//! them, kept in the data directory so that keys stay valid across a restart.

use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The dialback namespace (`db:` prefix on the stream header).
pub const NS: &str = "jabber:server:dialback";
/// The stream feature announcing dialback with error support (XEP-0220 §2.4).
pub const FEATURE_NS: &str = "urn:xmpp:features:dialback";

/// The secret: SHA-256 of the random bytes in `<data_dir>/s2s-dialback.secret`.
pub struct Secret([u8; 32]);

impl Secret {
    /// Reads the secret file, making it (0600) on first use. An unreadable or short file is
    /// replaced: dialback keys in flight then fail once, nothing else depends on it.
    pub fn load(data_dir: &Path) -> std::io::Result<Secret> {
        let path = data_dir.join("s2s-dialback.secret");
        let raw = match std::fs::read(&path) {
            Ok(raw) if raw.len() >= 32 => raw,
            _ => {
                let mut raw = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut raw);
                crate::store::private_dir(data_dir)?;
                crate::store::write_private(&path, &raw)?;
                raw
            }
        };
        Ok(Secret(Sha256::digest(&raw).into()))
    }

    /// A secret of the moment, for a server without a data directory (tests in memory).
    pub fn ephemeral() -> Secret {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        Secret(Sha256::digest(raw).into())
    }

    /// HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream id), in hex.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            // HMAC takes keys of any length; this cannot fail.
            return String::new();
        };
        mac.update(receiving.as_bytes());
        mac.update(b" ");
        mac.update(originating.as_bytes());
        mac.update(b" ");
        mac.update(stream_id.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(64);
        for b in tag {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }

    /// Whether `key` is the one we would make, compared in constant time.
    pub fn verify(&self, key: &str, receiving: &str, originating: &str, stream_id: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.key(receiving, originating, stream_id);
        let key = key.trim();
        key.len() == expected.len() && bool::from(key.as_bytes().ct_eq(expected.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part_and_verify() {
        let s = Secret::ephemeral();
        let k = s.key("b.example", "a.example", "id1");
        assert_eq!(k.len(), 64);
        assert!(s.verify(&k, "b.example", "a.example", "id1"));
        assert!(!s.verify(&k, "b.example", "a.example", "id2"));
        assert!(!s.verify(&k, "a.example", "b.example", "id1"));
        assert!(!Secret::ephemeral().verify(&k, "b.example", "a.example", "id1"));
        assert!(!s.verify("", "b.example", "a.example", "id1"));
    }

    #[test]
    fn the_secret_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Secret::load(dir.path()).expect("load").key("r", "o", "i");
        let b = Secret::load(dir.path()).expect("load").key("r", "o", "i");
        assert_eq!(a, b);
    }
}
