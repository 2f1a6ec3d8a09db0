//! The ClickHouse event store (with its ledger in PostgreSQL) against the event store
//! conformance suite, each test on fresh databases of the servers `scripts/servers` runs.
//! Without an `index`: the store keeps no usage index (see the crate documentation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use odometer_clickhouse::ClickHouseEventStore;
use support::{fresh_store, Databases};

/// Drops the store and opens the same databases again, as a restarted replica does.
async fn reopen(
    store: ClickHouseEventStore,
    databases: Databases,
) -> (ClickHouseEventStore, Databases) {
    drop(store);
    let store = ClickHouseEventStore::open(databases.options()).await.expect("reopen");
    (store, databases)
}

mod clickhouse {
    odometer_store::event_store_conformance_tests!(super::fresh_store, reopen = super::reopen);
}
