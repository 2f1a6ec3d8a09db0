//! Conformance of a store's usage index (semantics 6.5): states are built from the stored
//! events and then answer, they keep up with appends, a definition that changes what counts is
//! answered as the new revision at once (from the events while its state builds, never from
//! the old state), and one that changes only presentation reuses the state.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use odometer_core::engine::compute_usage;
use odometer_core::event::Event;
use odometer_core::usage::UsageQuery;
use odometer_core::{MetricSpec, OrganizationId};

use super::{event, usage_difference, usage_query, Paired};
use crate::conformance::spec;
use crate::events::{EventStore, EventsReason, IndexStatus, PathChoice, UsageAnswer, UsagePath};

/// How long a state may take to build in these tests.
const BUILD_LIMIT: Duration = Duration::from_secs(60);

/// Polls until the state of `spec` is complete (or the store keeps none); answers the last
/// status. Panics past [`BUILD_LIMIT`].
pub async fn wait_until_indexed(
    store: &dyn EventStore,
    org: OrganizationId,
    spec: &MetricSpec,
) -> IndexStatus {
    let deadline = Instant::now() + BUILD_LIMIT;
    loop {
        let status = store.index_status(org, spec).await.expect("index_status");
        match status {
            IndexStatus::Building { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            IndexStatus::Building { .. } => {
                panic!("the state of {} did not build in time", spec.code)
            }
            done => return done,
        }
    }
}

/// One customer's answer and its path.
pub async fn answer_of(
    store: &dyn EventStore,
    org: OrganizationId,
    customer: &str,
    spec: &MetricSpec,
    query: &UsageQuery,
    choice: PathChoice,
) -> UsageAnswer {
    let customers = [customer.to_owned()];
    let mut answers =
        store.usage_answers(org, &customers, spec, query, choice).await.expect("usage_answers");
    assert_eq!(answers.len(), 1, "one answer for one customer");
    answers.remove(0)
}

fn calls(count: usize, offset: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let n = offset + i;
            let region = ["eu", "us", "ap"][n % 3];
            let customer = ["c1", "c2"][n % 2];
            // Spread over March, on and off the 15-minute grid.
            let at = format!(
                "2026-03-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                1 + n % 28,
                n % 24,
                (n * 7) % 60,
                n % 60,
                if n.is_multiple_of(4) { 0 } else { n * 37 % 1_000_000 }
            );
            event(
                customer,
                &format!("call-{n}"),
                "api",
                &at,
                json!({"n": n % 10, "region": region}),
            )
        })
        .collect()
}

fn sum_metric(extra: Value) -> MetricSpec {
    let mut definition = json!({"code": "calls", "event_code": "api", "name": "Calls",
        "aggregation": {"type": "sum", "field": "n"}});
    if let (Value::Object(d), Value::Object(extra)) = (&mut definition, extra) {
        d.extend(extra);
    }
    spec(definition)
}

fn march() -> UsageQuery {
    usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
}

/// A state registered after events were stored is built from them, then answers from the
/// index, equal to the reference engine; a state of a definition nobody registered is not
/// served.
pub async fn index_states_are_built_then_answer(store: &dyn EventStore) {
    let org = OrganizationId::new();
    let mut paired = Paired::new(store);
    paired.append(org, calls(500, 0), false, "history").await;
    let metric = sum_metric(json!({}));
    let query = march();
    let before = answer_of(store, org, "c1", &metric, &query, PathChoice::Any).await;
    assert_eq!(before.path, UsagePath::Events(EventsReason::NotIndexed));
    store.index_definitions(org, std::slice::from_ref(&metric)).await.expect("define");
    let status = wait_until_indexed(store, org, &metric).await;
    assert!(matches!(status, IndexStatus::Complete { events, .. } if events == 500), "{status:?}");
    for customer in ["c1", "c2", "c3"] {
        let expected = compute_usage(&metric, &paired.events_of(org, customer), &query);
        let answer = answer_of(store, org, customer, &metric, &query, PathChoice::Any).await;
        assert_eq!(answer.path, UsagePath::Index { edges: false }, "{customer}");
        assert_eq!(Ok(answer.result), expected, "{customer} from the index");
    }
    // Another organization's same definition has no state.
    let other = OrganizationId::new();
    let elsewhere = answer_of(store, other, "c1", &metric, &query, PathChoice::Any).await;
    assert_eq!(elsewhere.path, UsagePath::Events(EventsReason::NotIndexed));
}

/// Appends after the state is complete are in its answers at once, including late events
/// and edge buckets read from the events.
pub async fn the_index_keeps_up_with_appends(store: &dyn EventStore) {
    let org = OrganizationId::new();
    let mut paired = Paired::new(store);
    let metric = sum_metric(json!({"segmentation":
        {"type": "single", "key": "region", "values": ["eu", "us"]}}));
    store.index_definitions(org, std::slice::from_ref(&metric)).await.expect("define");
    wait_until_indexed(store, org, &metric).await;
    // Periods on the grid, and off it (edges from the events).
    let queries = [
        march(),
        usage_query("2026-03-03T10:07:00.5Z", "2026-03-20T23:52:13Z"),
        usage_query("2026-03-05T00:00:00Z", "2026-03-05T00:10:00Z"),
    ];
    for round in 0..4 {
        // Each round's events go back over the whole month: late arrivals for the state.
        paired.append(org, calls(120, round * 120), false, "round").await;
        for query in &queries {
            for customer in ["c1", "c2"] {
                let expected = compute_usage(&metric, &paired.events_of(org, customer), query);
                let answer = answer_of(store, org, customer, &metric, query, PathChoice::Any).await;
                assert!(answer.path.is_index(), "round {round}: {:?}", answer.path);
                assert_eq!(Ok(answer.result), expected, "round {round}, {customer}, {query:?}");
            }
        }
    }
}

/// An update that changes what counts is answered as the new revision at once: from the
/// events while its state builds, then from its own state. The old state is never served for
/// it: its numbers differ on this data, and every answer is checked.
pub async fn an_update_is_answered_as_the_new_revision_while_its_state_builds(
    store: &dyn EventStore,
) {
    let org = OrganizationId::new();
    let mut paired = Paired::new(store);
    // Enough events that the build takes a while.
    for part in 0..8 {
        paired.append(org, calls(2_500, part * 2_500), false, "history").await;
    }
    let old = sum_metric(json!({}));
    store.index_definitions(org, std::slice::from_ref(&old)).await.expect("define");
    wait_until_indexed(store, org, &old).await;
    let query = march();
    let old_expected = compute_usage(&old, &paired.events_of(org, "c1"), &query).expect("old");
    // Revision 2 counts only some regions.
    let new = sum_metric(
        json!({"filters": [{"property": "region", "op": "in", "values": ["eu", "ap"]}]}),
    );
    let expected = compute_usage(&new, &paired.events_of(org, "c1"), &query).expect("new");
    assert_ne!(old_expected, expected, "the test needs revisions that differ");
    store.index_definitions(org, std::slice::from_ref(&new)).await.expect("redefine");
    let deadline = Instant::now() + BUILD_LIMIT;
    loop {
        let building = matches!(
            store.index_status(org, &new).await.expect("status"),
            IndexStatus::Building { .. }
        );
        let answer = answer_of(store, org, "c1", &new, &query, PathChoice::Any).await;
        assert_eq!(answer.result, expected, "revision 2's numbers (path {:?})", answer.path);
        if !building {
            break;
        }
        assert!(Instant::now() < deadline, "the new state did not build in time");
    }
    let after = answer_of(store, org, "c1", &new, &query, PathChoice::Any).await;
    assert_eq!(after.path, UsagePath::Index { edges: false });
    assert_eq!(after.result, expected);
    // The old definition is no longer indexed: its questions go to the events.
    let old_now = answer_of(store, org, "c1", &old, &query, PathChoice::Any).await;
    assert_eq!(old_now.path, UsagePath::Events(EventsReason::NotIndexed));
    assert_eq!(old_now.result, old_expected);
}

/// Revisions that change only name, unit conversion or rounding share the state: the new one
/// is complete at once, and answers with its own conversion.
pub async fn presentation_changes_reuse_the_state(store: &dyn EventStore) {
    let org = OrganizationId::new();
    let mut paired = Paired::new(store);
    paired.append(org, calls(300, 0), false, "history").await;
    let metric = sum_metric(json!({}));
    store.index_definitions(org, std::slice::from_ref(&metric)).await.expect("define");
    wait_until_indexed(store, org, &metric).await;
    let renamed =
        sum_metric(json!({"name": "Renamed", "unit_conversion": {"factor": "7", "rounding": "up"},
        "rounding": {"function": "round", "precision": 1}}));
    store.index_definitions(org, std::slice::from_ref(&renamed)).await.expect("redefine");
    let status = store.index_status(org, &renamed).await.expect("status");
    assert!(matches!(status, IndexStatus::Complete { .. }), "no rebuild needed: {status:?}");
    let query = march();
    let expected = compute_usage(&renamed, &paired.events_of(org, "c2"), &query);
    let answer = answer_of(store, org, "c2", &renamed, &query, PathChoice::Any).await;
    assert_eq!(answer.path, UsagePath::Index { edges: false });
    assert_eq!(Ok(answer.result), expected);
}

/// `as_of` before the newest ingestion is answered from the events, and equal.
pub async fn as_of_in_the_past_is_answered_from_the_events(store: &dyn EventStore) {
    let org = OrganizationId::new();
    let mut paired = Paired::new(store);
    let metric = sum_metric(json!({}));
    store.index_definitions(org, std::slice::from_ref(&metric)).await.expect("define");
    wait_until_indexed(store, org, &metric).await;
    paired.append(org, calls(50, 0), false, "first").await;
    let first_end = *paired.append_ends.last().expect("an append");
    paired.append(org, calls(50, 50), false, "second").await;
    let mut query = march();
    query.as_of = Some(first_end);
    let expected = compute_usage(&metric, &paired.events_of(org, "c1"), &query);
    let answer = answer_of(store, org, "c1", &metric, &query, PathChoice::Any).await;
    assert_eq!(answer.path, UsagePath::Events(EventsReason::AsOf));
    assert_eq!(Ok(answer.result), expected);
    // An as_of at or after every ingestion is the index's to answer.
    query.as_of = Some(*paired.append_ends.last().expect("an append"));
    let answer = answer_of(store, org, "c1", &metric, &query, PathChoice::Any).await;
    assert!(answer.path.is_index(), "{:?}", answer.path);
    let expected = compute_usage(&metric, &paired.events_of(org, "c1"), &query);
    assert_eq!(Ok(answer.result), expected);
    let from_events = answer_of(store, org, "c2", &metric, &query, PathChoice::Events).await;
    assert_eq!(from_events.path, UsagePath::Events(EventsReason::Requested));
    let expected = compute_usage(&metric, &paired.events_of(org, "c2"), &query);
    assert_eq!(usage_difference(&Ok(from_events.result), &expected), None);
}
