//! Which addresses an outbound connection made on a user's behalf may reach.
//!
//! [`is_public_class`] is the pure address-class test (RFC 6890 special-purpose registries plus
//! the IPv6 forms that embed an IPv4 address); [`is_public`] adds the host's own interface
//! addresses, which are private to this machine whatever their class.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Globally routable unicast by address class alone: not loopback, private, shared (CGNAT),
/// link-local, unspecified, broadcast, multicast, documentation, benchmarking, reserved,
/// unique-local, site-local, discard-only; and for the IPv6 forms that carry an IPv4 address
/// (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 well-known prefix, 6to4) the embedded
/// address must be public too. Local-use NAT64 (64:ff9b:1::/48) and Teredo are refused outright.
pub fn is_public_class(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// [`is_public_class`] and not one of this host's own interface addresses (a public address
/// of the host itself reaches the host's own services). If the interfaces cannot be listed,
/// only the class test applies.
pub fn is_public(ip: IpAddr) -> bool {
    is_public_class(ip) && !is_own_address(ip)
}

/// One of the addresses configured on this host's interfaces (IPv4-mapped IPv6 compared as
/// IPv4).
pub fn is_own_address(ip: IpAddr) -> bool {
    use network_interface::{Addr, NetworkInterface, NetworkInterfaceConfig};
    let ip = canonical(ip);
    match NetworkInterface::show() {
        Ok(ifaces) => ifaces.iter().flat_map(|i| i.addr.iter()).any(|a| {
            let own = match a {
                Addr::V4(a) => IpAddr::V4(a.ip),
                Addr::V6(a) => IpAddr::V6(a.ip),
            };
            canonical(own) == ip
        }),
        Err(e) => {
            tracing::warn!("cannot list this host's addresses: {e}");
            false
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() {
        return false;
    }
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), ::ffff:0:a.b.c.d (translated)
    let mapped_or_compatible = s[..5] == [0; 5] && matches!(s[5], 0 | 0xffff);
    let translated = s[..6] == [0, 0, 0, 0, 0xffff, 0];
    if mapped_or_compatible || translated {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96 reaches whatever IPv4 address it embeds.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // 6to4 2002:a.b.c.d::/48
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !((s[0] == 0x64 && s[1] == 0xff9b) // local-use NAT64 64:ff9b:1::/48 (and the rest of 64:ff9b::/32)
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || s[..4] == [0x100, 0, 0, 0] // discard-only
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020) // ORCHIDv2
        || s[0] == 0 // rest of ::/16 (reserved)
        || (s[0] & 0xe000) != 0x2000) // outside global unicast 2000::/3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_classes() {
        for private in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fec0::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::1.1.1.1",
            "2002:7f00:1::1",
            "2002:0a00:0001::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "100::1",
            "4000::1",
        ] {
            assert!(!is_public_class(ip(private)), "{private}");
            assert!(!is_public(ip(private)), "{private}");
        }
    }

    #[test]
    fn public_classes() {
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:0101:0101::1",
        ] {
            assert!(is_public_class(ip(public)), "{public}");
        }
    }

    #[test]
    fn own_addresses() {
        assert!(is_own_address(ip("127.0.0.1")));
        assert!(is_own_address(ip("::ffff:127.0.0.1")));
        assert!(!is_own_address(ip("192.0.2.77")));
    }
}
