//! What the engine reads of one event: canonical property values, filters, the segment and
//! group it belongs to, and the per-event value its aggregation reads.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::event::{Event, StoredEvent};
use crate::explain::SkipReason;
use crate::expression::{EventView, ExprValue, Expression};
use crate::input::{decimal_value, parse_decimal};
use crate::metric::{AggregationType, Filter, FilterOp, MetricSpec, Segmentation, Unmatched};
use crate::usage::{GroupKey, Segment};

/// The canonical text of a scalar property value used for grouping, segmentation, filters and
/// `unique_count`: strings as they are, except that numbers and strings holding a decimal are
/// their exact value in normalized text (`"1"`, `1`, `1.0`, `"1e0"` are all `"1"`); booleans
/// `"true"`/`"false"`; null, objects and arrays have none.
pub fn canonical_value(v: &Value) -> Option<String> {
    match v {
        Value::String(text) => Some(parse_decimal(text).map_or_else(|| text.clone(), decimal_text)),
        Value::Number(number) => {
            // A number too large for a Decimal still has one spelling: its JSON text.
            let text = number.to_string();
            Some(parse_decimal(&text).map_or(text, decimal_text))
        }
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A decimal's normalized text: no trailing zeros, no exponent, no `-0`.
fn decimal_text(d: Decimal) -> String {
    d.normalize().to_string()
}

/// What an event contributes to its aggregation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reading {
    /// `count` reads no value: the event itself counts.
    Counted,
    /// The per-event value of `sum`, `min`, `max`, `mean`, `latest` and `weighted_sum`.
    Number(Decimal),
    /// A `unique_count` value (canonical text) and the operation applied to it.
    Distinct(String, Operation),
    /// The value is absent or unusable: the event counts under `events_skipped` only.
    Skipped,
}

/// A `unique_count` operation (property `operation_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Add,
    Remove,
}

/// A counted event as the windows need it.
#[derive(Debug, Clone)]
pub(crate) struct PreparedEvent {
    pub timestamp: DateTime<Utc>,
    pub sequence: u64,
    /// `None` when the segmentation drops the event (`unmatched: drop`).
    pub group: Option<GroupKey>,
    pub reading: Reading,
}

/// Where a value-reading aggregation takes its per-event value from.
#[derive(Debug, Clone)]
enum ValueSource {
    /// `count` (and `custom_sql`) read nothing.
    Nothing,
    Field(String),
    Expression(Expression),
    /// The expression no longer parses, or the metric names neither field nor expression:
    /// every event is skipped rather than the query failing.
    Unusable,
}

/// A dimension's listed values as (canonical text, listed spelling).
type Listed = Vec<(String, String)>;

/// The segmentation with its listed values in canonical form, computed once per reader.
#[derive(Debug, Clone)]
enum Matrix {
    None,
    Single {
        key: String,
        values: Listed,
        unmatched: Unmatched,
    },
    Double {
        key1: String,
        values1: Listed,
        key2: String,
        values2: Listed,
        unmatched: Unmatched,
    },
    Linked {
        key1: String,
        key2: String,
        pairs: Vec<(String, String, Listed)>,
        unmatched: Unmatched,
    },
}

/// A filter with its values in canonical form.
#[derive(Debug, Clone)]
struct CompiledFilter {
    property: String,
    op: FilterOp,
    values: Vec<String>,
}

/// Reads events for one metric definition and a list of its `group_by` keys: which events
/// count, their group, and what each contributes. It owns what it compiled from the
/// definition, so a precomputed state (`crate::usage_index`) keeps one for its lifetime.
#[derive(Debug, Clone)]
pub(crate) struct EventReader {
    kind: AggregationType,
    event_code: String,
    filters: Vec<CompiledFilter>,
    matrix: Matrix,
    group_by: Vec<String>,
    source: ValueSource,
}

impl EventReader {
    pub fn new(spec: &MetricSpec, group_by: &[String]) -> Self {
        let aggregation = &spec.aggregation;
        let source = if !aggregation.kind.reads_value() {
            ValueSource::Nothing
        } else if let Some(source) = &aggregation.expression {
            Expression::parse(source).map_or(ValueSource::Unusable, ValueSource::Expression)
        } else if let Some(field) = &aggregation.field {
            ValueSource::Field(field.clone())
        } else {
            ValueSource::Unusable
        };
        EventReader {
            kind: aggregation.kind,
            event_code: spec.event_code.clone(),
            filters: spec.filters.iter().map(compile_filter).collect(),
            matrix: compile_matrix(spec.segmentation.as_ref()),
            group_by: group_by.to_vec(),
            source,
        }
    }

    /// The event as the windows need it; `None` when it does not count for this metric (another
    /// code, or a filter fails).
    pub fn prepare(&self, stored: &StoredEvent) -> Option<PreparedEvent> {
        let event = &stored.event;
        if event.code != self.event_code || !self.filters.iter().all(|f| f.passes(event)) {
            return None;
        }
        let group = self
            .segment(event)
            .map(|segment| GroupKey { segment, group_by: self.group_by_values(event) });
        Some(PreparedEvent {
            timestamp: event.timestamp,
            sequence: stored.sequence,
            group,
            reading: self.read(event),
        })
    }

    /// The event's segment; `None` when `unmatched: drop` excludes it.
    fn segment(&self, event: &Event) -> Option<Segment> {
        let value = |key: &str| event.property(key).and_then(canonical_value);
        let (matched, unmatched) = match &self.matrix {
            Matrix::None => return Some(Segment::None),
            Matrix::Single { key, values, unmatched } => {
                let v = value(key);
                (listed(values, v.as_deref()).map(|l| vec![l]), *unmatched)
            }
            Matrix::Double { key1, values1, key2, values2, unmatched } => {
                let (v1, v2) = (value(key1), value(key2));
                let both = listed(values1, v1.as_deref()).zip(listed(values2, v2.as_deref()));
                (both.map(|(l1, l2)| vec![l1, l2]), *unmatched)
            }
            Matrix::Linked { key1, key2, pairs, unmatched } => {
                let (v1, v2) = (value(key1), value(key2));
                let found = pairs.iter().find_map(|(canonical, spelling, seconds)| {
                    if v1.as_deref() != Some(canonical.as_str()) {
                        return None;
                    }
                    listed(seconds, v2.as_deref()).map(|l2| vec![spelling.clone(), l2])
                });
                (found, *unmatched)
            }
        };
        match (matched, unmatched) {
            (Some(values), _) => Some(Segment::Matched(values)),
            (None, Unmatched::Other) => Some(Segment::Other),
            (None, Unmatched::Drop) => None,
        }
    }

    /// The event's contribution to the aggregation.
    fn read(&self, event: &Event) -> Reading {
        self.read_explained(event).unwrap_or(Reading::Skipped)
    }

    /// The event's contribution, or why it has none: the one place both the engine
    /// ([`Self::read`]) and the explanation of an event (`crate::explain`) take it from.
    pub(crate) fn read_explained(&self, event: &Event) -> Result<Reading, SkipReason> {
        match self.kind {
            AggregationType::Count | AggregationType::CustomSql => Ok(Reading::Counted),
            AggregationType::UniqueCount => {
                let operation = operation(event)?;
                Ok(Reading::Distinct(self.distinct_value(event)?, operation))
            }
            _ => self.number(event).map(Reading::Number),
        }
    }

    fn number(&self, event: &Event) -> Result<Decimal, SkipReason> {
        match &self.source {
            ValueSource::Field(path) => match event.property(path) {
                None => Err(SkipReason::MissingProperty { path: path.clone() }),
                Some(Value::Null) => Err(SkipReason::NullProperty { path: path.clone() }),
                Some(value) => decimal_value(value).ok_or_else(|| SkipReason::NotADecimal {
                    path: path.clone(),
                    found: value.clone(),
                }),
            },
            ValueSource::Expression(expression) => expression
                .evaluate_decimal(&EventProperties(event))
                .map_err(|e| SkipReason::ExpressionFailed { message: e.to_string() }),
            ValueSource::Nothing | ValueSource::Unusable => Err(SkipReason::Unusable),
        }
    }

    fn distinct_value(&self, event: &Event) -> Result<String, SkipReason> {
        match &self.source {
            ValueSource::Field(path) => match event.property(path) {
                None => Err(SkipReason::MissingProperty { path: path.clone() }),
                Some(Value::Null) => Err(SkipReason::NullProperty { path: path.clone() }),
                Some(value) => canonical_value(value).ok_or_else(|| SkipReason::NoDistinctValue {
                    path: path.clone(),
                    found: value.clone(),
                }),
            },
            ValueSource::Expression(expression) => {
                match expression.evaluate(&EventProperties(event)) {
                    Ok(ExprValue::Decimal(d)) => Ok(decimal_text(d)),
                    Ok(ExprValue::String(s)) => Ok(canonical_text(&s)),
                    Err(e) => Err(SkipReason::ExpressionFailed { message: e.to_string() }),
                }
            }
            ValueSource::Nothing | ValueSource::Unusable => Err(SkipReason::Unusable),
        }
    }

    /// Whether each of the metric's filters holds for the event, in the metric's order.
    pub(crate) fn filter_results<'a>(
        &'a self,
        event: &'a Event,
    ) -> impl Iterator<Item = bool> + 'a {
        self.filters.iter().map(move |f| f.passes(event))
    }

    /// The event's segment; `None` when `unmatched: drop` excludes it.
    pub(crate) fn segment_of(&self, event: &Event) -> Option<Segment> {
        self.segment(event)
    }

    /// The event's `group_by` values, canonical, in the reader's key order.
    pub(crate) fn group_by_values(&self, event: &Event) -> Vec<Option<String>> {
        self.group_by.iter().map(|key| event.property(key).and_then(canonical_value)).collect()
    }
}

/// The event's `unique_count` operation: absent or null is `add`; anything other than `"add"`
/// or `"remove"` skips the event.
fn operation(event: &Event) -> Result<Operation, SkipReason> {
    match event.property("operation_type") {
        None | Some(Value::Null) => Ok(Operation::Add),
        Some(Value::String(op)) if op == "add" => Ok(Operation::Add),
        Some(Value::String(op)) if op == "remove" => Ok(Operation::Remove),
        Some(other) => Err(SkipReason::InvalidOperation { found: other.clone() }),
    }
}

/// The listed spelling of `value` among `values`, if it is listed.
fn listed(values: &Listed, value: Option<&str>) -> Option<String> {
    let value = value?;
    values.iter().find(|(canonical, _)| canonical == value).map(|(_, spelling)| spelling.clone())
}

fn canonical_text(text: &str) -> String {
    parse_decimal(text).map_or_else(|| text.to_owned(), decimal_text)
}

fn canonical_list(values: &[String]) -> Listed {
    values.iter().map(|v| (canonical_text(v), v.clone())).collect()
}

fn compile_matrix(segmentation: Option<&Segmentation>) -> Matrix {
    match segmentation {
        None => Matrix::None,
        Some(Segmentation::Single { key, values, unmatched }) => Matrix::Single {
            key: key.clone(),
            values: canonical_list(values),
            unmatched: *unmatched,
        },
        Some(Segmentation::Double { dimension1, dimension2, unmatched }) => Matrix::Double {
            key1: dimension1.key.clone(),
            values1: canonical_list(&dimension1.values),
            key2: dimension2.key.clone(),
            values2: canonical_list(&dimension2.values),
            unmatched: *unmatched,
        },
        Some(Segmentation::Linked { dimension1_key, dimension2_key, values, unmatched }) => {
            Matrix::Linked {
                key1: dimension1_key.clone(),
                key2: dimension2_key.clone(),
                pairs: values
                    .iter()
                    .map(|(first, seconds)| {
                        (canonical_text(first), first.clone(), canonical_list(seconds))
                    })
                    .collect(),
                unmatched: *unmatched,
            }
        }
    }
}

fn compile_filter(filter: &Filter) -> CompiledFilter {
    CompiledFilter {
        property: filter.property.clone(),
        op: filter.op,
        values: filter.values.iter().filter_map(canonical_value).collect(),
    }
}

impl CompiledFilter {
    fn passes(&self, event: &Event) -> bool {
        let found = event.property(&self.property);
        let equals_a_value =
            || found.and_then(canonical_value).is_some_and(|v| self.values.contains(&v));
        match self.op {
            FilterOp::Eq | FilterOp::In => equals_a_value(),
            FilterOp::Ne | FilterOp::NotIn => !equals_a_value(),
            FilterOp::Exists => found.is_some_and(|v| !v.is_null()),
            FilterOp::NotExists => found.is_none_or(Value::is_null),
        }
    }
}

/// An event as expressions see it.
struct EventProperties<'a>(&'a Event);

impl EventView for EventProperties<'_> {
    fn code(&self) -> &str {
        &self.0.code
    }

    fn timestamp_micros(&self) -> i64 {
        self.0.timestamp.timestamp_micros()
    }

    fn property(&self, path: &str) -> Option<&Value> {
        self.0.property(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_values_of_every_json_type() {
        let cases = [
            (json!("eu"), Some("eu")),
            (json!(""), Some("")),
            (json!(" 1"), Some(" 1")),
            (json!("1"), Some("1")),
            (json!("1.00"), Some("1")),
            (json!("1e3"), Some("1000")),
            (json!("-0"), Some("0")),
            (json!(1), Some("1")),
            (json!(1.0), Some("1")),
            (json!(-2.50), Some("-2.5")),
            (json!(0.1), Some("0.1")),
            (json!(true), Some("true")),
            (json!(false), Some("false")),
            (json!(null), None),
            (json!([1]), None),
            (json!({"a": 1}), None),
        ];
        for (value, expected) in cases {
            assert_eq!(canonical_value(&value).as_deref(), expected, "{value}");
        }
        // Beyond a Decimal's range a number keeps its JSON text (as serde_json writes it).
        let huge: Value = serde_json::from_str("1e40").unwrap();
        assert_eq!(canonical_value(&huge), Some(huge.to_string()));
        assert_eq!(decimal_value(&huge), None);
    }
}
