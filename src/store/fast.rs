//! XEP-0484 FAST tokens: per account and client (user-agent id), two slots ("new" and
//! "current", XEP-0484 §7).
//!
//! What is stored proves nothing by itself. The only mechanism offered is `HT-SHA-256-NONE`
//! (draft-schmaus-kitten-sasl-ht): the client proves the token with
//! `HMAC(token, "Initiator" || cb-data)`, and without channel binding `cb-data` is empty, so
//! that proof is the same at every login with the token. It is as good as the token itself to
//! whoever reads it, so it is not kept either: a row holds
//!
//! * `proof_hash` = SHA-256(proof). The proof is a 256-bit HMAC output (of a 192-bit random
//!   token), so a fast unsalted hash cannot be inverted or searched; a login hashes the proof
//!   it receives and compares in constant time.
//! * `responder_sealed` = `HMAC(token, "Responder")` XOR `HMAC-SHA-256(proof, SEAL_LABEL)`:
//!   the answer the server must send back (mutual authentication), recoverable only with the
//!   proof in hand, i.e. during a login with the right token.
//!
//! A channel-binding variant (`-UNIQ`, `-ENDP`, `-EXPR`) makes the proof differ per connection,
//! so the server would need the token itself; adding one means storing the token wrapped with
//! a server secret kept outside the database (a 0600 file), not this scheme.
//!
//! The first version of this table kept the proof and the responder value in clear; the
//! migration to this one ([`HASHED`]) drops those rows: such clients fall back to their
//! password once and get a new token.

use hmac::{Hmac, Mac};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Store, StoreError};

/// The first version (migration 7): proof and responder value in clear. Kept as released.
pub(super) const SCHEMA: &str = r#"
    CREATE TABLE fast_tokens (
        account    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        user_agent TEXT NOT NULL,
        slot       INTEGER NOT NULL,   -- 0 current, 1 new
        mechanism  TEXT NOT NULL,
        initiator  BLOB NOT NULL,      -- HMAC(token, "Initiator")
        responder  BLOB NOT NULL,      -- HMAC(token, "Responder")
        expires    INTEGER NOT NULL,   -- Unix time, seconds
        PRIMARY KEY (account, user_agent, slot)
    );
"#;

/// Replaces the first table by one that keeps only a hash of the proof and the sealed
/// responder value (see the module documentation). Existing tokens are dropped.
pub(super) const HASHED: &str = r#"
    DROP TABLE fast_tokens;
    CREATE TABLE fast_tokens (
        account          INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        user_agent       TEXT NOT NULL,
        slot             INTEGER NOT NULL,   -- 0 current, 1 new
        mechanism        TEXT NOT NULL,
        proof_hash       BLOB NOT NULL,      -- SHA-256(HMAC(token, "Initiator"))
        responder_sealed BLOB NOT NULL,      -- HMAC(token, "Responder") XOR seal(proof)
        expires          INTEGER NOT NULL,   -- Unix time, seconds
        PRIMARY KEY (account, user_agent, slot)
    );
"#;

const SEAL_LABEL: &[u8] = b"wockd FAST responder seal";

fn proof_hash(proof: &[u8]) -> Vec<u8> {
    Sha256::digest(proof).to_vec()
}

/// XORs `data` with a keystream derived from the proof:
/// `HMAC-SHA-256(proof, SEAL_LABEL || i)` for blocks i = 0, 1, … Sealing and unsealing are
/// the same operation.
fn seal(proof: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, chunk) in data.chunks(32).enumerate() {
        // HMAC takes keys of any length; should that ever fail, the output is short and the
        // responder value wrong: the client refuses it (fail closed).
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(proof) else {
            break;
        };
        mac.update(SEAL_LABEL);
        mac.update(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
        let pad = mac.finalize().into_bytes();
        out.extend(chunk.iter().zip(pad.iter()).map(|(d, p)| d ^ p));
    }
    out
}

fn account(store: &Store, user: &str, domain: &str) -> Result<i64, StoreError> {
    store
        .account_id(user, domain)?
        .ok_or(StoreError::NoSuchAccount)
}

/// Puts a fresh token into the "new" slot (replacing an unused one). `initiator` is
/// `HMAC(token, "Initiator")` (what the client will prove it with), `responder` is
/// `HMAC(token, "Responder")`; neither is stored as such.
#[allow(clippy::too_many_arguments)]
pub fn store_new(
    store: &Store,
    user: &str,
    domain: &str,
    user_agent: &str,
    mechanism: &str,
    initiator: &[u8],
    responder: &[u8],
    expires: i64,
) -> Result<(), StoreError> {
    let id = account(store, user, domain)?;
    let row = NewToken::new(id, user_agent, mechanism, initiator, responder, expires);
    row.insert(store.conn())
}

/// A token for the "new" slot, in the form it is stored (see the module documentation):
/// owned, so that a write job on the store's writer thread can carry it.
#[derive(Clone, Debug)]
pub struct NewToken {
    account: i64,
    user_agent: String,
    mechanism: String,
    proof_hash: Vec<u8>,
    sealed: Vec<u8>,
    expires: i64,
}

impl NewToken {
    /// See [`store_new`] for `initiator` and `responder`.
    pub fn new(
        account: i64,
        user_agent: &str,
        mechanism: &str,
        initiator: &[u8],
        responder: &[u8],
        expires: i64,
    ) -> NewToken {
        NewToken {
            account,
            user_agent: user_agent.to_owned(),
            mechanism: mechanism.to_owned(),
            proof_hash: proof_hash(initiator),
            sealed: seal(initiator, responder),
            expires,
        }
    }

    /// Puts it into the "new" slot (replacing an unused one), on any connection (the writer
    /// thread's, inside its batch).
    pub fn insert(&self, conn: &rusqlite::Connection) -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO fast_tokens
             (account, user_agent, slot, mechanism, proof_hash, responder_sealed, expires)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            self.account,
            self.user_agent,
            self.mechanism,
            self.proof_hash,
            self.sealed,
            self.expires
        ])?;
        Ok(())
    }
}

/// A proof that [`check`] accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The responder value for the client.
    pub responder: Vec<u8>,
    /// The account's row id.
    pub account: i64,
    /// The token was in the "new" slot: [`promote`] it.
    pub promote: bool,
}

/// Checks a proof; on success returns the responder value and promotes a "new" token to
/// "current" (which invalidates the older one).
pub fn verify(
    store: &Store,
    user: &str,
    domain: &str,
    user_agent: &str,
    mechanism: &str,
    proof: &[u8],
    now: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(ok) = check(store, user, domain, user_agent, mechanism, proof, now)? else {
        return Ok(None);
    };
    if ok.promote {
        store.transaction(|tx| promote(tx, ok.account, user_agent))?;
    }
    Ok(Some(ok.responder))
}

/// Checks a proof without writing anything; a token accepted from the "new" slot is to be
/// [`promote`]d (the caller queues that for the store's writer).
pub fn check(
    store: &Store,
    user: &str,
    domain: &str,
    user_agent: &str,
    mechanism: &str,
    proof: &[u8],
    now: i64,
) -> Result<Option<Accepted>, StoreError> {
    let Some(id) = store.account_id(user, domain)? else {
        return Ok(None);
    };
    let hash = proof_hash(proof);
    for slot in [1, 0] {
        let row: Option<(String, Vec<u8>, Vec<u8>, i64)> = store
            .conn()
            .prepare_cached(
                "SELECT mechanism, proof_hash, responder_sealed, expires FROM fast_tokens
                 WHERE account = ?1 AND user_agent = ?2 AND slot = ?3",
            )?
            .query_row(params![id, user_agent, slot], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((mech, stored_hash, sealed, expires)) = row else {
            continue;
        };
        if mech != mechanism || expires < now || !bool::from(stored_hash.ct_eq(&hash)) {
            continue;
        }
        return Ok(Some(Accepted {
            responder: seal(proof, &sealed),
            account: id,
            promote: slot == 1,
        }));
    }
    Ok(None)
}

/// Makes the client's "new" token its "current" one, dropping the older one; on any
/// connection (the writer thread's, inside its batch). Nothing happens when the "new" slot
/// is empty (already promoted).
pub fn promote(
    conn: &rusqlite::Connection,
    account: i64,
    user_agent: &str,
) -> Result<(), StoreError> {
    let new: bool = conn
        .prepare_cached(
            "SELECT count(*) > 0 FROM fast_tokens
             WHERE account = ?1 AND user_agent = ?2 AND slot = 1",
        )?
        .query_row(params![account, user_agent], |r| r.get(0))?;
    if !new {
        return Ok(());
    }
    conn.prepare_cached(
        "DELETE FROM fast_tokens WHERE account = ?1 AND user_agent = ?2 AND slot = 0",
    )?
    .execute(params![account, user_agent])?;
    conn.prepare_cached(
        "UPDATE fast_tokens SET slot = 0 WHERE account = ?1 AND user_agent = ?2 AND slot = 1",
    )?
    .execute(params![account, user_agent])?;
    Ok(())
}

/// Forgets every token of a client (`<fast invalidate='true'/>`).
pub fn invalidate(
    store: &Store,
    user: &str,
    domain: &str,
    user_agent: &str,
) -> Result<(), StoreError> {
    let id = account(store, user, domain)?;
    forget_client(store.conn(), id, user_agent)
}

/// [`invalidate`] by account row id, on any connection (the writer thread's, inside its batch).
pub fn forget_client(
    conn: &rusqlite::Connection,
    account: i64,
    user_agent: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM fast_tokens WHERE account = ?1 AND user_agent = ?2")?
        .execute(params![account, user_agent])?;
    Ok(())
}

/// Forgets every token of an account (its password changed, see `Store::set_keys`, which
/// does the same in its transaction).
pub fn revoke_all(store: &Store, user: &str, domain: &str) -> Result<(), StoreError> {
    let Some(id) = store.account_id(user, domain)? else {
        return Ok(());
    };
    forget_account(store.conn(), id)
}

/// [`revoke_all`] by account row id, on any connection.
pub fn forget_account(conn: &rusqlite::Connection, account: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM fast_tokens WHERE account = ?1")?
        .execute(params![account])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{Hash, new_keys};

    const MECH: &str = "HT-SHA-256-NONE";

    fn store() -> Store {
        let s = Store::open_in_memory().unwrap();
        let keys = vec![(Hash::Sha256, new_keys(Hash::Sha256, "pw", 16).unwrap())];
        s.create_account("alice", "localhost", &keys).unwrap();
        s
    }

    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    #[test]
    fn tokens_verify_but_are_not_stored() {
        let s = store();
        let token = b"the-token-value-24-bytes";
        let (init, resp) = (hmac(token, b"Initiator"), hmac(token, b"Responder"));
        store_new(&s, "alice", "localhost", "ua", MECH, &init, &resp, 100).unwrap();

        // Nothing in the row equals (or contains) the token, the proof or the responder.
        let (h, sealed): (Vec<u8>, Vec<u8>) = s
            .conn()
            .query_row(
                "SELECT proof_hash, responder_sealed FROM fast_tokens",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        for secret in [&token[..], &init, &resp] {
            for col in [&h, &sealed] {
                assert!(!col.windows(secret.len()).any(|w| w == secret));
            }
        }

        assert_eq!(
            verify(&s, "alice", "localhost", "ua", MECH, &resp, 50).unwrap(),
            None
        );
        assert_eq!(
            verify(&s, "alice", "localhost", "other", MECH, &init, 50).unwrap(),
            None
        );
        assert_eq!(
            verify(&s, "alice", "localhost", "ua", "HT-SHA-256-UNIQ", &init, 50).unwrap(),
            None
        );
        assert_eq!(
            verify(&s, "alice", "localhost", "ua", MECH, &init, 101).unwrap(),
            None
        );
        assert_eq!(
            verify(&s, "alice", "localhost", "ua", MECH, &init, 50).unwrap(),
            Some(resp.clone())
        );
        // Promoted to "current": still valid.
        assert_eq!(
            verify(&s, "alice", "localhost", "ua", MECH, &init, 50).unwrap(),
            Some(resp)
        );
        revoke_all(&s, "alice", "localhost").unwrap();
        assert_eq!(
            verify(&s, "alice", "localhost", "ua", MECH, &init, 50).unwrap(),
            None
        );
    }

    #[test]
    fn password_change_revokes_tokens() {
        let s = store();
        let init = hmac(b"t", b"Initiator");
        store_new(&s, "alice", "localhost", "ua", MECH, &init, &[7; 32], 100).unwrap();
        let keys = vec![(Hash::Sha256, new_keys(Hash::Sha256, "new", 16).unwrap())];
        s.set_keys("alice", "localhost", &keys).unwrap();
        assert_eq!(
            verify(&s, "alice", "localhost", "ua", MECH, &init, 50).unwrap(),
            None
        );
    }

    #[test]
    fn seal_round_trip() {
        let proof = [3u8; 32];
        for len in [0, 1, 32, 33, 70] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = seal(&proof, &data);
            assert_eq!(sealed.len(), len);
            if len > 0 {
                assert_ne!(sealed, data);
                assert_ne!(seal(&[4u8; 32], &sealed), data);
            }
            assert_eq!(seal(&proof, &sealed), data);
        }
    }
}
