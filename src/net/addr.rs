//! Which addresses a connection made on a user's behalf may reach (issue 10, point 7).
//!
//! One table of the blocks that are not globally reachable unicast (IANA's special-purpose
//! registries, RFC 6890 and successors, plus multicast and the reserved 240/4) drives both
//! [`is_public`] and [`non_public_ranges`], so the check wockd makes itself and the blocklist it
//! hands to librqbit cannot disagree. IPv6 forms that carry an IPv4 address — IPv4-mapped
//! `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96` and 6to4 `2002::/16` — are as
//! public as the IPv4 address inside them. Teredo (`2001::/32`, inside `2001::/23`) is refused
//! whole: its embedded server and client addresses cannot be trusted.
//!
//! [`is_own_address`] adds the host's own interface addresses (a public address of this
//! machine reaches its own services just like 127.0.0.1 does); [`is_remote`] is the two
//! together, the rule every outbound connection for a user follows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv4 blocks that are not globally reachable unicast.
const V4_BLOCKS: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),       // "this network"
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // shared address space (CGNAT)
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link local
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 88, 99, 0, 24),  // 6to4 relay anycast (deprecated)
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, and the limited broadcast address
];

/// IPv6 blocks that are not globally reachable unicast (the forms embedding IPv4 are handled
/// by [`embedded_v4`] first and are not listed here).
const V6_BLOCKS: &[Ipv6Net] = &[
    v6(0, 0, 0, 0, 0, 0, 0, 0, 128),         // unspecified
    v6(0, 0, 0, 0, 0, 0, 0, 1, 128),         // loopback
    v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48),  // local-use IPv4/IPv6 translation
    v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64),      // discard-only
    v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23),     // IETF protocol assignments, Teredo
    v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), // documentation
    v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20),     // documentation
    v6(0x5f00, 0, 0, 0, 0, 0, 0, 0, 16),     // segment routing (SRv6) SIDs
    v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7),      // unique local
    v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10),     // link local
    v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10),     // site local (deprecated)
    v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8),      // multicast
];

/// IPv6 prefixes whose last 32 bits are an IPv4 address: IPv4-mapped, NAT64 well-known
/// prefix, IPv4-compatible (deprecated). `::` and `::1` are in the last one; they carry
/// 0.0.0.0 and 0.0.0.1, which are not public either.
const V4_IN_LAST_32: &[Ipv6Net] = &[
    v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96),
    v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96),
    v6(0, 0, 0, 0, 0, 0, 0, 0, 96),
];

/// 6to4: `2002:AABB:CCDD::/48` carries `AA.BB.CC.DD`.
const SIX_TO_FOUR: Ipv6Net = v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16);

/// The IPv4 address an IPv6 address stands for, if it is one of the embedding forms.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    if V4_IN_LAST_32.iter().any(|n| n.contains(&ip)) {
        return Some(Ipv4Addr::from_bits(bits as u32));
    }
    if SIX_TO_FOUR.contains(&ip) {
        return Some(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    None
}

/// Globally reachable unicast: what a connection on a user's behalf may reach (unless the
/// administrator allows private addresses). Does not know the host's own addresses; see
/// [`is_remote`].
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !V4_BLOCKS.iter().any(|n| n.contains(&a)),
        IpAddr::V6(a) => match embedded_v4(a) {
            Some(inner) => is_public(IpAddr::V4(inner)),
            None => !V6_BLOCKS.iter().any(|n| n.contains(&a)),
        },
    }
}

/// How long the list of the host's interface addresses is trusted.
const OWN_TTL: Duration = Duration::from_secs(10);

static OWN: Mutex<Option<(Instant, Vec<IpAddr>)>> = Mutex::new(None);

/// The addresses of this host's interfaces (read at most every few seconds).
pub fn own_addresses() -> Vec<IpAddr> {
    let mut cache = OWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, list)) = cache.as_ref()
        && at.elapsed() < OWN_TTL
    {
        return list.clone();
    }
    let list: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("cannot list this host's addresses: {e}");
            Vec::new()
        }
    };
    *cache = Some((Instant::now(), list.clone()));
    list
}

/// Whether `ip` (or the IPv4 address it embeds) is one of this host's interface addresses.
pub fn is_own_address(ip: IpAddr) -> bool {
    let inner = match ip {
        IpAddr::V6(a) => embedded_v4(a).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    own_addresses()
        .into_iter()
        .any(|own| own == ip || Some(own) == inner)
}

/// Public and not this host: where a connection made on a user's behalf may go.
pub fn is_remote(ip: IpAddr) -> bool {
    is_public(ip) && !is_own_address(ip)
}

/// Every address [`is_public`] refuses, as inclusive ranges (for address blocklists such as
/// librqbit's): the blocks, and each IPv4 block in each IPv6 form that embeds IPv4.
pub fn non_public_ranges() -> Vec<(IpAddr, IpAddr)> {
    let mut out: Vec<(IpAddr, IpAddr)> = Vec::new();
    for n in V4_BLOCKS {
        out.push((n.network().into(), n.broadcast().into()));
        out.extend(embedded_forms(n.network(), n.broadcast()));
    }
    for n in V6_BLOCKS {
        out.push((n.network().into(), n.broadcast().into()));
    }
    out
}

/// The IPv6 ranges that embed the IPv4 range `first..=last`.
pub fn embedded_forms(first: Ipv4Addr, last: Ipv4Addr) -> Vec<(IpAddr, IpAddr)> {
    let mut out = Vec::new();
    for p in V4_IN_LAST_32 {
        let base = p.network().to_bits();
        out.push((
            Ipv6Addr::from_bits(base | u128::from(first.to_bits())).into(),
            Ipv6Addr::from_bits(base | u128::from(last.to_bits())).into(),
        ));
    }
    let base = SIX_TO_FOUR.network().to_bits();
    let low80 = (1u128 << 80) - 1;
    out.push((
        Ipv6Addr::from_bits(base | (u128::from(first.to_bits()) << 80)).into(),
        Ipv6Addr::from_bits(base | (u128::from(last.to_bits()) << 80) | low80).into(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_issue_list_is_not_public() {
        for s in [
            // IPv4: loopback, private, link-local, unspecified, broadcast, multicast,
            // documentation, CGNAT, benchmarking, reserved, IETF assignments.
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "100.64.0.1",
            "100.127.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "192.0.0.8",
            // IPv6: loopback, unspecified, link-local, unique local, site local, multicast,
            // documentation.
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            // Embedded non-public IPv4: mapped, compatible, NAT64, 6to4.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::192.168.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:0101:ffff::1",
            // Teredo, whatever it embeds.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001::1",
        ] {
            assert!(!is_public(ip(s)), "{s} must not be public");
        }
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(is_public(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn loopback_is_own_and_not_remote() {
        // Every host has a loopback interface with 127.0.0.1.
        assert!(is_own_address(ip("127.0.0.1")));
        assert!(is_own_address(ip("::ffff:127.0.0.1")));
        assert!(!is_remote(ip("127.0.0.1")));
        for own in own_addresses() {
            assert!(!is_remote(own), "{own} is this host");
        }
    }

    fn in_ranges(ranges: &[(IpAddr, IpAddr)], a: IpAddr) -> bool {
        ranges.iter().any(|(lo, hi)| match (lo, hi, a) {
            (IpAddr::V4(l), IpAddr::V4(h), IpAddr::V4(x)) => *l <= x && x <= *h,
            (IpAddr::V6(l), IpAddr::V6(h), IpAddr::V6(x)) => *l <= x && x <= *h,
            _ => false,
        })
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|b| IpAddr::V4(Ipv4Addr::from_bits(b))),
            any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from_bits(b))),
            // Bias towards the embedding forms and the interesting blocks.
            (any::<u32>(), 0..5usize).prop_map(|(b, k)| {
                let pre: u128 = match k {
                    0 => 0xffff << 32,
                    1 => 0x0064_ff9b << 96,
                    2 => 0,
                    3 => 0x2002 << 112,
                    _ => 0x2001 << 112,
                };
                let x = if k == 3 {
                    pre | (u128::from(b) << 80)
                } else {
                    pre | u128::from(b)
                };
                IpAddr::V6(Ipv6Addr::from_bits(x))
            }),
        ]
    }

    proptest! {
        /// The blocklist given to librqbit and the check wockd makes agree on every address.
        #[test]
        fn ranges_agree_with_is_public(a in any_ip()) {
            let ranges = non_public_ranges();
            prop_assert_eq!(in_ranges(&ranges, a), !is_public(a), "{}", a);
        }

        /// An IPv4 address and each IPv6 form of it are judged alike.
        #[test]
        fn embedded_forms_follow_their_ipv4(b in any::<u32>()) {
            let a = Ipv4Addr::from_bits(b);
            for (lo, hi) in embedded_forms(a, a) {
                prop_assert_eq!(is_public(lo), is_public(a.into()), "{}", lo);
                if let IpAddr::V6(lo6) = lo {
                    prop_assert_eq!(embedded_v4(lo6), Some(a));
                }
                if let IpAddr::V6(hi6) = hi {
                    prop_assert_eq!(embedded_v4(hi6), Some(a));
                }
            }
        }
    }
}
