//! A SQL metric that runs too long is stopped with an error (its own test binary: the time
//! limit is process-wide).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

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
async fn a_query_past_its_time_limit_is_stopped() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    let start: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
    let events = (0..400)
        .map(|i| Event {
            transaction_id: format!("t{i}"),
            code: "api".to_owned(),
            customer: "acme".to_owned(),
            timestamp: start,
            properties: Map::new(),
        })
        .collect();
    store.append(org, events, false).await.unwrap();
    // 400^4 = 2.56e10 combinations: hours of work without the limit.
    let spec = parse_metric_spec(&serde_json::json!({"code": "m", "name": "M", "aggregation": {
        "type": "custom_sql",
        "query": "SELECT count(*) AS value FROM events a, events b, events c, events d \
                  WHERE a.transaction_id || b.transaction_id < c.transaction_id || d.transaction_id"
    }}))
    .unwrap();
    set_sql_time_limit(Duration::from_millis(300));
    let query = UsageQuery {
        from: start,
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let began = Instant::now();
    let err = store.usage(org, "acme", &spec, &query).await.unwrap_err();
    assert_eq!(err.code(), "sql_timeout", "{err}");
    assert!(err.to_string().contains("longer than 300 ms"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(10), "stopped promptly: {:?}", began.elapsed());
    // The connection is usable afterwards.
    set_sql_time_limit(Duration::from_secs(10));
    let spec = parse_metric_spec(&serde_json::json!({"code": "m", "name": "M", "aggregation": {
        "type": "custom_sql", "query": "SELECT count(*) AS value FROM events"}}))
    .unwrap();
    let result = store.usage(org, "acme", &spec, &query).await.unwrap();
    assert_eq!(result.windows[0].total, Some(400.into()));
}
