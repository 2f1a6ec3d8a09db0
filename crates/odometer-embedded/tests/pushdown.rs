//! The pushed-down usage statements (typed slot columns, aggregation in DuckDB) against the
//! reference engine, over every shape they claim to answer, and the cases they must hand back
//! to the reference engine. The conformance suite's proptest covers both paths at random; this
//! file also checks *which* path answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_embedded::{DuckEventStore, UsagePaths};
use odometer_store::events::{EventListParams, EventStore};

const CUSTOMERS: [&str; 3] = ["c1", "c2", "c3"];

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn start() -> DateTime<Utc> {
    "2026-03-27T00:00:00Z".parse().unwrap()
}

fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Events spanning the Paris spring-forward, with every spelling the engine must agree on.
fn events(rng: &mut Rng, count: usize, prefix: &str) -> Vec<Event> {
    let ns =
        [json!(0), json!(2), json!(-3), json!("2.5"), number("1.25"), number("10.0"), Value::Null];
    let regions = [json!("eu"), json!("us"), json!("ap"), json!(1)];
    let users = [json!("u1"), json!("u2"), json!(1), json!("1.0"), json!({"id": 1})];
    let operations = [json!("add"), Value::Null];
    (0..count)
        .map(|i| {
            let mut properties = Map::new();
            let mut maybe = |rng: &mut Rng, key: &str, pool: &[Value]| {
                if rng.next(5) > 0 {
                    properties.insert(key.to_owned(), pool[rng.next(pool.len())].clone());
                }
            };
            maybe(rng, "n", &ns);
            maybe(rng, "region", &regions);
            maybe(rng, "tier", &[json!("free"), json!("pro")]);
            maybe(rng, "user", &users);
            maybe(rng, "operation_type", &operations);
            maybe(rng, "project", &[json!("p1"), json!("p2")]);
            Event {
                transaction_id: format!("{prefix}{i}"),
                code: if rng.next(4) == 0 { "storage" } else { "api" }.to_owned(),
                customer: CUSTOMERS[rng.next(3)].to_owned(),
                timestamp: start() + TimeDelta::minutes(rng.next(4 * 24 * 60) as i64),
                properties,
            }
        })
        .collect()
}

fn spec(definition: Value) -> MetricSpec {
    parse_metric_spec(&definition).unwrap_or_else(|p| panic!("bad test metric {definition}: {p}"))
}

async fn stored(store: &DuckEventStore, org: OrganizationId) -> Vec<StoredEvent> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let params = EventListParams { limit: 1000, cursor, ..EventListParams::default() };
        let page = store.list_events(org, &params).await.unwrap();
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// Asks the store for every customer at once and compares with the reference engine.
async fn assert_matches_reference(
    store: &DuckEventStore,
    org: OrganizationId,
    all: &[StoredEvent],
    spec: &MetricSpec,
    query: &UsageQuery,
) {
    let customers: Vec<String> = CUSTOMERS.iter().map(|c| (*c).to_owned()).collect();
    let answered = store.usage_of_customers(org, &customers, spec, query).await;
    for (i, customer) in customers.iter().enumerate() {
        let own: Vec<StoredEvent> =
            all.iter().filter(|e| &e.event.customer == customer).cloned().collect();
        let expected = compute_usage(spec, &own, query);
        match (&answered, expected) {
            (Ok(results), Ok(expected)) => assert_eq!(
                results[i],
                expected,
                "{customer}: {}\n{query:?}",
                serde_json::to_string(&spec.to_json()).unwrap()
            ),
            (Err(err), Err(expected)) => assert_eq!(err.code(), expected.code()),
            (got, expected) => panic!("{customer}: store {got:?}, reference {expected:?}"),
        }
    }
}

fn query(window: WindowSize, timezone: Tz, group_by: &[&str]) -> UsageQuery {
    UsageQuery {
        from: start() + TimeDelta::hours(7),
        to: start() + TimeDelta::days(3) + TimeDelta::minutes(13),
        window,
        timezone,
        group_by: group_by.iter().map(|k| (*k).to_owned()).collect(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

const KINDS: [&str; 6] = ["count", "sum", "min", "max", "mean", "unique_count"];

fn segmentations() -> [Option<Value>; 4] {
    [
        None,
        Some(
            json!({"type": "single", "key": "region", "values": ["eu", "1.0"], "unmatched": "other"}),
        ),
        Some(json!({"type": "double", "dimension1": {"key": "region", "values": ["eu", "us"]},
            "dimension2": {"key": "tier", "values": ["pro"]}, "unmatched": "drop"})),
        Some(json!({"type": "linked", "dimension1_key": "region", "dimension2_key": "tier",
            "values": {"eu": ["free", "pro"], "us": ["pro"]}})),
    ]
}

fn filters() -> [Value; 4] {
    [
        json!([]),
        json!([{"property": "region", "op": "in", "values": ["eu", 1]}]),
        json!([{"property": "tier", "op": "ne", "values": ["free"]}]),
        json!([{"property": "user", "op": "exists"}, {"property": "missing", "op": "not_exists"}]),
    ]
}

fn definition(kind: &str, segmentation: &Option<Value>, filters: &Value) -> Value {
    let mut aggregation = json!({"type": kind});
    match kind {
        "count" => {}
        "unique_count" => aggregation["field"] = json!("user"),
        _ => aggregation["field"] = json!("n"),
    }
    let mut definition = json!({
        "code": "m", "event_code": "api", "name": "M", "aggregation": aggregation,
        "filters": filters, "group_by": ["project"],
        "unit_conversion": {"factor": "3", "rounding": "nearest"},
    });
    if let Some(s) = segmentation {
        definition["segmentation"] = s.clone();
    }
    definition
}

#[tokio::test]
async fn pushed_down_usage_equals_the_reference_engine_for_every_pushable_shape() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    store.append(org, events(&mut rng, 300, "a"), false).await.unwrap();
    let between = odometer_core::time::now();
    store.append(org, events(&mut rng, 200, "b"), false).await.unwrap();
    let all = stored(&store, org).await;

    let shapes: [(WindowSize, Tz, &[&str]); 4] = [
        (WindowSize::None, Tz::UTC, &[]),
        (WindowSize::Hour, Tz::Europe__Paris, &["project"]),
        (WindowSize::Day, Tz::America__New_York, &[]),
        (WindowSize::Day, Tz::Asia__Kolkata, &["project"]),
    ];
    let mut asked = 0;
    for kind in KINDS {
        for segmentation in &segmentations() {
            for filters in &filters() {
                let spec = spec(definition(kind, segmentation, filters));
                for (window, zone, group_by) in shapes {
                    let mut q = query(window, zone, group_by);
                    assert_matches_reference(&store, org, &all, &spec, &q).await;
                    q.as_of = Some(between);
                    assert_matches_reference(&store, org, &all, &spec, &q).await;
                    asked += 2;
                }
            }
        }
    }
    assert_eq!(
        store.usage_paths(),
        UsagePaths { index: 0, pushed_down: asked, reference: 0, pushdown_errors: 0 },
        "every question of these shapes is answered by DuckDB"
    );
}

#[tokio::test]
async fn questions_the_slots_cannot_answer_exactly_go_to_the_reference_engine() {
    let store = DuckEventStore::open_in_memory().unwrap();
    let org = OrganizationId::new();
    let mut rng = Rng(7);
    store.append(org, events(&mut rng, 100, "a"), false).await.unwrap();
    let q = query(WindowSize::Day, Tz::UTC, &[]);
    let mut expected_reference = 0;
    let check = |definition: Value| (spec(definition), ());

    // `latest`, a recurring sum and an expression are not pushed down.
    for definition in [
        json!({"code": "m", "event_code": "api", "name": "M", "aggregation": {"type": "latest", "field": "n"}}),
        json!({"code": "m", "event_code": "api", "name": "M",
            "aggregation": {"type": "sum", "field": "n", "recurring": true}}),
        json!({"code": "m", "event_code": "api", "name": "M",
            "aggregation": {"type": "sum", "expression": "event.properties.n * 2"}}),
    ] {
        let (spec, ()) = check(definition);
        let all = stored(&store, org).await;
        assert_matches_reference(&store, org, &all, &spec, &q).await;
        expected_reference += 1;
    }
    assert_eq!(store.usage_paths().reference, expected_reference);

    // A decimal too fine for a slot, and a unique_count removal, are found by the statement,
    // which hands the question back.
    let sum = spec(json!({"code": "m", "event_code": "api", "name": "M",
        "aggregation": {"type": "sum", "field": "n"}}));
    let distinct = spec(json!({"code": "m", "event_code": "api", "name": "M",
        "aggregation": {"type": "unique_count", "field": "user"}}));
    let all = stored(&store, org).await;
    assert_matches_reference(&store, org, &all, &sum, &q).await;
    assert_matches_reference(&store, org, &all, &distinct, &q).await;
    assert_eq!(store.usage_paths().pushed_down, 2);
    let late = |id: &str, properties: Value| Event {
        transaction_id: id.to_owned(),
        code: "api".to_owned(),
        customer: "c1".to_owned(),
        timestamp: start() + TimeDelta::hours(30),
        properties: properties.as_object().unwrap().clone(),
    };
    store
        .append(
            org,
            vec![
                late("fine", json!({"n": "0.00000000001"})),
                late("gone", json!({"user": "u1", "operation_type": "remove"})),
            ],
            false,
        )
        .await
        .unwrap();
    let all = stored(&store, org).await;
    assert_matches_reference(&store, org, &all, &sum, &q).await;
    assert_matches_reference(&store, org, &all, &distinct, &q).await;
    assert_eq!(
        store.usage_paths(),
        UsagePaths {
            index: 0,
            pushed_down: 2,
            reference: expected_reference + 2,
            pushdown_errors: 0
        }
    );
}

#[tokio::test]
async fn slots_survive_a_reopen_and_spilled_keys_are_read_from_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.duckdb");
    let org = OrganizationId::new();
    let store = DuckEventStore::open(&path).await.unwrap();
    // 20 keys: the last four spill past the 16 slots.
    let properties: Map<String, Value> = (0..20).map(|i| (format!("k{i:02}"), json!(i))).collect();
    let event = |id: &str, properties: Map<String, Value>| Event {
        transaction_id: id.to_owned(),
        code: "api".to_owned(),
        customer: "c1".to_owned(),
        timestamp: start() + TimeDelta::hours(10),
        properties,
    };
    store.append(org, vec![event("one", properties.clone())], false).await.unwrap();
    drop(store);
    let store = DuckEventStore::open(&path).await.unwrap();
    store.append(org, vec![event("two", properties)], false).await.unwrap();
    let all = stored(&store, org).await;
    let sum_of = |key: &str| {
        spec(json!({"code": "m", "event_code": "api", "name": "M",
            "aggregation": {"type": "sum", "field": key}}))
    };
    let q = query(WindowSize::None, Tz::UTC, &[]);
    assert_matches_reference(&store, org, &all, &sum_of("k03"), &q).await;
    assert_eq!(store.usage_paths().pushed_down, 1, "k03 has a slot, also after the reopen");
    assert_matches_reference(&store, org, &all, &sum_of("k19"), &q).await;
    assert_eq!(store.usage_paths().reference, 1, "k19 spilled: the JSON answers");
    let customers = vec!["c1".to_owned()];
    let results = store.usage_of_customers(org, &customers, &sum_of("k19"), &q).await.unwrap();
    assert_eq!(results[0].windows[0].total, Some(38.into()), "19 + 19");
    let results = store.usage_of_customers(org, &customers, &sum_of("k03"), &q).await.unwrap();
    assert_eq!(results[0].windows[0].total, Some(6.into()), "3 + 3");
}
