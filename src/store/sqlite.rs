//! SQLite specifics: the default, embedded database.
//!
//! WAL journal (readers never block the writer), `synchronous = NORMAL` (durable at every
//! checkpoint, safe against application crashes), and write transactions that begin
//! `IMMEDIATE`, so two writers queue on the busy timeout instead of failing on a lock upgrade.

use std::path::Path;

use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

use super::StoreError;

/// How write transactions begin.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Row locks are implicit: only one write transaction runs at a time.
pub(super) const LOCK_FOR_UPDATE: &str = "";

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// `sqlite://PATH` (or `sqlite:PATH`) with the file created if missing.
pub(super) fn normalise_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Corrupt(format!("not a sqlite URL: {url}")))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Corrupt(
            "an in-memory SQLite database would lose everything at restart; give a file path"
                .into(),
        ));
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Db(sqlx::Error::Configuration(
                format!(
                    "cannot create the database directory {}: {e}",
                    dir.display()
                )
                .into(),
            ))
        })?;
    }
    let mut q: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
    if !q.iter().any(|p| p.starts_with("mode=")) {
        q.push("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{}", q.join("&")))
}

pub(super) fn pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA busy_timeout = 15000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                // Read pages through a memory map rather than a read() per page.
                conn.execute("PRAGMA mmap_size = 268435456").await?;
                Ok(())
            })
        })
}
