//! Client side of SASL PLAIN (RFC 4616) and SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677),
//! without channel binding (`n,,`), as used over XMPP (RFC 6120 §6).
//!
//! The PBKDF2 result is what makes SCRAM expensive for a client; a load generator logging the
//! same accounts in thousands of times caches the derived keys per
//! (mechanism, user, password, salt, iterations) so its own CPU measures nothing but the
//! protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mech {
    Plain,
    ScramSha1,
    ScramSha256,
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::ScramSha1 => "SCRAM-SHA-1",
            Mech::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    pub fn from_name(s: &str) -> Option<Mech> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mech::Plain),
            "SCRAM-SHA-1" => Some(Mech::ScramSha1),
            "SCRAM-SHA-256" => Some(Mech::ScramSha256),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mech::ScramSha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut m = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mech::ScramSha256 => Sha256::digest(data).to_vec(),
            _ => Sha1::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mech::ScramSha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            _ => {
                let mut out = vec![0; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// The initial response for PLAIN: `\0user\0password`, base64.
pub fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

struct Keys {
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

type CacheKey = (Mech, String, String, Vec<u8>, u32);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<Keys>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<Keys>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn keys(mech: Mech, user: &str, password: &str, salt: &[u8], iterations: u32) -> Arc<Keys> {
    let key = (
        mech,
        user.to_owned(),
        password.to_owned(),
        salt.to_vec(),
        iterations,
    );
    if let Some(k) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return k.clone();
    }
    // Derived outside the lock so other threads are not held up by this PBKDF2.
    let salted = mech.salted_password(password.as_bytes(), salt, iterations);
    let client_key = mech.hmac(&salted, b"Client Key");
    let k = Arc::new(Keys {
        stored_key: mech.hash(&client_key),
        server_key: mech.hmac(&salted, b"Server Key"),
        client_key,
    });
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, k.clone());
    k
}

/// RFC 5802 §5.1 saslname: `,` and `=` escaped.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

pub struct Scram {
    mech: Mech,
    user: String,
    password: String,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
    pub verified: bool,
}

impl Scram {
    pub fn new(mech: Mech, user: &str, password: &str) -> Scram {
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let client_first_bare = format!("n={},r={nonce}", saslname(user));
        Scram {
            mech,
            user: user.to_owned(),
            password: password.to_owned(),
            nonce,
            client_first_bare,
            server_signature: None,
            verified: false,
        }
    }

    /// The initial response (client-first-message), base64.
    pub fn first(&self) -> String {
        B64.encode(format!("n,,{}", self.client_first_bare))
    }

    /// Handles a `<challenge/>` payload (base64); returns the `<response/>` payload.
    pub fn challenge(&mut self, b64: &str) -> Result<String, String> {
        let data = B64
            .decode(b64.trim())
            .map_err(|e| format!("challenge is not base64: {e}"))?;
        let text = String::from_utf8(data).map_err(|_| "challenge is not UTF-8".to_owned())?;
        if self.server_signature.is_some() {
            // server-final-message sent as a challenge (RFC 6120 §6.3.10 permits either).
            self.verify_final(&text)?;
            return Ok(String::new());
        }
        let (mut r, mut s, mut i) = (None, None, None);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => r = Some(v),
                Some(("s", v)) => s = Some(v),
                Some(("i", v)) => i = Some(v),
                Some(("m", _)) => {
                    return Err("server requires an unsupported SCRAM extension".into());
                }
                Some(("e", v)) => return Err(format!("server error {v}")),
                _ => {}
            }
        }
        let r = r.ok_or("server-first-message without nonce")?;
        if !r.starts_with(&self.nonce) || r.len() == self.nonce.len() {
            return Err("server nonce does not extend ours".into());
        }
        let salt = B64
            .decode(s.ok_or("server-first-message without salt")?)
            .map_err(|_| "salt is not base64".to_owned())?;
        let iterations: u32 = i
            .ok_or("server-first-message without iteration count")?
            .parse()
            .map_err(|_| "bad iteration count".to_owned())?;
        if iterations == 0 {
            return Err("iteration count 0".into());
        }
        let k = keys(self.mech, &self.user, &self.password, &salt, iterations);
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = self.mech.hmac(&k.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = k
            .client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_signature = Some(self.mech.hmac(&k.server_key, auth_message.as_bytes()));
        Ok(B64.encode(format!("{without_proof},p={}", B64.encode(proof))))
    }

    /// Handles the additional data of `<success/>` (base64, possibly empty).
    pub fn success(&mut self, b64: &str) -> Result<(), String> {
        let b64 = b64.trim();
        if b64.is_empty() || b64 == "=" {
            return if self.verified {
                Ok(())
            } else {
                Err("success without server signature".into())
            };
        }
        let data = B64
            .decode(b64)
            .map_err(|e| format!("success data is not base64: {e}"))?;
        let text = String::from_utf8(data).map_err(|_| "success data is not UTF-8".to_owned())?;
        self.verify_final(&text)
    }

    fn verify_final(&mut self, text: &str) -> Result<(), String> {
        let expected = self
            .server_signature
            .as_ref()
            .ok_or("server-final before server-first")?;
        let v = text
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .ok_or_else(|| format!("server-final-message without signature: {text}"))?;
        let v = B64
            .decode(v)
            .map_err(|_| "server signature is not base64".to_owned())?;
        if &v != expected {
            return Err("server signature mismatch".into());
        }
        self.verified = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 §5 example.
    #[test]
    fn rfc5802_example() {
        let mut s = Scram::new(Mech::ScramSha1, "user", "pencil");
        s.nonce = "fyko+d2lbbFgONRv9qkxdawL".into();
        s.client_first_bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into();
        let sf = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let resp = s.challenge(&B64.encode(sf)).unwrap();
        assert_eq!(
            String::from_utf8(B64.decode(resp).unwrap()).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        s.success(&B64.encode("v=rmF9pqV8S7suAoZWja4dJRkFsKQ="))
            .unwrap();
        assert!(s.verified);
    }

    /// RFC 7677 §3 example.
    #[test]
    fn rfc7677_example() {
        let mut s = Scram::new(Mech::ScramSha256, "user", "pencil");
        s.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        s.client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let sf = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let resp = s.challenge(&B64.encode(sf)).unwrap();
        assert_eq!(
            String::from_utf8(B64.decode(resp).unwrap()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.success(&B64.encode("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
            .unwrap();
    }
}
