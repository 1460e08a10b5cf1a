//! Latency histograms and what the bench reads about the server process from /proc.

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since the first call: a clock shared by all threads, so a timestamp written by
/// a sender thread can be compared at a receiver thread.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Log-linear histogram of nanosecond values: exact below 128, then 64 buckets per power of
/// two (≤1.6 % error). Cheap to record and to merge across threads.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

const SUB_BITS: u32 = 6;
const LINEAR: u64 = 1 << (SUB_BITS + 1);

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let mantissa = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (LINEAR + (u64::from(e) - u64::from(SUB_BITS + 1)) * (1 << SUB_BITS) + mantissa) as usize
}

/// Midpoint of a bucket.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let k = i - LINEAR;
    let e = k / (1 << SUB_BITS) + u64::from(SUB_BITS + 1);
    let mantissa = k % (1 << SUB_BITS);
    let low = ((1 << SUB_BITS) + mantissa) << (e - u64::from(SUB_BITS));
    low + (1u64 << (e - u64::from(SUB_BITS))) / 2
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; index(u64::MAX) + 1],
            n: 0,
            max: 0,
        }
    }
}

impl Hist {
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.n += 1;
        self.max = self.max.max(ns);
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// "p50 1.23 ms  p99 4.56 ms  max 9.87 ms"
    pub fn summary(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  max {}",
            fmt_ns(self.quantile(0.5)),
            fmt_ns(self.quantile(0.9)),
            fmt_ns(self.quantile(0.99)),
            fmt_ns(self.max)
        )
    }
}

/// The value at quantile `q` (0..=1) of sorted samples, by the same rank rule as
/// [`Hist::quantile`]; 0 when there are none.
pub fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

pub fn fmt_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// CPU time (user + system) the process has used, in nanoseconds: the sum of its threads'
/// /proc/<pid>/task/*/schedstat run times (nanosecond precision), or, where that is not
/// available, utime + stime from /proc/<pid>/stat (clock ticks, usually 10 ms).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
                && let Some(v) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            {
                total += v;
                any = true;
            }
        }
    }
    if any && total > 0 {
        return Some(total);
    }
    stat_cpu_ns(pid)
}

/// utime + stime from /proc/<pid>/stat, in nanoseconds.
pub fn stat_cpu_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / hz)
}

/// VmRSS of a process in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// The anonymous part of a process's RSS (heap, stacks, written data), in KiB: unlike VmRSS
/// it does not grow when a code path runs for the first time and its pages are mapped in.
pub fn rss_anon_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "RssAnon:")
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time this process (the load generator) has used, in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Server CPU between two snapshots, if a pid was given and both reads worked.
pub struct CpuProbe {
    pid: Option<u32>,
    server: Option<u64>,
    own: u64,
}

impl CpuProbe {
    pub fn start(pid: Option<u32>) -> CpuProbe {
        CpuProbe {
            pid,
            server: pid.and_then(cpu_ns),
            own: self_cpu_ns(),
        }
    }

    /// (server CPU ns, own CPU ns) since `start`.
    pub fn stop(&self) -> (Option<u64>, u64) {
        let server = match (self.pid, self.server) {
            (Some(pid), Some(before)) => cpu_ns(pid).map(|after| after.saturating_sub(before)),
            _ => None,
        };
        (server, self_cpu_ns().saturating_sub(self.own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_close() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            12_345,
            1_000_000,
            987_654_321,
            u64::MAX / 3,
        ] {
            let m = value(index(v));
            let err = (m as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {m}");
        }
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert_eq!(h.n, 1000);
        assert_eq!(h.max(), 1_000_000);
    }

    #[test]
    fn exact_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(exact_quantile(&v, 0.5), 50);
        assert_eq!(exact_quantile(&v, 0.99), 99);
        assert_eq!(exact_quantile(&v, 1.0), 100);
        assert_eq!(exact_quantile(&v, 0.0), 1);
        assert_eq!(exact_quantile(&[], 0.5), 0);
    }
}
