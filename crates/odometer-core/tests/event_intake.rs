//! Event intake (semantics 1.2, 1.5 and 2): parsing, catalog validation, identity and content,
//! and the reference event log's dedup, conflict, sequence and atomic rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, TimeDelta, Utc};
use odometer_core::expression::json_to_decimal;
use odometer_core::input::decimal_value;
use odometer_core::intake::{
    batch_rejection, content_hash, event_fingerprint, needs_customer, parse_event, parse_timestamp,
    validate_event, Event, EventOutcome, EventRejection, IntakeContext, ReferenceEventLog,
    MAX_PROPERTIES_BYTES,
};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::{MetricSpec, OrganizationId, OrganizationSettings};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// The arrival time every test uses.
fn now() -> DateTime<Utc> {
    t("2026-01-05T10:00:00Z")
}

/// A JSON value from its text, keeping a number's spelling (`1.0`, `1e3`, `1e400`).
fn raw(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn props(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

fn event(transaction_id: &str, customer: &str, properties: Value) -> Event {
    Event {
        transaction_id: transaction_id.into(),
        code: "api_request".into(),
        customer: customer.into(),
        timestamp: t("2026-01-05T09:00:00Z"),
        properties: props(properties),
    }
}

fn rejected(code: &'static str) -> impl Fn(&EventOutcome) -> bool {
    move |outcome| matches!(outcome, EventOutcome::Rejected(r) if r.code == code)
}

fn metric(input: Value) -> MetricSpec {
    parse_metric_spec(&input).expect("expected a valid metric")
}

/// Metrics reading `api_request`: a sum of `tokens`, a count, a unique count of `user`, a sum
/// computed by an expression over `weight`, a max of `usage.peak`, and a SQL metric.
fn catalog() -> Vec<MetricSpec> {
    vec![
        metric(json!({"code": "api_calls", "event_code": "api_request", "name": "API calls",
                      "aggregation": {"type": "sum", "field": "tokens"}})),
        metric(json!({"code": "requests", "event_code": "api_request", "name": "Requests",
                      "aggregation": {"type": "count"}})),
        metric(json!({"code": "users", "event_code": "api_request", "name": "Users",
                      "aggregation": {"type": "unique_count", "field": "user"}})),
        metric(json!({"code": "weighted", "event_code": "api_request", "name": "Weighted",
                      "aggregation": {"type": "sum",
                                      "expression": "event.properties.weight * 2"}})),
        metric(json!({"code": "peak", "event_code": "api_request", "name": "Peak",
                      "aggregation": {"type": "max", "field": "usage.peak"}})),
        metric(json!({"code": "by_sql", "event_code": "api_request", "name": "By SQL",
                      "aggregation": {"type": "custom_sql",
                                      "query": "SELECT count(*) AS value FROM events"}})),
        metric(json!({"code": "storage", "name": "Storage",
                      "aggregation": {"type": "latest", "field": "bytes"}})),
    ]
}

/// Validates `event` against `metrics` for an existing customer, default settings, at `now()`.
fn validate(event: &Event, metrics: &[MetricSpec]) -> Result<(), EventRejection> {
    validate_with(event, metrics, true, &OrganizationSettings::default())
}

fn validate_with(
    event: &Event,
    metrics: &[MetricSpec],
    customer_exists: bool,
    settings: &OrganizationSettings,
) -> Result<(), EventRejection> {
    let refs: Vec<&MetricSpec> = metrics.iter().collect();
    let ctx = IntakeContext { metrics: &refs, customer_exists, settings, now: now() };
    validate_event(event, &ctx)
}

/// What an API handler does with a batch: parse and validate each event, then hand the ones
/// that passed to the store, and put the answers back in order. Customers "c1" and "c2" exist.
fn intake_batch(
    log: &mut ReferenceEventLog,
    org: OrganizationId,
    inputs: &[Value],
    atomic: bool,
) -> Vec<EventOutcome> {
    let metrics = catalog();
    let checked: Vec<Result<Event, EventRejection>> = inputs
        .iter()
        .map(|input| {
            let event = parse_event(input, now())?;
            let exists = ["c1", "c2"].contains(&event.customer.as_str());
            validate_with(&event, &metrics, exists, &OrganizationSettings::default())?;
            Ok(event)
        })
        .collect();
    let failed: Vec<usize> = (0..checked.len()).filter(|&i| checked[i].is_err()).collect();
    if atomic && !failed.is_empty() {
        let not_stored = batch_rejection(failed.len(), failed[0]);
        return checked
            .into_iter()
            .map(|r| EventOutcome::Rejected(r.err().unwrap_or_else(|| not_stored.clone())))
            .collect();
    }
    let passed: Vec<Event> = checked.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let mut stored = log.append(org, passed, atomic, now()).into_iter();
    checked
        .into_iter()
        .map(|r| match r {
            Ok(_) => stored.next().unwrap(),
            Err(rejection) => EventOutcome::Rejected(rejection),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1.2 Timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_1_2_timestamps_rfc3339_any_offset() {
    let cases = [
        ("2026-01-05T10:00:00Z", "2026-01-05T10:00:00Z"),
        ("2026-01-05T12:00:00+02:00", "2026-01-05T10:00:00Z"),
        ("2026-01-05T05:30:00-04:30", "2026-01-05T10:00:00Z"),
        ("2026-01-05T10:00:00-00:00", "2026-01-05T10:00:00Z"),
        ("2026-01-06T09:59:00+23:59", "2026-01-05T10:00:00Z"),
        ("2026-01-05T10:00:00.5+00:00", "2026-01-05T10:00:00.500000Z"),
        ("2026-01-05T10:00:00.123456Z", "2026-01-05T10:00:00.123456Z"),
        // Past the microsecond: truncated, not rounded, not refused.
        ("2026-01-05T10:00:00.123456999Z", "2026-01-05T10:00:00.123456Z"),
        // RFC 3339 allows lowercase `t`/`z` and a space between date and time.
        ("2026-01-05t10:00:00z", "2026-01-05T10:00:00Z"),
        ("2026-01-05 10:00:00Z", "2026-01-05T10:00:00Z"),
        // A leap second is the first instant of the next minute.
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("2199-12-31T23:59:59.999999Z", "2199-12-31T23:59:59.999999Z"),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_timestamp(&json!(input)), Ok(t(expected)), "{input}");
    }
}

#[test]
fn sem_1_2_unix_seconds_number_and_string_with_fraction() {
    let at = t("2023-11-14T22:13:20Z");
    let cases = [
        (raw("1700000000"), at),
        (json!("1700000000"), at),
        (raw("1700000000.25"), at + TimeDelta::milliseconds(250)),
        (json!("1700000000.25"), at + TimeDelta::milliseconds(250)),
        (raw("1700000000.000001"), at + TimeDelta::microseconds(1)),
        (json!("1700000000.123456"), at + TimeDelta::microseconds(123_456)),
        (raw("1700000000.0"), at),
        (raw("0"), t("1970-01-01T00:00:00Z")),
        (json!("7258118399.999999"), t("2199-12-31T23:59:59.999999Z")),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_timestamp(&input), Ok(expected), "{input}");
    }
    let parsed = parse_event(
        &json!({"transaction_id": "t1", "code": "c", "customer": "c1", "timestamp": 1700000000}),
        now(),
    )
    .unwrap();
    assert_eq!(parsed.timestamp, at);
}

#[test]
fn sem_1_2_invalid_timestamps_rejected() {
    let cases = [
        // Unix seconds: more than 6 fractional digits, exponents, signs, whitespace.
        raw("1700000000.1234567"),
        json!("1700000000.1234567"),
        raw("1.7e9"),
        json!("1.7e9"),
        json!("1700000000."),
        json!(".5"),
        json!("+1700000000"),
        json!(" 1700000000"),
        json!("1700000000 "),
        json!("0x10"),
        // Before 1970 or from 2200 on.
        raw("-1"),
        json!("-1700000000"),
        json!("7258118400"),
        raw("99999999999999999999999999"),
        json!("1969-12-31T23:59:59.999999Z"),
        json!("2200-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59Z"),
        // Not RFC 3339: no offset, no time, impossible dates, other formats.
        json!("2026-01-05T10:00:00"),
        json!("2026-01-05"),
        json!("2026-13-01T00:00:00Z"),
        json!("2026-02-30T00:00:00Z"),
        json!("2026-01-05T10:00:00+24:00"),
        json!("+002026-01-05T10:00:00Z"),
        json!("Mon, 05 Jan 2026 10:00:00 +0000"),
        json!("2026-01-05T10:00:00Z "),
        json!(""),
        json!("abc"),
        json!("NaN"),
        json!("Infinity"),
        // Other JSON types; null is "now" only where the caller decides so.
        json!(true),
        json!([1700000000]),
        json!({"seconds": 1700000000}),
        Value::Null,
    ];
    for input in cases {
        let err = parse_timestamp(&input).expect_err(&input.to_string());
        assert_eq!(err.code(), "invalid_timestamp", "{input}");
        assert!(!err.message.is_empty() && !err.message.ends_with('.'), "{input}: {err}");
    }
    // Through an event: the code, and a message naming the field and the value.
    let err = parse_event(
        &json!({"transaction_id": "t1", "code": "c", "customer": "c1",
                "timestamp": "1700000000.1234567"}),
        now(),
    )
    .unwrap_err();
    assert_eq!(err.code, "invalid_timestamp");
    assert!(err.message.starts_with("timestamp: '1700000000.1234567'"), "{}", err.message);
    let err = parse_event(
        &json!({"transaction_id": "t1", "code": "c", "customer": "c1", "timestamp": -5}),
        now(),
    )
    .unwrap_err();
    assert_eq!(err.code, "invalid_timestamp");
    assert!(err.message.contains("outside the accepted range"), "{}", err.message);
}

#[test]
fn sem_1_2_missing_timestamp_is_now() {
    let arrival = t("2026-01-05T10:00:00.123456789Z");
    for input in [
        json!({"transaction_id": "t1", "code": "c", "customer": "c1"}),
        json!({"transaction_id": "t1", "code": "c", "customer": "c1", "timestamp": null}),
    ] {
        let parsed = parse_event(&input, arrival).unwrap();
        // Instants are kept at microseconds (1.1).
        assert_eq!(parsed.timestamp, t("2026-01-05T10:00:00.123456Z"), "{input}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2.1 Fields
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_2_1_required_fields_and_lengths() {
    let full = parse_event(
        &json!({"transaction_id": "tx-1", "code": "api_request", "customer": "acme",
                "timestamp": "2026-01-05T09:00:00+01:00", "properties": {"tokens": 5}}),
        now(),
    )
    .unwrap();
    assert_eq!(
        full,
        Event {
            transaction_id: "tx-1".into(),
            code: "api_request".into(),
            customer: "acme".into(),
            timestamp: t("2026-01-05T08:00:00Z"),
            properties: props(json!({"tokens": 5})),
        }
    );
    let minimal =
        parse_event(&json!({"transaction_id": "t", "code": "c", "customer": "x"}), now()).unwrap();
    assert!(minimal.properties.is_empty());
    let null_properties = json!({"transaction_id": "t", "code": "c", "customer": "x",
                                 "properties": null});
    assert!(parse_event(&null_properties, now()).unwrap().properties.is_empty());

    let base = json!({"transaction_id": "tx-1", "code": "api_request", "customer": "acme"});
    let with = |member: &str, value: Value| {
        let mut input = base.clone();
        input[member] = value;
        input
    };
    let without = |member: &str| {
        let mut input = base.clone();
        input.as_object_mut().unwrap().remove(member);
        input
    };
    let ok = [
        with("transaction_id", json!("x".repeat(256))),
        // Lengths count characters, not bytes.
        with("transaction_id", json!("é".repeat(256))),
        with("code", json!("c".repeat(200))),
        with("customer", json!("c".repeat(256))),
        with("transaction_id", json!("with spaces and ünïcödé ✓")),
    ];
    for input in ok {
        assert!(parse_event(&input, now()).is_ok(), "{input}");
    }
    let refused = [
        (without("transaction_id"), "missing_field", "transaction_id: is required"),
        (without("code"), "missing_field", "code: is required"),
        (without("customer"), "missing_field", "customer: is required"),
        (with("code", Value::Null), "missing_field", "code: is required"),
        (with("customer", json!(5)), "invalid_type", "customer: expected a string, got a number"),
        (with("transaction_id", json!(12)), "invalid_type", "transaction_id: expected a string"),
        (with("transaction_id", json!("")), "invalid_value", "transaction_id: must not be empty"),
        (
            with("transaction_id", json!("x".repeat(257))),
            "too_long",
            "transaction_id: must be at most 256",
        ),
        (
            with("transaction_id", json!("tx\n1")),
            "invalid_value",
            "transaction_id: must not contain control",
        ),
        (with("code", json!("c".repeat(201))), "too_long", "code: must be at most 200"),
        (with("code", json!("")), "invalid_value", "code: must not be empty"),
        (with("customer", json!("c".repeat(257))), "too_long", "customer: must be at most 256"),
        (with("customer", json!("a\u{7f}")), "invalid_value", "customer: must not contain control"),
        (
            with("properties", json!([1])),
            "invalid_type",
            "properties: expected an object, got an array",
        ),
        (
            with("properties", json!("{}")),
            "invalid_type",
            "properties: expected an object, got a string",
        ),
        (
            with("external_customer_id", json!("acme")),
            "unknown_field",
            "external_customer_id: is not a known field",
        ),
        (json!([base.clone()]), "invalid_type", "expected an object, got an array"),
        (json!("event"), "invalid_type", "expected an object, got a string"),
    ];
    for (input, code, message) in refused {
        let err = parse_event(&input, now()).expect_err(&input.to_string());
        assert_eq!(err.code, code, "{input}");
        assert!(err.message.starts_with(message), "{input}: {}", err.message);
    }
    // Several problems: the first one's code, and every problem in the message.
    let err = parse_event(&json!({"code": 1, "customer": "c", "extra": true}), now()).unwrap_err();
    assert_eq!(err.code, "missing_field");
    assert_eq!(
        err.message,
        "transaction_id: is required; code: expected a string, got a number; \
         extra: is not a known field"
    );
}

#[test]
fn sem_2_1_properties_size_limit() {
    // `{"blob":"…"}` is 11 bytes of JSON around the string.
    let at_limit = "x".repeat(MAX_PROPERTIES_BYTES - 11);
    let input = |blob: &str| json!({"transaction_id": "t", "code": "c", "customer": "x", "properties": {"blob": blob}});
    assert_eq!(MAX_PROPERTIES_BYTES, 65_536);
    assert!(parse_event(&input(&at_limit), now()).is_ok());
    let err = parse_event(&input(&format!("{at_limit}x")), now()).unwrap_err();
    assert_eq!(err.code, "properties_too_large");
    assert_eq!(err.message, "properties: must be at most 65536 bytes of JSON");
    // Nested members and multibyte characters count by their bytes of JSON.
    let nested = json!({"transaction_id": "t", "code": "c", "customer": "x",
                        "properties": {"a": {"b": ["é".repeat(MAX_PROPERTIES_BYTES / 2)]}}});
    assert_eq!(parse_event(&nested, now()).unwrap_err().code, "properties_too_large");
}

// ---------------------------------------------------------------------------------------------
// 2.2 Identity and content
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_2_2_same_key_same_content_is_duplicate() {
    let org = OrganizationId::new();
    let mut log = ReferenceEventLog::new();
    let first = parse_event(
        &raw(r#"{"transaction_id": "tx-1", "code": "api_request", "customer": "c1",
                 "timestamp": "2026-01-05T09:00:00Z",
                 "properties": {"a": 1, "b": 2, "nested": {"x": 1.5, "y": [1, "1"]}}}"#),
        now(),
    )
    .unwrap();
    assert_eq!(
        log.append(org, vec![first.clone()], false, now()),
        [EventOutcome::Accepted { sequence: 1 }]
    );
    // The same content, spelled differently: member order at every depth, `1` as `1.0` or
    // `1e0` (the same decimal value), the same instant in another offset or as Unix seconds.
    let retries = [
        r#"{"customer": "c1", "code": "api_request", "transaction_id": "tx-1",
            "timestamp": "2026-01-05T09:00:00Z",
            "properties": {"nested": {"y": [1, "1"], "x": 1.5}, "b": 2, "a": 1}}"#,
        r#"{"transaction_id": "tx-1", "code": "api_request", "customer": "c1",
            "timestamp": "2026-01-05T11:00:00+02:00",
            "properties": {"a": 1.0, "b": 2e0, "nested": {"x": 1.50, "y": [1.000, "1"]}}}"#,
        r#"{"transaction_id": "tx-1", "code": "api_request", "customer": "c1",
            "timestamp": 1767603600,
            "properties": {"a": 1, "b": 2, "nested": {"x": 15e-1, "y": [1, "1"]}}}"#,
    ];
    for retry in retries {
        let retry = parse_event(&raw(retry), now()).unwrap();
        assert_eq!(content_hash(&retry), content_hash(&first), "{retry:?}");
        let later = now() + TimeDelta::hours(1);
        assert_eq!(
            log.append(org, vec![retry], false, later),
            [EventOutcome::Duplicate { sequence: 1 }]
        );
    }
    // Stored once, as first accepted.
    let stored = log.events(org, "c1");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event, first);
    assert_eq!(stored[0].ingested_at, now());
    assert_eq!(log.last_sequence(org), 1);
}

#[test]
fn sem_2_2_same_key_different_content_is_conflict_first_stays() {
    let org = OrganizationId::new();
    let mut log = ReferenceEventLog::new();
    let first = event("tx-1", "c1", json!({"tokens": 1, "region": "eu"}));
    log.append(org, vec![first.clone()], false, now());

    let mut other_code = first.clone();
    other_code.code = "other".into();
    let mut other_time = first.clone();
    other_time.timestamp += TimeDelta::microseconds(1);
    let cases = [
        (other_code, "code"),
        (other_time, "timestamp"),
        (event("tx-1", "c1", json!({"tokens": 2, "region": "eu"})), "properties"),
        // A string is not the number it spells.
        (event("tx-1", "c1", json!({"tokens": "1", "region": "eu"})), "properties"),
        (event("tx-1", "c1", json!({"tokens": 1})), "properties"),
        (event("tx-1", "c1", json!({"tokens": 1, "region": "eu", "extra": null})), "properties"),
    ];
    for (conflicting, differs_in) in cases {
        assert_ne!(content_hash(&conflicting), content_hash(&first));
        let outcome = log.append(org, vec![conflicting.clone()], false, now());
        let [EventOutcome::Rejected(rejection)] = outcome.as_slice() else {
            panic!("expected a rejection, got {outcome:?}");
        };
        assert_eq!(rejection.code, "transaction_id_conflict");
        assert!(rejection.message.starts_with("transaction_id: 'tx-1'"), "{}", rejection.message);
        assert!(
            rejection.message.contains(&format!("different {differs_in};")),
            "{}",
            rejection.message
        );
        assert_eq!(log.get(org, "c1", "tx-1").unwrap().event, first, "the first event stays");
    }
    let mut both = event("tx-1", "c1", json!({}));
    both.code = "other".into();
    let outcome = log.append(org, vec![both], false, now());
    let rejection = outcome[0].rejection().unwrap();
    assert!(rejection.message.contains("different code, properties;"), "{}", rejection.message);
    assert_eq!(log.all_events(org).len(), 1);
}

#[test]
fn sem_2_2_key_includes_customer_and_organization() {
    let (org_a, org_b) = (OrganizationId::new(), OrganizationId::new());
    let mut log = ReferenceEventLog::new();
    let for_c1 = event("tx-1", "c1", json!({"tokens": 1}));
    // Same transaction id, different customer or organization, even different content:
    // distinct events.
    let for_c2 = event("tx-1", "c2", json!({"tokens": 9}));
    let for_c1_upper = event("tx-1", "C1", json!({"tokens": 9}));
    assert_eq!(
        log.append(org_a, vec![for_c1.clone(), for_c2.clone()], false, now()),
        [EventOutcome::Accepted { sequence: 1 }, EventOutcome::Accepted { sequence: 2 },]
    );
    assert_eq!(
        log.append(org_a, vec![for_c1_upper.clone()], false, now()),
        [EventOutcome::Accepted { sequence: 3 }]
    );
    assert_eq!(
        log.append(org_b, vec![for_c2.clone()], false, now()),
        [EventOutcome::Accepted { sequence: 1 }]
    );
    assert_eq!(log.get(org_a, "c1", "tx-1").unwrap().event, for_c1);
    assert_eq!(log.get(org_a, "c2", "tx-1").unwrap().event, for_c2);
    assert_eq!(log.get(org_a, "C1", "tx-1").unwrap().event, for_c1_upper);
    assert_eq!(log.get(org_b, "c2", "tx-1").unwrap().sequence, 1);
    assert_eq!(log.get(org_b, "c1", "tx-1"), None);

    // The fingerprint covers all three parts, and its parts cannot run together.
    let key = event_fingerprint(org_a, "c1", "tx-1");
    assert_eq!(key, event_fingerprint(org_a, "c1", "tx-1"));
    assert_ne!(key, event_fingerprint(org_b, "c1", "tx-1"));
    assert_ne!(key, event_fingerprint(org_a, "c2", "tx-1"));
    assert_ne!(key, event_fingerprint(org_a, "c1", "tx-2"));
    assert_ne!(event_fingerprint(org_a, "c1t", "x"), event_fingerprint(org_a, "c1", "tx"));
}

// ---------------------------------------------------------------------------------------------
// 2.3 Validation against the catalog
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_2_3_unknown_code() {
    let metrics = catalog();
    let mut unread = event("tx-1", "c1", json!({}));
    unread.code = "nobody_reads_this".into();
    let err = validate(&unread, &metrics).unwrap_err();
    assert_eq!(err.code, "unknown_code");
    assert_eq!(err.message, "code: no metric reads the event code 'nobody_reads_this'");
    // A metric named like the code does not read it unless its event_code is the code.
    let mut by_metric_code = event("tx-1", "c1", json!({}));
    by_metric_code.code = "api_calls".into();
    assert_eq!(validate(&by_metric_code, &metrics).unwrap_err().code, "unknown_code");
    // Without any metric at all.
    assert_eq!(validate(&event("tx-1", "c1", json!({})), &[]).unwrap_err().code, "unknown_code");
    // event_code defaults to the metric's code; the caller passes archived metrics too.
    let mut storage = event("tx-1", "c1", json!({"bytes": 5}));
    storage.code = "storage".into();
    assert_eq!(validate(&storage, &metrics), Ok(()));
    // unknown_code comes before unknown_customer.
    let err = validate_with(&unread, &metrics, false, &OrganizationSettings::default());
    assert_eq!(err.unwrap_err().code, "unknown_code");
}

#[test]
fn sem_2_3_unknown_code_accepted_by_setting() {
    let settings =
        OrganizationSettings { accept_unknown_codes: true, ..OrganizationSettings::default() };
    let mut unread = event("tx-1", "c1", json!({"tokens": "not a number"}));
    unread.code = "backfill_before_metric".into();
    assert_eq!(validate_with(&unread, &catalog(), true, &settings), Ok(()));
    assert_eq!(validate_with(&unread, &[], true, &settings), Ok(()));
    // The other rules still hold.
    assert_eq!(validate_with(&unread, &[], false, &settings).unwrap_err().code, "unknown_customer");
    unread.timestamp = now() + TimeDelta::days(1);
    assert_eq!(
        validate_with(&unread, &[], true, &settings).unwrap_err().code,
        "timestamp_in_future"
    );
}

#[test]
fn sem_2_3_unknown_customer() {
    let metrics = catalog();
    let newcomer = event("tx-1", "newcomer", json!({"tokens": 1}));
    let defaults = OrganizationSettings::default();
    let err = validate_with(&newcomer, &metrics, false, &defaults).unwrap_err();
    assert_eq!(err.code, "unknown_customer");
    assert_eq!(err.message, "customer: no customer has the external id 'newcomer'");

    let refs: Vec<&MetricSpec> = metrics.iter().collect();
    let creating = OrganizationSettings {
        create_customers_on_first_sight: true,
        ..OrganizationSettings::default()
    };
    let cases = [
        // (customer exists, settings, valid, caller creates the customer)
        (false, &defaults, false, false),
        (false, &creating, true, true),
        (true, &defaults, true, false),
        (true, &creating, true, false),
    ];
    for (customer_exists, settings, valid, create) in cases {
        let ctx = IntakeContext { metrics: &refs, customer_exists, settings, now: now() };
        assert_eq!(
            validate_event(&newcomer, &ctx).is_ok(),
            valid,
            "{customer_exists} {settings:?}"
        );
        assert_eq!(needs_customer(&ctx), create, "{customer_exists} {settings:?}");
    }
    // An event that fails for another reason is rejected even when its customer would be
    // created: the caller creates customers for valid events only.
    let ctx =
        IntakeContext { metrics: &refs, customer_exists: false, settings: &creating, now: now() };
    let bad = event("tx-1", "newcomer", json!({"tokens": "many"}));
    assert_eq!(validate_event(&bad, &ctx).unwrap_err().code, "invalid_value");
}

#[test]
fn sem_2_3_invalid_value_names_metric_and_property() {
    let metrics = catalog();
    let err = validate(&event("tx-1", "c1", json!({"tokens": "abc"})), &metrics).unwrap_err();
    assert_eq!(err.code, "invalid_value");
    assert_eq!(
        err.message,
        "properties.tokens: metric 'api_calls' (sum) needs a decimal number, got the string 'abc'"
    );
    let err = validate(&event("tx-1", "c1", json!({"usage": {"peak": true}})), &metrics);
    assert_eq!(
        err.unwrap_err().message,
        "properties.usage.peak: metric 'peak' (max) needs a decimal number, got a boolean"
    );
    let err = validate(&event("tx-1", "c1", raw(r#"{"tokens": 1e400}"#).clone()), &metrics);
    assert_eq!(
        err.unwrap_err().message,
        "properties.tokens: metric 'api_calls' (sum) needs a decimal number, got 1e+400, which \
         does not fit in 28 significant digits"
    );

    // Only value-reading metrics with a field care: unique_count counts any value, count and
    // custom_sql read none, and an expression decides for itself.
    let anything_goes = json!({"user": {"id": 7}, "weight": "heavy", "anything": [1], "tokens": 3});
    assert_eq!(validate(&event("tx-1", "c1", anything_goes), &metrics), Ok(()));

    // With several metrics failing on one event, the smallest code is named, whatever the
    // order the caller listed them in.
    let also_tokens = metric(json!({"code": "a_tokens_max", "event_code": "api_request",
                                    "name": "Max tokens",
                                    "aggregation": {"type": "max", "field": "tokens"}}));
    let mut both = metrics.clone();
    both.push(also_tokens.clone());
    let mut reversed = both.clone();
    reversed.reverse();
    let bad = event("tx-1", "c1", json!({"tokens": "x"}));
    for list in [both, reversed] {
        let err = validate(&bad, &list).unwrap_err();
        assert!(err.message.contains("metric 'a_tokens_max' (max)"), "{}", err.message);
    }

    // Every aggregation that reads a numeric field.
    for kind in ["sum", "min", "max", "mean", "latest", "weighted_sum"] {
        let only = metric(json!({"code": "m", "event_code": "api_request", "name": "M",
                                 "aggregation": {"type": kind, "field": "v"}}));
        let err = validate(&event("tx-1", "c1", json!({"v": "x"})), &[only]).unwrap_err();
        assert_eq!(err.code, "invalid_value", "{kind}");
        assert!(err.message.contains(&format!("metric 'm' ({kind})")), "{}", err.message);
    }
}

#[test]
fn sem_2_3_absent_numeric_property_is_not_an_error() {
    let metrics = catalog();
    for properties in [
        json!({}),
        json!({"tokens": null}),
        json!({"usage": {}}),
        json!({"usage": "not an object, so usage.peak is absent"}),
        json!({"other": "x"}),
    ] {
        assert_eq!(
            validate(&event("tx-1", "c1", properties.clone()), &metrics),
            Ok(()),
            "{properties}"
        );
    }
}

#[test]
fn sem_2_3_timestamp_in_future_with_tolerance() {
    let metrics = catalog();
    let at = |timestamp: DateTime<Utc>| {
        let mut e = event("tx-1", "c1", json!({}));
        e.timestamp = timestamp;
        e
    };
    let defaults = OrganizationSettings::default();
    assert_eq!(defaults.future_timestamp_tolerance_seconds, 3600);
    let hour = TimeDelta::hours(1);
    let micro = TimeDelta::microseconds(1);
    assert_eq!(validate(&at(now() + hour), &metrics), Ok(()));
    assert_eq!(validate(&at(now() - TimeDelta::days(3650)), &metrics), Ok(()));
    let err = validate(&at(now() + hour + micro), &metrics).unwrap_err();
    assert_eq!(err.code, "timestamp_in_future");
    assert_eq!(
        err.message,
        "timestamp: 2026-01-05T11:00:00.000001Z is more than 3600 seconds after the time of \
         arrival (2026-01-05T10:00:00.000000Z)"
    );
    for (tolerance, offset, ok) in [
        (0, TimeDelta::zero(), true),
        (0, micro, false),
        (86_400, TimeDelta::days(1), true),
        (86_400, TimeDelta::days(1) + micro, false),
    ] {
        let settings = OrganizationSettings {
            future_timestamp_tolerance_seconds: tolerance,
            ..OrganizationSettings::default()
        };
        let got = validate_with(&at(now() + offset), &metrics, true, &settings);
        assert_eq!(got.is_ok(), ok, "{tolerance} {offset}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2.4 Numeric values
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_2_4_numeric_values() {
    let sum = metric(json!({"code": "total", "event_code": "api_request", "name": "Total",
                            "aggregation": {"type": "sum", "field": "v"}}));
    let cases = [
        ("-12", true),
        (r#""-12""#, true),
        ("3.5", true),
        (r#""3.5""#, true),
        ("1e3", true),
        (r#""1e3""#, true),
        ("2.5E-2", true),
        ("0", true),
        ("-0.0", true),
        // 28 decimal places, and the largest 29-digit integer a decimal holds, fit.
        (r#""0.1234567890123456789012345678""#, true),
        ("79228162514264337593543950335", true),
        (r#"" 4 ""#, false),
        (r#""+4""#, false),
        (r#"".5""#, false),
        (r#""5.""#, false),
        (r#""""#, false),
        (r#""abc""#, false),
        (r#""NaN""#, false),
        (r#""Infinity""#, false),
        (r#""1,5""#, false),
        ("true", false),
        ("[1]", false),
        (r#"{"v": 1}"#, false),
        // Too large or too precise for 28 significant digits: refused, never rounded.
        ("1e400", false),
        ("79228162514264337593543950336", false),
        (r#""0.12345678901234567890123456789""#, false),
        ("1.0000000000000000000000000000001", false),
        // Absent (null) is not an error (2.3).
        ("null", true),
    ];
    for (value, valid) in cases {
        let input = event("tx-1", "c1", raw(&format!(r#"{{"v": {value}}}"#)));
        let got = validate(&input, std::slice::from_ref(&sum));
        match got {
            Ok(()) => {
                assert!(valid, "{value} should be refused");
                // What intake accepts, the engine reads as the same exact decimal.
                let v = &input.properties["v"];
                assert_eq!(decimal_value(v), json_to_decimal(v), "{value}");
            }
            Err(err) => {
                assert!(!valid, "{value} should be accepted: {}", err.message);
                assert_eq!(err.code, "invalid_value", "{value}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2.6 Batches
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_2_6_batch_mixed_outcomes() {
    let org = OrganizationId::new();
    let mut log = ReferenceEventLog::new();
    let e = |tx: &str, customer: &str, tokens: Value| {
        json!({"transaction_id": tx, "code": "api_request", "customer": customer,
               "timestamp": "2026-01-05T09:00:00Z", "properties": {"tokens": tokens}})
    };
    let earlier = intake_batch(&mut log, org, &[e("old", "c1", json!(1))], false);
    assert_eq!(earlier, [EventOutcome::Accepted { sequence: 1 }]);

    let batch = [
        e("a", "c1", json!(1)),                           // new
        e("b", "c1", json!("many")),                      // invalid_value
        e("old", "c1", json!(1)),                         // duplicate of an earlier batch
        e("c", "stranger", json!(1)),                     // unknown_customer
        e("a", "c1", json!(1.0)),                         // duplicate within the batch
        e("a", "c1", json!(2)),                           // conflict within the batch
        json!({"transaction_id": "d", "customer": "c2"}), // missing_field
        e("old", "c1", json!(5)),                         // conflict with an earlier batch
        e("e", "c2", json!(1)),                           // new
    ];
    let outcomes = intake_batch(&mut log, org, &batch, false);
    let summary: Vec<(&str, Option<u64>, Option<&str>)> = outcomes
        .iter()
        .map(|o| (o.status(), o.sequence(), o.rejection().map(|r| r.code)))
        .collect();
    assert_eq!(
        summary,
        [
            ("accepted", Some(2), None),
            ("rejected", None, Some("invalid_value")),
            ("duplicate", Some(1), None),
            ("rejected", None, Some("unknown_customer")),
            ("duplicate", Some(2), None),
            ("rejected", None, Some("transaction_id_conflict")),
            ("rejected", None, Some("missing_field")),
            ("rejected", None, Some("transaction_id_conflict")),
            ("accepted", Some(3), None),
        ]
    );
    // What passed is stored even though others were rejected; each event once.
    let stored: Vec<(String, u64)> =
        log.all_events(org).into_iter().map(|s| (s.event.transaction_id, s.sequence)).collect();
    assert_eq!(stored, [("old".into(), 1), ("a".into(), 2), ("e".into(), 3)]);
    assert_eq!(log.get(org, "c1", "a").unwrap().event.properties["tokens"], json!(1));
}

#[test]
fn sem_2_6_atomic_all_or_nothing() {
    let org = OrganizationId::new();
    let mut log = ReferenceEventLog::new();
    let stored_before = event("old", "c1", json!({"tokens": 1}));
    log.append(org, vec![stored_before.clone()], false, now());

    // A conflict in the store: nothing of the batch is stored, no sequence is used.
    let batch = vec![
        event("a", "c1", json!({"tokens": 1})),
        event("old", "c1", json!({"tokens": 1})), // duplicate of an earlier request
        event("a", "c1", json!({"tokens": 1})),   // duplicate of the batch's own first
        event("old", "c1", json!({"tokens": 2})), // conflict
        event("b", "c2", json!({"tokens": 1})),
    ];
    let outcomes = log.append(org, batch.clone(), true, now());
    let not_stored = EventOutcome::Rejected(batch_rejection(1, 3));
    assert_eq!(outcomes[0], not_stored);
    assert_eq!(outcomes[1], not_stored);
    assert_eq!(outcomes[2], not_stored);
    assert!(rejected("transaction_id_conflict")(&outcomes[3]));
    assert_eq!(outcomes[4], not_stored);
    assert_eq!(
        outcomes[0].rejection().unwrap().message,
        "not stored: the batch is atomic and 1 event was rejected (the first at index 3)"
    );
    assert_eq!(log.all_events(org).len(), 1);
    assert_eq!(log.last_sequence(org), 1);
    assert_eq!(log.get(org, "c1", "a"), None);

    // The same batch without the bad event: all of it, numbered right after the last stored.
    let mut fixed = batch;
    fixed.remove(3);
    assert_eq!(
        log.append(org, fixed, true, now()),
        [
            EventOutcome::Accepted { sequence: 2 },
            EventOutcome::Duplicate { sequence: 1 },
            EventOutcome::Duplicate { sequence: 2 },
            EventOutcome::Accepted { sequence: 3 },
        ]
    );

    // Rejections found before the store (parsing, validation) fail the batch the same way.
    let inputs = [
        json!({"transaction_id": "x", "code": "api_request", "customer": "c1"}),
        json!({"transaction_id": "y", "code": "api_request", "customer": "stranger"}),
        json!({"transaction_id": "old", "code": "api_request", "customer": "c1",
               "timestamp": "2026-01-05T09:00:00Z", "properties": {"tokens": 1}}),
        json!({"transaction_id": "z", "code": "nobody_reads_this", "customer": "c1"}),
    ];
    let outcomes = intake_batch(&mut log, org, &inputs, true);
    let codes: Vec<&str> = outcomes.iter().map(|o| o.rejection().unwrap().code).collect();
    assert_eq!(codes, ["batch_rejected", "unknown_customer", "batch_rejected", "unknown_code"]);
    assert!(outcomes[0]
        .rejection()
        .unwrap()
        .message
        .contains("2 events were rejected (the first at index 1)"));
    assert_eq!(log.last_sequence(org), 3);

    // An atomic batch without rejections is stored like any other.
    let outcomes = intake_batch(&mut log, org, &inputs[..1], true);
    assert_eq!(outcomes, [EventOutcome::Accepted { sequence: 4 }]);
}

// ---------------------------------------------------------------------------------------------
// 1.5 Sequences
// ---------------------------------------------------------------------------------------------

#[test]
fn sem_1_5_sequences_strictly_increase_per_organization() {
    let (org_a, org_b) = (OrganizationId::new(), OrganizationId::new());
    let mut log = ReferenceEventLog::new();
    assert_eq!(log.last_sequence(org_a), 0);
    let first_call = now();
    let second_call = now() + TimeDelta::seconds(5);
    let a1 = log.append(
        org_a,
        vec![event("1", "c1", json!({})), event("2", "c2", json!({})), event("3", "c1", json!({}))],
        false,
        first_call,
    );
    let b1 = log.append(org_b, vec![event("1", "c1", json!({}))], false, first_call);
    // A rejected event in between uses no sequence.
    let a2 = log.append(
        org_a,
        vec![event("1", "c1", json!({"changed": true})), event("4", "c1", json!({}))],
        false,
        second_call,
    );
    let b2 = log.append(org_b, vec![event("2", "c1", json!({}))], false, second_call);
    let sequences = |outcomes: &[EventOutcome]| -> Vec<Option<u64>> {
        outcomes.iter().map(EventOutcome::sequence).collect()
    };
    assert_eq!(sequences(&a1), [Some(1), Some(2), Some(3)]);
    assert_eq!(sequences(&b1), [Some(1)]);
    assert_eq!(sequences(&a2), [None, Some(4)]);
    assert_eq!(sequences(&b2), [Some(2)]);

    let c1: Vec<(u64, DateTime<Utc>)> =
        log.events(org_a, "c1").iter().map(|s| (s.sequence, s.ingested_at)).collect();
    assert_eq!(c1, [(1, first_call), (3, first_call), (4, second_call)]);
    let all: Vec<u64> = log.all_events(org_a).iter().map(|s| s.sequence).collect();
    assert_eq!(all, [1, 2, 3, 4]);
    assert_eq!(log.last_sequence(org_a), 4);
    assert_eq!(log.last_sequence(org_b), 2);
    assert!(log.events(org_a, "nobody").is_empty());
    assert!(log.events(OrganizationId::new(), "c1").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties of the reference log
// ---------------------------------------------------------------------------------------------

/// One distinct event per key, and ways of writing the same content: `spelling` picks member
/// order and number spelling (`1` or `1.0`).
fn spelled(customer: usize, tx: usize, tokens: u32, spelling: bool) -> Event {
    let text = if spelling {
        format!(r#"{{"tokens": {tokens}, "tag": "t{tx}"}}"#)
    } else {
        format!(r#"{{"tag": "t{tx}", "tokens": {tokens}.0}}"#)
    };
    Event {
        transaction_id: format!("tx-{tx}"),
        code: "api_request".into(),
        customer: format!("c{customer}"),
        timestamp: t("2026-01-05T09:00:00Z") + TimeDelta::seconds(i64::from(tokens)),
        properties: props(raw(&text)),
    }
}

/// Shuffled events with repeats: `(customer, tx, tokens)` decides a key's content, each key
/// appears 1 to 3 times, in any order, split into batches, each atomic or not.
fn shuffled_with_repeats() -> impl Strategy<Value = (Vec<Event>, Vec<(usize, bool)>)> {
    (prop::collection::vec((0..3usize, 0..8usize, 0..5u32, 1..4usize), 1..20)).prop_flat_map(
        |keys| {
            let mut seen = std::collections::HashSet::new();
            let mut events = Vec::new();
            for (customer, tx, tokens, repeats) in keys {
                if seen.insert((customer, tx)) {
                    for i in 0..repeats {
                        events.push(spelled(customer, tx, tokens, i % 2 == 0));
                    }
                }
            }
            let len = events.len();
            (Just(events).prop_shuffle(), prop::collection::vec((1..6usize, any::<bool>()), len))
        },
    )
}

proptest! {
    #[test]
    fn each_distinct_key_is_stored_once_and_reappending_changes_nothing(
        (events, batching) in shuffled_with_repeats()
    ) {
        let org = OrganizationId::new();
        let mut log = ReferenceEventLog::new();
        let mut outcomes = Vec::new();
        let mut rest = events.as_slice();
        let mut batches = batching.iter();
        while !rest.is_empty() {
            let (size, atomic) = batches.next().copied().unwrap_or((rest.len(), false));
            let (batch, tail) = rest.split_at(size.min(rest.len()));
            outcomes.extend(log.append(org, batch.to_vec(), atomic, now()));
            rest = tail;
        }

        // First sight of a key is accepted; every repeat is a duplicate of it.
        let mut first_sequence = std::collections::HashMap::new();
        for (event, outcome) in events.iter().zip(&outcomes) {
            let key = (event.customer.clone(), event.transaction_id.clone());
            match first_sequence.get(&key) {
                None => {
                    let EventOutcome::Accepted { sequence } = outcome else {
                        panic!("first sight should be accepted: {outcome:?}");
                    };
                    first_sequence.insert(key, *sequence);
                }
                Some(&sequence) => prop_assert_eq!(outcome, &EventOutcome::Duplicate { sequence }),
            }
        }
        let stored = log.all_events(org);
        prop_assert_eq!(stored.len(), first_sequence.len());
        let sequences: Vec<u64> = stored.iter().map(|s| s.sequence).collect();
        prop_assert_eq!(sequences, (1..=stored.len() as u64).collect::<Vec<_>>());
        for s in &stored {
            let key = (s.event.customer.clone(), s.event.transaction_id.clone());
            prop_assert_eq!(first_sequence[&key], s.sequence);
        }

        // Re-appending everything, in one batch or atomically: all duplicates, nothing changes.
        for atomic in [false, true] {
            let again = log.append(org, events.clone(), atomic, now() + TimeDelta::hours(1));
            for (event, outcome) in events.iter().zip(&again) {
                let original = log.get(org, &event.customer, &event.transaction_id).unwrap();
                prop_assert_eq!(outcome, &EventOutcome::Duplicate { sequence: original.sequence });
            }
            prop_assert_eq!(&log.all_events(org), &stored);
        }
    }

    #[test]
    fn the_first_content_of_a_key_wins_in_any_order(
        picks in prop::collection::vec((0..2usize, 0..4usize, 0..3u32), 1..30)
    ) {
        let org = OrganizationId::new();
        let mut log = ReferenceEventLog::new();
        let events: Vec<Event> =
            picks.iter().map(|&(c, tx, tokens)| spelled(c, tx, tokens, tokens % 2 == 0)).collect();
        let outcomes = log.append(org, events.clone(), false, now());
        let mut first: std::collections::HashMap<(usize, usize), (u32, u64)> = Default::default();
        for (&(c, tx, tokens), outcome) in picks.iter().zip(&outcomes) {
            match first.get(&(c, tx)) {
                None => {
                    let sequence = outcome.sequence().unwrap();
                    prop_assert_eq!(outcome, &EventOutcome::Accepted { sequence });
                    first.insert((c, tx), (tokens, sequence));
                }
                Some(&(kept, sequence)) if kept == tokens => {
                    prop_assert_eq!(outcome, &EventOutcome::Duplicate { sequence });
                }
                Some(_) => prop_assert!(rejected("transaction_id_conflict")(outcome)),
            }
        }
        for (&(c, tx), &(tokens, sequence)) in &first {
            let stored = log.get(org, &format!("c{c}"), &format!("tx-{tx}")).unwrap();
            prop_assert_eq!(stored.sequence, sequence);
            prop_assert_eq!(stored.event, spelled(c, tx, tokens, tokens % 2 == 0));
        }
    }
}
