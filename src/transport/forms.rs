//! XEP-0004 data forms (the subset the transport needs), and short names for the namespaces
//! the transport uses (all defined in `xml::ns`).

use crate::xml::{Element, ns};

pub const DATA: &str = ns::DATA_FORMS;
pub const DISCO_INFO: &str = ns::DISCO_INFO;
pub const DISCO_ITEMS: &str = ns::DISCO_ITEMS;
pub const REGISTER: &str = ns::REGISTER;
pub const GATEWAY: &str = ns::GATEWAY;
pub const COMMANDS: &str = ns::COMMANDS;
pub const MUC: &str = ns::MUC;
pub const MUC_USER: &str = ns::MUC_USER;
pub const CHATSTATES: &str = ns::CHATSTATES;
pub const XHTML_IM: &str = ns::XHTML_IM;
pub const XHTML: &str = ns::XHTML;
pub const DELAY: &str = ns::DELAY;
pub const PING: &str = ns::PING;

/// One field of a form to send.
#[derive(Clone, Debug, Default)]
pub struct FormField {
    pub var: String,
    /// XEP-0004 field type: `text-single`, `text-private`, `boolean`, `list-single`,
    /// `hidden`, `fixed`, `text-multi`.
    pub kind: &'static str,
    pub label: Option<String>,
    pub values: Vec<String>,
    /// (label, value) for list types.
    pub options: Vec<(String, String)>,
    pub required: bool,
}

impl FormField {
    pub fn new(var: &str, kind: &'static str, label: Option<&str>) -> FormField {
        FormField {
            var: var.to_owned(),
            kind,
            label: label.map(str::to_owned),
            ..Default::default()
        }
    }

    pub fn value(mut self, v: impl Into<String>) -> FormField {
        let v = v.into();
        if !v.is_empty() || self.kind == "hidden" {
            self.values.push(v);
        }
        self
    }

    pub fn required(mut self, r: bool) -> FormField {
        self.required = r;
        self
    }

    pub fn to_element(&self) -> Element {
        let mut f = Element::new("field", DATA).attr("type", self.kind);
        if !self.var.is_empty() {
            f.set_attr("var", self.var.as_str());
        }
        if let Some(l) = &self.label {
            f.set_attr("label", l.as_str());
        }
        if self.required {
            f.push(Element::new("required", DATA));
        }
        for v in &self.values {
            f.push(Element::new("value", DATA).text(v.as_str()));
        }
        for (label, value) in &self.options {
            f.push(
                Element::new("option", DATA)
                    .attr("label", label.as_str())
                    .child(Element::new("value", DATA).text(value.as_str())),
            );
        }
        f
    }
}

/// `<x xmlns='jabber:x:data' type='form'>` with an optional FORM_TYPE.
pub fn form(
    form_type: Option<&str>,
    title: &str,
    instructions: &str,
    fields: &[FormField],
) -> Element {
    let mut x = Element::new("x", DATA).attr("type", "form");
    if !title.is_empty() {
        x.push(Element::new("title", DATA).text(title));
    }
    if !instructions.is_empty() {
        x.push(Element::new("instructions", DATA).text(instructions));
    }
    if let Some(t) = form_type {
        x.push(
            FormField::new("FORM_TYPE", "hidden", None)
                .value(t)
                .to_element(),
        );
    }
    for f in fields {
        x.push(f.to_element());
    }
    x
}

/// The values of a submitted form (`type='submit'`), in order; `None` if `x` is not one.
pub fn submitted(x: &Element) -> Option<Vec<(String, Vec<String>)>> {
    if !x.is("x", DATA) || x.get_attr("type") != Some("submit") {
        return None;
    }
    Some(
        x.elements()
            .filter(|f| f.is("field", DATA))
            .filter_map(|f| {
                let var = f.get_attr("var")?.to_owned();
                let values = f
                    .elements()
                    .filter(|v| v.is("value", DATA))
                    .map(|v| v.text_content())
                    .collect();
                Some((var, values))
            })
            .collect(),
    )
}

/// The first value of `var` in submitted values.
pub fn value<'a>(values: &'a [(String, Vec<String>)], var: &str) -> Option<&'a str> {
    values
        .iter()
        .find(|(k, _)| k == var)
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

/// The refusal for a submitted form holding a control character (CR, LF, NUL, any C0 but
/// TAB) in any value: every field the transport takes is single-line, and a CR LF in, say,
/// an IRC nick would end the line prpl-irc sends and start a command of the user's choosing.
/// `label` names a field by its `var`.
pub fn control_char_refusal(
    values: &[(String, Vec<String>)],
    label: impl Fn(&str) -> String,
) -> Option<String> {
    values.iter().find_map(|(var, vs)| {
        let c = vs.iter().find_map(|v| super::text::first_control(v))?;
        Some(format!(
            "{} contains a control character (U+{:04X}), which is not accepted",
            label(var),
            u32::from(c)
        ))
    })
}

/// XEP-0004 booleans: `1`/`true` are true.
pub fn truthy(v: &str) -> bool {
    matches!(v.trim(), "1" | "true")
}

/// XEP-0060 `publish-options`: the submitted `pubsub#publish-options` form.
pub fn pubsub_options(fields: &[(&str, &str)]) -> Element {
    use crate::xml::ns::DATA_FORMS;
    let mut x = Element::new("x", DATA_FORMS).attr("type", "submit").child(
        Element::new("field", DATA_FORMS)
            .attr("var", "FORM_TYPE")
            .attr("type", "hidden")
            .child(
                Element::new("value", DATA_FORMS)
                    .text("http://jabber.org/protocol/pubsub#publish-options"),
            ),
    );
    for (var, value) in fields {
        x.push(
            Element::new("field", DATA_FORMS)
                .attr("var", *var)
                .child(Element::new("value", DATA_FORMS).text(*value)),
        );
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trip() {
        let x = form(
            Some(REGISTER),
            "t",
            "i",
            &[FormField::new("a", "text-single", Some("A"))
                .value("v")
                .required(true)],
        );
        let s = x.to_string();
        assert!(s.contains(
            "<field type=\"hidden\" var=\"FORM_TYPE\"><value>jabber:iq:register</value></field>"
        ));
        let mut sub = x.clone();
        sub.set_attr("type", "submit");
        let vals = submitted(&sub).unwrap();
        assert_eq!(value(&vals, "a"), Some("v"));
        assert_eq!(value(&vals, "FORM_TYPE"), Some(REGISTER));
    }
}
