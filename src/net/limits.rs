//! Connection and rate limits, in the manner of Prosody's `mod_limits` and ejabberd's shapers
//! and `max_fsm_queue`: a token bucket per connection for the read rate, and a table of
//! connections per client address (IPv6 by /64, since one host gets a whole prefix) with the
//! unauthenticated ones in age order, so the oldest can be evicted when a new one arrives.
//! Pure data structures; the server and the connections apply them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket in bytes: `rate` bytes a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: usize, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `n` bytes (the bucket may go into debt). Returns how long input must then pause
    /// for the debt to be repaid, or `None` while there is credit left.
    pub fn take(&mut self, n: usize, rate: usize, burst: usize, now: Instant) -> Option<Duration> {
        let rate = rate.max(1) as f64;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst as f64) - n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / rate))
    }
}

/// The address a limit counts by: IPv4 as is (and IPv4-mapped IPv6 as IPv4), IPv6 by /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

#[derive(Debug, Default)]
struct PerIp {
    conns: usize,
    /// Unauthenticated connection ids, oldest first (ids grow with time).
    unauth: BTreeSet<u64>,
    /// When recent authentication failures happened (sliding one-minute window).
    failures: VecDeque<Instant>,
}

/// Connections per address and unauthenticated connections, per address and in total.
#[derive(Debug, Default)]
pub struct IpTable {
    by_ip: HashMap<IpAddr, PerIp>,
    unauth: BTreeSet<u64>,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Take it; close these older unauthenticated connections to make room.
    Yes { evict: Vec<u64> },
    /// Refuse it: the address has too many connections.
    No,
}

impl IpTable {
    /// Admits connection `id` from `ip` unless the address already has `per_ip` connections.
    /// A new connection is unauthenticated: past `unauth_per_ip` (from that address) or
    /// `unauth_total`, the oldest unauthenticated ones are evicted for it, so a flood of idle
    /// connections cannot lock real users out, not even from the flooder's own address.
    pub fn admit(
        &mut self,
        id: u64,
        ip: IpAddr,
        per_ip: usize,
        unauth_per_ip: usize,
        unauth_total: usize,
    ) -> Admit {
        let key = ip_key(ip);
        let entry = self.by_ip.entry(key).or_default();
        if entry.conns >= per_ip {
            if entry.conns == 0 {
                self.by_ip.remove(&key);
            }
            return Admit::No;
        }
        let mut evict = Vec::new();
        while entry.unauth.len() >= unauth_per_ip.max(1) {
            let Some(old) = entry.unauth.pop_first() else {
                break;
            };
            self.unauth.remove(&old);
            evict.push(old);
        }
        entry.conns += 1;
        entry.unauth.insert(id);
        self.unauth.insert(id);
        while self.unauth.len() > unauth_total.max(1) {
            let Some(old) = self.unauth.pop_first() else {
                break;
            };
            evict.push(old);
            // Found by id in its address's set below, when it is forgotten.
        }
        Admit::Yes { evict }
    }

    /// Connection `id` authenticated: it no longer counts as unauthenticated.
    pub fn authenticated(&mut self, id: u64, ip: IpAddr) {
        self.unauth.remove(&id);
        if let Some(e) = self.by_ip.get_mut(&ip_key(ip)) {
            e.unauth.remove(&id);
        }
    }

    /// Connection `id` went away.
    pub fn forget(&mut self, id: u64, ip: IpAddr) {
        let key = ip_key(ip);
        self.unauth.remove(&id);
        if let Some(e) = self.by_ip.get_mut(&key) {
            e.unauth.remove(&id);
            e.conns = e.conns.saturating_sub(1);
            if e.conns == 0 && e.failures.is_empty() {
                self.by_ip.remove(&key);
            }
        }
    }

    /// Records a failed authentication from `ip`.
    pub fn auth_failed(&mut self, ip: IpAddr, now: Instant) {
        let e = self.by_ip.entry(ip_key(ip)).or_default();
        prune(&mut e.failures, now);
        e.failures.push_back(now);
    }

    /// Whether `ip` may try to authenticate: fewer than `max` failures in the last minute.
    pub fn auth_allowed(&mut self, ip: IpAddr, max: usize, now: Instant) -> bool {
        match self.by_ip.get_mut(&ip_key(ip)) {
            Some(e) => {
                prune(&mut e.failures, now);
                e.failures.len() < max
            }
            None => true,
        }
    }

    pub fn unauthenticated(&self) -> usize {
        self.unauth.len()
    }
}

const WINDOW: Duration = Duration::from_secs(60);

fn prune(failures: &mut VecDeque<Instant>, now: Instant) {
    while failures
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > WINDOW)
    {
        failures.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert_eq!(b.take(1000, 100, 1000, t0), None);
        let wait = b.take(50, 100, 1000, t0).unwrap();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After a second, 100 bytes of credit came back, 50 of which repaid the debt.
        assert_eq!(b.take(50, 100, 1000, t0 + Duration::from_secs(1)), None);
        // Credit never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(1000, 100, 1000, later), None);
        assert!(b.take(1, 100, 1000, later).is_some());
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        let m: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(ip_key(m), "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn oldest_unauthenticated_are_evicted_and_per_ip_cap_refuses() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mut t = IpTable::default();
        for id in 0..3 {
            assert_eq!(t.admit(id, ip, 10, 3, 100), Admit::Yes { evict: vec![] });
        }
        // The fourth unauthenticated connection from the address evicts the oldest.
        assert_eq!(t.admit(3, ip, 10, 3, 100), Admit::Yes { evict: vec![0] });
        t.forget(0, ip);
        // An authenticated connection is never evicted.
        t.authenticated(1, ip);
        assert_eq!(t.admit(4, ip, 10, 3, 100), Admit::Yes { evict: vec![] });
        assert_eq!(t.admit(5, ip, 10, 3, 100), Admit::Yes { evict: vec![2] });
        t.forget(2, ip);
        // Global cap: another address's new connection evicts the oldest anywhere.
        assert_eq!(t.admit(6, other, 10, 3, 3), Admit::Yes { evict: vec![3] });
        t.forget(3, ip);
        // Per-address cap on all connections.
        let mut t = IpTable::default();
        assert!(matches!(t.admit(0, ip, 1, 3, 100), Admit::Yes { .. }));
        assert_eq!(t.admit(1, ip, 1, 3, 100), Admit::No);
        t.forget(0, ip);
        assert!(matches!(t.admit(2, ip, 1, 3, 100), Admit::Yes { .. }));
        assert!(t.by_ip.len() == 1 && t.unauthenticated() == 1);
        t.forget(2, ip);
        assert!(t.by_ip.is_empty());
    }

    #[test]
    fn failures_count_for_a_minute() {
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        let mut t = IpTable::default();
        for _ in 0..3 {
            t.auth_failed(ip, t0);
        }
        assert!(!t.auth_allowed(ip, 3, t0));
        assert!(t.auth_allowed(ip, 4, t0));
        assert!(t.auth_allowed(ip, 3, t0 + Duration::from_secs(61)));
    }
}
