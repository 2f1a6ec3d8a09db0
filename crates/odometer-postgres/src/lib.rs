//! Odometer's server-mode catalog: [`PgCatalog`], the [`Catalog`](odometer_store::Catalog) trait
//! on PostgreSQL, for many stateless `odometer serve` replicas sharing one database.
//!
//! ```text
//! let catalog = PgCatalog::connect("postgres://odometer:secret@db:5432/odometer").await?;
//! ```
//!
//! Connecting applies the embedded migrations (`migrations/`). Every invariant of the catalog
//! (revisions without gaps, the lock rule, attachments in step with plans, unique codes and
//! external ids) is enforced by PostgreSQL transactions, row locks and unique indexes, so it
//! holds across replicas; the catalog conformance suite of `odometer-store` checks the
//! behaviour, `tests/catalog_conformance.rs` runs it here.

mod catalog;

pub use catalog::{PgCatalog, DEFAULT_MAX_CONNECTIONS, MIGRATIONS_TABLE, SCHEMA_VERSION};
/// The pool type [`PgCatalog::connect_with_pool`] takes, so callers need not name sqlx's paths.
pub use sqlx::PgPool;
