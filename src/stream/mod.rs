//! Client-to-server streams (RFC 6120): what every stream offers ([`Stream`], built once at
//! start-up by `install` functions, as in the seed's `initialize_stream`), and the per-socket
//! negotiation and dispatch ([`Connection`]).
//!
//! Each file is one layer of a connection and owns that layer's per-connection state in its
//! own cell on [`Connection`]: connection.rs the transport, negotiate.rs the stream header and
//! the session's identity, sasl.rs and sasl2.rs authentication, sm.rs stream management,
//! csi.rs client state indication. A layer reaches another only through its methods.

mod connection;
pub(crate) use connection::Pause;
mod csi;
pub(crate) mod negotiate;
mod sasl;
pub mod sasl2;
pub mod sm;

use std::rc::Rc;

pub use connection::Connection;

use crate::iq::IqRules;
use crate::xml::Element;

/// What a feature's predicate may look at.
#[derive(Clone, Copy, Debug)]
pub struct StreamInfo {
    /// TLS is active on this stream.
    pub secure: bool,
    /// Plaintext passwords may be sent here: TLS is active or the listener is trusted loopback.
    pub plaintext_ok: bool,
    /// XEP-0077 account creation is enabled (`auth.registration`), so the register module can
    /// advertise it before authentication.
    pub registration: bool,
}

type Predicate = Rc<dyn Fn(&StreamInfo) -> bool>;

/// The features and IQ rules of one stage of a stream.
#[derive(Clone, Default)]
pub struct Stage {
    features: Vec<(Element, Option<Predicate>)>,
    iqs: IqRules,
    /// XEP-0030 features with no IQ rule behind them (e.g. `msgoffline`).
    disco: Vec<String>,
}

impl Stage {
    /// Advertises `feature` in `<stream:features/>` at this stage.
    pub fn feature(&mut self, feature: Element) -> &mut Stage {
        self.features.push((feature, None));
        self
    }

    /// Advertises `feature` only on streams where `when` holds.
    pub fn feature_when(
        &mut self,
        feature: Element,
        when: impl Fn(&StreamInfo) -> bool + 'static,
    ) -> &mut Stage {
        self.features.push((feature, Some(Rc::new(when))));
        self
    }

    pub fn iqs(&mut self) -> &mut IqRules {
        &mut self.iqs
    }

    pub fn rules(&self) -> &IqRules {
        &self.iqs
    }

    /// Advertises `ns` in service discovery (XEP-0030) although no IQ rule answers it; namespaces
    /// with a rule are advertised already.
    pub fn disco_feature(&mut self, ns: &str) -> &mut Stage {
        if !self.disco.iter().any(|f| f == ns) {
            self.disco.push(ns.to_owned());
        }
        self
    }

    /// The features registered with [`Stage::disco_feature`].
    pub fn disco_features(&self) -> impl Iterator<Item = &str> {
        self.disco.iter().map(String::as_str)
    }

    pub(crate) fn features_for<'a>(
        &'a self,
        info: &'a StreamInfo,
    ) -> impl Iterator<Item = &'a Element> {
        self.features
            .iter()
            .filter(move |(_, when)| when.as_ref().is_none_or(|w| w(info)))
            .map(|(f, _)| f)
    }
}

/// Everything a client stream offers: the stage before authentication (legacy iq-auth lives
/// there) and the stage of an authenticated, bound session.
#[derive(Clone, Default)]
pub struct Stream {
    before_auth: Stage,
    session: Stage,
}

impl Stream {
    /// The stage before authentication.
    pub fn before_auth(&mut self) -> &mut Stage {
        &mut self.before_auth
    }

    /// Advertises a feature to authenticated streams.
    pub fn feature(&mut self, feature: Element) -> &mut Stage {
        self.session.feature(feature)
    }

    /// Rules for IQs from authenticated sessions.
    pub fn iqs(&mut self) -> &mut IqRules {
        self.session.iqs()
    }

    /// Advertises a server feature in service discovery that no IQ rule stands for.
    pub fn disco_feature(&mut self, ns: &str) -> &mut Stage {
        self.session.disco_feature(ns)
    }

    pub fn session_stage(&self) -> &Stage {
        &self.session
    }

    pub fn before_auth_stage(&self) -> &Stage {
        &self.before_auth
    }
}
