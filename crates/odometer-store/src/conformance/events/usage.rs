//! Conformance: usage equals the reference engine over the reference log's events (semantics
//! sections 1, 3, 4 and 5), for hand-built metrics, with `as_of`, for several customers at
//! once, and when the question is refused.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use odometer_core::engine::compute_usage;
use odometer_core::event::Event;
use odometer_core::usage::{UsageError, UsageQuery, WindowSize};
use odometer_core::{time, MetricSpec, OrganizationId};

use super::{at, event, usage_difference, usage_query, Paired};
use crate::conformance::spec;
use crate::events::{EventStore, UsageQueryError};

/// A metric reading event code `api` (unless the definition says otherwise).
fn metric(code: &str, definition: Value) -> MetricSpec {
    let mut input = json!({"code": code, "event_code": "api", "name": code});
    for (key, value) in definition.as_object().expect("an object") {
        input[key] = value.clone();
    }
    spec(input)
}

/// The metrics the usage suite checks, one or more per rule of semantics 3 and 4.
fn metrics() -> Vec<MetricSpec> {
    let sum = json!({"type": "sum", "field": "n"});
    vec![
        metric("count", json!({"aggregation": {"type": "count"}})),
        metric("sum", json!({"aggregation": sum})),
        metric("min", json!({"aggregation": {"type": "min", "field": "n"}})),
        metric("max", json!({"aggregation": {"type": "max", "field": "n"}})),
        metric("mean", json!({"aggregation": {"type": "mean", "field": "n"}})),
        metric("latest", json!({"aggregation": {"type": "latest", "field": "n"}})),
        metric("users", json!({"aggregation": {"type": "unique_count", "field": "user"}})),
        metric(
            "users_recurring",
            json!({"aggregation": {"type": "unique_count", "field": "user", "recurring": true}}),
        ),
        metric(
            "sum_recurring",
            json!({"aggregation": {"type": "sum", "field": "n", "recurring": true}}),
        ),
        metric("level", json!({"aggregation": {"type": "weighted_sum", "field": "n"}})),
        metric(
            "level_recurring",
            json!({"aggregation": {"type": "weighted_sum", "field": "n", "recurring": true}}),
        ),
        metric(
            "filtered",
            json!({"aggregation": {"type": "count"}, "filters": [
                {"property": "region", "op": "in", "values": ["eu", "us"]},
                {"property": "tier", "op": "ne", "values": ["free"]},
                {"property": "project", "op": "exists"}
            ]}),
        ),
        metric(
            "by_region",
            json!({"aggregation": sum, "segmentation":
                {"type": "single", "key": "region", "values": ["eu", "us", "1.0"]}}),
        ),
        metric(
            "by_region_and_tier",
            json!({"aggregation": sum, "segmentation": {"type": "double",
                "dimension1": {"key": "region", "values": ["eu", "us"]},
                "dimension2": {"key": "tier", "values": ["free", "pro"]},
                "unmatched": "drop"}}),
        ),
        metric(
            "linked",
            json!({"aggregation": {"type": "count"}, "segmentation": {"type": "linked",
                "dimension1_key": "region", "dimension2_key": "tier",
                "values": {"eu": ["pro"], "us": ["free", "pro"]}, "unmatched": "other"}}),
        ),
        metric(
            "linked_drop",
            json!({"aggregation": {"type": "max", "field": "n"}, "segmentation": {"type": "linked",
                "dimension1_key": "region", "dimension2_key": "tier",
                "values": {"eu": ["pro"]}, "unmatched": "drop"}}),
        ),
        metric(
            "by_project",
            json!({"aggregation": {"type": "max", "field": "n"}, "group_by": ["project", "tier"]}),
        ),
        metric(
            "users_by_project",
            json!({"aggregation": {"type": "unique_count", "field": "user"},
                "segmentation": {"type": "single", "key": "region", "values": ["eu"]},
                "group_by": ["project"]}),
        ),
        metric(
            "gigabytes",
            json!({"event_code": "storage",
                "aggregation": {"type": "sum", "field": "usage.bytes", "recurring": true},
                "unit_conversion": {"factor": "1000", "rounding": "up"},
                "rounding": {"function": "round", "precision": -1}}),
        ),
        metric(
            "mean_halves",
            json!({"aggregation": {"type": "mean", "field": "n"},
                "unit_conversion": {"factor": "3", "rounding": "nearest_half"}}),
        ),
        metric(
            "rounded",
            json!({"aggregation": {"type": "sum", "field": "n"},
                "unit_conversion": {"factor": "0.7", "rounding": "nearest_decile"},
                "rounding": {"function": "floor", "precision": 0}}),
        ),
        metric(
            "doubled",
            json!({"aggregation": {"type": "sum", "expression": "event.properties.n * 2 + 1"}}),
        ),
    ]
}

/// Property `i` of a cycle (`None`: the property is absent).
fn pick(values: &[Option<Value>], i: usize) -> Option<Value> {
    values[i % values.len()].clone()
}

/// The usage fixture: `api` events of c1 every 3 hours and 7 minutes from 20 to 31 March
/// 2026 (across the Europe/Paris spring-forward of 29 March), fewer of c2, `storage` events of
/// both; properties cycle through pools of different lengths so combinations vary.
fn fixture() -> Vec<Event> {
    let ns = [
        Some(json!(3)),
        Some(json!("2.5")),
        Some(json!(10)),
        Some(json!(-4)),
        None,
        Some(json!(1.25)),
        Some(json!("7")),
        Some(json!(0)),
        Some(Value::Null),
    ];
    let regions = [
        Some(json!("eu")),
        Some(json!("us")),
        Some(json!("ap")),
        None,
        Some(json!(1)),
        Some(json!("eu")),
    ];
    let tiers = [Some(json!("free")), Some(json!("pro")), None, Some(json!("pro"))];
    let users = [
        Some(json!("u1")),
        Some(json!("u2")),
        Some(json!("1")),
        Some(json!(1.0)),
        Some(json!("u3")),
    ];
    let operations =
        [None, None, Some(json!("remove")), Some(json!("add")), None, Some(json!("remove")), None];
    let projects = [Some(json!("p1")), Some(json!("p2")), None];
    let start = at("2026-03-20T00:00:00Z");
    let mut events = Vec::new();
    for i in 0..90usize {
        let customer = if i % 4 == 3 { "c2" } else { "c1" };
        let timestamp = start + TimeDelta::minutes(187 * i as i64);
        let mut properties = serde_json::Map::new();
        let members = [
            ("n", pick(&ns, i)),
            ("region", pick(&regions, i)),
            ("tier", pick(&tiers, i)),
            ("user", pick(&users, i)),
            ("operation_type", pick(&operations, i)),
            ("project", pick(&projects, i)),
        ];
        for (key, value) in members {
            if let Some(value) = value {
                properties.insert(key.to_owned(), value);
            }
        }
        events.push(Event {
            transaction_id: format!("api-{i}"),
            code: "api".to_owned(),
            customer: customer.to_owned(),
            timestamp,
            properties,
        });
        if i % 5 == 0 {
            let bytes = json!({"usage": {"bytes": 1000 * i as i64 + 499}});
            let at = (timestamp + TimeDelta::seconds(1)).to_rfc3339();
            events.push(event(customer, &format!("storage-{i}"), "storage", &at, bytes));
        }
    }
    events
}

/// The queries each metric is asked: whole period, Paris days, New York hours, a period that
/// starts mid-stream (recurring values carry in), and the metric's own `group_by`.
fn queries(spec: &MetricSpec) -> Vec<UsageQuery> {
    let whole = usage_query("2026-03-22T00:00:00Z", "2026-03-31T00:00:00Z");
    let paris_days = UsageQuery {
        window: WindowSize::Day,
        timezone: Tz::Europe__Paris,
        ..usage_query("2026-03-25T00:00:00Z", "2026-03-31T00:00:00Z")
    };
    let new_york_hours = UsageQuery {
        window: WindowSize::Hour,
        timezone: Tz::America__New_York,
        ..usage_query("2026-03-28T00:00:00Z", "2026-03-29T12:00:00Z")
    };
    let mid = UsageQuery {
        window: WindowSize::Day,
        ..usage_query("2026-03-27T13:30:00Z", "2026-03-30T07:15:00.5Z")
    };
    let grouped = UsageQuery { group_by: spec.group_by.clone(), ..paris_days.clone() };
    let first_key =
        UsageQuery { group_by: spec.group_by.iter().take(1).cloned().collect(), ..mid.clone() };
    vec![whole, paris_days, new_york_hours, mid, grouped, first_key]
}

/// Appends the fixture in batches of 7, with a duplicate and a conflicting resend in each, and
/// the same keys with other values in a second organization.
async fn append_fixture(paired: &mut Paired<'_>, org: OrganizationId, noise: OrganizationId) {
    let events = fixture();
    for (b, batch) in events.chunks(7).enumerate() {
        let mut batch = batch.to_vec();
        if b > 0 {
            let earlier = &events[(b * 7) - 3];
            let mut conflicting = earlier.clone();
            conflicting.properties.insert("n".to_owned(), json!(1000));
            batch.insert(2, conflicting);
            batch.push(earlier.clone());
        }
        paired.append(org, batch, false, &format!("fixture batch {b}")).await;
    }
    let noisy: Vec<Event> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.properties.insert("n".to_owned(), json!(500));
            e
        })
        .collect();
    paired.append(noise, noisy, false, "the same keys in another organization").await;
}

pub async fn usage_matches_the_reference_engine(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (org, noise) = (OrganizationId::new(), OrganizationId::new());
    append_fixture(&mut paired, org, noise).await;

    // Hand-checked anchors, so the comparison is not between two empty answers: c1 has 68 of
    // the 90 `api` events (every fourth is c2's), 52 of them in [22, 31) March.
    let count = metric("count", json!({"aggregation": {"type": "count"}}));
    let whole = usage_query("2026-03-22T00:00:00Z", "2026-03-31T00:00:00Z");
    let result = paired.assert_usage(org, "c1", &count, &whole, "anchor").await;
    let inside = fixture()
        .iter()
        .filter(|e| e.customer == "c1" && e.code == "api")
        .filter(|e| e.timestamp >= whole.from && e.timestamp < whole.to)
        .count();
    assert_eq!(inside, 52, "the fixture as described");
    assert_eq!(result.windows[0].total, Some(inside.into()), "c1's api events in the period");

    let mut answered_groups = 0;
    for spec in metrics() {
        for (q, query) in queries(&spec).iter().enumerate() {
            for customer in ["c1", "c2", "c9"] {
                let what = format!("{} query {q}", spec.code);
                let result = paired.assert_usage(org, customer, &spec, query, &what).await;
                answered_groups += result.windows.iter().map(|w| w.groups.len()).sum::<usize>();
            }
        }
    }
    assert!(answered_groups > 1000, "the metrics saw groups ({answered_groups})");
}

pub async fn usage_as_of_hides_events_ingested_later(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let org = OrganizationId::new();
    let sum = metric("sum", json!({"aggregation": {"type": "sum", "field": "n"}}));
    let latest = metric("latest", json!({"aggregation": {"type": "latest", "field": "n"}}));
    let level = metric(
        "level",
        json!({"aggregation": {"type": "weighted_sum", "field": "n", "recurring": true}}),
    );
    let n = |tx: &str, at: &str, n: i64| event("c1", tx, "api", at, json!({"n": n}));
    let before_everything = time::now() - TimeDelta::milliseconds(1);
    let first = vec![
        n("a", "2026-03-02T10:00:00Z", 1),
        n("b", "2026-03-02T11:00:00Z", 2),
        n("c", "2026-03-03T10:00:00Z", 3),
    ];
    paired.append(org, first.clone(), false, "first batch").await;
    let first_end = paired.append_ends[0];
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut second = vec![n("d", "2026-03-02T09:00:00Z", 10), n("e", "2026-03-04T10:00:00Z", 20)];
    second.push(first[0].clone());
    second.push(n("b", "2026-03-02T11:00:00Z", 99));
    paired.append(org, second, false, "second batch").await;
    let second_end = paired.append_ends[1];

    let between = first_end + TimeDelta::milliseconds(2);
    let base = usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let as_of = |t: Option<DateTime<Utc>>| UsageQuery { as_of: t, ..base.clone() };
    let cases: [(Option<DateTime<Utc>>, i64, i64); 5] = [
        (Some(before_everything), 0, 0),
        (Some(first_end), 6, 3),
        (Some(between), 6, 3),
        (Some(second_end), 36, 20),
        (None, 36, 20),
    ];
    for (t, expected_sum, expected_latest) in cases {
        let what = format!("as_of {t:?}");
        let result = paired.assert_usage(org, "c1", &sum, &as_of(t), &what).await;
        assert_eq!(result.windows[0].total, Some(expected_sum.into()), "{what}: sum");
        let result = paired.assert_usage(org, "c1", &latest, &as_of(t), &what).await;
        let expected_latest = (expected_sum > 0).then(|| expected_latest.into());
        assert_eq!(result.windows[0].total, expected_latest, "{what}: latest");
        let days = UsageQuery { window: WindowSize::Day, ..as_of(t) };
        paired.assert_usage(org, "c1", &level, &days, &what).await;
        let customers = vec!["c1".to_owned(), "c2".to_owned()];
        let all = store.usage_of_customers(org, &customers, &sum, &as_of(t)).await;
        let all = all.expect("usage_of_customers");
        assert_eq!(all[0].windows[0].total, Some(expected_sum.into()), "{what}: of customers");
    }
}

pub async fn usage_of_customers_answers_in_the_order_given(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (org, noise) = (OrganizationId::new(), OrganizationId::new());
    append_fixture(&mut paired, org, noise).await;
    let extra = event("c3", "only", "api", "2026-03-26T12:00:00Z", json!({"n": 5, "user": "u9"}));
    paired.append(org, vec![extra], false, "a third customer").await;

    // A customer listed twice is answered twice (a caller merging lists must not get a
    // silent zero for the second mention).
    let customers: Vec<String> = ["c3", "c1", "c9", "c2", "c1"].map(str::to_owned).to_vec();
    for spec in metrics() {
        for query in queries(&spec) {
            let answered = store.usage_of_customers(org, &customers, &spec, &query).await;
            let answered = answered.unwrap_or_else(|e| panic!("{}: {e}", spec.code));
            assert_eq!(answered.len(), customers.len(), "{}: one result per customer", spec.code);
            for (customer, result) in customers.iter().zip(&answered) {
                let what = format!("{} for {customer} among several", spec.code);
                let alone = paired.assert_usage(org, customer, &spec, &query, &what).await;
                assert_eq!(result, &alone, "{what}: the same as asked alone");
            }
        }
    }
    let count = metric("count", json!({"aggregation": {"type": "count"}}));
    let query = usage_query("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let answered = store.usage_of_customers(org, &customers, &count, &query).await;
    let totals: Vec<String> = answered
        .expect("usage_of_customers")
        .iter()
        .map(|r| r.windows[0].total.map(|t| t.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(totals, ["1", "68", "0", "22", "68"], "in the order given");
    let none = store.usage_of_customers(org, &[], &count, &query).await;
    assert_eq!(none.expect("no customers"), [], "no customers, no results");
}

pub async fn usage_errors_match_the_reference(store: &dyn EventStore) {
    let mut paired = Paired::new(store);
    let (org, noise) = (OrganizationId::new(), OrganizationId::new());
    append_fixture(&mut paired, org, noise).await;
    let grouped = metrics().into_iter().find(|m| m.code == "by_project").expect("by_project");
    let base = usage_query("2026-03-22T00:00:00Z", "2026-03-31T00:00:00Z");
    let cases: Vec<(&str, &MetricSpec, UsageQuery, &str)> = vec![
        ("empty period", &grouped, UsageQuery { to: base.from, ..base.clone() }, "invalid_period"),
        (
            "reversed period",
            &grouped,
            UsageQuery { from: base.to, to: base.from, ..base.clone() },
            "invalid_period",
        ),
        (
            "unknown group key",
            &grouped,
            UsageQuery { group_by: vec!["region".to_owned()], ..base.clone() },
            "unknown_group_key",
        ),
        (
            "too many groups",
            &grouped,
            UsageQuery { group_by: vec!["project".to_owned()], group_limit: 2, ..base.clone() },
            "too_many_groups",
        ),
        (
            "too many windows",
            &grouped,
            UsageQuery {
                window: WindowSize::Minute,
                to: at("2026-06-01T00:00:00Z"),
                ..base.clone()
            },
            "too_many_windows",
        ),
        // custom_sql is not here: the reference engine has no SQL; SQL metrics are checked
        // against odometer-embedded's own reference (`tests/sql_metrics.rs`).
    ];
    for (what, spec, query, code) in cases {
        let expected = compute_usage(spec, &paired.events_of(org, "c1"), &query);
        assert_eq!(expected.as_ref().err().map(UsageError::code), Some(code), "{what}: reference");
        let actual = store.usage(org, "c1", spec, &query).await;
        if let Some(difference) = usage_difference(&actual, &expected) {
            panic!("{what}: {difference}");
        }
        let customers = vec!["c1".to_owned(), "c2".to_owned()];
        match store.usage_of_customers(org, &customers, spec, &query).await {
            Err(UsageQueryError::Usage(e)) => assert_eq!(e.code(), code, "{what}: of customers"),
            other => panic!("{what}: usage_of_customers answers {other:?}"),
        }
    }
}
