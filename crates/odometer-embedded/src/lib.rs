//! Odometer's embedded backend: the SQLite catalog and the DuckDB event store, for a
//! single-binary deployment that keeps everything in one data directory.

pub mod catalog;
pub mod events;

pub use catalog::{SqliteCatalog, SCHEMA_VERSION};
pub use events::{AppendStats, BuildHold, DuckEventStore, UsagePaths};
