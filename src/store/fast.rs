//! XEP-0484 FAST tokens: per account and client (user-agent id), two slots ("new" and
//! "current", XEP-0484 §7). Only HMAC(token, "Initiator") and HMAC(token, "Responder") are
//! kept, never the token.

use rusqlite::{OptionalExtension, params};
use subtle::ConstantTimeEq;

use super::{Store, StoreError};

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

fn account(store: &Store, user: &str, domain: &str) -> Result<i64, StoreError> {
    store
        .account_id(user, domain)?
        .ok_or(StoreError::NoSuchAccount)
}

/// Puts a fresh token into the "new" slot (replacing an unused one).
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
    store.conn().execute(
        "INSERT OR REPLACE INTO fast_tokens VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
        params![id, user_agent, mechanism, initiator, responder, expires],
    )?;
    Ok(())
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
    let Some(id) = store.account_id(user, domain)? else {
        return Ok(None);
    };
    for slot in [1, 0] {
        let row: Option<(String, Vec<u8>, Vec<u8>, i64)> = store
            .conn()
            .prepare_cached(
                "SELECT mechanism, initiator, responder, expires FROM fast_tokens
                 WHERE account = ?1 AND user_agent = ?2 AND slot = ?3",
            )?
            .query_row(params![id, user_agent, slot], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((mech, initiator, responder, expires)) = row else {
            continue;
        };
        if mech != mechanism || expires < now || !bool::from(initiator.ct_eq(proof)) {
            continue;
        }
        if slot == 1 {
            store.transaction(|tx| {
                tx.execute(
                    "DELETE FROM fast_tokens WHERE account = ?1 AND user_agent = ?2 AND slot = 0",
                    params![id, user_agent],
                )?;
                tx.execute(
                    "UPDATE fast_tokens SET slot = 0 WHERE account = ?1 AND user_agent = ?2 AND slot = 1",
                    params![id, user_agent],
                )?;
                Ok::<_, StoreError>(())
            })?;
        }
        return Ok(Some(responder));
    }
    Ok(None)
}

/// Forgets every token of a client (`<fast invalidate='true'/>`).
pub fn invalidate(
    store: &Store,
    user: &str,
    domain: &str,
    user_agent: &str,
) -> Result<(), StoreError> {
    let id = account(store, user, domain)?;
    store.conn().execute(
        "DELETE FROM fast_tokens WHERE account = ?1 AND user_agent = ?2",
        params![id, user_agent],
    )?;
    Ok(())
}
