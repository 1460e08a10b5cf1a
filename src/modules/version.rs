//! XEP-0092 Software Version: the server's name (`wockd`), version ([`crate::VERSION`]) and
//! operating system, answered when the request is for the server (no `to` or a hosted domain).
//! Accounts' bare JIDs get `service-unavailable`: their clients answer at full JIDs.

use crate::core::Module;
use crate::core::stanza::Condition;
use crate::xml::{Element, ns};

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
    s.iqs()
        .rule(ns::VERSION, "query")
        .get(|iq| match addressee(&iq) {
            Addressee::Unaddressed | Addressee::Server => {
                let q = Element::new("query", ns::VERSION)
                    .child(Element::new("name", ns::VERSION).text("wockd"))
                    .child(Element::new("version", ns::VERSION).text(crate::VERSION))
                    .child(Element::new("os", ns::VERSION).text(std::env::consts::OS));
                iq.result(Some(q));
            }
            _ => iq.fail(Condition::ServiceUnavailable, ""),
        });
}
