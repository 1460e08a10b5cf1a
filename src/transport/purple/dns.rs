//! libpurple's DNS through GIO's asynchronous resolver (no forked helper), and no SRV/TXT
//! lookups.
//!
//! Ownership: a `PurpleDnsQueryData`/`PurpleSrvTxtQueryData` belongs to libpurple; we keep its
//! address as a key while it is pending (from the resolve ui-op until libpurple destroys it
//! or we answer) and call back with it only while the key is still in our table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use gio::prelude::*;
use glib::ffi as g;
use purple_sys as p;

use super::ffi::{cstring, guard, string};

/// Keeps the addresses of `host` an account may connect to, or says why none.
pub type Filter = fn(&str, Vec<IpAddr>) -> Result<Vec<IpAddr>, String>;

thread_local! {
    /// Pending DNS queries (PurpleDnsQueryData pointer → cancellable).
    static DNS: RefCell<HashMap<usize, gio::Cancellable>> = RefCell::new(HashMap::new());
    /// Pending SRV/TXT queries (PurpleSrvTxtQueryData pointer → still wanted).
    static SRV: RefCell<std::collections::HashSet<usize>> = RefCell::new(Default::default());
    static FILTER: std::cell::Cell<Option<Filter>> = const { std::cell::Cell::new(None) };
}

/// The ui-ops structs for `purple_dnsquery_set_ui_ops` and `purple_srv_txt_query_set_ui_ops`
/// (leaked: libpurple keeps them); answers go through `filter`.
pub(super) fn ui_ops(
    filter: Filter,
) -> (
    &'static mut p::PurpleDnsQueryUiOps,
    &'static mut p::PurpleSrvTxtQueryUiOps,
) {
    FILTER.set(Some(filter));
    (
        Box::leak(Box::new(p::PurpleDnsQueryUiOps {
            resolve_host: Some(dns_resolve),
            destroy: Some(dns_destroy),
            ..Default::default()
        })),
        Box::leak(Box::new(p::PurpleSrvTxtQueryUiOps {
            resolve: Some(srv_resolve),
            destroy: Some(srv_destroy),
            ..Default::default()
        })),
    )
}

unsafe extern "C" fn dns_resolve(
    q: *mut p::PurpleDnsQueryData,
    resolved: p::PurpleDnsQueryResolvedCallback,
    failed: p::PurpleDnsQueryFailedCallback,
) -> p::gboolean {
    guard("dns_resolve", g::GTRUE, || {
        // Never answer FALSE: libpurple would then fork a resolver of its own, which neither
        // stays off the main loop's thread nor applies the address rule.
        let started = guard("dns_resolve lookup", Err(()), || {
            start_lookup(q, resolved, failed)
        });
        if started.is_err() {
            fail_query(q, failed, "internal error while resolving");
        }
        g::GTRUE
    })
}

fn fail_query(q: *mut p::PurpleDnsQueryData, failed: p::PurpleDnsQueryFailedCallback, msg: &str) {
    DNS.with(|d| d.borrow_mut().remove(&(q as usize)));
    let c = cstring(msg);
    if let Some(cb) = failed {
        // SAFETY: the query is pending (not destroyed); libpurple copies the message and then
        // destroys the query (our dns_destroy finds nothing left to cancel).
        unsafe { cb(q, c.as_ptr()) };
    }
}

/// Starts the lookup of a libpurple DNS query on GIO's resolver; the answer keeps only the
/// addresses the account may connect to (the [`Filter`]).
fn start_lookup(
    q: *mut p::PurpleDnsQueryData,
    resolved: p::PurpleDnsQueryResolvedCallback,
    failed: p::PurpleDnsQueryFailedCallback,
) -> Result<(), ()> {
    // SAFETY: q is a live query; libpurple owns the host string. (The port is a C
    // `unsigned short`: no conversion can fail.)
    let (host, port): (String, u16) = unsafe {
        (
            string(p::purple_dnsquery_get_host(q)),
            p::purple_dnsquery_get_port(q),
        )
    };
    let cancel = gio::Cancellable::new();
    DNS.with(|d| d.borrow_mut().insert(q as usize, cancel.clone()));
    let key = q as usize;
    let name = host.clone();
    gio::Resolver::default().lookup_by_name_async(&name, Some(&cancel), move |res| {
        guard("dns answer", (), move || {
            // Destroyed (cancelled) meanwhile: libpurple no longer wants an answer.
            if DNS.with(|d| d.borrow().get(&key).is_none()) {
                return;
            }
            let q = key as *mut p::PurpleDnsQueryData;
            let addrs: Vec<IpAddr> = match res {
                Ok(addrs) => addrs
                    .iter()
                    .filter_map(|a| a.to_string().parse().ok())
                    .collect(),
                Err(e) => return fail_query(q, failed, &format!("cannot resolve {host}: {e}")),
            };
            if addrs.is_empty() {
                return fail_query(q, failed, &format!("cannot resolve {host}: no addresses"));
            }
            let filter = FILTER.get().unwrap_or(|_, a| Ok(a));
            match filter(&host, addrs) {
                Ok(ok) => {
                    DNS.with(|d| d.borrow_mut().remove(&key));
                    let list = hosts_list(&ok, port);
                    if let Some(cb) = resolved {
                        // SAFETY: libpurple takes ownership of the list (proxy.c frees it).
                        unsafe { cb(q, list) };
                    }
                }
                Err(why) => {
                    tracing::warn!(%host, "{why}");
                    fail_query(q, failed, &why)
                }
            }
        })
    });
    Ok(())
}

unsafe extern "C" fn dns_destroy(q: *mut p::PurpleDnsQueryData) {
    guard("dns_destroy", (), || {
        if let Some(c) = DNS.with(|d| d.borrow_mut().remove(&(q as usize))) {
            c.cancel();
        }
    })
}

/// SRV/TXT lookups: libpurple would fork a resolver child. We answer "no records" (on the
/// next loop turn: libpurple must first store the query handle), so prpl-jabber connects to
/// the domain itself on the default port; `connect_server` in the account settings covers
/// servers that need SRV. (TODO: real SRV through `g_resolver_lookup_service_async`.)
unsafe extern "C" fn srv_resolve(
    q: *mut p::PurpleSrvTxtQueryData,
    _resolved: p::PurpleSrvTxtQueryResolvedCallback,
    failed: p::PurpleSrvTxtQueryFailedCallback,
) -> p::gboolean {
    guard("srv_resolve", g::GTRUE, || {
        let key = q as usize;
        SRV.with(|s| s.borrow_mut().insert(key));
        crate::net::source::idle_once(move || {
            guard("srv answer", (), || {
                if !SRV.with(|s| s.borrow_mut().remove(&key)) {
                    return;
                }
                let msg = cstring("SRV lookups are not used; connecting to the domain directly");
                if let Some(cb) = failed {
                    // SAFETY: the query is still pending (not destroyed); libpurple copies the text.
                    unsafe { cb(key as *mut p::PurpleSrvTxtQueryData, msg.as_ptr()) };
                }
            })
        });
        g::GTRUE
    })
}

unsafe extern "C" fn srv_destroy(q: *mut p::PurpleSrvTxtQueryData) {
    guard("srv_destroy", (), || {
        SRV.with(|s| s.borrow_mut().remove(&(q as usize)));
    })
}

/// dnsquery.h's result format: a GSList of alternating (address length, `struct sockaddr *`)
/// entries, all g_malloc'd.
fn hosts_list(addrs: &[IpAddr], port: u16) -> *mut p::GSList {
    let mut list: *mut g::GSList = std::ptr::null_mut();
    for ip in addrs {
        let (mem, len) = match *ip {
            IpAddr::V4(v4) => {
                // SAFETY: zeroed sockaddr_in, then filled field by field.
                let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = port.to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                (
                    copy_to_gmalloc(&sin),
                    std::mem::size_of::<libc::sockaddr_in>(),
                )
            }
            IpAddr::V6(v6) => {
                // SAFETY: as above.
                let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = port.to_be();
                sin6.sin6_addr.s6_addr = v6.octets();
                (
                    copy_to_gmalloc(&sin6),
                    std::mem::size_of::<libc::sockaddr_in6>(),
                )
            }
        };
        // SAFETY: appending to a list we own; GINT_TO_POINTER(len) as libpurple expects.
        unsafe {
            list = g::g_slist_append(list, len as g::gpointer);
            list = g::g_slist_append(list, mem);
        }
    }
    list as *mut p::GSList
}

fn copy_to_gmalloc<T>(v: &T) -> g::gpointer {
    let n = std::mem::size_of::<T>();
    // SAFETY: g_malloc(n) then a byte copy of a plain-old-data struct.
    unsafe {
        let mem = g::g_malloc(n);
        std::ptr::copy_nonoverlapping(v as *const T as *const u8, mem as *mut u8, n);
        mem
    }
}

/// `host` as a numeric address, parsed with `getaddrinfo(AI_NUMERICHOST)` like `dnsquery.c`
/// does, so every spelling the C library accepts (`127.1`, `0x7f000001`,
/// `::ffff:127.0.0.1`) is recognised. Never a name lookup.
pub fn numeric_host(host: &str) -> Option<IpAddr> {
    let c = std::ffi::CString::new(host).ok()?;
    // SAFETY: getaddrinfo with AI_NUMERICHOST never does a lookup; `res` is ours until
    // freeaddrinfo below and only read while alive; sockaddr lengths are checked before the
    // casts.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = libc::AF_UNSPEC;
        hints.ai_flags = libc::AI_NUMERICHOST;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res) != 0 || res.is_null() {
            return None;
        }
        let ai = &*res;
        let len = ai.ai_addrlen as usize;
        let ip = if ai.ai_addr.is_null() {
            None
        } else if ai.ai_family == libc::AF_INET && len >= std::mem::size_of::<libc::sockaddr_in>() {
            let sin = &*(ai.ai_addr as *const libc::sockaddr_in);
            Some(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        } else if ai.ai_family == libc::AF_INET6 && len >= std::mem::size_of::<libc::sockaddr_in6>()
        {
            let sin6 = &*(ai.ai_addr as *const libc::sockaddr_in6);
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        } else {
            None
        };
        libc::freeaddrinfo(res);
        ip
    }
}
