//! The one TOML configuration file. Every option has a default, so `wockd run` with no file
//! serves the embedded default: domain `localhost`, data under the XDG data dir, loopback only.
//! README.md documents each option; `wockd config` prints the effective configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Domains this server hosts; the first is the default for clients that send no `to`.
    pub domains: Vec<String>,
    /// Where the database, certificates and per-user folders live.
    /// Default: `$XDG_DATA_HOME/wockd` (usually `~/.local/share/wockd`).
    pub data_dir: Option<PathBuf>,
    /// Client listeners.
    pub listen: Vec<Listener>,
    pub tls: Tls,
    pub limits: Limits,
    pub auth: Auth,
    pub log: Log,
    /// The IM transport (libpurple): other networks as contacts and rooms.
    pub transport: Transport,
    /// The torrent service (librqbit). A file without `[torrent]` gets [`Torrent::default`]
    /// (DHT on, for real use); `wockd run` without a file gets [`Torrent::embedded`].
    #[serde(default)]
    pub torrent: Torrent,
    /// Per-account storage limits of private XML, PEP and vCards.
    pub quotas: Quotas,
    /// The message archive (XEP-0313): retention and size.
    pub mam: Mam,
    /// Federation (server-to-server, RFC 6120). A file without `[s2s]` gets [`S2s::default`]
    /// (on, listening on port 5269 of every address); `wockd run` without a file gets
    /// [`S2s::embedded`] (off: nothing listens, remote stanzas bounce).
    #[serde(default)]
    pub s2s: S2s,
    /// Where external components (XEP-0114) connect; listens only when `components` is not
    /// empty.
    pub component_listener: ComponentListener,
    /// External components this server hosts (`[[components]]`): Biboumi, Slidge, Spectrum 2,
    /// wockd's own gateways in another process.
    pub components: Vec<Component>,
    /// `wockd component`: this process's services (transport, torrent) attach to another
    /// XMPP server as XEP-0114 components, one stream per service domain.
    pub component_link: Vec<ComponentLink>,
}

/// One `[[component_link]]`: a service of this process, attached to another server.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentLink {
    /// The service's domain (the transport's `irc.example.org`, the torrent service's), as the
    /// host server's component configuration names it.
    pub domain: String,
    /// The host server's component port.
    pub address: Option<SocketAddr>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

impl std::fmt::Debug for ComponentLink {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentLink")
            .field("domain", &self.domain)
            .field("address", &self.address)
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

impl ComponentLink {
    pub fn load_secret(&self) -> Result<String, ConfigError> {
        load_secret(&self.domain, &self.secret, &self.secret_file)
    }
}

/// A component's shared secret: `secret`, or the first line of `secret_file`.
fn load_secret(
    domain: &str,
    secret: &Option<String>,
    secret_file: &Option<PathBuf>,
) -> Result<String, ConfigError> {
    let secret = match (secret, secret_file) {
        (Some(s), None) => s.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                ConfigError::Invalid(format!(
                    "component `{domain}`: cannot read `secret_file` {}: {e}",
                    path.display()
                ))
            })?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        _ => {
            return Err(ConfigError::Invalid(format!(
                "component `{domain}` needs exactly one of `secret` and `secret_file`"
            )));
        }
    };
    if secret.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "component `{domain}` has an empty secret"
        )));
    }
    Ok(secret)
}

/// `[component_listener]` (src/component/).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentListener {
    /// Default `127.0.0.1:5347`: components are trusted peers on the same machine or network;
    /// the stream is plaintext like Prosody's and ejabberd's component ports.
    pub listen: Vec<SocketAddr>,
    /// Bytes a second one component stream may read, and the burst (a gateway carries many
    /// users' traffic).
    pub read_rate: usize,
    pub read_burst: usize,
    /// Stanzas a component may leave unread before its stream is closed is bounded by the
    /// output cap of links; this bounds how long a handshake may take.
    pub handshake_timeout_secs: u64,
}

impl Default for ComponentListener {
    fn default() -> Self {
        ComponentListener {
            listen: vec!["127.0.0.1:5347".parse().expect("constant address")],
            read_rate: 4 * 1024 * 1024,
            read_burst: 16 * 1024 * 1024,
            handshake_timeout_secs: 30,
        }
    }
}

/// One `[[components]]` entry.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Component {
    /// The component's domain (`biboumi.example.org`): every stanza for it or a JID under it
    /// goes to the component.
    pub domain: String,
    /// The shared secret of the handshake, or `secret_file` (its first line).
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// XEP-0356 privileges granted to it.
    pub privileges: Privileges,
}

impl std::fmt::Debug for Component {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("domain", &self.domain)
            .field("secret_file", &self.secret_file)
            .field("privileges", &self.privileges)
            .finish_non_exhaustive()
    }
}

impl Component {
    /// The shared secret: `secret`, or the first line of `secret_file`.
    pub fn load_secret(&self) -> Result<String, ConfigError> {
        load_secret(&self.domain, &self.secret, &self.secret_file)
    }
}

/// XEP-0356 permissions of a component (all `none` by default).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Privileges {
    /// Users' rosters: `none`, `get`, `set`, `both`.
    pub roster: Access,
    /// `outgoing`: send messages on behalf of users (carbons and archive as if they had sent
    /// them from a client).
    pub message: MessagePerm,
    /// `managed_entity`: users' own presence; `roster`: also their contacts' presence.
    pub presence: PresencePerm,
    /// IQs on behalf of users, by namespace (XEP-0356 v2 `privileged_iq`):
    /// `{ "http://jabber.org/protocol/pubsub" = "both" }`.
    pub iq: std::collections::BTreeMap<String, Access>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    #[default]
    None,
    Get,
    Set,
    Both,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Get => "get",
            Access::Set => "set",
            Access::Both => "both",
        }
    }
    pub fn allows_get(self) -> bool {
        matches!(self, Access::Get | Access::Both)
    }
    pub fn allows_set(self) -> bool {
        matches!(self, Access::Set | Access::Both)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MessagePerm {
    #[default]
    None,
    Outgoing,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PresencePerm {
    #[default]
    None,
    ManagedEntity,
    Roster,
}

/// `[s2s]`: links to other XMPP servers (src/s2s/).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S2s {
    /// Federate at all. Off: nothing listens and stanzas to other domains bounce with
    /// `remote-server-not-found`.
    pub enabled: bool,
    /// Listeners for incoming server connections (`direct_tls` for XEP-0368).
    pub listen: Vec<S2sListener>,
    /// Accept and use XEP-0220 dialback where a certificate cannot be verified (Prosody's
    /// `s2s_secure_auth = false`). Off: only peers with a valid certificate federate.
    pub dialback: bool,
    /// Refuse peers that cannot do TLS, both ways (Prosody's `s2s_require_encryption`).
    pub require_tls: bool,
    /// Domains that must present a valid certificate even while `dialback` is on.
    pub secure_domains: Vec<String>,
    /// Domains allowed to authenticate by dialback even while `dialback` is off.
    pub insecure_domains: Vec<String>,
    /// Only these remote domains federate (empty: all but `block`).
    pub allow: Vec<String>,
    /// These remote domains never federate.
    pub block: Vec<String>,
    /// Static routes: remote domain → `host:port` (or `ip:port`), used instead of DNS, for
    /// split-horizon set-ups and tests. A route's address is trusted even when private.
    pub routes: std::collections::BTreeMap<String, String>,
    /// Extra PEM CA certificates trusted for peers, besides the system trust store.
    pub ca_file: Option<PathBuf>,
    /// Connect to remote servers whose DNS names resolve to loopback, private or link-local
    /// addresses (off: such addresses are skipped, so a remote name cannot point the server
    /// at its own network).
    pub allow_private_addresses: bool,
    /// Close a link after this many seconds without a stanza either way.
    pub idle_timeout_secs: u64,
    /// Give up setting up a link (DNS, connect, TLS, authentication) after this many seconds.
    pub connect_timeout_secs: u64,
    /// Stanzas queued for a remote domain while its link is being set up; beyond that they
    /// bounce with `resource-constraint`.
    pub max_queue: usize,
    /// Incoming links authenticated at once for one remote domain to one of ours (twice as
    /// many unauthenticated ones from one address).
    pub max_links_per_domain: usize,
    /// Bytes a second one incoming or outgoing link may read (a link carries all of a
    /// server's traffic with us, so more than a client's `[limits] read_rate`), and the burst.
    pub read_rate: usize,
    pub read_burst: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S2sListener {
    pub address: SocketAddr,
    #[serde(default)]
    pub direct_tls: bool,
}

impl Default for S2s {
    fn default() -> Self {
        S2s {
            enabled: true,
            listen: vec![
                S2sListener {
                    address: "0.0.0.0:5269".parse().expect("constant address"),
                    direct_tls: false,
                },
                S2sListener {
                    address: "[::]:5269".parse().expect("constant address"),
                    direct_tls: false,
                },
            ],
            dialback: true,
            require_tls: true,
            secure_domains: Vec::new(),
            insecure_domains: Vec::new(),
            allow: Vec::new(),
            block: Vec::new(),
            routes: std::collections::BTreeMap::new(),
            ca_file: None,
            allow_private_addresses: false,
            idle_timeout_secs: 600,
            connect_timeout_secs: 30,
            max_queue: 1000,
            max_links_per_domain: 4,
            read_rate: 4 * 1024 * 1024,
            read_burst: 16 * 1024 * 1024,
        }
    }
}

impl S2s {
    /// The embedded default: no federation, nothing exposed.
    pub fn embedded() -> S2s {
        S2s {
            enabled: false,
            listen: Vec::new(),
            ..S2s::default()
        }
    }

    /// Whether `domain` may federate with us (allow/block lists).
    pub fn permits(&self, domain: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|d| d.eq_ignore_ascii_case(domain));
        !listed(&self.block) && (self.allow.is_empty() || listed(&self.allow))
    }

    /// Whether `domain` may authenticate by dialback.
    pub fn dialback_for(&self, domain: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|d| d.eq_ignore_ascii_case(domain));
        if listed(&self.secure_domains) {
            return false;
        }
        self.dialback || listed(&self.insecure_domains)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port`; IPv6 in brackets, e.g. `[::1]:5222`.
    pub address: SocketAddr,
    /// XEP-0368 direct TLS: TLS from the first byte instead of STARTTLS.
    #[serde(default)]
    pub direct_tls: bool,
    /// Treat this listener as trusted loopback: PLAIN and legacy iq-auth are allowed without
    /// TLS. Only accepted on loopback addresses.
    #[serde(default)]
    pub trusted_loopback: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain. Empty: a self-signed certificate for `domains` is made on first
    /// run under `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Certificates of particular domains (`[[tls.certificates]] domain = … cert = … key = …`):
    /// chosen by the name a peer asks for (SNI), and presented by federation links from that
    /// domain. Reloaded on SIGHUP without dropping sessions.
    pub certificates: Vec<DomainCertificate>,
    /// A directory of per-domain certificates: `<domain>.crt` with `<domain>.key`, or
    /// `<domain>/fullchain.pem` with `<domain>/privkey.pem` (certbot's layout). Re-read on
    /// SIGHUP.
    pub certificates_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainCertificate {
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest stanza accepted, in bytes (RFC 6120 §13.12 asks servers to have one).
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_depth: u32,
    /// Seconds a connection may take to authenticate before `connection-timeout`.
    pub auth_timeout_secs: u64,
    /// Seconds of silence after which the server sends a whitespace keepalive.
    pub keepalive_secs: u64,
    /// Seconds of silence after which a stream is closed with `connection-timeout`.
    pub idle_timeout_secs: u64,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Output bytes a connection may leave unread before its stream is closed
    /// (`policy-violation`); what it never acknowledged goes back to the mailbox.
    pub max_output_bytes: usize,
    /// Bytes of unacknowledged stanzas (XEP-0198) kept per session, also while it hibernates;
    /// past this the session ends and its unacknowledged messages go to the mailbox.
    pub max_unacked_bytes: usize,
    /// Connections from one address (IPv6: one /64); more are refused.
    pub max_connections_per_ip: usize,
    /// Unauthenticated connections from one address; a new one evicts the oldest.
    pub max_unauthenticated_per_ip: usize,
    /// Unauthenticated connections in all; a new one evicts the oldest.
    pub max_unauthenticated: usize,
    /// Read rate of a connection before authentication, bytes per second, and its burst.
    pub read_rate_pre_auth: usize,
    pub read_burst_pre_auth: usize,
    /// Read rate of an authenticated client connection, bytes per second, and its burst.
    pub read_rate: usize,
    pub read_burst: usize,
    /// Failed logins (SASL, iq-auth) from one address per minute before further attempts
    /// from it fail at once with `temporary-auth-failure`.
    pub max_auth_failures_per_ip: usize,
    /// Seconds the server waits for a client's answer to an IQ it sent (XEP-0115 caps
    /// queries); then the query is given up as if answered with `remote-server-timeout`.
    pub server_iq_timeout_secs: u64,
    /// Most IQs the server waits an answer for from one session; asking one more gives up the
    /// oldest.
    pub max_pending_iqs: usize,
}

/// `[quotas]`: what one account may store on the server. The error a client gets when a
/// request would exceed one is documented with each module and in README.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// XEP-0049 private XML: most bytes (serialised XML) of all of an account's items.
    pub private_max_bytes: usize,
    /// XEP-0049 private XML: most items (distinct namespace + element name) per account.
    pub private_max_items: usize,
    /// XEP-0163 PEP: most nodes per account.
    pub pep_max_nodes: u64,
    /// XEP-0163 PEP: most items one node keeps (what `pubsub#max_items = max` means); older
    /// items are dropped on publish, as XEP-0060 says.
    pub pep_max_items: u32,
    /// XEP-0163 PEP: largest item payload, in bytes of serialised XML.
    pub pep_max_item_bytes: usize,
    /// XEP-0054 vcard-temp: largest vCard, in bytes of serialised XML (photos included).
    pub vcard_max_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            private_max_bytes: 1024 * 1024,
            private_max_items: 256,
            pep_max_nodes: 256,
            pep_max_items: 1000,
            pep_max_item_bytes: 256 * 1024,
            vcard_max_bytes: 256 * 1024,
        }
    }
}

/// `[mam]`: how long and how much the message archive keeps (it is also the offline store).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mam {
    /// How long archived messages are kept, e.g. `"1y"`, `"90days"`, `"6months"` (humantime
    /// syntax); `"forever"` keeps them forever.
    pub keep: String,
    /// Most messages one account's archive keeps (0: no limit); the cleanup drops the oldest
    /// beyond it.
    pub max_messages_per_account: u64,
    /// Seconds between two cleanup passes (retention and the size limit).
    pub cleanup_interval_secs: u64,
}

impl Default for Mam {
    fn default() -> Self {
        Mam {
            keep: "forever".to_owned(),
            max_messages_per_account: 0,
            cleanup_interval_secs: 600,
        }
    }
}

impl Mam {
    /// `keep` as a duration; `None` for forever. Checked by [`Config::validate`].
    pub fn keep(&self) -> Option<std::time::Duration> {
        match self.keep.trim() {
            "" | "forever" | "never" => None,
            s => humantime::parse_duration(s).ok(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// PBKDF2 iterations for new SCRAM keys (RFC 7677 asks for at least 4096).
    pub scram_iterations: u32,
    /// Offer XEP-0078 legacy authentication (plaintext only, where PLAIN is allowed).
    pub legacy_auth: bool,
    /// Failed SASL attempts before the stream is closed.
    pub max_failures: u32,
    /// Let anyone create an account in-band (XEP-0077) before logging in, on streams where
    /// passwords may be sent (TLS or trusted loopback). Off by default: accounts are made with
    /// `wockd adduser`. Changing one's password and deleting one's account are always allowed.
    pub registration: bool,
    /// Threads that run PBKDF2 for plaintext passwords (PLAIN, iq-auth, registration, password
    /// changes) off the main loop. 0: one less than the number of CPUs, at least one.
    pub kdf_threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter such as `wockd=debug`.
    pub level: String,
    /// Log every XML stanza in and out (at info level), with SASL and iq-auth payloads redacted.
    pub xml: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Transport {
    /// Run libpurple inside the server and offer the services below.
    pub enabled: bool,
    /// One service JID per network. Empty: `irc.<domain>` (prpl-irc) and `xmpp.<domain>`
    /// (prpl-jabber) for the first hosted domain.
    pub services: Vec<TransportService>,
    /// Seconds without any data from a legacy server after which its connection is taken for
    /// dead and re-made (a NAT that dropped it, a hung server). libpurple's keepalives make an
    /// idle but healthy connection hear from its server at least every ~90 s. 0: never.
    pub stall_timeout: u64,
    /// Let legacy accounts connect to non-public addresses (loopback, private, link-local…,
    /// this host's own addresses). Off: a registration or settings change naming such a
    /// server is refused, and libpurple's name lookups drop such addresses. Each service can
    /// override it with its own `allow_private_addresses`.
    pub allow_private_addresses: bool,
    /// `embedded` (default): libpurple runs inside the server. `separate`: the server starts
    /// the transport as its own child process (`wockd component`) attached over a loopback
    /// component link with XEP-0356 privileges, and restarts it with backoff if it dies, so a
    /// protocol plugin that crashes takes only the gateway down.
    pub process: TransportProcess,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TransportProcess {
    #[default]
    Embedded,
    Separate,
}

impl Transport {
    /// The services offered: `services`, or the default pair for `domain` (the first hosted).
    pub fn effective_services(&self, domain: &str) -> Vec<TransportService> {
        if !self.services.is_empty() {
            return self.services.clone();
        }
        [
            (format!("irc.{domain}"), "prpl-irc"),
            (format!("xmpp.{domain}"), "prpl-jabber"),
        ]
        .into_iter()
        .map(|(domain, prpl)| TransportService {
            domain,
            prpl: prpl.into(),
            name: None,
            defaults: std::collections::BTreeMap::new(),
            allow_private_addresses: None,
        })
        .collect()
    }
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            enabled: false,
            services: Vec::new(),
            process: TransportProcess::Embedded,
            stall_timeout: 300,
            allow_private_addresses: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportService {
    /// The service's domain, e.g. `irc.localhost`; must not be a hosted domain.
    pub domain: String,
    /// The libpurple protocol plugin id, e.g. `prpl-irc`, `prpl-jabber`.
    pub prpl: String,
    /// Display name in service discovery; default: the plugin's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Protocol option defaults for new accounts (setting name → value), e.g.
    /// `ratelimit-interval = "2"`; users can change them in the registration form.
    #[serde(default)]
    pub defaults: std::collections::BTreeMap<String, String>,
    /// Overrides `[transport] allow_private_addresses` for this service.
    #[serde(default)]
    pub allow_private_addresses: Option<bool>,
}

/// `[torrent]`: remote BitTorrent downloads over XMPP (src/torrent/).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Torrent {
    pub enabled: bool,
    /// The service's address. Default: `torrent.<first domain>`.
    pub domain: Option<String>,
    /// Root of the per-user download folders (`<root>/<user@domain>/`). Default:
    /// `<data_dir>/downloads`.
    pub download_dir: Option<PathBuf>,
    /// Most jobs one user may have (0: no limit).
    pub max_jobs_per_user: u32,
    /// Most bytes all of one user's torrents may add up to (0: no limit).
    pub max_bytes_per_user: u64,
    /// Mainline DHT (finds peers for magnets without trackers; talks to the internet).
    pub dht: bool,
    /// Local service discovery (multicast on the LAN).
    pub lsd: bool,
    /// Ask the router to forward the listening port (UPnP).
    pub upnp: bool,
    /// Address for incoming peer connections; none: only outgoing connections.
    pub listen_address: Option<std::net::IpAddr>,
    /// First and last port tried for incoming peer connections (`[0, 0]`: any free port).
    pub listen_ports: [u16; 2],
    /// Bind every torrent socket to this network device (SO_BINDTODEVICE), e.g. `lo`, `wg0`.
    pub bind_device: Option<String>,
    /// Limits for fetching a .torrent from an http(s) URL.
    pub fetch_timeout_secs: u64,
    pub fetch_max_bytes: u64,
    /// Allow .torrent URLs, peers and trackers on loopback, private, link-local and other
    /// non-public addresses and on this host's own (off: such URLs and peers are refused and
    /// such trackers left out, so users cannot make the server probe its own network; see
    /// `src/torrent/guard.rs`).
    pub fetch_private_addresses: bool,
    /// How long a magnet may wait for its metadata before the job fails.
    pub metadata_timeout_secs: u64,
    /// Interval of the periodic progress messages a user can switch on (0: never offered).
    pub progress_interval_secs: u64,
    /// Session-wide rate limits in KiB/s (0: unlimited).
    pub download_limit_kib: u32,
    pub upload_limit_kib: u32,
}

impl Default for Torrent {
    fn default() -> Self {
        Torrent {
            enabled: true,
            domain: None,
            download_dir: None,
            max_jobs_per_user: 100,
            max_bytes_per_user: 0,
            dht: true,
            lsd: false,
            upnp: false,
            listen_address: Some(std::net::Ipv4Addr::UNSPECIFIED.into()),
            listen_ports: [6881, 6889],
            bind_device: None,
            fetch_timeout_secs: 30,
            fetch_max_bytes: 10 * 1024 * 1024,
            fetch_private_addresses: false,
            metadata_timeout_secs: 600,
            progress_interval_secs: 600,
            download_limit_kib: 0,
            upload_limit_kib: 0,
        }
    }
}

impl Torrent {
    /// What `wockd run` without a configuration file uses: nothing that announces this machine
    /// beyond the torrents a user adds — no DHT, no LAN multicast, no UPnP, no listening port.
    pub fn embedded() -> Torrent {
        Torrent {
            dht: false,
            lsd: false,
            upnp: false,
            listen_address: None,
            ..Torrent::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domains: vec!["localhost".to_owned()],
            data_dir: None,
            listen: vec![
                Listener::loopback("127.0.0.1:5222"),
                Listener::loopback("[::1]:5222"),
            ],
            tls: Tls::default(),
            limits: Limits::default(),
            auth: Auth::default(),
            log: Log::default(),
            transport: Transport::default(),
            torrent: Torrent::embedded(),
            quotas: Quotas::default(),
            mam: Mam::default(),
            s2s: S2s::embedded(),
            component_listener: ComponentListener::default(),
            components: Vec::new(),
            component_link: Vec::new(),
        }
    }
}

impl Listener {
    fn loopback(addr: &str) -> Listener {
        Listener {
            address: addr.parse().expect("constant address"),
            direct_tls: false,
            trusted_loopback: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            auth_timeout_secs: 60,
            keepalive_secs: 120,
            idle_timeout_secs: 600,
            max_connections: 10_000,
            max_output_bytes: 4 * 1024 * 1024,
            max_unacked_bytes: 8 * 1024 * 1024,
            max_connections_per_ip: 256,
            max_unauthenticated_per_ip: 64,
            max_unauthenticated: 1024,
            read_rate_pre_auth: 32 * 1024,
            read_burst_pre_auth: 128 * 1024,
            read_rate: 1024 * 1024,
            read_burst: 4 * 1024 * 1024,
            max_auth_failures_per_ip: 20,
            server_iq_timeout_secs: 60,
            max_pending_iqs: 32,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            scram_iterations: 4096,
            legacy_auth: true,
            max_failures: 3,
            registration: false,
            kdf_threads: 0,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_owned(),
            xml: false,
        }
    }
}

impl Config {
    /// Reads `path`, or the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.domains.is_empty() {
            return Err(ConfigError::Invalid(
                "`domains` must name at least one domain".into(),
            ));
        }
        for d in &self.domains {
            if jid::BareJid::new(d)
                .map(|j| j.node().is_some())
                .unwrap_or(true)
            {
                return Err(ConfigError::Invalid(format!("`{d}` is not a valid domain")));
            }
        }
        for l in &self.listen {
            if l.trusted_loopback && !l.address.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "listener {} is marked trusted_loopback but is not a loopback address",
                    l.address
                )));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "`tls.cert` and `tls.key` go together".into(),
            ));
        }
        if self.limits.max_stanza_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "`limits.max_stanza_bytes` must be at least 4096".into(),
            ));
        }
        for t in &self.transport.services {
            if self.is_hosted(&t.domain)
                || jid::BareJid::new(&t.domain)
                    .map(|j| j.node().is_some())
                    .unwrap_or(true)
            {
                return Err(ConfigError::Invalid(format!(
                    "transport service `{}` must be a valid domain that is not a hosted one",
                    t.domain
                )));
            }
        }
        // [torrent]
        let t = &self.torrent;
        if t.enabled {
            let d = self.torrent_domain();
            if self.is_hosted(&d)
                || jid::BareJid::new(&d)
                    .map(|j| j.node().is_some())
                    .unwrap_or(true)
            {
                return Err(ConfigError::Invalid(format!(
                    "`torrent.domain` `{d}` must be a valid domain that is not a hosted one"
                )));
            }
            if t.listen_ports[0] > t.listen_ports[1] {
                return Err(ConfigError::Invalid(
                    "`torrent.listen_ports` must be [first, last]".into(),
                ));
            }
            if t.fetch_timeout_secs == 0 || t.metadata_timeout_secs == 0 || t.fetch_max_bytes == 0 {
                return Err(ConfigError::Invalid(
                    "`torrent.fetch_timeout_secs`, `fetch_max_bytes` and `metadata_timeout_secs` must be positive".into(),
                ));
            }
        }
        let keep = self.mam.keep.trim();
        if !matches!(keep, "" | "forever" | "never")
            && humantime::parse_duration(keep).map_or(true, |d| d.is_zero())
        {
            return Err(ConfigError::Invalid(format!(
                "`mam.keep` `{keep}` must be a duration such as \"1y\" or \"90days\", or \"forever\""
            )));
        }
        if self.mam.cleanup_interval_secs == 0
            || self.limits.server_iq_timeout_secs == 0
            || self.limits.max_pending_iqs == 0
        {
            return Err(ConfigError::Invalid(
                "`mam.cleanup_interval_secs`, `limits.server_iq_timeout_secs` and `limits.max_pending_iqs` must be positive".into(),
            ));
        }
        for (domain, addr) in &self.s2s.routes {
            if self.is_hosted(domain) {
                return Err(ConfigError::Invalid(format!(
                    "`s2s.routes` names `{domain}`, which this server hosts"
                )));
            }
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "`s2s.routes` for `{domain}`: `{addr}` is not host:port"
                )));
            }
        }
        if self.s2s.enabled
            && (self.s2s.connect_timeout_secs == 0
                || self.s2s.idle_timeout_secs == 0
                || self.s2s.max_links_per_domain == 0)
        {
            return Err(ConfigError::Invalid(
                "`s2s.connect_timeout_secs`, `idle_timeout_secs` and `max_links_per_domain` must be positive".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.components {
            if jid::BareJid::new(&c.domain).map_or(true, |j| j.node().is_some()) {
                return Err(ConfigError::Invalid(format!(
                    "component domain `{}` is not a domain",
                    c.domain
                )));
            }
            if self.is_hosted(&c.domain) || !seen.insert(c.domain.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "component domain `{}` is hosted here or named twice",
                    c.domain
                )));
            }
            c.load_secret()?;
            if c.privileges.presence == PresencePerm::Roster && !c.privileges.roster.allows_get() {
                return Err(ConfigError::Invalid(format!(
                    "component `{}`: presence = \"roster\" needs roster = \"get\" or \"both\" (XEP-0356 §7)",
                    c.domain
                )));
            }
        }
        for l in &self.component_link {
            if l.address.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "`component_link` `{}` needs the host server's `address`",
                    l.domain
                )));
            }
            l.load_secret()?;
        }
        if !self.components.is_empty() && self.component_listener.handshake_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "`component_listener.handshake_timeout_secs` must be positive".into(),
            ));
        }
        if self.auth.scram_iterations < 4096 {
            return Err(ConfigError::Invalid(
                "`auth.scram_iterations` must be at least 4096".into(),
            ));
        }
        Ok(())
    }

    /// The data directory: configured, or `$XDG_DATA_HOME/wockd`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("wockd")
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir().join("wockd.sqlite")
    }

    /// The torrent service's domain: configured, or `torrent.<first domain>`.
    pub fn torrent_domain(&self) -> String {
        self.torrent
            .domain
            .clone()
            .unwrap_or_else(|| format!("torrent.{}", self.default_domain()))
    }

    /// Root of the per-user download folders: configured, or `<data_dir>/downloads`.
    pub fn torrent_download_dir(&self) -> PathBuf {
        self.torrent
            .download_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("downloads"))
    }

    pub fn is_hosted(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    /// Whether `domain` is an external component's (`[[components]]`).
    pub fn is_component(&self, domain: &str) -> bool {
        self.components.iter().any(|c| c.domain == domain)
    }

    pub fn default_domain(&self) -> &str {
        &self.domains[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "from-a-file\nsecond line ignored\n").unwrap();
        let text = format!(
            "domains = ['example.org']\n[[components]]\ndomain = 'irc.example.org'\nsecret_file = '{}'\n\
             privileges.roster = 'both'\nprivileges.message = 'outgoing'\n\
             privileges.iq = {{ 'http://jabber.org/protocol/pubsub' = 'set' }}\n",
            secret.display()
        );
        let c: Config = toml::from_str(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.components[0].load_secret().unwrap(), "from-a-file");
        assert!(c.is_component("irc.example.org") && !c.is_component("example.org"));
        // The secret is never printed.
        let mut with_secret = c.components[0].clone();
        with_secret.secret_file = None;
        with_secret.secret = Some("hunter2".into());
        assert!(!format!("{with_secret:?}").contains("hunter2"));
        let bad = |extra: &str| {
            let c: Config = toml::from_str(&format!("domains = ['example.org']\n{extra}")).unwrap();
            c.validate().unwrap_err().to_string()
        };
        assert!(
            bad("[[components]]\ndomain = 'example.org'\nsecret = 'x'\n").contains("hosted here")
        );
        assert!(bad("[[components]]\ndomain = 'a.example.org'\n").contains("exactly one"));
        assert!(bad("[[components]]\ndomain = 'a.example.org'\nsecret = ''\n").contains("empty"));
        assert!(
            bad("[[components]]\ndomain = 'a@example.org'\nsecret = 'x'\n")
                .contains("not a domain")
        );
        assert!(
            bad("[[components]]\ndomain = 'a.example.org'\nsecret = 'x'\n[[components]]\ndomain = 'a.example.org'\nsecret = 'y'\n")
                .contains("twice")
        );
        assert!(
            bad("[[components]]\ndomain = 'a.example.org'\nsecret = 'x'\nprivileges.presence = 'roster'\n")
                .contains("roster")
        );
        assert!(
            bad("[[component_link]]\ndomain = 'a.example.org'\nsecret = 'x'\n").contains("address")
        );
        assert!(
            bad("[[components]]\ndomain = 'a.example.org'\nsecret_file = '/nonexistent/wockd-secret'\n")
                .contains("cannot read")
        );
    }

    #[test]
    fn default_is_loopback_and_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.listen.iter().all(|l| l.address.ip().is_loopback()));
    }

    #[test]
    fn parses_file_and_refuses_trusted_public_listener() {
        let c: Config = toml::from_str(
            "domains = ['example.org']\n[[listen]]\naddress = '0.0.0.0:5222'\n[[listen]]\naddress = '[::]:5223'\ndirect_tls = true\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.listen[1].direct_tls);
        let bad: Config =
            toml::from_str("[[listen]]\naddress = '0.0.0.0:5222'\ntrusted_loopback = true\n")
                .unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }

    #[test]
    fn mam_keep_is_a_duration_or_forever() {
        let c = Config::default();
        assert_eq!(c.mam.keep(), None);
        let c: Config = toml::from_str("[mam]\nkeep = '1y'\n").unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.mam.keep(),
            Some(std::time::Duration::from_secs(365 * 86_400 + 6 * 3600))
        );
        for bad in ["[mam]\nkeep = 'a while'\n", "[mam]\nkeep = '0s'\n"] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
