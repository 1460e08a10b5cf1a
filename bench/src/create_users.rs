//! `create-users`: makes the benchN accounts with `wockd adduser` (or prints the Prosody /
//! ejabberd commands).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Common;
use crate::ctx::user_name;

pub fn run(
    c: &Common,
    count: usize,
    wockd: Option<PathBuf>,
    config: Option<PathBuf>,
    jobs: usize,
    print_only: bool,
) -> Result<()> {
    if print_only {
        let (first, last) = (
            user_name(&c.users, 0),
            user_name(&c.users, count.saturating_sub(1)),
        );
        let pat = c.users.replace("%d", "$i");
        println!(
            "# {count} accounts {first} … {last} @{} with password '{}':",
            c.domain, c.password
        );
        println!("# wockd:");
        println!(
            "for i in $(seq 0 {}); do echo '{}' | wockd -c CONFIG adduser {pat}@{} --password-stdin; done",
            count.saturating_sub(1),
            c.password,
            c.domain
        );
        println!("# Prosody (internal_hashed; add --config FILE for a non-default config):");
        println!(
            "for i in $(seq 0 {}); do prosodyctl register {pat} {} '{}'; done",
            count.saturating_sub(1),
            c.domain,
            c.password
        );
        println!("# ejabberd:");
        println!(
            "for i in $(seq 0 {}); do ejabberdctl register {pat} {} '{}'; done",
            count.saturating_sub(1),
            c.domain,
            c.password
        );
        return Ok(());
    }
    let wockd = wockd.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("wockd")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("wockd"))
    });
    let jobs = jobs.clamp(1, 64);
    let next = Arc::new(Mutex::new(0usize));
    let results = Arc::new(Mutex::new((0usize, 0usize, Vec::<String>::new())));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..jobs {
        let (next, results, wockd, config, c) = (
            next.clone(),
            results.clone(),
            wockd.clone(),
            config.clone(),
            c.clone(),
        );
        handles.push(std::thread::spawn(move || {
            loop {
                let i = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    if *n >= count {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let jid = format!("{}@{}", user_name(&c.users, i), c.domain);
                let outcome = add_user(&wockd, config.as_deref(), &jid, &c.password);
                let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Ok(true) => r.0 += 1,
                    Ok(false) => r.1 += 1,
                    Err(e) => r.2.push(format!("{jid}: {e:#}")),
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    let (created, existed, errs) =
        std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "create-users: {created} created, {existed} already existed, {} failed in {:.1} s ({})",
        errs.len(),
        t0.elapsed().as_secs_f64(),
        wockd.display()
    );
    for e in errs.iter().take(5) {
        eprintln!("  {e}");
    }
    if !errs.is_empty() {
        bail!("{} accounts could not be created", errs.len());
    }
    Ok(())
}

/// Runs `wockd [-c CFG] adduser JID --password-stdin`; Ok(false) if the account existed.
fn add_user(
    wockd: &std::path::Path,
    config: Option<&std::path::Path>,
    jid: &str,
    password: &str,
) -> Result<bool> {
    for attempt in 0..5 {
        let mut cmd = Command::new(wockd);
        if let Some(cfg) = config {
            cmd.arg("-c").arg(cfg);
        }
        cmd.args(["adduser", jid, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", wockd.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{password}")?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            return Ok(true);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("already exists") {
            return Ok(attempt > 0);
        }
        // Killed by a signal (exit code None, or 128+n from a shell wrapper): retry too.
        let killed = out.status.code().is_none_or(|c| c > 128);
        if !(killed || err.contains("locked") || err.contains("busy")) || attempt == 4 {
            bail!("{} ({})", err.trim(), out.status);
        }
        std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
    }
    unreachable!()
}
