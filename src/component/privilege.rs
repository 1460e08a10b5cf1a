//! XEP-0356 Privileged Entity, server side: what a component configured with
//! `[components.privileges]` may do on behalf of the server's users.

use std::rc::Rc;

use jid::Jid;

use crate::net::link::Link;
use crate::server::Server;
use crate::xml::Element;

/// After the handshake: tells the component what it is granted (nothing when nothing is).
pub fn advertise(_server: &Rc<Server>, _link: &Rc<Link>, _domain: &str) {}

/// A stanza from the component: serves it when it is a privileged request (and returns
/// `None`), or hands it back to be routed.
pub fn intercept(
    _server: &Rc<Server>,
    _link: &Rc<Link>,
    _domain: &str,
    el: Element,
    _from: &Jid,
    _to: &Jid,
) -> Option<Element> {
    Some(el)
}
