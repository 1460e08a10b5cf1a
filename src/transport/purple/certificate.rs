//! Certificates: wockd's verifier in place of libpurple's `x509`/`tls_cached` (wrapping it),
//! the `x509`/`tls_peers` cache, and certificate files.
//!
//! Ownership: libpurple's original verifier is a static inside libpurple and ours is leaked,
//! so both outlive every connection. A `PurpleCertificateVerificationRequest` is libpurple's,
//! alive from `start_verification` until `destroy_request`; a [`Verification`] borrows it for
//! the `start` hook only. The SSL connection (the request's `cb_data`) is alive until the
//! verification completes; we keep its address (as the key of the verdict callback we stand
//! in for) until then. A [`Certificate`] is ours and destroyed on drop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_char;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

use purple_sys as p;

use super::ffi::{cstring, guard, string};

/// libpurple's own `tls_cached` verifier, which ours wraps.
static ORIGINAL: AtomicPtr<p::PurpleCertificateVerifier> = AtomicPtr::new(std::ptr::null_mut());

/// The verifier hooks, as safe functions.
#[derive(Clone, Copy)]
pub struct Hooks {
    /// A verification starts; the hook must run libpurple's verifier
    /// ([`Verification::run`]) — or let it go, which fails the connection.
    pub start: for<'a> fn(Verification<'a>),
    /// A watched verification ([`Verification::watch`]) has its verdict (`key`, valid): the
    /// hook runs before the verdict goes on to the SSL connection.
    pub done: fn(usize, bool),
}

thread_local! {
    static HOOKS: Cell<Option<Hooks>> = const { Cell::new(None) };
    /// Verdict callbacks we stand in for, by SSL connection.
    static WATCHED: RefCell<HashMap<usize, p::PurpleCertificateVerifiedCallback>> =
        RefCell::new(HashMap::new());
}

/// Puts wockd's verifier in place of libpurple's `x509`/`tls_cached` (after
/// `purple_core_init`); false if libpurple has none.
pub fn install_verifier(hooks: Hooks) -> bool {
    HOOKS.set(Some(hooks));
    // SAFETY: main thread, libpurple initialised. See the module's ownership note.
    unsafe {
        let orig = p::purple_certificate_find_verifier(c"x509".as_ptr(), c"tls_cached".as_ptr());
        if orig.is_null() {
            return false;
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
    true
}

/// A verification being started (borrowed for the `start` hook).
pub struct Verification<'a> {
    vrq: *mut p::PurpleCertificateVerificationRequest,
    _call: PhantomData<&'a ()>,
}

impl Verification<'_> {
    /// The host name the certificate must match.
    pub fn host(&self) -> String {
        // SAFETY: the live request (see the module's ownership note); copied.
        string(unsafe { (*self.vrq).subject_name })
    }

    /// The SSL connection's callback data: prpls pass their `PurpleConnection` (prpl-irc,
    /// prpl-jabber and the others in Debian do), to compare with `Connection::addr`.
    pub fn connection_data(&self) -> Option<usize> {
        // SAFETY: the live request; its cb_data is the SSL connection being verified.
        unsafe {
            let gsc = (*self.vrq).cb_data as *mut p::PurpleSslConnection;
            (!gsc.is_null()).then(|| (*gsc).connect_cb_data as usize)
        }
    }

    /// Has the verdict pass through the `done` hook first; returns its key.
    pub fn watch(&self) -> usize {
        // SAFETY: the live request; we keep its verdict callback and stand in for it
        // (`done` below passes the verdict on).
        unsafe {
            let key = (*self.vrq).cb_data as usize;
            WATCHED.with_borrow_mut(|m| m.insert(key, (*self.vrq).cb));
            (*self.vrq).cb = Some(done);
            key
        }
    }

    /// Runs libpurple's verifier on the request (or fails it if there is none).
    pub fn run(self) {
        let orig = ORIGINAL.load(Ordering::Acquire);
        // SAFETY: `orig` was set before our verifier was registered; the request is live.
        unsafe {
            match (*orig).start_verification {
                Some(f) => f(self.vrq),
                None => {
                    p::purple_certificate_verify_complete(self.vrq, p::PURPLE_CERTIFICATE_INVALID)
                }
            }
        }
    }
}

unsafe extern "C" fn start(vrq: *mut p::PurpleCertificateVerificationRequest) {
    guard("start", (), || {
        let Some(hooks) = HOOKS.get() else { return };
        let orig = ORIGINAL.load(Ordering::Acquire);
        // SAFETY: `orig` was set before we were registered; the request is live.
        if unsafe { (*orig).start_verification }.is_none() {
            // SAFETY: the live request, completed once.
            return unsafe {
                p::purple_certificate_verify_complete(vrq, p::PURPLE_CERTIFICATE_INVALID)
            };
        }
        (hooks.start)(Verification {
            vrq,
            _call: PhantomData,
        })
    })
}

/// libpurple's verdict on a watched verification: the `done` hook, then the SSL connection.
unsafe extern "C" fn done(status: p::PurpleCertificateVerificationStatus, gsc: p::gpointer) {
    guard("done", (), || {
        let Some(cb) = WATCHED.with_borrow_mut(|m| m.remove(&(gsc as usize))) else {
            return;
        };
        if let Some(hooks) = HOOKS.get() {
            (hooks.done)(gsc as usize, status == p::PURPLE_CERTIFICATE_VALID);
        }
        if let Some(cb) = cb {
            // SAFETY: the live SSL connection libpurple is completing the request for, with
            // the callback it set.
            unsafe { cb(status, gsc) };
        }
    })
}

unsafe extern "C" fn destroy(vrq: *mut p::PurpleCertificateVerificationRequest) {
    guard("destroy", (), || {
        let orig = ORIGINAL.load(Ordering::Acquire);
        // SAFETY: the request libpurple is destroying; the original verifier's own clean-up.
        unsafe {
            if let Some(d) = (*orig).destroy_request {
                d(vrq);
            }
        }
    })
}

/// A certificate of ours (destroyed on drop).
pub struct Certificate(*mut p::PurpleCertificate);

impl Drop for Certificate {
    fn drop(&mut self) {
        // SAFETY: ours (imported or retrieved), destroyed once.
        unsafe { p::purple_certificate_destroy(self.0) };
    }
}

impl Certificate {
    /// Reads an X.509 certificate file.
    pub fn import(file: &Path) -> Option<Certificate> {
        let path = cstring(&file.to_string_lossy());
        // SAFETY: main thread; the scheme is static; the certificate returned is ours.
        unsafe {
            let scheme = p::purple_certificate_find_scheme(c"x509".as_ptr());
            if scheme.is_null() {
                return None;
            }
            let crt = p::purple_certificate_import(scheme, path.as_ptr());
            (!crt.is_null()).then_some(Certificate(crt))
        }
    }

    /// Writes the certificate to `file`; false on failure.
    pub fn export(&self, file: &Path) -> bool {
        let path = cstring(&file.to_string_lossy());
        // SAFETY: a live certificate of ours; libpurple writes the file.
        unsafe { p::purple_certificate_export(path.as_ptr() as *const c_char, self.0) != 0 }
    }
}

/// libpurple's peer-certificate cache (`x509`/`tls_peers`).
pub mod peers {
    use super::*;

    fn pool() -> *mut p::PurpleCertificatePool {
        // SAFETY: main thread; pools live as long as libpurple.
        unsafe { p::purple_certificate_find_pool(c"x509".as_ptr(), c"tls_peers".as_ptr()) }
    }

    pub fn contains(host: &str) -> bool {
        let h = cstring(host);
        // SAFETY: main thread; a static pool; the id is copied.
        unsafe { p::purple_certificate_pool_contains(pool(), h.as_ptr()) != 0 }
    }

    pub fn delete(host: &str) {
        let h = cstring(host);
        // SAFETY: as in `contains`.
        unsafe { p::purple_certificate_pool_delete(pool(), h.as_ptr()) };
    }

    /// Stores a copy of `crt` for `host`.
    pub fn store(host: &str, crt: &Certificate) {
        let h = cstring(host);
        // SAFETY: main thread; the pool copies what it stores.
        unsafe { p::purple_certificate_pool_store(pool(), h.as_ptr(), crt.0) };
    }

    /// A copy of the certificate stored for `host`.
    pub fn retrieve(host: &str) -> Option<Certificate> {
        let h = cstring(host);
        // SAFETY: main thread; the certificate retrieved is ours to destroy.
        let crt = unsafe { p::purple_certificate_pool_retrieve(pool(), h.as_ptr()) };
        (!crt.is_null()).then_some(Certificate(crt))
    }
}
