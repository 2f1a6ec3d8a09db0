//! The DuckDB event store against the event store conformance suite, in a file (with reopens)
//! and in memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use tempfile::TempDir;

use odometer_embedded::DuckEventStore;

const FILE_NAME: &str = "events.duckdb";

fn path(dir: &TempDir) -> PathBuf {
    dir.path().join(FILE_NAME)
}

/// A fresh store in its own temporary directory (deleted when the guard is dropped).
async fn file_store() -> (DuckEventStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = DuckEventStore::open(&path(&dir)).await.unwrap();
    (store, dir)
}

/// Closes the store and opens its file again.
async fn reopen(store: DuckEventStore, dir: TempDir) -> (DuckEventStore, TempDir) {
    drop(store);
    let store = DuckEventStore::open(&path(&dir)).await.unwrap();
    (store, dir)
}

async fn memory_store() -> (DuckEventStore, ()) {
    (DuckEventStore::open_in_memory().unwrap(), ())
}

mod duckdb_file {
    odometer_store::event_store_conformance_tests!(
        super::file_store,
        reopen = super::reopen,
        index
    );
}

mod duckdb_memory {
    odometer_store::event_store_conformance_tests!(super::memory_store, index);
}
