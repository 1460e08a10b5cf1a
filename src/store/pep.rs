//! XEP-0163 Personal Eventing via Pubsub: each account's nodes with their configuration, and
//! the items published to them.
//!
//! `pep_nodes` holds one row per (account, node) with the XEP-0060 §16.4 options the service
//! implements; `pep_items` the items, ordered by their row id: a re-published ItemID replaces
//! the old row (`INSERT OR REPLACE`), so the newest publication always has the largest id.
//! Payloads are the serialised payload element (it declares its own namespace, so it parses
//! back on its own). Deleting an account deletes its nodes, and a node its items.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = r#"
    CREATE TABLE pep_nodes (
        id            INTEGER PRIMARY KEY,
        account       INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        node          TEXT NOT NULL,
        access_model  TEXT NOT NULL,      -- open | presence | roster | whitelist
        roster_groups TEXT NOT NULL,      -- groups allowed by 'roster', one per line
        persist_items INTEGER NOT NULL,
        max_items     INTEGER,            -- NULL: 'max' (the service's limit)
        send_last     TEXT NOT NULL,      -- never | on_sub | on_sub_and_presence
        deliver_notifications INTEGER NOT NULL,
        deliver_payloads      INTEGER NOT NULL,
        notify_retract        INTEGER NOT NULL,
        notify_delete         INTEGER NOT NULL,
        title         TEXT NOT NULL,
        created       INTEGER NOT NULL,   -- Unix time, seconds
        UNIQUE (account, node)
    );
    CREATE TABLE pep_items (
        id        INTEGER PRIMARY KEY,    -- publication order
        node      INTEGER NOT NULL REFERENCES pep_nodes (id) ON DELETE CASCADE,
        item_id   TEXT NOT NULL,
        publisher TEXT NOT NULL,          -- full JID of the publishing resource
        payload   TEXT NOT NULL,          -- the serialised payload element
        published INTEGER NOT NULL,       -- Unix time, microseconds
        UNIQUE (node, item_id)
    );
"#;

/// XEP-0060 §4.5 access models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessModel {
    Open,
    Presence,
    Roster,
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// `pubsub#send_last_published_item`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    pub fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// A node's configuration (the XEP-0060 §16.4 options this service implements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    /// Roster groups whose members may access a node with the `roster` model.
    pub roster_groups: Vec<String>,
    pub persist_items: bool,
    /// `None` is `max`: as many as the service keeps.
    pub max_items: Option<u32>,
    pub send_last: SendLast,
    pub deliver_notifications: bool,
    pub deliver_payloads: bool,
    pub notify_retract: bool,
    pub notify_delete: bool,
    pub title: String,
}

impl Default for NodeConfig {
    /// XEP-0163 §7 defaults: presence access, notifications with payloads, the last item
    /// sent on subscription and presence; one persisted item, as other PEP services keep.
    fn default() -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Presence,
            roster_groups: Vec::new(),
            persist_items: true,
            max_items: Some(1),
            send_last: SendLast::OnSubAndPresence,
            deliver_notifications: true,
            deliver_payloads: true,
            notify_retract: true,
            notify_delete: true,
            title: String::new(),
        }
    }
}

/// A stored node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepNode {
    pub id: i64,
    pub name: String,
    pub config: NodeConfig,
}

/// A stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepItem {
    pub item_id: String,
    pub publisher: String,
    pub payload: String,
    /// Unix time, microseconds.
    pub published: i64,
}

const NODE_COLUMNS: &str = "id, node, access_model, roster_groups, persist_items, max_items, send_last, \
     deliver_notifications, deliver_payloads, notify_retract, notify_delete, title";

fn node_from_row(r: &Row<'_>) -> rusqlite::Result<PepNode> {
    let access: String = r.get(2)?;
    let groups: String = r.get(3)?;
    let send_last: String = r.get(6)?;
    let max_items: Option<i64> = r.get(5)?;
    Ok(PepNode {
        id: r.get(0)?,
        name: r.get(1)?,
        config: NodeConfig {
            // A value this version does not know falls back to the most private reading.
            access_model: AccessModel::parse(&access).unwrap_or(AccessModel::Whitelist),
            roster_groups: groups
                .lines()
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            persist_items: r.get(4)?,
            max_items: max_items.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            send_last: SendLast::parse(&send_last).unwrap_or(SendLast::Never),
            deliver_notifications: r.get(7)?,
            deliver_payloads: r.get(8)?,
            notify_retract: r.get(9)?,
            notify_delete: r.get(10)?,
            title: r.get(11)?,
        },
    })
}

fn item_from_row(r: &Row<'_>) -> rusqlite::Result<PepItem> {
    Ok(PepItem {
        item_id: r.get(0)?,
        publisher: r.get(1)?,
        payload: r.get(2)?,
        published: r.get(3)?,
    })
}

/// How many items a node keeps: its `max_items` capped by `limit`, one when items are not
/// persisted (the last one is still kept, for last-item delivery, XEP-0060 §6.5.7).
fn keep(config: &NodeConfig, limit: u32) -> u32 {
    if !config.persist_items {
        return 1;
    }
    config.max_items.map_or(limit, |n| n.min(limit))
}

fn trim(conn: &rusqlite::Connection, node: i64, keep: u32) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM pep_items WHERE node = ?1 AND id NOT IN
             (SELECT id FROM pep_items WHERE node = ?1 ORDER BY id DESC LIMIT ?2)",
    )?
    .execute(params![node, keep])
}

// ---- writes on any connection (the writer thread's, inside its batch) ---------------------------

/// Creates a node; returns its id.
pub fn create_node(
    conn: &rusqlite::Connection,
    account: i64,
    node: &str,
    config: &NodeConfig,
    now: i64,
) -> Result<i64, StoreError> {
    let c = config;
    conn.prepare_cached(
        "INSERT INTO pep_nodes (account, node, access_model, roster_groups, persist_items,
             max_items, send_last, deliver_notifications, deliver_payloads, notify_retract,
             notify_delete, title, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        account,
        node,
        c.access_model.as_str(),
        c.roster_groups.join("\n"),
        c.persist_items,
        c.max_items,
        c.send_last.as_str(),
        c.deliver_notifications,
        c.deliver_payloads,
        c.notify_retract,
        c.notify_delete,
        c.title,
        now,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// See [`Store::pep_configure`].
pub fn configure(
    conn: &rusqlite::Connection,
    node: i64,
    config: &NodeConfig,
    limit: u32,
) -> Result<usize, StoreError> {
    let c = config;
    conn.prepare_cached(
        "UPDATE pep_nodes SET access_model = ?2, roster_groups = ?3, persist_items = ?4,
             max_items = ?5, send_last = ?6, deliver_notifications = ?7,
             deliver_payloads = ?8, notify_retract = ?9, notify_delete = ?10, title = ?11
         WHERE id = ?1",
    )?
    .execute(params![
        node,
        c.access_model.as_str(),
        c.roster_groups.join("\n"),
        c.persist_items,
        c.max_items,
        c.send_last.as_str(),
        c.deliver_notifications,
        c.deliver_payloads,
        c.notify_retract,
        c.notify_delete,
        c.title,
    ])?;
    Ok(trim(conn, node, keep(config, limit))?)
}

/// Deletes a node and its items.
pub fn delete_node(conn: &rusqlite::Connection, node: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM pep_nodes WHERE id = ?1")?
        .execute([node])?;
    Ok(())
}

/// Deletes every item of a node.
pub fn purge(conn: &rusqlite::Connection, node: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM pep_items WHERE node = ?1")?
        .execute([node])?;
    Ok(())
}

/// See [`Store::pep_publish`]; `config` is the node's.
pub fn publish(
    conn: &rusqlite::Connection,
    node: i64,
    config: &NodeConfig,
    item: &PepItem,
    limit: u32,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO pep_items (node, item_id, publisher, payload, published)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        node,
        item.item_id,
        item.publisher,
        item.payload,
        item.published
    ])?;
    trim(conn, node, keep(config, limit))?;
    Ok(())
}

/// Deletes one item; false when the node has no such item.
pub fn retract(conn: &rusqlite::Connection, node: i64, item_id: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM pep_items WHERE node = ?1 AND item_id = ?2")?
        .execute(params![node, item_id])?;
    Ok(n > 0)
}

/// A node a [`PepWrite`] works on: one that exists, or one it creates first.
#[derive(Clone, Debug)]
pub enum Target {
    Existing(i64),
    New {
        account: i64,
        name: String,
        config: NodeConfig,
        now: i64,
    },
}

/// A PEP change, as data: a write job on the store's writer thread carries it (and may run it
/// twice, should its batch be retried).
#[derive(Clone, Debug)]
pub enum PepWrite {
    /// Creates the node (when new); nothing else.
    Create(Target),
    Publish {
        node: Target,
        config: NodeConfig,
        item: PepItem,
        limit: u32,
    },
    Retract {
        node: i64,
        item_id: String,
    },
    Configure {
        node: i64,
        config: NodeConfig,
        limit: u32,
    },
    DeleteNode(i64),
    Purge(i64),
}

/// What [`apply`] did: the node's id (a created node's new one) and, for a retraction,
/// whether the item existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PepWritten {
    pub node: i64,
    pub found: bool,
}

fn target(conn: &rusqlite::Connection, t: &Target) -> Result<i64, StoreError> {
    match t {
        Target::Existing(id) => Ok(*id),
        Target::New {
            account,
            name,
            config,
            now,
        } => create_node(conn, *account, name, config, *now),
    }
}

/// Makes the change `w` on `conn` (the writer's, inside its batch).
pub fn apply(conn: &rusqlite::Connection, w: &PepWrite) -> Result<PepWritten, StoreError> {
    let done = |node| PepWritten { node, found: true };
    match w {
        PepWrite::Create(t) => Ok(done(target(conn, t)?)),
        PepWrite::Publish {
            node,
            config,
            item,
            limit,
        } => {
            let id = target(conn, node)?;
            publish(conn, id, config, item, *limit)?;
            Ok(done(id))
        }
        PepWrite::Retract { node, item_id } => Ok(PepWritten {
            node: *node,
            found: retract(conn, *node, item_id)?,
        }),
        PepWrite::Configure {
            node,
            config,
            limit,
        } => {
            configure(conn, *node, config, *limit)?;
            Ok(done(*node))
        }
        PepWrite::DeleteNode(node) => {
            delete_node(conn, *node)?;
            Ok(done(*node))
        }
        PepWrite::Purge(node) => {
            purge(conn, *node)?;
            Ok(done(*node))
        }
    }
}

impl Store {
    /// One node of `account`.
    pub fn pep_node(&self, account: i64, node: &str) -> Result<Option<PepNode>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {NODE_COLUMNS} FROM pep_nodes WHERE account = ?1 AND node = ?2"
            ))?
            .query_row(params![account, node], node_from_row)
            .optional()?)
    }

    /// Every node of `account`, by name.
    pub fn pep_nodes(&self, account: i64) -> Result<Vec<PepNode>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {NODE_COLUMNS} FROM pep_nodes WHERE account = ?1 ORDER BY node"
        ))?;
        let rows = stmt.query_map([account], node_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn pep_node_count(&self, account: i64) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .prepare_cached("SELECT count(*) FROM pep_nodes WHERE account = ?1")?
            .query_row([account], |r| r.get(0))?;
        Ok(n.unsigned_abs())
    }

    /// Creates a node; returns its id.
    pub fn pep_create_node(
        &self,
        account: i64,
        node: &str,
        config: &NodeConfig,
        now: i64,
    ) -> Result<i64, StoreError> {
        create_node(self.conn(), account, node, config, now)
    }

    /// Replaces a node's configuration and drops the items it no longer keeps (at most
    /// `limit`); returns how many were dropped.
    pub fn pep_configure(
        &self,
        node: i64,
        config: &NodeConfig,
        limit: u32,
    ) -> Result<usize, StoreError> {
        self.transaction(|tx| configure(tx, node, config, limit))
    }

    /// Deletes a node and its items.
    pub fn pep_delete_node(&self, node: i64) -> Result<(), StoreError> {
        delete_node(self.conn(), node)
    }

    /// Deletes every item of a node.
    pub fn pep_purge(&self, node: i64) -> Result<(), StoreError> {
        purge(self.conn(), node)
    }

    /// Stores an item (replacing one with the same ItemID, which becomes the newest) and
    /// drops the oldest items beyond what the node keeps.
    pub fn pep_publish(
        &self,
        node: &PepNode,
        item: &PepItem,
        limit: u32,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| publish(tx, node.id, &node.config, item, limit))
    }

    /// Deletes one item; false when the node has no such item.
    pub fn pep_retract(&self, node: i64, item_id: &str) -> Result<bool, StoreError> {
        retract(self.conn(), node, item_id)
    }

    /// The newest `max` items (all without a limit), oldest first.
    pub fn pep_items(&self, node: i64, max: Option<u32>) -> Result<Vec<PepItem>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT item_id, publisher, payload, published FROM pep_items
             WHERE node = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = max.map_or(-1, i64::from);
        let mut items: Vec<PepItem> = stmt
            .query_map(params![node, limit], item_from_row)?
            .collect::<Result<_, _>>()?;
        items.reverse();
        Ok(items)
    }

    /// One item by ItemID.
    pub fn pep_item(&self, node: i64, item_id: &str) -> Result<Option<PepItem>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT item_id, publisher, payload, published FROM pep_items
                 WHERE node = ?1 AND item_id = ?2",
            )?
            .query_row(params![node, item_id], item_from_row)
            .optional()?)
    }

    /// The last published item of a node.
    pub fn pep_last_item(&self, node: i64) -> Result<Option<PepItem>, StoreError> {
        Ok(self.pep_items(node, Some(1))?.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_account() -> (Store, i64) {
        let store = Store::open_in_memory().unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO accounts (username, domain, created) VALUES ('a', 'x', 0)",
                [],
            )
            .unwrap();
        let id = store.conn().last_insert_rowid();
        (store, id)
    }

    fn item(id: &str, n: i64) -> PepItem {
        PepItem {
            item_id: id.into(),
            publisher: "a@x/r".into(),
            payload: format!("<p xmlns=\"urn:t\">{n}</p>"),
            published: n,
        }
    }

    #[test]
    fn publish_replace_trim_and_order() {
        let (store, account) = store_with_account();
        let config = NodeConfig {
            max_items: Some(2),
            ..NodeConfig::default()
        };
        let id = store.pep_create_node(account, "urn:t", &config, 0).unwrap();
        let node = store.pep_node(account, "urn:t").unwrap().unwrap();
        assert_eq!(node.id, id);
        assert_eq!(node.config, config);
        store.pep_publish(&node, &item("a", 1), 100).unwrap();
        store.pep_publish(&node, &item("b", 2), 100).unwrap();
        // Re-publishing "a" makes it the newest.
        store.pep_publish(&node, &item("a", 3), 100).unwrap();
        let ids: Vec<_> = store
            .pep_items(id, None)
            .unwrap()
            .into_iter()
            .map(|i| i.item_id)
            .collect();
        assert_eq!(ids, ["b", "a"]);
        store.pep_publish(&node, &item("c", 4), 100).unwrap();
        let ids: Vec<_> = store
            .pep_items(id, None)
            .unwrap()
            .into_iter()
            .map(|i| i.item_id)
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(store.pep_last_item(id).unwrap().unwrap().item_id, "c");
        assert_eq!(store.pep_items(id, Some(1)).unwrap().len(), 1);
        assert!(store.pep_retract(id, "a").unwrap());
        assert!(!store.pep_retract(id, "a").unwrap());
        assert!(store.pep_item(id, "a").unwrap().is_none());
        assert_eq!(store.pep_item(id, "c").unwrap().unwrap().published, 4);
    }

    #[test]
    fn max_and_non_persistent_nodes() {
        let (store, account) = store_with_account();
        let config = NodeConfig {
            max_items: None,
            ..NodeConfig::default()
        };
        let id = store.pep_create_node(account, "n", &config, 0).unwrap();
        let node = store.pep_node(account, "n").unwrap().unwrap();
        assert_eq!(node.config.max_items, None);
        for i in 0..5 {
            store
                .pep_publish(&node, &item(&i.to_string(), i), 3)
                .unwrap();
        }
        assert_eq!(
            store.pep_items(id, None).unwrap().len(),
            3,
            "the service limit applies"
        );
        let transient = NodeConfig {
            persist_items: false,
            ..config
        };
        assert_eq!(store.pep_configure(id, &transient, 3).unwrap(), 2);
        assert_eq!(store.pep_items(id, None).unwrap().len(), 1);
    }

    #[test]
    fn deleting_account_or_node_cascades() {
        let (store, account) = store_with_account();
        let id = store
            .pep_create_node(account, "n", &NodeConfig::default(), 0)
            .unwrap();
        let node = store.pep_node(account, "n").unwrap().unwrap();
        store.pep_publish(&node, &item("a", 1), 10).unwrap();
        assert_eq!(store.pep_node_count(account).unwrap(), 1);
        store.pep_delete_node(id).unwrap();
        assert!(store.pep_node(account, "n").unwrap().is_none());
        let n: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM pep_items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let id = store
            .pep_create_node(account, "n", &NodeConfig::default(), 0)
            .unwrap();
        let node = store.pep_node(account, "n").unwrap().unwrap();
        store.pep_publish(&node, &item("a", 1), 10).unwrap();
        store
            .conn()
            .execute("DELETE FROM accounts WHERE id = ?1", [account])
            .unwrap();
        assert!(store.pep_nodes(account).unwrap().is_empty());
        assert!(store.pep_items(id, None).unwrap().is_empty());
    }
}
