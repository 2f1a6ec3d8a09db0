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

/// One store at a time on the same files: a second open (another server on the same data
/// directory, or a reopen in this process before the first store closed) is refused with a
/// message naming the file, and succeeds once the first store has closed.
#[tokio::test]
async fn a_second_store_on_the_same_files_is_refused_until_the_first_closes() {
    let (store, dir) = file_store().await;
    assert!(DuckEventStore::in_use(&path(&dir)).unwrap());
    let refused = DuckEventStore::open(&path(&dir)).await.expect_err("a second store opened");
    let message = refused.to_string();
    assert!(message.contains("already open"), "{message}");
    assert!(message.contains(FILE_NAME), "{message}");
    drop(store);
    assert!(!DuckEventStore::in_use(&path(&dir)).unwrap());
    let reopened = DuckEventStore::open(&path(&dir)).await.unwrap();
    assert!(reopened.is_empty().unwrap());
}
