//! Why an event does or does not count for a metric: each filter checked, the segment it lands
//! in, its `group_by` values and the value it contributes, or why it contributes none.
//!
//! The explanation is read with the engine's own [`crate::engine`] event reader (the same
//! compiled filters, segmentation matrix and value source), so it cannot disagree with
//! [`crate::engine::compute_usage`]: an event explained as [`Outcome::Counted`] with value `v`
//! in group `g` moves `g`'s `events_count` by one and, for an additive aggregation without unit
//! conversion or rounding, its value by `v`; [`Outcome::Skipped`] moves `events_skipped`,
//! [`Outcome::Excluded`] moves the window's `events_excluded`, and an event that another code
//! or a failing filter keeps out changes nothing. The tests check this against the engine.

use std::fmt;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::engine::reading::{EventReader, Operation, Reading};
use crate::event::Event;
use crate::input::type_name;
use crate::metric::{AggregationType, Filter, MetricSpec};
use crate::usage::{GroupKey, Segment};

/// How one metric definition reads one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventExplanation {
    /// Whether the metric reads the event's code (its `event_code`).
    pub reads_code: bool,
    /// Each of the metric's filters, in order, with what the event holds.
    pub filters: Vec<FilterCheck>,
    /// Where the segmentation puts the event.
    pub segment: Placement,
    /// The metric's `group_by` keys and the event's canonical value of each (`None`: absent).
    pub group_by: Vec<(String, Option<String>)>,
    /// What the event would contribute once it passes the filters and the segmentation.
    pub value: ValueReading,
    /// What the event does to a usage result for a window containing its timestamp.
    pub outcome: Outcome,
}

impl EventExplanation {
    /// The usage group the event is counted or skipped in: its segment and every `group_by`
    /// value; `None` when it belongs to no group (another code, filtered out, excluded, SQL).
    pub fn group_key(&self) -> Option<GroupKey> {
        let segment = match &self.segment {
            Placement::NoSegmentation => Segment::None,
            Placement::Matched(values) => Segment::Matched(values.clone()),
            Placement::Other => Segment::Other,
            Placement::Dropped => return None,
        };
        matches!(self.outcome, Outcome::Counted | Outcome::Skipped(_)).then(|| GroupKey {
            segment,
            group_by: self.group_by.iter().map(|(_, v)| v.clone()).collect(),
        })
    }
}

impl EventExplanation {
    /// Why the event does not count for `spec` (the definition it was explained with), in a
    /// sentence; `None` when it counts.
    pub fn reason(&self, spec: &MetricSpec, event: &Event) -> Option<String> {
        match &self.outcome {
            Outcome::Counted => None,
            Outcome::OtherCode => Some(format!(
                "metric '{}' reads the event code '{}', not '{}'",
                spec.code, spec.event_code, event.code
            )),
            Outcome::FilteredOut { filter } => {
                let check = self.filters.get(*filter)?;
                let holds = match &check.found {
                    None => "the event has no such property".to_owned(),
                    Some(value) => format!("the event has {value}"),
                };
                Some(format!(
                    "filter {} fails: {} {} {}, and {holds}",
                    filter + 1,
                    check.filter.property,
                    check.filter.op.as_str(),
                    Value::Array(check.filter.values.clone()),
                ))
            }
            Outcome::Excluded => {
                let keys = spec.segmentation.as_ref().map(|s| s.keys()).unwrap_or_default();
                let held: Vec<String> = keys
                    .iter()
                    .map(|key| match event.property(key) {
                        Some(value) => format!("{key} = {value}"),
                        None => format!("no {key}"),
                    })
                    .collect();
                Some(format!(
                    "outside the segmentation ({}), which drops unmatched events: counted under \
                     events_excluded",
                    held.join(", ")
                ))
            }
            Outcome::Skipped(reason) => {
                Some(format!("{reason}: counted under events_skipped, with no value"))
            }
            Outcome::DecidedBySql => Some(
                "a custom_sql metric: its query decides what each event contributes".to_owned(),
            ),
        }
    }
}

/// One filter and whether the event passes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCheck {
    pub filter: Filter,
    /// The event's value of the filter's property (`None` when absent).
    pub found: Option<Value>,
    pub passes: bool,
}

/// Where the segmentation puts an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The metric has no segmentation.
    NoSegmentation,
    /// The listed values it matched, in the segmentation's key order (as listed).
    Matched(Vec<String>),
    /// Outside the matrix, under `unmatched: other`.
    Other,
    /// Outside the matrix, under `unmatched: drop`: excluded.
    Dropped,
}

/// The per-event value the aggregation reads, before unit conversion and rounding.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueReading {
    /// `count`: the event itself counts as 1.
    Counted,
    /// The value of `sum`, `min`, `max`, `mean`, `latest` and `weighted_sum` (for
    /// `weighted_sum` a change to the level), normalized (`2.50` reads as `2.5`).
    Number(Decimal),
    /// A `unique_count` value (canonical text) and whether the event adds or removes it.
    Distinct { value: String, removes: bool },
    /// No usable value.
    Skipped(SkipReason),
    /// A `custom_sql` metric: its query decides, not a per-event rule.
    Sql,
}

/// Why an event that passes the filters has no value (it counts under `events_skipped`).
#[derive(Debug, Clone, PartialEq)]
pub enum SkipReason {
    /// The aggregation's property is absent.
    MissingProperty { path: String },
    /// The aggregation's property is JSON `null`.
    NullProperty { path: String },
    /// The property is there but not a decimal number (semantics 2.4).
    NotADecimal { path: String, found: Value },
    /// A `unique_count` property that is an object or an array (no canonical value).
    NoDistinctValue { path: String, found: Value },
    /// The expression could not be evaluated for this event (missing property, division by
    /// zero, ...).
    ExpressionFailed { message: String },
    /// `operation_type` is present and neither `"add"` nor `"remove"` (`unique_count`).
    InvalidOperation { found: Value },
    /// The metric's expression no longer parses, or it names neither field nor expression.
    Unusable,
}

impl SkipReason {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingProperty { .. } => "missing_property",
            Self::NullProperty { .. } => "null_property",
            Self::NotADecimal { .. } => "not_a_number",
            Self::NoDistinctValue { .. } => "no_distinct_value",
            Self::ExpressionFailed { .. } => "expression_failed",
            Self::InvalidOperation { .. } => "invalid_operation_type",
            Self::Unusable => "no_value_source",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingProperty { path } => write!(f, "the event has no property '{path}'"),
            Self::NullProperty { path } => write!(f, "the property '{path}' is null"),
            Self::NotADecimal { path, found } => {
                write!(f, "the property '{path}' is {}, not a decimal number", describe(found))
            }
            Self::NoDistinctValue { path, found } => {
                write!(
                    f,
                    "the property '{path}' is {}, which has no value to count",
                    type_name(found)
                )
            }
            Self::ExpressionFailed { message } => {
                write!(f, "the expression cannot be evaluated for this event: {message}")
            }
            Self::InvalidOperation { found } => {
                write!(f, "operation_type is {}, neither 'add' nor 'remove'", describe(found))
            }
            Self::Unusable => f.write_str("the metric has no usable field or expression"),
        }
    }
}

/// What an event does to a usage result (for a window that contains its timestamp).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The metric reads another event code: the event is not among its events at all.
    OtherCode,
    /// The filter at this index (the first that fails) keeps the event out.
    FilteredOut { filter: usize },
    /// Outside the segmentation under `unmatched: drop`: counted under `events_excluded`.
    Excluded,
    /// Passes, but has no value: counted under its group's `events_skipped`.
    Skipped(SkipReason),
    /// Counts: its group's `events_count`, and its value goes into the aggregation.
    Counted,
    /// A `custom_sql` metric: the query decides what each event contributes.
    DecidedBySql,
}

impl Outcome {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OtherCode => "other_code",
            Self::FilteredOut { .. } => "filtered_out",
            Self::Excluded => "excluded_by_segmentation",
            Self::Skipped(_) => "skipped",
            Self::Counted => "counted",
            Self::DecidedBySql => "decided_by_sql",
        }
    }

    /// Whether the event's value goes into the aggregation.
    pub fn counts(&self) -> bool {
        matches!(self, Self::Counted)
    }
}

/// Explains how `spec` reads `event` (which need not be stored), with every `group_by` key of
/// the metric.
pub fn explain_event(spec: &MetricSpec, event: &Event) -> EventExplanation {
    let reader = EventReader::new(spec, &spec.group_by);
    let reads_code = event.code == spec.event_code;
    let filters: Vec<FilterCheck> = spec
        .filters
        .iter()
        .zip(reader.filter_results(event))
        .map(|(filter, passes)| FilterCheck {
            filter: filter.clone(),
            found: event.property(&filter.property).cloned(),
            passes,
        })
        .collect();
    let segment = match (&spec.segmentation, reader.segment_of(event)) {
        (None, _) => Placement::NoSegmentation,
        (Some(_), None) => Placement::Dropped,
        (Some(_), Some(Segment::Matched(values))) => Placement::Matched(values),
        (Some(_), Some(Segment::Other | Segment::None)) => Placement::Other,
    };
    let group_by = spec.group_by.iter().cloned().zip(reader.group_by_values(event)).collect();
    let value = if spec.aggregation.kind == AggregationType::CustomSql {
        ValueReading::Sql
    } else {
        match reader.read_explained(event) {
            Ok(Reading::Counted) => ValueReading::Counted,
            Ok(Reading::Number(v)) => ValueReading::Number(v.normalize()),
            Ok(Reading::Distinct(value, operation)) => {
                ValueReading::Distinct { value, removes: operation == Operation::Remove }
            }
            // `read_explained` gives a reason for every skip.
            Ok(Reading::Skipped) => ValueReading::Skipped(SkipReason::Unusable),
            Err(reason) => ValueReading::Skipped(reason),
        }
    };
    // The engine's order: the code, the filters, then the segmentation, then the value.
    let outcome = if !reads_code {
        Outcome::OtherCode
    } else if let Some(filter) = filters.iter().position(|f| !f.passes) {
        Outcome::FilteredOut { filter }
    } else if value == ValueReading::Sql {
        Outcome::DecidedBySql
    } else if segment == Placement::Dropped {
        Outcome::Excluded
    } else if let ValueReading::Skipped(reason) = &value {
        Outcome::Skipped(reason.clone())
    } else {
        Outcome::Counted
    };
    EventExplanation { reads_code, filters, segment, group_by, value, outcome }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => {
            let shown: String = text.chars().take(40).collect();
            let more = if text.chars().nth(40).is_some() { "..." } else { "" };
            format!("the string '{shown}{more}'")
        }
        Value::Number(n) => format!("{n}, which does not fit in a decimal"),
        other => type_name(other).to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::metric_input::parse_metric_spec;
    use serde_json::json;

    fn event(code: &str, properties: Value) -> Event {
        Event {
            transaction_id: "t1".into(),
            code: code.into(),
            customer: "acme".into(),
            timestamp: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            properties: properties.as_object().cloned().unwrap(),
        }
    }

    /// One case: a metric (its JSON definition, `code` "m" reading event code "api" added),
    /// an event's code and properties, the outcome's code, and the value or skip reason code.
    fn check(metric: Value, code: &str, properties: Value, outcome: &str, detail: &str) {
        let mut definition = json!({"code": "m", "name": "M", "event_code": "api"});
        for (k, v) in metric.as_object().unwrap() {
            definition[k] = v.clone();
        }
        let spec = parse_metric_spec(&definition).unwrap();
        let explained = explain_event(&spec, &event(code, properties.clone()));
        assert_eq!(explained.outcome.code(), outcome, "{metric} {properties}");
        let shown = match (&explained.outcome, &explained.value) {
            (Outcome::FilteredOut { filter }, _) => format!("filter {filter}"),
            (Outcome::Skipped(reason), _) => reason.code().to_owned(),
            (_, ValueReading::Number(v)) => v.to_string(),
            (_, ValueReading::Counted) => "1".to_owned(),
            (_, ValueReading::Distinct { value, removes }) => {
                format!("{}{value}", if *removes { "-" } else { "+" })
            }
            (_, ValueReading::Skipped(reason)) => reason.code().to_owned(),
            (_, ValueReading::Sql) => "sql".to_owned(),
        };
        assert_eq!(shown, detail, "{metric} {properties}");
    }

    #[test]
    fn outcomes_by_rule() {
        let sum = json!({"aggregation": {"type": "sum", "field": "bytes"}});
        let tiered = json!({"aggregation": {"type": "sum", "field": "bytes"},
            "filters": [{"property": "tier", "op": "in", "values": ["pro", "team"]},
                        {"property": "env", "op": "ne", "values": ["test"]}]});
        let dropped = json!({"aggregation": {"type": "count"},
            "segmentation": {"type": "single", "key": "region", "values": ["eu"], "unmatched": "drop"}});
        let unique = json!({"aggregation": {"type": "unique_count", "field": "user"}});
        let expr = json!({"aggregation": {"type": "sum", "expression": "event.properties.a / event.properties.b"}});
        #[rustfmt::skip]
        let cases = [
            (&sum, "api", json!({"bytes": 5}), "counted", "5"),
            (&sum, "api", json!({"bytes": "2.50"}), "counted", "2.5"),
            (&sum, "other", json!({"bytes": 5}), "other_code", "5"),
            (&sum, "api", json!({}), "skipped", "missing_property"),
            (&sum, "api", json!({"bytes": null}), "skipped", "null_property"),
            (&sum, "api", json!({"bytes": "lots"}), "skipped", "not_a_number"),
            (&sum, "api", json!({"bytes": true}), "skipped", "not_a_number"),
            (&tiered, "api", json!({"bytes": 5, "tier": "pro"}), "counted", "5"),
            (&tiered, "api", json!({"bytes": 5, "tier": "free"}), "filtered_out", "filter 0"),
            (&tiered, "api", json!({"bytes": 5}), "filtered_out", "filter 0"),
            (&tiered, "api", json!({"bytes": 5, "tier": "team", "env": "test"}), "filtered_out", "filter 1"),
            // A failing filter comes before a missing value.
            (&tiered, "api", json!({"tier": "free"}), "filtered_out", "filter 0"),
            (&dropped, "api", json!({"region": "eu"}), "counted", "1"),
            (&dropped, "api", json!({"region": "us"}), "excluded_by_segmentation", "1"),
            (&dropped, "api", json!({}), "excluded_by_segmentation", "1"),
            (&unique, "api", json!({"user": "u1"}), "counted", "+u1"),
            (&unique, "api", json!({"user": 1.0}), "counted", "+1"),
            (&unique, "api", json!({"user": "u1", "operation_type": "remove"}), "counted", "-u1"),
            (&unique, "api", json!({"user": "u1", "operation_type": "delete"}), "skipped", "invalid_operation_type"),
            (&unique, "api", json!({"user": [1]}), "skipped", "no_distinct_value"),
            (&expr, "api", json!({"a": 6, "b": 4}), "counted", "1.5"),
            (&expr, "api", json!({"a": 6, "b": 0}), "skipped", "expression_failed"),
            (&expr, "api", json!({"a": 6}), "skipped", "expression_failed"),
        ];
        for (metric, code, properties, outcome, detail) in cases {
            check(metric.clone(), code, properties, outcome, detail);
        }
    }

    #[test]
    fn segments_and_group_by() {
        let spec = parse_metric_spec(&json!({"code": "m", "name": "M", "event_code": "api",
            "aggregation": {"type": "count"}, "group_by": ["project"],
            "segmentation": {"type": "double",
                "dimension1": {"key": "cloud", "values": ["aws", "gcp"]},
                "dimension2": {"key": "region", "values": ["1", "eu"]}}}))
        .unwrap();
        let cases = [
            (
                json!({"cloud": "aws", "region": 1.0, "project": "p"}),
                Placement::Matched(vec!["aws".into(), "1".into()]),
                Some("p"),
            ),
            (json!({"cloud": "aws", "region": "us"}), Placement::Other, None),
            (json!({"region": "eu", "project": 7}), Placement::Other, Some("7")),
        ];
        for (properties, placement, project) in cases {
            let explained = explain_event(&spec, &event("api", properties.clone()));
            assert_eq!(explained.segment, placement, "{properties}");
            assert_eq!(
                explained.group_by,
                vec![("project".to_owned(), project.map(str::to_owned))]
            );
            assert_eq!(explained.outcome, Outcome::Counted);
        }
    }

    #[test]
    fn filter_checks_show_what_the_event_holds() {
        let spec = parse_metric_spec(&json!({"code": "m", "name": "M", "event_code": "api",
            "aggregation": {"type": "count"},
            "filters": [{"property": "usage.kind", "op": "eq", "values": ["read"]},
                        {"property": "beta", "op": "not_exists", "values": []}]}))
        .unwrap();
        let explained =
            explain_event(&spec, &event("api", json!({"usage": {"kind": "write"}, "beta": true})));
        let found: Vec<_> = explained.filters.iter().map(|f| (f.found.clone(), f.passes)).collect();
        assert_eq!(found, vec![(Some(json!("write")), false), (Some(json!(true)), false)]);
        assert_eq!(explained.outcome, Outcome::FilteredOut { filter: 0 });
    }

    #[test]
    fn reasons_read_as_sentences() {
        let reason = SkipReason::NotADecimal { path: "bytes".into(), found: json!("lots") };
        assert_eq!(
            reason.to_string(),
            "the property 'bytes' is the string 'lots', not a decimal number"
        );
        let reason = SkipReason::MissingProperty { path: "usage.bytes".into() };
        assert_eq!(reason.to_string(), "the event has no property 'usage.bytes'");
    }
}
