//! Turning an untrusted JSON metric definition into a valid [`MetricSpec`], reporting every
//! problem with its field path (semantics section 3 and the native API's metric shape).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::expression::Expression;
use crate::id::MetricId;
use crate::input::{decimal_value, distinct_strings, string_value, type_name, ObjectReader};
use crate::metric::{
    Aggregation, AggregationType, ConversionRounding, Dimension, Filter, FilterOp, MetricSpec,
    Rounding, RoundingFunction, Segmentation, SqlDefinition, UnitConversion, Unmatched,
};
use crate::problem::{index, join, Problems};

/// Longest metric code, event code or property path, in characters.
pub const MAX_CODE_CHARS: usize = 200;
const MAX_NAME_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 10_000;
const MAX_PATH_CHARS: usize = 256;
const MAX_VALUE_CHARS: usize = 1_000;
const MAX_QUERY_CHARS: usize = 100_000;
const MAX_GROUP_BY_KEYS: usize = 16;
const MAX_FILTERS: usize = 100;
const MAX_FILTER_VALUES: usize = 1_000;
const MAX_SEGMENT_VALUES: usize = 1_000;
/// `rust_decimal` keeps at most 28 fractional digits.
const MAX_PRECISION: i64 = 28;

/// Members the catalog assigns; a client may not set them.
pub const READ_ONLY_MEMBERS: [&str; 7] =
    ["id", "revision", "created_at", "updated_at", "archived_at", "deleted_at", "organization_id"];

/// Parses and validates a whole metric definition (a create request, or a document produced by
/// merging a patch into the current definition).
pub fn parse_metric_spec(value: &Value) -> Result<MetricSpec, Problems> {
    let mut problems = Problems::new();
    let Some(mut reader) = ObjectReader::new("", value, &mut problems) else {
        return Err(problems);
    };
    reader.refuse_read_only(&READ_ONLY_MEMBERS, &mut problems);
    let code = reader.required_string("code", MAX_CODE_CHARS, &mut problems);
    if let Some(code) = &code {
        check_code(code, &mut problems);
    }
    let event_code = reader.optional_string("event_code", MAX_CODE_CHARS, &mut problems);
    let name = reader.required_string("name", MAX_NAME_CHARS, &mut problems);
    let description = reader.optional_string("description", MAX_DESCRIPTION_CHARS, &mut problems);
    let aggregation = match reader.get("aggregation") {
        None => {
            problems.push("aggregation", "missing_field", "is required");
            None
        }
        Some(value) => parse_aggregation(value, &mut problems),
    };
    let filters_path = reader.path("filters");
    let filter_items = reader.array("filters", &mut problems);
    if filter_items.len() > MAX_FILTERS {
        problems.push(&filters_path, "too_many", format!("at most {MAX_FILTERS} filters"));
    }
    let filters: Vec<Filter> = filter_items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_filter(&index(&filters_path, i), item, &mut problems))
        .collect();
    let segmentation =
        reader.get("segmentation").and_then(|v| parse_segmentation(v, &mut problems));
    let group_by_items = reader.array("group_by", &mut problems);
    let group_by = parse_group_by(group_by_items, segmentation.as_ref(), &mut problems);
    let unit_conversion =
        reader.get("unit_conversion").and_then(|v| parse_unit_conversion(v, &mut problems));
    let rounding = reader.get("rounding").and_then(|v| parse_rounding(v, &mut problems));
    let product_family_id =
        reader.optional_string("product_family_id", MAX_CODE_CHARS, &mut problems);
    let product_id = reader.optional_string("product_id", MAX_CODE_CHARS, &mut problems);
    reader.finish(&mut problems);

    match (code, name, aggregation) {
        (Some(code), Some(name), Some(aggregation)) if problems.is_empty() => Ok(MetricSpec {
            event_code: event_code.unwrap_or_else(|| code.clone()),
            code,
            name,
            description,
            aggregation,
            filters,
            segmentation,
            group_by,
            unit_conversion,
            rounding,
            product_family_id,
            product_id,
        }),
        _ => Err(problems),
    }
}

/// Codes appear in URLs, so they keep to a URL-safe alphabet, and never look like a metric id
/// (`/v1/metrics/{id_or_code}` must not be ambiguous).
fn check_code(code: &str, problems: &mut Problems) {
    let url_safe =
        code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !url_safe {
        problems.push(
            "code",
            "invalid_value",
            "may contain only letters, digits and '_', '-', '.', ':'",
        );
    } else if MetricId::parse(code).is_some() {
        problems.push("code", "invalid_value", "must not look like a metric id");
    }
}

/// A property path: a top-level key or a dotted path into nested objects (`usage.bytes`).
pub fn parse_property_path(path: &str, value: &Value, problems: &mut Problems) -> Option<String> {
    let text = string_value(path, value, MAX_PATH_CHARS, problems)?;
    if text.split('.').any(str::is_empty) {
        problems.push(
            path,
            "invalid_value",
            format!("'{text}' is not a property path (empty segment)"),
        );
        return None;
    }
    Some(text)
}

fn parse_aggregation(value: &Value, problems: &mut Problems) -> Option<Aggregation> {
    let mut reader = ObjectReader::new("aggregation", value, problems)?;
    let kind = match reader.get("type") {
        None => {
            problems.push("aggregation.type", "missing_field", "is required");
            None
        }
        Some(Value::String(text)) => {
            let kind = AggregationType::parse(text);
            if kind.is_none() {
                let known: Vec<&str> = AggregationType::ALL.iter().map(|t| t.as_str()).collect();
                problems.push(
                    "aggregation.type",
                    "unknown_aggregation",
                    format!("'{text}' is not one of {}", known.join(", ")),
                );
            }
            kind
        }
        Some(other) => {
            problems.push(
                "aggregation.type",
                "invalid_type",
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    };
    let Some(kind) = kind else {
        // Without a known type the other members cannot be judged; do not pile up noise.
        return None;
    };
    if kind == AggregationType::CustomSql {
        let sql = parse_sql(&mut reader, problems);
        for member in ["field", "expression"] {
            if reader.get(member).is_some() {
                problems.push(
                    join("aggregation", member),
                    "not_allowed",
                    "is not allowed for custom_sql (the query computes the value)",
                );
            }
        }
        if reader.bool_or("recurring", false, problems) {
            problems.push(
                "aggregation.recurring",
                "recurring_not_allowed",
                "custom_sql metrics cannot be recurring",
            );
        }
        reader.finish(problems);
        return sql.map(|sql| Aggregation {
            kind,
            field: None,
            recurring: false,
            expression: None,
            sql: Some(sql),
        });
    }
    let field =
        reader.get("field").and_then(|v| parse_property_path("aggregation.field", v, problems));
    let expression =
        reader.optional_string("expression", MAX_QUERY_CHARS, problems).and_then(|source| {
            match Expression::parse(&source) {
                Ok(_) => Some(source),
                Err(err) => {
                    problems.push("aggregation.expression", "invalid_expression", err.to_string());
                    None
                }
            }
        });
    let recurring = reader.bool_or("recurring", false, problems);
    let field_given = reader.has_value("field");
    let expression_given = reader.has_value("expression");
    for member in ["query", "customer_query", "dataschema", "visual_query_builder", "datasource"] {
        if reader.get(member).is_some() {
            problems.push(
                join("aggregation", member),
                "not_allowed",
                format!("is only allowed for custom_sql, not {}", kind.as_str()),
            );
        }
    }
    reader.finish(problems);

    if kind.reads_value() {
        if !field_given && !expression_given {
            problems.push(
                "aggregation.field",
                "missing_field",
                format!("is required for {} (or give an expression)", kind.as_str()),
            );
        } else if field_given && expression_given {
            problems.push(
                "aggregation.expression",
                "not_allowed",
                "give either a field or an expression, not both",
            );
        }
    } else {
        for (given, member) in [(field_given, "field"), (expression_given, "expression")] {
            if given {
                problems.push(
                    join("aggregation", member),
                    "not_allowed",
                    format!("is not allowed for {} (it reads no value)", kind.as_str()),
                );
            }
        }
    }
    if recurring && !kind.may_recur() {
        problems.push(
            "aggregation.recurring",
            "recurring_not_allowed",
            format!(
                "{} cannot be recurring (only sum, unique_count and weighted_sum can)",
                kind.as_str()
            ),
        );
    }
    Some(Aggregation { kind, field, recurring, expression, sql: None })
}

fn parse_sql(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<SqlDefinition> {
    // SQL is written over several lines: line breaks and tabs are allowed, other control
    // characters are not.
    let query = match reader.get("query") {
        None | Some(Value::Null) => {
            problems.push("aggregation.query", "missing_field", "is required");
            None
        }
        Some(value) => sql_text("aggregation.query", value, problems),
    };
    if let Some(query) = &query {
        check_select_shape("aggregation.query", query, problems);
    }
    let customer_query = match reader.get("customer_query") {
        None | Some(Value::Null) => None,
        Some(value) => sql_text("aggregation.customer_query", value, problems),
    };
    if let Some(customer_query) = &customer_query {
        check_select_shape("aggregation.customer_query", customer_query, problems);
    }
    let dataschema = reader.get("dataschema").cloned();
    let visual_query_builder = reader.get("visual_query_builder").cloned();
    let datasource = reader.get("datasource").cloned();
    query.map(|query| SqlDefinition {
        query,
        customer_query,
        dataschema,
        visual_query_builder,
        datasource,
    })
}

fn sql_text(path: &str, value: &Value, problems: &mut Problems) -> Option<String> {
    let flattened = value.as_str().map(|text| Value::String(text.replace(['\n', '\r', '\t'], " ")));
    string_value(path, flattened.as_ref().unwrap_or(value), MAX_QUERY_CHARS, problems)?;
    value.as_str().map(str::to_owned)
}

/// A SQL metric's query is one read-only SELECT over allowed tables and functions
/// ([`crate::sql_metric`]); which tables exist is for the store to check.
fn check_select_shape(path: &str, query: &str, problems: &mut Problems) {
    if let Err(err) = crate::sql_metric::parse_sql_query(query) {
        problems.push(path, "invalid_sql", err.to_string());
    }
}

fn parse_filter(path: &str, value: &Value, problems: &mut Problems) -> Option<Filter> {
    let mut reader = ObjectReader::new(path, value, problems)?;
    let property_path = reader.path("property");
    let property = match reader.get("property") {
        None => {
            problems.push(&property_path, "missing_field", "is required");
            None
        }
        Some(v) => parse_property_path(&property_path, v, problems),
    };
    let op_path = reader.path("op");
    let op = match reader.get("op") {
        None => {
            problems.push(&op_path, "missing_field", "is required");
            None
        }
        Some(Value::String(text)) => {
            let op = FilterOp::parse(text);
            if op.is_none() {
                let known: Vec<&str> = FilterOp::ALL.iter().map(|o| o.as_str()).collect();
                problems.push(
                    &op_path,
                    "invalid_value",
                    format!("'{text}' is not one of {}", known.join(", ")),
                );
            }
            op
        }
        Some(other) => {
            problems.push(
                &op_path,
                "invalid_type",
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    };
    let values_path = reader.path("values");
    let items = reader.array("values", problems);
    reader.finish(problems);
    let mut values = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => problems.push(
                index(&values_path, i),
                "too_long",
                format!("must be at most {MAX_VALUE_CHARS} characters"),
            ),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                if values.contains(item) {
                    problems.push(index(&values_path, i), "duplicate_value", "is listed twice");
                } else {
                    values.push(item.clone());
                }
            }
            other => problems.push(
                index(&values_path, i),
                "invalid_type",
                format!("expected a string, number or boolean, got {}", type_name(other)),
            ),
        }
    }
    if values.len() > MAX_FILTER_VALUES {
        problems.push(&values_path, "too_many", format!("at most {MAX_FILTER_VALUES} values"));
    }
    let op = op?;
    let arity_ok = match op {
        FilterOp::Eq | FilterOp::Ne => items.len() == 1,
        FilterOp::In | FilterOp::NotIn => !items.is_empty(),
        FilterOp::Exists | FilterOp::NotExists => items.is_empty(),
    };
    if !arity_ok {
        let expected = match op {
            FilterOp::Eq | FilterOp::Ne => "exactly one value",
            FilterOp::In | FilterOp::NotIn => "at least one value",
            FilterOp::Exists | FilterOp::NotExists => "no values",
        };
        problems.push(&values_path, "invalid_value", format!("'{}' takes {expected}", op.as_str()));
    }
    Some(Filter { property: property?, op, values })
}

fn parse_unmatched(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Unmatched {
    let path = reader.path("unmatched");
    match reader.get("unmatched") {
        None => Unmatched::Other,
        Some(Value::String(s)) if s == "other" => Unmatched::Other,
        Some(Value::String(s)) if s == "drop" => Unmatched::Drop,
        Some(other) => {
            problems.push(
                path,
                "invalid_value",
                format!("expected 'other' or 'drop', got {other}"),
            );
            Unmatched::Other
        }
    }
}

/// A list of 1 or more distinct segment values.
fn segment_values(path: &str, value: Option<&Value>, problems: &mut Problems) -> Vec<String> {
    match value {
        None => {
            problems.push(path, "missing_field", "is required");
            Vec::new()
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                problems.push(path, "invalid_value", "must list at least one value");
            } else if items.len() > MAX_SEGMENT_VALUES {
                problems.push(path, "too_many", format!("at most {MAX_SEGMENT_VALUES} values"));
            }
            distinct_strings(path, items, MAX_VALUE_CHARS, problems)
        }
        Some(other) => {
            problems.push(
                path,
                "invalid_type",
                format!("expected an array, got {}", type_name(other)),
            );
            Vec::new()
        }
    }
}

fn required_path(
    reader: &mut ObjectReader<'_>,
    key: &'static str,
    problems: &mut Problems,
) -> Option<String> {
    let path = reader.path(key);
    match reader.get(key) {
        None => {
            problems.push(path, "missing_field", "is required");
            None
        }
        Some(value) => parse_property_path(&path, value, problems),
    }
}

fn parse_dimension(
    path: &str,
    value: Option<&Value>,
    problems: &mut Problems,
) -> Option<Dimension> {
    let Some(value) = value else {
        problems.push(path, "missing_field", "is required");
        return None;
    };
    let mut reader = ObjectReader::new(path, value, problems)?;
    let key = required_path(&mut reader, "key", problems);
    let values_path = reader.path("values");
    let values = segment_values(&values_path, reader.get("values"), problems);
    reader.finish(problems);
    Some(Dimension { key: key?, values })
}

fn parse_segmentation(value: &Value, problems: &mut Problems) -> Option<Segmentation> {
    let path = "segmentation";
    let mut reader = ObjectReader::new(path, value, problems)?;
    let kind = match reader.get("type") {
        Some(Value::String(s)) if matches!(s.as_str(), "single" | "double" | "linked") => {
            s.as_str()
        }
        Some(Value::String(s)) if s == "none" => {
            reader.finish(problems);
            return None;
        }
        Some(other) => {
            problems.push(
                "segmentation.type",
                "invalid_value",
                format!("expected 'single', 'double' or 'linked', got {other}"),
            );
            return None;
        }
        None => {
            problems.push("segmentation.type", "missing_field", "is required");
            return None;
        }
    };
    let unmatched = parse_unmatched(&mut reader, problems);
    let segmentation = match kind {
        "single" => {
            let key = required_path(&mut reader, "key", problems);
            let values = segment_values("segmentation.values", reader.get("values"), problems);
            key.map(|key| Segmentation::Single { key, values, unmatched })
        }
        "double" => {
            let d1 = parse_dimension("segmentation.dimension1", reader.get("dimension1"), problems);
            let d2 = parse_dimension("segmentation.dimension2", reader.get("dimension2"), problems);
            match (d1, d2) {
                (Some(d1), Some(d2)) => {
                    if d1.key == d2.key {
                        problems.push(
                            "segmentation.dimension2.key",
                            "invalid_value",
                            "must differ from dimension1.key",
                        );
                    }
                    Some(Segmentation::Double { dimension1: d1, dimension2: d2, unmatched })
                }
                _ => None,
            }
        }
        _ => {
            let k1 = required_path(&mut reader, "dimension1_key", problems);
            let k2 = required_path(&mut reader, "dimension2_key", problems);
            let values = parse_linked_values(reader.get("values"), problems);
            match (k1, k2) {
                (Some(k1), Some(k2)) => {
                    if k1 == k2 {
                        problems.push(
                            "segmentation.dimension2_key",
                            "invalid_value",
                            "must differ from dimension1_key",
                        );
                    }
                    Some(Segmentation::Linked {
                        dimension1_key: k1,
                        dimension2_key: k2,
                        values,
                        unmatched,
                    })
                }
                _ => None,
            }
        }
    };
    reader.finish(problems);
    segmentation
}

fn parse_linked_values(
    value: Option<&Value>,
    problems: &mut Problems,
) -> BTreeMap<String, Vec<String>> {
    let path = "segmentation.values";
    let mut out = BTreeMap::new();
    match value {
        None => problems.push(path, "missing_field", "is required"),
        Some(Value::Object(map)) => {
            if map.is_empty() {
                problems.push(path, "invalid_value", "must list at least one value");
            }
            for (first, seconds) in map {
                let entry_path = join(path, first);
                if string_value(
                    &entry_path,
                    &Value::String(first.clone()),
                    MAX_VALUE_CHARS,
                    problems,
                )
                .is_none()
                {
                    continue;
                }
                out.insert(first.clone(), segment_values(&entry_path, Some(seconds), problems));
            }
        }
        Some(other) => problems.push(
            path,
            "invalid_type",
            format!("expected an object of value lists, got {}", type_name(other)),
        ),
    }
    out
}

fn parse_group_by(
    items: &[Value],
    segmentation: Option<&Segmentation>,
    problems: &mut Problems,
) -> Vec<String> {
    if items.len() > MAX_GROUP_BY_KEYS {
        problems.push("group_by", "too_many", format!("at most {MAX_GROUP_BY_KEYS} keys"));
    }
    let segment_keys = segmentation.map(Segmentation::keys).unwrap_or_default();
    let mut keys: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = index("group_by", i);
        let Some(key) = parse_property_path(&path, item, problems) else { continue };
        if keys.contains(&key) {
            problems.push(path, "duplicate_value", format!("'{key}' is listed twice"));
        } else if segment_keys.contains(&key.as_str()) {
            problems.push(path, "invalid_value", format!("'{key}' is already a segmentation key"));
        } else {
            keys.push(key);
        }
    }
    keys
}

fn parse_unit_conversion(value: &Value, problems: &mut Problems) -> Option<UnitConversion> {
    let mut reader = ObjectReader::new("unit_conversion", value, problems)?;
    let factor = match reader.get("factor") {
        None => {
            problems.push("unit_conversion.factor", "missing_field", "is required");
            None
        }
        Some(v) => match decimal_value(v) {
            Some(d) if d > Decimal::ZERO => Some(d.normalize()),
            _ => {
                problems.push(
                    "unit_conversion.factor",
                    "invalid_value",
                    format!("must be a positive decimal, got {v}"),
                );
                None
            }
        },
    };
    let rounding = match reader.get("rounding") {
        None => ConversionRounding::None,
        Some(Value::String(s)) => ConversionRounding::parse(s).unwrap_or_else(|| {
            let known: Vec<&str> = ConversionRounding::ALL.iter().map(|r| r.as_str()).collect();
            problems.push(
                "unit_conversion.rounding",
                "invalid_value",
                format!("'{s}' is not one of {}", known.join(", ")),
            );
            ConversionRounding::None
        }),
        Some(other) => {
            problems.push(
                "unit_conversion.rounding",
                "invalid_type",
                format!("expected a string, got {}", type_name(other)),
            );
            ConversionRounding::None
        }
    };
    reader.finish(problems);
    factor.map(|factor| UnitConversion { factor, rounding })
}

fn parse_rounding(value: &Value, problems: &mut Problems) -> Option<Rounding> {
    let mut reader = ObjectReader::new("rounding", value, problems)?;
    let function = match reader.get("function") {
        None => {
            problems.push("rounding.function", "missing_field", "is required");
            None
        }
        Some(Value::String(s)) => {
            let f = RoundingFunction::parse(s);
            if f.is_none() {
                problems.push(
                    "rounding.function",
                    "invalid_value",
                    format!("'{s}' is not one of round, ceil, floor"),
                );
            }
            f
        }
        Some(other) => {
            problems.push(
                "rounding.function",
                "invalid_type",
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    };
    let precision = match reader.get("precision") {
        None => Some(0),
        Some(v) => match v.as_i64() {
            Some(p) if (-MAX_PRECISION..=MAX_PRECISION).contains(&p) => i32::try_from(p).ok(),
            _ => {
                problems.push(
                    "rounding.precision",
                    "invalid_value",
                    format!("must be an integer from -{MAX_PRECISION} to {MAX_PRECISION}, got {v}"),
                );
                None
            }
        },
    };
    reader.finish(problems);
    Some(Rounding { function: function?, precision: precision? })
}
