//! What every subcommand reports besides its numbers: errors grouped by kind, and the CPU
//! time of the server and of the generator per unit of work.

use std::fmt::Write as _;

use crate::stats::fmt_ns;

/// Errors seen, grouped by message, for the report.
#[derive(Default)]
pub struct Errors {
    pub n: u64,
    /// (grouping key, first example, count)
    kinds: Vec<(String, String, u64)>,
}

impl Errors {
    /// Errors that differ only in numbers (user names, ids, ports) are grouped.
    fn key(e: &str) -> String {
        let mut key = String::new();
        for c in e.chars().take(200) {
            if c.is_ascii_digit() {
                if !key.ends_with('#') {
                    key.push('#');
                }
            } else {
                key.push(c);
            }
        }
        key
    }

    pub fn add(&mut self, e: String) {
        self.add_n(Self::key(&e), e, 1);
    }

    fn add_n(&mut self, key: String, example: String, n: u64) {
        self.n += n;
        if let Some(k) = self.kinds.iter_mut().find(|(k, _, _)| *k == key) {
            k.2 += n;
        } else if self.kinds.len() < 8 {
            self.kinds.push((key, example, n));
        }
    }

    pub fn merge(&mut self, o: Errors) {
        let listed: u64 = o.kinds.iter().map(|k| k.2).sum();
        for (k, e, n) in o.kinds {
            self.add_n(k, e, n);
        }
        self.n += o.n - listed;
    }

    pub fn print(&self) {
        if self.n == 0 {
            return;
        }
        eprintln!("  {} errors, e.g.:", self.n);
        for (_, e, n) in &self.kinds {
            let e: String = e.chars().take(300).collect();
            eprintln!("    {n} × {e}");
        }
    }
}

pub fn server_cpu_line(label: &str, cpu: Option<u64>, own: u64, units: u64, unit: &str) -> String {
    let mut s = String::new();
    let per = |ns: u64| {
        if units == 0 {
            0.0
        } else {
            ns as f64 / units as f64 / 1e3
        }
    };
    if let Some(ns) = cpu {
        let _ = write!(s, "  server CPU: {} = {:.2} µs/{unit}", fmt_ns(ns), per(ns));
        let _ = write!(s, "{label}");
        s.push('\n');
    }
    let _ = write!(
        s,
        "  generator CPU: {} = {:.2} µs/{unit}",
        fmt_ns(own),
        per(own)
    );
    s
}
