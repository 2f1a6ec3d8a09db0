//! Conformance: appends answer exactly what the reference log answers (semantics 1.5, 2.2,
//! 2.6): outcomes, sequences, duplicates, conflicts and atomic batches.

use serde_json::{json, Map, Value};

use odometer_core::event::{Event, EventOutcome};
use odometer_core::OrganizationId;

use super::{event, identities, list_all, listed_events, rejection_codes, statuses, Paired};
use crate::conformance::spec;
use crate::events::EventStore;

const T1: &str = "2026-03-02T10:00:00Z";
const T2: &str = "2026-03-02T11:30:00.250000Z";
const T3: &str = "2026-03-03T08:00:00Z";

fn call(customer: &str, transaction_id: &str, n: i64) -> Event {
    event(customer, transaction_id, "api", T1, json!({"n": n}))
}

fn accepted(sequence: u64) -> EventOutcome {
    EventOutcome::Accepted { sequence }
}

fn duplicate(sequence: u64) -> EventOutcome {
    EventOutcome::Duplicate { sequence }
}

/// Panics unless the store lists exactly the reference's events of `org`, each read back by
/// key as the reference keeps it.
async fn assert_log_matches(paired: &Paired<'_>, org: OrganizationId, what: &str) {
    let listed = listed_events(paired.store, org, list_all(1000)).await;
    let expected = paired.reference.all_events(org);
    assert_eq!(identities(&listed), identities(&expected), "{what}: listed events");
    for stored in &listed {
        paired.assert_stored(org, stored, what);
        let found = paired
            .store
            .get_event(org, &stored.event.customer, &stored.event.transaction_id)
            .await
            .expect("get_event");
        assert_eq!(found.as_ref(), Some(stored), "{what}: get_event answers the listed event");
    }
}

/// Properties parsed from text, so numbers keep the spelling given (`1.50`, `1e0`).
fn properties(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad test properties {text}: {e}"))
}

pub async fn appends_answer_as_the_reference_log(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (acme, globex) = (OrganizationId::new(), OrganizationId::new());
    let a1 = call("c1", "tx1", 1);
    let a2 = event("c1", "tx2", "api", T2, json!({"n": 2, "region": "eu"}));
    let b1 = event("c2", "tx1", "storage", T1, json!({"usage": {"bytes": 10}}));
    let first = paired.append(acme, vec![a1.clone(), a2.clone(), b1.clone()], false, "first").await;
    assert_eq!(first, [accepted(1), accepted(2), accepted(3)], "three new events");

    let changed = event("c1", "tx2", "api", T2, json!({"n": 3, "region": "eu"}));
    let c3 = event("c3", "tx9", "api", T3, json!({}));
    let second = paired
        .append(acme, vec![a2.clone(), changed, c3.clone(), a1.clone()], false, "second")
        .await;
    assert_eq!(statuses(&second), ["duplicate", "rejected", "accepted", "duplicate"]);
    assert_eq!(second[0], duplicate(2), "a duplicate carries the original's sequence");
    assert_eq!(second[2], accepted(4));
    assert_eq!(second[3], duplicate(1));
    assert_eq!(rejection_codes(&second)[1], Some("transaction_id_conflict"));

    let other = paired.append(globex, vec![b1.clone(), a1.clone()], false, "other org").await;
    assert_eq!(other, [accepted(1), accepted(2)], "another organization numbers from 1");

    let mixed = vec![call("c1", "tx3", 3), call("c1", "tx1", 5), a2.clone(), call("c4", "tx1", 1)];
    let atomic = paired.append(acme, mixed.clone(), true, "atomic with a conflict").await;
    assert_eq!(
        rejection_codes(&atomic),
        [
            Some("batch_rejected"),
            Some("transaction_id_conflict"),
            Some("batch_rejected"),
            Some("batch_rejected")
        ]
    );
    let lenient = paired.append(acme, mixed, false, "the same batch, not atomic").await;
    assert_eq!(statuses(&lenient), ["accepted", "rejected", "duplicate", "accepted"]);
    assert_eq!(lenient[0], accepted(5), "the failed atomic batch used no sequence");

    assert_log_matches(&paired, acme, "acme").await;
    assert_log_matches(&paired, globex, "globex").await;
}

pub async fn appends_number_events_per_organization_from_1(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (a, b) = (OrganizationId::new(), OrganizationId::new());
    let batch = |prefix: &str, count: usize| -> Vec<Event> {
        (0..count).map(|i| call("c1", &format!("{prefix}{i}"), 1)).collect()
    };
    let mut seen: Vec<(OrganizationId, u64)> = Vec::new();
    let mut record = |org: OrganizationId, outcomes: &[EventOutcome]| {
        for outcome in outcomes {
            if let EventOutcome::Accepted { sequence } = outcome {
                seen.push((org, *sequence));
            }
        }
    };
    let o = paired.append(a, batch("a", 3), false, "a: three").await;
    record(a, &o);
    let o = paired.append(b, batch("b", 2), false, "b: two").await;
    record(b, &o);
    // Duplicates, a conflict and a failed atomic batch use no sequence.
    let mut again = batch("a", 2);
    again.push(call("c1", "a2", 99));
    let o = paired.append(a, again, false, "a: repeats").await;
    record(a, &o);
    let mut failing = batch("x", 3);
    failing.push(call("c1", "a0", 42));
    let o = paired.append(a, failing, true, "a: failed atomic").await;
    record(a, &o);
    let o = paired.append(a, batch("y", 2), true, "a: atomic").await;
    record(a, &o);
    let o = paired.append(b, batch("z", 1), false, "b: one").await;
    record(b, &o);

    let of = |org: OrganizationId| -> Vec<u64> {
        seen.iter().filter(|(o, _)| *o == org).map(|(_, s)| *s).collect()
    };
    assert_eq!(of(a), [1, 2, 3, 4, 5], "organization a: from 1, no gaps");
    assert_eq!(of(b), [1, 2, 3], "organization b: its own numbering");
    for org in [a, b] {
        let listed = listed_events(store, org, list_all(2)).await;
        let sequences: Vec<u64> = listed.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (1..=of(org).len() as u64).collect();
        assert_eq!(sequences, expected, "listed sequences");
    }
}

pub async fn duplicates_are_stored_once_whatever_the_spelling(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    let first = Event {
        properties: properties(
            r#"{"n": 1.50, "region": "eu", "nested": {"a": 1, "b": [1, 2.0], "c": null}}"#,
        ),
        ..call("c1", "tx1", 0)
    };
    let respelled = Event {
        properties: properties(
            r#"{"nested": {"c": null, "b": [1.0, 2], "a": 1e0}, "region": "eu", "n": 1.5}"#,
        ),
        ..first.clone()
    };
    assert_ne!(first.properties, respelled.properties, "the spellings differ as JSON text");
    let o = paired.append(org, vec![first.clone()], false, "first").await;
    assert_eq!(o, [accepted(1)]);
    let o = paired.append(org, vec![respelled.clone(), first.clone()], false, "again").await;
    assert_eq!(o, [duplicate(1), duplicate(1)], "same content in any spelling is a duplicate");
    let o = paired.append(org, vec![respelled], true, "again, atomic").await;
    assert_eq!(o, [duplicate(1)]);

    let found = store.get_event(org, "c1", "tx1").await.expect("get_event").expect("stored");
    assert_eq!(found.event, first, "the first spelling is kept as sent");
    paired.assert_stored(org, &found, "duplicates");
    assert_eq!(listed_events(store, org, list_all(10)).await.len(), 1, "stored once");
    let count = spec(json!({"code": "calls", "event_code": "api", "name": "Calls",
        "aggregation": {"type": "count"}}));
    let query = super::usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let usage = paired.assert_usage(org, "c1", &count, &query, "duplicates").await;
    assert_eq!(usage.windows[0].total, Some(1.into()), "counted once");
}

pub async fn conflicting_events_are_rejected_and_the_first_stays(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    let first = event("c1", "tx1", "api", T1, json!({"n": 1, "region": "eu"}));
    paired.append(org, vec![first.clone()], false, "first").await;
    let variants = [
        ("timestamp", Event { timestamp: super::at(T2), ..first.clone() }),
        ("code", Event { code: "storage".to_owned(), ..first.clone() }),
        ("properties", event("c1", "tx1", "api", T1, json!({"n": 2, "region": "eu"}))),
        ("a string for a number", event("c1", "tx1", "api", T1, json!({"n": "1", "region": "eu"}))),
        ("a missing member", event("c1", "tx1", "api", T1, json!({"n": 1}))),
        ("everything", event("c1", "tx1", "storage", T3, json!({}))),
    ];
    for (what, variant) in variants {
        let o = paired.append(org, vec![variant], false, what).await;
        assert_eq!(rejection_codes(&o), [Some("transaction_id_conflict")], "a different {what}");
    }
    let o = paired
        .append(org, vec![Event { timestamp: super::at(T2), ..first.clone() }], false, "message")
        .await;
    let message = &o[0].rejection().expect("rejected").message;
    assert!(message.contains("different timestamp"), "the message names the difference: {message}");
    let found = store.get_event(org, "c1", "tx1").await.expect("get_event").expect("stored");
    assert_eq!(found.event, first, "the first event stays as it was");
    paired.assert_stored(org, &found, "conflicts");
    let sum = spec(json!({"code": "n", "event_code": "api", "name": "N",
        "aggregation": {"type": "sum", "field": "n"}}));
    let query = super::usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let usage = paired.assert_usage(org, "c1", &sum, &query, "conflicts").await;
    assert_eq!(usage.windows[0].total, Some(1.into()), "only the first event counts");
}

pub async fn repeats_within_one_batch_are_compared_with_the_earlier_event(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    let a = call("c1", "a", 1);
    let a_changed = call("c1", "a", 2);
    let b = call("c1", "b", 1);
    let o = paired
        .append(
            org,
            vec![a.clone(), a.clone(), a_changed.clone(), b.clone(), a_changed.clone()],
            false,
            "one batch",
        )
        .await;
    assert_eq!(statuses(&o), ["accepted", "duplicate", "rejected", "accepted", "rejected"]);
    assert_eq!((&o[1], &o[3]), (&duplicate(1), &accepted(2)));
    // The stored event, not the rejected one, is what later repeats are compared with.
    let o = paired.append(org, vec![a_changed, a.clone(), b], false, "next batch").await;
    assert_eq!(statuses(&o), ["rejected", "duplicate", "duplicate"]);
    // A key first seen in an atomic batch that fails is compared within that batch only.
    let c = call("c1", "c", 1);
    let o = paired
        .append(org, vec![c.clone(), call("c1", "c", 2), a.clone()], true, "atomic, in-batch")
        .await;
    assert_eq!(rejection_codes(&o)[1], Some("transaction_id_conflict"));
    let o = paired.append(org, vec![call("c1", "c", 2), c], false, "after the failed batch").await;
    assert_eq!(statuses(&o), ["accepted", "rejected"], "the failed batch stored nothing");
    assert_eq!(o[0], accepted(3));
    assert_log_matches(&paired, org, "repeats").await;
}

pub async fn the_key_includes_customer_and_organization(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (a, b) = (OrganizationId::new(), OrganizationId::new());
    let o = paired
        .append(
            a,
            vec![
                call("c1", "tx1", 1),
                call("c2", "tx1", 1),
                call("C1", "tx1", 1),
                call("c1", "TX1", 1),
                // The parts of a key cannot run together.
                call("ab", "c", 1),
                call("a", "bc", 1),
            ],
            false,
            "same transaction id, other customers",
        )
        .await;
    assert_eq!(statuses(&o), ["accepted"; 6], "keys compare exactly, part by part");
    let o = paired.append(b, vec![call("c1", "tx1", 1), call("c1", "tx1", 7)], false, "b").await;
    assert_eq!(statuses(&o), ["accepted", "rejected"], "another organization: a new event");
    assert_eq!(o[0], accepted(1));
    let found = store.get_event(b, "c1", "tx1").await.expect("get_event").expect("stored");
    paired.assert_stored(b, &found, "org b");
    let found = store.get_event(a, "c2", "tx1").await.expect("get_event").expect("stored");
    paired.assert_stored(a, &found, "org a, c2");
    assert_log_matches(&paired, a, "org a").await;
    assert_log_matches(&paired, b, "org b").await;
}

pub async fn atomic_batches_store_nothing_when_any_event_is_rejected(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    let a = call("c1", "a", 1);
    paired.append(org, vec![a.clone()], false, "stored first").await;

    let (b, c) = (call("c1", "b", 1), call("c2", "c", 1));
    let failing = vec![b.clone(), a.clone(), call("c1", "a", 2), c.clone(), call("c1", "a", 3)];
    let o = paired.append(org, failing, true, "atomic with conflicts").await;
    assert_eq!(
        rejection_codes(&o),
        [
            Some("batch_rejected"),
            Some("batch_rejected"),
            Some("transaction_id_conflict"),
            Some("batch_rejected"),
            Some("transaction_id_conflict")
        ],
        "rejected events keep their rejection; every other one, duplicates too, is not stored"
    );
    let message = &o[0].rejection().expect("rejected").message;
    assert!(message.contains("2 events were rejected"), "{message}");
    for (customer, tx) in [("c1", "b"), ("c2", "c")] {
        let found = store.get_event(org, customer, tx).await.expect("get_event");
        assert_eq!(found, None, "{customer}/{tx} was not stored");
    }
    assert_log_matches(&paired, org, "after the failed batch").await;

    let o = paired.append(org, vec![b.clone(), a.clone(), c.clone()], true, "fixed").await;
    assert_eq!(o, [accepted(2), duplicate(1), accepted(3)], "no sequence was used before");
    let o = paired.append(org, vec![c, a, b], true, "only duplicates").await;
    assert_eq!(o, [duplicate(3), duplicate(1), duplicate(2)]);
    let o = paired
        .append(org, vec![call("c3", "d", 1), call("c3", "d", 2)], true, "conflict in-batch")
        .await;
    assert_eq!(rejection_codes(&o), [Some("batch_rejected"), Some("transaction_id_conflict")]);
    assert_eq!(store.get_event(org, "c3", "d").await.expect("get_event"), None);
    let o = paired.append(org, vec![call("c3", "e", 1)], true, "atomic, one event").await;
    assert_eq!(o, [accepted(4)]);
    assert_log_matches(&paired, org, "atomic batches").await;
}

pub async fn empty_batches_answer_nothing(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    for atomic in [false, true] {
        let o = paired.append(org, Vec::new(), atomic, "empty").await;
        assert!(o.is_empty(), "an empty batch answers no outcome");
    }
    let o = paired.append(org, vec![call("c1", "a", 1)], false, "first event").await;
    assert_eq!(o, [accepted(1)], "empty batches used no sequence");
}
