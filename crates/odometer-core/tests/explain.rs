//! The explanation of an event against the reference engine: on generated metrics (every
//! aggregation, filters, the three segmentations with `other` and `drop`, `group_by`) and
//! events, what `explain_event` says an event does is what `compute_usage` does with it.
//! - Alone in a window: an event explained as counted with value `v` in group `g` gives exactly
//!   the group `g` with `events_count` 1 and the aggregation of `v`; skipped gives `g` with
//!   `events_skipped` 1; excluded gives no group and `events_excluded` 1; another code or a
//!   failing filter gives nothing.
//! - Added to other events (count and sum): the event moves its group's value by `v` and its
//!   counters by one, and no other group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use odometer_core::engine::{compute_usage, finalize};
use odometer_core::event::{Event, StoredEvent};
use odometer_core::explain::{explain_event, Outcome, ValueReading};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{GroupKey, UsageQuery, UsageResult, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::MetricSpec;
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

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
                Some(json!(-3)),
                Some(json!("2.5")),
                Some(number("1.250")),
                Some(number("0.001")),
                Some(json!("lots")),
                Some(json!([1])),
                Some(Value::Null),
                None,
            ],
        ),
        ("region", vec![Some(json!("eu")), Some(json!("us")), Some(json!(1)), None]),
        ("cloud", vec![Some(json!("aws")), Some(json!("gcp")), None]),
        ("tier", vec![Some(json!("free")), Some(json!("pro")), Some(Value::Null), None]),
        ("operation_type", vec![None, None, None, Some(json!("remove")), Some(json!("undo"))]),
        ("project", vec![Some(json!("p1")), Some(json!(2)), None]),
    ]
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// An event from one choice per property pool, a code and a minute offset.
fn event(choices: &[usize], code: &str, minute: i64, sequence: u64) -> StoredEvent {
    let mut properties = Map::new();
    for ((name, pool), choice) in pools().into_iter().zip(choices) {
        if let Some(value) = &pool[choice % pool.len()] {
            properties.insert(name.to_owned(), value.clone());
        }
    }
    let timestamp = start() + TimeDelta::minutes(minute);
    StoredEvent {
        event: Event {
            transaction_id: format!("t{sequence}"),
            code: code.to_owned(),
            customer: "acme".to_owned(),
            timestamp,
            properties,
        },
        sequence,
        ingested_at: timestamp,
    }
}

/// A metric reading event code `api`: an aggregation, some filters, a segmentation, group_by.
fn metric(kind: &str, filters: usize, segmentation: usize, group_by: bool) -> MetricSpec {
    let mut definition = json!({"code": "m", "name": "M", "event_code": "api",
        "aggregation": {"type": kind}});
    if kind != "count" {
        definition["aggregation"]["field"] = json!("n");
    }
    let filter_choices = [
        json!([]),
        json!([{"property": "tier", "op": "in", "values": ["pro"]}]),
        json!([{"property": "tier", "op": "ne", "values": ["free"]},
               {"property": "cloud", "op": "exists", "values": []}]),
        json!([{"property": "region", "op": "not_in", "values": ["us", "1"]}]),
        json!([{"property": "tier", "op": "not_exists", "values": []}]),
    ];
    definition["filters"] = filter_choices[filters % filter_choices.len()].clone();
    let segmentations = [
        Value::Null,
        json!({"type": "single", "key": "region", "values": ["eu", "1.0"]}),
        json!({"type": "single", "key": "region", "values": ["eu"], "unmatched": "drop"}),
        json!({"type": "double", "dimension1": {"key": "cloud", "values": ["aws", "gcp"]},
               "dimension2": {"key": "region", "values": ["eu", "us"]}, "unmatched": "drop"}),
        json!({"type": "linked", "dimension1_key": "cloud", "dimension2_key": "region",
               "values": {"aws": ["eu"], "gcp": ["us", "1"]}}),
    ];
    definition["segmentation"] = segmentations[segmentation % segmentations.len()].clone();
    if group_by {
        definition["group_by"] = json!(["project"]);
    }
    parse_metric_spec(&definition).unwrap()
}

fn usage(spec: &MetricSpec, events: &[StoredEvent]) -> UsageResult {
    let query = UsageQuery {
        from: start(),
        to: start() + TimeDelta::days(1),
        window: WindowSize::None,
        timezone: chrono_tz::Tz::UTC,
        group_by: spec.group_by.clone(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    compute_usage(spec, events, &query).unwrap()
}

/// (value, events_count, events_skipped) of a group, when it is in the window.
fn group(result: &UsageResult, key: &GroupKey) -> Option<(Option<Decimal>, u64, u64)> {
    let window = &result.windows[0];
    window
        .groups
        .iter()
        .find(|g| &g.key == key)
        .map(|g| (g.value, g.events_count, g.events_skipped))
}

fn choices() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..100, 6)
}

fn stored_events() -> impl Strategy<Value = Vec<(Vec<usize>, bool, i64)>> {
    prop::collection::vec((choices(), any::<bool>(), 0i64..1440), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// An event alone in a window does exactly what its explanation says.
    #[test]
    fn an_event_alone_does_what_its_explanation_says(
        kind in 0usize..KINDS.len(),
        filters in 0usize..5,
        segmentation in 0usize..5,
        group_by in any::<bool>(),
        choices in choices(),
        other_code in prop::bool::weighted(0.1),
        minute in 0i64..1440,
    ) {
        let kind = KINDS[kind];
        let spec = metric(kind, filters, segmentation, group_by);
        let stored = event(&choices, if other_code { "storage" } else { "api" }, minute, 1);
        let explained = explain_event(&spec, &stored.event);
        let result = usage(&spec, std::slice::from_ref(&stored));
        let window = &result.windows[0];
        match &explained.outcome {
            Outcome::OtherCode | Outcome::FilteredOut { .. } => {
                prop_assert!(window.groups.is_empty(), "{explained:?} {window:?}");
                prop_assert_eq!(window.events_excluded, 0);
            }
            Outcome::Excluded => {
                prop_assert!(window.groups.is_empty());
                prop_assert_eq!(window.events_excluded, 1);
            }
            Outcome::Skipped(_) => {
                let key = explained.group_key().unwrap();
                prop_assert_eq!(window.groups.len(), 1, "{:?}", window);
                let (_, count, skipped) = group(&result, &key).unwrap();
                prop_assert_eq!((count, skipped), (0, 1));
            }
            Outcome::Counted => {
                let key = explained.group_key().unwrap();
                prop_assert_eq!(window.groups.len(), 1, "{:?} {:?}", explained, window);
                let (value, count, skipped) = group(&result, &key).unwrap();
                prop_assert_eq!((count, skipped), (1, 0));
                let expected = match (&explained.value, kind) {
                    (ValueReading::Counted, _) => Some(Decimal::ONE),
                    (ValueReading::Distinct { removes, .. }, _) => {
                        Some(if *removes { Decimal::ZERO } else { Decimal::ONE })
                    }
                    // The time-weighted level of one change is not the change itself.
                    (ValueReading::Number(_), "weighted_sum") => value,
                    (ValueReading::Number(v), _) => Some(finalize(&spec, *v).unwrap()),
                    (other, _) => return Err(TestCaseError::fail(format!("{other:?} counted"))),
                };
                prop_assert_eq!(value, expected);
            }
            Outcome::DecidedBySql => return Err(TestCaseError::fail("no SQL metric here")),
        }
    }

    /// Added to other events, a count or sum event moves its group by its value and counters,
    /// and nothing else.
    #[test]
    fn an_event_moves_its_group_by_its_value(
        sum in any::<bool>(),
        filters in 0usize..5,
        segmentation in 0usize..5,
        group_by in any::<bool>(),
        base in stored_events(),
        choices in choices(),
        minute in 0i64..1440,
    ) {
        let spec = metric(if sum { "sum" } else { "count" }, filters, segmentation, group_by);
        let mut events: Vec<StoredEvent> = base
            .iter()
            .enumerate()
            .map(|(i, (c, other, m))| event(c, if *other { "storage" } else { "api" }, *m, i as u64 + 1))
            .collect();
        let before = usage(&spec, &events);
        let added = event(&choices, "api", minute, events.len() as u64 + 1);
        let explained = explain_event(&spec, &added.event);
        events.push(added);
        let after = usage(&spec, &events);
        let (b, a) = (&before.windows[0], &after.windows[0]);
        let excluded = u64::from(explained.outcome == Outcome::Excluded);
        prop_assert_eq!(a.events_excluded, b.events_excluded + excluded);
        let moved = explained.group_key();
        // Every group other than the event's is unchanged.
        for g in &a.groups {
            if Some(&g.key) != moved.as_ref() {
                prop_assert_eq!(Some(g), b.groups.iter().find(|x| x.key == g.key));
            }
        }
        for g in &b.groups {
            prop_assert!(a.groups.iter().any(|x| x.key == g.key));
        }
        if let Some(key) = moved {
            let (value_before, count_before, skipped_before) =
                group(&before, &key).unwrap_or((Some(Decimal::ZERO), 0, 0));
            let (value_after, count_after, skipped_after) = group(&after, &key).unwrap();
            let delta = match (&explained.outcome, &explained.value) {
                (Outcome::Counted, ValueReading::Number(v)) => *v,
                (Outcome::Counted, ValueReading::Counted) => Decimal::ONE,
                (Outcome::Skipped(_), _) => Decimal::ZERO,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(
                value_after.unwrap().normalize(),
                (value_before.unwrap() + delta).normalize()
            );
            let counted = u64::from(explained.outcome.counts());
            prop_assert_eq!(count_after, count_before + counted);
            prop_assert_eq!(skipped_after, skipped_before + 1 - counted);
            prop_assert_eq!(
                a.total.map(|t| t.normalize()),
                b.total.map(|t| (t + delta).normalize())
            );
        } else {
            prop_assert_eq!(a.total, b.total);
        }
    }
}
