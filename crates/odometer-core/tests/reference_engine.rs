//! The reference usage engine against the semantics (semantics.md sections 1, 3, 4 and 5): each
//! test is named after the rule it pins and works its numbers out by hand in comments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use chrono::{DateTime, Datelike, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use odometer_core::engine::{compute_usage, finalize, windows, MAX_WINDOWS};
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{
    GroupKey, Segment, UsageError, UsageQuery, UsageResult, WindowSize, WindowUsage,
    DEFAULT_GROUP_LIMIT,
};
use odometer_core::MetricSpec;
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An instant from RFC 3339 text.
fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

/// An event of code `api` at `at` (RFC 3339) with `properties`; [`log`] numbers it.
fn ev(at: &str, properties: Value) -> StoredEvent {
    ev_code("api", at, properties)
}

fn ev_code(code: &str, at: &str, properties: Value) -> StoredEvent {
    event_at(code, t(at), properties)
}

fn event_at(code: &str, at: DateTime<Utc>, properties: Value) -> StoredEvent {
    StoredEvent {
        event: Event {
            transaction_id: String::new(),
            code: code.to_owned(),
            customer: "cus_1".to_owned(),
            timestamp: at,
            properties: properties.as_object().cloned().unwrap(),
        },
        sequence: 0,
        ingested_at: at,
    }
}

/// The same event, ingested at `at` instead of at its timestamp.
fn ingested(mut event: StoredEvent, at: &str) -> StoredEvent {
    event.ingested_at = t(at);
    event
}

/// Numbers the events 1, 2, 3... in the order given (their ingestion order).
fn log(events: Vec<StoredEvent>) -> Vec<StoredEvent> {
    events
        .into_iter()
        .zip(1u64..)
        .map(|(mut e, sequence)| {
            e.sequence = sequence;
            e.event.transaction_id = format!("tx_{sequence}");
            e
        })
        .collect()
}

/// A metric reading event code `api`, with `definition`'s members (at least `aggregation`).
fn metric(definition: Value) -> MetricSpec {
    let mut input = json!({"code": "api", "name": "API"});
    for (k, v) in definition.as_object().unwrap() {
        input[k] = v.clone();
    }
    parse_metric_spec(&input).expect("a valid metric")
}

fn agg(kind: &str, field: &str) -> MetricSpec {
    metric(json!({"aggregation": {"type": kind, "field": field}}))
}

fn count_metric() -> MetricSpec {
    metric(json!({"aggregation": {"type": "count"}}))
}

/// One window over `[from, to)` in UTC, no grouping.
fn query(from: &str, to: &str) -> UsageQuery {
    UsageQuery {
        from: t(from),
        to: t(to),
        window: WindowSize::None,
        timezone: Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

fn days(from: &str, to: &str) -> UsageQuery {
    UsageQuery { window: WindowSize::Day, ..query(from, to) }
}

const DAY: (&str, &str) = ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");

fn run(spec: &MetricSpec, events: &[StoredEvent], q: &UsageQuery) -> UsageResult {
    compute_usage(spec, events, q).unwrap()
}

/// Each window's total as text.
fn totals(result: &UsageResult) -> Vec<Option<String>> {
    result.windows.iter().map(|w| w.total.map(|v| v.to_string())).collect()
}

/// The total of a one-window query over [`DAY`].
fn day_total(spec: &MetricSpec, events: &[StoredEvent]) -> Option<String> {
    let result = run(spec, events, &query(DAY.0, DAY.1));
    assert_eq!(result.windows.len(), 1);
    totals(&result).remove(0)
}

/// A group's key as short text: the segment's values (`eu|pro`, `other`), then each group_by
/// value (`-` when absent), joined by `/`.
fn label(key: &GroupKey) -> String {
    let mut parts = Vec::new();
    match &key.segment {
        Segment::None => {}
        Segment::Matched(values) => parts.push(values.join("|")),
        Segment::Other => parts.push("other".to_owned()),
    }
    parts.extend(key.group_by.iter().map(|v| v.clone().unwrap_or_else(|| "-".to_owned())));
    parts.join("/")
}

/// `(label, value, events_count, events_skipped)` of each group of a window.
fn rows(window: &WindowUsage) -> Vec<(String, Option<String>, u64, u64)> {
    window
        .groups
        .iter()
        .map(|g| (label(&g.key), g.value.map(|v| v.to_string()), g.events_count, g.events_skipped))
        .collect()
}

fn row(
    label: &str,
    value: Option<&str>,
    count: u64,
    skipped: u64,
) -> (String, Option<String>, u64, u64) {
    (label.to_owned(), value.map(str::to_owned), count, skipped)
}

fn hours(window: &(DateTime<Utc>, DateTime<Utc>)) -> i64 {
    (window.1 - window.0).num_hours()
}

fn cuts(pairs: &[(&str, &str)]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    pairs.iter().map(|(a, b)| (t(a), t(b))).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Time
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_1_3_period_is_half_open() {
    let events = log(vec![
        ev("2025-12-31T23:59:59.999999Z", json!({})), // before `from`: out
        ev("2026-01-01T00:00:00Z", json!({})),        // at `from`: in
        ev("2026-01-01T12:00:00Z", json!({})),        // in
        ev("2026-01-01T23:59:59.999999Z", json!({})), // the last microsecond: in
        ev("2026-01-02T00:00:00Z", json!({})),        // at `to`: the next period's
    ]);
    let spec = count_metric();
    let result = run(&spec, &events, &query(DAY.0, DAY.1));
    assert_eq!(totals(&result), [some("3")]);
    assert_eq!(rows(&result.windows[0]), [row("", Some("3"), 3, 0)]);
    let next = run(&spec, &events, &query("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"));
    assert_eq!(totals(&next), [some("1")]);
    // Day windows split the same way: 3 on the 1st, 1 on the 2nd.
    let both = run(&spec, &events, &days("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"));
    assert_eq!(totals(&both), [some("3"), some("1")]);
}

#[test]
fn sem_1_4_day_windows_across_dst_in_europe_paris() {
    let paris = chrono_tz::Europe::Paris;
    // Spring: on 2026-03-29 clocks go from 02:00 CET (+1) to 03:00 CEST (+2) at 01:00Z, so
    // that local day lasts 23 hours; the days around it start at 23:00Z and 22:00Z.
    let spring = windows(
        t("2026-03-28T00:00:00+01:00"),
        t("2026-03-31T00:00:00+02:00"),
        WindowSize::Day,
        paris,
    )
    .unwrap();
    assert_eq!(
        spring,
        cuts(&[
            ("2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z"),
            ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
            ("2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z"),
        ])
    );
    assert_eq!(spring.iter().map(hours).collect::<Vec<_>>(), [24, 23, 24]);

    // Autumn: on 2026-10-25 clocks go back from 03:00 CEST to 02:00 CET at 01:00Z: 25 hours.
    let autumn = windows(
        t("2026-10-24T00:00:00+02:00"),
        t("2026-10-27T00:00:00+01:00"),
        WindowSize::Day,
        paris,
    )
    .unwrap();
    assert_eq!(
        autumn,
        cuts(&[
            ("2026-10-23T22:00:00Z", "2026-10-24T22:00:00Z"),
            ("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
            ("2026-10-25T23:00:00Z", "2026-10-26T23:00:00Z"),
        ])
    );
    assert_eq!(autumn.iter().map(hours).collect::<Vec<_>>(), [24, 25, 24]);

    // Events land in their local day: 23:30Z on the 28th is 00:30 on the 29th in Paris (+1);
    // 01:30Z on the 29th is 03:30 CEST and 21:30Z is 23:30 CEST, both still the 29th; 22:30Z
    // is 00:30 on the 30th. So the 28th, 29th and 30th count 0, 3 and 1.
    let events = log(vec![
        ev("2026-03-28T23:30:00Z", json!({})),
        ev("2026-03-29T01:30:00Z", json!({})),
        ev("2026-03-29T21:30:00Z", json!({})),
        ev("2026-03-29T22:30:00Z", json!({})),
    ]);
    let q = UsageQuery { timezone: paris, ..days("2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z") };
    assert_eq!(totals(&run(&count_metric(), &events, &q)), [some("0"), some("3"), some("1")]);
}

#[test]
fn sem_1_4_day_windows_across_dst_in_america_new_york() {
    let ny = chrono_tz::America::New_York;
    // 2026-03-08: 02:00 EST (-5) becomes 03:00 EDT (-4) at 07:00Z: a 23-hour day.
    let spring = windows(
        t("2026-03-07T00:00:00-05:00"),
        t("2026-03-09T00:00:00-04:00"),
        WindowSize::Day,
        ny,
    )
    .unwrap();
    assert_eq!(
        spring,
        cuts(&[
            ("2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z"),
            ("2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),
        ])
    );
    assert_eq!(spring.iter().map(hours).collect::<Vec<_>>(), [24, 23]);
    // 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00Z: a 25-hour day.
    let autumn = windows(
        t("2026-11-01T00:00:00-04:00"),
        t("2026-11-02T00:00:00-05:00"),
        WindowSize::Day,
        ny,
    )
    .unwrap();
    assert_eq!(autumn, cuts(&[("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z")]));
    assert_eq!(hours(&autumn[0]), 25);
}

#[test]
fn sem_1_4_hour_windows_in_asia_kolkata() {
    // India is UTC+05:30 all year: 10:00Z is 15:30 local, so hours start at :30 UTC and the
    // period [10:00Z, 13:00Z) is cut into 30 min + 1 h + 1 h + 30 min.
    let kolkata = chrono_tz::Asia::Kolkata;
    let cut =
        windows(t("2026-01-01T10:00:00Z"), t("2026-01-01T13:00:00Z"), WindowSize::Hour, kolkata)
            .unwrap();
    assert_eq!(
        cut,
        cuts(&[
            ("2026-01-01T10:00:00Z", "2026-01-01T10:30:00Z"),
            ("2026-01-01T10:30:00Z", "2026-01-01T11:30:00Z"),
            ("2026-01-01T11:30:00Z", "2026-01-01T12:30:00Z"),
            ("2026-01-01T12:30:00Z", "2026-01-01T13:00:00Z"),
        ])
    );
    // Local days start at 18:30Z the day before.
    let cut =
        windows(t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z"), WindowSize::Day, kolkata)
            .unwrap();
    assert_eq!(
        cut,
        cuts(&[
            ("2026-01-01T00:00:00Z", "2026-01-01T18:30:00Z"),
            ("2026-01-01T18:30:00Z", "2026-01-02T00:00:00Z"),
        ])
    );
    // Nepal is UTC+05:45: hours start at :15 UTC.
    let cut = windows(
        t("2026-01-01T10:00:00Z"),
        t("2026-01-01T11:00:00Z"),
        WindowSize::Hour,
        chrono_tz::Asia::Kathmandu,
    )
    .unwrap();
    assert_eq!(
        cut,
        cuts(&[
            ("2026-01-01T10:00:00Z", "2026-01-01T10:15:00Z"),
            ("2026-01-01T10:15:00Z", "2026-01-01T11:00:00Z"),
        ])
    );
}

#[test]
fn sem_1_4_hour_and_minute_windows_across_dst() {
    let paris = chrono_tz::Europe::Paris;
    // Spring, 2026-03-29: 00:00Z is 01:00 CET; at 01:00Z the clock jumps to 03:00 CEST. The
    // hour 02:00 does not exist, so the hours are 01:00 CET and 03:00 CEST, one hour each.
    let spring =
        windows(t("2026-03-29T00:00:00Z"), t("2026-03-29T02:00:00Z"), WindowSize::Hour, paris)
            .unwrap();
    assert_eq!(
        spring,
        cuts(&[
            ("2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"),
            ("2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"),
        ])
    );
    // Autumn, 2026-10-25: 23:00Z is 01:00 CEST, 00:00Z 02:00 CEST; at 01:00Z the clock goes
    // back to 02:00 CET, then 03:00 CET at 02:00Z. The hour 02:00 happens twice: two windows
    // of one hour, not one of two.
    let autumn =
        windows(t("2026-10-24T23:00:00Z"), t("2026-10-25T03:00:00Z"), WindowSize::Hour, paris)
            .unwrap();
    assert_eq!(
        autumn,
        cuts(&[
            ("2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z"),
            ("2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z"),
            ("2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"),
            ("2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"),
        ])
    );
    // Minute windows stay one minute long through the repeat: 02:58, 02:59 CEST, then 02:00,
    // 02:01 CET.
    let minutes =
        windows(t("2026-10-25T00:58:00Z"), t("2026-10-25T01:02:00Z"), WindowSize::Minute, paris)
            .unwrap();
    assert_eq!(minutes.len(), 4);
    assert!(minutes.iter().all(|(a, b)| *b - *a == TimeDelta::minutes(1)));

    // Lord Howe Island shifts by 30 minutes: on 2026-04-05 02:00 (+11) becomes 01:30 (+10:30)
    // at 15:00Z. 13:00Z is 00:00 +11; the hour 01:00 +11 ends at the shift (15:00Z, showing
    // 01:30 +10:30), whose half hour runs to 02:00 +10:30 = 15:30Z; then whole hours again.
    let lord_howe = windows(
        t("2026-04-04T13:00:00Z"),
        t("2026-04-04T17:00:00Z"),
        WindowSize::Hour,
        chrono_tz::Australia::Lord_Howe,
    )
    .unwrap();
    assert_eq!(
        lord_howe,
        cuts(&[
            ("2026-04-04T13:00:00Z", "2026-04-04T14:00:00Z"),
            ("2026-04-04T14:00:00Z", "2026-04-04T15:00:00Z"),
            ("2026-04-04T15:00:00Z", "2026-04-04T15:30:00Z"),
            ("2026-04-04T15:30:00Z", "2026-04-04T16:30:00Z"),
            ("2026-04-04T16:30:00Z", "2026-04-04T17:00:00Z"),
        ])
    );
}

#[test]
fn sem_1_4_day_window_starts_when_a_skipped_midnight_resumes() {
    // Sao Paulo started DST on 2018-11-04 at midnight: 00:00 -03 became 01:00 -02 at 03:00Z.
    // That day has no midnight; it starts at 03:00Z (01:00 local) and lasts 23 hours, to
    // 00:00 -02 on the 5th = 02:00Z.
    let cut = windows(
        t("2018-11-03T00:00:00-03:00"),
        t("2018-11-06T00:00:00-02:00"),
        WindowSize::Day,
        chrono_tz::America::Sao_Paulo,
    )
    .unwrap();
    assert_eq!(
        cut,
        cuts(&[
            ("2018-11-03T03:00:00Z", "2018-11-04T03:00:00Z"),
            ("2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z"),
            ("2018-11-05T02:00:00Z", "2018-11-06T02:00:00Z"),
        ])
    );
    assert_eq!(cut.iter().map(hours).collect::<Vec<_>>(), [24, 23, 24]);
}

#[test]
fn sem_1_4_month_windows_in_a_zone() {
    let paris = chrono_tz::Europe::Paris;
    // From 15 January to 10 April local: clipped at both ends; April starts in CEST (+2), so
    // at 22:00Z on 31 March, the others at 23:00Z.
    let cut = windows(
        t("2026-01-15T00:00:00+01:00"),
        t("2026-04-10T00:00:00+02:00"),
        WindowSize::Month,
        paris,
    )
    .unwrap();
    assert_eq!(
        cut,
        cuts(&[
            ("2026-01-14T23:00:00Z", "2026-01-31T23:00:00Z"),
            ("2026-01-31T23:00:00Z", "2026-02-28T23:00:00Z"),
            ("2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z"),
            ("2026-03-31T22:00:00Z", "2026-04-09T22:00:00Z"),
        ])
    );
    // 23:30Z on 31 January is 00:30 on 1 February in Paris: it counts for February; 22:30Z on
    // 31 March is 00:30 CEST on 1 April.
    let events = log(vec![
        ev("2026-01-20T12:00:00Z", json!({})),
        ev("2026-01-31T23:30:00Z", json!({})),
        ev("2026-03-31T22:30:00Z", json!({})),
    ]);
    let q = UsageQuery {
        window: WindowSize::Month,
        timezone: paris,
        ..query("2026-01-14T23:00:00Z", "2026-04-09T22:00:00Z")
    };
    assert_eq!(
        totals(&run(&count_metric(), &events, &q)),
        [some("1"), some("1"), some("0"), some("1")]
    );
    // New York months start at 05:00Z in winter and 04:00Z in summer.
    let ny = windows(
        t("2026-02-01T05:00:00Z"),
        t("2026-05-01T04:00:00Z"),
        WindowSize::Month,
        chrono_tz::America::New_York,
    )
    .unwrap();
    assert_eq!(
        ny,
        cuts(&[
            ("2026-02-01T05:00:00Z", "2026-03-01T05:00:00Z"),
            ("2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z"),
            ("2026-04-01T04:00:00Z", "2026-05-01T04:00:00Z"),
        ])
    );
}

#[test]
fn sem_1_4_window_limit_and_empty_period() {
    let from = t("2026-01-01T00:00:00Z");
    // 50,000 minutes (34 days 17 h 20 min) are exactly the limit; one more minute is not.
    let at_limit = from + TimeDelta::minutes(50_000);
    assert_eq!(windows(from, at_limit, WindowSize::Minute, Tz::UTC).unwrap().len(), MAX_WINDOWS);
    let past = at_limit + TimeDelta::minutes(1);
    assert_eq!(
        windows(from, past, WindowSize::Minute, Tz::UTC),
        Err(UsageError::TooManyWindows { limit: 50_000 })
    );
    assert_eq!(windows(from, past, WindowSize::Hour, Tz::UTC).unwrap().len(), 834);
    // An empty or reversed period is refused, whatever the window.
    for size in WindowSize::ALL {
        assert_eq!(windows(from, from, size, Tz::UTC), Err(UsageError::EmptyPeriod));
        assert_eq!(windows(past, from, size, Tz::UTC), Err(UsageError::EmptyPeriod));
    }
    let err = compute_usage(&count_metric(), &[], &query(DAY.1, DAY.0)).unwrap_err();
    assert_eq!(err.code(), "invalid_period");
    let q = UsageQuery { window: WindowSize::Minute, to: past, ..query(DAY.0, DAY.1) };
    assert_eq!(compute_usage(&count_metric(), &[], &q).unwrap_err().code(), "too_many_windows");
}

#[test]
fn sem_1_5_as_of_hides_later_ingested_events() {
    // 5 at 10:00 (ingested at once) and 7 at 09:00 arriving late, ingested at 12:00.
    let events = log(vec![
        ev("2026-01-01T10:00:00Z", json!({"n": 5})),
        ingested(ev("2026-01-01T09:00:00Z", json!({"n": 7})), "2026-01-01T12:00:00Z"),
    ]);
    let spec = agg("sum", "n");
    let as_of = |at: Option<&str>| {
        let q = UsageQuery { as_of: at.map(t), ..query(DAY.0, DAY.1) };
        totals(&run(&spec, &events, &q)).remove(0)
    };
    assert_eq!(as_of(Some("2026-01-01T11:00:00Z")), some("5"));
    // Ingested at or before `as_of`: inclusive, 5 + 7 = 12.
    assert_eq!(as_of(Some("2026-01-01T12:00:00Z")), some("12"));
    assert_eq!(as_of(None), some("12"));
    // Before anything was ingested: no events, a sum of 0.
    assert_eq!(as_of(Some("2026-01-01T09:59:59Z")), some("0"));
}

// ---------------------------------------------------------------------------------------------
// 4. Aggregation
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_4_1_count() {
    // Three `api` events count; two of another code do not; properties do not matter.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({})),
        ev_code("other", "2026-01-01T02:00:00Z", json!({})),
        ev("2026-01-01T03:00:00Z", json!({"n": "not a number"})),
        ev_code("other", "2026-01-01T04:00:00Z", json!({})),
        ev("2026-01-01T05:00:00Z", json!({"n": null})),
    ]);
    let result = run(&count_metric(), &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("3"), 3, 0)]);
    // A metric may read another event code than its own code.
    let other = metric(json!({"event_code": "other", "aggregation": {"type": "count"}}));
    assert_eq!(day_total(&other, &events), some("2"));
}

#[test]
fn sem_4_2_sum_exact_decimals() {
    // 0.1 + 0.2 = 0.3 exactly (a float would say 0.30000000000000004); "1e3" = 1000;
    // "-12" = -12; 2.50 = 2.5: 0.3 + 1000 - 12 + 2.5 = 990.8. Four events lack a decimal
    // value (absent, null, "abc", true) and are skipped.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": 0.1})),
        ev("2026-01-01T02:00:00Z", json!({"n": 0.2})),
        ev("2026-01-01T03:00:00Z", json!({"n": "1e3"})),
        ev("2026-01-01T04:00:00Z", json!({"n": "-12"})),
        ev("2026-01-01T05:00:00Z", json!({"n": 2.50})),
        ev("2026-01-01T06:00:00Z", json!({})),
        ev("2026-01-01T07:00:00Z", json!({"n": null})),
        ev("2026-01-01T08:00:00Z", json!({"n": "abc"})),
        ev("2026-01-01T09:00:00Z", json!({"n": true})),
    ]);
    let result = run(&agg("sum", "n"), &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("990.8"), 5, 4)]);
    assert_eq!(totals(&result), [some("990.8")]);

    // 28 significant digits survive: 12345678901234567890.12345678 + 0.00000001
    // = 12345678901234567890.12345679; a dotted path reads a nested value.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"usage": {"n": "12345678901234567890.12345678"}})),
        ev("2026-01-01T02:00:00Z", json!({"usage": {"n": "0.00000001"}})),
    ]);
    assert_eq!(day_total(&agg("sum", "usage.n"), &events), some("12345678901234567890.12345679"));
}

#[test]
fn sem_4_2_sum_overflow_is_an_error_not_a_wrap() {
    // The largest decimal is 79228162514264337593543950335; one more does not fit.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": "79228162514264337593543950335"})),
        ev("2026-01-01T02:00:00Z", json!({"n": 1})),
    ]);
    let err = compute_usage(&agg("sum", "n"), &events, &query(DAY.0, DAY.1)).unwrap_err();
    assert_eq!(err, UsageError::Overflow);
    assert_eq!(err.code(), "overflow");
}

#[test]
fn sem_4_3_min_max_mean_and_empty_is_null() {
    // Day 1: 4, -2.5, 10: min -2.5, max 10, mean 11.5 / 3 = 3.8333... to 28 significant digits
    // (1 integer digit + 27 decimals; the next 3 rounds down).
    // Day 2: one event without the value: the group shows, skipped, with no value (null).
    // Day 3: no event: no group, total null.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": 4})),
        ev("2026-01-01T02:00:00Z", json!({"n": -2.5})),
        ev("2026-01-01T03:00:00Z", json!({"n": "10"})),
        ev("2026-01-02T03:00:00Z", json!({"other": 1})),
    ]);
    let q = days("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z");
    for (kind, day1) in [("min", "-2.5"), ("max", "10"), ("mean", "3.833333333333333333333333333")]
    {
        let result = run(&agg(kind, "n"), &events, &q);
        assert_eq!(totals(&result), [some(day1), None, None], "{kind}");
        assert_eq!(rows(&result.windows[0]), [row("", Some(day1), 3, 0)], "{kind}");
        assert_eq!(rows(&result.windows[1]), [row("", None, 0, 1)], "{kind}");
        assert!(result.windows[2].groups.is_empty(), "{kind}");
    }
    // 1, 2, 2: mean 5 / 3 = 1.666...67, the 28th significant digit rounded half away from zero.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": 1})),
        ev("2026-01-01T02:00:00Z", json!({"n": 2})),
        ev("2026-01-01T03:00:00Z", json!({"n": 2})),
    ]);
    assert_eq!(day_total(&agg("mean", "n"), &events), some("1.666666666666666666666666667"));
}

#[test]
fn sem_4_4_latest_tie_break_by_sequence() {
    // 1 at 10:00 (seq 1), 5 at 12:00 (seq 2), 3 at 12:00 (seq 3), 9 at 11:00 (seq 4, late).
    // The greatest timestamp is 12:00, shared by seq 2 and 3: the greater sequence wins: 3.
    // The late event has the greatest sequence but an earlier timestamp: it does not win.
    let events = log(vec![
        ev("2026-01-01T10:00:00Z", json!({"n": 1})),
        ev("2026-01-01T12:00:00Z", json!({"n": 5})),
        ev("2026-01-01T12:00:00Z", json!({"n": 3})),
        ingested(ev("2026-01-01T11:00:00Z", json!({"n": 9})), "2026-01-01T13:00:00Z"),
    ]);
    let spec = agg("latest", "n");
    assert_eq!(day_total(&spec, &events), some("3"));
    // The order events are handed over in does not matter.
    let reversed: Vec<StoredEvent> = events.iter().rev().cloned().collect();
    assert_eq!(day_total(&spec, &reversed), some("3"));
}

#[test]
fn sem_4_4_latest_negative_stays_negative() {
    // 5 then -3: latest is -3 (not 3, not clamped to 0).
    let events = log(vec![
        ev("2026-01-01T10:00:00Z", json!({"n": 5})),
        ev("2026-01-01T11:00:00Z", json!({"n": -3})),
    ]);
    assert_eq!(day_total(&agg("latest", "n"), &events), some("-3"));
    // -2.5 rounded half away from zero is -3.
    let events = log(vec![ev("2026-01-01T10:00:00Z", json!({"n": "-2.5"}))]);
    let spec = metric(json!({
        "aggregation": {"type": "latest", "field": "n"},
        "rounding": {"function": "round", "precision": 0}
    }));
    assert_eq!(day_total(&spec, &events), some("-3"));
}

#[test]
fn sem_4_5_unique_count_numbers_compare_by_value() {
    // 1, 1.0, "1", "1.00", "1e0" are one value; "a" and "A" are two; true and "true" are one:
    // {1, a, A, true} = 4. null and an object have no value: skipped.
    let values = [
        json!(1),
        json!(1.0),
        json!("1"),
        json!("1.00"),
        json!("1e0"),
        json!("a"),
        json!("A"),
        json!("a"),
        json!(true),
        json!("true"),
        json!(null),
        json!({"id": 1}),
    ];
    let events =
        log(values.into_iter().map(|v| ev("2026-01-01T10:00:00Z", json!({"user": v}))).collect());
    let result = run(&agg("unique_count", "user"), &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("4"), 10, 2)]);
}

#[test]
fn sem_4_5_unique_count_add_remove_sequence() {
    let op = |at: &str, user: &str, operation: Option<&str>| match operation {
        Some(o) => ev(at, json!({"user": user, "operation_type": o})),
        None => ev(at, json!({"user": user})),
    };
    let events = log(vec![
        op("2026-01-01T10:00:00Z", "u1", Some("add")),
        op("2026-01-01T10:00:00Z", "u2", None), // no operation_type: add
        op("2026-01-01T11:00:00Z", "u1", Some("remove")),
        op("2026-01-01T12:00:00Z", "u2", Some("remove")),
        op("2026-01-01T12:00:00Z", "u2", Some("add")), // same timestamp, later sequence: wins
        op("2026-01-01T13:00:00Z", "u3", Some("add")),
        op("2026-01-01T13:00:00Z", "u3", Some("add")), // a repeat changes nothing
        op("2026-01-01T14:00:00Z", "u3", Some("delete")), // not an operation: skipped
        // Ingested last (sequence 9), but at 10:30 it comes before u1's removal at 11:00.
        op("2026-01-01T10:30:00Z", "u1", Some("add")),
    ]);
    // u1: add 10:00, add 10:30, remove 11:00 -> removed; u2: add, remove, add -> added;
    // u3: add, add -> added. Count 2; 8 events counted, 1 skipped.
    let spec = agg("unique_count", "user");
    let result = run(&spec, &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("2"), 8, 1)]);
    // Operations are ordered by (timestamp, sequence), not by the order they are handed over.
    let reversed: Vec<StoredEvent> = events.iter().rev().cloned().collect();
    assert_eq!(run(&spec, &reversed, &query(DAY.0, DAY.1)), result);
}

#[test]
fn sem_4_5_unique_count_recurring() {
    // 31 Dec (before the period): +u0. 2 Jan: +u1, +u2. 3 Jan: -u1, +u3. 4 Jan: nothing.
    let events = log(vec![
        ev("2025-12-31T10:00:00Z", json!({"user": "u0"})),
        ev("2026-01-02T10:00:00Z", json!({"user": "u1"})),
        ev("2026-01-02T11:00:00Z", json!({"user": "u2"})),
        ev("2026-01-03T10:00:00Z", json!({"user": "u1", "operation_type": "remove"})),
        ev("2026-01-03T11:00:00Z", json!({"user": "u3"})),
    ]);
    let q = days("2026-01-02T00:00:00Z", "2026-01-05T00:00:00Z");
    // Recurring: 2 Jan {u0, u1, u2} = 3; 3 Jan {u0, u2, u3} = 3; 4 Jan carried {u0, u2, u3} = 3
    // with no event of its own (the group still shows, with a count of 0 events).
    let recurring = metric(
        json!({"aggregation": {"type": "unique_count", "field": "user", "recurring": true}}),
    );
    let result = run(&recurring, &events, &q);
    assert_eq!(totals(&result), [some("3"), some("3"), some("3")]);
    assert_eq!(rows(&result.windows[0]), [row("", Some("3"), 2, 0)]);
    assert_eq!(rows(&result.windows[1]), [row("", Some("3"), 2, 0)]);
    assert_eq!(rows(&result.windows[2]), [row("", Some("3"), 0, 0)]);
    // Not recurring: each day alone. 2 Jan {u1, u2} = 2; 3 Jan u1 removed, u3 added = 1;
    // 4 Jan nothing: 0 and no groups.
    let result = run(&agg("unique_count", "user"), &events, &q);
    assert_eq!(totals(&result), [some("2"), some("1"), some("0")]);
    assert!(result.windows[2].groups.is_empty());
}

#[test]
fn sem_4_6_weighted_sum() {
    // A 24-hour day: +10 at 06:00, -6 at 18:00. Level 0 for 6 h, 10 for 12 h, 4 for 6 h:
    // (0*6 + 10*12 + 4*6) / 24 = 144 / 24 = 6.
    let events = log(vec![
        ev("2026-01-01T06:00:00Z", json!({"n": 10})),
        ev("2026-01-01T18:00:00Z", json!({"n": -6})),
    ]);
    let spec = agg("weighted_sum", "n");
    assert_eq!(day_total(&spec, &events), some("6"));
    // A change at the window's start counts for the whole window: +2 at 00:00 too gives
    // (2*6 + 12*12 + 6*6) / 24 = 192 / 24 = 8.
    let mut more = events.clone();
    more.push(ev("2026-01-01T00:00:00Z", json!({"n": 2})));
    assert_eq!(day_total(&spec, &log(more)), some("8"));
    // Not recurring: the next day starts again at 0 and, without events, has no groups.
    let result = run(&spec, &events, &days("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"));
    assert_eq!(totals(&result), [some("6"), some("0")]);
    assert!(result.windows[1].groups.is_empty());
    // Exact to the microsecond: over 3 µs, +1 after 1 µs: (0*1 + 1*2) / 3 = 0.666...67.
    let events = log(vec![ev("2026-01-01T00:00:00.000001Z", json!({"n": 1}))]);
    let result = run(&spec, &events, &query("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000003Z"));
    assert_eq!(totals(&result), [some("0.6666666666666666666666666667")]);
}

#[test]
fn sem_4_6_weighted_sum_recurring() {
    // +5 on 31 Dec (before the period), +10 at 12:00 on 2 Jan, -12 at 18:00 on 3 Jan.
    // 2 Jan: level 5 for 12 h, 15 for 12 h: (5*12 + 15*12) / 24 = 240 / 24 = 10.
    // 3 Jan: 15 for 18 h, 3 for 6 h: (15*18 + 3*6) / 24 = 288 / 24 = 12.
    // 4 Jan: 3 all day: 3, carried, with no event of its own.
    let events = log(vec![
        ev("2025-12-31T08:00:00Z", json!({"n": 5})),
        ev("2026-01-02T12:00:00Z", json!({"n": 10})),
        ev("2026-01-03T18:00:00Z", json!({"n": -12})),
    ]);
    let spec =
        metric(json!({"aggregation": {"type": "weighted_sum", "field": "n", "recurring": true}}));
    let result = run(&spec, &events, &days("2026-01-02T00:00:00Z", "2026-01-05T00:00:00Z"));
    assert_eq!(totals(&result), [some("10"), some("12"), some("3")]);
    assert_eq!(rows(&result.windows[2]), [row("", Some("3"), 0, 0)]);
    // A 23-hour day in Paris (29 March 2026, from 23:00Z to 22:00Z) with level 4 carried and
    // +19 at 10:00Z: (4*11 + 23*12) / 23 = 320 / 23 = 13.91304347826086956521739130 to 28
    // significant digits, written without its trailing zero.
    let events = log(vec![
        ev("2026-03-01T00:00:00Z", json!({"n": 4})),
        ev("2026-03-29T10:00:00Z", json!({"n": 19})),
    ]);
    let q = UsageQuery {
        timezone: chrono_tz::Europe::Paris,
        ..days("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")
    };
    assert_eq!(totals(&run(&spec, &events, &q)), [some("13.9130434782608695652173913")]);
}

#[test]
fn sem_4_7_custom_sql_is_unsupported_for_now() {
    let spec = metric(json!({
        "aggregation": {"type": "custom_sql", "query": "SELECT count(*) AS value FROM events"}
    }));
    let err = compute_usage(&spec, &[], &query(DAY.0, DAY.1)).unwrap_err();
    assert_eq!(err, UsageError::UnsupportedAggregation);
    assert_eq!(err.code(), "unsupported_aggregation");
}

#[test]
fn sem_4_8_unit_conversion_then_rounding() {
    let converted = |rounding: &str, value: &str| {
        let spec = metric(json!({
            "aggregation": {"type": "sum", "field": "n"},
            "unit_conversion": {"factor": "1000", "rounding": rounding}
        }));
        finalize(&spec, d(value)).unwrap().to_string()
    };
    // value / 1000, then:      none     up    down  nearest  nearest_half  nearest_decile
    let table = [
        ("1250", ["1.25", "2", "1", "1", "1.5", "1.3"]), // .25: half away from zero
        ("1249", ["1.249", "2", "1", "1", "1", "1.2"]),
        ("1750", ["1.75", "2", "1", "2", "2", "1.8"]),
        ("1500", ["1.5", "2", "1", "2", "1.5", "1.5"]),
        ("-1250", ["-1.25", "-1", "-2", "-1", "-1.5", "-1.3"]),
        ("0", ["0", "0", "0", "0", "0", "0"]),
    ];
    let modes = ["none", "up", "down", "nearest", "nearest_half", "nearest_decile"];
    for (value, expected) in table {
        for (mode, want) in modes.iter().zip(expected) {
            assert_eq!(converted(mode, value), want, "{value} / 1000 {mode}");
        }
    }

    let rounded = |function: &str, precision: i32, value: &str| {
        let spec = metric(json!({
            "aggregation": {"type": "sum", "field": "n"},
            "rounding": {"function": function, "precision": precision}
        }));
        finalize(&spec, d(value)).unwrap().to_string()
    };
    let cases = [
        ("round", -2, "1250", "1300"), // 12.5 hundreds: half away from zero
        ("round", -2, "1249.99", "1200"),
        ("round", -2, "-1250", "-1300"),
        ("ceil", -2, "1201", "1300"),
        ("ceil", -2, "-1299", "-1200"),
        ("floor", -1, "-1201", "-1210"),
        ("floor", -1, "1209.9", "1200"),
        ("round", 2, "1.005", "1.01"),
        ("round", 2, "-1.005", "-1.01"),
        ("ceil", 2, "1.001", "1.01"),
        ("floor", 2, "-1.001", "-1.01"),
        ("round", 0, "2.5", "3"),
        ("round", 2, "7", "7"), // nothing to round; results carry no trailing zeros
    ];
    for (function, precision, value, want) in cases {
        assert_eq!(rounded(function, precision, value), want, "{function} {precision} {value}");
    }

    // Order: 1450 / 1000 = 1.45, nearest_decile 1.5, then round to 0 places: 2 (rounding
    // 1.45 directly would give 1).
    let both = metric(json!({
        "aggregation": {"type": "sum", "field": "n"},
        "unit_conversion": {"factor": "1000", "rounding": "nearest_decile"},
        "rounding": {"function": "round", "precision": 0}
    }));
    assert_eq!(finalize(&both, d("1450")).unwrap().to_string(), "2");

    // Nothing is rounded before aggregation: 0.4 + 0.4 + 0.4 = 1.2, nearest 1 (rounding each
    // event first would give 0). Groups and the total are both converted.
    let spec = metric(json!({
        "aggregation": {"type": "sum", "field": "n"},
        "unit_conversion": {"factor": "1", "rounding": "nearest"}
    }));
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": 0.4})),
        ev("2026-01-01T02:00:00Z", json!({"n": 0.4})),
        ev("2026-01-01T03:00:00Z", json!({"n": 0.4})),
    ]);
    let result = run(&spec, &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("1"), 3, 0)]);
    assert_eq!(totals(&result), [some("1")]);
}

#[test]
fn sem_4_9_totals_for_non_additive_aggregations() {
    // eu: n 3, 7 (users u1, u2, at 01:00 and 02:00); us: n 5 (user u2... and u3 at 03:00).
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"region": "eu", "n": 3, "user": "u1"})),
        ev("2026-01-01T02:00:00Z", json!({"region": "eu", "n": 7, "user": "u2"})),
        ev("2026-01-01T03:00:00Z", json!({"region": "us", "n": 5, "user": "u2"})),
        ev("2026-01-01T04:00:00Z", json!({"region": "us", "n": 2, "user": "u3"})),
    ]);
    let grouped = |kind: &str, field: &str| {
        let spec = metric(json!({
            "aggregation": {"type": kind, "field": field},
            "group_by": ["region"]
        }));
        let q = UsageQuery { group_by: vec!["region".to_owned()], ..query(DAY.0, DAY.1) };
        let result = run(&spec, &events, &q);
        let values: Vec<(String, Option<String>)> =
            rows(&result.windows[0]).into_iter().map(|(l, v, _, _)| (l, v)).collect();
        (values, totals(&result).remove(0))
    };
    let pair = |eu: &str, us: &str| vec![("eu".to_owned(), some(eu)), ("us".to_owned(), some(us))];
    // max: eu 7, us 5; total the max of everything, 7 (not 7 + 5 = 12).
    assert_eq!(grouped("max", "n"), (pair("7", "5"), some("7")));
    // min: eu 3, us 2; total 2.
    assert_eq!(grouped("min", "n"), (pair("3", "2"), some("2")));
    // unique_count: eu {u1, u2} 2, us {u2, u3} 2; total {u1, u2, u3} 3 (not 4).
    assert_eq!(grouped("unique_count", "user"), (pair("2", "2"), some("3")));
    // mean: eu (3+7)/2 = 5, us (5+2)/2 = 3.5; total (3+7+5+2)/4 = 4.25 (not 8.5; that the
    // mean of the means is 4.25 too is a coincidence of these numbers, see below).
    assert_eq!(grouped("mean", "n"), (pair("5", "3.5"), some("4.25")));
    // latest: eu 7 (02:00), us 2 (04:00); total the latest of all, 2.
    assert_eq!(grouped("latest", "n"), (pair("7", "2"), some("2")));
    // sum is additive: eu 10, us 7, total 17.
    assert_eq!(grouped("sum", "n"), (pair("10", "7"), some("17")));
    // weighted_sum over the 24 h day: eu 3 from 01:00 and 10 from 02:00:
    // (3*1 + 10*22) / 24 = 223/24 = 9.291666...; us 5 from 03:00, 7 from 04:00:
    // (5*1 + 7*20)/24 = 145/24 = 6.041666...; total level: 3 (1 h), 10 (1 h), 15 (1 h), 17 (20 h):
    // (3 + 10 + 15 + 340) / 24 = 368/24 = 15.333... = 223/24 + 145/24.
    assert_eq!(
        grouped("weighted_sum", "n"),
        (
            pair("9.291666666666666666666666667", "6.041666666666666666666666667"),
            some("15.33333333333333333333333333")
        )
    );

    // A mean where the mean of means differs: eu [2, 4] -> 3, us [9] -> 9; the total is
    // (2 + 4 + 9) / 3 = 5, not (3 + 9) / 2 = 6.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"region": "eu", "n": 2})),
        ev("2026-01-01T02:00:00Z", json!({"region": "eu", "n": 4})),
        ev("2026-01-01T03:00:00Z", json!({"region": "us", "n": 9})),
    ]);
    let spec =
        metric(json!({"aggregation": {"type": "mean", "field": "n"}, "group_by": ["region"]}));
    let q = UsageQuery { group_by: vec!["region".to_owned()], ..query(DAY.0, DAY.1) };
    let result = run(&spec, &events, &q);
    assert_eq!(rows(&result.windows[0]), [row("eu", Some("3"), 2, 0), row("us", Some("9"), 1, 0)]);
    assert_eq!(totals(&result), [some("5")]);
}

#[test]
fn sem_4_9_totals_of_a_window_without_events() {
    // Events on 1 Jan only; 2 Jan has none: count, sum and unique_count total 0, min, max,
    // mean and latest null, weighted_sum its level (0 unless recurring, where the level 10
    // reached on 1 Jan is carried).
    let events = log(vec![ev("2026-01-01T12:00:00Z", json!({"n": 10, "user": "u1"}))]);
    let q = days("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z");
    let second_day = |spec: &MetricSpec| {
        let result = run(spec, &events, &q);
        (result.windows[1].total.map(|v| v.to_string()), result.windows[1].groups.len())
    };
    assert_eq!(second_day(&count_metric()), (some("0"), 0));
    assert_eq!(second_day(&agg("sum", "n")), (some("0"), 0));
    assert_eq!(second_day(&agg("unique_count", "user")), (some("0"), 0));
    for kind in ["min", "max", "mean", "latest"] {
        assert_eq!(second_day(&agg(kind, "n")), (None, 0), "{kind}");
    }
    assert_eq!(second_day(&agg("weighted_sum", "n")), (some("0"), 0));
    let recurring =
        metric(json!({"aggregation": {"type": "weighted_sum", "field": "n", "recurring": true}}));
    assert_eq!(second_day(&recurring), (some("10"), 1));
    // Recurring sum carries too: 10 on both days.
    let recurring =
        metric(json!({"aggregation": {"type": "sum", "field": "n", "recurring": true}}));
    assert_eq!(second_day(&recurring), (some("10"), 1));
}

#[test]
fn sem_4_10_expression_values() {
    // bytes / 1024: 2048 -> 2, "512" -> 0.5; "abc" cannot be divided and a missing property
    // cannot be read: both skipped. Sum 2.5.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"bytes": 2048})),
        ev("2026-01-01T02:00:00Z", json!({"bytes": "512"})),
        ev("2026-01-01T03:00:00Z", json!({"bytes": "abc"})),
        ev("2026-01-01T04:00:00Z", json!({})),
    ]);
    let spec = metric(json!({
        "aggregation": {"type": "sum", "expression": "event.properties.bytes / 1024"}
    }));
    let result = run(&spec, &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("2.5"), 2, 2)]);

    // Division by zero is an error for that event only: 1/4 + 1/0 (skipped) + 1/8 = 0.375.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": 4})),
        ev("2026-01-01T02:00:00Z", json!({"n": 0})),
        ev("2026-01-01T03:00:00Z", json!({"n": 8})),
    ]);
    let spec =
        metric(json!({"aggregation": {"type": "sum", "expression": "1 / event.properties.n"}}));
    let result = run(&spec, &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("0.375"), 2, 1)]);

    // unique_count over a computed string: concat(a, '-', b) renders the number 1.0 as 1, so
    // "x-1", "x-1", "x-2": 2.
    // A number result compares by value: round(2.4) and 2 are one value.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"a": "x", "b": 1})),
        ev("2026-01-01T02:00:00Z", json!({"a": "x", "b": 1.0})),
        ev("2026-01-01T03:00:00Z", json!({"a": "x", "b": 2})),
    ]);
    let spec = metric(json!({"aggregation": {
        "type": "unique_count",
        "expression": "concat(event.properties.a, '-', event.properties.b)"
    }}));
    assert_eq!(day_total(&spec, &events), some("2"));
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"n": 2.4})),
        ev("2026-01-01T02:00:00Z", json!({"n": "2"})),
    ]);
    let spec = metric(json!({"aggregation": {
        "type": "unique_count", "expression": "round(event.properties.n)"
    }}));
    assert_eq!(day_total(&spec, &events), some("1"));

    // event.timestamp is Unix seconds: 2026-01-01T00:00:10Z is 1767225610; minus 1767225600
    // gives 10; at 00:00:20.5, 20.5: sum 30.5.
    let events =
        log(vec![ev("2026-01-01T00:00:10Z", json!({})), ev("2026-01-01T00:00:20.5Z", json!({}))]);
    let spec = metric(json!({
        "aggregation": {"type": "sum", "expression": "event.timestamp - 1767225600"}
    }));
    assert_eq!(day_total(&spec, &events), some("30.5"));

    // An expression that no longer parses (it was validated when saved) skips every event.
    let mut broken = agg("sum", "n");
    broken.aggregation.field = None;
    broken.aggregation.expression = Some("(".to_owned());
    let events = log(vec![ev("2026-01-01T01:00:00Z", json!({"n": 1}))]);
    let result = run(&broken, &events, &query(DAY.0, DAY.1));
    assert_eq!(rows(&result.windows[0]), [row("", Some("0"), 0, 1)]);
}

// ---------------------------------------------------------------------------------------------
// 3. Metric definition: filters, segmentation, group_by
// ---------------------------------------------------------------------------------------------

/// Six events for the filter tests.
fn filter_events() -> Vec<StoredEvent> {
    log(vec![
        ev("2026-01-01T01:00:00Z", json!({"tier": "pro", "weight": 1})), // e1
        ev("2026-01-01T02:00:00Z", json!({"tier": "team", "weight": "1.0"})), // e2
        ev("2026-01-01T03:00:00Z", json!({"tier": "free", "weight": 0})), // e3
        ev("2026-01-01T04:00:00Z", json!({"weight": null})),             // e4
        ev("2026-01-01T05:00:00Z", json!({"tier": {"x": 1}})),           // e5
        ev("2026-01-01T06:00:00Z", json!({"tier": 1})),                  // e6
    ])
}

fn count_filtered(filters: Value) -> String {
    let spec = metric(json!({"aggregation": {"type": "count"}, "filters": filters}));
    day_total(&spec, &filter_events()).unwrap()
}

#[test]
fn sem_3_filters_eq_in_ne_not_in() {
    let cases = [
        // eq / in: present with an equal canonical value.
        (json!({"property": "tier", "op": "eq", "values": ["pro"]}), "1"), // e1
        (json!({"property": "tier", "op": "in", "values": ["pro", "team"]}), "2"), // e1 e2
        // ne / not_in: absent, valueless (object) or different all pass.
        (json!({"property": "tier", "op": "ne", "values": ["pro"]}), "5"), // e2..e6
        (json!({"property": "tier", "op": "not_in", "values": ["pro", "team"]}), "4"), // e3..e6
    ];
    for (filter, want) in cases {
        assert_eq!(count_filtered(json!([filter])), want, "{filter}");
    }
}

#[test]
fn sem_3_filters_compare_numbers_by_value() {
    let cases = [
        // weight 1 and "1.0" are both 1.
        (json!({"property": "weight", "op": "eq", "values": [1]}), "2"), // e1 e2
        (json!({"property": "weight", "op": "eq", "values": ["1"]}), "2"), // e1 e2
        (json!({"property": "weight", "op": "eq", "values": [1.00]}), "2"), // e1 e2
        // weight != 0: e1, e2, e4 (null), e5 and e6 (absent).
        (json!({"property": "weight", "op": "ne", "values": [0]}), "5"),
        // tier 1 (a number) matches "1".
        (json!({"property": "tier", "op": "in", "values": ["1", "pro"]}), "2"), // e1 e6
    ];
    for (filter, want) in cases {
        assert_eq!(count_filtered(json!([filter])), want, "{filter}");
    }
}

#[test]
fn sem_3_filters_exists_not_exists_and_null() {
    let cases = [
        // A null property does not exist.
        (json!({"property": "weight", "op": "exists"}), "3"), // e1 e2 e3
        (json!({"property": "weight", "op": "not_exists"}), "3"), // e4 e5 e6
        // An object exists.
        (json!({"property": "tier", "op": "exists"}), "5"), // e1 e2 e3 e5 e6
        (json!({"property": "tier.x", "op": "exists"}), "1"), // e5, by dotted path
    ];
    for (filter, want) in cases {
        assert_eq!(count_filtered(json!([filter])), want, "{filter}");
    }
}

#[test]
fn sem_3_filters_all_must_hold() {
    // tier in (pro, team) and weight exists: e1, e2; tier pro and weight 0: none.
    let both = json!([
        {"property": "tier", "op": "in", "values": ["pro", "team"]},
        {"property": "weight", "op": "exists"}
    ]);
    assert_eq!(count_filtered(both), "2");
    let none = json!([
        {"property": "tier", "op": "eq", "values": ["pro"]},
        {"property": "weight", "op": "eq", "values": [0]}
    ]);
    assert_eq!(count_filtered(none), "0");
}

#[test]
fn sem_3_segmentation_single_double_linked_other_and_drop() {
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"region": "eu", "tier": "pro"})),
        ev("2026-01-01T02:00:00Z", json!({"region": "eu", "tier": "free"})),
        ev("2026-01-01T03:00:00Z", json!({"region": "us", "tier": "pro"})),
        ev("2026-01-01T04:00:00Z", json!({"region": "us", "tier": "team"})),
        ev("2026-01-01T05:00:00Z", json!({"region": "ap", "tier": "pro"})),
        ev("2026-01-01T06:00:00Z", json!({"tier": "pro"})),
    ]);
    let segmented = |segmentation: Value| {
        let spec = metric(json!({"aggregation": {"type": "count"}, "segmentation": segmentation}));
        let result = run(&spec, &events, &query(DAY.0, DAY.1));
        let window = &result.windows[0];
        let groups: Vec<(String, String)> =
            rows(window).into_iter().map(|(l, v, _, _)| (l, v.unwrap())).collect();
        (groups, window.total.unwrap().to_string(), window.events_excluded)
    };
    let g = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(l, v)| (l.to_string(), v.to_string())).collect()
    };

    // single region [eu, us]: eu 2, us 2; ap and the event without a region go to other (2).
    let single = json!({"type": "single", "key": "region", "values": ["eu", "us"]});
    assert_eq!(segmented(single), (g(&[("eu", "2"), ("us", "2"), ("other", "2")]), "6".into(), 0));
    // The same under drop: the 2 outside are excluded, from the groups and the total.
    let single =
        json!({"type": "single", "key": "region", "values": ["eu", "us"], "unmatched": "drop"});
    assert_eq!(segmented(single), (g(&[("eu", "2"), ("us", "2")]), "4".into(), 2));

    // double region [eu, us] x tier [pro, free]: every combination; us/team, ap/pro and the
    // region-less event are other.
    let double = json!({"type": "double",
        "dimension1": {"key": "region", "values": ["eu", "us"]},
        "dimension2": {"key": "tier", "values": ["pro", "free"]}});
    assert_eq!(
        segmented(double),
        (g(&[("eu|free", "1"), ("eu|pro", "1"), ("us|pro", "1"), ("other", "3")]), "6".into(), 0)
    );

    // linked: only eu/pro and us/team are listed; eu/free, us/pro, ap/pro and the region-less
    // event are outside and dropped.
    let linked = json!({"type": "linked", "dimension1_key": "region", "dimension2_key": "tier",
        "values": {"eu": ["pro"], "us": ["team"]}, "unmatched": "drop"});
    assert_eq!(segmented(linked), (g(&[("eu|pro", "1"), ("us|team", "1")]), "2".into(), 4));

    // Segment values compare by value and are reported as listed: size 1.0 matches "1",
    // "2.50" matches "2.5".
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"size": 1.0})),
        ev("2026-01-01T02:00:00Z", json!({"size": "2.50"})),
        ev("2026-01-01T03:00:00Z", json!({"size": 3})),
    ]);
    let spec = metric(json!({"aggregation": {"type": "count"},
        "segmentation": {"type": "single", "key": "size", "values": ["1", "2.5"]}}));
    let result = run(&spec, &events, &query(DAY.0, DAY.1));
    let keys: Vec<Segment> =
        result.windows[0].groups.iter().map(|g| g.key.segment.clone()).collect();
    assert_eq!(
        keys,
        [Segment::Matched(vec!["1".into()]), Segment::Matched(vec!["2.5".into()]), Segment::Other]
    );
}

#[test]
fn sem_3_group_by_and_group_cap() {
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"project": "p1", "env": "prod"})),
        ev("2026-01-01T02:00:00Z", json!({"project": "p1", "env": "dev"})),
        ev("2026-01-01T03:00:00Z", json!({"project": 7, "env": "prod"})),
        ev("2026-01-01T04:00:00Z", json!({"project": "7.0"})),
        ev("2026-01-01T05:00:00Z", json!({"env": "prod"})),
    ]);
    let spec = metric(json!({"aggregation": {"type": "count"}, "group_by": ["project", "env"]}));
    let grouped = |keys: &[&str], limit: usize| {
        let q = UsageQuery {
            group_by: keys.iter().map(|k| k.to_string()).collect(),
            group_limit: limit,
            ..query(DAY.0, DAY.1)
        };
        compute_usage(&spec, &events, &q).map(|r| {
            rows(&r.windows[0]).into_iter().map(|(l, v, _, _)| (l, v.unwrap())).collect::<Vec<_>>()
        })
    };
    let g = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(l, v)| (l.to_string(), v.to_string())).collect()
    };
    // By project: absent first (None sorts before any value), then "7" (7 and "7.0" are one
    // value), then "p1".
    assert_eq!(grouped(&["project"], 10), Ok(g(&[("-", "1"), ("7", "2"), ("p1", "2")])));
    // Keys in query order: env then project.
    assert_eq!(
        grouped(&["env", "project"], 10),
        Ok(g(&[("-/7", "1"), ("dev/p1", "1"), ("prod/-", "1"), ("prod/7", "1"), ("prod/p1", "1")]))
    );
    // Three groups: a cap of 3 passes, 2 fails rather than truncating.
    assert!(grouped(&["project"], 3).is_ok());
    assert_eq!(grouped(&["project"], 2), Err(UsageError::TooManyGroups { limit: 2 }));
    // A key the metric does not declare.
    assert_eq!(
        grouped(&["region"], 10),
        Err(UsageError::UnknownGroupKey { key: "region".to_owned() })
    );
    // No group_by: one group.
    assert_eq!(grouped(&[], 1), Ok(g(&[("", "5")])));

    // The cap applies per window: two projects a day, three over both days, cap 2 passes.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"project": "a"})),
        ev("2026-01-01T02:00:00Z", json!({"project": "b"})),
        ev("2026-01-02T01:00:00Z", json!({"project": "b"})),
        ev("2026-01-02T02:00:00Z", json!({"project": "c"})),
    ]);
    let q = UsageQuery {
        group_by: vec!["project".to_owned()],
        group_limit: 2,
        ..days("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z")
    };
    let result = run(&spec, &events, &q);
    assert_eq!(result.windows.iter().map(|w| w.groups.len()).collect::<Vec<_>>(), [2, 2]);
}

// ---------------------------------------------------------------------------------------------
// 5. Results
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_5_result_shape() {
    // Sum of n, segmented by region [eu] under drop, by day over 1-3 Jan:
    // 1 Jan: eu 2 and 3 (5, 2 counted), eu without n (skipped), us 10 (excluded).
    // 2 Jan: us 4 (excluded) only: no groups, total 0, 1 excluded.
    // 3 Jan: eu 1.5.
    let events = log(vec![
        ev("2026-01-01T01:00:00Z", json!({"region": "eu", "n": 2})),
        ev("2026-01-01T02:00:00Z", json!({"region": "eu", "n": 3})),
        ev("2026-01-01T03:00:00Z", json!({"region": "eu"})),
        ev("2026-01-01T04:00:00Z", json!({"region": "us", "n": 10})),
        ev("2026-01-02T04:00:00Z", json!({"region": "us", "n": 4})),
        ev("2026-01-03T04:00:00Z", json!({"region": "eu", "n": 1.5})),
    ]);
    let spec = metric(json!({
        "aggregation": {"type": "sum", "field": "n"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu"], "unmatched": "drop"}
    }));
    let result = run(&spec, &events, &days("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"));
    let eu = GroupKey { segment: Segment::Matched(vec!["eu".into()]), group_by: vec![] };
    let expected = json!({"windows": [
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "total": "5",
         "groups": [{"key": eu, "value": "5", "events_count": 2, "events_skipped": 1}],
         "events_excluded": 1},
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-03T00:00:00Z", "total": "0",
         "groups": [], "events_excluded": 1},
        {"from": "2026-01-03T00:00:00Z", "to": "2026-01-04T00:00:00Z", "total": "1.5",
         "groups": [{"key": eu, "value": "1.5", "events_count": 1, "events_skipped": 0}],
         "events_excluded": 0},
    ]});
    let expected: UsageResult = serde_json::from_value(expected).unwrap();
    assert_eq!(result, expected);
    // Decimals are exact and normalized: "5", not "5.0" or 5.000000001.
    assert_eq!(result.windows[0].total, Some(d("5")));
}

// ---------------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------------

const ZONES: [Tz; 10] = [
    Tz::UTC,
    chrono_tz::Europe::Paris,
    chrono_tz::America::New_York,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Asia::Kathmandu,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::America::Sao_Paulo,
    chrono_tz::America::Santiago,
    chrono_tz::Pacific::Apia,
    chrono_tz::Pacific::Chatham,
];

/// A window size and the longest period (in minutes) that stays well under the window limit.
fn size_and_span() -> impl Strategy<Value = (WindowSize, i64)> {
    prop_oneof![
        Just((WindowSize::None, 60 * 24 * 365 * 5)),
        Just((WindowSize::Minute, 60 * 24 * 3)),
        Just((WindowSize::Hour, 60 * 24 * 120)),
        Just((WindowSize::Day, 60 * 24 * 365 * 3)),
        Just((WindowSize::Month, 60 * 24 * 365 * 30)),
    ]
}

/// An instant between 2000 and 2040, to the microsecond, often on a whole hour.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let start = t("2000-01-01T00:00:00Z").timestamp_micros();
    let end = t("2040-01-01T00:00:00Z").timestamp_micros();
    (start..end, any::<bool>()).prop_map(|(micros, round)| {
        let micros = if round { micros - micros.rem_euclid(3_600_000_000) } else { micros };
        DateTime::from_timestamp_micros(micros).unwrap()
    })
}

proptest! {
    #[test]
    fn windows_partition_the_period(
        from in instant(),
        (size, span) in size_and_span(),
        length in 1i64..1_000_000,
        zone in 0..ZONES.len(),
    ) {
        let tz = ZONES[zone];
        let to = from + TimeDelta::minutes(1 + length % span) - TimeDelta::microseconds(length % 7);
        let cut = windows(from, to, size, tz).unwrap();
        prop_assert_eq!(cut.first().unwrap().0, from);
        prop_assert_eq!(cut.last().unwrap().1, to);
        for (a, b) in &cut {
            prop_assert!(a < b, "empty window {a}..{b}");
        }
        for pair in cut.windows(2) {
            prop_assert_eq!(pair[0].1, pair[1].0);
        }
        // Every inner boundary is a unit start on the local clock, or an offset change.
        let longest = match size {
            WindowSize::None => TimeDelta::MAX,
            WindowSize::Minute => TimeDelta::minutes(1),
            WindowSize::Hour => TimeDelta::hours(1),
            WindowSize::Day => TimeDelta::hours(26),
            WindowSize::Month => TimeDelta::days(32),
        };
        for (a, b) in &cut {
            prop_assert!(*b - *a <= longest, "{a}..{b} is longer than a {size:?}");
        }
        for (boundary, _) in cut.iter().skip(1) {
            let local = boundary.with_timezone(&tz).naive_local();
            let minute_start = local.second() == 0 && local.nanosecond() == 0;
            let hour_start = minute_start && local.minute() == 0;
            let day_start = hour_start && local.hour() == 0;
            let unit_start = match size {
                WindowSize::None => false,
                WindowSize::Minute => minute_start,
                WindowSize::Hour => hour_start,
                WindowSize::Day => day_start,
                WindowSize::Month => day_start && local.day() == 1,
            };
            let before = *boundary - TimeDelta::microseconds(1);
            let offset_changes = tz.offset_from_utc_datetime(&before.naive_utc()).fix()
                != tz.offset_from_utc_datetime(&boundary.naive_utc()).fix();
            prop_assert!(unit_start || offset_changes, "{boundary} ({local}) in {tz}");
        }
    }

    #[test]
    fn count_and_sum_totals_merge_across_windows(
        points in prop::collection::vec((0i64..4 * 24 * 60, -1000i64..1000, 0u8..3), 0..40),
        (size, _) in size_and_span(),
        zone in 0..ZONES.len(),
    ) {
        // Events over 4 days from 1 Jan 2026 (some outside the 3-day period), in three
        // projects; values in hundredths.
        let base = t("2026-01-01T00:00:00Z");
        let events = log(points
            .iter()
            .map(|(minute, cents, project)| {
                let n = Decimal::new(*cents, 2).to_string();
                let at = base + TimeDelta::minutes(*minute);
                event_at("api", at, json!({"n": n, "project": project}))
            })
            .collect());
        let mut q = query("2026-01-01T06:00:00Z", "2026-01-04T06:00:00Z");
        q.timezone = ZONES[zone];
        q.group_by = vec!["project".to_owned()];
        let whole = q.clone();
        q.window = size;
        for kind in ["count", "sum"] {
            let aggregation = if kind == "count" {
                json!({"type": "count"})
            } else {
                json!({"type": "sum", "field": "n"})
            };
            let spec = metric(json!({"aggregation": aggregation, "group_by": ["project"]}));
            let expected = run(&spec, &events, &whole).windows[0].total.unwrap();
            let cut = run(&spec, &events, &q);
            let merged: Decimal = cut.windows.iter().map(|w| w.total.unwrap()).sum();
            prop_assert_eq!(merged, expected, "{} by {:?}", kind, size);
            // Additive: each window's groups add up to its total.
            for w in &cut.windows {
                let groups: Decimal = w.groups.iter().map(|g| g.value.unwrap()).sum();
                prop_assert_eq!(groups, w.total.unwrap());
            }
        }
    }
}
