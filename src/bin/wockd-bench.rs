//! `wockd-bench`: a load generator for XMPP servers — wockd, Prosody, ejabberd or any other
//! that accepts client connections over plain TCP (no TLS) with SASL PLAIN or SCRAM.
//!
//! Subcommands:
//! * `logins`: log in and out N times with C in parallel; logins/s and login latency.
//! * `idle`: hold N authenticated sessions; the server's RSS per session (`--pid`).
//! * `messages`: sender/receiver pairs exchange chat messages (bounded window per pair);
//!   msg/s, delivery latency, and the server's CPU per message (`--pid`). With `--offline` the
//!   receivers are offline: the store rate, then with `--drain` the delivery on login.
//! * `parse-worst`: wockd's own framer and parser on the worst stanzas the default limits allow
//!   (in-process: time per stanza).
//! * `create-users`: makes the benchN accounts with `wockd adduser` (or prints the Prosody /
//!   ejabberd commands).
//!
//! Every result also goes out as one `RESULT key=value…` line for scripts. The generator is
//! epoll-driven (one loop per `--threads`), caches SCRAM's SaltedPassword per account and
//! batches its writes, so its own CPU use stays small next to the server's; it prints that too.

#[path = "bench/parse.rs"]
mod parse;
#[path = "bench/reactor.rs"]
mod reactor;
#[path = "bench/sasl.rs"]
mod sasl;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/xml.rs"]
mod xml;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use reactor::{Account, App, LoginCfg, Reactor};
use sasl::Mech;
use stats::{CpuProbe, Hist, fmt_ns, ms, now_ns};

#[derive(Parser)]
#[command(
    name = "wockd-bench",
    about = "XMPP load generator (plain TCP, SASL PLAIN/SCRAM)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
#[command(next_help_heading = "Server and accounts (any subcommand)")]
struct Common {
    /// Server address.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// Client port (plain TCP).
    #[arg(long, global = true, default_value_t = 5222)]
    port: u16,
    /// The XMPP domain (stream `to`, account domain).
    #[arg(long, global = true, default_value = "localhost")]
    domain: String,
    /// Username pattern; `%d` is replaced by the account number.
    #[arg(long, global = true, default_value = "bench%d")]
    users: String,
    /// Password of every account.
    #[arg(long, global = true, default_value = "pw")]
    password: String,
    /// How many accounts exist (users 0..accounts-1).
    #[arg(long, global = true, default_value_t = 1000)]
    accounts: usize,
    /// SASL mechanism: auto (strongest offered), PLAIN, SCRAM-SHA-1 or SCRAM-SHA-256.
    #[arg(long, global = true, default_value = "auto")]
    mech: String,
    /// Event-loop threads in the generator (default: CPUs - 1, at most 4).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Send the session IQ even when the server marks it optional.
    #[arg(long, global = true)]
    always_session: bool,
    /// Enable XEP-0198 stream management (resumable) on every session once it is bound.
    #[arg(long, global = true)]
    stream_management: bool,
    /// Seconds a login may take before it counts as failed.
    #[arg(long, global = true, default_value_t = 30)]
    login_timeout: u64,
    /// The server's process id: enables CPU (and for `idle`, RSS) measurements from /proc.
    #[arg(long, global = true)]
    pid: Option<u32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Log in and out N times; logins/s and login latency.
    Logins {
        /// Logins in total.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Logins in progress at once.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Unmeasured logins first, so SCRAM's client-side PBKDF2 is cached for each account
        /// (default: one per account used, for SCRAM; 0 for PLAIN).
        #[arg(long)]
        warmup: Option<usize>,
        /// Skip initial presence (login = SASL + bind + session only).
        #[arg(long)]
        no_presence: bool,
    },
    /// Hold N authenticated sessions and measure the server's memory per session.
    Idle {
        /// Sessions to open (account i mod --accounts, resource idle<i>).
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Logins in progress at once while opening.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Seconds to keep the sessions open after measuring.
        #[arg(long, default_value_t = 0)]
        hold: u64,
        /// Seconds to wait before reading the RSS (lets the server settle).
        #[arg(long, default_value_t = 1)]
        settle: u64,
    },
    /// Sender/receiver pairs exchange chat messages; msg/s, latency, server CPU per message.
    Messages {
        /// Sender/receiver pairs: pair i is account 2i sending to account 2i+1.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages each sender sends.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Messages in flight per pair (sent, not yet received; offline: not yet acknowledged).
        #[arg(long, default_value_t = 100)]
        window: u64,
        /// Total send rate limit in msg/s (0: as fast as the window allows).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Extra bytes of body text per message.
        #[arg(long, default_value_t = 0)]
        body_size: usize,
        /// Address receivers by full JID instead of bare JID.
        #[arg(long)]
        full_jid: bool,
        /// Receivers stay offline: measure how fast the server stores messages.
        #[arg(long)]
        offline: bool,
        /// With --offline: then log the receivers in and measure the delivery of the stored
        /// messages.
        #[arg(long, requires = "offline")]
        drain: bool,
        /// Seconds the sending (and the draining) may take.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Time wockd's framer + parser on worst-case stanzas (in-process, no server).
    ParseWorst {
        /// Repetitions per shape (the median is reported).
        #[arg(long, default_value_t = 21)]
        rounds: usize,
    },
    /// Create the accounts (users pattern, 0..count) with `wockd adduser`.
    CreateUsers {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// The wockd binary (default: the one next to this program, else `wockd` on PATH).
        #[arg(long)]
        wockd: Option<PathBuf>,
        /// wockd configuration file (`wockd -c CFG adduser …`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Parallel adduser processes. Keep 1 unless the wockd build is known to be safe with
        /// concurrent CLI processes on one database (some builds die with SIGBUS, see retries).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Print the equivalent Prosody / ejabberd commands instead of running anything.
        #[arg(long)]
        print_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    now_ns();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wockd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn raise_fd_limit() {
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

struct Ctx {
    common: Common,
    cfg: Arc<LoginCfg>,
    threads: usize,
}

impl Ctx {
    fn user(&self, i: usize) -> String {
        user_name(&self.common.users, i)
    }

    fn account(&self, i: usize, resource: String) -> Account {
        Account {
            user: self.user(i % self.common.accounts.max(1)),
            password: self.common.password.clone(),
            resource,
        }
    }

    fn bare(&self, i: usize) -> String {
        format!("{}@{}", self.user(i), self.common.domain)
    }

    fn with_presence(&self, presence: bool) -> Arc<LoginCfg> {
        Arc::new(LoginCfg {
            addr: self.cfg.addr,
            domain: self.cfg.domain.clone(),
            mech: self.cfg.mech,
            always_session: self.cfg.always_session,
            stream_management: self.cfg.stream_management,
            presence,
            login_timeout: self.cfg.login_timeout,
            close_timeout: self.cfg.close_timeout,
        })
    }
}

fn user_name(pattern: &str, i: usize) -> String {
    if pattern.contains("%d") {
        pattern.replace("%d", &i.to_string())
    } else {
        format!("{pattern}{i}")
    }
}

fn run(cli: Cli) -> Result<()> {
    let c = cli.common;
    if let Cmd::ParseWorst { rounds } = cli.command {
        return parse::run(rounds);
    }
    if let Cmd::CreateUsers {
        count,
        wockd,
        config,
        jobs,
        print_only,
    } = cli.command
    {
        return create_users(&c, count, wockd, config, jobs, print_only);
    }
    let addr: SocketAddr = (c.host.as_str(), c.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", c.host))?
        .next()
        .ok_or_else(|| anyhow!("{} has no address", c.host))?;
    let mech = match c.mech.to_ascii_lowercase().as_str() {
        "auto" => None,
        m => Some(Mech::from_name(m).ok_or_else(|| anyhow!("unknown mechanism {m}"))?),
    };
    let threads = c.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1)
            .clamp(1, 4)
    });
    let cfg = Arc::new(LoginCfg {
        addr,
        domain: c.domain.clone(),
        mech,
        always_session: c.always_session,
        stream_management: c.stream_management,
        presence: true,
        login_timeout: Duration::from_secs(c.login_timeout),
        close_timeout: Duration::from_secs(10),
    });
    if let Some(pid) = c.pid
        && stats::cpu_ns(pid).is_none()
    {
        bail!("cannot read /proc/{pid}/stat: is the server running with that pid?");
    }
    let ctx = Arc::new(Ctx {
        common: c,
        cfg,
        threads: threads.max(1),
    });
    match cli.command {
        Cmd::Logins {
            count,
            concurrency,
            warmup,
            no_presence,
        } => logins(ctx, count, concurrency, warmup, !no_presence),
        Cmd::Idle {
            sessions,
            concurrency,
            hold,
            settle,
        } => idle(ctx, sessions, concurrency, hold, settle),
        Cmd::Messages {
            pairs,
            messages,
            window,
            rate,
            body_size,
            full_jid,
            offline,
            drain,
            timeout,
        } => run_messages(
            ctx,
            MsgOpts {
                pairs,
                messages,
                window: window.max(1),
                rate,
                body_size,
                full_jid,
                offline,
                drain,
                timeout: Duration::from_secs(timeout),
            },
        ),
        Cmd::CreateUsers { .. } | Cmd::ParseWorst { .. } => unreachable!(),
    }
}

/// Errors seen, grouped by message, for the report.
#[derive(Default)]
struct Errors {
    n: u64,
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

    fn add(&mut self, e: String) {
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

    fn merge(&mut self, o: Errors) {
        let listed: u64 = o.kinds.iter().map(|k| k.2).sum();
        for (k, e, n) in o.kinds {
            self.add_n(k, e, n);
        }
        self.n += o.n - listed;
    }

    fn print(&self) {
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

/// Splits `total` items over `threads` as evenly as possible: thread t gets items t, t+T, ….
fn share(total: usize, threads: usize, t: usize) -> usize {
    total / threads + usize::from(t < total % threads)
}

fn server_cpu_line(label: &str, cpu: Option<u64>, own: u64, units: u64, unit: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// logins

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

fn logins(
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

// ---------------------------------------------------------------------------------------------
// idle

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

const SYNC_PING: &str = "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>";

fn is_iq_reply(data: &[u8], id: &str) -> bool {
    data.starts_with(b"<iq") && xml::start_attr(data, "id").as_deref() == Some(id)
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

fn idle(ctx: Arc<Ctx>, sessions: usize, concurrency: usize, hold: u64, settle: u64) -> Result<()> {
    let pid = ctx.common.pid;
    if sessions > ctx.common.accounts {
        eprintln!(
            "note: {sessions} sessions over {} accounts: several resources per account",
            ctx.common.accounts
        );
    }
    let rss_before = pid.and_then(stats::rss_kb);
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

// ---------------------------------------------------------------------------------------------
// messages

struct MsgOpts {
    pairs: usize,
    messages: u64,
    window: u64,
    rate: u64,
    body_size: usize,
    full_jid: bool,
    offline: bool,
    drain: bool,
    timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MsgPhase {
    Login,
    Send,
    Drain,
    Close,
}

#[derive(Default)]
struct Pair {
    /// Global pair number.
    n: usize,
    sender: Option<usize>,
    receiver: Option<usize>,
    /// Where the sender sends: the receiver's bare or full JID.
    to: String,
    sent: u64,
    received: u64,
    bounced: u64,
    /// Offline mode: messages acknowledged by the server (a ping after them was answered).
    acked: u64,
    /// Offline mode: sent count at each unanswered ack ping, in order.
    ack_marks: std::collections::VecDeque<u64>,
}

struct MsgApp {
    o: Arc<MsgOpts>,
    run_id: u32,
    phase: MsgPhase,
    pairs: Vec<Pair>,
    threads: usize,
    /// Logins still to complete in this phase (and their sync pings).
    pending: usize,
    hist: Hist,
    errors: Errors,
    stale: u64,
    /// Total sent by this thread and when sending started (for --rate).
    sent_total: u64,
    started: Instant,
    deadline: Instant,
    last_event: u64,
    buf: String,
    padding: String,
}

/// How long without progress before a run is given up as stalled.
const STALL: Duration = Duration::from_secs(10);

fn is_sender(tag: u64) -> bool {
    tag.is_multiple_of(2)
}

/// Connection tag: pair number × 2 + role (0 sender, 1 receiver).
fn tag(pair: usize, receiver: bool) -> u64 {
    (pair as u64) * 2 + u64::from(receiver)
}

impl MsgApp {
    fn local(&self, tag: u64) -> usize {
        (tag / 2) as usize / self.threads
    }

    fn done_sending(&self) -> bool {
        self.pairs.iter().all(|p| {
            if self.o.offline {
                p.acked >= self.o.messages
            } else {
                p.received + p.bounced >= self.o.messages
            }
        })
    }

    /// Nothing received or acknowledged for a while: the server dropped messages silently.
    fn stalled(&self) -> bool {
        now_ns().saturating_sub(self.last_event) > STALL.as_nanos() as u64
    }

    fn done_draining(&self) -> bool {
        self.pairs.iter().all(|p| p.received >= p.sent)
    }

    fn fill(&mut self, r: &mut Reactor, k: usize) {
        let o = self.o.clone();
        let budget = if o.rate > 0 {
            let per_thread = o.rate as f64 / self.threads as f64;
            let allowed = (per_thread * self.started.elapsed().as_secs_f64()) as u64 + 1;
            allowed.saturating_sub(self.sent_total)
        } else {
            u64::MAX
        };
        let p = &mut self.pairs[k];
        let Some(s) = p.sender else { return };
        let mut n = 0;
        let in_flight = |p: &Pair| {
            if o.offline {
                p.sent - p.acked
            } else {
                p.sent - p.received - p.bounced
            }
        };
        self.buf.clear();
        if o.offline {
            // Batches of half a window, each followed by a ping whose answer acknowledges them.
            let batch = (o.window / 2).max(1);
            while p.sent < o.messages && in_flight(p) + batch <= o.window.max(batch) && n < budget {
                let m = batch.min(o.messages - p.sent).min(budget - n);
                for _ in 0..m {
                    write_message(
                        &mut self.buf,
                        &p.to,
                        self.run_id,
                        p.n,
                        p.sent,
                        &self.padding,
                    );
                    p.sent += 1;
                }
                n += m;
                let _ = write!(
                    self.buf,
                    "<iq type='get' id='ack{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                    p.sent
                );
                p.ack_marks.push_back(p.sent);
            }
        } else {
            while p.sent < o.messages && in_flight(p) < o.window && n < budget {
                write_message(
                    &mut self.buf,
                    &p.to,
                    self.run_id,
                    p.n,
                    p.sent,
                    &self.padding,
                );
                p.sent += 1;
                n += 1;
            }
        }
        if n > 0 {
            self.sent_total += n;
            r.send(s, self.buf.as_bytes());
        }
    }
}

fn write_message(buf: &mut String, to: &str, run: u32, pair: usize, seq: u64, pad: &str) {
    let _ = write!(
        buf,
        "<message to='{to}' type='chat' id='m{seq}'><body>wb {run:x} {pair} {seq} {} {pad}</body></message>",
        now_ns()
    );
}

/// Parses our body: `wb RUN PAIR SEQ T_NS …`.
fn parse_body(body: &[u8]) -> Option<(u32, usize, u64)> {
    let s = std::str::from_utf8(body).ok()?;
    let mut it = s.split(' ');
    if it.next()? != "wb" {
        return None;
    }
    let run = u32::from_str_radix(it.next()?, 16).ok()?;
    let pair = it.next()?.parse().ok()?;
    let _seq: u64 = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((run, pair, t))
}

impl App for MsgApp {
    fn online(&mut self, r: &mut Reactor, id: usize, _latency: Duration) {
        let t = r.tag(id);
        let k = self.local(t);
        if is_sender(t) {
            self.pairs[k].sender = Some(id);
        } else {
            self.pairs[k].receiver = Some(id);
        }
        if self.phase == MsgPhase::Login {
            r.send(id, SYNC_PING.as_bytes());
        } else {
            self.pending = self.pending.saturating_sub(1);
            self.last_event = now_ns();
        }
    }

    fn stanza(&mut self, r: &mut Reactor, id: usize, data: &[u8]) {
        let t = r.tag(id);
        let k = self.local(t);
        let receiver = !is_sender(t);
        if data.starts_with(b"<message") {
            if receiver {
                let Some((run, pair, sent_at)) =
                    xml::child_text_raw(data, "body").and_then(parse_body)
                else {
                    return;
                };
                if run != self.run_id || pair != self.pairs[k].n {
                    self.stale += 1;
                    return;
                }
                let now = now_ns();
                self.last_event = now;
                if self.phase == MsgPhase::Send {
                    self.hist.record(now.saturating_sub(sent_at));
                }
                self.pairs[k].received += 1;
                if !self.o.offline {
                    self.fill(r, k);
                }
            } else if xml::start_attr(data, "type").as_deref() == Some("error") {
                self.pairs[k].bounced += 1;
                if self.errors.n < 1000 {
                    self.errors.add(format!(
                        "message bounced: {}",
                        String::from_utf8_lossy(data)
                    ));
                }
                self.fill(r, k);
            }
        } else if data.starts_with(b"<iq") {
            let Some(iq_id) = xml::start_attr(data, "id") else {
                return;
            };
            if iq_id == "sync" {
                self.pending -= 1;
            } else if let Some(n) = iq_id
                .strip_prefix("ack")
                .and_then(|n| n.parse::<u64>().ok())
            {
                let p = &mut self.pairs[k];
                while p.ack_marks.front().is_some_and(|m| *m <= n) {
                    p.ack_marks.pop_front();
                }
                p.acked = p.acked.max(n);
                self.last_event = now_ns();
                self.fill(r, k);
            }
        }
    }

    fn closed(&mut self, _: &mut Reactor, tag: u64, error: Option<String>) {
        let k = self.local(tag);
        if is_sender(tag) {
            self.pairs[k].sender = None;
        } else {
            self.pairs[k].receiver = None;
        }
        if self.phase != MsgPhase::Close {
            // A connection lost before or while measuring: stop waiting for it.
            self.pending = self.pending.saturating_sub(1);
            let p = &mut self.pairs[k];
            if is_sender(tag) && self.phase == MsgPhase::Send {
                let lost = self.o.messages - (p.received + p.bounced).min(self.o.messages);
                p.bounced += lost;
                p.acked = self.o.messages;
            }
            self.errors
                .add(error.unwrap_or_else(|| "connection closed".into()));
        } else if let Some(e) = error {
            self.errors.add(e);
        }
    }

    fn tick(&mut self, r: &mut Reactor) -> bool {
        match self.phase {
            MsgPhase::Login => self.pending > 0 && Instant::now() < self.deadline,
            MsgPhase::Send => {
                for k in 0..self.pairs.len() {
                    self.fill(r, k);
                }
                !self.done_sending() && Instant::now() < self.deadline && !self.stalled()
            }
            MsgPhase::Drain => {
                !self.done_draining()
                    && Instant::now() < self.deadline
                    && (self.pending > 0 || !self.stalled())
            }
            MsgPhase::Close => r.open() > 0 && Instant::now() < self.deadline,
        }
    }
}

struct MsgThreadResult {
    hist: Hist,
    errors: Errors,
    sent: u64,
    received: u64,
    bounced: u64,
    acked: u64,
    stale: u64,
    /// now_ns of the last receipt/ack of each phase.
    send_end: u64,
    drain_end: u64,
    drained: u64,
}

fn run_messages(ctx: Arc<Ctx>, o: MsgOpts) -> Result<()> {
    if o.pairs * 2 > ctx.common.accounts {
        bail!(
            "{} pairs need {} accounts; --accounts is {}",
            o.pairs,
            o.pairs * 2,
            ctx.common.accounts
        );
    }
    let o = Arc::new(o);
    let run_id: u32 = rand::random();
    let t = ctx.threads.min(o.pairs.max(1));
    let barrier = Arc::new(Barrier::new(t + 1));
    let login_errors = Arc::new(Mutex::new(0usize));
    let mut handles = Vec::new();
    for k in 0..t {
        let (ctx, o, barrier, login_errors) = (
            ctx.clone(),
            o.clone(),
            barrier.clone(),
            login_errors.clone(),
        );
        handles.push(std::thread::spawn(move || -> Result<MsgThreadResult> {
            let mut r = Reactor::new(ctx.cfg.clone())?;
            let pairs: Vec<Pair> = (k..o.pairs)
                .step_by(t)
                .map(|n| Pair {
                    n,
                    to: ctx.bare(2 * n + 1),
                    ..Default::default()
                })
                .collect();
            let mut app = MsgApp {
                o: o.clone(),
                run_id,
                phase: MsgPhase::Login,
                pending: 0,
                pairs,
                threads: t,
                hist: Hist::default(),
                errors: Errors::default(),
                stale: 0,
                sent_total: 0,
                started: Instant::now(),
                deadline: Instant::now() + ctx.cfg.login_timeout + Duration::from_secs(10),
                last_event: 0,
                buf: String::with_capacity(64 * 1024),
                padding: "x".repeat(o.body_size),
            };
            let connect_receiver = |r: &mut Reactor, app: &mut MsgApp, n: usize| {
                let acct = Account {
                    user: ctx.user(2 * n + 1),
                    password: ctx.common.password.clone(),
                    resource: "rcv".into(),
                };
                r.connect(acct, tag(n, true));
                app.pending += 1;
            };
            for idx in 0..app.pairs.len() {
                let n = app.pairs[idx].n;
                let acct = Account {
                    user: ctx.user(2 * n),
                    password: ctx.common.password.clone(),
                    resource: "snd".into(),
                };
                r.connect(acct, tag(n, false));
                app.pending += 1;
                if !o.offline {
                    connect_receiver(&mut r, &mut app, n);
                }
            }
            r.run(&mut app);
            let missing = app
                .pairs
                .iter()
                .filter(|p| p.sender.is_none() || (!o.offline && p.receiver.is_none()))
                .count();
            if missing > 0 || app.pending > 0 {
                *login_errors.lock().unwrap_or_else(|e| e.into_inner()) += missing.max(1);
            }
            if o.full_jid {
                for p in &mut app.pairs {
                    if let Some(rc) = p.receiver {
                        p.to = r.jid(rc).to_owned();
                    } else {
                        p.to = format!("{}/rcv", p.to);
                    }
                }
            }
            barrier.wait(); // logged in
            barrier.wait(); // go
            app.phase = MsgPhase::Send;
            app.started = Instant::now();
            app.deadline = app.started + o.timeout;
            app.last_event = now_ns();
            if missing == 0 {
                r.run(&mut app);
            }
            let send_end = app.last_event;
            barrier.wait(); // sending done
            let (mut drain_end, mut drained) = (0, 0);
            if o.drain {
                barrier.wait(); // go drain
                app.phase = MsgPhase::Drain;
                for p in &mut app.pairs {
                    p.received = 0;
                    // Only what the server acknowledged can be expected back.
                    p.sent = p.acked.min(p.sent);
                }
                app.deadline = Instant::now() + o.timeout;
                app.pending = 0;
                app.last_event = now_ns();
                let ns: Vec<usize> = app.pairs.iter().map(|p| p.n).collect();
                for n in ns {
                    connect_receiver(&mut r, &mut app, n);
                }
                r.run(&mut app);
                drain_end = app.last_event;
                drained = app.pairs.iter().map(|p| p.received).sum();
                barrier.wait(); // drain done
            }
            app.phase = MsgPhase::Close;
            app.deadline = Instant::now() + Duration::from_secs(15);
            for p in &app.pairs {
                for id in [p.sender, p.receiver].into_iter().flatten() {
                    r.close(id);
                }
            }
            r.run(&mut app);
            Ok(MsgThreadResult {
                hist: app.hist,
                errors: app.errors,
                sent: app.pairs.iter().map(|p| p.sent).sum(),
                received: if o.drain {
                    0
                } else {
                    app.pairs.iter().map(|p| p.received).sum()
                },
                bounced: app.pairs.iter().map(|p| p.bounced).sum(),
                acked: app.pairs.iter().map(|p| p.acked).sum(),
                stale: app.stale,
                send_end,
                drain_end,
                drained,
            })
        }));
    }
    let mode = if o.offline {
        "offline (store)"
    } else {
        "online"
    };
    eprintln!(
        "messages: {} pairs × {} messages, {mode}, window {}, to {} JIDs, {} threads",
        o.pairs,
        o.messages,
        o.window,
        if o.full_jid { "full" } else { "bare" },
        t
    );
    barrier.wait(); // logged in
    let login_failed = *login_errors.lock().unwrap_or_else(|e| e.into_inner());
    if login_failed > 0 {
        eprintln!("some sessions could not log in; not sending (see errors below)");
    }
    // Let the presence broadcasts of the logins settle before measuring.
    std::thread::sleep(Duration::from_millis(200));
    let probe = CpuProbe::start(ctx.common.pid);
    let t0 = now_ns();
    barrier.wait(); // go
    barrier.wait(); // sending done
    let (cpu, own) = probe.stop();
    let mut drain_probe = None;
    let mut d0 = 0;
    if o.drain {
        drain_probe = Some(CpuProbe::start(ctx.common.pid));
        d0 = now_ns();
        barrier.wait(); // go drain
        barrier.wait(); // drain done
    }
    let drain_cpu = drain_probe.map(|p| p.stop());
    let mut hist = Hist::default();
    let mut errors = Errors::default();
    let (mut sent, mut received, mut bounced, mut acked, mut stale, mut drained) =
        (0, 0, 0, 0, 0, 0);
    let (mut send_end, mut drain_end) = (t0, d0);
    let mut first_err = None;
    for h in handles {
        match h.join().map_err(|_| anyhow!("thread panicked"))? {
            Ok(x) => {
                hist.merge(&x.hist);
                errors.merge(x.errors);
                sent += x.sent;
                received += x.received;
                bounced += x.bounced;
                acked += x.acked;
                stale += x.stale;
                drained += x.drained;
                send_end = send_end.max(x.send_end);
                drain_end = drain_end.max(x.drain_end);
            }
            Err(e) => first_err = Some(e),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if login_failed > 0 {
        errors.print();
        bail!("login failed for some sessions");
    }
    let secs = (send_end.saturating_sub(t0)) as f64 / 1e9;
    let expected = o.pairs as u64 * o.messages;
    let mut result;
    if o.offline {
        let rate = acked as f64 / secs.max(1e-9);
        println!(
            "messages to offline users: {acked} of {expected} stored (acknowledged) in {secs:.3} s = {rate:.0} msg/s{}",
            if bounced > 0 {
                format!(", {bounced} bounced")
            } else {
                String::new()
            }
        );
        println!("{}", server_cpu_line("", cpu, own, acked, "msg"));
        result = format!(
            "RESULT messages mode=offline pairs={} sent={sent} stored={acked} bounced={bounced} secs={secs:.3} rate={rate:.1}",
            o.pairs
        );
        if let Some(c) = cpu {
            let _ = write!(
                result,
                " server_us_per_msg={:.3}",
                c as f64 / acked.max(1) as f64 / 1e3
            );
        }
        if let Some((dcpu, down)) = drain_cpu {
            let dsecs = drain_end.saturating_sub(d0) as f64 / 1e9;
            let drate = drained as f64 / dsecs.max(1e-9);
            println!(
                "drain: {drained} of {acked} delivered on login in {dsecs:.3} s = {drate:.0} msg/s (logins included)"
            );
            println!("{}", server_cpu_line("", dcpu, down, drained, "msg"));
            let _ = write!(
                result,
                " drained={drained} drain_secs={dsecs:.3} drain_rate={drate:.1}"
            );
            if let Some(c) = dcpu {
                let _ = write!(
                    result,
                    " drain_server_us_per_msg={:.3}",
                    c as f64 / drained.max(1) as f64 / 1e3
                );
            }
        }
    } else {
        let rate = received as f64 / secs.max(1e-9);
        println!(
            "messages: {received} of {expected} delivered ({sent} sent, {bounced} bounced) in {secs:.3} s = {rate:.0} msg/s"
        );
        println!("  latency: {}", hist.summary());
        println!("{}", server_cpu_line("", cpu, own, received, "msg"));
        result = format!(
            "RESULT messages mode=online pairs={} sent={sent} received={received} bounced={bounced} secs={secs:.3} rate={rate:.1} p50_ms={:.3} p99_ms={:.3}",
            o.pairs,
            ms(hist.quantile(0.5)),
            ms(hist.quantile(0.99)),
        );
        if let Some(c) = cpu {
            let _ = write!(
                result,
                " server_us_per_msg={:.3}",
                c as f64 / received.max(1) as f64 / 1e3
            );
        }
    }
    if stale > 0 {
        println!("  ({stale} messages from earlier runs were received and ignored)");
    }
    errors.print();
    println!("{result}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create-users

fn create_users(
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
