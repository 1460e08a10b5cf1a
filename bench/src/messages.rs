//! `messages`: sender/receiver pairs exchange chat messages (bounded window per pair); msg/s,
//! delivery latency, and the server's CPU per message (`--pid`). With `--offline` the
//! receivers are offline: the store rate, then with `--drain` the delivery on login.

use std::fmt::Write as _;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::ctx::{Ctx, SYNC_PING};
use crate::reactor::{Account, App, Reactor};
use crate::report::{Errors, server_cpu_line};
use crate::stats::{self, CpuProbe, Hist, fmt_ns, ms, now_ns};
use crate::xml;

pub struct MsgOpts {
    pub pairs: usize,
    pub messages: u64,
    pub window: u64,
    pub rate: u64,
    pub body_size: usize,
    pub full_jid: bool,
    pub offline: bool,
    pub drain: bool,
    pub timeout: Duration,
    /// Messages per pair sent and received first, not measured (another run id).
    pub warmup: u64,
    /// `rtt`: report as the unloaded round trip (`RESULT rtt …`).
    pub rtt: bool,
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
    /// Messages per pair in this phase (the warm-up's, then --messages).
    target: u64,
    hist: Hist,
    /// Every latency, while there are at most MAX_SAMPLES: exact quantiles and max.
    samples: Vec<u64>,
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

/// Latencies kept per thread for exact quantiles (8 MiB); past this only the histogram.
const MAX_SAMPLES: usize = 1 << 20;

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
                p.acked >= self.target
            } else {
                p.received + p.bounced >= self.target
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
        let target = self.target;
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
            while p.sent < target && in_flight(p) + batch <= o.window.max(batch) && n < budget {
                let m = batch.min(target - p.sent).min(budget - n);
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
            while p.sent < target && in_flight(p) < o.window && n < budget {
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
                    let ns = now.saturating_sub(sent_at);
                    self.hist.record(ns);
                    if self.samples.len() < MAX_SAMPLES {
                        self.samples.push(ns);
                    }
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
                let lost = self.target - (p.received + p.bounced).min(self.target);
                p.bounced += lost;
                p.acked = self.target;
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
    samples: Vec<u64>,
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

pub fn run(ctx: Arc<Ctx>, o: MsgOpts) -> Result<()> {
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
                target: o.messages,
                pairs,
                threads: t,
                hist: Hist::default(),
                samples: Vec::new(),
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
            if o.warmup > 0 {
                // Under another run id, so that a straggler is ignored as stale.
                app.run_id = run_id.wrapping_add(1);
                app.target = o.warmup;
                app.phase = MsgPhase::Send;
                app.started = Instant::now();
                app.deadline = app.started + o.timeout;
                app.last_event = now_ns();
                if missing == 0 {
                    r.run(&mut app);
                }
                for p in &mut app.pairs {
                    (p.sent, p.received, p.bounced, p.acked) = (0, 0, 0, 0);
                    p.ack_marks.clear();
                }
                app.hist = Hist::default();
                app.samples.clear();
                app.sent_total = 0;
                app.run_id = run_id;
                app.target = o.messages;
                barrier.wait(); // warmed up
            }
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
                samples: app.samples,
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
        "{}: {} pairs × {} messages (after {} warm-up), {mode}, window {}, to {} JIDs, {} threads",
        if o.rtt { "rtt" } else { "messages" },
        o.pairs,
        o.messages,
        o.warmup,
        o.window,
        if o.full_jid { "full" } else { "bare" },
        t
    );
    barrier.wait(); // logged in
    let login_failed = *login_errors.lock().unwrap_or_else(|e| e.into_inner());
    if login_failed > 0 {
        eprintln!("some sessions could not log in; not sending (see errors below)");
    }
    if o.warmup > 0 {
        barrier.wait(); // warmed up
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
    let mut samples = Vec::new();
    let mut all_samples = true;
    let mut errors = Errors::default();
    let (mut sent, mut received, mut bounced, mut acked, mut stale, mut drained) =
        (0, 0, 0, 0, 0, 0);
    let (mut send_end, mut drain_end) = (t0, d0);
    let mut first_err = None;
    for h in handles {
        match h.join().map_err(|_| anyhow!("thread panicked"))? {
            Ok(x) => {
                hist.merge(&x.hist);
                all_samples &= x.samples.len() < MAX_SAMPLES;
                samples.extend(x.samples);
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
        // Exact quantiles from every sample when all were kept, else the histogram's (≤1.6 %).
        samples.sort_unstable();
        let q = |p: f64| {
            if all_samples {
                stats::exact_quantile(&samples, p)
            } else {
                hist.quantile(p)
            }
        };
        let (p50, p90, p99, max) = (q(0.5), q(0.9), q(0.99), hist.max());
        let what = if o.rtt {
            "round trip (1 pair, window 1)"
        } else {
            "messages"
        };
        println!(
            "{what}: {received} of {expected} delivered ({sent} sent, {bounced} bounced) in {secs:.3} s = {rate:.0} msg/s"
        );
        println!(
            "  latency: p50 {}  p90 {}  p99 {}  max {}",
            fmt_ns(p50),
            fmt_ns(p90),
            fmt_ns(p99),
            fmt_ns(max)
        );
        println!("{}", server_cpu_line("", cpu, own, received, "msg"));
        let head = if o.rtt {
            "RESULT rtt".to_owned()
        } else {
            "RESULT messages mode=online".to_owned()
        };
        result = format!(
            "{head} pairs={} sent={sent} received={received} bounced={bounced} secs={secs:.3} rate={rate:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            o.pairs,
            ms(p50),
            ms(p99),
            ms(max),
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
        println!("  ({stale} messages from earlier runs or the warm-up were received and ignored)");
    }
    errors.print();
    println!("{result}");
    Ok(())
}
