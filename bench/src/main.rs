//! `wockd-bench`: a load generator for XMPP servers — wockd, Prosody, ejabberd or any other
//! that accepts client connections over plain TCP (no TLS) with SASL PLAIN or SCRAM.
//!
//! Subcommands:
//! * `logins`: log in and out N times with C in parallel; logins/s and login latency.
//! * `idle`: hold N authenticated sessions; the server's RSS per session (`--pid`).
//! * `messages`: sender/receiver pairs exchange chat messages (bounded window per pair);
//!   msg/s, delivery latency, and the server's CPU per message (`--pid`). With `--offline` the
//!   receivers are offline: the store rate, then with `--drain` the delivery on login.
//! * `rtt`: the unloaded round trip: one pair, one message in flight; latency p50, p99 and
//!   max (every sample kept), and the server's CPU per message.
//! * `fanout`: presence fan-out: U users, each with C contacts in mutual subscriptions (set up
//!   over XMPP, idempotent), each sends M presence updates; deliveries/s, the server's CPU per
//!   delivery, and every delivery counted (exit status 1 if any is missing).
//! * `parse-worst`: wockd's own framer and parser on the worst stanzas the default limits allow
//!   (in-process: time per stanza).
//! * `create-users`: makes the benchN accounts with `wockd adduser` (or prints the Prosody /
//!   ejabberd commands).
//!
//! Every result also goes out as one `RESULT key=value…` line for scripts. The generator is
//! epoll-driven (one loop per `--threads`), caches SCRAM's SaltedPassword per account and
//! batches its writes, so its own CPU use stays small next to the server's; it prints that too.

mod create_users;
mod ctx;
mod fanout;
mod idle;
mod logins;
mod messages;
mod parse;
mod reactor;
mod report;
mod sasl;
mod stats;
mod xml;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use ctx::Ctx;
use fanout::FanoutOpts;
use messages::MsgOpts;

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
        /// Messages per pair exchanged first and not measured.
        #[arg(long, default_value_t = 0)]
        warmup: u64,
    },
    /// Unloaded round trip: one sender, one receiver (accounts 0 and 1), one message in
    /// flight; latency p50/p99/max and server CPU per message.
    Rtt {
        /// Messages measured.
        #[arg(long, default_value_t = 5000)]
        messages: u64,
        /// Messages exchanged first and not measured.
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        /// Seconds the warm-up and the measured run may take (each).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Presence fan-out: U users with C contacts each (mutual subscriptions, set up first over
    /// XMPP), every user sends M presence updates; deliveries/s, server CPU per delivery, and
    /// how many deliveries are missing (exit status 1 if any).
    Fanout {
        /// Users (accounts 0..user-count - 1, all online). (`--users` is the name pattern.)
        #[arg(long, default_value_t = 1000)]
        user_count: usize,
        /// Contacts per user (even): user i's are i±1 … i±contacts/2 (mod users), each with
        /// subscription `both`.
        #[arg(long, default_value_t = 20)]
        contacts: usize,
        /// Presence updates each user sends.
        #[arg(long, default_value_t = 10)]
        updates: u64,
        /// Updates in flight in total (sent, not yet delivered to every contact).
        #[arg(long, default_value_t = 1000)]
        window: u64,
        /// Logins in progress at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Seconds the logins, the subscription set-up and the initial presence may take (each).
        #[arg(long, default_value_t = 120)]
        setup_timeout: u64,
        /// Seconds without any delivery after which the missing ones are given up.
        #[arg(long, default_value_t = 10)]
        silence: u64,
        /// Afterwards remove the contacts from every roster again (the accounts are shared
        /// with the other subcommands, whose logins would otherwise broadcast presence).
        #[arg(long)]
        teardown: bool,
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
    ctx::raise_fd_limit();
    stats::now_ns();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wockd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let c = cli.common;
    match cli.command {
        Cmd::Logins {
            count,
            concurrency,
            warmup,
            no_presence,
        } => logins::run(Ctx::new(c)?, count, concurrency, warmup, !no_presence),
        Cmd::Idle {
            sessions,
            concurrency,
            hold,
            settle,
        } => idle::run(Ctx::new(c)?, sessions, concurrency, hold, settle),
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
            warmup,
        } => messages::run(
            Ctx::new(c)?,
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
                warmup,
                rtt: false,
            },
        ),
        Cmd::Rtt {
            messages,
            warmup,
            timeout,
        } => messages::run(
            Ctx::new(c)?,
            MsgOpts {
                pairs: 1,
                messages,
                window: 1,
                rate: 0,
                body_size: 0,
                full_jid: false,
                offline: false,
                drain: false,
                timeout: Duration::from_secs(timeout),
                warmup,
                rtt: true,
            },
        ),
        Cmd::Fanout {
            user_count,
            contacts,
            updates,
            window,
            concurrency,
            setup_timeout,
            silence,
            teardown,
        } => fanout::run(
            Ctx::new(c)?,
            FanoutOpts {
                users: user_count,
                contacts,
                updates,
                window: window.max(1),
                concurrency: concurrency.max(1),
                setup_timeout: Duration::from_secs(setup_timeout),
                silence: Duration::from_secs(silence.max(1)),
                teardown,
            },
        ),
        Cmd::ParseWorst { rounds } => parse::run(rounds),
        Cmd::CreateUsers {
            count,
            wockd,
            config,
            jobs,
            print_only,
        } => create_users::run(&c, count, wockd, config, jobs, print_only),
    }
}
