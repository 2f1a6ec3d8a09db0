//! Conformance for stores whose data outlives the store value: after a reopen every event is
//! there, re-sent events are still duplicates or conflicts, and sequences continue.

use std::future::Future;

use serde_json::json;

use odometer_core::event::{Event, EventOutcome};
use odometer_core::OrganizationId;

use super::{event, identities, list_all, listed_events, statuses, usage_query, Paired};
use crate::conformance::spec;
use crate::events::EventStore;

fn call(customer: &str, transaction_id: &str, at: &str, n: i64) -> Event {
    event(customer, transaction_id, "api", at, json!({"n": n, "region": "eu"}))
}

/// Panics unless the store holds exactly the reference's events of each organization, reads
/// each back by key, and answers the reference engine's usage.
async fn assert_everything_kept(paired: &Paired<'_>, orgs: &[OrganizationId], what: &str) {
    let sum = spec(json!({"code": "n", "event_code": "api", "name": "N",
        "aggregation": {"type": "sum", "field": "n"}, "group_by": ["region"]}));
    let query = usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    for &org in orgs {
        let listed = listed_events(paired.store, org, list_all(2)).await;
        let expected = paired.reference.all_events(org);
        assert_eq!(identities(&listed), identities(&expected), "{what}: every event is kept");
        for stored in &listed {
            paired.assert_stored(org, stored, what);
            let found = paired
                .store
                .get_event(org, &stored.event.customer, &stored.event.transaction_id)
                .await
                .expect("get_event");
            assert_eq!(found.as_ref(), Some(stored), "{what}: found by key");
        }
        for customer in ["c1", "c2"] {
            paired.assert_usage(org, customer, &sum, &query, what).await;
        }
    }
}

/// Runs on a store and the guard of its data; `reopen` drops the store and opens the same data
/// again (twice in this test).
pub async fn a_reopened_store_keeps_every_event<S, G, F, Fut>(store: S, guard: G, reopen: F)
where
    S: EventStore,
    F: Fn(S, G) -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let (a, b) = (OrganizationId::new(), OrganizationId::new());
    let first = [
        call("c1", "t1", "2026-03-02T10:00:00Z", 1),
        call("c1", "t2", "2026-03-02T11:00:00.000001Z", 2),
        call("c2", "t1", "2026-03-03T10:00:00Z", 3),
    ];
    let mut paired = Paired::new(&store);
    paired.append(a, first.to_vec(), false, "a before").await;
    paired.append(b, first[..1].to_vec(), false, "b before").await;
    // A failed atomic batch leaves nothing to find after the reopen either.
    let failing = vec![
        call("c2", "t9", "2026-03-04T10:00:00Z", 9),
        call("c1", "t1", "2026-03-02T10:00:00Z", 7),
    ];
    let o = paired.append(a, failing, true, "failed atomic").await;
    assert_eq!(statuses(&o), ["rejected", "rejected"]);
    let recorded = paired.into_recorded();

    let (store, guard) = reopen(store, guard).await;
    let mut paired = Paired::resume(&store, recorded);
    assert_everything_kept(&paired, &[a, b], "after the first reopen").await;
    assert_eq!(store.get_event(a, "c2", "t9").await.expect("get_event"), None);

    let resent = vec![
        first[1].clone(),
        call("c1", "t1", "2026-03-02T10:00:00Z", 100),
        call("c2", "t9", "2026-03-04T10:00:00Z", 9),
        first[2].clone(),
        Event { code: "storage".to_owned(), ..first[2].clone() },
    ];
    let o = paired.append(a, resent, false, "a resent after the reopen").await;
    assert_eq!(statuses(&o), ["duplicate", "rejected", "accepted", "duplicate", "rejected"]);
    let sequences: Vec<Option<u64>> = o.iter().map(EventOutcome::sequence).collect();
    assert_eq!(
        sequences,
        [Some(2), None, Some(4), Some(3), None],
        "duplicates keep their sequence; the sequence continues"
    );
    let o = paired.append(b, vec![first[0].clone(), first[1].clone()], true, "b resent").await;
    assert_eq!(
        o,
        [EventOutcome::Duplicate { sequence: 1 }, EventOutcome::Accepted { sequence: 2 }],
        "b continues its own numbering"
    );
    let recorded = paired.into_recorded();

    let (store, _guard) = reopen(store, guard).await;
    let mut paired = Paired::resume(&store, recorded);
    assert_everything_kept(&paired, &[a, b], "after the second reopen").await;
    let o = paired
        .append(
            a,
            vec![
                call("c1", "t1", "2026-03-02T10:00:00Z", 5),
                call("c1", "t5", "2026-03-05T10:00:00Z", 5),
            ],
            false,
            "a after the second reopen",
        )
        .await;
    assert_eq!(statuses(&o), ["rejected", "accepted"]);
    assert_eq!(o[1], EventOutcome::Accepted { sequence: 5 });
    let message = &o[0].rejection().expect("conflict").message;
    assert!(message.contains("different properties"), "compared with the stored event: {message}");
    assert_everything_kept(&paired, &[a, b], "at the end").await;
}

/// A complete state is complete again after a reopen (without reading the events again when
/// the store kept it), answers from the index as before, and keeps up with appends after it.
pub async fn the_index_survives_a_reopen<S, G, F, Fut>(store: S, guard: G, reopen: F)
where
    S: EventStore,
    F: Fn(S, G) -> Fut,
    Fut: Future<Output = (S, G)>,
{
    use super::index::{answer_of, wait_until_indexed};
    use crate::events::{IndexStatus, PathChoice};

    let org = OrganizationId::new();
    let metric = spec(json!({"code": "n", "event_code": "api", "name": "N",
        "aggregation": {"type": "sum", "field": "n"}, "group_by": ["region"]}));
    let query = usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let mut paired = Paired::new(&store);
    let first: Vec<Event> = (0..40)
        .map(|i| {
            call(
                ["c1", "c2"][i % 2],
                &format!("t{i}"),
                &format!("2026-03-{:02}T10:00:00Z", 1 + i % 28),
                i as i64,
            )
        })
        .collect();
    paired.append(org, first, false, "before").await;
    store.index_definitions(org, std::slice::from_ref(&metric)).await.expect("define");
    let before = wait_until_indexed(&store, org, &metric).await;
    assert!(matches!(before, IndexStatus::Complete { .. }), "{before:?}");
    let recorded = paired.into_recorded();

    let (store, guard) = reopen(store, guard).await;
    // A store that kept its index has it at once; one that rebuilds it is told again, as a
    // server does at start.
    store.index_definitions(org, std::slice::from_ref(&metric)).await.expect("define again");
    let after = wait_until_indexed(&store, org, &metric).await;
    assert_eq!(after, before, "the same state after the reopen");
    let mut paired = Paired::resume(&store, recorded);
    for customer in ["c1", "c2"] {
        let answer = answer_of(&store, org, customer, &metric, &query, PathChoice::Any).await;
        assert!(answer.path.is_index(), "{:?}", answer.path);
        let expected =
            odometer_core::engine::compute_usage(&metric, &paired.events_of(org, customer), &query);
        assert_eq!(Ok(answer.result), expected, "{customer} after the reopen");
    }
    paired
        .append(org, vec![call("c1", "late", "2026-03-05T10:00:00Z", 1000)], false, "after")
        .await;
    let answer = answer_of(&store, org, "c1", &metric, &query, PathChoice::Any).await;
    let expected =
        odometer_core::engine::compute_usage(&metric, &paired.events_of(org, "c1"), &query);
    assert_eq!(Ok(answer.result), expected, "an append after the reopen");
    drop(paired);
    drop(store);
    drop(guard);
}
