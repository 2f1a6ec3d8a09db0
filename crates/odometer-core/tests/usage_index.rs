//! The usage index's state against the reference engine: random event streams folded into a
//! state in a random order, random definitions and queries, every answer from the state equal
//! to `compute_usage` over the same events; snapshots read back answer the same; and the
//! cases the state refuses are the ones it must refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use odometer_core::engine::{compute_usage, finalize};
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::usage_index::{DefinitionKey, DefinitionState, Fallback};
use odometer_core::MetricSpec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

const CUSTOMERS: [&str; 3] = ["c1", "c2", "c3"];
const CODES: [&str; 2] = ["api", "storage"];
/// Zones with whole-hour, 30- and 45-minute offsets, and DST changes of an hour and of half an
/// hour (Lord Howe): every window boundary of theirs is on the 15-minute grid.
const ZONES: [Tz; 7] = [
    Tz::UTC,
    Tz::Europe__Paris,
    Tz::America__New_York,
    Tz::Asia__Kolkata,
    Tz::Asia__Kathmandu,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Chatham,
];
/// Streams start at one of these: the Paris spring-forward (29 March 2026), the New York
/// fall-back (1 November 2026), Lord Howe's and Chatham's April 2026 changes.
const STARTS: [&str; 3] = ["2026-03-27T00:00:00Z", "2026-10-30T00:00:00Z", "2026-04-03T00:00:00Z"];
const SPAN_MINUTES: i64 = 4 * 24 * 60;
const KINDS: [&str; 8] =
    ["count", "sum", "min", "max", "mean", "latest", "unique_count", "weighted_sum"];

fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The value pools of each property (`None`: absent).
fn pools() -> Vec<(&'static str, Vec<Option<Value>>)> {
    vec![
        (
            "n",
            vec![
                Some(json!(0)),
                Some(json!(1)),
                Some(json!(2)),
                Some(json!(-3)),
                Some(json!("2.5")),
                Some(number("1.25")),
                Some(number("1.250")),
                Some(number("10.0")),
                Some(number("0.001")),
                Some(Value::Null),
                None,
            ],
        ),
        ("region", vec![Some(json!("eu")), Some(json!("us")), Some(json!(1)), None]),
        ("tier", vec![Some(json!("free")), Some(json!("pro")), None]),
        (
            "user",
            vec![Some(json!("u1")), Some(json!("u2")), Some(json!(1)), Some(json!("1.0")), None],
        ),
        (
            "operation_type",
            vec![None, None, None, None, None, Some(json!("add")), Some(json!("remove"))],
        ),
        ("project", vec![Some(json!("p1")), Some(json!("p2")), None]),
        ("env", vec![Some(json!("prod")), Some(json!(1)), None]),
    ]
}

#[derive(Debug, Clone)]
struct Seed {
    customer: usize,
    code: usize,
    minute: i64,
    micros: i64,
    values: Vec<usize>,
    /// How many events later this one is ingested (a late arrival), 0 for in order.
    late: usize,
}

fn seed() -> impl Strategy<Value = Seed> {
    let values = pools().into_iter().map(|(_, p)| 0..p.len()).collect::<Vec<_>>();
    (
        prop_oneof![4 => Just(0usize), 3 => Just(1usize), 1 => Just(2usize)],
        prop_oneof![3 => Just(0usize), 1 => Just(1usize)],
        0..SPAN_MINUTES,
        prop_oneof![Just(0i64), 0i64..900_000_000, Just(899_999_999i64)],
        values,
        prop_oneof![6 => Just(0usize), 1 => 1usize..40],
    )
        .prop_map(|(customer, code, minute, micros, values, late)| Seed {
            customer,
            code,
            // Many events on bucket boundaries, where windows start and end.
            minute: if micros == 0 { minute - minute % 15 } else { minute },
            micros: micros % 60_000_000,
            values,
            late,
        })
}

/// The stream, stored: sequences and ingestion times in arrival order (late events arrive
/// after events with later timestamps).
fn stored(seeds: &[Seed], start: DateTime<Utc>) -> Vec<StoredEvent> {
    let pools = pools();
    let mut events: Vec<(usize, Event)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut properties = Map::new();
            for ((key, pool), &v) in pools.iter().zip(&s.values) {
                if let Some(value) = pool[v].clone() {
                    properties.insert((*key).to_owned(), value);
                }
            }
            let event = Event {
                transaction_id: format!("tx{i}"),
                code: CODES[s.code].to_owned(),
                customer: CUSTOMERS[s.customer].to_owned(),
                timestamp: start + TimeDelta::minutes(s.minute) + TimeDelta::microseconds(s.micros),
                properties,
            };
            (i + s.late, event)
        })
        .collect();
    events.sort_by_key(|(arrival, _)| *arrival);
    let first_ingestion = start + TimeDelta::days(10);
    events
        .into_iter()
        .zip(1u64..)
        .map(|((_, event), sequence)| StoredEvent {
            event,
            sequence,
            ingested_at: first_ingestion + TimeDelta::seconds(sequence as i64),
        })
        .collect()
}

const FILTERS: [&str; 5] = [
    r#"{"property": "region", "op": "in", "values": ["eu", "us"]}"#,
    r#"{"property": "tier", "op": "ne", "values": ["free"]}"#,
    r#"{"property": "project", "op": "exists"}"#,
    r#"{"property": "n", "op": "eq", "values": [2]}"#,
    r#"{"property": "user", "op": "in", "values": [1, "u2"]}"#,
];

const SEGMENTATIONS: [&str; 3] = [
    r#"{"type": "single", "key": "region", "values": ["eu", "us", "1.0"]}"#,
    r#"{"type": "double", "dimension1": {"key": "region", "values": ["eu", "us"]},
        "dimension2": {"key": "tier", "values": ["free", "pro"]}}"#,
    r#"{"type": "linked", "dimension1_key": "region", "dimension2_key": "tier",
        "values": {"eu": ["pro"], "us": ["free", "pro"]}}"#,
];

const GROUP_BY: [&[&str]; 3] = [&[], &["project"], &["project", "env"]];

fn definition() -> impl Strategy<Value = Value> {
    (
        (0..KINDS.len(), 0..3usize, any::<bool>(), prop_oneof![3 => Just(0usize), 1 => Just(1usize)]),
        (
            prop::collection::vec(0..FILTERS.len(), 0..3),
            prop::option::of((0..SEGMENTATIONS.len(), any::<bool>())),
            0..GROUP_BY.len(),
        ),
        (
            prop::option::of((0..3usize, 0..4usize)),
            prop::option::of((0..3usize, -1i32..3)),
        ),
    )
        .prop_map(|((kind, source, recurring, code), (filters, segmentation, group_by), (conversion, rounding))| {
            let kind = KINDS[kind];
            let mut aggregation = json!({"type": kind});
            match (kind, source) {
                ("count", _) => {}
                ("unique_count", 2) => aggregation["field"] = json!("n"),
                ("unique_count", _) => aggregation["field"] = json!("user"),
                (_, 2) => aggregation["expression"] = json!("event.properties.n * 2 - 1"),
                _ => aggregation["field"] = json!("n"),
            }
            if recurring && matches!(kind, "sum" | "unique_count" | "weighted_sum") {
                aggregation["recurring"] = json!(true);
            }
            let mut filters = filters;
            filters.sort_unstable();
            filters.dedup();
            let mut def = json!({
                "code": "m", "event_code": CODES[code], "name": "M",
                "aggregation": aggregation,
                "filters": filters.iter().map(|&i| serde_json::from_str::<Value>(FILTERS[i]).unwrap()).collect::<Vec<_>>(),
                "group_by": GROUP_BY[group_by],
            });
            if let Some((s, drop)) = segmentation {
                let mut value: Value = serde_json::from_str(SEGMENTATIONS[s]).unwrap();
                if drop {
                    value["unmatched"] = json!("drop");
                }
                def["segmentation"] = value;
            }
            if let Some((factor, r)) = conversion {
                let factor = ["1000", "3", "0.25"][factor];
                let rounding = ["none", "up", "nearest_half", "nearest_decile"][r];
                def["unit_conversion"] = json!({"factor": factor, "rounding": rounding});
            }
            if let Some((function, precision)) = rounding {
                let function = ["round", "ceil", "floor"][function];
                def["rounding"] = json!({"function": function, "precision": precision});
            }
            def
        })
}

fn spec(definition: &Value) -> MetricSpec {
    parse_metric_spec(definition).unwrap_or_else(|p| panic!("bad test metric {definition}: {p:?}"))
}

#[derive(Debug, Clone)]
struct Query {
    from_minutes: i64,
    from_micros: i64,
    length_minutes: i64,
    window: WindowSize,
    zone: usize,
    group_mask: u8,
    small_limit: bool,
    as_of: Option<usize>,
}

fn query() -> impl Strategy<Value = Query> {
    (
        -24 * 60i64..SPAN_MINUTES,
        prop_oneof![3 => Just(0i64), 1 => 0i64..900_000_000],
        prop_oneof![1 => 1i64..120, 3 => 60i64..6 * 24 * 60],
        prop_oneof![
            3 => Just(WindowSize::None),
            1 => Just(WindowSize::Minute),
            3 => Just(WindowSize::Hour),
            3 => Just(WindowSize::Day),
            1 => Just(WindowSize::Month),
        ],
        0..ZONES.len(),
        any::<u8>(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.2, any::<usize>()),
    )
        .prop_map(
            |(
                from_minutes,
                from_micros,
                length_minutes,
                window,
                zone,
                group_mask,
                small_limit,
                as_of,
            )| Query {
                // Aligned starts are common: whole hours, or any quarter hour.
                from_minutes: if from_micros == 0 {
                    from_minutes - from_minutes % 15
                } else {
                    from_minutes
                },
                from_micros,
                // Minute windows only over short periods (a long period of them is events work);
                // aligned periods end on the grid too.
                length_minutes: match (window, from_micros) {
                    (WindowSize::Minute, _) => length_minutes.min(90),
                    (_, 0) => (length_minutes - length_minutes % 15).max(15),
                    _ => length_minutes,
                },
                window,
                zone,
                group_mask,
                small_limit,
                as_of,
            },
        )
}

#[derive(Debug, Clone)]
struct Case {
    start: usize,
    seeds: Vec<Seed>,
    definitions: Vec<Value>,
    queries: Vec<Query>,
    /// The order events are folded in: a permutation seed.
    shuffle: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..STARTS.len(),
        prop::collection::vec(seed(), 0..150),
        prop::collection::vec(definition(), 1..4),
        prop::collection::vec(query(), 1..5),
        any::<u64>(),
    )
        .prop_map(|(start, seeds, definitions, queries, shuffle)| Case {
            start,
            seeds,
            definitions,
            queries,
            shuffle,
        })
}

/// A deterministic permutation (Fisher-Yates with a xorshift generator).
fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    seed |= 1;
    for i in (1..out.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    out
}

/// What a run of cases answered from the state and why not, for the counts checked at the end.
#[derive(Debug, Default)]
struct Paths {
    index: usize,
    index_with_edges: usize,
    fallbacks: std::collections::HashMap<&'static str, usize>,
}

fn run_case(case: &Case, paths: &mut Paths) -> Result<(), TestCaseError> {
    let start = DateTime::parse_from_rfc3339(STARTS[case.start]).unwrap().with_timezone(&Utc);
    let events = stored(&case.seeds, start);
    for definition in &case.definitions {
        let spec = spec(definition);
        let mut state = DefinitionState::new(&spec).unwrap();
        for event in shuffled(&events, case.shuffle) {
            state.apply(&event);
        }
        // The same state after a trip through its snapshot.
        let mut bytes = Vec::new();
        state.write_snapshot(&mut bytes);
        let (restored, rest) = DefinitionState::read_snapshot(&bytes).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(restored.key(), state.key());

        for q in &case.queries {
            let from =
                start + TimeDelta::minutes(q.from_minutes) + TimeDelta::microseconds(q.from_micros);
            let keys = &spec.group_by;
            let query = UsageQuery {
                from,
                to: from + TimeDelta::minutes(q.length_minutes),
                window: q.window,
                timezone: ZONES[q.zone],
                group_by: keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| q.group_mask & (1 << i) != 0)
                    .map(|(_, k)| k.clone())
                    .collect(),
                as_of: q.as_of.and_then(|i| {
                    (!events.is_empty()).then(|| events[i % events.len()].ingested_at)
                }),
                group_limit: if q.small_limit { 2 } else { DEFAULT_GROUP_LIMIT },
            };
            let plan = state.plan(&spec, &query);
            for customer in CUSTOMERS {
                let own: Vec<StoredEvent> =
                    events.iter().filter(|e| e.event.customer == customer).cloned().collect();
                let expected = compute_usage(&spec, &own, &query);
                let plan = match &plan {
                    Err(error) => {
                        prop_assert_eq!(Err(error.clone()), expected, "planning error");
                        continue;
                    }
                    Ok(Err(fallback)) => {
                        *paths.fallbacks.entry(fallback.as_str()).or_default() += 1;
                        // An as_of fallback only when the state holds a later ingestion.
                        if *fallback == Fallback::AsOf {
                            let as_of = query.as_of.unwrap();
                            prop_assert!(events.iter().any(|e| e.ingested_at > as_of));
                        }
                        continue;
                    }
                    Ok(Ok(plan)) => plan,
                };
                if let Some(fallback) = state.customer_fallback(customer) {
                    *paths.fallbacks.entry(fallback.as_str()).or_default() += 1;
                    continue;
                }
                let edges: Vec<StoredEvent> = own
                    .iter()
                    .filter(|e| {
                        plan.edge_ranges()
                            .iter()
                            .any(|(a, b)| e.event.timestamp >= *a && e.event.timestamp < *b)
                    })
                    .cloned()
                    .collect();
                let actual = state.answer(&spec, plan, customer, &edges);
                prop_assert_eq!(&actual, &expected, "{} for {}: {:?}", definition, customer, query);
                let again = restored.answer(&spec, plan, customer, &edges);
                prop_assert_eq!(
                    &again,
                    &expected,
                    "restored state, {} for {}",
                    definition,
                    customer
                );
                if plan.has_edges() {
                    paths.index_with_edges += 1;
                } else {
                    paths.index += 1;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn answers_from_the_state_equal_the_reference_engine() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1024);
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let paths = std::cell::RefCell::new(Paths::default());
    let result = runner.run(&case(), |case| run_case(&case, &mut paths.borrow_mut()));
    let paths = paths.into_inner();
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("{paths:?}");
    // The property means something only if most questions were answered from the state, with
    // and without edge buckets.
    let answered = paths.index + paths.index_with_edges;
    let refused: usize = paths.fallbacks.values().sum();
    assert!(answered > 3 * refused, "{paths:?}");
    assert!(
        paths.index > cases as usize / 4 && paths.index_with_edges > cases as usize / 4,
        "{paths:?}"
    );
}

#[test]
fn revisions_that_change_only_presentation_share_a_key() {
    let base = json!({"code": "m", "event_code": "api", "name": "M", "aggregation": {"type": "sum", "field": "n"}});
    let mut renamed = base.clone();
    renamed["name"] = json!("Renamed");
    renamed["code"] = json!("other_code");
    renamed["unit_conversion"] = json!({"factor": "1000", "rounding": "up"});
    renamed["rounding"] = json!({"function": "round", "precision": 2});
    assert_eq!(DefinitionKey::of(&spec(&base)), DefinitionKey::of(&spec(&renamed)));
    let mut filtered = base.clone();
    filtered["filters"] = json!([{"property": "region", "op": "eq", "values": ["eu"]}]);
    let mut expression = base.clone();
    expression["aggregation"] = json!({"type": "sum", "expression": "event.properties.n * 2"});
    let mut segmented = base.clone();
    segmented["segmentation"] = json!({"type": "single", "key": "region", "values": ["eu"]});
    let mut grouped = base.clone();
    grouped["group_by"] = json!(["project"]);
    for changed in [filtered, expression, segmented, grouped] {
        assert_ne!(
            DefinitionKey::of(&spec(&base)),
            DefinitionKey::of(&spec(&changed)),
            "{changed}"
        );
    }
    // custom_sql has no per-event state.
    let sql = json!({"code": "q", "name": "Q", "aggregation": {"type": "custom_sql", "query": "SELECT count(*) AS value FROM events"}});
    assert_eq!(DefinitionKey::of(&spec(&sql)), None);
}

fn stored_at(customer: &str, seq: u64, at: DateTime<Utc>, n: Value) -> StoredEvent {
    let mut properties = Map::new();
    properties.insert("n".into(), n);
    StoredEvent {
        event: Event {
            transaction_id: format!("t{seq}"),
            code: "api".into(),
            customer: customer.into(),
            timestamp: at,
            properties,
        },
        sequence: seq,
        ingested_at: at,
    }
}

#[test]
fn sums_too_large_for_exact_decimals_go_to_the_events() {
    let spec = spec(
        &json!({"code": "m", "event_code": "api", "name": "M", "aggregation": {"type": "sum", "field": "n"}}),
    );
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut state = DefinitionState::new(&spec).unwrap();
    let query = UsageQuery {
        from: at,
        to: at + TimeDelta::days(1),
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: vec![],
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    state.apply(&stored_at("c", 1, at, json!(1)));
    assert!(state.plan(&spec, &query).unwrap().is_ok());
    // 4e28 twice would overflow a decimal; 1e27 with ten decimals needs 2^121 of mantissa.
    state.apply(&stored_at("c", 2, at, number("1000000000000000000000000000.5")));
    assert_eq!(state.plan(&spec, &query).unwrap().unwrap_err(), Fallback::Inexact);
}

#[test]
fn as_of_before_the_newest_ingestion_goes_to_the_events() {
    let spec = spec(
        &json!({"code": "m", "event_code": "api", "name": "M", "aggregation": {"type": "count"}}),
    );
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut state = DefinitionState::new(&spec).unwrap();
    state.apply(&stored_at("c", 1, at, json!(1)));
    let mut query = UsageQuery {
        from: at,
        to: at + TimeDelta::days(1),
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: vec![],
        as_of: Some(at - TimeDelta::seconds(1)),
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    assert_eq!(state.plan(&spec, &query).unwrap().unwrap_err(), Fallback::AsOf);
    // At or after the newest ingestion the state holds everything that is visible then.
    query.as_of = Some(at);
    assert!(state.plan(&spec, &query).unwrap().is_ok());
}

proptest! {
    /// Min and max keep a value normalized; that is safe because post-aggregation gives the
    /// same result for every spelling of a value.
    #[test]
    fn finalize_ignores_how_a_value_is_spelled(
        mantissa in -10_000_000_000i64..10_000_000_000,
        scale in 0u32..12,
        extra in 0u32..6,
        conversion in prop::option::of((0..4usize, 0..6usize)),
        rounding in prop::option::of((0..3usize, -3i32..4)),
    ) {
        let value = Decimal::new(mantissa, scale);
        let mut longer = value;
        longer.rescale(scale + extra);
        prop_assume!(longer == value);
        let mut def = json!({"code": "m", "name": "M", "aggregation": {"type": "max", "field": "n"}});
        if let Some((factor, r)) = conversion {
            let factor = ["1000", "3", "0.25", "7"][factor];
            let rounding = ["none", "up", "down", "nearest", "nearest_half", "nearest_decile"][r];
            def["unit_conversion"] = json!({"factor": factor, "rounding": rounding});
        }
        if let Some((function, precision)) = rounding {
            let function = ["round", "ceil", "floor"][function];
            def["rounding"] = json!({"function": function, "precision": precision});
        }
        let spec = spec(&def);
        prop_assert_eq!(finalize(&spec, longer), finalize(&spec, value.normalize()));
        prop_assert_eq!(finalize(&spec, Decimal::from_str(&longer.to_string()).unwrap()), finalize(&spec, value));
    }
}
