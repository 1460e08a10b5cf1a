//! `idle`: hold N authenticated sessions; the server's RSS per session (`--pid`).

use std::fmt::Write as _;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::ctx::{Ctx, SYNC_PING, is_iq_reply, share};
use crate::reactor::{App, Reactor};
use crate::report::Errors;
use crate::stats::{self, Hist};

#[derive(PartialEq, Clone, Copy)]
enum IdlePhase {
    Open,
    Hold(Instant),
    Close(Instant),
}

struct IdleApp {
    ctx: Arc<Ctx>,
    phase: IdlePhase,
    todo: Vec<usize>,
    inflight: usize,
    max_inflight: usize,
    /// Sessions whose sync ping was answered: tag → connection id.
    ready: std::collections::HashMap<u64, usize>,
    hist: Hist,
    errors: Errors,
    lost: u64,
    opened: u64,
}

impl App for IdleApp {
    fn online(&mut self, r: &mut Reactor, id: usize, latency: Duration) {
        self.hist.record(latency.as_nanos() as u64);
        // A ping after the initial presence: once answered, the server has processed the login.
        r.send(id, SYNC_PING.as_bytes());
    }

    fn stanza(&mut self, r: &mut Reactor, id: usize, data: &[u8]) {
        if self.phase == IdlePhase::Open
            && is_iq_reply(data, "sync")
            && self.ready.insert(r.tag(id), id).is_none()
        {
            self.inflight -= 1;
        }
    }

    fn closed(&mut self, _: &mut Reactor, tag: u64, error: Option<String>) {
        let was_ready = self.ready.remove(&tag).is_some();
        if self.phase == IdlePhase::Open && !was_ready {
            self.inflight -= 1;
        } else if !matches!(self.phase, IdlePhase::Close(_)) {
            self.lost += 1;
        }
        if let Some(e) = error {
            self.errors.add(e);
        }
    }

    fn tick(&mut self, r: &mut Reactor) -> bool {
        match self.phase {
            IdlePhase::Open => {
                while self.inflight < self.max_inflight
                    && let Some(i) = self.todo.pop()
                {
                    self.inflight += 1;
                    r.connect(self.ctx.account(i, format!("idle{i}")), i as u64);
                }
                self.inflight > 0 || !self.todo.is_empty()
            }
            IdlePhase::Hold(until) => Instant::now() < until,
            IdlePhase::Close(deadline) => r.open() > 0 && Instant::now() < deadline,
        }
    }
}

pub fn run(
    ctx: Arc<Ctx>,
    sessions: usize,
    concurrency: usize,
    hold: u64,
    settle: u64,
) -> Result<()> {
    let pid = ctx.common.pid;
    if sessions > ctx.common.accounts {
        eprintln!(
            "note: {sessions} sessions over {} accounts: several resources per account",
            ctx.common.accounts
        );
    }
    let rss_before = pid.and_then(stats::rss_kb);
    let anon_before = pid.and_then(stats::rss_anon_kb);
    let t = ctx.threads.min(sessions.max(1));
    let barrier = Arc::new(Barrier::new(t + 1));
    let mut handles = Vec::new();
    for k in 0..t {
        let (ctx, barrier) = (ctx.clone(), barrier.clone());
        let per = share(concurrency.max(1), t, k).max(1);
        handles.push(std::thread::spawn(move || -> Result<IdleApp> {
            let mut r = Reactor::new(ctx.cfg.clone())?;
            let mut todo: Vec<usize> = (k..sessions).step_by(t).collect();
            todo.reverse();
            let mut app = IdleApp {
                ctx,
                phase: IdlePhase::Open,
                todo,
                inflight: 0,
                max_inflight: per,
                ready: Default::default(),
                hist: Hist::default(),
                errors: Errors::default(),
                lost: 0,
                opened: 0,
            };
            r.run(&mut app);
            barrier.wait(); // all open
            barrier.wait(); // measured
            app.phase = IdlePhase::Hold(Instant::now() + Duration::from_secs(hold));
            r.run(&mut app);
            app.opened = app.ready.len() as u64;
            for (_, id) in std::mem::take(&mut app.ready) {
                r.close(id);
            }
            app.phase = IdlePhase::Close(Instant::now() + Duration::from_secs(30));
            r.run(&mut app);
            Ok(app)
        }));
    }
    let t0 = Instant::now();
    barrier.wait();
    let open_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(settle));
    let rss_open = pid.and_then(stats::rss_kb);
    let anon_open = pid.and_then(stats::rss_anon_kb);
    barrier.wait();
    let mut hist = Hist::default();
    let mut errors = Errors::default();
    let (mut ok, mut lost) = (0u64, 0u64);
    let mut first_err = None;
    for h in handles {
        match h.join().map_err(|_| anyhow!("thread panicked"))? {
            Ok(app) => {
                hist.merge(&app.hist);
                ok += app.opened;
                lost += app.lost;
                errors.merge(app.errors);
            }
            Err(e) => first_err = Some(e),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    std::thread::sleep(Duration::from_secs(settle));
    let rss_closed = pid.and_then(stats::rss_kb);
    println!(
        "idle: {ok} of {sessions} sessions open in {open_secs:.2} s; login latency {}",
        hist.summary()
    );
    let mut result = format!("RESULT idle sessions={ok}");
    match (rss_before, rss_open) {
        (Some(b), Some(o)) => {
            let per = (o as f64 - b as f64) / ok.max(1) as f64;
            println!(
                "  server RSS: {b} KiB idle, {o} KiB with {ok} sessions = {per:.1} KiB/session"
            );
            if let (Some(ab), Some(ao)) = (anon_before, anon_open) {
                let per = (ao as f64 - ab as f64) / ok.max(1) as f64;
                println!(
                    "  of which anonymous: {ab} KiB idle, {ao} KiB with {ok} sessions = {per:.1} KiB/session \
                     (the rest is code run for the first time)"
                );
                let _ = write!(result, " anon_kb_per_session={per:.2}");
            }
            if let Some(c) = rss_closed {
                println!("  server RSS after closing them: {c} KiB");
            }
            let _ = write!(
                result,
                " rss_idle_kb={b} rss_open_kb={o} kb_per_session={per:.2}"
            );
            if let Some(c) = rss_closed {
                let _ = write!(result, " rss_closed_kb={c}");
            }
        }
        _ => println!("  (no --pid: RSS not measured)"),
    }
    if lost > 0 {
        println!("  {lost} sessions were lost while holding");
    }
    errors.print();
    println!("{result}");
    if ok == 0 {
        bail!("no session could be opened");
    }
    Ok(())
}
