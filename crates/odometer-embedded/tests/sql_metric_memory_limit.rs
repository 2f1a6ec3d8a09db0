//! A SQL metric that needs more memory than its sandbox allows fails with an error, and the
//! store keeps answering (its own test binary: the time limit it raises is process-wide).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use odometer_core::event::Event;
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::OrganizationId;
use odometer_embedded::events::set_sql_time_limit;
use odometer_embedded::DuckEventStore;
use odometer_store::events::EventStore;
use serde_json::Map;

#[tokio::test]
async fn a_query_past_its_memory_limit_fails_and_the_store_goes_on() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    let start: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
    let events = (0..300)
        .map(|i| Event {
            transaction_id: format!("transaction-{i:04}"),
            code: "api".to_owned(),
            customer: "acme".to_owned(),
            timestamp: start,
            properties: Map::new(),
        })
        .collect();
    store.append(org, events, false).await.unwrap();
    // 300^3 = 27 million distinct 48-character strings: well over the sandbox's 256 MB.
    let spec = parse_metric_spec(&serde_json::json!({"code": "m", "name": "M", "aggregation": {
        "type": "custom_sql",
        "query": "SELECT count(DISTINCT a.transaction_id || b.transaction_id || c.transaction_id) \
                  AS value FROM events a, events b, events c"
    }}))
    .unwrap();
    // Time enough that the memory limit, not the time limit, stops it.
    set_sql_time_limit(Duration::from_secs(600));
    let query = UsageQuery {
        from: start,
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let err = store.usage(org, "acme", &spec, &query).await.unwrap_err();
    assert_eq!(err.code(), "sql_failed", "{err}");
    assert!(err.to_string().to_lowercase().contains("memory"), "{err}");

    let spec = parse_metric_spec(&serde_json::json!({"code": "m", "name": "M", "aggregation": {
        "type": "custom_sql", "query": "SELECT count(*) AS value FROM events"}}))
    .unwrap();
    let result = store.usage(org, "acme", &spec, &query).await.unwrap();
    assert_eq!(result.windows[0].total, Some(300.into()));
}
