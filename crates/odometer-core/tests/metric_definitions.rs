//! Metric definitions (semantics section 3) and updates (section 6): what is accepted, what is
//! refused with which code at which path, and how patches become revisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use odometer_core::metric::{
    AggregationType, ConversionRounding, RoundingFunction, Segmentation, Unmatched,
};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::metric_update::{apply_metric_patch, check_lock, locked_changes, LOCKED_FIELDS};
use odometer_core::MetricSpec;
use serde_json::{json, Value};

/// Parses `input`, expecting it to be refused; returns `(path, code)` of every problem.
fn problems(input: Value) -> Vec<(String, &'static str)> {
    let err = parse_metric_spec(&input).expect_err("expected the definition to be refused");
    err.iter().map(|p| (p.path.clone(), p.code)).collect()
}

/// A valid sum metric with `overrides` merged in (top-level members replaced).
fn sum_metric(overrides: Value) -> Value {
    let mut base = json!({
        "code": "storage", "name": "Storage",
        "aggregation": {"type": "sum", "field": "bytes"}
    });
    for (k, v) in overrides.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn spec(input: Value) -> MetricSpec {
    parse_metric_spec(&input).expect("expected a valid definition")
}

#[test]
fn sem_3_full_definition_round_trips_through_canonical_json() {
    let input = json!({
        "code": "api_calls", "event_code": "api_request", "name": "API calls",
        "description": "requests served",
        "aggregation": {"type": "sum", "field": "usage.value", "recurring": false},
        "filters": [
            {"property": "tier", "op": "in", "values": ["pro", "team"]},
            {"property": "internal", "op": "not_exists"},
            {"property": "weight", "op": "ne", "values": [0]}
        ],
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"], "unmatched": "drop"},
        "group_by": ["project"],
        "unit_conversion": {"factor": "1000", "rounding": "up"},
        "rounding": {"function": "round", "precision": -2},
        "product_family_id": "pf_1", "product_id": "prod_1"
    });
    let s = spec(input);
    assert_eq!(s.event_code, "api_request");
    assert_eq!(s.aggregation.kind, AggregationType::Sum);
    assert_eq!(s.aggregation.field.as_deref(), Some("usage.value"));
    assert_eq!(s.filters.len(), 3);
    assert_eq!(s.segmentation.as_ref().unwrap().unmatched(), Unmatched::Drop);
    let uc = s.unit_conversion.as_ref().unwrap();
    assert_eq!(uc.factor.to_string(), "1000");
    assert_eq!(uc.rounding, ConversionRounding::Up);
    assert_eq!(s.rounding.unwrap().function, RoundingFunction::Round);
    assert_eq!(s.rounding.unwrap().precision, -2);
    // The canonical form parses back to the same spec, and deserializes (storage) the same.
    let canonical = s.to_json();
    assert_eq!(spec(canonical.clone()), s);
    assert_eq!(serde_json::from_value::<MetricSpec>(canonical).unwrap(), s);
}

#[test]
fn sem_3_event_code_defaults_to_code() {
    assert_eq!(spec(sum_metric(json!({}))).event_code, "storage");
}

#[test]
fn sem_3_every_aggregation_type_has_a_valid_minimal_form() {
    let cases = [
        json!({"type": "count"}),
        json!({"type": "sum", "field": "v"}),
        json!({"type": "min", "field": "v"}),
        json!({"type": "max", "field": "v"}),
        json!({"type": "mean", "field": "v"}),
        json!({"type": "latest", "field": "v"}),
        json!({"type": "unique_count", "field": "user_id", "recurring": true}),
        json!({"type": "weighted_sum", "field": "v", "recurring": true}),
        json!({"type": "sum", "expression": "event.properties.a * 2"}),
        json!({"type": "custom_sql", "query": "SELECT count(*) AS value FROM events"}),
    ];
    for aggregation in cases {
        let s = spec(sum_metric(json!({"aggregation": aggregation.clone()})));
        assert_eq!(s.aggregation.kind.as_str(), aggregation["type"].as_str().unwrap());
    }
}

#[test]
fn sem_3_sum_without_field_is_refused() {
    assert_eq!(
        problems(sum_metric(json!({"aggregation": {"type": "sum"}}))),
        [("aggregation.field".to_owned(), "missing_field")]
    );
}

#[test]
fn sem_3_recurring_count_is_refused() {
    for kind in ["count", "max", "latest", "mean", "min"] {
        let mut aggregation = json!({"type": kind, "recurring": true});
        if kind != "count" {
            aggregation["field"] = json!("v");
        }
        assert_eq!(
            problems(sum_metric(json!({ "aggregation": aggregation }))),
            [("aggregation.recurring".to_owned(), "recurring_not_allowed")],
            "{kind}"
        );
    }
}

#[test]
fn sem_3_unknown_aggregation_is_refused() {
    assert_eq!(
        problems(sum_metric(json!({"aggregation": {"type": "median", "field": "v"}}))),
        [("aggregation.type".to_owned(), "unknown_aggregation")]
    );
}

#[test]
fn sem_3_negative_or_zero_factor_is_refused() {
    for factor in [json!("-1000"), json!(0), json!("abc"), json!(-2.5)] {
        assert_eq!(
            problems(sum_metric(json!({"unit_conversion": {"factor": factor.clone()}}))),
            [("unit_conversion.factor".to_owned(), "invalid_value")],
            "{factor}"
        );
    }
    // A number is as good as a string, and keeps its exact digits.
    let s =
        spec(sum_metric(json!({"unit_conversion": {"factor": 0.001, "rounding": "nearest_half"}})));
    assert_eq!(s.unit_conversion.unwrap().factor.to_string(), "0.001");
}

#[test]
fn sem_4_10_unparsable_expression_is_refused_with_its_position() {
    let err = parse_metric_spec(&sum_metric(json!({
        "aggregation": {"type": "sum", "expression": "event.properties.a * (2 +"}
    })))
    .unwrap_err();
    let problem = &err.0[0];
    assert_eq!(
        (problem.path.as_str(), problem.code),
        ("aggregation.expression", "invalid_expression")
    );
    assert!(problem.message.contains("position"), "{}", problem.message);
}

#[test]
fn sem_3_bad_segmentations_are_refused() {
    let cases = [
        (
            json!({"type": "single", "key": "region", "values": []}),
            "segmentation.values",
            "invalid_value",
        ),
        (
            json!({"type": "single", "key": "region", "values": ["eu", "eu"]}),
            "segmentation.values[1]",
            "duplicate_value",
        ),
        (json!({"type": "single", "values": ["eu"]}), "segmentation.key", "missing_field"),
        (json!({"type": "triple", "key": "region"}), "segmentation.type", "invalid_value"),
        (
            json!({"type": "double", "dimension1": {"key": "a", "values": ["x"]}, "dimension2": {"key": "a", "values": ["y"]}}),
            "segmentation.dimension2.key",
            "invalid_value",
        ),
        (
            json!({"type": "double", "dimension1": {"key": "a", "values": ["x"]}}),
            "segmentation.dimension2",
            "missing_field",
        ),
        (
            json!({"type": "linked", "dimension1_key": "cloud", "dimension2_key": "region", "values": {}}),
            "segmentation.values",
            "invalid_value",
        ),
        (
            json!({"type": "linked", "dimension1_key": "cloud", "dimension2_key": "region", "values": {"aws": []}}),
            "segmentation.values.aws",
            "invalid_value",
        ),
        (
            json!({"type": "single", "key": "region", "values": ["eu"], "unmatched": "keep"}),
            "segmentation.unmatched",
            "invalid_value",
        ),
        (
            json!({"type": "single", "key": "a..b", "values": ["eu"]}),
            "segmentation.key",
            "invalid_value",
        ),
    ];
    for (segmentation, path, code) in cases {
        assert_eq!(
            problems(sum_metric(json!({ "segmentation": segmentation.clone() }))),
            [(path.to_owned(), code)],
            "{segmentation}"
        );
    }
}

#[test]
fn sem_3_segmentations_of_every_kind_are_accepted() {
    let linked = spec(sum_metric(json!({"segmentation": {
        "type": "linked", "dimension1_key": "cloud", "dimension2_key": "region",
        "values": {"aws": ["us-east-1", "eu-west-1"], "gcp": ["europe-west1"]}
    }})));
    match linked.segmentation.unwrap() {
        Segmentation::Linked { values, unmatched, .. } => {
            assert_eq!(values["aws"], ["us-east-1", "eu-west-1"]);
            assert_eq!(unmatched, Unmatched::Other);
        }
        other => panic!("expected linked, got {other:?}"),
    }
    let double = spec(sum_metric(json!({"segmentation": {
        "type": "double", "dimension1": {"key": "a", "values": ["x"]}, "dimension2": {"key": "b", "values": ["y", "z"]}
    }})));
    assert_eq!(double.segmentation.unwrap().keys(), ["a", "b"]);
}

#[test]
fn sem_3_filters_check_their_arity_and_op() {
    let cases = [
        (
            json!({"property": "tier", "op": "eq", "values": []}),
            "filters[0].values",
            "invalid_value",
        ),
        (
            json!({"property": "tier", "op": "eq", "values": ["a", "b"]}),
            "filters[0].values",
            "invalid_value",
        ),
        (
            json!({"property": "tier", "op": "in", "values": []}),
            "filters[0].values",
            "invalid_value",
        ),
        (
            json!({"property": "tier", "op": "exists", "values": ["a"]}),
            "filters[0].values",
            "invalid_value",
        ),
        (
            json!({"property": "tier", "op": "like", "values": ["a"]}),
            "filters[0].op",
            "invalid_value",
        ),
        (json!({"op": "exists"}), "filters[0].property", "missing_field"),
        (
            json!({"property": "tier", "op": "in", "values": [{"a": 1}]}),
            "filters[0].values[0]",
            "invalid_type",
        ),
    ];
    for (filter, path, code) in cases {
        assert_eq!(
            problems(sum_metric(json!({ "filters": [filter.clone()] }))),
            [(path.to_owned(), code)],
            "{filter}"
        );
    }
}

#[test]
fn sem_3_every_problem_is_reported_at_once() {
    let found = problems(json!({
        "code": "bad code!", "aggregation": {"type": "sum"},
        "rounding": {"function": "truncate", "precision": 99}, "colour": "red", "id": "bm_x"
    }));
    assert_eq!(
        found,
        [
            ("id".to_owned(), "read_only"),
            ("code".to_owned(), "invalid_value"),
            ("name".to_owned(), "missing_field"),
            ("aggregation.field".to_owned(), "missing_field"),
            ("rounding.function".to_owned(), "invalid_value"),
            ("rounding.precision".to_owned(), "invalid_value"),
            ("colour".to_owned(), "unknown_field"),
        ]
    );
}

#[test]
fn sem_3_members_that_do_not_apply_are_refused_not_ignored() {
    let cases = [
        (json!({"type": "count", "field": "v"}), "aggregation.field", "not_allowed"),
        (
            json!({"type": "sum", "field": "v", "expression": "1"}),
            "aggregation.expression",
            "not_allowed",
        ),
        (
            json!({"type": "sum", "field": "v", "query": "SELECT 1"}),
            "aggregation.query",
            "not_allowed",
        ),
        (
            json!({"type": "custom_sql", "query": "SELECT 1", "field": "v"}),
            "aggregation.field",
            "not_allowed",
        ),
        (
            json!({"type": "custom_sql", "query": "DELETE FROM events"}),
            "aggregation.query",
            "invalid_sql",
        ),
        (
            json!({"type": "custom_sql", "query": "SELECT 1; DROP TABLE events"}),
            "aggregation.query",
            "invalid_sql",
        ),
        (json!({"type": "custom_sql"}), "aggregation.query", "missing_field"),
    ];
    for (aggregation, path, code) in cases {
        assert_eq!(
            problems(sum_metric(json!({ "aggregation": aggregation.clone() }))),
            [(path.to_owned(), code)],
            "{aggregation}"
        );
    }
}

#[test]
fn sem_3_group_by_keys_are_distinct_and_not_segmentation_keys() {
    let found = problems(sum_metric(json!({
        "segmentation": {"type": "single", "key": "region", "values": ["eu"]},
        "group_by": ["project", "project", "region", ""]
    })));
    assert_eq!(
        found,
        [
            ("group_by[1]".to_owned(), "duplicate_value"),
            ("group_by[2]".to_owned(), "invalid_value"),
            ("group_by[3]".to_owned(), "invalid_value"),
        ]
    );
}

#[test]
fn sem_3_codes_are_url_safe_and_never_look_like_ids() {
    assert_eq!(
        problems(sum_metric(json!({"code": "a/b"}))),
        [("code".to_owned(), "invalid_value")]
    );
    assert_eq!(
        problems(sum_metric(json!({"code": "bm_0000000000000000000000"}))),
        [("code".to_owned(), "invalid_value")]
    );
    spec(sum_metric(json!({"code": "api.calls:v2-beta_1"})));
}

#[test]
fn sem_6_1_patch_absent_is_unchanged_null_clears_and_changes_are_listed() {
    let current = spec(sum_metric(json!({
        "description": "old", "rounding": {"function": "ceil", "precision": 1}
    })));
    let patched = apply_metric_patch(
        &current,
        &json!({"name": "Storage (GB)", "description": null, "rounding": null}),
    )
    .unwrap();
    assert_eq!(patched.spec.name, "Storage (GB)");
    assert_eq!(patched.spec.description, None);
    assert_eq!(patched.spec.rounding, None);
    assert_eq!(patched.spec.aggregation, current.aggregation);
    let paths: Vec<&str> = patched.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["name", "description", "rounding"]);
    assert_eq!(patched.changes[1].before, json!("old"));
    assert_eq!(patched.changes[1].after, Value::Null);
    assert_eq!(patched.expected_revision, None);
}

#[test]
fn sem_6_1_patch_into_nested_objects_merges_member_by_member() {
    let current = spec(sum_metric(json!({})));
    let patched = apply_metric_patch(&current, &json!({"aggregation": {"field": "size"}})).unwrap();
    assert_eq!(patched.spec.aggregation.field.as_deref(), Some("size"));
    assert_eq!(patched.spec.aggregation.kind, AggregationType::Sum);
    assert_eq!(patched.changes.len(), 1);
    assert_eq!(patched.changes[0].path, "aggregation.field");
}

#[test]
fn sem_6_1_a_patch_that_changes_nothing_lists_no_change() {
    let current = spec(sum_metric(json!({})));
    let patched = apply_metric_patch(&current, &json!({"name": "Storage", "revision": 4})).unwrap();
    assert!(patched.changes.is_empty());
    assert_eq!(patched.expected_revision, Some(4));
}

#[test]
fn sem_6_1_an_invalid_patch_reports_problems_of_the_merged_definition() {
    let current = spec(sum_metric(json!({})));
    let err = apply_metric_patch(&current, &json!({"aggregation": {"field": null}, "name": null}))
        .unwrap_err();
    let found: Vec<(&str, &str)> = err.iter().map(|p| (p.path.as_str(), p.code)).collect();
    assert_eq!(found, [("name", "missing_field"), ("aggregation.field", "missing_field")]);
    assert!(apply_metric_patch(&current, &json!([1])).is_err());
    assert!(apply_metric_patch(&current, &json!({"revision": "three"})).is_err());
}

#[test]
fn sem_6_3_lock_rule_names_exactly_the_changed_locked_fields() {
    let before = spec(sum_metric(json!({})));
    let cases: [(Value, Vec<&str>); 7] = [
        (json!({"name": "x", "description": "y", "rounding": {"function": "floor"}}), vec![]),
        (
            json!({"unit_conversion": {"factor": 2}, "filters": [{"property": "a", "op": "exists"}]}),
            vec![],
        ),
        (json!({"event_code": "other"}), vec!["event_code"]),
        (json!({"aggregation": {"field": "size"}}), vec!["aggregation.field"]),
        (json!({"aggregation": {"type": "max"}}), vec!["aggregation.type"]),
        (json!({"aggregation": {"recurring": true}}), vec!["aggregation.recurring"]),
        (
            json!({"event_code": "e2", "aggregation": {"field": null, "expression": "event.properties.a"}}),
            vec!["event_code", "aggregation.field", "aggregation.expression"],
        ),
    ];
    for (patch, expected) in cases {
        let after = apply_metric_patch(&before, &patch).unwrap().spec;
        assert_eq!(locked_changes(&before, &after), expected, "{patch}");
        // Unattached metrics may change anything; attached ones only unlocked fields.
        assert!(check_lock(&before, &after, false).is_ok());
        match check_lock(&before, &after, true) {
            Ok(()) => assert!(expected.is_empty(), "{patch}"),
            Err(locked) => {
                assert_eq!(locked.fields, expected, "{patch}");
                assert!(locked.to_string().contains(expected[0]));
            }
        }
    }
    assert_eq!(LOCKED_FIELDS.len(), 5);
}
