//! Fetching a .torrent from an http(s) URL, on the worker's tokio runtime. librqbit's own fetch
//! has no time limit, no size limit and goes wherever a user points it, so wockd fetches
//! itself and hands librqbit the bytes:
//! - only `http` and `https` (also after redirects, at most 5);
//! - an overall time limit and a size limit (checked against Content-Length and while reading);
//! - unless `fetch_private_addresses` is on, no loopback, private, link-local or otherwise
//!   non-public address nor one of this host's ([`crate::net::addr::is_remote`]): checked for
//!   IP literals in the URL and for every address a host name resolves to (the resolver itself
//!   filters, so a DNS answer cannot sneak one in).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::jobs::{Failure, human_bytes};
use crate::core::stanza::Condition;
use crate::net::addr::is_remote;

#[derive(Clone, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub max_bytes: u64,
    pub allow_private: bool,
}

pub struct Fetcher {
    client: reqwest::Client,
    limits: Limits,
}

impl Fetcher {
    pub fn new(limits: Limits) -> Result<Fetcher, Failure> {
        let allow = limits.allow_private;
        let client = reqwest::Client::builder()
            .user_agent(concat!("wockd/", env!("CARGO_PKG_VERSION")))
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout.min(Duration::from_secs(10)))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: allow,
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else if let Err(f) = check_url(attempt.url(), allow) {
                    attempt.error(f.text)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| {
                Failure::new(
                    Condition::InternalServerError,
                    format!("cannot make an HTTP client: {e}"),
                )
            })?;
        Ok(Fetcher { client, limits })
    }

    /// The body of `url` if it looks like a .torrent (a bencoded dictionary).
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, Failure> {
        let parsed =
            Url::parse(url).map_err(|e| Failure::bad_request(format!("not a valid URL: {e}")))?;
        check_url(&parsed, self.limits.allow_private)?;
        let secs = self.limits.timeout.as_secs();
        let timeout = || {
            Failure::new(
                Condition::RemoteServerTimeout,
                format!("fetching {url} took longer than {secs} s"),
            )
        };
        let mut resp = self.client.get(parsed).send().await.map_err(|e| {
            if e.is_timeout() {
                timeout()
            } else {
                request_failure(url, &e)
            }
        })?;
        let status = resp.status();
        if !status.is_success() {
            let cond = match status.as_u16() {
                404 | 410 => Condition::ItemNotFound,
                401 | 403 => Condition::Forbidden,
                _ => Condition::RemoteServerNotFound,
            };
            return Err(Failure::new(cond, format!("{url} answered HTTP {status}")));
        }
        let max = self.limits.max_bytes;
        let too_big = || {
            Failure::new(
                Condition::PolicyViolation,
                format!(
                    "{url} is larger than the .torrent size limit of {}",
                    human_bytes(max)
                ),
            )
        };
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_big());
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > max {
                        return Err(too_big());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(timeout()),
                Err(e) => return Err(request_failure(url, &e)),
            }
        }
        if body.first() != Some(&b'd') {
            let what = content_type
                .map(|t| format!(" (it sent {t})"))
                .unwrap_or_default();
            return Err(Failure::new(
                Condition::NotAcceptable,
                format!("{url} is not a .torrent file{what}"),
            ));
        }
        Ok(body)
    }
}

fn request_failure(url: &str, e: &reqwest::Error) -> Failure {
    // The chain holds the useful part ("Connection refused", "private address"…).
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text = format!("{text}: {s}");
        src = s.source();
    }
    let cond = if e.is_connect() {
        Condition::RemoteServerNotFound
    } else {
        Condition::UndefinedCondition
    };
    Failure::new(cond, format!("cannot fetch {url}: {text}"))
}

/// Scheme and (for IP literals) address policy.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), Failure> {
    match url.scheme() {
        "http" | "https" => {}
        s => {
            return Err(Failure::bad_request(format!(
                "unsupported URL scheme `{s}:`; a .torrent URL must be http or https"
            )));
        }
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(Failure::bad_request("the URL has no host"));
    };
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => check_ip(ip, allow_private),
        // A name: the resolver checks what it resolves to.
        Err(_) => Ok(()),
    }
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), Failure> {
    if allow_private || is_remote(ip) {
        Ok(())
    } else {
        Err(Failure::new(
            Condition::PolicyViolation,
            format!(
                "{ip} is not a public address; this server does not fetch from its own network"
            ),
        ))
    }
}

/// The system resolver, minus addresses a user's fetch must not reach.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow || is_remote(a.ip()))
                .collect();
            if ok.is_empty() {
                let why = if addrs.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!(
                        "{host} resolves only to non-public addresses; this server does not fetch from its own network"
                    )
                };
                return Err(why.into());
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_policy() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_remote(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_remote(public.parse().unwrap()), "{public}");
        }
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(check_url(&u("http://127.0.0.1/x"), false).is_err());
        assert!(check_url(&u("http://127.0.0.1/x"), true).is_ok());
        assert!(check_url(&u("http://[::1]:8080/x"), false).is_err());
        assert!(check_url(&u("https://example.org/x"), false).is_ok());
        assert_eq!(
            check_url(&u("ftp://example.org/x"), true).unwrap_err().cond,
            Condition::BadRequest
        );
        assert!(check_url(&u("file:///etc/passwd"), true).is_err());
    }
}
