//! Shared by the SQL metric limit tests (each its own binary: the time limit is process-wide).
#![allow(dead_code, clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use odometer_core::event::Event;
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_embedded::DuckEventStore;
use odometer_store::events::EventStore;
use serde_json::Map;

/// A store holding `n` events of customer `acme` on 1 March 2026, named `<prefix><i>`.
pub async fn store_with_events(n: usize, prefix: &str) -> (DuckEventStore, OrganizationId) {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    let events = (0..n)
        .map(|i| Event {
            transaction_id: format!("{prefix}{i:04}"),
            code: "api".to_owned(),
            customer: "acme".to_owned(),
            timestamp: march(),
            properties: Map::new(),
        })
        .collect();
    store.append(org, events, false).await.unwrap();
    (store, org)
}

pub fn march() -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

/// March 2026, one window, UTC.
pub fn march_query() -> UsageQuery {
    UsageQuery {
        from: march(),
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

/// A `custom_sql` metric answering `query`.
pub fn sql_metric(query: &str) -> MetricSpec {
    parse_metric_spec(&serde_json::json!({"code": "m", "name": "M",
        "aggregation": {"type": "custom_sql", "query": query}}))
    .unwrap()
}
