//! Remote BitTorrent downloads over XMPP: the seed's second service ("add a download from any
//! client, learn when it is done even if you were offline").
//!
//! One job model, three front doors, each parsing its input into the same [`command`] and
//! having it carried out by the same `command::apply`:
//! - the seed's namespace `http://wockd.org/ns/torrent` (`add`, `list`, `status`, `pause`,
//!   `resume`, `remove`, `settings`; README.md documents the protocol), both on the user's own
//!   stream with no `to` — the seed's protocol example — and at the service's domain
//!   ([`protocol`]);
//! - XEP-0050 ad-hoc commands with XEP-0004 forms at the service's domain ([`adhoc`]);
//! - chat: a message to the service's domain with a magnet or URL adds it, words such as
//!   `list` or `pause 3` control jobs ([`chat`]).
//!
//! Layers, one file each: [`worker`] runs librqbit on its own thread and tokio runtime and talks
//! to the glib loop only over channels; [`fetch`] downloads .torrent files with limits (on the
//! worker's runtime); [`guard`] decides which peers and trackers the engine may reach;
//! [`jobs`] is the per-user job model; [`store`] its SQL; [`service`] the service itself
//! (routing, notifications, restart reconciliation, account deletion).

pub mod adhoc;
pub mod chat;
mod command;
mod fetch;
mod guard;
pub mod jobs;
mod protocol;
pub mod service;
mod store;
mod worker;

pub use jobs::Failure;
pub use service::{TorrentService, Torrents, forget_account, install, shutdown, stream_torrent};

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::core::{Hooks, Module};
    use crate::stream::Stream;
    use crate::xml::ns;

    #[test]
    fn a_disabled_service_puts_nothing_on_the_stream() {
        let namespaces = |config: &Config| {
            let mut s = Stream::default();
            super::stream_torrent(&mut Module::new(&mut s, &Hooks::default(), config));
            let stage = s.session_stage();
            let mut all: Vec<String> = stage
                .rules()
                .namespaces()
                .chain(stage.disco_features())
                .map(str::to_owned)
                .collect();
            all.extend(
                s.before_auth_stage()
                    .rules()
                    .namespaces()
                    .map(str::to_owned),
            );
            all
        };
        assert_eq!(namespaces(&Config::default()), vec![ns::TORRENT]);
        let mut off = Config::default();
        off.torrent.enabled = false;
        assert!(namespaces(&off).is_empty());
    }

    #[test]
    fn embedded_default_keeps_to_itself_but_a_file_gets_dht() {
        // `wockd run` without a file: nothing announces the machine.
        let t = Config::default().torrent;
        assert!(t.enabled && !t.dht && !t.lsd && !t.upnp && t.listen_address.is_none());
        assert_eq!(t.progress_interval_secs, 600);
        // A configuration file without [torrent] is for real use: DHT on.
        let c: Config = toml::from_str("domains = ['example.org']").unwrap();
        assert!(c.torrent.dht && !c.torrent.lsd && !c.torrent.upnp);
        assert_eq!(c.torrent_domain(), "torrent.example.org");
        let c: Config = toml::from_str("[torrent]\ndht = false\ndomain = 't.example'").unwrap();
        assert!(!c.torrent.dht);
        c.validate().unwrap();
        assert_eq!(c.torrent_domain(), "t.example");
        let bad: Config = toml::from_str("[torrent]\ndomain = 'localhost'").unwrap();
        assert!(
            bad.validate().is_err(),
            "the service cannot take a hosted domain"
        );
    }
}
