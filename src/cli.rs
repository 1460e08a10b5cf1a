//! Command line: `wockd run`, account management, and the admin view.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use jid::BareJid;

use crate::auth::scram::{self, Hash};
use crate::config::Config;
use crate::server::Server;
use crate::store::Store;

#[derive(Parser)]
#[command(name = "wockd", version = crate::VERSION, about = "A personal XMPP gateway server")]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(short, long, global = true, env = "WOCKD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default command).
    Run,
    /// Create an account.
    Adduser(UserArgs),
    /// Change an account's password.
    Passwd(UserArgs),
    /// Delete an account and everything stored for it.
    Deluser {
        /// The account, e.g. alice@localhost.
        jid: String,
    },
    /// List accounts.
    Users,
    /// Print the effective configuration.
    Config,
    /// Show whether the server runs, who is online and the size of each mailbox.
    Status,
    /// Run only the services (IM transport, torrent) attached to another XMPP server as
    /// XEP-0114 components (`[[component_link]]`): no clients, no federation.
    Component,
}

#[derive(clap::Args)]
struct UserArgs {
    /// The account, e.g. alice@localhost.
    jid: String,
    /// Read the password from the first line of standard input instead of a prompt.
    #[arg(long)]
    password_stdin: bool,
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let embedded = cli.config.is_none();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config, embedded),
        Command::Component => run(component_config(config)?, false),
        Command::Adduser(args) => {
            let (store, node, domain) = open_for(&config, &args.jid)?;
            let password = read_password(args.password_stdin, true)?;
            store
                .create_account(&node, &domain, &derive_all(&config, &password)?)
                .map_err(|e| match e {
                    crate::store::StoreError::AccountExists => {
                        anyhow!("{node}@{domain} already exists")
                    }
                    e => e.into(),
                })?;
            println!("created {node}@{domain}");
            Ok(())
        }
        Command::Passwd(args) => {
            let (store, node, domain) = open_for(&config, &args.jid)?;
            if !store.account_exists(&node, &domain)? {
                bail!("no account {node}@{domain}");
            }
            let password = read_password(args.password_stdin, true)?;
            store.set_keys(&node, &domain, &derive_all(&config, &password)?)?;
            println!("password changed for {node}@{domain}");
            Ok(())
        }
        Command::Deluser { jid } => {
            let (store, node, domain) = open_for(&config, &jid)?;
            store.delete_account(&node, &domain).map_err(|e| match e {
                crate::store::StoreError::NoSuchAccount => anyhow!("no account {node}@{domain}"),
                e => e.into(),
            })?;
            println!("deleted {node}@{domain}");
            Ok(())
        }
        Command::Users => {
            let store = open_store(&config)?;
            for (node, domain) in store.list_accounts()? {
                println!("{node}@{domain}");
            }
            Ok(())
        }
        Command::Config => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Status => status(&config),
    }
}

/// `wockd status`: the running server's `online.txt` (see `status.rs`) and the
/// mailbox sizes from the database (readable while the server runs: WAL).
fn status(config: &Config) -> Result<()> {
    use crate::status;
    let dir = config.data_dir();
    match status::read(&dir)
        .with_context(|| format!("reading {}", dir.join(status::FILE).display()))?
    {
        Some(snap) if status::is_running(snap.pid) => {
            println!("server running (pid {})", snap.pid);
            println!("online: {}", snap.sessions.len());
            for (jid, priority) in &snap.sessions {
                match priority {
                    Some(p) => println!("  {jid}  priority {p}"),
                    None => println!("  {jid}  not available"),
                }
            }
            println!("federation links: {}", snap.links.len());
            if !snap.links.is_empty() {
                println!("  direction  peer  tls  auth  stanzas-in  stanzas-out");
            }
            for l in &snap.links {
                println!("  {l}");
            }
            if let Some(pid) = snap.transport_pid {
                println!("transport process: pid {pid}");
            }
            if !snap.components.is_empty() {
                println!("components: {}", snap.components.len());
                println!("  domain  state  stanzas-in  stanzas-out");
            }
            for c in &snap.components {
                println!("  {c}");
            }
        }
        Some(snap) => println!(
            "server not running (pid {} is gone; it did not shut down cleanly)",
            snap.pid
        ),
        None => println!("server not running"),
    }
    let store = open_store(config)?;
    let stats = crate::store::mailbox::stats(store.conn())?;
    let width = stats
        .iter()
        .map(|s| s.username.len() + s.domain.len() + 1)
        .max()
        .unwrap_or(0)
        .max(7);
    println!("mailboxes:");
    println!(
        "  {:width$}  {:>8}  {:>8}",
        "account", "archived", "pending"
    );
    for s in stats {
        let account = format!("{}@{}", s.username, s.domain);
        println!("  {account:width$}  {:>8}  {:>8}", s.archived, s.pending);
    }
    Ok(())
}

fn open_store(config: &Config) -> Result<Store> {
    let path = config.database_path();
    Store::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Validates an account JID (nodeprep through the `jid` crate) against the hosted domains.
fn open_for(config: &Config, jid: &str) -> Result<(Store, String, String)> {
    let bare = BareJid::new(jid).map_err(|e| anyhow!("`{jid}` is not a valid JID: {e}"))?;
    let node = bare
        .node()
        .ok_or_else(|| {
            anyhow!(
                "`{jid}` has no user part; write it as user@{}",
                bare.domain()
            )
        })?
        .to_string();
    let domain = bare.domain().to_string();
    if !config.is_hosted(&domain) {
        bail!(
            "`{domain}` is not a hosted domain (configured: {})",
            config.domains.join(", ")
        );
    }
    Ok((open_store(config)?, node, domain))
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let p = rpassword::prompt_password("Password: ")?;
        if confirm && rpassword::prompt_password("Again: ")? != p {
            bail!("the passwords differ");
        }
        p
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

fn derive_all(config: &Config, password: &str) -> Result<Vec<(Hash, scram::ScramKeys)>> {
    let i = config.auth.scram_iterations;
    Ok(vec![
        (
            Hash::Sha1,
            scram::new_keys(Hash::Sha1, password, i).map_err(|e| anyhow!("{e}"))?,
        ),
        (
            Hash::Sha256,
            scram::new_keys(Hash::Sha256, password, i).map_err(|e| anyhow!("{e}"))?,
        ),
    ])
}

fn random_password() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the server until SIGINT or SIGTERM.
/// `embedded`: no configuration file was given, so the first run also makes a ready account.
/// The configuration of a component process: the services named by `[[component_link]]`
/// only, no client listener, no federation, no hosted users. `domains` in the file name the
/// host's users' domain, for the services' default domains (`irc.<domain>`); the process
/// itself hosts nobody (`component.invalid`), so that the host's users are routed over the
/// link.
pub fn component_config(mut config: Config) -> Result<Config> {
    if config.component_link.is_empty() {
        bail!("`wockd component` needs at least one [[component_link]] in the configuration file");
    }
    let linked = |d: &str| config.component_link.iter().any(|l| l.domain == d);
    config.transport.services = config.transport.effective_services(config.default_domain());
    let services: Vec<_> = config
        .transport
        .services
        .iter()
        .filter(|s| linked(&s.domain))
        .cloned()
        .collect();
    config.transport.enabled = config.transport.enabled && !services.is_empty();
    config.transport.services = services;
    let torrent = config.torrent_domain();
    config.torrent.enabled = config.torrent.enabled && linked(&torrent);
    config.torrent.domain = Some(torrent);
    let served = config.transport.services.len() + usize::from(config.torrent.enabled);
    if served != config.component_link.len() {
        bail!(
            "every [[component_link]] domain must be an enabled service of this process (a `[[transport.services]]` domain or the torrent domain)"
        );
    }
    config.domains = vec!["component.invalid".into()];
    config.listen.clear();
    config.s2s.enabled = false;
    config.components.clear();
    Ok(config)
}

pub fn run(config: Config, embedded: bool) -> Result<()> {
    init_logging(&config);
    raise_open_file_limit();
    // Everything the server writes is its own: mail, keys, legacy passwords (libpurple's
    // accounts.xml), torrents. Files it or a library creates get 0600, directories 0700.
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    let data_dir = config.data_dir();
    crate::store::tighten_dir(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = open_store(&config)?;
    let mut accounts = store.list_accounts()?;
    if embedded && accounts.is_empty() {
        let domain = config.default_domain().to_owned();
        let password = random_password();
        store.create_account("me", &domain, &derive_all(&config, &password)?)?;
        eprintln!("Made the first account: me@{domain}  password: {password}");
        eprintln!("(shown once; change it with `wockd passwd me@{domain}`)");
        accounts = store.list_accounts()?;
    }
    let mut config = config;
    let child = crate::component::child::prepare(&mut config);
    let server = Server::new(config, store, crate::modules::install_all)?;
    let bound = server.start()?;
    crate::modules::install_services(&server);
    if let Some(plan) = child {
        crate::component::child::start(&server, plan);
    }
    crate::status::start(&server);
    print_welcome(&server, &bound, &accounts);

    let main_loop = glib::MainLoop::new(None, false);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let server = Rc::downgrade(&server);
        let main_loop = main_loop.clone();
        glib_unix::unix_signal_add_local(signal, move || {
            tracing::info!("shutting down");
            if let Some(s) = server.upgrade() {
                s.shutdown();
            }
            main_loop.quit();
            glib::ControlFlow::Break
        });
    }
    {
        // SIGHUP: certificates are read again; sessions keep theirs, new handshakes get the
        // new ones. (The rest of the configuration needs a restart.)
        let server = Rc::downgrade(&server);
        glib_unix::unix_signal_add_local(libc::SIGHUP, move || {
            if let Some(s) = server.upgrade() {
                match s.certs.reload(&s.config) {
                    Ok(n) => tracing::info!("SIGHUP: certificates reloaded ({n} per-domain)"),
                    Err(e) => tracing::error!("SIGHUP: certificates not reloaded: {e}"),
                }
            }
            glib::ControlFlow::Continue
        });
    }
    // Start-up (configuration, SQL compilation, certificates) leaves freed memory inside the
    // heap that glibc keeps; give those pages back once, before idling. One call, microseconds.
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
    main_loop.run();
    // What the last loop turn queued for the mailbox, had its commit not run yet.
    if let Err(e) = server.store.stop_writer() {
        tracing::error!("store: writes lost at shutdown: {e}");
    }
    crate::modules::stop_services(&server);
    crate::component::child::stop(&server);
    crate::status::stop(&server);
    Ok(())
}

fn print_welcome(
    server: &Server,
    bound: &[(std::net::SocketAddr, bool)],
    accounts: &[(String, String)],
) {
    let c = &server.config;
    eprintln!("wockd {} serving {}", crate::VERSION, c.domains.join(", "));
    for (addr, tls) in bound {
        eprintln!(
            "  listening on {addr}{}",
            if *tls { " (direct TLS)" } else { " (STARTTLS)" }
        );
    }
    eprintln!("  data: {}", c.data_dir().display());
    let (cert, _) = crate::net::tls::cert_paths(c);
    eprintln!("  certificate: {}", cert.display());
    if accounts.is_empty() {
        eprintln!(
            "No accounts yet. Make one (in another terminal):\n  wockd adduser you@{}",
            c.default_domain()
        );
    } else {
        let list: Vec<String> = accounts
            .iter()
            .take(5)
            .map(|(n, d)| format!("{n}@{d}"))
            .collect();
        let more = accounts.len().saturating_sub(list.len());
        let more = if more > 0 {
            format!(" and {more} more (wockd users)")
        } else {
            String::new()
        };
        eprintln!("  accounts: {}{more}", list.join(", "));
    }
    eprintln!(
        "Connect a client (Gajim, Dino, Profanity…) as that JID, server 127.0.0.1 port {}; \
         accept the self-signed certificate on first use.",
        bound.first().map(|(a, _)| a.port()).unwrap_or(5222)
    );
}

/// Raises the soft limit on open files to the hard limit: every connection is a descriptor,
/// and the default soft limit (1024) is far below what a server is allowed.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::info!("open file limit raised from {old} to {}", lim.rlim_max);
            }
        }
    }
}
