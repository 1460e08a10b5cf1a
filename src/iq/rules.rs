//! The rule table: (namespace, element name) → handlers for `get` and `set`.

use std::collections::HashMap;
use std::rc::Rc;

use super::Incoming;
use crate::core::stanza::IqResult;

/// The two request types a rule can answer (results and errors are responses, never routed to
/// rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
}

impl IqType {
    /// `get` or `set` (the request types).
    pub fn parse(s: &str) -> Option<IqType> {
        match s {
            "get" => Some(IqType::Get),
            "set" => Some(IqType::Set),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IqType::Get => "get",
            IqType::Set => "set",
        }
    }
}

pub type Handler = Rc<dyn Fn(Incoming)>;

#[derive(Clone, Default)]
struct Entry {
    name: String,
    get: Option<Handler>,
    set: Option<Handler>,
}

/// IQ rules of one stream stage. Looked up on every IQ, so keyed by namespace first (a borrowed
/// `&str` lookup, no allocation) and then by a short scan of that namespace's element names.
#[derive(Clone, Default)]
pub struct IqRules {
    by_ns: HashMap<String, Vec<Entry>>,
}

impl IqRules {
    /// Starts (or extends) the rule for payload `<name xmlns=ns>`.
    pub fn rule(&mut self, ns: &str, name: &str) -> RuleBuilder<'_> {
        let entries = self.by_ns.entry(ns.to_owned()).or_default();
        let idx = match entries.iter().position(|e| e.name == name) {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    name: name.to_owned(),
                    ..Entry::default()
                });
                entries.len() - 1
            }
        };
        RuleBuilder {
            entry: &mut entries[idx],
        }
    }

    pub fn find(&self, ns: &str, name: &str, kind: IqType) -> Option<Handler> {
        let e = self.by_ns.get(ns)?.iter().find(|e| e.name == name)?;
        match kind {
            IqType::Get => e.get.clone(),
            IqType::Set => e.set.clone(),
        }
    }

    /// Namespaces with at least one rule: what service discovery may advertise.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_ns.keys().map(String::as_str)
    }
}

/// Returned by [`IqRules::rule`]; `.get(h)` and `.set(h)` install the handlers.
pub struct RuleBuilder<'a> {
    entry: &'a mut Entry,
}

impl RuleBuilder<'_> {
    pub fn get(self, h: impl Fn(Incoming) + 'static) -> Self {
        self.entry.get = Some(Rc::new(h));
        self
    }

    pub fn set(self, h: impl Fn(Incoming) + 'static) -> Self {
        self.entry.set = Some(Rc::new(h));
        self
    }

    /// A `get` handler that answers at once by returning an [`IqResult`] (so `?` works).
    pub fn get_result(self, h: impl Fn(&Incoming) -> IqResult + 'static) -> Self {
        self.get(move |iq| {
            let r = h(&iq);
            iq.answer(r);
        })
    }

    /// A `set` handler that answers at once by returning an [`IqResult`].
    pub fn set_result(self, h: impl Fn(&Incoming) -> IqResult + 'static) -> Self {
        self.set(move |iq| {
            let r = h(&iq);
            iq.answer(r);
        })
    }
}
