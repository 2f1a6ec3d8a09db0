//! The embedded store's usage index beyond the conformance suite: with builds held, an update
//! is answered from the events (and as the new revision) for as long as its state builds,
//! never from the old state; the answers say which path computed them and the store counts
//! them; a clean reopen brings the states back complete without a build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_embedded::DuckEventStore;
use odometer_store::conformance::events::{answer_of, wait_until_indexed};
use odometer_store::events::{
    EventListParams, EventStore, EventsReason, IndexStatus, PathChoice, UsagePath,
};

fn spec(definition: Value) -> MetricSpec {
    parse_metric_spec(&definition).unwrap()
}

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn calls(count: usize) -> Vec<Event> {
    (0..count)
        .map(|n| Event {
            transaction_id: format!("t{n}"),
            code: "api".into(),
            customer: ["c1", "c2"][n % 2].into(),
            timestamp: format!("2026-03-{:02}T{:02}:{:02}:00Z", 1 + n % 28, n % 24, n % 60)
                .parse()
                .unwrap(),
            properties: json!({"n": n % 7, "region": REGIONS[n % 3]}).as_object().unwrap().clone(),
        })
        .collect()
}

fn march() -> UsageQuery {
    UsageQuery {
        from: "2026-03-01T00:00:00Z".parse().unwrap(),
        to: "2026-04-01T00:00:00Z".parse().unwrap(),
        window: WindowSize::Day,
        timezone: chrono_tz::Tz::Asia__Kolkata,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

async fn stored(store: &DuckEventStore, org: OrganizationId) -> Vec<StoredEvent> {
    let mut all = Vec::new();
    let mut params = EventListParams { limit: 1000, ..EventListParams::default() };
    loop {
        let page = store.list_events(org, &params).await.unwrap();
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => return all,
        }
    }
}

fn of(events: &[StoredEvent], customer: &str) -> Vec<StoredEvent> {
    events.iter().filter(|e| e.event.customer == customer).cloned().collect()
}

#[tokio::test]
async fn the_old_state_is_never_served_while_the_new_one_builds() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    store.append(org, calls(3000), false).await.unwrap();
    let events = stored(&store, org).await;
    let old = spec(json!({"code": "calls", "event_code": "api", "name": "Calls",
        "aggregation": {"type": "sum", "field": "n"}}));
    store.index_definitions(org, std::slice::from_ref(&old)).await.unwrap();
    wait_until_indexed(&store, org, &old).await;
    let query = march();
    let old_answer = answer_of(&store, org, "c1", &old, &query, PathChoice::Any).await;
    assert_eq!(old_answer.path, UsagePath::Index { edges: false });

    // Revision 2 filters: its numbers differ from revision 1's.
    let new = spec(json!({"code": "calls", "event_code": "api", "name": "Calls",
        "aggregation": {"type": "sum", "field": "n"},
        "filters": [{"property": "region", "op": "ne", "values": ["us"]}]}));
    let expected = compute_usage(&new, &of(&events, "c1"), &query).unwrap();
    assert_ne!(expected, old_answer.result);
    let hold = store.hold_index_builds();
    store.index_definitions(org, std::slice::from_ref(&new)).await.unwrap();
    for _ in 0..20 {
        assert!(matches!(
            store.index_status(org, &new).await.unwrap(),
            IndexStatus::Building { .. }
        ));
        let answer = answer_of(&store, org, "c1", &new, &query, PathChoice::Any).await;
        assert_eq!(answer.path, UsagePath::Events(EventsReason::Building));
        assert_eq!(answer.result, expected, "revision 2 while its state builds");
        // Appends while it waits reach the new state too.
    }
    store.append(org, calls(3100).split_off(3000), false).await.unwrap();
    let events = stored(&store, org).await;
    let expected = compute_usage(&new, &of(&events, "c1"), &query).unwrap();
    let answer = answer_of(&store, org, "c1", &new, &query, PathChoice::Any).await;
    assert_eq!(answer.result, expected);
    drop(hold);
    let status = wait_until_indexed(&store, org, &new).await;
    // The state holds the events its filter lets through, old and new alike.
    let passing = events.iter().filter(|e| e.event.properties["region"] != "us").count() as u64;
    assert!(
        matches!(status, IndexStatus::Complete { events, .. } if events == passing),
        "{status:?}"
    );
    let answer = answer_of(&store, org, "c1", &new, &query, PathChoice::Any).await;
    assert_eq!(answer.path, UsagePath::Index { edges: false });
    assert_eq!(answer.result, expected, "revision 2 from its own state");
    // Revision 1 is no longer indexed.
    let answer = answer_of(&store, org, "c1", &old, &query, PathChoice::Any).await;
    assert_eq!(answer.path, UsagePath::Events(EventsReason::NotIndexed));
}

#[tokio::test]
async fn answers_name_their_path_and_the_store_counts_them() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    store.append(org, calls(200), false).await.unwrap();
    let metric = spec(json!({"code": "calls", "event_code": "api", "name": "Calls",
        "aggregation": {"type": "sum", "field": "n"}}));
    store.index_definitions(org, std::slice::from_ref(&metric)).await.unwrap();
    wait_until_indexed(&store, org, &metric).await;
    let before = store.usage_paths();
    let mut query = march();
    let customers = ["c1".to_owned(), "c2".to_owned(), "c3".to_owned()];
    let answers =
        store.usage_answers(org, &customers, &metric, &query, PathChoice::Any).await.unwrap();
    assert!(answers.iter().all(|a| a.path == UsagePath::Index { edges: false }));
    // A period off the grid reads its edge buckets from the events.
    query.from = "2026-03-02T10:07:00Z".parse().unwrap();
    let answers =
        store.usage_answers(org, &customers, &metric, &query, PathChoice::Any).await.unwrap();
    assert!(answers.iter().all(|a| a.path == UsagePath::Index { edges: true }));
    let events = stored(&store, org).await;
    for (customer, answer) in customers.iter().zip(&answers) {
        assert_eq!(
            Ok(answer.result.clone()),
            compute_usage(&metric, &of(&events, customer), &query)
        );
    }
    let answers =
        store.usage_answers(org, &customers, &metric, &query, PathChoice::Events).await.unwrap();
    assert!(answers.iter().all(|a| a.path == UsagePath::Events(EventsReason::Requested)));
    let after = store.usage_paths();
    assert_eq!(after.index - before.index, 2);
    assert_eq!(after.pushed_down + after.reference - before.pushed_down - before.reference, 1);
}

#[tokio::test]
async fn a_clean_reopen_brings_the_states_back_without_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.duckdb");
    let org = OrganizationId::new();
    let metric = spec(json!({"code": "seats", "event_code": "api", "name": "Seats",
        "aggregation": {"type": "unique_count", "field": "region"}, "group_by": ["n"]}));
    let before = {
        let store = DuckEventStore::open(&path).await.unwrap();
        store.append(org, calls(500), false).await.unwrap();
        store.index_definitions(org, std::slice::from_ref(&metric)).await.unwrap();
        wait_until_indexed(&store, org, &metric).await
    };
    assert!(dir.path().join("events.snapshot").exists(), "a clean close leaves a snapshot");
    let store = DuckEventStore::open(&path).await.unwrap();
    assert!(!dir.path().join("events.snapshot").exists(), "a snapshot is used once");
    // Complete at once: nothing to build.
    assert_eq!(store.index_status(org, &metric).await.unwrap(), before);
    store.index_definitions(org, std::slice::from_ref(&metric)).await.unwrap();
    assert_eq!(store.index_status(org, &metric).await.unwrap(), before);
    let events = stored(&store, org).await;
    let query = march();
    for customer in ["c1", "c2"] {
        let answer = answer_of(&store, org, customer, &metric, &query, PathChoice::Any).await;
        assert_eq!(answer.path, UsagePath::Index { edges: false });
        assert_eq!(Ok(answer.result), compute_usage(&metric, &of(&events, customer), &query));
    }
    // Appends go on from where the snapshot was, exactly once.
    let again = store.append(org, calls(510), false).await.unwrap();
    assert_eq!(again.iter().filter(|o| o.status() == "duplicate").count(), 500);
    assert_eq!(again.iter().filter(|o| o.status() == "accepted").count(), 10);
    assert_eq!(store.len().unwrap(), 510);
}
