//! A SQL metric that needs more memory than its sandbox allows fails with an error, and the
//! store keeps answering (its own test binary: the time limit it raises is process-wide).
#![allow(clippy::unwrap_used)]

mod sql_support;

use std::time::Duration;

use odometer_embedded::events::set_sql_time_limit;
use odometer_store::events::EventStore;
use sql_support::{march_query, sql_metric, store_with_events};

#[tokio::test]
async fn a_query_past_its_memory_limit_fails_and_the_store_goes_on() {
    let (store, org) = store_with_events(300, "transaction-").await;
    // 300^3 = 27 million distinct 48-character strings: well over the sandbox's 256 MB.
    let spec = sql_metric(
        "SELECT count(DISTINCT a.transaction_id || b.transaction_id || c.transaction_id) \
         AS value FROM events a, events b, events c",
    );
    // Time enough that the memory limit, not the time limit, stops it.
    set_sql_time_limit(Duration::from_secs(600));
    let query = march_query();
    let err = store.usage(org, "acme", &spec, &query).await.unwrap_err();
    assert_eq!(err.code(), "sql_failed", "{err}");
    assert!(err.to_string().to_lowercase().contains("memory"), "{err}");

    let spec = sql_metric("SELECT count(*) AS value FROM events");
    let result = store.usage(org, "acme", &spec, &query).await.unwrap();
    assert_eq!(result.windows[0].total, Some(300.into()));
}
