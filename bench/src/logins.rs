//! `logins`: log in and out N times with C in parallel; logins/s and login latency.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::ctx::{Ctx, share};
use crate::reactor::{App, LoginCfg, Reactor};
use crate::report::{Errors, server_cpu_line};
use crate::sasl::Mech;
use crate::stats::{CpuProbe, Hist, ms};

struct LoginApp {
    ctx: Arc<Ctx>,
    next: usize,
    end: usize,
    step: usize,
    inflight: usize,
    max_inflight: usize,
    online: HashSet<u64>,
    hist: Hist,
    ok: u64,
    errors: Errors,
    close_errors: u64,
}

impl App for LoginApp {
    fn online(&mut self, r: &mut Reactor, id: usize, latency: Duration) {
        self.hist.record(latency.as_nanos() as u64);
        self.ok += 1;
        self.online.insert(r.tag(id));
        r.close(id);
    }

    fn stanza(&mut self, _: &mut Reactor, _: usize, _: &[u8]) {}

    fn closed(&mut self, _: &mut Reactor, tag: u64, error: Option<String>) {
        self.inflight -= 1;
        let was_online = self.online.remove(&tag);
        if let Some(e) = error {
            if was_online {
                self.close_errors += 1;
            } else {
                self.errors.add(e);
            }
        }
    }

    fn tick(&mut self, r: &mut Reactor) -> bool {
        while self.inflight < self.max_inflight && self.next < self.end {
            let i = self.next;
            self.next += self.step;
            self.inflight += 1;
            r.connect(self.ctx.account(i, format!("login{i}")), i as u64);
        }
        self.inflight > 0 || self.next < self.end
    }
}

fn run_logins(
    ctx: &Arc<Ctx>,
    cfg: &Arc<LoginCfg>,
    count: usize,
    concurrency: usize,
) -> Result<(f64, LoginApp, CpuProbe)> {
    let t = ctx.threads.min(count.max(1));
    let barrier = Arc::new(Barrier::new(t + 1));
    let mut handles = Vec::new();
    for k in 0..t {
        let (ctx, cfg, barrier) = (ctx.clone(), cfg.clone(), barrier.clone());
        let per = share(concurrency.max(1), t, k).max(1);
        handles.push(std::thread::spawn(move || -> Result<LoginApp> {
            let mut r = Reactor::new(cfg)?;
            let mut app = LoginApp {
                ctx,
                next: k,
                end: count,
                step: t,
                inflight: 0,
                max_inflight: per,
                online: HashSet::new(),
                hist: Hist::default(),
                ok: 0,
                errors: Errors::default(),
                close_errors: 0,
            };
            barrier.wait();
            r.run(&mut app);
            Ok(app)
        }));
    }
    let probe = CpuProbe::start(ctx.common.pid);
    let t0 = Instant::now();
    barrier.wait();
    let mut total: Option<LoginApp> = None;
    for h in handles {
        let app = h.join().map_err(|_| anyhow!("thread panicked"))??;
        match &mut total {
            None => total = Some(app),
            Some(a) => {
                a.hist.merge(&app.hist);
                a.ok += app.ok;
                a.close_errors += app.close_errors;
                a.errors.merge(app.errors);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((secs, total.ok_or_else(|| anyhow!("no threads"))?, probe))
}

pub fn run(
    ctx: Arc<Ctx>,
    count: usize,
    concurrency: usize,
    warmup: Option<usize>,
    presence: bool,
) -> Result<()> {
    let cfg = ctx.with_presence(presence);
    let scram = ctx.cfg.mech != Some(Mech::Plain);
    let warmup = warmup.unwrap_or(if scram {
        count.min(ctx.common.accounts)
    } else {
        0
    });
    if warmup > 0 {
        eprintln!("warm-up: {warmup} logins (caches SCRAM keys on the client side)");
        let (_, w, _) = run_logins(&ctx, &cfg, warmup, concurrency)?;
        if w.ok == 0 {
            w.errors.print();
            bail!("no login succeeded during warm-up");
        }
    }
    let mech = ctx.cfg.mech.map_or("auto", |m| m.name());
    eprintln!(
        "logins: {count} with {concurrency} in parallel, mechanism {mech}, {} threads",
        ctx.threads
    );
    let (secs, app, probe) = run_logins(&ctx, &cfg, count, concurrency)?;
    let (cpu, own) = probe.stop();
    let rate = app.ok as f64 / secs;
    println!(
        "logins ({mech}{}): {} ok, {} failed in {secs:.2} s = {rate:.0} logins/s",
        if presence { ", with presence" } else { "" },
        app.ok,
        app.errors.n
    );
    println!("  login latency: {}", app.hist.summary());
    println!("{}", server_cpu_line("", cpu, own, app.ok, "login"));
    if app.close_errors > 0 {
        println!("  {} sessions did not close cleanly", app.close_errors);
    }
    app.errors.print();
    println!(
        "RESULT logins mech={mech} ok={} failed={} secs={secs:.3} rate={rate:.1} p50_ms={:.3} p99_ms={:.3}{}",
        app.ok,
        app.errors.n,
        ms(app.hist.quantile(0.5)),
        ms(app.hist.quantile(0.99)),
        cpu.map(|c| format!(
            " server_us_per_login={:.1}",
            c as f64 / app.ok.max(1) as f64 / 1e3
        ))
        .unwrap_or_default()
    );
    if app.ok == 0 {
        bail!("no login succeeded");
    }
    Ok(())
}
