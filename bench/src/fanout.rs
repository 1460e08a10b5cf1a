//! `fanout`: presence fan-out. U users, each with C contacts in mutual (`both`) subscriptions,
//! all online; every user sends M presence updates and every delivery to a contact is counted.
//!
//! The contacts of user i are i±1 … i±C/2 (mod U), so every roster has exactly C items and
//! an update reaches exactly C contacts: U × M × C deliveries are expected (the copy the
//! server reflects to the sender's own resource is not one).
//!
//! Set-up is done over XMPP, so it works on any server and on accounts that are already
//! subscribed: every user fetches its roster, asks each contact it lacks a subscription to
//! with `subscribe`, approves every request from a contact with `subscribed` (RFC 6121 §3.1),
//! and removes roster items that are not its contacts; it is done when the roster (result and
//! pushes) shows `both` for every contact and nothing else. Then, before measuring, every user
//! must have seen each contact's available presence (the initial presence flood, not counted).
//! The updates carry the run id and their number in `<status>`, so each delivery is counted
//! once, duplicates and strays apart.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::ctx::{Ctx, share, user_name};
use crate::reactor::{Account, App, Reactor};
use crate::report::{Errors, server_cpu_line};
use crate::stats::{CpuProbe, now_ns};
use crate::xml::{self, El};

const NS_ROSTER: &str = "jabber:iq:roster";

/// How often set-up asks again for what is still missing.
const KICK: Duration = Duration::from_secs(10);
/// The longest the measured phase may take, whatever happens.
const MEASURE_LIMIT: Duration = Duration::from_secs(600);

pub struct FanoutOpts {
    pub users: usize,
    pub contacts: usize,
    pub updates: u64,
    /// Updates in flight in total (sent, not yet delivered to all contacts).
    pub window: u64,
    pub concurrency: usize,
    pub setup_timeout: Duration,
    pub silence: Duration,
    pub teardown: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Login,
    Setup,
    Drain,
    Measure,
    Teardown,
    Close,
}

/// A contact's roster item as the server last told us.
#[derive(Clone, Copy, Default)]
struct Sub {
    to: bool,
    from: bool,
}

/// Who is whose contact: the ring of users and how their JIDs are spelled.
struct Ring {
    users: usize,
    half: usize,
    pattern: String,
    domain: String,
}

impl Ring {
    /// The user in contact slot `s` of user `i`: slots 0..half are i+1.., then i-1...
    fn contact(&self, i: usize, s: usize) -> usize {
        if s < self.half {
            (i + s + 1) % self.users
        } else {
            (i + self.users - (s - self.half + 1) % self.users) % self.users
        }
    }

    /// The slot of user `j` among user `i`'s contacts.
    fn slot(&self, i: usize, j: usize) -> Option<usize> {
        let d = (j + self.users - i) % self.users;
        if (1..=self.half).contains(&d) {
            Some(d - 1)
        } else if d != 0 && self.users - d <= self.half {
            Some(self.half + self.users - d - 1)
        } else {
            None
        }
    }

    fn bare(&self, j: usize) -> String {
        format!("{}@{}", user_name(&self.pattern, j), self.domain)
    }

    /// The user number of a (bare or full) JID, if it is one of ours.
    fn index_of(&self, jid: &str) -> Option<usize> {
        let bare = jid.split('/').next()?;
        let (local, domain) = bare.split_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let (pre, post) = match self.pattern.split_once("%d") {
            Some((a, b)) => (a, b),
            None => (self.pattern.as_str(), ""),
        };
        let lower = local.to_ascii_lowercase();
        let digits = lower
            .strip_prefix(&pre.to_ascii_lowercase())?
            .strip_suffix(&post.to_ascii_lowercase())?;
        let j: usize = digits.parse().ok()?;
        (j < self.users && user_name(&self.pattern, j).eq_ignore_ascii_case(local)).then_some(j)
    }
}

struct User {
    n: usize,
    conn: Option<usize>,
    /// The roster result arrived (or the roster request failed).
    loaded: bool,
    sub: Vec<Sub>,
    /// Roster items that are not contacts (bare JIDs): removed during set-up.
    extra: HashSet<String>,
    /// Available presence seen from each contact (and not unavailable since).
    seen: Vec<bool>,
    /// Update `u` of contact slot `s` arrived: index s × updates + u.
    got: Vec<bool>,
    sent: u64,
    /// Teardown: roster removals not yet answered.
    removing: usize,
}

impl User {
    fn set_up(&self) -> bool {
        self.loaded && self.extra.is_empty() && self.sub.iter().all(|s| s.to && s.from)
    }
}

/// What the threads share while measuring.
struct Shared {
    /// Deliveries counted of the updates sent by the users of thread t.
    delivered_from: Vec<AtomicU64>,
    received: AtomicU64,
    /// now_ns of the latest counted delivery and of the latest update sent.
    last_recv: AtomicU64,
    last_send: AtomicU64,
    /// A phase failed for some user: the later ones are skipped.
    abort: AtomicBool,
    /// Why, for the report.
    failures: Mutex<Vec<String>>,
}

struct FanApp {
    ctx: Arc<Ctx>,
    o: Arc<FanoutOpts>,
    ring: Arc<Ring>,
    shared: Arc<Shared>,
    run_id: u32,
    thread: usize,
    threads: usize,
    phase: Phase,
    users: Vec<User>,
    /// Users (local indices) still to log in, logins in progress, and at most how many.
    todo: Vec<usize>,
    inflight: usize,
    max_inflight: usize,
    deadline: Instant,
    last_kick: Instant,
    /// Measuring: where the round-robin over users continues, and updates sent.
    cursor: usize,
    sent: u64,
    /// This thread's share of the window, in deliveries.
    window: u64,
    received: u64,
    duplicates: u64,
    /// Presence from users who are not contacts, and updates of other runs.
    strays: u64,
    /// Deliveries that arrived after the measurement ended.
    late: u64,
    lost: u64,
    errors: Errors,
    buf: String,
}

impl FanApp {
    fn local(&self, tag: u64) -> usize {
        tag as usize / self.threads
    }

    fn send(&mut self, r: &mut Reactor, k: usize) {
        if let Some(id) = self.users[k].conn {
            r.send(id, self.buf.as_bytes());
        }
        self.buf.clear();
    }

    /// Set-up: subscribe to every contact we lack a subscription to, remove the other items.
    fn kick(&mut self, r: &mut Reactor) {
        self.last_kick = Instant::now();
        for k in 0..self.users.len() {
            let u = &self.users[k];
            if u.set_up() || u.conn.is_none() {
                continue;
            }
            self.buf.clear();
            for (s, sub) in u.sub.iter().enumerate() {
                if !sub.to {
                    let _ = write!(
                        self.buf,
                        "<presence to='{}' type='subscribe'/>",
                        self.ring.bare(self.ring.contact(u.n, s))
                    );
                }
            }
            for jid in &u.extra {
                let _ = write!(
                    self.buf,
                    "<iq type='set' id='x'><query xmlns='{NS_ROSTER}'><item jid='{}' subscription='remove'/></query></iq>",
                    xml::escape(jid)
                );
            }
            self.send(r, k);
        }
    }

    /// Measuring: send updates round-robin over the users while the window has room.
    fn fill(&mut self, r: &mut Reactor) {
        let c = self.o.contacts as u64;
        let m = self.o.updates;
        let total = self.users.len() as u64 * m;
        let mut any = false;
        while self.sent < total {
            let done = self.shared.delivered_from[self.thread].load(Relaxed);
            if (self.sent * c).saturating_sub(done) >= self.window {
                break;
            }
            // Some user has updates left (sent < total): find it.
            let n = self.users.len();
            let mut k = self.cursor % n;
            while self.users[k].sent >= m {
                k = (k + 1) % n;
            }
            self.cursor = k + 1;
            let u = &mut self.users[k];
            let _ = write!(
                self.buf,
                "<presence><status>{:x} {}</status></presence>",
                self.run_id, u.sent
            );
            u.sent += 1;
            self.sent += 1;
            any = true;
            self.send(r, k);
        }
        if any {
            self.shared.last_send.fetch_max(now_ns(), Relaxed);
        }
    }

    fn presence(&mut self, r: &mut Reactor, k: usize, data: &[u8]) {
        let Some(from) = xml::start_attr(data, "from") else {
            return;
        };
        let ty = xml::start_attr(data, "type");
        let i = self.users[k].n;
        let j = self.ring.index_of(&from);
        let slot = j.and_then(|j| self.ring.slot(i, j));
        match ty.as_deref() {
            None => {
                let Some(s) = slot else {
                    if j != Some(i) && self.phase == Phase::Measure {
                        self.strays += 1;
                    }
                    return;
                };
                self.users[k].seen[s] = true;
                let Some(status) = xml::child_text_raw(data, "status") else {
                    return;
                };
                let Some((run, n)) = parse_status(status) else {
                    return;
                };
                if run != self.run_id || n >= self.o.updates {
                    self.strays += 1;
                    return;
                }
                if self.phase != Phase::Measure {
                    self.late += 1;
                    return;
                }
                let idx = s * self.o.updates as usize + n as usize;
                let Some(got) = self.users[k].got.get_mut(idx) else {
                    return;
                };
                if *got {
                    self.duplicates += 1;
                    return;
                }
                *got = true;
                self.received += 1;
                let sender_thread = j.unwrap_or(0) % self.threads;
                self.shared.delivered_from[sender_thread].fetch_add(1, Relaxed);
                self.shared.received.fetch_add(1, Relaxed);
                self.shared.last_recv.fetch_max(now_ns(), Relaxed);
            }
            Some("unavailable") => {
                if let Some(s) = slot {
                    self.users[k].seen[s] = false;
                }
            }
            Some("subscribe") => {
                // Approve our contacts, deny anyone else (RFC 6121 §3.1.4, §3.1.5).
                let bare = from.split('/').next().unwrap_or_default();
                let answer = if slot.is_some() {
                    "subscribed"
                } else {
                    "unsubscribed"
                };
                let _ = write!(
                    self.buf,
                    "<presence to='{}' type='{answer}'/>",
                    xml::escape(bare)
                );
                self.send(r, k);
            }
            Some("error") if self.errors.n < 1000 => {
                self.errors
                    .add(format!("presence error: {}", String::from_utf8_lossy(data)));
            }
            _ => {}
        }
    }

    fn iq(&mut self, r: &mut Reactor, k: usize, data: &[u8]) {
        let ty = xml::start_attr(data, "type").unwrap_or_default();
        let id = xml::start_attr(data, "id").unwrap_or_default();
        match ty.as_str() {
            "set" => {
                // A roster push (RFC 6121 §2.1.6): apply it and acknowledge it.
                let Ok(el) = El::parse(data) else { return };
                let Some(q) = el.child("query") else { return };
                for item in q.children.iter().filter(|c| c.name == "item") {
                    self.apply(k, item);
                }
                let _ = write!(self.buf, "<iq type='result' id='{}'/>", xml::escape(&id));
                self.send(r, k);
            }
            "result" if id == "roster" => {
                let u = &mut self.users[k];
                if u.loaded {
                    return;
                }
                u.sub.fill(Sub::default());
                u.extra.clear();
                if let Ok(el) = El::parse(data)
                    && let Some(q) = el.child("query")
                {
                    for item in q.children.iter().filter(|c| c.name == "item") {
                        self.apply(k, item);
                    }
                }
                self.users[k].loaded = true;
                self.inflight = self.inflight.saturating_sub(1);
            }
            "result" | "error" if id.starts_with("rm") => {
                let u = &mut self.users[k];
                u.removing = u.removing.saturating_sub(1);
            }
            "error" => {
                if id == "roster" && !self.users[k].loaded {
                    self.users[k].loaded = true;
                    self.inflight = self.inflight.saturating_sub(1);
                    self.users[k].conn = None; // not usable: counts as a failed login
                }
                self.errors
                    .add(format!("iq error: {}", String::from_utf8_lossy(data)));
            }
            _ => {}
        }
    }

    fn apply(&mut self, k: usize, item: &El) {
        let Some(jid) = item.attr("jid") else { return };
        let jid = jid.to_ascii_lowercase();
        let sub = item.attr("subscription").unwrap_or("none");
        let u = &mut self.users[k];
        match self
            .ring
            .index_of(&jid)
            .and_then(|j| self.ring.slot(u.n, j))
        {
            Some(s) => {
                u.sub[s] = Sub {
                    to: matches!(sub, "to" | "both"),
                    from: matches!(sub, "from" | "both"),
                };
            }
            None if sub == "remove" => {
                u.extra.remove(&jid);
            }
            None => {
                u.extra.insert(jid);
            }
        }
    }

    fn all(&self, f: impl Fn(&User) -> bool) -> bool {
        self.users.iter().all(f)
    }
}

fn parse_status(s: &[u8]) -> Option<(u32, u64)> {
    let s = std::str::from_utf8(s).ok()?;
    let (run, n) = s.trim().split_once(' ')?;
    Some((u32::from_str_radix(run, 16).ok()?, n.parse().ok()?))
}

impl App for FanApp {
    fn online(&mut self, r: &mut Reactor, id: usize, _latency: Duration) {
        let k = self.local(r.tag(id));
        if let Some(u) = self.users.get_mut(k) {
            u.conn = Some(id);
        }
        r.send(
            id,
            format!("<iq type='get' id='roster'><query xmlns='{NS_ROSTER}'/></iq>").as_bytes(),
        );
    }

    fn stanza(&mut self, r: &mut Reactor, id: usize, data: &[u8]) {
        let k = self.local(r.tag(id));
        if k >= self.users.len() {
            return;
        }
        if data.starts_with(b"<presence") {
            self.presence(r, k, data);
        } else if data.starts_with(b"<iq") {
            self.iq(r, k, data);
        }
    }

    fn closed(&mut self, _: &mut Reactor, tag: u64, error: Option<String>) {
        let k = self.local(tag);
        let Some(u) = self.users.get_mut(k) else {
            return;
        };
        u.conn = None;
        if self.phase == Phase::Login && !u.loaded {
            u.loaded = true;
            self.inflight = self.inflight.saturating_sub(1);
        } else if self.phase != Phase::Close {
            self.lost += 1;
        }
        if self.phase != Phase::Close || error.is_some() {
            self.errors
                .add(error.unwrap_or_else(|| "connection closed".into()));
        }
    }

    fn tick(&mut self, r: &mut Reactor) -> bool {
        let now = Instant::now();
        match self.phase {
            Phase::Login => {
                while self.inflight < self.max_inflight
                    && let Some(k) = self.todo.pop()
                {
                    self.inflight += 1;
                    let n = self.users[k].n;
                    let acct = Account {
                        user: self.ctx.user(n),
                        password: self.ctx.common.password.clone(),
                        resource: "fanout".into(),
                    };
                    r.connect(acct, n as u64);
                }
                (self.inflight > 0 || !self.todo.is_empty()) && now < self.deadline
            }
            Phase::Setup => {
                if self.all(User::set_up) || now >= self.deadline {
                    return false;
                }
                if now.duration_since(self.last_kick) >= KICK {
                    self.kick(r);
                }
                true
            }
            Phase::Drain => !self.all(|u| u.seen.iter().all(|s| *s)) && now < self.deadline,
            Phase::Measure => {
                self.fill(r);
                let expected = (self.o.users * self.o.contacts) as u64 * self.o.updates;
                if self.shared.received.load(Relaxed) >= expected {
                    return false;
                }
                let last = self
                    .shared
                    .last_recv
                    .load(Relaxed)
                    .max(self.shared.last_send.load(Relaxed));
                now_ns().saturating_sub(last) < self.o.silence.as_nanos() as u64
                    && now < self.deadline
            }
            Phase::Teardown => {
                self.users
                    .iter()
                    .any(|u| u.removing > 0 && u.conn.is_some())
                    && now < self.deadline
            }
            Phase::Close => r.open() > 0 && now < self.deadline,
        }
    }
}

struct ThreadResult {
    errors: Errors,
    sent: u64,
    received: u64,
    duplicates: u64,
    strays: u64,
    late: u64,
    lost: u64,
}

fn fail(shared: &Shared, why: String) {
    shared.abort.store(true, Relaxed);
    shared
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(why);
}

/// What every thread of a run gets.
struct Run {
    ctx: Arc<Ctx>,
    o: Arc<FanoutOpts>,
    ring: Arc<Ring>,
    shared: Arc<Shared>,
    barrier: Barrier,
    run_id: u32,
    threads: usize,
}

fn thread_main(run: &Run, t: usize) -> Result<ThreadResult> {
    let (ctx, o, shared, barrier) = (&run.ctx, &run.o, &run.shared, &run.barrier);
    let threads = run.threads;
    let mut r = Reactor::new(ctx.cfg.clone())?;
    let c = o.contacts;
    let users: Vec<User> = (t..o.users)
        .step_by(threads)
        .map(|n| User {
            n,
            conn: None,
            loaded: false,
            sub: vec![Sub::default(); c],
            extra: HashSet::new(),
            seen: vec![false; c],
            got: vec![false; c * o.updates as usize],
            sent: 0,
            removing: 0,
        })
        .collect();
    let mut todo: Vec<usize> = (0..users.len()).collect();
    todo.reverse();
    let window_updates = share(o.window as usize, threads, t).max(1) as u64;
    let mut app = FanApp {
        ctx: ctx.clone(),
        o: o.clone(),
        ring: run.ring.clone(),
        shared: shared.clone(),
        run_id: run.run_id,
        thread: t,
        threads,
        phase: Phase::Login,
        users,
        todo,
        inflight: 0,
        max_inflight: share(o.concurrency, threads, t).max(1),
        deadline: Instant::now() + o.setup_timeout,
        last_kick: Instant::now(),
        cursor: 0,
        sent: 0,
        window: window_updates * c as u64,
        received: 0,
        duplicates: 0,
        strays: 0,
        late: 0,
        lost: 0,
        errors: Errors::default(),
        buf: String::with_capacity(4096),
    };

    // 1. Everyone online, with initial presence, and their rosters fetched.
    r.run(&mut app);
    let offline = app.users.iter().filter(|u| u.conn.is_none()).count();
    if offline > 0 {
        fail(shared, format!("{offline} users could not log in"));
    }
    barrier.wait(); // logged in

    // 2. Mutual subscriptions with every contact, nothing else on the rosters.
    if !shared.abort.load(Relaxed) {
        app.phase = Phase::Setup;
        app.deadline = Instant::now() + o.setup_timeout;
        app.kick(&mut r);
        r.run(&mut app);
        let pending = app.users.iter().filter(|u| !u.set_up()).count();
        if pending > 0 {
            fail(
                shared,
                format!(
                    "{pending} users' rosters were not set up within {} s (e.g. user {})",
                    o.setup_timeout.as_secs(),
                    app.users.iter().find(|u| !u.set_up()).map_or(0, |u| u.n)
                ),
            );
        }
    }
    barrier.wait(); // set up

    // 3. Every contact's initial presence has arrived.
    if !shared.abort.load(Relaxed) {
        app.phase = Phase::Drain;
        app.deadline = Instant::now() + o.setup_timeout;
        r.run(&mut app);
        let unseen: usize = app
            .users
            .iter()
            .map(|u| u.seen.iter().filter(|s| !**s).count())
            .sum();
        if unseen > 0 {
            app.errors.add(format!(
                "{unseen} contacts' initial presence did not arrive within {} s",
                o.setup_timeout.as_secs()
            ));
        }
    }
    barrier.wait(); // drained
    barrier.wait(); // go

    // 4. The measured updates.
    if !shared.abort.load(Relaxed) {
        app.phase = Phase::Measure;
        app.deadline = Instant::now() + MEASURE_LIMIT;
        r.run(&mut app);
    }
    app.phase = Phase::Teardown;
    barrier.wait(); // measured

    // 5. Optionally empty the rosters again; then log out.
    if o.teardown {
        app.deadline = Instant::now() + o.setup_timeout;
        for k in 0..app.users.len() {
            if app.users[k].conn.is_none() {
                continue;
            }
            let n = app.users[k].n;
            for s in 0..c {
                let _ = write!(
                    app.buf,
                    "<iq type='set' id='rm{s}'><query xmlns='{NS_ROSTER}'><item jid='{}' subscription='remove'/></query></iq>",
                    app.ring.bare(app.ring.contact(n, s))
                );
            }
            app.users[k].removing = c;
            app.send(&mut r, k);
        }
        r.run(&mut app);
    }
    app.phase = Phase::Close;
    app.deadline = Instant::now() + Duration::from_secs(30);
    for u in &app.users {
        if let Some(id) = u.conn {
            r.close(id);
        }
    }
    r.run(&mut app);
    Ok(ThreadResult {
        errors: app.errors,
        sent: app.sent,
        received: app.received,
        duplicates: app.duplicates,
        strays: app.strays,
        late: app.late,
        lost: app.lost,
    })
}

pub fn run(ctx: Arc<Ctx>, o: FanoutOpts) -> Result<()> {
    let (u, c, m) = (o.users, o.contacts, o.updates);
    if c == 0 || !c.is_multiple_of(2) {
        bail!("--contacts must be even and at least 2 (user i's contacts are i±1 … i±contacts/2)");
    }
    if u <= c {
        bail!("--user-count ({u}) must be more than --contacts ({c})");
    }
    if u > ctx.common.accounts {
        bail!(
            "{u} users need {u} accounts; --accounts is {}",
            ctx.common.accounts
        );
    }
    if m == 0 {
        bail!("--updates must be at least 1");
    }
    let o = Arc::new(o);
    let ring = Arc::new(Ring {
        users: u,
        half: c / 2,
        pattern: ctx.common.users.clone(),
        domain: ctx.common.domain.clone(),
    });
    let threads = ctx.threads.min(u);
    let shared = Arc::new(Shared {
        delivered_from: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        received: AtomicU64::new(0),
        last_recv: AtomicU64::new(0),
        last_send: AtomicU64::new(0),
        abort: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
    });
    let run = Arc::new(Run {
        ctx: ctx.clone(),
        o: o.clone(),
        ring,
        shared: shared.clone(),
        barrier: Barrier::new(threads + 1),
        run_id: rand::random(),
        threads,
    });
    let barrier = &run.barrier;
    let mut handles = Vec::new();
    for t in 0..threads {
        let run = run.clone();
        handles.push(std::thread::spawn(move || thread_main(&run, t)));
    }
    let expected = (u * c) as u64 * m;
    eprintln!(
        "fanout: {u} users × {c} contacts × {m} updates = {expected} deliveries expected, window {} updates, {threads} threads",
        o.window
    );
    let t_start = Instant::now();
    barrier.wait(); // logged in
    let login_secs = t_start.elapsed().as_secs_f64();
    barrier.wait(); // set up
    let setup_secs = t_start.elapsed().as_secs_f64() - login_secs;
    barrier.wait(); // drained
    let drain_secs = t_start.elapsed().as_secs_f64() - login_secs - setup_secs;
    let aborted = shared.abort.load(Relaxed);
    if !aborted {
        eprintln!(
            "  logins {login_secs:.2} s, roster set-up {setup_secs:.2} s, initial presence {drain_secs:.2} s"
        );
        // Let the server finish what the initial presence caused before measuring.
        std::thread::sleep(Duration::from_millis(200));
    }
    let probe = CpuProbe::start(ctx.common.pid);
    let t0 = now_ns();
    shared.last_send.store(t0, Relaxed);
    barrier.wait(); // go
    barrier.wait(); // measured
    let (cpu, own) = probe.stop();
    let last = shared.last_recv.load(Relaxed);

    let mut errors = Errors::default();
    let (mut sent, mut received, mut duplicates, mut strays, mut late, mut lost) =
        (0, 0, 0, 0, 0, 0);
    let mut first_err = None;
    for h in handles {
        match h.join().map_err(|_| anyhow!("thread panicked"))? {
            Ok(x) => {
                errors.merge(x.errors);
                sent += x.sent;
                received += x.received;
                duplicates += x.duplicates;
                strays += x.strays;
                late += x.late;
                lost += x.lost;
            }
            Err(e) => first_err = Some(e),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if aborted {
        let why = shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("; ");
        errors.print();
        bail!("fan-out not measured: {why}");
    }
    let secs = last.saturating_sub(t0) as f64 / 1e9;
    let rate = received as f64 / secs.max(1e-9);
    let missing = expected.saturating_sub(received);
    println!(
        "presence fan-out: {received} of {expected} deliveries ({sent} updates sent) in {secs:.3} s = {rate:.0} deliveries/s, {missing} missing"
    );
    if duplicates + strays + late > 0 {
        println!(
            "  also {duplicates} duplicates, {strays} stray presences, {late} late deliveries (not counted)"
        );
    }
    if lost > 0 {
        println!("  {lost} sessions were lost");
    }
    println!("{}", server_cpu_line("", cpu, own, received, "delivery"));
    let mut result = format!(
        "RESULT fanout users={u} contacts={c} updates={m} expected={expected} received={received} missing={missing} duplicates={duplicates} secs={secs:.3} rate={rate:.1}"
    );
    if let Some(ns) = cpu {
        let _ = write!(
            result,
            " server_us_per_delivery={:.3}",
            ns as f64 / received.max(1) as f64 / 1e3
        );
    }
    errors.print();
    println!("{result}");
    if missing > 0 {
        bail!("{missing} of {expected} deliveries missing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(users: usize, contacts: usize) -> Ring {
        Ring {
            users,
            half: contacts / 2,
            pattern: "bench%d".into(),
            domain: "localhost".into(),
        }
    }

    #[test]
    fn slots_are_symmetric() {
        for (u, c) in [(1000, 20), (21, 20), (3, 2), (7, 4)] {
            let r = ring(u, c);
            for i in 0..u {
                let mut seen = HashSet::new();
                for s in 0..c {
                    let j = r.contact(i, s);
                    assert_ne!(i, j);
                    assert!(seen.insert(j), "{u} {c}: {i} has {j} twice");
                    assert_eq!(r.slot(i, j), Some(s));
                    assert!(r.slot(j, i).is_some(), "{j} does not have {i}");
                }
                assert_eq!(r.slot(i, i), None);
            }
        }
        assert_eq!(ring(1000, 20).slot(0, 11), None);
        assert_eq!(ring(1000, 20).slot(0, 989), None);
        assert_eq!(ring(1000, 20).slot(0, 990), Some(19));
    }

    #[test]
    fn jids() {
        let r = ring(100, 4);
        assert_eq!(r.index_of("bench7@localhost/x"), Some(7));
        assert_eq!(r.index_of("Bench7@LOCALHOST"), Some(7));
        assert_eq!(r.index_of("bench07@localhost"), None);
        assert_eq!(r.index_of("bench100@localhost"), None);
        assert_eq!(r.index_of("bench7@elsewhere"), None);
        assert_eq!(r.index_of("localhost"), None);
        assert_eq!(r.bare(3), "bench3@localhost");
        assert_eq!(parse_status(b"ab12 7"), Some((0xab12, 7)));
        assert_eq!(parse_status(b"away"), None);
    }
}
