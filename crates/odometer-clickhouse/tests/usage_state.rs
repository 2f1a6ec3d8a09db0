//! The usage state ClickHouse keeps by a materialized view (`state.rs`): it answers counts,
//! sums, means, mins and maxes of a field exactly as the reference engine does, on and off the
//! 15-minute grid, in any zone, whichever replica stored the events; what it cannot answer goes
//! to the events with a reason; and when it disagrees with the events (a crash of the
//! ClickHouse machine) or was added to a database that held events, it stops answering for
//! that organization. Against the real servers `scripts/servers` runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use chrono_tz::Tz;
use odometer_clickhouse::{ClickHouse, ClickHouseEventStore, ClickHouseUrl};
use odometer_core::engine::compute_usage;
use odometer_core::event::Event;
use odometer_core::usage::{UsageQuery, WindowSize};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_store::conformance::events::{event, usage_query};
use odometer_store::conformance::spec;
use odometer_store::events::{EventStore, EventsReason, PathChoice, UsagePath};
use serde_json::json;
use support::{fresh_store, Databases};

const CUSTOMERS: [&str; 3] = ["c1", "c2", "c3"];

/// Events of March 2026 on and off the grid, with decimals, negatives, missing and
/// non-numeric values, two codes, and a few late ones in February.
fn events(offset: usize, count: usize) -> Vec<Event> {
    (offset..offset + count)
        .map(|n| {
            let customer = CUSTOMERS[n % 3];
            let at = if n % 17 == 0 {
                format!("2026-02-27T{:02}:{:02}:00Z", n % 24, n % 60)
            } else {
                format!(
                    "2026-03-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                    1 + n % 28,
                    n % 24,
                    (n * 7) % 60,
                    n % 60,
                    if n % 4 == 0 { 0 } else { n * 37 % 1_000_000 }
                )
            };
            let value = match n % 7 {
                0 => json!(null),
                1 => json!("not a number"),
                2 => json!(format!("-{}.{:03}", n % 50, n % 1000)),
                3 => json!(n % 13),
                4 => json!(format!("{}.5", n % 90)),
                _ => json!(n % 1000),
            };
            let props = if n % 11 == 0 { json!({"other": 1}) } else { json!({"v": value}) };
            let code = if n % 5 == 0 { "storage" } else { "api" };
            event(customer, &format!("e-{n}"), code, &at, props)
        })
        .collect()
}

fn metrics() -> Vec<MetricSpec> {
    let metric = |code: &str, aggregation: serde_json::Value| {
        spec(json!({"code": code, "event_code": "api", "name": code, "aggregation": aggregation}))
    };
    vec![
        metric("count", json!({"type": "count"})),
        metric("sum", json!({"type": "sum", "field": "v"})),
        metric("mean", json!({"type": "mean", "field": "v"})),
        metric("min", json!({"type": "min", "field": "v"})),
        metric("max", json!({"type": "max", "field": "v"})),
        metric("sum_absent", json!({"type": "sum", "field": "never_sent"})),
    ]
}

fn query(from: &str, to: &str, window: WindowSize, timezone: Tz) -> UsageQuery {
    UsageQuery { window, timezone, ..usage_query(from, to) }
}

/// The reference engine over the customer's stored events of the metric's code.
async fn reference(
    store: &ClickHouseEventStore,
    org: OrganizationId,
    customer: &str,
    spec: &MetricSpec,
    query: &UsageQuery,
) -> odometer_core::usage::UsageResult {
    let stored =
        store.customer_events(org, customer, &spec.event_code, None, query.to).await.unwrap();
    compute_usage(spec, &stored, query).unwrap()
}

/// Asks every metric about every customer with `query`; each answer must equal the
/// reference engine's and come by `expected` path.
async fn check(
    store: &ClickHouseEventStore,
    org: OrganizationId,
    query: &UsageQuery,
    expected: UsagePath,
) {
    let customers: Vec<String> = CUSTOMERS.iter().map(|c| (*c).to_owned()).collect();
    for spec in metrics() {
        let answers =
            store.usage_answers(org, &customers, &spec, query, PathChoice::Any).await.unwrap();
        for (customer, answer) in customers.iter().zip(&answers) {
            let wanted = reference(store, org, customer, &spec, query).await;
            assert_eq!(
                answer.result, wanted,
                "{} of {customer} over {query:?} (path {:?})",
                spec.code, answer.path
            );
            assert_eq!(answer.path, expected, "{} of {customer} over {query:?}", spec.code);
        }
        // Asked through the events path, the same.
        let events =
            store.usage_answers(org, &customers, &spec, query, PathChoice::Events).await.unwrap();
        for (a, b) in answers.iter().zip(&events) {
            assert_eq!(a.result, b.result, "{}: state and events paths differ", spec.code);
        }
    }
}

fn ch(databases: &Databases) -> ClickHouse {
    ClickHouse::new(ClickHouseUrl::parse(&databases.clickhouse).unwrap()).unwrap()
}

#[tokio::test]
async fn the_state_answers_as_the_reference_on_and_off_the_grid_from_every_replica() {
    let (store, databases) = fresh_store().await;
    let other = ClickHouseEventStore::open(databases.options()).await.unwrap();
    let org = OrganizationId::new();
    // Half the events through each replica, in several batches.
    for (i, chunk) in events(0, 600).chunks(75).enumerate() {
        let replica = if i % 2 == 0 { &store } else { &other };
        replica.append(org, chunk.to_vec(), false).await.unwrap();
    }
    let index = UsagePath::Index { edges: false };
    let edges = UsagePath::Index { edges: true };
    let utc = Tz::UTC;
    check(
        &store,
        org,
        &query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::None, utc),
        index,
    )
    .await;
    check(
        &other,
        org,
        &query("2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::Day, utc),
        index,
    )
    .await;
    // A period off the grid at both ends: its edges come from the events.
    check(
        &store,
        org,
        &query("2026-03-02T10:07:03.5Z", "2026-03-20T23:59:59Z", WindowSize::None, utc),
        edges,
    )
    .await;
    // Hours in a zone 5:30 from UTC and days in one 5:45 from UTC are on the grid (the first
    // window is cut short where the period starts); with a start off the grid, that window's
    // edge comes from the events.
    let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
    let kathmandu: Tz = "Asia/Kathmandu".parse().unwrap();
    let hours = query("2026-03-03T00:00:00Z", "2026-03-05T00:00:00Z", WindowSize::Hour, kolkata);
    check(&store, org, &hours, index).await;
    let days = query("2026-03-01T00:00:00Z", "2026-03-15T00:00:00Z", WindowSize::Day, kathmandu);
    check(&other, org, &days, index).await;
    let days = query("2026-03-01T00:07:00Z", "2026-03-15T00:00:00Z", WindowSize::Day, kathmandu);
    check(&other, org, &days, edges).await;
    // Months in a zone with daylight saving time.
    let paris: Tz = "Europe/Paris".parse().unwrap();
    let months = query("2026-02-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::Month, paris);
    check(&store, org, &months, index).await;

    // What the state cannot answer goes to the events, with its reason, and is still right.
    let minute = query("2026-03-03T03:00:00Z", "2026-03-03T03:10:00Z", WindowSize::None, utc);
    check(&store, org, &minute, UsagePath::Events(EventsReason::Unaligned)).await;
    let mut as_of = query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::None, utc);
    as_of.as_of = Some(chrono::Utc::now());
    check(&store, org, &as_of, UsagePath::Events(EventsReason::AsOf)).await;
    let filtered = spec(json!({"code": "f", "event_code": "api", "name": "f",
        "aggregation": {"type": "sum", "field": "v"},
        "filters": [{"property": "v", "op": "exists"}]}));
    let customers = vec!["c1".to_owned()];
    let march = query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::None, utc);
    let answer =
        store.usage_answers(org, &customers, &filtered, &march, PathChoice::Any).await.unwrap();
    assert_eq!(answer[0].path, UsagePath::Events(EventsReason::NotIndexed));
    assert_eq!(answer[0].result, reference(&store, org, "c1", &filtered, &march).await);

    // New events are in the state the moment their append is answered.
    store.append(org, events(600, 10), false).await.unwrap();
    check(&other, org, &march, index).await;
    assert!(store.usage_paths().from_state > 0 && other.usage_paths().from_state > 0);
    drop(other);
    drop(store);
    drop(databases);
}

#[tokio::test]
async fn a_state_that_disagrees_with_the_events_stops_answering_for_the_organization() {
    let (store, databases) = fresh_store().await;
    let org = OrganizationId::new();
    let bystander = OrganizationId::new();
    store.append(org, events(0, 200), false).await.unwrap();
    store.append(bystander, events(0, 50), false).await.unwrap();
    let march = query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::None, Tz::UTC);
    check(&store, org, &march, UsagePath::Index { edges: false }).await;

    // The organization's state parts are lost, its events are not: as a machine crash before
    // 18.16's unsynced parts reached the disk can leave them.
    ch(&databases)
        .execute(&format!("ALTER TABLE {}.usage_state DELETE WHERE org = '{org}'", databases.name))
        .await
        .unwrap();
    wait_for_mutations(&databases).await;
    // Until the check runs, the state answers, and answers wrong: the window the check closes.
    let count = &metrics()[0];
    let customers = vec!["c1".to_owned()];
    let before =
        store.usage_answers(org, &customers, count, &march, PathChoice::Any).await.unwrap();
    assert_eq!(before[0].path, UsagePath::Index { edges: false });
    assert_ne!(before[0].result, reference(&store, org, "c1", count, &march).await);
    // The recovery's check of the batches finds it, and from then on every replica answers the
    // organization from the events: exact again.
    store.settle().await.unwrap();
    let other = ClickHouseEventStore::open(databases.options()).await.unwrap();
    for replica in [&store, &other] {
        check(replica, org, &march, UsagePath::Events(EventsReason::Unverified)).await;
    }
    // Another organization's state is untouched and still answers.
    check(&other, bystander, &march, UsagePath::Index { edges: false }).await;
    drop(other);
    drop(store);
    drop(databases);
}

/// Waits until the database's mutations are done (18.16 has no `mutations_sync`).
async fn wait_for_mutations(databases: &Databases) {
    let ch = ch(databases);
    for _ in 0..600 {
        let rows = ch
            .query(
                &format!(
                    "SELECT count() FROM system.mutations WHERE database = '{}' AND is_done = 0",
                    databases.name
                ),
                1,
            )
            .await
            .unwrap();
        if rows[0][0].as_deref() == Some("0") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the mutation did not finish");
}

#[tokio::test]
async fn a_state_added_to_a_database_with_events_answers_only_for_organizations_without_any() {
    let (store, databases) = fresh_store().await;
    let old = OrganizationId::new();
    store.append(old, events(0, 100), false).await.unwrap();
    drop(store);
    // A database from before the state: events, and neither the view nor its table.
    let ch = ch(&databases);
    ch.execute(&format!("DROP TABLE {}.usage_state_view", databases.name)).await.unwrap();
    ch.execute(&format!("DROP TABLE {}.usage_state", databases.name)).await.unwrap();

    let store = ClickHouseEventStore::open(databases.options()).await.unwrap();
    let march = query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::None, Tz::UTC);
    check(&store, old, &march, UsagePath::Events(EventsReason::Unverified)).await;
    // Its new events do not make its state whole: it stays with the events.
    store.append(old, events(100, 20), false).await.unwrap();
    check(&store, old, &march, UsagePath::Events(EventsReason::Unverified)).await;
    // An organization whose every event came after the state was added is answered from it.
    let new = OrganizationId::new();
    store.append(new, events(0, 100), false).await.unwrap();
    check(&store, new, &march, UsagePath::Index { edges: false }).await;
    drop(store);
    drop(databases);
}

/// Random periods, windows and zones (seeded, the seed printed) over one set of events: every
/// answer equals the reference engine's, comes from the state or, for periods without a whole
/// bucket, from the events; most come from the state.
#[tokio::test]
async fn random_periods_windows_and_zones_match_the_reference() {
    use rand::{Rng, SeedableRng};
    let seed: u64 =
        std::env::var("STATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("random_periods_windows_and_zones_match_the_reference: STATE_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (store, databases) = fresh_store().await;
    let org = OrganizationId::new();
    for chunk in events(0, 900).chunks(100) {
        store.append(org, chunk.to_vec(), false).await.unwrap();
    }
    let zones: Vec<Tz> = [
        "UTC",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Europe/Paris",
        "America/New_York",
        "Australia/Adelaide",
        "Pacific/Chatham",
    ]
    .iter()
    .map(|z| z.parse().unwrap())
    .collect();
    let start = chrono::DateTime::parse_from_rfc3339("2026-02-25T00:00:00Z").unwrap().to_utc();
    let (mut from_state, mut asked) = (0, 0);
    for _ in 0..60 {
        // Starts on the grid half the time, anywhere (to the microsecond) otherwise.
        let minutes = rng.random_range(0..40 * 24 * 60);
        let mut from = start + chrono::TimeDelta::minutes(minutes);
        if rng.random_bool(0.5) {
            from += chrono::TimeDelta::microseconds(rng.random_range(1..900_000_000));
        } else {
            from -= chrono::TimeDelta::minutes(minutes % 15);
        }
        let length = match rng.random_range(0..4) {
            0 => chrono::TimeDelta::minutes(rng.random_range(1..40)),
            1 => chrono::TimeDelta::hours(rng.random_range(1..72)),
            _ => chrono::TimeDelta::days(rng.random_range(1..45)),
        };
        let window = match rng.random_range(0..4) {
            0 if length <= chrono::TimeDelta::days(8) => WindowSize::Hour,
            1 => WindowSize::Day,
            2 => WindowSize::Month,
            _ => WindowSize::None,
        };
        let timezone = zones[rng.random_range(0..zones.len())];
        let q = UsageQuery {
            from,
            to: from + length,
            window,
            timezone,
            ..usage_query("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z")
        };
        let customers: Vec<String> = CUSTOMERS.iter().map(|c| (*c).to_owned()).collect();
        for spec in metrics() {
            let answers =
                store.usage_answers(org, &customers, &spec, &q, PathChoice::Any).await.unwrap();
            for (customer, answer) in customers.iter().zip(&answers) {
                let wanted = reference(&store, org, customer, &spec, &q).await;
                assert_eq!(
                    answer.result, wanted,
                    "seed {seed}: {} of {customer} over {q:?}",
                    spec.code
                );
                asked += 1;
                match answer.path {
                    UsagePath::Index { .. } => from_state += 1,
                    UsagePath::Events(EventsReason::Unaligned) => {}
                    other => panic!("seed {seed}: {} over {q:?} answered by {other:?}", spec.code),
                }
            }
        }
    }
    eprintln!("{from_state} of {asked} answers from the state");
    assert!(from_state * 2 > asked, "seed {seed}: only {from_state} of {asked} from the state");
    drop(store);
    drop(databases);
}
