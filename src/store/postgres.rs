//! PostgreSQL specifics: several stateless replicas can share one database.
//!
//! Jobs are claimed with `FOR UPDATE SKIP LOCKED`, so replicas never run the same job at once,
//! and the audit chain's head row is locked `FOR UPDATE` while events are appended, so the chain
//! stays linear whichever replica writes.

use sqlx::any::AnyPoolOptions;

/// How write transactions begin.
pub(super) const BEGIN_WRITE: &str = "BEGIN";

/// Lock the rows a write transaction reads.
pub(super) const LOCK_FOR_UPDATE: &str = " FOR UPDATE";

/// Claimed job rows are locked, skipping those another replica is claiming.
pub(super) const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(super) fn pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(max_connections.max(1))
}
