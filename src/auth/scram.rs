//! Server side of the SCRAM SASL mechanisms.
//!
//! Implements:
//! - RFC 5802 (Salted Challenge Response Authentication Mechanism): the
//!   server half of `SCRAM-SHA-1`, including the key derivation
//!   (`SaltedPassword`, `ClientKey`, `StoredKey`, `ServerKey`), parsing of
//!   `client-first-message` and `client-final-message`, proof verification
//!   and the `server-final-message` (`v=`).
//! - RFC 7677 (SCRAM-SHA-256 and SCRAM-SHA-256-PLUS): the `SCRAM-SHA-256`
//!   variant. The `-PLUS` variants are **not** offered: channel binding is
//!   not supported, a `p=` GS2 flag is rejected and the `y` flag is accepted
//!   (RFC 5802 §6: rejecting `y` is only required when the server advertises
//!   a `-PLUS` mechanism, which wockd does not; if that ever changes, `y`
//!   must be rejected to detect downgrades).
//! - RFC 4013 (SASLprep) is applied to passwords before key derivation.
//! - RFC 6120 §6.5: [`ScramError::condition`] maps every failure onto an
//!   XMPP SASL failure condition.
//!
//! The store never keeps passwords, only [`ScramKeys`] (salt, iteration
//! count, `StoredKey`, `ServerKey`). A login therefore costs a handful of
//! HMACs and no PBKDF2 on the server. [`verify_password`] (used for PLAIN
//! and XEP-0078) is the only place that runs PBKDF2 against stored keys.
//!
//! Usernames are returned decoded (`=2C` → `,`, `=3D` → `=`) but otherwise
//! untouched; normalising them (nodeprep / SASLprep) is the caller's job.
//!
//! Unknown users get a deterministic fake salt (HMAC of the username with a
//! per-process random secret) so the server-first-message does not reveal
//! whether the account exists; the exchange then always ends in
//! `not-authorized`, after doing the same amount of work as a real login.
//!
//! All input is untrusted network data: every malformed message yields a
//! [`ScramError`], never a panic, and messages are bounded by
//! [`MAX_MESSAGE_LEN`].

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest client-first-message or client-final-message accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Length of freshly generated salts, in bytes.
pub const SALT_LEN: usize = 16;

/// Number of random bytes in the server's part of the nonce.
const SERVER_NONCE_LEN: usize = 24;

/// Default PBKDF2 iteration count (RFC 7677 §4 asks for at least 4096).
///
/// Also the count announced for unknown users, so accounts should be
/// created with this value (or the server configured with
/// [`ScramServer::with_unknown_user_iterations`]) to avoid revealing
/// account existence through the iteration count.
pub const DEFAULT_ITERATIONS: u32 = 10_000;

/// The hash function a SCRAM mechanism is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    /// All supported hashes, strongest first (the order to advertise them).
    pub const ALL: [Hash; 2] = [Hash::Sha256, Hash::Sha1];

    /// SASL mechanism name: `"SCRAM-SHA-1"` or `"SCRAM-SHA-256"`.
    pub fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha1 => "SCRAM-SHA-1",
            Hash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Inverse of [`Hash::mechanism`] (exact, case-sensitive match as SASL
    /// mechanism names are upper case). `-PLUS` names are not recognised.
    pub fn from_mechanism(name: &str) -> Option<Hash> {
        match name {
            "SCRAM-SHA-1" => Some(Hash::Sha1),
            "SCRAM-SHA-256" => Some(Hash::Sha256),
            _ => None,
        }
    }

    /// Output length of the hash in bytes (length of `StoredKey`,
    /// `ServerKey` and of the client proof).
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Hash::Sha1 => hmac_parts::<Hmac<Sha1>>(key, parts),
            Hash::Sha256 => hmac_parts::<Hmac<Sha256>>(key, parts),
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            Hash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        }
        out
    }
}

fn hmac_parts<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this never fails; should it ever,
    // fail closed: an empty output never compares equal to a real key.
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// What the store keeps per account and hash: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Everything that can go wrong in a SCRAM exchange or key derivation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("SCRAM message longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    #[error("SCRAM message is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("invalid base64 in SCRAM attribute {0}")]
    InvalidBase64(&'static str),
    #[error("invalid SCRAM username encoding")]
    InvalidUsername,
    #[error("invalid SCRAM authzid encoding")]
    InvalidAuthzid,
    #[error("client requested channel binding, which is not supported")]
    ChannelBindingNotSupported,
    #[error("mandatory SCRAM extension (m=) not supported")]
    ExtensionNotSupported,
    #[error("channel binding data does not match the GS2 header")]
    ChannelBindingMismatch,
    #[error("nonce in client-final-message does not match")]
    NonceMismatch,
    #[error("invalid client proof")]
    InvalidProof,
    #[error("unknown user")]
    UnknownUser,
    #[error("SCRAM step called out of order")]
    OutOfOrder,
    #[error("password is prohibited by SASLprep")]
    InvalidPassword,
    #[error("iteration count must be at least 1")]
    InvalidIterations,
}

impl ScramError {
    /// The RFC 6120 §6.5 SASL failure condition to send to the client.
    ///
    /// Unknown users and wrong proofs map to the same condition so the
    /// client cannot tell them apart.
    pub fn condition(&self) -> &'static str {
        match self {
            ScramError::TooLong
            | ScramError::InvalidUtf8
            | ScramError::Malformed(_)
            | ScramError::InvalidUsername
            | ScramError::ChannelBindingNotSupported
            | ScramError::ExtensionNotSupported
            | ScramError::OutOfOrder => "malformed-request",
            ScramError::InvalidBase64(_) => "incorrect-encoding",
            ScramError::InvalidAuthzid => "invalid-authzid",
            ScramError::ChannelBindingMismatch
            | ScramError::NonceMismatch
            | ScramError::InvalidProof
            | ScramError::UnknownUser
            | ScramError::InvalidPassword => "not-authorized",
            ScramError::InvalidIterations => "temporary-auth-failure",
        }
    }
}

/// SaltedPassword = PBKDF2(SASLprep(password), salt, i);
/// ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey);
/// ServerKey = HMAC(SaltedPassword, "Server Key").
pub fn derive_keys(
    hash: Hash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramKeys, ScramError> {
    if iterations == 0 {
        return Err(ScramError::InvalidIterations);
    }
    let prepared = stringprep::saslprep(password).map_err(|_| ScramError::InvalidPassword)?;
    let salted = hash.pbkdf2(prepared.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, &[b"Client Key"]);
    let stored_key = hash.digest(&client_key);
    let server_key = hash.hmac(&salted, &[b"Server Key"]);
    Ok(ScramKeys {
        salt: salt.to_vec(),
        iterations,
        stored_key,
        server_key,
    })
}

/// [`derive_keys`] with a fresh random [`SALT_LEN`]-byte salt.
pub fn new_keys(hash: Hash, password: &str, iterations: u32) -> Result<ScramKeys, ScramError> {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    derive_keys(hash, password, &salt, iterations)
}

/// For PLAIN and XEP-0078 legacy auth: recompute the keys from the
/// candidate password and compare `StoredKey` in constant time.
///
/// Returns `false` for passwords SASLprep rejects and for corrupt keys.
pub fn verify_password(hash: Hash, keys: &ScramKeys, password: &str) -> bool {
    if keys.stored_key.len() != hash.output_len() {
        return false;
    }
    match derive_keys(hash, password, &keys.salt, keys.iterations) {
        Ok(candidate) => bool::from(candidate.stored_key.ct_eq(&keys.stored_key)),
        Err(_) => false,
    }
}

/// Result of parsing a client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// Decoded saslname (`=2C` → `,`, `=3D` → `=`); never empty.
    pub username: String,
    /// Decoded `a=` authorization identity, if the client sent one.
    pub authzid: Option<String>,
}

enum State {
    Initial,
    GotClientFirst {
        gs2_header: String,
        client_first_bare: String,
        client_nonce: String,
    },
    SentServerFirst {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        keys: ScramKeys,
        unknown_user: bool,
    },
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::GotClientFirst { .. } => "got-client-first",
            State::SentServerFirst { .. } => "sent-server-first",
            State::Done => "done",
        }
    }
}

/// Server-side state machine for one SCRAM exchange.
///
/// Call [`client_first`](Self::client_first), then exactly one of
/// [`server_first`](Self::server_first) /
/// [`server_first_unknown_user`](Self::server_first_unknown_user), then
/// [`client_final`](Self::client_final). Any error ends the exchange; every
/// later call returns [`ScramError::OutOfOrder`].
pub struct ScramServer {
    hash: Hash,
    state: State,
    unknown_user_iterations: u32,
    #[cfg(test)]
    fixed_server_nonce: Option<String>,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately omits keys and nonces.
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("state", &self.state.name())
            .finish()
    }
}

impl ScramServer {
    pub fn new(hash: Hash) -> Self {
        ScramServer {
            hash,
            state: State::Initial,
            unknown_user_iterations: DEFAULT_ITERATIONS,
            #[cfg(test)]
            fixed_server_nonce: None,
        }
    }

    /// Iteration count announced to unknown users (default
    /// [`DEFAULT_ITERATIONS`]); should match what real accounts use.
    /// A value of 0 is replaced by [`DEFAULT_ITERATIONS`].
    pub fn with_unknown_user_iterations(mut self, iterations: u32) -> Self {
        self.unknown_user_iterations = if iterations == 0 {
            DEFAULT_ITERATIONS
        } else {
            iterations
        };
        self
    }

    /// Test-only: use `nonce` as the server's part of the nonce instead of
    /// random bytes, to reproduce the RFC examples.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(hash: Hash, nonce: &str) -> Self {
        let mut server = ScramServer::new(hash);
        server.fixed_server_nonce = Some(nonce.to_owned());
        server
    }

    /// Parse the client-first-message.
    ///
    /// Accepts the GS2 flags `n` and `y`; `p=` (channel binding) is
    /// rejected as no `-PLUS` mechanism is offered. A leading `m=`
    /// (mandatory extension) is rejected; other extensions after the nonce
    /// are syntax-checked and ignored. The `a=` authzid is returned decoded;
    /// whether it is acceptable is for the caller to decide.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, ScramError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Done;
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done;
        let parsed = parse_client_first(msg)?;
        self.state = State::GotClientFirst {
            gs2_header: parsed.gs2_header,
            client_first_bare: parsed.client_first_bare,
            client_nonce: parsed.client_nonce,
        };
        Ok(parsed.first)
    }

    /// Build the server-first-message for a known user:
    /// `r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>`,
    /// the server nonce being 24 random bytes in base64.
    ///
    /// Called out of order (not right after a successful
    /// [`client_first`](Self::client_first)) it returns an empty message and
    /// ends the exchange, so [`client_final`](Self::client_final) fails with
    /// [`ScramError::OutOfOrder`].
    pub fn server_first(&mut self, keys: ScramKeys) -> Vec<u8> {
        self.start_server_first(keys, false)
    }

    /// Build a server-first-message for a user that does not exist.
    ///
    /// The salt is derived from `username` and a per-process random secret,
    /// so repeated attempts for the same name see the same salt, like for a
    /// real account; the iteration count is the one set with
    /// [`with_unknown_user_iterations`](Self::with_unknown_user_iterations).
    /// [`client_final`](Self::client_final) then always fails with
    /// [`ScramError::UnknownUser`] (condition `not-authorized`), after the
    /// same computation as a real login.
    pub fn server_first_unknown_user(&mut self, username: &str) -> Vec<u8> {
        let keys = fake_keys(self.hash, username.as_bytes(), self.unknown_user_iterations);
        self.start_server_first(keys, true)
    }

    fn start_server_first(&mut self, keys: ScramKeys, unknown_user: bool) -> Vec<u8> {
        let State::GotClientFirst {
            gs2_header,
            client_first_bare,
            client_nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Vec::new();
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&keys.salt),
            keys.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
            keys,
            unknown_user,
        };
        out
    }

    fn server_nonce(&self) -> String {
        #[cfg(test)]
        if let Some(nonce) = &self.fixed_server_nonce {
            return nonce.clone();
        }
        let mut bytes = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut bytes);
        BASE64.encode(bytes)
    }

    /// Verify the client-final-message and return the server-final-message
    /// `v=<base64 ServerSignature>`.
    ///
    /// Checks that `c=` is the base64 of the GS2 header from the first
    /// message, that `r=` is the full nonce, and that the proof is right:
    /// ClientSignature = HMAC(StoredKey, AuthMessage),
    /// ClientKey = ClientProof XOR ClientSignature, H(ClientKey) == StoredKey
    /// (compared in constant time). The exchange is over afterwards,
    /// whatever the outcome.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentServerFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
            keys,
            unknown_user,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let hash = self.hash;

        let text = check_message(msg)?;
        let (without_proof, proof_attr) = text
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("client-final-message has no proof"))?;
        let proof_b64 = proof_attr
            .strip_prefix("p=")
            .ok_or(ScramError::Malformed("proof must be the last attribute"))?;

        let mut attrs = without_proof.split(',');
        let cbind_b64 = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding (c=)"))?;
        let final_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce (r=)"))?;
        for ext in attrs {
            check_extension(ext)?;
        }

        let cbind = BASE64
            .decode(cbind_b64)
            .map_err(|_| ScramError::InvalidBase64("c"))?;
        // Without channel binding, cbind-input is just the GS2 header.
        if cbind != gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if !bool::from(final_nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = BASE64
            .decode(proof_b64)
            .map_err(|_| ScramError::InvalidBase64("p"))?;
        if proof.len() != hash.output_len() {
            return Err(ScramError::Malformed("client proof has the wrong length"));
        }
        if keys.stored_key.len() != hash.output_len() {
            // Corrupt stored keys: fail closed, indistinguishable from a
            // wrong password for the client.
            return Err(ScramError::InvalidProof);
        }

        let auth_message: [&[u8]; 5] = [
            client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hash.hmac(&keys.stored_key, &auth_message);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let candidate = hash.digest(&client_key);
        let proof_ok = bool::from(candidate.ct_eq(&keys.stored_key));
        let server_signature = hash.hmac(&keys.server_key, &auth_message);

        if unknown_user {
            return Err(ScramError::UnknownUser);
        }
        if !proof_ok {
            return Err(ScramError::InvalidProof);
        }
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// Per-process secret for fake salts of unknown users.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        secret
    })
}

/// Deterministic (per process) keys for a non-existent user.
fn fake_keys(hash: Hash, username: &[u8], iterations: u32) -> ScramKeys {
    let secret = process_secret();
    let mech = hash.mechanism().as_bytes();
    let derive = |label: &[u8], len: usize| {
        let mut out = Hash::Sha256.hmac(secret, &[label, b"\0", mech, b"\0", username]);
        out.resize(len, 0);
        out
    };
    ScramKeys {
        salt: derive(b"wockd scram fake salt", SALT_LEN),
        iterations,
        stored_key: derive(b"wockd scram fake stored key", hash.output_len()),
        server_key: derive(b"wockd scram fake server key", hash.output_len()),
    }
}

struct ParsedClientFirst {
    first: ClientFirst,
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
}

fn check_message(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::TooLong);
    }
    let text = std::str::from_utf8(msg).map_err(|_| ScramError::InvalidUtf8)?;
    if text.contains('\0') {
        return Err(ScramError::Malformed("NUL in message"));
    }
    Ok(text)
}

fn parse_client_first(msg: &[u8]) -> Result<ParsedClientFirst, ScramError> {
    let text = check_message(msg)?;

    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
        _ => return Err(ScramError::Malformed("bad GS2 channel binding flag")),
    }
    let (authzid_attr, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("missing GS2 header"))?;
    let authzid = if authzid_attr.is_empty() {
        None
    } else {
        let encoded = authzid_attr
            .strip_prefix("a=")
            .ok_or(ScramError::Malformed("bad GS2 authzid"))?;
        Some(decode_saslname(encoded).ok_or(ScramError::InvalidAuthzid)?)
    };
    let gs2_len = text.len() - bare.len();
    let gs2_header = &text[..gs2_len];

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut attrs = bare.split(',');
    let user_attr = attrs.next().unwrap_or_default();
    if user_attr.starts_with("m=") {
        return Err(ScramError::ExtensionNotSupported);
    }
    let username = user_attr
        .strip_prefix("n=")
        .ok_or(ScramError::Malformed("missing username (n=)"))?;
    let username = decode_saslname(username).ok_or(ScramError::InvalidUsername)?;
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("missing nonce (r=)"))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
        return Err(ScramError::Malformed("invalid client nonce"));
    }
    for ext in attrs {
        check_extension(ext)?;
    }

    Ok(ParsedClientFirst {
        first: ClientFirst { username, authzid },
        gs2_header: gs2_header.to_owned(),
        client_first_bare: bare.to_owned(),
        client_nonce: client_nonce.to_owned(),
    })
}

/// printable = %x21-2B / %x2D-7E ; printable ASCII except ","
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x2B | 0x2D..=0x7E)
}

/// attr-val = ALPHA "=" value ; value = 1*value-char (no NUL, no ",")
fn check_extension(attr: &str) -> Result<(), ScramError> {
    let bytes = attr.as_bytes();
    if bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=' {
        Ok(())
    } else {
        Err(ScramError::Malformed("invalid attribute"))
    }
}

/// saslname = 1*(value-safe-char / "=2C" / "=3D"); returns None if invalid.
fn decode_saslname(encoded: &str) -> Option<String> {
    if encoded.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(pos) = rest.find(['=', ',', '\0']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(data: &[u8]) -> String {
        BASE64.encode(data)
    }

    /// Minimal client side, to compute proofs in tests.
    fn client_proof(
        hash: Hash,
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &str,
    ) -> (Vec<u8>, Vec<u8>) {
        let salted = hash.pbkdf2(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.digest(&client_key);
        let signature = hash.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hash.hmac(&salted, &[b"Server Key"]);
        let server_sig = hash.hmac(&server_key, &[auth_message.as_bytes()]);
        (proof, server_sig)
    }

    /// Runs a full exchange with a random server nonce; returns the result
    /// of client_final.
    fn run_exchange(
        hash: Hash,
        keys: &ScramKeys,
        client_password: &str,
    ) -> Result<Vec<u8>, ScramError> {
        let mut server = ScramServer::new(hash);
        let first_bare = "n=alice,r=clientnonce123";
        let first = server.client_first(format!("n,,{first_bare}").as_bytes())?;
        assert_eq!(first.username, "alice");
        let server_first = String::from_utf8(server.server_first(keys.clone())).unwrap();
        let nonce = server_first
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=")
            .unwrap();
        assert!(nonce.starts_with("clientnonce123"));
        assert_eq!(nonce.len(), "clientnonce123".len() + 32);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let (proof, server_sig) =
            client_proof(hash, client_password, &keys.salt, keys.iterations, &auth);
        let result = server.client_final(format!("{without_proof},p={}", b64(&proof)).as_bytes());
        if let Ok(v) = &result {
            assert_eq!(v, format!("v={}", b64(&server_sig)).as_bytes());
        }
        result
    }

    /// Server positioned right after server-first of the RFC 5802 example.
    fn rfc5802_server() -> ScramServer {
        let mut server = ScramServer::with_server_nonce(Hash::Sha1, "3rfcNHYJY1ZVvWVs7j");
        server
            .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        // PBKDF2 with 4096 rounds is slow in debug builds: derive once.
        static KEYS: OnceLock<ScramKeys> = OnceLock::new();
        let keys = KEYS.get_or_init(|| {
            let salt = BASE64.decode("QSXCR+Q6sek8bf92").unwrap();
            derive_keys(Hash::Sha1, "pencil", &salt, 4096).unwrap()
        });
        server.server_first(keys.clone());
        server
    }

    const RFC5802_FINAL_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";

    #[test]
    fn mechanism_names() {
        for hash in Hash::ALL {
            assert_eq!(Hash::from_mechanism(hash.mechanism()), Some(hash));
        }
        assert_eq!(Hash::Sha1.mechanism(), "SCRAM-SHA-1");
        assert_eq!(Hash::Sha256.mechanism(), "SCRAM-SHA-256");
        assert_eq!(Hash::from_mechanism("SCRAM-SHA-1-PLUS"), None);
        assert_eq!(Hash::from_mechanism("scram-sha-1"), None);
        assert_eq!(Hash::from_mechanism("PLAIN"), None);
    }

    #[test]
    fn rfc5802_example_sha1() {
        let mut server = ScramServer::with_server_nonce(Hash::Sha1, "3rfcNHYJY1ZVvWVs7j");
        let first = server
            .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        assert_eq!(
            first,
            ClientFirst {
                username: "user".into(),
                authzid: None
            }
        );
        let salt = BASE64.decode("QSXCR+Q6sek8bf92").unwrap();
        let keys = derive_keys(Hash::Sha1, "pencil", &salt, 4096).unwrap();
        let server_first = server.server_first(keys);
        assert_eq!(
            server_first,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let server_final = server
            .client_final(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .unwrap();
        assert_eq!(server_final, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
        // The exchange is over.
        assert_eq!(
            server.client_final(b"c=biws,r=x,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn rfc7677_example_sha256() {
        let mut server =
            ScramServer::with_server_nonce(Hash::Sha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let first = server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(first.username, "user");
        assert_eq!(first.authzid, None);
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = derive_keys(Hash::Sha256, "pencil", &salt, 4096).unwrap();
        let server_first = server.server_first(keys);
        assert_eq!(
            server_first,
            &b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..]
        );
        let server_final = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            &b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="[..]
        );
    }

    #[test]
    fn round_trip_random_nonce_and_salt() {
        for hash in Hash::ALL {
            let keys = new_keys(hash, "correct horse", 64).unwrap();
            assert_eq!(keys.salt.len(), SALT_LEN);
            assert_eq!(keys.stored_key.len(), hash.output_len());
            assert_eq!(keys.server_key.len(), hash.output_len());
            assert!(run_exchange(hash, &keys, "correct horse").is_ok());
            let err = run_exchange(hash, &keys, "wrong horse").unwrap_err();
            assert_eq!(err, ScramError::InvalidProof);
            assert_eq!(err.condition(), "not-authorized");
        }
    }

    #[test]
    fn new_keys_uses_fresh_salt() {
        let a = new_keys(Hash::Sha256, "pw", 1).unwrap();
        let b = new_keys(Hash::Sha256, "pw", 1).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn verify_password_true_false() {
        for hash in Hash::ALL {
            let keys = new_keys(hash, "pencil", 128).unwrap();
            assert!(verify_password(hash, &keys, "pencil"));
            assert!(!verify_password(hash, &keys, "pencil "));
            assert!(!verify_password(hash, &keys, "Pencil"));
            assert!(!verify_password(hash, &keys, ""));
            // Prohibited by SASLprep (control character).
            assert!(!verify_password(hash, &keys, "pen\u{7}cil"));
        }
        // Keys for one hash don't verify under the other.
        let keys = new_keys(Hash::Sha1, "pencil", 16).unwrap();
        assert!(!verify_password(Hash::Sha256, &keys, "pencil"));
        // Corrupt keys.
        let mut bad = keys.clone();
        bad.iterations = 0;
        assert!(!verify_password(Hash::Sha1, &bad, "pencil"));
        let mut bad = keys;
        bad.stored_key.clear();
        assert!(!verify_password(Hash::Sha1, &bad, "pencil"));
    }

    #[test]
    fn saslprep_applied_to_password() {
        // U+00A0 (non-ASCII space) maps to U+0020; soft hyphen maps to nothing.
        let keys = new_keys(Hash::Sha256, "a\u{a0}b\u{ad}c", 16).unwrap();
        assert!(verify_password(Hash::Sha256, &keys, "a bc"));
        assert_eq!(
            derive_keys(Hash::Sha1, "bad\u{0}", b"salt", 1),
            Err(ScramError::InvalidPassword)
        );
        assert_eq!(
            derive_keys(Hash::Sha1, "pw", b"salt", 0),
            Err(ScramError::InvalidIterations)
        );
    }

    #[test]
    fn rfc_derived_keys() {
        // The RFC publishes no StoredKey; the end-to-end example tests the
        // values, here check determinism and the fields.
        let salt = BASE64.decode("QSXCR+Q6sek8bf92").unwrap();
        let a = derive_keys(Hash::Sha1, "pencil", &salt, 4096).unwrap();
        let b = derive_keys(Hash::Sha1, "pencil", &salt, 4096).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.salt, salt);
        assert_eq!(a.iterations, 4096);
        assert!(verify_password(Hash::Sha1, &a, "pencil"));
    }

    #[test]
    fn client_first_variants() {
        let mut s = ScramServer::new(Hash::Sha256);
        let first = s.client_first(b"y,,n=user,r=abc").unwrap();
        assert_eq!(first.username, "user");

        let mut s = ScramServer::new(Hash::Sha256);
        let first = s
            .client_first(b"n,a=x=2Cy=3D,n=us=2Cer=3D,r=abc,x=ext")
            .unwrap();
        assert_eq!(first.username, "us,er=");
        assert_eq!(first.authzid.as_deref(), Some("x,y="));
        // "=40" is not a valid escape in the authzid.
        let mut s = ScramServer::new(Hash::Sha256);
        assert_eq!(
            s.client_first(b"n,a=admin=40example.org,n=user,r=abc"),
            Err(ScramError::InvalidAuthzid)
        );
        let mut s = ScramServer::new(Hash::Sha256);
        let first = s
            .client_first("n,a=admin@example.org=2C,n=j\u{f6}rg,r=abc".as_bytes())
            .unwrap();
        assert_eq!(first.authzid.as_deref(), Some("admin@example.org,"));
        assert_eq!(first.username, "j\u{f6}rg");
    }

    #[test]
    fn client_first_rejections() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"", ScramError::Malformed("missing GS2 header")),
            (b"n", ScramError::Malformed("missing GS2 header")),
            (b"n,", ScramError::Malformed("missing GS2 header")),
            (
                b"x,,n=user,r=abc",
                ScramError::Malformed("bad GS2 channel binding flag"),
            ),
            (
                b"N,,n=user,r=abc",
                ScramError::Malformed("bad GS2 channel binding flag"),
            ),
            (
                b"p=tls-unique,,n=user,r=abc",
                ScramError::ChannelBindingNotSupported,
            ),
            (
                b"p=tls-exporter,,n=user,r=abc",
                ScramError::ChannelBindingNotSupported,
            ),
            (
                b"n,b=foo,n=user,r=abc",
                ScramError::Malformed("bad GS2 authzid"),
            ),
            (b"n,a=,n=user,r=abc", ScramError::InvalidAuthzid),
            (b"n,,m=foo,n=user,r=abc", ScramError::ExtensionNotSupported),
            (b"n,,n=user", ScramError::Malformed("missing nonce (r=)")),
            (b"n,,n=user,", ScramError::Malformed("missing nonce (r=)")),
            (
                b"n,,n=user,r=",
                ScramError::Malformed("invalid client nonce"),
            ),
            (
                "n,,n=user,r=ab\u{e9}".as_bytes(),
                ScramError::Malformed("invalid client nonce"),
            ),
            (
                b"n,,n=user,r=a b",
                ScramError::Malformed("invalid client nonce"),
            ),
            (
                b"n,,r=abc,n=user",
                ScramError::Malformed("missing username (n=)"),
            ),
            (b"n,,n=,r=abc", ScramError::InvalidUsername),
            (b"n,,n=us=er,r=abc", ScramError::InvalidUsername),
            (b"n,,n=us=2cer,r=abc", ScramError::InvalidUsername),
            (b"n,,n=user=,r=abc", ScramError::InvalidUsername),
            (
                b"n,,n=user,r=abc,",
                ScramError::Malformed("invalid attribute"),
            ),
            (
                b"n,,n=user,r=abc,x=",
                ScramError::Malformed("invalid attribute"),
            ),
            (
                b"n,,n=user,r=abc,1=a",
                ScramError::Malformed("invalid attribute"),
            ),
            (
                b"n,,n=u\0ser,r=abc",
                ScramError::Malformed("NUL in message"),
            ),
            (b"n,,n=\xff\xfe,r=abc", ScramError::InvalidUtf8),
        ];
        for (msg, expected) in cases {
            let mut s = ScramServer::new(Hash::Sha1);
            assert_eq!(
                s.client_first(msg).as_ref(),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
            // Any error ends the exchange.
            assert_eq!(s.server_first(new_dummy_keys()), Vec::<u8>::new());
            assert_eq!(
                s.client_final(b"c=biws,r=abc,p=AAAA"),
                Err(ScramError::OutOfOrder)
            );
        }
        let mut long = b"n,,n=user,r=".to_vec();
        long.resize(MAX_MESSAGE_LEN + 1, b'a');
        let mut s = ScramServer::new(Hash::Sha1);
        assert_eq!(s.client_first(&long), Err(ScramError::TooLong));
        // Exactly at the limit is fine.
        long.truncate(MAX_MESSAGE_LEN);
        let mut s = ScramServer::new(Hash::Sha1);
        assert!(s.client_first(&long).is_ok());
    }

    fn new_dummy_keys() -> ScramKeys {
        ScramKeys {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![0; 20],
            server_key: vec![0; 20],
        }
    }

    #[test]
    fn client_final_rejections() {
        let good_proof = "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
        let n = RFC5802_FINAL_NONCE;
        let cases: Vec<(String, ScramError)> = vec![
            // wrong nonce
            (
                format!("c=biws,r={n}x,{good_proof}"),
                ScramError::NonceMismatch,
            ),
            (
                format!("c=biws,r=fyko+d2lbbFgONRv9qkxdawL,{good_proof}"),
                ScramError::NonceMismatch,
            ),
            // missing nonce
            (
                format!("c=biws,{good_proof}"),
                ScramError::Malformed("missing nonce (r=)"),
            ),
            (
                format!("c=biws,x={n},{good_proof}"),
                ScramError::Malformed("missing nonce (r=)"),
            ),
            // wrong proof
            (
                format!("c=biws,r={n},p=v0X8v3Bz2T0CJGbJQyF0X+HI5Ts="),
                ScramError::InvalidProof,
            ),
            (
                format!("c=biws,r={n},p=AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                ScramError::InvalidProof,
            ),
            // bad base64
            (
                format!("c=biws,r={n},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts"),
                ScramError::InvalidBase64("p"),
            ),
            // non-canonical trailing bits
            (
                format!("c=biws,r={n},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Tt="),
                ScramError::InvalidBase64("p"),
            ),
            (
                format!("c=biws,r={n},p=!!!!"),
                ScramError::InvalidBase64("p"),
            ),
            (
                format!("c=bi*s,r={n},{good_proof}"),
                ScramError::InvalidBase64("c"),
            ),
            (
                format!("c=biw,r={n},{good_proof}"),
                ScramError::InvalidBase64("c"),
            ),
            // channel binding must echo the gs2 header
            (
                format!("c=eSws,r={n},{good_proof}"),
                ScramError::ChannelBindingMismatch,
            ),
            (
                format!("c=,r={n},{good_proof}"),
                ScramError::ChannelBindingMismatch,
            ),
            // structure
            (
                format!("r={n},c=biws,{good_proof}"),
                ScramError::Malformed("missing channel binding (c=)"),
            ),
            (
                format!("c=biws,r={n}"),
                ScramError::Malformed("proof must be the last attribute"),
            ),
            (
                format!("c=biws,r={n},{good_proof},x=y"),
                ScramError::Malformed("proof must be the last attribute"),
            ),
            (
                "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=".into(),
                ScramError::Malformed("client-final-message has no proof"),
            ),
            (
                String::new(),
                ScramError::Malformed("client-final-message has no proof"),
            ),
            (
                format!("c=biws,r={n},p="),
                ScramError::Malformed("client proof has the wrong length"),
            ),
            (
                format!("c=biws,r={n},p=AAAA"),
                ScramError::Malformed("client proof has the wrong length"),
            ),
            (
                format!("c=biws,r={n},,{good_proof}"),
                ScramError::Malformed("invalid attribute"),
            ),
        ];
        for (msg, expected) in cases {
            let mut s = rfc5802_server();
            assert_eq!(s.client_final(msg.as_bytes()), Err(expected), "{msg}");
            assert_eq!(s.client_final(msg.as_bytes()), Err(ScramError::OutOfOrder));
        }

        let mut s = rfc5802_server();
        let mut bad = format!("c=biws,r={n},{good_proof}").into_bytes();
        bad[10] = 0xff;
        assert_eq!(s.client_final(&bad), Err(ScramError::InvalidUtf8));

        let mut s = rfc5802_server();
        let long = vec![b'a'; MAX_MESSAGE_LEN + 1];
        assert_eq!(s.client_final(&long), Err(ScramError::TooLong));

        // Unknown extensions before the proof are accepted syntactically;
        // the proof covers them, so the RFC proof no longer verifies.
        let mut s = rfc5802_server();
        assert_eq!(
            s.client_final(format!("c=biws,r={n},x=foo,{good_proof}").as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn y_flag_and_authzid_in_channel_binding() {
        let keys = new_keys(Hash::Sha256, "secret", 32).unwrap();
        let mut s = ScramServer::new(Hash::Sha256);
        let bare = "n=bob,r=nonce";
        let gs2 = "y,a=admin,";
        let first = s.client_first(format!("{gs2}{bare}").as_bytes()).unwrap();
        assert_eq!(first.authzid.as_deref(), Some("admin"));
        let server_first = String::from_utf8(s.server_first(keys.clone())).unwrap();
        let nonce = &server_first[2..server_first.find(',').unwrap()];
        let without_proof = format!("c={},r={nonce}", b64(gs2.as_bytes()));
        let auth = format!("{bare},{server_first},{without_proof}");
        let (proof, sig) = client_proof(Hash::Sha256, "secret", &keys.salt, 32, &auth);
        let out = s
            .client_final(format!("{without_proof},p={}", b64(&proof)).as_bytes())
            .unwrap();
        assert_eq!(out, format!("v={}", b64(&sig)).into_bytes());
    }

    #[test]
    fn unknown_user_always_fails_and_salt_is_stable() {
        let first_for = |user: &str| {
            let mut s = ScramServer::new(Hash::Sha1);
            let cf = s
                .client_first(format!("n,,n={user},r=abc").as_bytes())
                .unwrap();
            let msg = String::from_utf8(s.server_first_unknown_user(&cf.username)).unwrap();
            (s, msg)
        };
        let (_, a1) = first_for("ghost");
        let (_, a2) = first_for("ghost");
        let (_, b) = first_for("other");
        let salt = |m: &str| m.split(',').nth(1).unwrap().to_owned();
        assert_eq!(salt(&a1), salt(&a2));
        assert_ne!(salt(&a1), salt(&b));
        assert!(a1.ends_with(&format!(",i={DEFAULT_ITERATIONS}")));
        let salt_bytes = BASE64
            .decode(salt(&a1).strip_prefix("s=").unwrap())
            .unwrap();
        assert_eq!(salt_bytes.len(), SALT_LEN);
        // SHA-1 and SHA-256 fake salts differ, like real per-hash salts.
        let mut s = ScramServer::new(Hash::Sha256);
        s.client_first(b"n,,n=ghost,r=abc").unwrap();
        let c = String::from_utf8(s.server_first_unknown_user("ghost")).unwrap();
        assert_ne!(salt(&a1), salt(&c));

        // A well-formed final with any password still fails.
        let (mut s, server_first) = first_for("ghost");
        let nonce = &server_first[2..server_first.find(',').unwrap()];
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n=ghost,r=abc,{server_first},{without_proof}");
        let (proof, _) = client_proof(Hash::Sha1, "anything", &salt_bytes, 1, &auth);
        let err = s
            .client_final(format!("{without_proof},p={}", b64(&proof)).as_bytes())
            .unwrap_err();
        assert_eq!(err, ScramError::UnknownUser);
        assert_eq!(err.condition(), ScramError::InvalidProof.condition());

        let mut s = ScramServer::new(Hash::Sha1).with_unknown_user_iterations(4096);
        s.client_first(b"n,,n=ghost,r=abc").unwrap();
        let m = String::from_utf8(s.server_first_unknown_user("ghost")).unwrap();
        assert!(m.ends_with(",i=4096"));
    }

    #[test]
    fn out_of_order_calls() {
        let mut s = ScramServer::new(Hash::Sha1);
        assert_eq!(s.server_first(new_dummy_keys()), Vec::<u8>::new());
        assert_eq!(
            s.client_final(b"c=biws,r=a,p=AAAA"),
            Err(ScramError::OutOfOrder)
        );

        let mut s = ScramServer::new(Hash::Sha1);
        assert_eq!(
            s.client_final(b"c=biws,r=a,p=AAAA"),
            Err(ScramError::OutOfOrder)
        );

        let mut s = ScramServer::new(Hash::Sha1);
        s.client_first(b"n,,n=a,r=b").unwrap();
        assert_eq!(s.client_first(b"n,,n=a,r=b"), Err(ScramError::OutOfOrder));

        let mut s = ScramServer::new(Hash::Sha1);
        s.client_first(b"n,,n=a,r=b").unwrap();
        assert!(!s.server_first(new_dummy_keys()).is_empty());
        assert!(s.server_first(new_dummy_keys()).is_empty());
        assert_eq!(
            s.client_final(b"c=biws,r=a,p=AAAA"),
            Err(ScramError::OutOfOrder)
        );
        assert!(format!("{s:?}").contains("done"));
    }

    #[test]
    fn corrupt_stored_keys_fail_closed() {
        let mut s = ScramServer::with_server_nonce(Hash::Sha1, "3rfcNHYJY1ZVvWVs7j");
        s.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
            .unwrap();
        let mut keys = new_dummy_keys();
        keys.stored_key = vec![1, 2, 3];
        s.server_first(keys);
        assert_eq!(
            s.client_final(
                format!("c=biws,r={RFC5802_FINAL_NONCE},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=").as_bytes()
            ),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn conditions() {
        assert_eq!(ScramError::InvalidUtf8.condition(), "malformed-request");
        assert_eq!(
            ScramError::InvalidBase64("p").condition(),
            "incorrect-encoding"
        );
        assert_eq!(ScramError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(ScramError::NonceMismatch.condition(), "not-authorized");
        assert_eq!(ScramError::TooLong.condition(), "malformed-request");
        assert_eq!(
            ScramError::ChannelBindingNotSupported.condition(),
            "malformed-request"
        );
    }

    /// Every prefix and many single-byte mutations of valid messages must
    /// give a result, never a panic.
    #[test]
    fn no_panic_on_mangled_input() {
        let first = b"n,a=x=2Cy,n=user,r=fyko+d2lbbFgONRv9qkxdawL,e=ext".to_vec();
        let fin =
            format!("c=biws,r={RFC5802_FINAL_NONCE},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=").into_bytes();
        let replacements = [0u8, b',', b'=', b'\xff', b'\xc3', b'a', b'n', b'p', b'r'];
        let mutate = |msg: &[u8]| {
            let mut out = Vec::new();
            for len in 0..=msg.len() {
                out.push(msg[..len].to_vec());
            }
            for i in 0..msg.len() {
                for r in replacements {
                    let mut m = msg.to_vec();
                    m[i] = r;
                    out.push(m);
                }
                let mut m = msg.to_vec();
                m.remove(i);
                out.push(m);
            }
            out
        };
        for m in mutate(&first) {
            let mut s = ScramServer::new(Hash::Sha1);
            if s.client_first(&m).is_ok() {
                s.server_first(new_dummy_keys());
                let _ = s.client_final(&fin);
            }
        }
        for m in mutate(&fin) {
            let mut s = rfc5802_server();
            let _ = s.client_final(&m);
        }
        // Random bytes.
        let mut rng = rand::thread_rng();
        for _ in 0..2000 {
            let len = (rng.next_u32() % 64) as usize;
            let mut m = vec![0u8; len];
            rng.fill_bytes(&mut m);
            let mut s = ScramServer::new(Hash::Sha256);
            let _ = s.client_first(&m);
            let mut s = rfc5802_server();
            let _ = s.client_final(&m);
        }
    }

    #[test]
    fn saslname_decoding() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("=2C=3D").as_deref(), Some(",="));
        assert_eq!(decode_saslname("=2").as_deref(), None);
        assert_eq!(decode_saslname("=").as_deref(), None);
        assert_eq!(decode_saslname("a=3d").as_deref(), None);
        assert_eq!(decode_saslname("").as_deref(), None);
        assert_eq!(decode_saslname("\u{1F600}").as_deref(), Some("\u{1F600}"));
    }
}

/// Property tests: arbitrary and structured-but-hostile input to both SCRAM parsers never
/// panics, and honest exchanges with arbitrary names and passwords succeed. `PROPTEST_CASES`
/// sets the number of cases (see scripts/fuzz.sh).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Pieces a SCRAM message is made of, to reach deeper than random bytes do.
    fn soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"n,".to_vec()),
            Just(b"y,".to_vec()),
            Just(b"p=tls-unique,".to_vec()),
            Just(b"a=".to_vec()),
            Just(b"n=".to_vec()),
            Just(b"r=".to_vec()),
            Just(b"c=".to_vec()),
            Just(b"p=".to_vec()),
            Just(b"m=".to_vec()),
            Just(b"=2C".to_vec()),
            Just(b"=3D".to_vec()),
            Just(b"=".to_vec()),
            Just(b",".to_vec()),
            Just(b"biws".to_vec()),
            Just(b"\0".to_vec()),
            Just(vec![0xc3]),
            Just(vec![0xff]),
            "[a-zA-Z0-9+/=]{0,12}".prop_map(String::into_bytes),
            any::<String>().prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    fn keys() -> ScramKeys {
        static KEYS: OnceLock<ScramKeys> = OnceLock::new();
        KEYS.get_or_init(|| derive_keys(Hash::Sha256, "pw", &[7; SALT_LEN], 2).unwrap())
            .clone()
    }

    /// saslname encoding (RFC 5802 §5.1), the client's side.
    fn encode_saslname(name: &str) -> String {
        name.replace('=', "=3D").replace(',', "=2C")
    }

    proptest! {
        #[test]
        fn client_first_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ScramServer::new(Hash::Sha1).client_first(&msg);
        }

        #[test]
        fn whole_exchange_never_panics(
            first in soup(),
            last in soup(),
            known in any::<bool>(),
            sha256 in any::<bool>(),
        ) {
            let hash = if sha256 { Hash::Sha256 } else { Hash::Sha1 };
            let mut s = ScramServer::new(hash).with_unknown_user_iterations(2);
            let parsed = s.client_first(&first);
            let reply = match &parsed {
                Ok(_) if known => s.server_first(keys()),
                Ok(f) => s.server_first_unknown_user(&f.username),
                Err(_) => s.server_first(keys()),
            };
            prop_assert_eq!(parsed.is_ok(), !reply.is_empty());
            // The structured final message echoes the real nonce half the time.
            let mut fin = last.clone();
            if known && let Ok(text) = std::str::from_utf8(&reply)
                && let Some(nonce) = text.split(',').next()
            {
                fin = [b"c=biws,".as_slice(), nonce.as_bytes(), b",", &last].concat();
            }
            let out = s.client_final(&fin);
            if !known || parsed.is_err() {
                prop_assert!(out.is_err());
            }
            // Whatever happened, the exchange is over.
            prop_assert_eq!(s.client_final(&fin), Err(ScramError::OutOfOrder));
        }

        #[test]
        fn client_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut s = ScramServer::new(Hash::Sha256);
            s.client_first(b"n,,n=u,r=abc").unwrap();
            s.server_first(keys());
            let _ = s.client_final(&msg);
        }

        #[test]
        fn saslnames_round_trip(name in "[^\u{0}]{1,40}") {
            prop_assert_eq!(decode_saslname(&encode_saslname(&name)), Some(name));
        }

        #[test]
        fn honest_exchange_succeeds_and_wrong_password_fails(
            name in "[^\u{0}]{1,24}",
            nonce in "[!-+\\--~]{1,32}",
            password in "[a-zA-Z0-9 ]{1,24}",
            wrong in any::<bool>(),
        ) {
            let keys = derive_keys(Hash::Sha256, &password, &[9; SALT_LEN], 1).unwrap();
            let mut s = ScramServer::new(Hash::Sha256);
            let bare = format!("n={},r={nonce}", encode_saslname(&name));
            let first = s.client_first(format!("n,,{bare}").as_bytes()).unwrap();
            prop_assert_eq!(&first.username, &name);
            let server_first = String::from_utf8(s.server_first(keys.clone())).unwrap();
            let full_nonce = server_first.split(',').next().unwrap().to_owned();
            let without_proof = format!("c=biws,{full_nonce}");
            let auth = format!("{bare},{server_first},{without_proof}");
            let used = if wrong { format!("{password}x") } else { password.clone() };
            let (proof, _) = tests_client_proof(&used, &keys.salt, &auth);
            let out = s.client_final(format!("{without_proof},p={}", BASE64.encode(proof)).as_bytes());
            prop_assert_eq!(out.is_ok(), !wrong);
        }
    }

    fn tests_client_proof(password: &str, salt: &[u8], auth: &str) -> (Vec<u8>, Vec<u8>) {
        let hash = Hash::Sha256;
        let salted = hash.pbkdf2(password.as_bytes(), salt, 1);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.digest(&client_key);
        let signature = hash.hmac(&stored_key, &[auth.as_bytes()]);
        let proof = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        (proof, signature)
    }
}
