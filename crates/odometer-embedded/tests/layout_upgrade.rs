//! A database of events layout 2 (what the event store wrote before the log: every row with
//! all 32 slot columns, grouped `s0..s15, n0..n15`) opens with this build, is upgraded in place
//! to layout 3, keeps its events exactly once, takes new ones in its own column order, and
//! answers usage from the events and from the index as the reference engine does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use duckdb::Connection;
use serde_json::{json, Value};

use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, EventOutcome};
use odometer_core::intake::{content_hash, event_fingerprint};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::OrganizationId;
use odometer_embedded::DuckEventStore;
use odometer_store::conformance::events::{answer_of, wait_until_indexed};
use odometer_store::events::{EventListParams, EventStore, PathChoice};

/// The layout-2 schema, as that build created it.
fn layout_2_schema() -> String {
    let texts: Vec<String> = (0..16).map(|i| format!("s{i} VARCHAR")).collect();
    let numbers: Vec<String> = (0..16).map(|i| format!("n{i} HUGEINT")).collect();
    format!(
        "CREATE TABLE odometer_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
         INSERT INTO odometer_meta VALUES ('events_schema_version', '2');
         CREATE TABLE events (seq UBIGINT NOT NULL, org VARCHAR NOT NULL, customer VARCHAR NOT NULL,
             transaction_id VARCHAR NOT NULL, code VARCHAR NOT NULL, ts BIGINT NOT NULL,
             ingested_at BIGINT NOT NULL, properties VARCHAR NOT NULL, fp_hi UBIGINT NOT NULL,
             fp_lo UBIGINT NOT NULL, content_hi UBIGINT NOT NULL, content_lo UBIGINT NOT NULL,
             present UINTEGER NOT NULL, wide BOOLEAN NOT NULL, {}, {});
         CREATE TABLE property_slots (org VARCHAR NOT NULL, key VARCHAR NOT NULL, slot INTEGER);",
        texts.join(", "),
        numbers.join(", ")
    )
}

fn event(tx: &str, at: &str, properties: Value) -> Event {
    Event {
        transaction_id: tx.into(),
        code: "api".into(),
        customer: "acme".into(),
        timestamp: at.parse().unwrap(),
        properties: properties.as_object().unwrap().clone(),
    }
}

#[tokio::test]
async fn a_layout_2_database_is_upgraded_in_place_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.duckdb");
    let org = OrganizationId::new();
    let first = event("t1", "2026-03-02T10:00:00Z", json!({"n": 5}));
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&layout_2_schema()).unwrap();
        let fp = event_fingerprint(org, &first.customer, &first.transaction_id);
        let content = content_hash(&first);
        conn.execute(
            "INSERT INTO events (seq, org, customer, transaction_id, code, ts, ingested_at, properties,
                 fp_hi, fp_lo, content_hi, content_lo, present, wide, s0, n0)
             VALUES (1, ?, 'acme', 't1', 'api', ?, ?, '{\"n\":5}', ?, ?, ?, ?, 1, false, '5', 50000000000)",
            duckdb::params![
                org.to_string(),
                first.timestamp.timestamp_micros(),
                first.timestamp.timestamp_micros(),
                (fp >> 64) as u64,
                fp as u64,
                (content >> 64) as u64,
                content as u64
            ],
        )
        .unwrap();
        conn.execute("INSERT INTO property_slots VALUES (?, 'n', 0)", [org.to_string()]).unwrap();
    }

    let store = DuckEventStore::open(&path).await.unwrap();
    let listed =
        store.list_events(org, &EventListParams { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].event, first);
    // The stored identity is still known: the same event again is a duplicate.
    let again = store.append(org, vec![first.clone()], false).await.unwrap();
    assert_eq!(again, vec![EventOutcome::Duplicate { sequence: 1 }]);
    // A new key takes the next slot, whose columns the old layout already has.
    let second = event("t2", "2026-03-03T10:00:00Z", json!({"n": "2.5", "region": "eu"}));
    let third = event("t3", "2026-03-04T10:00:00Z", json!({"n": 1, "region": "us"}));
    let outcomes = store.append(org, vec![second, third], false).await.unwrap();
    assert_eq!(
        outcomes,
        vec![EventOutcome::Accepted { sequence: 2 }, EventOutcome::Accepted { sequence: 3 }]
    );

    let metric = parse_metric_spec(&json!({"code": "n", "event_code": "api", "name": "N",
        "aggregation": {"type": "sum", "field": "n"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"]}}))
    .unwrap();
    let query = UsageQuery {
        from: "2026-03-01T00:00:00Z".parse().unwrap(),
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        window: WindowSize::Day,
        timezone: chrono_tz::Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let events = store.customer_events(org, "acme", "api", None, query.to).await.unwrap();
    assert_eq!(events.len(), 3);
    let expected = compute_usage(&metric, &events, &query).unwrap();
    let from_events = answer_of(&store, org, "acme", &metric, &query, PathChoice::Events).await;
    assert_eq!(from_events.result, expected, "pushed down over the old columns");
    store.index_definitions(org, std::slice::from_ref(&metric)).await.unwrap();
    wait_until_indexed(&store, org, &metric).await;
    let from_index = answer_of(&store, org, "acme", &metric, &query, PathChoice::Any).await;
    assert!(from_index.path.is_index());
    assert_eq!(from_index.result, expected);
    drop(store);

    let conn = Connection::open(&path).unwrap();
    let version: String = conn
        .query_row("SELECT value FROM odometer_meta WHERE key = 'events_schema_version'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, "3");
    let rows: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 3, "the old row once, the two new ones");
}
