//! Conformance by property: random event streams (repeats with the same or changed content,
//! random batch splits, some atomic), random metrics and random queries, each case on a fresh
//! store, checked against the reference log and the reference engine.

use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

use odometer_core::engine::compute_usage;
use odometer_core::event::Event;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{MetricSpec, OrganizationId};

use super::index::wait_until_indexed;
use super::{at, identities, list_all, listed_events, usage_difference, Paired};
use crate::conformance::spec;
use crate::events::{EventStore, PathChoice, UsagePath, UsageQueryError};

/// Cases per run unless `PROPTEST_CASES` says otherwise: enough to mix every feature, few
/// enough that a backend opening a database per case runs them in seconds.
const DEFAULT_CASES: u32 = 64;

const CUSTOMERS: [&str; 3] = ["c1", "c2", "c3"];
const CODES: [&str; 2] = ["api", "storage"];
/// Streams start at one of these: the first spans the Europe/Paris spring-forward (29 March
/// 2026), the second the America/New_York fall-back (1 November 2026), the third the end of
/// daylight time at Lord Howe (half an hour back) and Chatham (5 April 2026).
const STARTS: [&str; 3] = ["2026-03-27T00:00:00Z", "2026-10-30T00:00:00Z", "2026-04-03T00:00:00Z"];
const SPAN_MINUTES: i64 = 4 * 24 * 60;
const TRANSACTION_IDS: usize = 60;

/// Whole-hour, 30-minute (Kolkata, Lord Howe) and 45-minute (Kathmandu, Chatham) offsets.
const ZONES: [Tz; 7] = [
    Tz::UTC,
    Tz::Europe__Paris,
    Tz::America__New_York,
    Tz::Asia__Kolkata,
    Tz::Asia__Kathmandu,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Chatham,
];
const WINDOWS: [WindowSize; 3] = [WindowSize::None, WindowSize::Hour, WindowSize::Day];
const KINDS: [&str; 8] =
    ["count", "sum", "min", "max", "mean", "latest", "unique_count", "weighted_sum"];

fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad number {text}: {e}"))
}

/// The value pools of each property (`None`: the property is absent).
fn pools() -> [(&'static str, Vec<Option<Value>>); 7] {
    [
        (
            "n",
            vec![
                Some(json!(0)),
                Some(json!(1)),
                Some(json!(2)),
                Some(json!(5)),
                Some(json!(-3)),
                Some(json!("2.5")),
                Some(number("1.25")),
                Some(number("10.0")),
                Some(Value::Null),
                None,
            ],
        ),
        (
            "region",
            vec![Some(json!("eu")), Some(json!("us")), Some(json!("ap")), Some(json!(1)), None],
        ),
        ("tier", vec![Some(json!("free")), Some(json!("pro")), None]),
        (
            "user",
            vec![
                Some(json!("u1")),
                Some(json!("u2")),
                Some(json!("u3")),
                Some(json!(1)),
                Some(json!("1.0")),
                None,
            ],
        ),
        ("operation_type", vec![None, None, Some(json!("add")), Some(json!("remove"))]),
        ("project", vec![Some(json!("p1")), Some(json!("p2")), None]),
        ("env", vec![Some(json!("prod")), Some(json!("dev")), Some(json!(1)), None]),
    ]
}

/// One fresh event: indexes into the pools.
#[derive(Debug, Clone)]
struct Seed {
    customer: usize,
    transaction: usize,
    code: usize,
    minute: i64,
    micros: i64,
    values: [usize; 7],
}

/// How a repeat of an earlier event differs from it.
#[derive(Debug, Clone)]
enum Change {
    /// The same event again.
    Same,
    /// The same content spelled differently (members reversed, numbers with a trailing zero).
    Respelled,
    /// Another `n`.
    Value(usize),
    Minutes(i64),
    OtherCode,
    /// The same transaction id for another customer (a new key).
    Customer(usize),
}

#[derive(Debug, Clone)]
enum Step {
    Fresh(Seed),
    /// A repeat of the event produced `of` steps before (modulo), changed by `change`.
    Repeat {
        of: usize,
        change: Change,
    },
}

/// A batch as appended.
#[derive(Debug, Clone)]
struct Batch {
    atomic: bool,
    events: Vec<Event>,
}

/// A usage question: a metric definition and a query; `as_of_batch` puts `as_of` just after
/// that batch (modulo the number of batches) was appended.
#[derive(Debug, Clone)]
struct Check {
    metric: Value,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    window: WindowSize,
    zone: Tz,
    group_by: Vec<String>,
    group_limit: usize,
    as_of_batch: Option<usize>,
}

#[derive(Debug, Clone)]
struct Case {
    batches: Vec<Batch>,
    checks: Vec<Check>,
    /// Before the batch at `.0` (modulo the number of batches), the usage index is given the
    /// definitions of these checks (modulo their number): metric updates between appends.
    defines: Vec<(usize, Vec<usize>)>,
}

fn seed() -> impl Strategy<Value = Seed> {
    let pools = pools();
    let values = [0, 1, 2, 3, 4, 5, 6].map(|i| 0..pools[i].1.len());
    (
        // Skewed, so that some customer and code pairs have many events, others few.
        prop_oneof![4 => Just(0usize), 3 => Just(1usize), 1 => Just(2usize)],
        0..TRANSACTION_IDS,
        prop_oneof![3 => Just(0usize), 1 => Just(1usize)],
        0..SPAN_MINUTES,
        any::<bool>(),
        prop_oneof![Just(0i64), 0i64..1_000_000],
        values,
    )
        .prop_map(|(customer, transaction, code, minute, on_the_hour, micros, values)| Seed {
            customer,
            transaction,
            code,
            // Many events on whole hours, where windows start and end.
            minute: if on_the_hour { minute - minute % 60 } else { minute },
            micros,
            values,
        })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => Just(Change::Same),
        2 => Just(Change::Respelled),
        2 => (0..pools()[0].1.len()).prop_map(Change::Value),
        1 => (-120i64..120).prop_map(Change::Minutes),
        1 => Just(Change::OtherCode),
        1 => (0..CUSTOMERS.len()).prop_map(Change::Customer),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => seed().prop_map(Step::Fresh),
        2 => (any::<usize>(), change()).prop_map(|(of, change)| Step::Repeat { of, change }),
    ]
}

fn fresh_event(seed: &Seed, start: DateTime<Utc>) -> Event {
    let mut properties = Map::new();
    for ((key, pool), &i) in pools().into_iter().zip(&seed.values) {
        if let Some(value) = pool[i].clone() {
            properties.insert(key.to_owned(), value);
        }
    }
    Event {
        transaction_id: format!("tx{}", seed.transaction),
        code: CODES[seed.code].to_owned(),
        customer: CUSTOMERS[seed.customer].to_owned(),
        timestamp: start + TimeDelta::minutes(seed.minute) + TimeDelta::microseconds(seed.micros),
        properties,
    }
}

/// A number with one more trailing zero (`5` → `5.0`, `1.25` → `1.250`): the same decimal.
fn respell(value: &Value) -> Value {
    match value {
        Value::Number(n) => {
            let text = n.to_string();
            let longer = if text.contains(['e', 'E']) {
                text
            } else if text.contains('.') {
                format!("{text}0")
            } else {
                format!("{text}.0")
            };
            number(&longer)
        }
        other => other.clone(),
    }
}

fn repeat(earlier: &Event, change: &Change) -> Event {
    let mut event = earlier.clone();
    match change {
        Change::Same => {}
        Change::Respelled => {
            event.properties =
                earlier.properties.iter().rev().map(|(k, v)| (k.clone(), respell(v))).collect();
        }
        Change::Value(i) => match pools()[0].1[*i].clone() {
            Some(value) => {
                event.properties.insert("n".to_owned(), value);
            }
            None => {
                event.properties.remove("n");
            }
        },
        Change::Minutes(minutes) => event.timestamp += TimeDelta::minutes(*minutes),
        Change::OtherCode => {
            event.code = if event.code == CODES[0] { CODES[1] } else { CODES[0] }.to_owned();
        }
        Change::Customer(c) => event.customer = CUSTOMERS[*c].to_owned(),
    }
    event
}

/// The events of the steps, in order.
fn events(steps: &[Step], start: DateTime<Utc>) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::with_capacity(steps.len());
    for step in steps {
        let next = match step {
            Step::Fresh(seed) => fresh_event(seed, start),
            Step::Repeat { of, change } => match events.len() {
                0 => continue,
                len => repeat(&events[len - 1 - of % len], change),
            },
        };
        events.push(next);
    }
    events
}

/// Cuts the events into batches of the given sizes; whatever is left is one last batch that is
/// not atomic.
fn batches(events: Vec<Event>, splits: &[(usize, bool)]) -> Vec<Batch> {
    let mut rest = events.into_iter();
    let mut out = Vec::new();
    for &(size, atomic) in splits {
        let events: Vec<Event> = rest.by_ref().take(size).collect();
        if events.is_empty() {
            break;
        }
        out.push(Batch { atomic, events });
    }
    let left: Vec<Event> = rest.collect();
    if !left.is_empty() {
        out.push(Batch { atomic: false, events: left });
    }
    out
}

const FILTERS: [&str; 7] = [
    r#"{"property": "region", "op": "in", "values": ["eu", "us"]}"#,
    r#"{"property": "tier", "op": "ne", "values": ["free"]}"#,
    r#"{"property": "project", "op": "exists"}"#,
    r#"{"property": "region", "op": "not_exists"}"#,
    r#"{"property": "n", "op": "eq", "values": [5]}"#,
    r#"{"property": "env", "op": "not_in", "values": ["dev", "1.0"]}"#,
    r#"{"property": "user", "op": "in", "values": [1, "u2"]}"#,
];

const SEGMENTATIONS: [&str; 4] = [
    r#"{"type": "single", "key": "region", "values": ["eu", "us", "1.0"]}"#,
    r#"{"type": "single", "key": "tier", "values": ["pro"]}"#,
    r#"{"type": "double", "dimension1": {"key": "region", "values": ["eu", "us"]},
        "dimension2": {"key": "tier", "values": ["free", "pro"]}}"#,
    r#"{"type": "linked", "dimension1_key": "region", "dimension2_key": "tier",
        "values": {"eu": ["pro"], "us": ["free", "pro"], "1": ["free"]}}"#,
];

const GROUP_BY: [&[&str]; 3] = [&[], &["project"], &["project", "env"]];
const FACTORS: [&str; 3] = ["1000", "3", "0.25"];
const CONVERSION_ROUNDINGS: [Option<&str>; 7] = [
    None,
    Some("none"),
    Some("up"),
    Some("down"),
    Some("nearest"),
    Some("nearest_half"),
    Some("nearest_decile"),
];
const ROUNDING_FUNCTIONS: [&str; 3] = ["round", "ceil", "floor"];

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad test json {text}: {e}"))
}

/// A metric definition and the index of its `group_by` choice.
fn metric() -> impl Strategy<Value = (Value, usize)> {
    // Metrics read the busier code more often, like the events.
    let code = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    let aggregation = (0..KINDS.len(), 0..3usize, any::<bool>(), code);
    let shape = (
        prop_oneof![
            2 => Just(Vec::new()),
            2 => prop::collection::vec(0..FILTERS.len(), 1..2),
            1 => prop::collection::vec(0..FILTERS.len(), 2..3),
        ],
        prop::option::of((0..SEGMENTATIONS.len(), 0..3usize)),
        0..GROUP_BY.len(),
    );
    let finish = (
        prop::option::of((0..FACTORS.len(), 0..CONVERSION_ROUNDINGS.len())),
        prop::option::of((0..ROUNDING_FUNCTIONS.len(), -1i32..3)),
    );
    (aggregation, shape, finish).prop_map(
        |(
            (kind, source, recurring, code),
            (filters, segmentation, group_by),
            (conversion, rounding),
        )| {
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
            let mut definition = json!({
                "code": "m",
                "event_code": CODES[code],
                "name": "M",
                "aggregation": aggregation,
                "group_by": GROUP_BY[group_by],
            });
            let mut chosen: Vec<usize> = filters;
            chosen.sort_unstable();
            chosen.dedup();
            definition["filters"] = chosen.iter().map(|&i| parsed(FILTERS[i])).collect();
            if let Some((s, unmatched)) = segmentation {
                let mut value = parsed(SEGMENTATIONS[s]);
                match unmatched {
                    1 => value["unmatched"] = json!("other"),
                    2 => value["unmatched"] = json!("drop"),
                    _ => {}
                }
                definition["segmentation"] = value;
            }
            if let Some((factor, conversion_rounding)) = conversion {
                let mut value = json!({"factor": FACTORS[factor]});
                if let Some(r) = CONVERSION_ROUNDINGS[conversion_rounding] {
                    value["rounding"] = json!(r);
                }
                definition["unit_conversion"] = value;
            }
            if let Some((function, precision)) = rounding {
                definition["rounding"] =
                    json!({"function": ROUNDING_FUNCTIONS[function], "precision": precision});
            }
            (definition, group_by)
        },
    )
}

fn check(start: DateTime<Utc>) -> impl Strategy<Value = Check> {
    // Mostly periods of days that cover much of the stream, some as short as a minute.
    let period = (
        -24 * 60i64..SPAN_MINUTES / 2,
        prop_oneof![1 => 1i64..6 * 60, 3 => 24 * 60i64..5 * 24 * 60],
        prop_oneof![Just(0i64), 0i64..1_000_000],
    );
    let shape = (0..WINDOWS.len(), 0..ZONES.len(), any::<u8>(), any::<bool>());
    let as_of = prop::option::of(any::<usize>());
    (metric(), period, shape, as_of).prop_map(
        move |((metric, group_by), (from, length, micros), (window, zone, mask, small), as_of)| {
            let from = start + TimeDelta::minutes(from) + TimeDelta::microseconds(micros);
            let keys = GROUP_BY[group_by];
            Check {
                metric,
                from,
                to: from + TimeDelta::minutes(length),
                window: WINDOWS[window],
                zone: ZONES[zone],
                group_by: keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, k)| (*k).to_owned())
                    .collect(),
                group_limit: if small { 2 } else { DEFAULT_GROUP_LIMIT },
                as_of_batch: as_of,
            }
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    (0..STARTS.len()).prop_flat_map(|s| {
        let start = at(STARTS[s]);
        let steps = prop::collection::vec(step(), 0..120);
        let splits = prop::collection::vec((1usize..8, prop::bool::weighted(0.3)), 0..12);
        let checks = prop::collection::vec(check(start), 1..4);
        let defines = prop::collection::vec(
            (any::<usize>(), prop::collection::vec(any::<usize>(), 0..3)),
            0..4,
        );
        (steps, splits, checks, defines).prop_map(move |(steps, splits, checks, defines)| Case {
            batches: batches(events(&steps, start), &splits),
            checks,
            defines,
        })
    })
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// How the usage questions of a run that could take any path were answered.
#[derive(Debug, Default)]
struct Answered {
    index: usize,
    events: usize,
}

async fn run_case(store: &dyn EventStore, case: &Case) -> Result<Answered, TestCaseError> {
    let mut answered = Answered::default();
    let mut paired = Paired::new(store);
    let (org, other) = (OrganizationId::new(), OrganizationId::new());
    let specs: Vec<MetricSpec> = case.checks.iter().map(|c| spec(c.metric.clone())).collect();
    for (i, batch) in case.batches.iter().enumerate() {
        for (at, chosen) in &case.defines {
            if at % case.batches.len() == i {
                let defined: Vec<MetricSpec> =
                    chosen.iter().map(|c| specs[c % specs.len()].clone()).collect();
                store
                    .index_definitions(org, &defined)
                    .await
                    .map_err(|e| fail(format!("index_definitions: {e}")))?;
            }
        }
        let (actual, expected) = paired.append_both(org, batch.events.clone(), batch.atomic).await;
        let actual = actual.map_err(|e| fail(format!("batch {i}: append failed: {e}")))?;
        prop_assert_eq!(actual, expected, "outcomes of batch {}", i);
    }
    // The same keys with other content in another organization: never a conflict there, and
    // never counted here.
    let elsewhere: Vec<Event> = case
        .batches
        .iter()
        .flat_map(|b| b.events.iter().cloned())
        .map(|mut e| {
            e.properties.insert("n".to_owned(), json!(1000));
            e
        })
        .collect();
    let (actual, expected) = paired.append_both(other, elsewhere, false).await;
    let actual = actual.map_err(|e| fail(format!("other organization: append failed: {e}")))?;
    prop_assert_eq!(actual, expected, "outcomes in the other organization");

    for org in [org, other] {
        let listed = listed_events(store, org, list_all(7)).await;
        prop_assert_eq!(
            identities(&listed),
            identities(&paired.reference.all_events(org)),
            "stored events"
        );
    }

    // Every check's definition indexed, each state complete before the questions.
    store.index_definitions(org, &specs).await.map_err(|e| fail(format!("index: {e}")))?;
    for spec in &specs {
        wait_until_indexed(store, org, spec).await;
    }
    for (c, check) in case.checks.iter().enumerate() {
        let spec = specs[c].clone();
        let as_of = check.as_of_batch.and_then(|b| {
            let batches = case.batches.len();
            (batches > 0).then(|| paired.append_ends[b % batches])
        });
        let query = UsageQuery {
            from: check.from,
            to: check.to,
            window: check.window,
            timezone: check.zone,
            group_by: check.group_by.clone(),
            as_of,
            group_limit: check.group_limit,
        };
        let mut expected = Vec::new();
        for customer in CUSTOMERS {
            let reference = compute_usage(&spec, &paired.events_of(org, customer), &query);
            let actual = store.usage(org, customer, &spec, &query).await;
            if let Some(difference) = usage_difference(&actual, &reference) {
                return Err(fail(format!("check {c}, usage of {customer}: {difference}")));
            }
            // Both paths, each against the reference.
            let asked = [customer.to_owned()];
            for choice in [PathChoice::Any, PathChoice::Events] {
                let answers = store.usage_answers(org, &asked, &spec, &query, choice).await;
                let (actual, path) = match answers {
                    Ok(mut answers) if answers.len() == 1 => {
                        let answer = answers.remove(0);
                        (Ok(answer.result), Some(answer.path))
                    }
                    Ok(answers) => {
                        return Err(fail(format!("check {c}: {} answers for one", answers.len())))
                    }
                    Err(error) => (Err(error), None),
                };
                if let Some(difference) = usage_difference(&actual, &reference) {
                    return Err(fail(format!(
                        "check {c}, usage of {customer} by {choice:?} (path {path:?}): {difference}"
                    )));
                }
                match path {
                    Some(UsagePath::Index { .. }) if choice == PathChoice::Events => {
                        return Err(fail(
                            "the events path was asked for, the index answered".into(),
                        ))
                    }
                    Some(UsagePath::Index { .. }) => answered.index += 1,
                    Some(UsagePath::Events(_)) if choice == PathChoice::Any => answered.events += 1,
                    _ => {}
                }
            }
            expected.push(reference);
        }
        // Several customers at once, in another order and one of them twice: each answer as
        // asked alone, or, when some customer's question fails, one of the errors.
        let order = [2, 0, 1, 0];
        let customers: Vec<String> = order.iter().map(|&i| CUSTOMERS[i].to_owned()).collect();
        let together = store.usage_of_customers(org, &customers, &spec, &query).await;
        let reordered: Vec<_> = order.iter().map(|&i| expected[i].clone()).collect();
        match together {
            Ok(results) if reordered.iter().all(Result::is_ok) => {
                prop_assert_eq!(results.len(), order.len(), "check {}: one result each", c);
                for (k, (actual, expected)) in results.iter().zip(&reordered).enumerate() {
                    let expected = expected.as_ref().ok();
                    prop_assert_eq!(
                        Some(actual),
                        expected,
                        "check {}: usage_of_customers, answer {} ({})",
                        c,
                        k,
                        customers[k]
                    );
                }
            }
            Ok(_) => {
                let errors: Vec<_> = reordered.iter().filter_map(|r| r.clone().err()).collect();
                return Err(fail(format!(
                    "check {c}: usage_of_customers answers, the reference fails with {errors:?}"
                )));
            }
            Err(UsageQueryError::Usage(error)) => {
                let errors: Vec<_> = reordered.iter().filter_map(|r| r.clone().err()).collect();
                prop_assert!(
                    errors.contains(&error),
                    "check {}: usage_of_customers fails with {:?}, the reference with {:?}",
                    c,
                    error,
                    errors
                );
            }
            Err(error) => return Err(fail(format!("check {c}: usage_of_customers: {error}"))),
        }
    }
    Ok(answered)
}

/// Runs the property on fresh stores from `make` (an `async fn() -> (S, G)` as the macro
/// takes). It builds its own single-threaded tokio runtime, so call it from a plain `#[test]`,
/// not from inside a runtime.
///
/// With `expect_index`, the store must keep a usage index: a good share of the questions
/// asked of any path must then be answered from it (the property compares both paths with the
/// reference engine, and would mean less if the index never answered).
pub fn event_streams_match_the_reference<S, G, F, Fut>(make: F, expect_index: bool)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cases =
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES);
    // No regression file: this runs from whichever crate invokes the suite, and a failure
    // prints its minimal case to turn into a named test.
    let config =
        Config { cases, failure_persistence: None, max_shrink_iters: 1024, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let answered = std::cell::RefCell::new(Answered::default());
    let result = runner.run(&case(), |case| {
        runtime.block_on(async {
            let (store, _guard) = make().await;
            let counts = run_case(&store, &case).await?;
            let mut total = answered.borrow_mut();
            total.index += counts.index;
            total.events += counts.events;
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let answered = answered.into_inner();
    eprintln!(
        "usage questions: {} answered from the index, {} from the events",
        answered.index, answered.events
    );
    if expect_index {
        // `as_of` in the past and `unique_count` with removals go to the events by design;
        // well over a third of the rest must be the index's.
        assert!(
            answered.index * 2 > answered.events,
            "the index answered too few questions: {answered:?}"
        );
    }
}
