//! Exactly-once across replicas, at the store level: several stores on the same databases
//! (each one a replica: its own connections, its own inserter), batches left half done as a
//! replica killed between PostgreSQL and ClickHouse leaves them, and the escaping every query
//! relies on, checked against the real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;

use odometer_clickhouse::{literal, ClickHouse, ClickHouseEventStore, ClickHouseUrl};
use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, EventOutcome};
use odometer_core::intake::ReferenceEventLog;
use odometer_core::OrganizationId;
use odometer_store::conformance::events::{event, list_all, listed_events, usage_query};
use odometer_store::EventStore;
use serde_json::json;
use support::{fresh_store, Databases};

/// Strings that break naive quoting, as values the server must give back unchanged.
const NASTY: [&str; 12] = [
    "plain",
    "",
    "o'clock",
    "back\\slash",
    "\\'",
    "two\nlines\r\n",
    "tab\there",
    "nul\0byte",
    "bell\u{7}\u{1b}[0m",
    "ü ✓ 🙂 \u{85} \u{2028}",
    "'; DROP TABLE events; --",
    "\\N",
];

#[tokio::test]
async fn literals_and_tsv_fields_round_trip_through_the_server() {
    let databases = Databases::create().await;
    // Opening the store creates the ClickHouse database.
    let store = ClickHouseEventStore::open(databases.options()).await.unwrap();
    let ch = ClickHouse::new(ClickHouseUrl::parse(&databases.clickhouse).unwrap()).unwrap();
    for text in NASTY {
        let rows = ch.query(&format!("SELECT {}, length({0})", literal(text)), 2).await.unwrap();
        assert_eq!(rows.len(), 1, "{text:?}");
        assert_eq!(rows[0][0].as_deref(), Some(text), "a literal reads back as itself");
        assert_eq!(rows[0][1].as_deref(), Some(text.len().to_string().as_str()), "{text:?}: bytes");
    }
    // The same strings as every text field of stored events, read back by key.
    let org = OrganizationId::new();
    let events: Vec<Event> = NASTY
        .iter()
        .enumerate()
        .map(|(i, text)| Event {
            transaction_id: format!("{text}#{i}"),
            code: format!("code{text}"),
            customer: format!("{text}/{i}"),
            timestamp: odometer_store::conformance::events::at("2026-03-01T00:00:00Z"),
            properties: {
                let mut properties = serde_json::Map::new();
                properties.insert((*text).to_owned(), json!(text));
                properties.insert("n".to_owned(), json!(i));
                properties
            },
        })
        .collect();
    let outcomes = store.append(org, events.clone(), false).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, EventOutcome::Accepted { .. })), "{outcomes:?}");
    for e in &events {
        let found = store.get_event(org, &e.customer, &e.transaction_id).await.unwrap();
        assert_eq!(found.map(|s| s.event).as_ref(), Some(e), "{:?}", e.transaction_id);
    }
    drop(store);
}

fn call(customer: &str, tx: usize, n: i64) -> Event {
    event(customer, &format!("t{tx}"), "api", "2026-03-02T10:00:00Z", json!({"n": n}))
}

/// Replicas sharing the databases of `databases`.
async fn replicas(databases: &Databases, count: usize) -> Vec<ClickHouseEventStore> {
    let mut stores = Vec::new();
    for _ in 0..count {
        stores.push(ClickHouseEventStore::open(databases.options()).await.unwrap());
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_store_every_event_once() {
    let databases = Databases::create().await;
    let stores = replicas(&databases, 3).await;
    let org = OrganizationId::new();
    // 12 clients, each sending 10 batches of 20 events drawn from 150 keys, to a replica of
    // its choosing: every key is sent many times, to every replica, often at once. One key in
    // ten is sometimes sent with another value (a conflict, unless it comes first).
    let mut clients = Vec::new();
    for client in 0..12usize {
        let stores = stores.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for round in 0..10usize {
                let batch: Vec<Event> = (0..20)
                    .map(|i| {
                        let key = (client * 37 + round * 11 + i * 7) % 150;
                        let changed = key % 10 == 0 && (client + round) % 3 == 0;
                        call(["c1", "c2"][key % 2], key, if changed { 1000 } else { key as i64 })
                    })
                    .collect();
                let store = &stores[(client + round) % stores.len()];
                let outcomes = store.append(org, batch.clone(), false).await.expect("append");
                answers.extend(batch.into_iter().zip(outcomes));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    // Every key's stored answers agree on one sequence and one content; sequences are 1..=n.
    let mut by_key: HashMap<String, (u64, i64)> = HashMap::new();
    let mut accepted = 0;
    for (event, outcome) in &answers {
        let n = event.properties["n"].as_i64().unwrap();
        match outcome {
            EventOutcome::Accepted { sequence } | EventOutcome::Duplicate { sequence } => {
                if matches!(outcome, EventOutcome::Accepted { .. }) {
                    accepted += 1;
                }
                let previous = by_key.insert(event.transaction_id.clone(), (*sequence, n));
                if let Some(previous) = previous {
                    assert_eq!(
                        previous,
                        (*sequence, n),
                        "{}: one sequence, one content",
                        event.transaction_id
                    );
                }
            }
            EventOutcome::Rejected(rejection) => {
                assert_eq!(rejection.code, "transaction_id_conflict", "{rejection:?}");
            }
        }
    }
    assert_eq!(accepted, by_key.len(), "each key accepted exactly once");
    assert_eq!(by_key.len(), 150, "every key stored");
    let mut sequences: Vec<u64> = by_key.values().map(|(s, _)| *s).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=150).collect::<Vec<u64>>(), "numbered from 1 without gaps");
    for store in &stores {
        assert_eq!(store.stored_counts(org).await.unwrap(), (150, 150), "one row per event");
        let listed = listed_events(store, org, list_all(40)).await;
        assert_eq!(listed.len(), 150);
        for stored in &listed {
            let (sequence, n) = by_key[&stored.event.transaction_id];
            assert_eq!(
                (stored.sequence, stored.event.properties["n"].as_i64().unwrap()),
                (sequence, n)
            );
        }
    }
    // Usage through any replica equals the reference engine over what was acknowledged.
    let mut reference = ReferenceEventLog::new();
    let mut stored: Vec<_> = by_key.iter().collect();
    stored.sort_by_key(|(_, (sequence, _))| *sequence);
    let events: Vec<Event> = stored
        .iter()
        .map(|(tx, (_, n))| {
            let key: usize = tx[1..].parse().unwrap();
            call(["c1", "c2"][key % 2], key, *n)
        })
        .collect();
    reference.append(org, events, false, odometer_core::time::now());
    let sum = odometer_store::conformance::spec(json!({"code": "n", "event_code": "api",
        "name": "N", "aggregation": {"type": "sum", "field": "n"}}));
    let query = usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    for store in &stores {
        for customer in ["c1", "c2"] {
            let expected = compute_usage(&sum, &reference.events(org, customer), &query).unwrap();
            assert_eq!(store.usage(org, customer, &sum, &query).await.unwrap(), expected);
        }
    }
}

#[tokio::test]
async fn a_batch_left_pending_is_inserted_by_whoever_needs_it_next() {
    let (first, databases) = fresh_store().await;
    let second = ClickHouseEventStore::open(databases.options()).await.unwrap();
    let org = OrganizationId::new();
    // Claimed in PostgreSQL, never inserted: what a replica killed in between leaves.
    let orphaned = vec![call("c1", 1, 1), call("c1", 2, 2)];
    let sequences = first.claim_without_inserting(org, orphaned.clone()).await.unwrap();
    assert_eq!(sequences, [1, 2]);
    assert_eq!(second.get_event(org, "c1", "t1").await.unwrap(), None, "not readable yet");
    assert_eq!(second.stored_counts(org).await.unwrap(), (0, 0));
    // A retry of one of its events on the other replica: a duplicate, answered once the whole
    // batch is readable.
    let o = second.append(org, vec![orphaned[0].clone(), call("c1", 3, 3)], false).await.unwrap();
    assert_eq!(
        o,
        [EventOutcome::Duplicate { sequence: 1 }, EventOutcome::Accepted { sequence: 3 }]
    );
    assert_eq!(second.stored_counts(org).await.unwrap(), (3, 3));
    // A changed body under the same identity is a conflict on either replica.
    for store in [&first, &second] {
        let o = store.append(org, vec![call("c1", 2, 99)], false).await.unwrap();
        assert_eq!(o[0].rejection().map(|r| r.code), Some("transaction_id_conflict"));
    }
    // A batch nobody asks about is inserted by the recovery (here: called at once).
    let lonely = vec![call("c2", 4, 4)];
    assert_eq!(first.claim_without_inserting(org, lonely).await.unwrap(), [4]);
    assert_eq!(first.stored_counts(org).await.unwrap(), (3, 3));
    second.settle().await.unwrap();
    assert_eq!(first.stored_counts(org).await.unwrap(), (4, 4));
    let listed = listed_events(&first, org, list_all(10)).await;
    let ids: Vec<&str> = listed.iter().map(|e| e.event.transaction_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2", "t3", "t4"]);
    // Settling again (batches checked against ClickHouse and forgotten) changes nothing, and
    // every identity is still a duplicate afterwards.
    second.settle().await.unwrap();
    let o = first.append(org, vec![call("c2", 4, 4), call("c1", 1, 1)], true).await.unwrap();
    assert_eq!(
        o,
        [EventOutcome::Duplicate { sequence: 4 }, EventOutcome::Duplicate { sequence: 1 }]
    );
    assert_eq!(first.stored_counts(org).await.unwrap(), (4, 4));
}

#[tokio::test]
async fn list_pages_never_skip_an_event_still_being_inserted() {
    let (store, _databases) = fresh_store().await;
    let org = OrganizationId::new();
    store.append(org, vec![call("c1", 1, 1)], false).await.unwrap();
    store.claim_without_inserting(org, vec![call("c1", 2, 2)]).await.unwrap();
    store.append(org, vec![call("c1", 3, 3)], false).await.unwrap();
    // Event 3 is readable, event 2 not yet: a page stops before 2.
    let page = store.list_events(org, &list_all(10)).await.unwrap();
    let sequences: Vec<u64> = page.items.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1]);
    store.settle().await.unwrap();
    let page = store.list_events(org, &list_all(10)).await.unwrap();
    let sequences: Vec<u64> = page.items.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
}
