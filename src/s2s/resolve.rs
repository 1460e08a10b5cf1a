//! Finding and connecting to a remote server (RFC 6120 §3.2, XEP-0368): a static route from
//! the config, else DNS SRV `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp`, else
//! the domain's A/AAAA records on port 5269. Lookups go through gio's `GResolver`, which runs
//! them off the loop and orders SRV targets by priority and weight. Connections are
//! non-blocking connects (`net::connect_tcp`), tried one address after another.

use std::net::{IpAddr, SocketAddr};

use gio::prelude::*;

use crate::config::S2s;

/// One way to reach a server: a host name (or address) and port, and whether TLS starts at
/// once (XEP-0368) rather than after STARTTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
    /// From a static route: private addresses allowed.
    pub trusted: bool,
}

/// The targets for `domain`, in the order to try them.
pub async fn targets(config: &S2s, domain: &str) -> Vec<Target> {
    if let Some(route) = config.routes.get(domain) {
        return route
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
            .map(|(host, port)| Target {
                host: host.to_owned(),
                port,
                direct_tls: false,
                trusted: true,
            })
            .into_iter()
            .collect();
    }
    let resolver = gio::Resolver::default();
    let mut out = Vec::new();
    for (service, direct_tls) in [("xmpps-server", true), ("xmpp-server", false)] {
        if let Ok(srv) = resolver.lookup_service_future(service, "tcp", domain).await {
            for mut t in srv {
                let host = t.hostname().to_string();
                // "." means: no such service at this domain (RFC 2782).
                if host.is_empty() || host == "." {
                    continue;
                }
                out.push(Target {
                    host,
                    port: t.port(),
                    direct_tls,
                    trusted: false,
                });
            }
        }
    }
    if out.is_empty() {
        out.push(Target {
            host: domain.to_owned(),
            port: 5269,
            direct_tls: false,
            trusted: false,
        });
    }
    out
}

/// The addresses of `target` that policy lets us connect to, IPv6 and IPv4 interleaved.
pub async fn addresses(config: &S2s, target: &Target) -> Vec<SocketAddr> {
    let ips: Vec<IpAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match gio::Resolver::default()
            .lookup_by_name_future(&target.host)
            .await
        {
            Ok(found) => found
                .iter()
                .filter_map(|a| a.to_str().parse().ok())
                .collect(),
            Err(e) => {
                tracing::debug!(host = %target.host, "s2s: no address: {e}");
                Vec::new()
            }
        },
    };
    let allowed = |ip: &IpAddr| {
        target.trusted || config.allow_private_addresses || crate::net::addr::is_remote(*ip)
    };
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) =
        ips.into_iter().filter(allowed).partition(IpAddr::is_ipv6);
    // Alternate families so that one broken family costs one attempt, not all of them.
    let mut out = Vec::new();
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => break,
            (x, y) => out.extend(
                x.into_iter()
                    .chain(y)
                    .map(|ip| SocketAddr::new(ip, target.port)),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_route_is_the_only_target_and_is_trusted() {
        let mut c = S2s::default();
        c.routes
            .insert("example.net".into(), "127.0.0.2:5270".into());
        c.routes.insert("v6.example".into(), "[::1]:5269".into());
        let ctx = glib::MainContext::new();
        let t = ctx.block_on(targets(&c, "example.net"));
        assert_eq!(
            t,
            vec![Target {
                host: "127.0.0.2".into(),
                port: 5270,
                direct_tls: false,
                trusted: true
            }]
        );
        let t = ctx.block_on(targets(&c, "v6.example"));
        assert_eq!(t[0].host, "::1");
        let a = ctx.block_on(addresses(&c, &t[0]));
        assert_eq!(a, vec!["[::1]:5269".parse().unwrap()]);
    }

    #[test]
    fn private_addresses_from_dns_are_skipped() {
        let c = S2s::default();
        let t = Target {
            host: "127.0.0.1".into(),
            port: 5269,
            direct_tls: false,
            trusted: false,
        };
        let ctx = glib::MainContext::new();
        assert!(ctx.block_on(addresses(&c, &t)).is_empty());
    }
}
