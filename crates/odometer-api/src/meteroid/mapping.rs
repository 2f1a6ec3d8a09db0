//! The one mapping between Meteroid's wire format and Odometer's model: metric definitions
//! both ways, enums, datetimes, pages.

use chrono::{DateTime, Utc};
use odometer_core::metric::{
    AggregationType, ConversionRounding, FilterOp, Segmentation, Unmatched,
};
use odometer_core::{Metric, MetricId};
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::MeteroidError;

/// Meteroid writes datetimes as RFC 3339 with milliseconds and `Z`.
pub fn datetime(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn aggregation_to_meteroid(kind: AggregationType) -> Option<&'static str> {
    Some(match kind {
        AggregationType::Count => "COUNT",
        AggregationType::Sum => "SUM",
        AggregationType::Min => "MIN",
        AggregationType::Max => "MAX",
        AggregationType::Mean => "MEAN",
        AggregationType::Latest => "LATEST",
        AggregationType::UniqueCount => "COUNT_DISTINCT",
        AggregationType::WeightedSum | AggregationType::CustomSql => return None,
    })
}

fn aggregation_from_meteroid(text: &str) -> Option<&'static str> {
    Some(match text {
        "COUNT" => "count",
        "SUM" => "sum",
        "MIN" => "min",
        "MAX" => "max",
        "MEAN" => "mean",
        "LATEST" => "latest",
        "COUNT_DISTINCT" => "unique_count",
        _ => return None,
    })
}

fn rounding_to_meteroid(r: ConversionRounding) -> &'static str {
    match r {
        ConversionRounding::None => "NONE",
        ConversionRounding::Up => "UP",
        ConversionRounding::Down => "DOWN",
        ConversionRounding::Nearest => "NEAREST",
        ConversionRounding::NearestHalf => "NEAREST_HALF",
        ConversionRounding::NearestDecile => "NEAREST_DECILE",
    }
}

fn filter_op_to_meteroid(op: FilterOp) -> Option<&'static str> {
    Some(match op {
        FilterOp::Eq => "EQUAL",
        FilterOp::Ne => "NOT_EQUAL",
        FilterOp::In => "IN",
        FilterOp::NotIn => "NOT_IN",
        FilterOp::Exists | FilterOp::NotExists => return None,
    })
}

/// A metric as this dialect shows it, or `None` when Meteroid has no way to describe it (no
/// product family, an aggregation Meteroid lacks, an expression, several group-by keys).
pub fn metric_view(metric: &Metric) -> Option<Value> {
    let spec = &metric.spec;
    if metric.deleted_at.is_some()
        || spec.aggregation.expression.is_some()
        || spec.aggregation.recurring
        || spec.group_by.len() > 1
        || spec.rounding.is_some()
    {
        return None;
    }
    // An `exists` filter is shown only as the half of a negation it was made with.
    let negated = |property: &str| {
        spec.filters
            .iter()
            .any(|f| f.property == property && matches!(f.op, FilterOp::Ne | FilterOp::NotIn))
    };
    if spec
        .filters
        .iter()
        .any(|f| f.op == FilterOp::NotExists || (f.op == FilterOp::Exists && !negated(&f.property)))
    {
        return None;
    }
    let product_family_id = spec.product_family_id.as_ref()?;
    let aggregation_type = aggregation_to_meteroid(spec.aggregation.kind)?;
    let mut out = Map::new();
    out.insert("id".into(), json!(metric.id.to_string()));
    out.insert("name".into(), json!(spec.name));
    out.insert("code".into(), json!(spec.event_code));
    if let Some(d) = &spec.description {
        out.insert("description".into(), json!(d));
    }
    out.insert("aggregation_type".into(), json!(aggregation_type));
    if let Some(field) = &spec.aggregation.field {
        out.insert("aggregation_key".into(), json!(field));
    }
    if let Some(uc) = &spec.unit_conversion {
        // Meteroid's factor is an int32; a fractional factor set through the native API shows
        // as its integer part would mislead, so it is written as the decimal's integer only
        // when it is one.
        if uc.factor.fract().is_zero() {
            out.insert(
                "unit_conversion".into(),
                json!({"factor": uc.factor.to_i64(),
                       "rounding": rounding_to_meteroid(uc.rounding)}),
            );
        }
    }
    if let Some(seg) = &spec.segmentation {
        out.insert("segmentation_matrix".into(), segmentation_to_meteroid(seg));
    }
    if let Some(key) = spec.group_by.first() {
        out.insert("usage_group_key".into(), json!(key));
    }
    let filters: Vec<Value> = spec
        .filters
        .iter()
        .filter_map(|f| {
            let op = filter_op_to_meteroid(f.op)?;
            let values: Vec<Value> = f
                .values
                .iter()
                .map(|v| json!(v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect();
            Some(json!({"property": f.property, "op": op, "values": values}))
        })
        .collect();
    if !filters.is_empty() {
        out.insert("filters".into(), Value::Array(filters));
    }
    out.insert("product_family_id".into(), json!(product_family_id));
    if let Some(p) = &spec.product_id {
        out.insert("product_id".into(), json!(p));
    }
    out.insert("created_at".into(), json!(datetime(&metric.created_at)));
    if let Some(a) = &metric.archived_at {
        out.insert("archived_at".into(), json!(datetime(a)));
    }
    Some(Value::Object(out))
}

/// The list form of a metric (`MetricSummary`).
pub fn metric_summary(full: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "id",
        "name",
        "code",
        "description",
        "aggregation_type",
        "aggregation_key",
        "created_at",
        "archived_at",
    ] {
        if let Some(v) = full.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}

fn segmentation_to_meteroid(seg: &Segmentation) -> Value {
    match seg {
        Segmentation::Single { key, values, .. } => {
            json!({"type": "SINGLE", "key": key, "values": values})
        }
        Segmentation::Double { dimension1, dimension2, .. } => json!({
            "type": "DOUBLE",
            "dimension1": {"key": dimension1.key, "values": dimension1.values},
            "dimension2": {"key": dimension2.key, "values": dimension2.values},
        }),
        Segmentation::Linked { dimension1_key, dimension2_key, values, .. } => json!({
            "type": "LINKED",
            "dimension1_key": dimension1_key,
            "dimension2_key": dimension2_key,
            "values": values,
        }),
    }
}

/// Meteroid's segmentation matrix to Odometer's segmentation. Meteroid drops events whose
/// values are outside the matrix, so the segmentation is `unmatched: drop`.
pub fn segmentation_from_meteroid(value: &Value) -> Result<Value, MeteroidError> {
    let Some(object) = value.as_object() else {
        return Err(MeteroidError::bad_request("segmentation_matrix must be an object"));
    };
    let kind = match object.get("type").and_then(Value::as_str) {
        Some("SINGLE") => "single",
        Some("DOUBLE") => "double",
        Some("LINKED") => "linked",
        _ => {
            return Err(MeteroidError::bad_request(
                "segmentation_matrix.type must be SINGLE, DOUBLE or LINKED",
            ))
        }
    };
    let mut out = object.clone();
    out.insert("type".into(), json!(kind));
    out.insert("unmatched".into(), json!(Unmatched::Drop.as_str()));
    Ok(Value::Object(out))
}

/// Meteroid's `unit_conversion {factor: int32, rounding}` to Odometer's.
pub fn unit_conversion_from_meteroid(value: &Value) -> Result<Value, MeteroidError> {
    let factor = value.get("factor").and_then(Value::as_i64);
    let rounding = value.get("rounding").and_then(Value::as_str);
    let rounding = match rounding {
        Some("NONE") => ConversionRounding::None,
        Some("UP") => ConversionRounding::Up,
        Some("DOWN") => ConversionRounding::Down,
        Some("NEAREST") => ConversionRounding::Nearest,
        Some("NEAREST_HALF") => ConversionRounding::NearestHalf,
        Some("NEAREST_DECILE") => ConversionRounding::NearestDecile,
        _ => {
            return Err(MeteroidError::bad_request(
                "unit_conversion.rounding must be one of UP, DOWN, NEAREST, NEAREST_HALF, \
                 NEAREST_DECILE, NONE",
            ))
        }
    };
    match factor {
        Some(f) if f > 0 && f <= i64::from(i32::MAX) => {
            Ok(json!({"factor": f.to_string(), "rounding": rounding.as_str()}))
        }
        _ => Err(MeteroidError::bad_request(
            "unit_conversion.factor must be a positive 32-bit integer (usage is divided by it)",
        )),
    }
}

/// Meteroid's metric filters to Odometer's.
pub fn filters_from_meteroid(value: &Value) -> Result<Value, MeteroidError> {
    let Some(items) = value.as_array() else {
        return Err(MeteroidError::bad_request("filters must be a list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let op = match item.get("op").and_then(Value::as_str) {
            Some("EQUAL") => "eq",
            Some("NOT_EQUAL") => "ne",
            Some("IN") => "in",
            Some("NOT_IN") => "not_in",
            _ => {
                return Err(MeteroidError::bad_request(format!(
                    "filters[{i}].op must be EQUAL, NOT_EQUAL, IN or NOT_IN"
                )))
            }
        };
        let mut filter = item.as_object().cloned().unwrap_or_default();
        filter.insert("op".into(), json!(op));
        let property = filter.get("property").cloned();
        out.push(Value::Object(filter));
        // Meteroid's negations hold only for events that have the property; Odometer's `ne`
        // also holds when it is absent, so an `exists` filter goes with it (and is not shown).
        if matches!(op, "ne" | "not_in") {
            out.push(json!({"property": property, "op": "exists"}));
        }
    }
    Ok(Value::Array(out))
}

/// The native definition of a metric created through this dialect. `code` (Odometer's
/// unique metric code) is derived from the id, since Meteroid's `code` is the event code and
/// several metrics may read one.
pub fn create_definition(body: &Value, id: MetricId) -> Result<Value, MeteroidError> {
    let Some(object) = body.as_object() else {
        return Err(MeteroidError::bad_request("the body must be a JSON object"));
    };
    const KNOWN: [&str; 11] = [
        "name",
        "code",
        "aggregation_type",
        "product_family_id",
        "aggregation_key",
        "description",
        "filters",
        "product_id",
        "segmentation_matrix",
        "unit_conversion",
        "usage_group_key",
    ];
    if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(MeteroidError::bad_request(format!("unknown field '{unknown}'")));
    }
    let text = |key: &str| -> Result<Option<&str>, MeteroidError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(MeteroidError::bad_request(format!("{key} must be a string"))),
        }
    };
    let required = |key: &str| -> Result<&str, MeteroidError> {
        text(key)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MeteroidError::bad_request(format!("{key} is required")))
    };
    let name = required("name")?;
    let code = required("code")?;
    let aggregation_type = required("aggregation_type")?;
    let kind = aggregation_from_meteroid(aggregation_type).ok_or_else(|| {
        MeteroidError::bad_request(format!(
            "aggregation_type must be COUNT, SUM, MIN, MAX, MEAN, LATEST or COUNT_DISTINCT, \
             not '{aggregation_type}'"
        ))
    })?;
    let product_family_id = required("product_family_id")?;
    let mut aggregation = json!({"type": kind});
    if let Some(key) = text("aggregation_key")? {
        // COUNT reads no value; Meteroid ignores the key there, and so does this dialect
        // rather than refusing what Meteroid accepts.
        if kind != "count" {
            aggregation["field"] = json!(key);
        }
    } else if kind != "count" {
        return Err(MeteroidError::bad_request(format!(
            "aggregation_key is required for {aggregation_type}"
        )));
    }
    let mut def = json!({
        "code": internal_code(id),
        "event_code": code,
        "name": name,
        "aggregation": aggregation,
        "product_family_id": product_family_id,
    });
    if let Some(d) = text("description")? {
        def["description"] = json!(d);
    }
    if let Some(p) = text("product_id")? {
        def["product_id"] = json!(p);
    }
    if let Some(k) = text("usage_group_key")? {
        def["group_by"] = json!([k]);
    }
    if let Some(v) = object.get("filters").filter(|v| !v.is_null()) {
        def["filters"] = filters_from_meteroid(v)?;
    }
    if let Some(v) = object.get("segmentation_matrix").filter(|v| !v.is_null()) {
        def["segmentation"] = segmentation_from_meteroid(v)?;
    }
    if let Some(v) = object.get("unit_conversion").filter(|v| !v.is_null()) {
        def["unit_conversion"] = unit_conversion_from_meteroid(v)?;
    }
    Ok(def)
}

/// Odometer's metric code for a metric made through this dialect: `meteroid-` and the id's
/// digits (a code must not look like an id).
pub fn internal_code(id: MetricId) -> String {
    let text = id.to_string();
    format!("meteroid-{}", &text[MetricId::PREFIX.len()..])
}

/// Meteroid's PATCH body to a native merge patch. Absent members stay; `null` clears (Meteroid
/// itself cannot clear over REST, its SDK means to). `code`, `aggregation_type` and the other
/// definition members cannot change here.
pub fn update_patch(body: &Value) -> Result<Value, MeteroidError> {
    let Some(object) = body.as_object() else {
        return Err(MeteroidError::bad_request("the body must be a JSON object"));
    };
    let mut patch = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "name" => match value {
                Value::String(s) if !s.is_empty() => {
                    patch.insert("name".into(), value.clone());
                }
                _ => return Err(MeteroidError::bad_request("name must be a non-empty string")),
            },
            "description" => match value {
                Value::String(_) | Value::Null => {
                    patch.insert("description".into(), value.clone());
                }
                _ => {
                    return Err(MeteroidError::bad_request("description must be a string or null"))
                }
            },
            "segmentation_matrix" => {
                let v =
                    if value.is_null() { Value::Null } else { segmentation_from_meteroid(value)? };
                patch.insert("segmentation".into(), v);
            }
            "unit_conversion" => {
                let v = if value.is_null() {
                    Value::Null
                } else {
                    unit_conversion_from_meteroid(value)?
                };
                patch.insert("unit_conversion".into(), v);
            }
            "filters" => {
                let v = if value.is_null() { json!([]) } else { filters_from_meteroid(value)? };
                patch.insert("filters".into(), v);
            }
            "code" | "aggregation_type" | "aggregation_key" | "usage_group_key"
            | "product_family_id" | "product_id" => {
                return Err(MeteroidError::bad_request(format!(
                    "{key} is immutable: create a new metric instead"
                )))
            }
            other => return Err(MeteroidError::bad_request(format!("unknown field '{other}'"))),
        }
    }
    Ok(Value::Object(patch))
}

/// `pagination_meta` of a 0-based page.
#[derive(Debug, Serialize)]
pub struct PaginationMeta {
    pub page: u32,
    pub per_page: u32,
    pub total_items: u64,
    pub total_pages: u64,
}

/// Page/per_page as Meteroid reads them: 0-based page (default 0), per_page 1-100 (default 10).
pub fn page_bounds(page: Option<u32>, per_page: Option<u32>) -> Result<(u32, u32), MeteroidError> {
    let per_page = per_page.unwrap_or(10);
    if !(1..=100).contains(&per_page) {
        return Err(MeteroidError::bad_request("per_page must be between 1 and 100"));
    }
    Ok((page.unwrap_or(0), per_page))
}

/// One page of `items` and its `pagination_meta`, as `{data, pagination_meta}`.
pub fn paginate(items: Vec<Value>, page: u32, per_page: u32) -> Value {
    let total_items = items.len() as u64;
    let total_pages = total_items.div_ceil(u64::from(per_page));
    let data: Vec<Value> =
        items.into_iter().skip(page as usize * per_page as usize).take(per_page as usize).collect();
    json!({
        "data": data,
        "pagination_meta": PaginationMeta { page, per_page, total_items, total_pages },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn segmentation_matrices_become_dropping_segmentations() {
        let cases = [
            (
                json!({"type": "SINGLE", "key": "region", "values": ["eu"]}),
                json!({"type": "single", "key": "region", "values": ["eu"], "unmatched": "drop"}),
            ),
            (
                json!({"type": "DOUBLE", "dimension1": {"key": "a", "values": ["1"]},
                       "dimension2": {"key": "b", "values": ["2"]}}),
                json!({"type": "double", "dimension1": {"key": "a", "values": ["1"]},
                       "dimension2": {"key": "b", "values": ["2"]}, "unmatched": "drop"}),
            ),
            (
                json!({"type": "LINKED", "dimension1_key": "p", "dimension2_key": "r",
                       "values": {"aws": ["us"]}}),
                json!({"type": "linked", "dimension1_key": "p", "dimension2_key": "r",
                       "values": {"aws": ["us"]}, "unmatched": "drop"}),
            ),
        ];
        for (meteroid, native) in cases {
            assert_eq!(segmentation_from_meteroid(&meteroid).unwrap(), native);
        }
        for bad in [json!({"type": "single"}), json!({"key": "k"}), json!([])] {
            assert!(segmentation_from_meteroid(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_conversions_need_a_positive_int32_factor_and_a_known_rounding() {
        assert_eq!(
            unit_conversion_from_meteroid(&json!({"factor": 1024, "rounding": "NEAREST_HALF"}))
                .unwrap(),
            json!({"factor": "1024", "rounding": "nearest_half"})
        );
        for bad in [
            json!({"factor": 0, "rounding": "UP"}),
            json!({"factor": -3, "rounding": "UP"}),
            json!({"factor": 1.5, "rounding": "UP"}),
            json!({"factor": 3_000_000_000u64, "rounding": "UP"}),
            json!({"factor": 3, "rounding": "SIDEWAYS"}),
            json!({"factor": 3}),
        ] {
            assert!(unit_conversion_from_meteroid(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn negations_carry_an_exists_filter() {
        let filters = filters_from_meteroid(&json!([
            {"property": "tier", "op": "NOT_IN", "values": ["a", "b"]},
            {"property": "plan", "op": "EQUAL", "values": ["pro"]},
        ]))
        .unwrap();
        assert_eq!(
            filters,
            json!([
                {"property": "tier", "op": "not_in", "values": ["a", "b"]},
                {"property": "tier", "op": "exists"},
                {"property": "plan", "op": "eq", "values": ["pro"]},
            ])
        );
        assert!(filters_from_meteroid(&json!([{"property": "x", "op": "LIKE"}])).is_err());
    }

    #[test]
    fn patches_clear_with_null_and_refuse_immutable_members() {
        assert_eq!(
            update_patch(&json!({"description": null, "unit_conversion": null,
                                 "segmentation_matrix": null, "filters": null}))
            .unwrap(),
            json!({"description": null, "unit_conversion": null, "segmentation": null,
                   "filters": []})
        );
        for member in ["code", "aggregation_type", "aggregation_key", "usage_group_key"] {
            let err = update_patch(&json!({member: "x"})).unwrap_err();
            assert!(format!("{err:?}").contains("immutable"), "{member}");
        }
        assert!(update_patch(&json!({"name": null})).is_err());
        assert!(update_patch(&json!({"colour": "red"})).is_err());
    }

    #[test]
    fn pages_are_zero_based_with_their_meta() {
        let items: Vec<Value> = (0..7).map(|n| json!(n)).collect();
        assert_eq!(
            paginate(items.clone(), 2, 3),
            json!({"data": [6], "pagination_meta":
                   {"page": 2, "per_page": 3, "total_items": 7, "total_pages": 3}})
        );
        assert_eq!(paginate(items, 5, 3)["data"], json!([]));
        assert_eq!(
            paginate(Vec::new(), 0, 10)["pagination_meta"],
            json!({"page": 0, "per_page": 10, "total_items": 0, "total_pages": 0})
        );
        assert!(page_bounds(None, Some(0)).is_err());
        assert!(page_bounds(None, Some(101)).is_err());
        assert_eq!(page_bounds(None, None).unwrap(), (0, 10));
    }

    #[test]
    fn datetimes_have_milliseconds_and_z() {
        let t = DateTime::parse_from_rfc3339("2026-01-05T10:00:00.123456+02:00").unwrap();
        assert_eq!(datetime(&t.with_timezone(&Utc)), "2026-01-05T08:00:00.123Z");
    }
}
