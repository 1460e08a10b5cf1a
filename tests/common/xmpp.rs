//! tokio-xmpp (xmpp-rs) helpers: a STARTTLS connector that trusts exactly the test server's
//! self-signed certificate (tokio-xmpp 6 has no hook for a custom rustls config, but its
//! `ServerConnector` trait and stream building blocks are public).
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts,
    XmppStreamElement, initiate_stream,
};
use tokio_xmpp::{Client, Error, Event};

/// rustls `ClientConfig` that trusts exactly `certs` (e.g. the rcgen cert of
/// the server under test). Uses an explicit crypto provider, so it works
/// even when both the `ring` and `aws_lc_rs` rustls features are enabled.
pub fn client_config_trusting(certs: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c.clone()).expect("bad trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// STARTTLS connector: fixed socket address, caller-supplied rustls config.
#[derive(Clone, Debug)]
pub struct PinnedStartTls {
    pub addr: SocketAddr,
    pub tls: Arc<ClientConfig>,
    /// If true (what tokio-xmpp's own connector does), export the RFC 9266
    /// `tls-exporter` channel binding on TLS 1.3. tokio-xmpp's SCRAM then
    /// ONLY tries the `SCRAM-SHA-*-PLUS` names. Set to false to make it use
    /// plain SCRAM-SHA-256 / SCRAM-SHA-1 (gs2 header "n,,").
    pub channel_binding: bool,
}

impl PinnedStartTls {
    pub fn new(addr: SocketAddr, tls: Arc<ClientConfig>) -> Self {
        Self {
            addr,
            tls,
            channel_binding: true,
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, msg.into()))
}

impl ServerConnector for PinnedStartTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), Error> {
        let domain = jid.domain().as_str();
        let header = || StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };

        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let pending = initiate_stream(BufStream::new(tcp), ns, header(), timeouts).await?;
        let (features, mut stream) = pending.recv_features::<XmppStreamElement>().await?;
        if !features.can_starttls() {
            return Err(ProtocolError::NoTls.into());
        }
        stream
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await?;
        loop {
            match stream.next().await {
                Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Failure(_)))) => {
                    return Err(invalid("server sent <failure/> to <starttls/>"));
                }
                Some(Ok(other)) => return Err(invalid(format!("unexpected: {other:?}"))),
                Some(Err(ReadError::SoftTimeout)) => continue,
                Some(Err(ReadError::HardError(e))) => return Err(e.into()),
                Some(Err(ReadError::ParseError(e))) => return Err(invalid(e.to_string())),
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    return Err(Error::Disconnected);
                }
            }
        }
        // XmlStream -> BufStream<TcpStream> -> TcpStream (BufStream is empty after <proceed/>).
        let tcp = stream.into_inner().into_inner();
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| invalid(e.to_string()))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;

        let (_, conn) = tls.get_ref();
        let cb = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) if self.channel_binding => {
                let data = conn
                    .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                    .map_err(|e| invalid(e.to_string()))?;
                ChannelBinding::TlsExporter(data)
            }
            _ => ChannelBinding::None,
        };
        let pending = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((pending, cb))
    }
}

/// Wait for the first `Event::Online` (skipping anything else), with a
/// timeout. NOTE: tokio-xmpp 6 never yields `Event::Disconnected` for a
/// `Client`: connect/TLS/auth failures are only `log::error!`ed and retried
/// forever (backoff 1s,2s,4s..30s). So a timeout is the only failure signal.
pub async fn wait_online(client: &mut Client, within: Duration) -> Result<Jid, String> {
    tokio::time::timeout(within, async {
        while let Some(ev) = client.next().await {
            if let Event::Online { bound_jid, .. } = ev {
                return Ok(bound_jid);
            }
        }
        Err("client stream ended before Online".to_owned())
    })
    .await
    .map_err(|_| "timed out waiting for Online (see log output for the real error)".to_owned())?
}

/// Connect + SASL only (no bind, no retry loop), restricted to the given
/// mechanism names. Returns `Ok(())` on <success/>, the real error otherwise
/// (e.g. `Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized))`).
/// Useful for negative tests and to force one specific mechanism.
pub async fn try_sasl<C: ServerConnector>(
    connector: &C,
    jid: &Jid,
    password: &str,
    mechs: &[&str],
) -> Result<(), Error> {
    let (pending, cb) = connector
        .connect(jid, xmpp_parsers::ns::JABBER_CLIENT, Timeouts::tight())
        .await?;
    let (features, stream) = pending.recv_features::<FallibleStreamElement>().await?;
    let offered: BTreeSet<String> = features
        .sasl_mechanisms
        .iter()
        .filter(|m| mechs.contains(&m.as_str()))
        .cloned()
        .collect();
    let creds = Credentials::default()
        .with_username(jid.node().unwrap().as_str())
        .with_password(password)
        .with_channel_binding(cb);
    let _reset_stream = tokio_xmpp::client_login(stream, offered, creds).await?;
    Ok(())
}
