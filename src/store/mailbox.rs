//! The per-user mailbox: one append-only archive of messages.

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = "";
