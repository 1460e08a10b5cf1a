//! Certificate trust per wockd user.
//!
//! libpurple decides about a legacy server's TLS certificate with its `x509`/`tls_cached`
//! verifier: a certificate found in its peer cache (`certificates/x509/tls_peers/<host>` in
//! the user dir) is trusted silently; otherwise a CA-valid one is accepted and cached, and
//! anything else is put to the user, whose "Accept" caches it. In a desktop client that cache
//! belongs to one person. Inside wockd one libpurple serves every user, so the cache would
//! let one user's "Accept" for a self-signed `irc.example` silently decide for everybody who
//! later connects there.
//!
//! So wockd puts its own verifier under that name (sslconn looks it up by name for every
//! connection) and wraps libpurple's: before each verification the peer cache is made to hold
//! exactly what the connecting account's owner trusts for that host (their file under
//! `<data>/purple/trust/<user>/`, or nothing), libpurple's verifier runs unchanged (CA checks,
//! name checks, the prompt — see `requests.rs`, which sends it to this owner only), and when it
//! ends the certificate it cached is moved into the owner's trust directory. The shared cache
//! is empty between verifications.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Transport;
use super::core;
use super::purple::certificate::{self, Certificate, Verification, peers};

/// A verification in progress: what `done` needs.
struct Pending {
    host: String,
    trust_file: PathBuf,
}

thread_local! {
    static TRUST_DIR: RefCell<PathBuf> = const { RefCell::new(PathBuf::new()) };
    /// Verifications in progress by SSL connection (the key `Verification::watch` gave).
    static PENDING: RefCell<HashMap<usize, Pending>> = RefCell::new(HashMap::new());
    /// The legacy account whose certificate is being verified right now (set while
    /// libpurple's verifier runs, so a prompt it raises can be given to that account's owner).
    static VERIFYING: Cell<Option<i64>> = const { Cell::new(None) };
}

/// The legacy account a certificate prompt raised at this moment belongs to, if known.
pub fn verifying() -> Option<i64> {
    VERIFYING.get()
}

/// Runs `f` with [`verifying`] answering `id` (for prompts raised again from an answer, such as
/// "View certificate", which re-opens the question).
pub fn as_account<R>(id: Option<i64>, f: impl FnOnce() -> R) -> R {
    let before = VERIFYING.replace(id.or(VERIFYING.get()));
    let r = f();
    VERIFYING.set(before);
    r
}

/// Puts wockd's verifier in place of libpurple's `x509`/`tls_cached` (after `purple_core_init`).
pub fn install(purple_dir: &Path) {
    TRUST_DIR.with_borrow_mut(|d| *d = purple_dir.join("trust"));
    if !certificate::install_verifier(certificate::Hooks { start, done }) {
        tracing::warn!(
            "libpurple has no x509/tls_cached verifier; TLS to legacy servers is not checked per user"
        );
    }
}

/// The legacy account an SSL connection belongs to: prpls pass their `PurpleConnection` as
/// the connection's callback data (prpl-irc, prpl-jabber and the others in Debian do).
fn account_of(data: usize) -> Option<i64> {
    let server = core::server()?;
    let t = Transport::get(&server);
    let legacy = t.legacy.borrow();
    legacy
        .values()
        .find(|l| l.account.connection().map(|c| c.addr()) == Some(data))
        .map(|l| l.id)
}

/// `<trust>/<user>/<host>.pem`, both names reduced to a safe file-name alphabet.
fn trust_file(owner: &str, host: &str) -> PathBuf {
    fn safe(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' | '@' => c.to_string(),
                _ => format!("%{:02X}", c as u32),
            })
            .collect::<String>()
            .replace("..", "%2E%2E")
    }
    TRUST_DIR.with_borrow(|d| d.join(safe(owner)).join(format!("{}.pem", safe(host))))
}

fn start(v: Verification<'_>) {
    let host = v.host();
    let owner = v.connection_data().and_then(account_of).and_then(|id| {
        let server = core::server()?;
        let t = Transport::get(&server);
        let l = t.legacy.borrow();
        l.get(&id).map(|l| (id, l.owner.to_string()))
    });
    let Some((id, owner)) = owner else {
        // Not one of ours (or a prpl that passes something else): libpurple's behaviour,
        // with an empty shared cache so no other user's decision applies.
        tracing::warn!(%host, "TLS verification for an unknown account: no stored trust used");
        if peers::contains(&host) {
            peers::delete(&host);
        }
        return v.run();
    };
    let file = trust_file(&owner, &host);
    load_into_cache(&file, &host);
    let key = v.watch();
    PENDING.with_borrow_mut(|m| {
        m.insert(
            key,
            Pending {
                host,
                trust_file: file,
            },
        )
    });
    as_account(Some(id), || v.run());
}

/// Makes libpurple's peer cache hold the owner's certificate for `host`, or none.
fn load_into_cache(file: &Path, host: &str) {
    if peers::contains(host) {
        peers::delete(host);
    }
    if !file.exists() {
        return;
    }
    let Some(crt) = Certificate::import(file) else {
        tracing::warn!(file = %file.display(), "unreadable trusted certificate; asking again");
        return;
    };
    peers::store(host, &crt);
}

/// libpurple's verdict: keep what it cached as the owner's trust and empty the shared cache
/// (the verdict then goes on to the SSL connection).
fn done(key: usize, valid: bool) {
    let Some(pending) = PENDING.with_borrow_mut(|m| m.remove(&key)) else {
        return;
    };
    if peers::contains(&pending.host) {
        if valid && let Some(crt) = peers::retrieve(&pending.host) {
            save(&pending.trust_file, &crt);
        }
        peers::delete(&pending.host);
    }
}

fn save(file: &Path, crt: &Certificate) {
    if let Some(dir) = file.parent()
        && let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    {
        tracing::error!(dir = %dir.display(), "cannot keep a trusted certificate: {e}");
        return;
    }
    if !crt.export(file) {
        tracing::error!(file = %file.display(), "cannot write a trusted certificate");
        return;
    }
    let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
}
