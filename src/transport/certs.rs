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
use std::ffi::c_char;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

use purple_sys as p;

use super::Transport;
use super::core;
use super::ffi::{cstring, string};

/// libpurple's own `tls_cached` verifier, which ours wraps (static in libpurple: lives as long
/// as the process).
static ORIGINAL: AtomicPtr<p::PurpleCertificateVerifier> = AtomicPtr::new(std::ptr::null_mut());

/// A verification in progress: what `done` needs.
struct Pending {
    cb: p::PurpleCertificateVerifiedCallback,
    host: String,
    trust_file: PathBuf,
}

thread_local! {
    static TRUST_DIR: RefCell<PathBuf> = const { RefCell::new(PathBuf::new()) };
    /// Verifications in progress by SSL connection (the request's `cb_data`, kept as is so
    /// that libpurple can still close the prompt with the connection).
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
    // SAFETY: main thread, libpurple initialised. The original verifier is a static inside
    // libpurple; ours is leaked, so both outlive every connection.
    unsafe {
        let orig = p::purple_certificate_find_verifier(c"x509".as_ptr(), c"tls_cached".as_ptr());
        if orig.is_null() {
            tracing::warn!(
                "libpurple has no x509/tls_cached verifier; TLS to legacy servers is not checked per user"
            );
            return;
        }
        p::purple_certificate_unregister_verifier(orig);
        ORIGINAL.store(orig, Ordering::Release);
        let ours = Box::leak(Box::new(p::PurpleCertificateVerifier {
            scheme_name: (*orig).scheme_name,
            name: (*orig).name,
            start_verification: Some(start),
            destroy_request: Some(destroy),
            ..Default::default()
        }));
        p::purple_certificate_register_verifier(ours);
    }
}

fn peers_pool() -> *mut p::PurpleCertificatePool {
    // SAFETY: main thread; pools live as long as libpurple.
    unsafe { p::purple_certificate_find_pool(c"x509".as_ptr(), c"tls_peers".as_ptr()) }
}

/// The legacy account an SSL connection belongs to: prpls pass their `PurpleConnection` as
/// the connection's callback data (prpl-irc, prpl-jabber and the others in Debian do).
fn account_of(gsc: *mut p::PurpleSslConnection) -> Option<i64> {
    let server = core::server()?;
    if gsc.is_null() {
        return None;
    }
    // SAFETY: `gsc` is the live SSL connection being verified.
    let data = unsafe { (*gsc).connect_cb_data };
    let t = Transport::get(&server);
    let legacy = t.legacy.borrow();
    legacy
        .values()
        // SAFETY: accounts in the table are live.
        .find(|l| unsafe { p::purple_account_get_connection(l.account) } as *mut _ == data)
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

unsafe extern "C" fn start(vrq: *mut p::PurpleCertificateVerificationRequest) {
    super::ffi::guard("start", (), || {
        let orig = ORIGINAL.load(Ordering::Acquire);
        // SAFETY: libpurple hands a live request; `orig` was set before we were registered.
        unsafe {
            let Some(orig_start) = (*orig).start_verification else {
                return p::purple_certificate_verify_complete(vrq, p::PURPLE_CERTIFICATE_INVALID);
            };
            let gsc = (*vrq).cb_data as *mut p::PurpleSslConnection;
            let host = string((*vrq).subject_name);
            let owner = account_of(gsc).and_then(|id| {
                let server = core::server()?;
                let t = Transport::get(&server);
                let l = t.legacy.borrow();
                l.get(&id).map(|l| (id, l.owner.to_string()))
            });
            let Some((id, owner)) = owner else {
                // Not one of ours (or a prpl that passes something else): libpurple's behaviour,
                // with an empty shared cache so no other user's decision applies.
                tracing::warn!(%host, "TLS verification for an unknown account: no stored trust used");
                let pool = peers_pool();
                let h = cstring(&host);
                if p::purple_certificate_pool_contains(pool, h.as_ptr()) != 0 {
                    p::purple_certificate_pool_delete(pool, h.as_ptr());
                }
                return orig_start(vrq);
            };
            let file = trust_file(&owner, &host);
            load_into_cache(&file, &host);
            PENDING.with_borrow_mut(|m| {
                m.insert(
                    gsc as usize,
                    Pending {
                        cb: (*vrq).cb,
                        host,
                        trust_file: file,
                    },
                )
            });
            (*vrq).cb = Some(done);
            as_account(Some(id), || orig_start(vrq));
        }
    })
}

/// Makes libpurple's peer cache hold the owner's certificate for `host`, or none.
fn load_into_cache(file: &Path, host: &str) {
    let pool = peers_pool();
    let h = cstring(host);
    // SAFETY: main thread; the pool copies what it stores; the imported certificate is ours
    // to destroy.
    unsafe {
        if p::purple_certificate_pool_contains(pool, h.as_ptr()) != 0 {
            p::purple_certificate_pool_delete(pool, h.as_ptr());
        }
        if !file.exists() {
            return;
        }
        let scheme = p::purple_certificate_find_scheme(c"x509".as_ptr());
        let path = cstring(&file.to_string_lossy());
        let crt = if scheme.is_null() {
            std::ptr::null_mut()
        } else {
            p::purple_certificate_import(scheme, path.as_ptr())
        };
        if crt.is_null() {
            tracing::warn!(file = %file.display(), "unreadable trusted certificate; asking again");
            return;
        }
        p::purple_certificate_pool_store(pool, h.as_ptr(), crt);
        p::purple_certificate_destroy(crt);
    }
}

/// libpurple's verdict: keep what it cached as the owner's trust, empty the shared cache,
/// and pass the verdict on to the SSL connection.
unsafe extern "C" fn done(status: p::PurpleCertificateVerificationStatus, gsc: p::gpointer) {
    super::ffi::guard("done", (), || {
        let Some(pending) = PENDING.with_borrow_mut(|m| m.remove(&(gsc as usize))) else {
            return;
        };
        let pool = peers_pool();
        let h = cstring(&pending.host);
        // SAFETY: main thread; the certificate retrieved is ours to destroy; `gsc` is the live SSL
        // connection libpurple is completing the request for.
        unsafe {
            if p::purple_certificate_pool_contains(pool, h.as_ptr()) != 0 {
                if status == p::PURPLE_CERTIFICATE_VALID {
                    let crt = p::purple_certificate_pool_retrieve(pool, h.as_ptr());
                    if !crt.is_null() {
                        save(&pending.trust_file, crt);
                        p::purple_certificate_destroy(crt);
                    }
                }
                p::purple_certificate_pool_delete(pool, h.as_ptr());
            }
            if let Some(cb) = pending.cb {
                cb(status, gsc);
            }
        }
    })
}

fn save(file: &Path, crt: *mut p::PurpleCertificate) {
    if let Some(dir) = file.parent()
        && let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    {
        tracing::error!(dir = %dir.display(), "cannot keep a trusted certificate: {e}");
        return;
    }
    let path = cstring(&file.to_string_lossy());
    // SAFETY: live certificate; libpurple writes the file.
    if unsafe { p::purple_certificate_export(path.as_ptr() as *const c_char, crt) } == 0 {
        tracing::error!(file = %file.display(), "cannot write a trusted certificate");
        return;
    }
    let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
}

unsafe extern "C" fn destroy(vrq: *mut p::PurpleCertificateVerificationRequest) {
    super::ffi::guard("destroy", (), || {
        let orig = ORIGINAL.load(Ordering::Acquire);
        // SAFETY: the request libpurple is destroying; the original verifier's own clean-up.
        unsafe {
            if let Some(d) = (*orig).destroy_request {
                d(vrq);
            }
        }
    })
}
