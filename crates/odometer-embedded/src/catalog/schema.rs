//! The catalog's schema: connection settings and the versioned migrations applied on open.
//!
//! Migrations are numbered SQL files under `migrations/`, compiled into the binary and applied
//! in order by `rusqlite_migration`, which records the version reached in SQLite's
//! `user_version`. A migration, once released, is never edited: a change is a new file.

use std::time::Duration;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, SchemaVersion, M};

use odometer_store::StoreError;

const MIGRATION_LIST: &[M<'static>] = &[
    M::up(include_str!("../../migrations/0001_catalog.sql")),
    M::up(include_str!("../../migrations/0002_metric_attachments.sql")),
    M::up(include_str!("../../migrations/0003_plans_subscriptions.sql")),
    M::up(include_str!("../../migrations/0004_dialect_records.sql")),
];

const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

/// The schema version a catalog is at once opened: the number of migrations.
pub const SCHEMA_VERSION: usize = MIGRATION_LIST.len();

/// How long a write waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

fn backend(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{context}: {error}"))
}

/// Per-connection settings, applied before anything else.
pub(crate) fn configure(conn: &Connection) -> Result<(), StoreError> {
    // WAL lets readers of the file (backups, a second process) proceed during writes, and
    // synchronous=FULL makes every committed write durable: catalog writes are rare and small,
    // so the fsync per commit is cheap insurance.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .map_err(|e| backend("cannot enable write-ahead logging", e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| backend("cannot set synchronous mode", e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| backend("cannot enable foreign keys", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| backend("cannot set the busy timeout", e))?;
    Ok(())
}

/// The schema version the database is at.
pub(crate) fn version(conn: &Connection) -> Result<usize, StoreError> {
    let version = MIGRATIONS
        .current_version(conn)
        .map_err(|e| backend("cannot read the schema version", e))?;
    Ok(usize::from(version))
}

/// Applies the migrations the database has not seen yet, up to `target` (all of them in
/// normal use), in one transaction.
pub(crate) fn migrate(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let current = MIGRATIONS
        .current_version(conn)
        .map_err(|e| backend("cannot read the schema version", e))?;
    // A database written by a newer odometer must not be used (nor "migrated down") by an
    // older one: its schema may mean things this version does not know.
    if let SchemaVersion::Outside(version) = current {
        return Err(StoreError::Backend(format!(
            "the catalog is at schema version {version}, newer than this odometer supports \
             ({SCHEMA_VERSION})"
        )));
    }
    let current = usize::from(current);
    if current > target {
        return Err(StoreError::Backend(format!(
            "the catalog is at schema version {current}, past the requested {target}"
        )));
    }
    MIGRATIONS.to_version(conn, target).map_err(|e| backend("catalog migration failed", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
        assert_eq!(SCHEMA_VERSION, 4);
    }
}
