//! XEP-0202 Entity Time: the server's UTC time and its local offset (`tzo`), in the XEP-0082
//! formats, answered when the request is for the server (no `to` or a hosted domain). Accounts'
//! bare JIDs get `service-unavailable`: their clients answer at full JIDs.

use crate::core::stanza::Condition;
use crate::core::{Module, time};
use crate::xml::{Element, ns};

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
    s.iqs()
        .rule(ns::TIME, "time")
        .get(|iq| match addressee(&iq) {
            Addressee::Unaddressed | Addressee::Server => {
                let now = time::now_secs();
                let t = Element::new("time", ns::TIME)
                    .child(
                        Element::new("tzo", ns::TIME)
                            .text(time::format_offset(time::utc_offset(now))),
                    )
                    .child(Element::new("utc", ns::TIME).text(time::datetime_secs(now)));
                iq.result(Some(t));
            }
            _ => iq.fail(Condition::ServiceUnavailable, ""),
        });
}
