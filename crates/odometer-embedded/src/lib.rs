//! Odometer's embedded backend: the SQLite catalog (and, later, the DuckDB event store), for a
//! single-binary deployment that keeps everything in one data directory.

pub mod catalog;

pub use catalog::{SqliteCatalog, SCHEMA_VERSION};
