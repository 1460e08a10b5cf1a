//! Where legacy accounts may connect: the public-address rule of [`crate::net::addr`] applies
//! to every server a legacy account names, unless the admin allows private addresses for the
//! service (`allow_private_addresses`, per service or for all of `[transport]`).
//!
//! Enforcement happens in three places, because libpurple resolves names in two ways:
//! * **Names** go through our DNS ui-op (`purple::dns`), which drops every non-public
//!   address unless the name is one an account of an allowing service names
//!   ([`may_be_private`]). This is the only point that sees the addresses actually connected
//!   to, so a name that changes its answer after registration (DNS rebinding) is caught too,
//!   and it covers every connection libpurple makes through its proxy layer, not only the
//!   account's server.
//! * **Numeric addresses** never reach that ui-op: libpurple's `dnsquery.c` answers them itself
//!   with `getaddrinfo(AI_NUMERICHOST)`. [`literal`] parses hosts exactly that way (so `127.1`,
//!   `2130706433` and `0x7f.1` are caught as the loopback addresses they are) and
//!   `accounts::login` refuses to connect an account that names a non-public one.
//! * **Registration and settings** check both up front ([`vet`]), so the user gets a clear
//!   `not-acceptable` instead of a connection that fails later.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use crate::net::addr::is_remote as is_public;

thread_local! {
    /// Account id → the hosts it names, for accounts of services that allow private
    /// addresses: the names whose lookups may return them.
    static PRIVATE_OK: RefCell<HashMap<i64, Vec<String>>> = RefCell::new(HashMap::new());
}

/// The hosts a legacy account connects to: the server part of its username (`nick@server`,
/// `user@domain/resource`) and every setting that names a server, host, proxy or URL
/// (`connect_server`, `bosh_url`, `ft_proxies`…), ports and URL parts removed.
pub fn endpoints<'a>(
    username: &str,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, server)) = username.split_once('@') {
        let server = server.split('/').next().unwrap_or(server);
        out.extend(host_of(server));
    }
    for (key, value) in settings {
        let k = key.to_ascii_lowercase();
        if !(k.contains("server") || k.contains("host") || k.contains("prox") || k.ends_with("url"))
        {
            continue;
        }
        for item in value.split([',', ';', ' ', '\t']) {
            out.extend(host_of(item));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The host of `host`, `host:port`, `[v6]:port`, `v6` or `scheme://host…`.
fn host_of(item: &str) -> Option<String> {
    let item = item.trim();
    if item.is_empty() {
        return None;
    }
    if item.contains("://") {
        let url = reqwest::Url::parse(item).ok()?;
        return url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
    }
    if let Some(rest) = item.strip_prefix('[') {
        return rest.split(']').next().map(str::to_owned);
    }
    match item.matches(':').count() {
        1 => item.split(':').next().map(str::to_owned),
        _ => Some(item.to_owned()),
    }
    .filter(|h| !h.is_empty())
}

/// `host` as the numeric address libpurple would connect to without a name lookup: parsed
/// with `getaddrinfo(AI_NUMERICHOST)` like `dnsquery.c` does, so every spelling the C library
/// accepts (`127.1`, `0x7f000001`, `::ffff:127.0.0.1`) is recognised.
pub fn literal(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    if host.is_empty() || host.contains('\0') || !host.is_ascii() {
        return None;
    }
    super::purple::dns::numeric_host(host)
}

/// Why an account naming `hosts` may not connect, judging numeric addresses only.
pub fn literal_refusal(hosts: &[String]) -> Option<String> {
    hosts.iter().find_map(|h| {
        let ip = literal(h)?;
        (!is_public(ip)).then(|| not_public(h, ip))
    })
}

fn not_public(host: &str, ip: IpAddr) -> String {
    if host == ip.to_string() {
        format!("{host} is not a public address; this gateway does not connect to its own network")
    } else {
        format!(
            "{host} is {ip}, not a public address; this gateway does not connect to its own network"
        )
    }
}

/// Checks the hosts of a registration or settings change, then calls `done` (at once, or once
/// the names are resolved): `Err` with the reason if one is, or resolves to, a non-public
/// address. A name that does not resolve now passes (the connection will tell); the DNS
/// ui-op applies the same rule when libpurple connects.
pub fn vet(
    hosts: Vec<String>,
    allow_private: bool,
    done: impl FnOnce(Result<(), String>) + 'static,
) {
    if allow_private {
        return done(Ok(()));
    }
    if let Some(why) = literal_refusal(&hosts) {
        return done(Err(why));
    }
    let names: Vec<String> = hosts.into_iter().filter(|h| literal(h).is_none()).collect();
    resolve_each(names, Box::new(done));
}

fn resolve_each(mut names: Vec<String>, done: Box<dyn FnOnce(Result<(), String>)>) {
    use gio::prelude::*;
    let Some(name) = names.pop() else {
        return done(Ok(()));
    };
    let lookup = name.clone();
    gio::Resolver::default().lookup_by_name_async(&lookup, None::<&gio::Cancellable>, move |res| {
        super::purple::ffi::guard("vet lookup", (), move || {
            let bad = res.ok().and_then(|addrs| {
                addrs.iter().find_map(|a| {
                    let ip: IpAddr = a.to_string().parse().ok()?;
                    (!is_public(ip)).then_some(ip)
                })
            });
            match bad {
                Some(ip) => done(Err(format!(
                    "{name} resolves to {ip}, not a public address; this gateway does not connect to its own network"
                ))),
                None => resolve_each(names, done),
            }
        })
    });
}

/// Records the hosts of account `id` (an account of a service that allows private addresses
/// when `allowed`), or forgets them.
pub fn set_account(id: i64, hosts: Vec<String>, allowed: bool) {
    PRIVATE_OK.with_borrow_mut(|m| {
        if allowed {
            m.insert(id, hosts);
        } else {
            m.remove(&id);
        }
    });
}

/// Whether a lookup of `host` may return non-public addresses.
pub fn may_be_private(host: &str) -> bool {
    PRIVATE_OK.with_borrow(|m| {
        m.values()
            .flatten()
            .any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    })
}

/// The addresses of a lookup of `host` that may be connected to, or why none may.
pub fn filter_resolved(host: &str, addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, String> {
    if may_be_private(host) {
        return Ok(addrs);
    }
    let (ok, refused): (Vec<IpAddr>, Vec<IpAddr>) = addrs.into_iter().partition(|a| is_public(*a));
    if ok.is_empty()
        && let Some(ip) = refused.first()
    {
        return Err(format!(
            "{host} resolves to {ip}, not a public address; this gateway does not connect to its own network"
        ));
    }
    if !refused.is_empty() {
        tracing::warn!(%host, ?refused, "non-public addresses dropped from a lookup");
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_accounts() {
        assert_eq!(
            endpoints("nick@irc.example.org", [("port", "6667")]),
            ["irc.example.org"]
        );
        assert_eq!(
            endpoints(
                "me@example.org/wockd",
                [
                    ("connect_server", "10.0.0.1"),
                    ("bosh_url", "https://[::1]:5281/http-bind"),
                    ("ft_proxies", "proxy.example.org:7777, 192.168.0.9"),
                    ("encoding", "UTF-8"),
                ]
            ),
            [
                "10.0.0.1",
                "192.168.0.9",
                "::1",
                "example.org",
                "proxy.example.org"
            ]
        );
        assert_eq!(endpoints("nick@[::1]", []), ["::1"]);
        assert_eq!(endpoints("nick@::ffff:127.0.0.1", []), ["::ffff:127.0.0.1"]);
        assert!(endpoints("nobody", []).is_empty());
    }

    #[test]
    fn numeric_spellings_are_caught() {
        for (host, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
            ("::1", "::1"),
        ] {
            assert_eq!(literal(host), Some(ip.parse().unwrap()), "{host}");
            assert!(literal_refusal(&[host.to_owned()]).is_some(), "{host}");
        }
        assert_eq!(literal("irc.example.org"), None);
        assert_eq!(literal("localhost"), None);
        assert_eq!(literal("é"), None);
        assert!(literal_refusal(&["1.1.1.1".into(), "example.org".into()]).is_none());
    }

    #[test]
    fn lookups_drop_private_addresses() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "1.1.1.1".parse().unwrap();
        assert!(filter_resolved("a.test", vec![lo]).is_err());
        assert_eq!(
            filter_resolved("a.test", vec![lo, public]),
            Ok(vec![public])
        );
        set_account(-7, vec!["a.test".into()], true);
        assert_eq!(filter_resolved("A.test.", vec![lo]), Ok(vec![lo]));
        set_account(-7, vec!["a.test".into()], false);
        assert!(filter_resolved("a.test", vec![lo]).is_err());
    }
}
