//! Conformance: reading stored events back (by key, and in pages with filters), and what
//! another organization sees of them (nothing).

use serde_json::json;

use odometer_core::event::{Event, StoredEvent};
use odometer_core::OrganizationId;

use super::{all_event_pages, at, event, identities, list_all, listed_events, usage_query, Paired};
use crate::conformance::spec;
use crate::error::StoreError;
use crate::events::{EventListParams, EventStore};

/// Seven events of two customers and two codes, appended in three batches with repeats; the
/// later batches hold events that happened earlier, so ingestion order is not time order.
async fn seven_events(paired: &mut Paired<'_>, org: OrganizationId) -> Vec<Event> {
    let events = [
        event("c1", "t1", "api", "2026-03-02T10:00:00Z", json!({"n": 1})),
        event("c2", "t2", "api", "2026-03-02T11:00:00Z", json!({"n": 2})),
        event("c1", "t3", "storage", "2026-03-02T12:00:00Z", json!({"n": 3})),
        event("c1", "t4", "api", "2026-03-01T09:00:00Z", json!({"n": 4})),
        event("c2", "t5", "storage", "2026-03-03T00:00:00Z", json!({"n": 5})),
        event("c1", "t6", "api", "2026-03-02T12:00:00Z", json!({"n": 6})),
        event("c2", "t7", "api", "2026-02-28T23:59:59.999999Z", json!({"n": 7})),
    ];
    paired.append(org, events[..3].to_vec(), false, "batch 1").await;
    let mut second = events[3..5].to_vec();
    second.push(events[0].clone());
    paired.append(org, second, false, "batch 2").await;
    paired.append(org, events[5..].to_vec(), true, "batch 3").await;
    events.to_vec()
}

pub async fn stored_events_are_read_back_by_key(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    let rich = event(
        "cus_ünïcode",
        "tx/1 with spaces",
        "api",
        "2026-03-02T10:00:00.123456Z",
        json!({"n": "12.50", "nested": {"a": {"b": [1, "x", null, true]}}, "text": "ü ✓ \"quoted\"",
            "big": "123456789012345678901234.5678", "flag": false, "nothing": null}),
    );
    let mut exact = serde_json::Map::new();
    let number: serde_json::Value = serde_json::from_str("0.1000").expect("a number");
    exact.insert("n".to_owned(), number);
    let old =
        Event { properties: exact, ..event("c1", "old", "api", "2000-01-01T00:00:00Z", json!({})) };
    let plain = event("c1", "plain", "storage", "2026-03-02T10:00:00Z", json!({}));
    paired.append(org, vec![rich.clone(), old.clone(), plain.clone()], false, "batch").await;

    let mut ingested = Vec::new();
    for sent in [&rich, &old, &plain] {
        let found = store
            .get_event(org, &sent.customer, &sent.transaction_id)
            .await
            .expect("get_event")
            .unwrap_or_else(|| panic!("{} is stored", sent.transaction_id));
        assert_eq!(&found.event, sent, "the event reads back as sent");
        paired.assert_stored(org, &found, "get_event");
        ingested.push(found.ingested_at);
    }
    assert!(ingested.windows(2).all(|w| w[0] == w[1]), "one batch, one ingested_at: {ingested:?}");

    let later = event("c1", "later", "api", "2026-03-02T10:00:00Z", json!({}));
    paired.append(org, vec![later.clone()], false, "later batch").await;
    let found = store.get_event(org, "c1", "later").await.expect("get_event").expect("stored");
    assert!(found.ingested_at > ingested[0], "a later append is ingested later");
    paired.assert_stored(org, &found, "later");

    for (customer, tx) in [("c1", "missing"), ("c2", "plain"), ("C1", "plain"), ("c1", "PLAIN")] {
        let found = store.get_event(org, customer, tx).await.expect("get_event");
        assert_eq!(found, None, "no event {customer}/{tx}");
    }
}

pub async fn event_lists_page_in_sequence_order(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    seven_events(&mut paired, org).await;
    let expected = paired.reference.all_events(org);
    assert_eq!(expected.len(), 7);

    let pages = all_event_pages(store, org, list_all(3)).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [3, 3, 1], "pages of 3");
    let listed: Vec<StoredEvent> = pages.iter().flat_map(|p| p.items.clone()).collect();
    assert_eq!(identities(&listed), identities(&expected), "in sequence order, each once");
    let sequences: Vec<u64> = listed.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6, 7]);
    for stored in &listed {
        paired.assert_stored(org, stored, "listed");
    }

    for limit in [7, 1000] {
        let page = store.list_events(org, &list_all(limit)).await.expect("list_events");
        assert_eq!(page.items.len(), 7, "limit {limit}");
        assert_eq!(page.next_cursor, None, "a page ending at the last event has no cursor");
    }
    let first = store.list_events(org, &list_all(1)).await.expect("list_events");
    assert_eq!(identities(&first.items), identities(&expected[..1]));
    let cursor = first.next_cursor.expect("more pages");

    // A cursor stays valid while events are appended: the next page continues after it and
    // sees the new events at the end.
    let newer = event("c3", "t8", "api", "2026-01-01T00:00:00Z", json!({}));
    paired.append(org, vec![newer], false, "an eighth event").await;
    let params = EventListParams { cursor: Some(cursor), ..list_all(1000) };
    let rest = store.list_events(org, &params).await.expect("list_events");
    let expected = paired.reference.all_events(org);
    assert_eq!(identities(&rest.items), identities(&expected[1..]), "the rest, new included");
}

pub async fn event_lists_filter_by_customer_code_and_time(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    seven_events(&mut paired, org).await;
    let all = paired.reference.all_events(org);
    let from = at("2026-03-02T10:00:00Z");
    let to = at("2026-03-02T12:00:00Z");
    type Filter = (Option<&'static str>, Option<&'static str>, bool, bool);
    let filters: [Filter; 9] = [
        (Some("c1"), None, false, false),
        (Some("c2"), None, false, false),
        (None, Some("storage"), false, false),
        (None, None, true, false),
        (None, None, false, true),
        (None, None, true, true),
        (Some("c1"), Some("api"), true, true),
        (Some("c9"), None, false, false),
        (None, Some("nothing"), false, false),
    ];
    for (customer, code, with_from, with_to) in filters {
        let params = EventListParams {
            customer: customer.map(str::to_owned),
            code: code.map(str::to_owned),
            from: with_from.then_some(from),
            to: with_to.then_some(to),
            limit: 2,
            cursor: None,
        };
        let expected: Vec<StoredEvent> = all
            .iter()
            .filter(|e| customer.is_none_or(|c| e.event.customer == c))
            .filter(|e| code.is_none_or(|c| e.event.code == c))
            .filter(|e| !with_from || e.event.timestamp >= from)
            .filter(|e| !with_to || e.event.timestamp < to)
            .cloned()
            .collect();
        let listed = listed_events(store, org, params.clone()).await;
        assert_eq!(identities(&listed), identities(&expected), "{params:?}");
    }
    // Hand-checked: from is inclusive, to exclusive.
    let params = EventListParams { from: Some(from), to: Some(to), ..list_all(10) };
    let listed = listed_events(store, org, params).await;
    let ids: Vec<&str> = listed.iter().map(|e| e.event.transaction_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2"], "[from, to)");
}

pub async fn customer_events_are_one_customer_and_code_in_ingestion_order(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    seven_events(&mut paired, org).await;
    let all = paired.reference.all_events(org);
    let (from, to) = (at("2026-03-02T10:00:00Z"), at("2026-03-02T12:00:00Z"));
    for (customer, code, since) in [
        ("c1", "api", None),
        ("c1", "api", Some(from)),
        ("c2", "storage", None),
        ("c9", "api", None),
    ] {
        let got = store.customer_events(org, customer, code, since, to).await.expect("events");
        let expected: Vec<StoredEvent> = all
            .iter()
            .filter(|e| e.event.customer == customer && e.event.code == code)
            .filter(|e| since.is_none_or(|f| e.event.timestamp >= f) && e.event.timestamp < to)
            .cloned()
            .collect();
        // The reference log stamps its own ingestion times: compare everything else.
        assert_eq!(identities(&got), identities(&expected), "{customer} {code} {since:?}");
        let events = |list: &[StoredEvent]| -> Vec<(u64, Event)> {
            list.iter().map(|e| (e.sequence, e.event.clone())).collect()
        };
        assert_eq!(events(&got), events(&expected), "{customer} {code} {since:?}");
    }
    // Hand-checked: c1's api events before noon are t1 (10:00) and t4 (the day before), in
    // ingestion order; t6 at noon is outside.
    let got = store.customer_events(org, "c1", "api", None, to).await.expect("events");
    let ids: Vec<&str> = got.iter().map(|e| e.event.transaction_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t4"]);
}

pub async fn invalid_event_cursors_are_rejected(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    seven_events(&mut paired, org).await;
    for cursor in ["not a cursor", "🙂", "{}"] {
        for customer in [None, Some("c1".to_owned())] {
            let params =
                EventListParams { cursor: Some(cursor.to_owned()), customer, ..list_all(10) };
            match store.list_events(org, &params).await {
                Err(StoreError::InvalidCursor) => {}
                other => panic!("cursor {cursor:?}: expected invalid_cursor, got {other:?}"),
            }
        }
    }
}

pub async fn other_organizations_events_are_never_seen(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (acme, globex, empty) =
        (OrganizationId::new(), OrganizationId::new(), OrganizationId::new());
    // The same customers and transaction ids in both, with different content.
    let acme_events = seven_events(&mut paired, acme).await;
    let globex_events: Vec<Event> = acme_events
        .iter()
        .take(4)
        .map(|e| Event { properties: json!({"n": 100}).as_object().cloned().unwrap(), ..e.clone() })
        .collect();
    let o = paired.append(globex, globex_events.clone(), false, "globex").await;
    assert_eq!(super::statuses(&o), ["accepted"; 4], "nothing of acme conflicts in globex");

    for (org, sent) in [(acme, &acme_events[..4]), (globex, &globex_events[..])] {
        for e in sent {
            let found = store
                .get_event(org, &e.customer, &e.transaction_id)
                .await
                .expect("get_event")
                .expect("stored");
            assert_eq!(&found.event, e, "each organization reads its own event");
            paired.assert_stored(org, &found, "own event");
        }
        let listed = listed_events(store, org, list_all(1000)).await;
        assert_eq!(identities(&listed), identities(&paired.reference.all_events(org)));
    }
    for e in &acme_events {
        let found = store.get_event(empty, &e.customer, &e.transaction_id).await;
        assert_eq!(found.expect("get_event"), None, "another organization finds nothing");
    }
    let page = store.list_events(empty, &list_all(1000)).await.expect("list_events");
    assert!(
        page.items.is_empty() && page.next_cursor.is_none(),
        "another organization lists nothing"
    );
    let page = store
        .list_events(empty, &EventListParams { customer: Some("c1".to_owned()), ..list_all(10) })
        .await
        .expect("list_events");
    assert!(page.items.is_empty());

    let sum = spec(json!({"code": "n", "event_code": "api", "name": "N",
        "aggregation": {"type": "sum", "field": "n"}}));
    let count = spec(json!({"code": "calls", "event_code": "api", "name": "Calls",
        "aggregation": {"type": "count"}}));
    let query = usage_query("2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let c1 = paired.assert_usage(globex, "c1", &sum, &query, "globex sum").await;
    assert_eq!(c1.windows[0].total, Some(200.into()), "globex's c1 api events only (t1, t4)");
    for org in [acme, globex, empty] {
        for customer in ["c1", "c2", "c3"] {
            for metric in [&sum, &count] {
                paired.assert_usage(org, customer, metric, &query, "isolation").await;
            }
        }
    }
    let customers = vec!["c1".to_owned(), "c2".to_owned()];
    let results = store.usage_of_customers(empty, &customers, &count, &query).await;
    let results = results.expect("usage_of_customers");
    assert_eq!(results.len(), 2);
    for result in results {
        assert_eq!(result.windows[0].total, Some(0.into()), "an empty organization counts 0");
        assert!(result.windows[0].groups.is_empty());
    }
}
