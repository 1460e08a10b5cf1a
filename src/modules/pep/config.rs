//! Node configuration as XEP-0004 data forms: the `pubsub#node_config` form of XEP-0060 §8.2
//! (configure get/set, §8.3 defaults, create-and-configure) and the `publish-options`
//! preconditions of §7.1.5.

use crate::store::pep::{AccessModel, NodeConfig, SendLast};
use crate::xml::{Element, ns};

/// One submitted field: its `var` and values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub var: String,
    pub values: Vec<String>,
}

/// The fields of a submitted `<x xmlns='jabber:x:data'/>` (FORM_TYPE left out).
pub fn fields(x: &Element) -> Vec<Field> {
    x.elements()
        .filter(|f| f.is("field", ns::DATA_FORMS))
        .filter_map(|f| {
            let var = f.get_attr("var")?;
            if var == "FORM_TYPE" {
                return None;
            }
            let values = f
                .elements()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text_content().trim().to_owned())
                .collect();
            Some(Field {
                var: var.to_owned(),
                values,
            })
        })
        .collect()
}

/// Why a form could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadField(pub String);

fn single(f: &Field) -> Result<&str, BadField> {
    match f.values.as_slice() {
        [v] => Ok(v.as_str()),
        _ => Err(BadField(format!("{} takes exactly one value", f.var))),
    }
}

fn boolean(f: &Field) -> Result<bool, BadField> {
    match single(f)? {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(BadField(format!("{} is a boolean", f.var))),
    }
}

/// `pubsub#max_items`: `max` or 1 to `limit` (the service's `quotas.pep_max_items`).
fn max_items(f: &Field, limit: u32) -> Result<Option<u32>, BadField> {
    let v = single(f)?;
    if v == "max" {
        return Ok(None);
    }
    match v.parse::<u32>() {
        Ok(n) if (1..=limit).contains(&n) => Ok(Some(n)),
        _ => Err(BadField(format!(
            "pubsub#max_items is 'max' or a number from 1 to {limit}"
        ))),
    }
}

/// Applies one field to `c`, with `limit` the most items a node may keep. Returns false for a
/// field this service does not implement (ignored: XEP-0004 lets a form processor skip fields
/// it does not know).
fn apply_field(c: &mut NodeConfig, f: &Field, limit: u32) -> Result<bool, BadField> {
    match f.var.as_str() {
        "pubsub#access_model" => {
            c.access_model = AccessModel::parse(single(f)?)
                .ok_or_else(|| BadField("unknown pubsub#access_model".into()))?;
        }
        "pubsub#roster_groups_allowed" => {
            c.roster_groups = f.values.iter().filter(|v| !v.is_empty()).cloned().collect();
        }
        "pubsub#persist_items" => c.persist_items = boolean(f)?,
        "pubsub#max_items" => c.max_items = max_items(f, limit)?,
        "pubsub#send_last_published_item" => {
            c.send_last = SendLast::parse(single(f)?)
                .ok_or_else(|| BadField("unknown pubsub#send_last_published_item".into()))?;
        }
        "pubsub#deliver_notifications" => c.deliver_notifications = boolean(f)?,
        "pubsub#deliver_payloads" => c.deliver_payloads = boolean(f)?,
        "pubsub#notify_retract" => c.notify_retract = boolean(f)?,
        "pubsub#notify_delete" => c.notify_delete = boolean(f)?,
        "pubsub#title" => c.title = f.values.first().cloned().unwrap_or_default(),
        _ => return Ok(false),
    }
    Ok(true)
}

/// `base` changed by a submitted `node_config` form (configure set, create-and-configure);
/// `limit` is the most items a node may keep.
pub fn apply(base: &NodeConfig, x: &Element, limit: u32) -> Result<NodeConfig, BadField> {
    let mut c = base.clone();
    for f in fields(x) {
        if !apply_field(&mut c, &f, limit)? {
            tracing::debug!(var = %f.var, "ignoring a node configuration field this service does not implement");
        }
    }
    Ok(c)
}

/// XEP-0060 §7.1.5 preconditions: true when every field the form names has that value in
/// `current` (fields the service does not implement are not preconditions it can check, and
/// are skipped). A malformed value is an error.
pub fn preconditions_met(current: &NodeConfig, x: &Element, limit: u32) -> Result<bool, BadField> {
    for f in fields(x) {
        let mut wanted = current.clone();
        if apply_field(&mut wanted, &f, limit)? && wanted != *current {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field(var: &str, kind: &str, label: &str) -> Element {
    Element::new("field", ns::DATA_FORMS)
        .attr("var", var)
        .attr("type", kind)
        .attr("label", label)
}

fn value(v: &str) -> Element {
    Element::new("value", ns::DATA_FORMS).text(v)
}

fn bool_field(var: &str, label: &str, v: bool) -> Element {
    field(var, "boolean", label).child(value(if v { "1" } else { "0" }))
}

fn list_single(var: &str, label: &str, options: &[&str], current: &str) -> Element {
    let mut f = field(var, "list-single", label);
    for o in options {
        f.push(Element::new("option", ns::DATA_FORMS).child(value(o)));
    }
    f.child(value(current))
}

/// The `node_config` form showing `c` (type `form`, XEP-0060 §8.2.1 and §8.3).
pub fn form(c: &NodeConfig, groups: &[String]) -> Element {
    let mut groups_field = field(
        "pubsub#roster_groups_allowed",
        "list-multi",
        "Roster groups allowed to access",
    );
    for g in groups {
        groups_field.push(Element::new("option", ns::DATA_FORMS).child(value(g)));
    }
    for g in &c.roster_groups {
        groups_field.push(value(g));
    }
    let max = c
        .max_items
        .map_or_else(|| "max".to_owned(), |n| n.to_string());
    Element::new("x", ns::DATA_FORMS)
        .attr("type", "form")
        .child(
            Element::new("field", ns::DATA_FORMS)
                .attr("var", "FORM_TYPE")
                .attr("type", "hidden")
                .child(value(ns::PUBSUB_NODE_CONFIG)),
        )
        .child(
            field(
                "pubsub#title",
                "text-single",
                "A friendly name for the node",
            )
            .child(value(&c.title)),
        )
        .child(bool_field(
            "pubsub#deliver_notifications",
            "Deliver event notifications",
            c.deliver_notifications,
        ))
        .child(bool_field(
            "pubsub#deliver_payloads",
            "Deliver payloads with event notifications",
            c.deliver_payloads,
        ))
        .child(bool_field(
            "pubsub#notify_delete",
            "Notify subscribers when the node is deleted",
            c.notify_delete,
        ))
        .child(bool_field(
            "pubsub#notify_retract",
            "Notify subscribers when items are removed from the node",
            c.notify_retract,
        ))
        .child(bool_field(
            "pubsub#persist_items",
            "Persist items to storage",
            c.persist_items,
        ))
        .child(
            field(
                "pubsub#max_items",
                "text-single",
                "Max # of items to persist",
            )
            .child(value(&max)),
        )
        .child(list_single(
            "pubsub#access_model",
            "Specify the subscriber model",
            &["open", "presence", "roster", "whitelist"],
            c.access_model.as_str(),
        ))
        .child(groups_field)
        .child(list_single(
            "pubsub#publish_model",
            "Specify the publisher model",
            &["publishers"],
            "publishers",
        ))
        .child(list_single(
            "pubsub#send_last_published_item",
            "When to send the last published item",
            &["never", "on_sub", "on_sub_and_presence"],
            c.send_last.as_str(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_of(fields: &[(&str, &[&str])]) -> Element {
        let mut x = Element::new("x", ns::DATA_FORMS)
            .attr("type", "submit")
            .child(
                Element::new("field", ns::DATA_FORMS)
                    .attr("var", "FORM_TYPE")
                    .child(value(ns::PUBSUB_PUBLISH_OPTIONS)),
            );
        for (var, values) in fields {
            let mut f = Element::new("field", ns::DATA_FORMS).attr("var", *var);
            for v in *values {
                f.push(value(v));
            }
            x.push(f);
        }
        x
    }

    #[test]
    fn bookmarks_options_create_and_then_match() {
        // XEP-0402 §3.5's publish-options.
        let x = form_of(&[
            ("pubsub#persist_items", &["true"]),
            ("pubsub#max_items", &["max"]),
            ("pubsub#send_last_published_item", &["never"]),
            ("pubsub#access_model", &["whitelist"]),
        ]);
        let defaults = NodeConfig::default();
        assert!(!preconditions_met(&defaults, &x, 1000).unwrap());
        let c = apply(&defaults, &x, 1000).unwrap();
        assert_eq!(c.access_model, AccessModel::Whitelist);
        assert_eq!(c.max_items, None);
        assert_eq!(c.send_last, SendLast::Never);
        assert!(preconditions_met(&c, &x, 1000).unwrap());
    }

    #[test]
    fn unknown_fields_are_skipped_and_bad_values_refused() {
        let x = form_of(&[
            ("pubsub#itemreply", &["publisher"]),
            ("pubsub#access_model", &["open"]),
        ]);
        let c = apply(&NodeConfig::default(), &x, 1000).unwrap();
        assert_eq!(c.access_model, AccessModel::Open);
        assert!(preconditions_met(&c, &x, 1000).unwrap());
        for bad in [
            form_of(&[("pubsub#access_model", &["everyone"])]),
            form_of(&[("pubsub#max_items", &["0"])]),
            form_of(&[("pubsub#max_items", &["1000000"])]),
            form_of(&[("pubsub#persist_items", &["yes"])]),
            form_of(&[("pubsub#access_model", &["open", "presence"])]),
        ] {
            assert!(apply(&NodeConfig::default(), &bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn form_round_trips() {
        let c = NodeConfig {
            access_model: AccessModel::Roster,
            roster_groups: vec!["Friends".into()],
            max_items: Some(7),
            ..NodeConfig::default()
        };
        let f = form(&c, &["Friends".into(), "Work".into()]);
        assert_eq!(apply(&NodeConfig::default(), &f, 1000).unwrap(), c);
    }
}
