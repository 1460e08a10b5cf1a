//! What every network subcommand shares: the server address and accounts from the command
//! line, how each connection logs in, and how work is spread over the generator's threads.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::Common;
use crate::reactor::{Account, LoginCfg};
use crate::sasl::Mech;
use crate::{stats, xml};

/// A ping after the initial presence: once answered, the server has processed the login.
pub const SYNC_PING: &str = "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>";

pub fn is_iq_reply(data: &[u8], id: &str) -> bool {
    data.starts_with(b"<iq") && xml::start_attr(data, "id").as_deref() == Some(id)
}

pub struct Ctx {
    pub common: Common,
    pub cfg: Arc<LoginCfg>,
    pub threads: usize,
}

impl Ctx {
    /// Resolves the server, checks `--mech` and `--pid`, and picks the thread count.
    pub fn new(c: Common) -> Result<Arc<Ctx>> {
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
        Ok(Arc::new(Ctx {
            common: c,
            cfg,
            threads: threads.max(1),
        }))
    }

    pub fn user(&self, i: usize) -> String {
        user_name(&self.common.users, i)
    }

    pub fn account(&self, i: usize, resource: String) -> Account {
        Account {
            user: self.user(i % self.common.accounts.max(1)),
            password: self.common.password.clone(),
            resource,
        }
    }

    pub fn bare(&self, i: usize) -> String {
        format!("{}@{}", self.user(i), self.common.domain)
    }

    pub fn with_presence(&self, presence: bool) -> Arc<LoginCfg> {
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

pub fn user_name(pattern: &str, i: usize) -> String {
    if pattern.contains("%d") {
        pattern.replace("%d", &i.to_string())
    } else {
        format!("{pattern}{i}")
    }
}

/// Splits `total` items over `threads` as evenly as possible: thread t gets items t, t+T, ….
pub fn share(total: usize, threads: usize, t: usize) -> usize {
    total / threads + usize::from(t < total % threads)
}

/// Lifts the soft limit on open files to the hard limit (one socket per session).
pub fn raise_fd_limit() {
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}
