//! A SQL metric that runs too long is stopped with an error (its own test binary: the time
//! limit is process-wide).
#![allow(clippy::unwrap_used)]

mod sql_support;

use std::time::{Duration, Instant};

use odometer_embedded::events::set_sql_time_limit;
use odometer_store::events::EventStore;
use sql_support::{march_query, sql_metric, store_with_events};

#[tokio::test]
async fn a_query_past_its_time_limit_is_stopped() {
    let (store, org) = store_with_events(400, "t").await;
    // 400^4 = 2.56e10 combinations: hours of work without the limit.
    let spec = sql_metric(
        "SELECT count(*) AS value FROM events a, events b, events c, events d \
         WHERE a.transaction_id || b.transaction_id < c.transaction_id || d.transaction_id",
    );
    set_sql_time_limit(Duration::from_millis(300));
    let query = march_query();
    let began = Instant::now();
    let err = store.usage(org, "acme", &spec, &query).await.unwrap_err();
    assert_eq!(err.code(), "sql_timeout", "{err}");
    assert!(err.to_string().contains("longer than 300 ms"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(10), "stopped promptly: {:?}", began.elapsed());
    // The store answers afterwards.
    set_sql_time_limit(Duration::from_secs(10));
    let spec = sql_metric("SELECT count(*) AS value FROM events");
    let result = store.usage(org, "acme", &spec, &query).await.unwrap();
    assert_eq!(result.windows[0].total, Some(400.into()));
}
