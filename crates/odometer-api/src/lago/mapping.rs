//! The one mapping between Lago's wire shapes and Odometer's core types: metrics (aggregation
//! types, `filters` as segmentation dimensions, rounding), customers, plans and charges,
//! subscriptions, events, and Lago's timestamps and cents.

use chrono::{DateTime, Utc};
use odometer_core::metric::{AggregationType, Dimension, Segmentation, Unmatched};
use odometer_core::plan::ChargeSpec;
use odometer_core::pricing::minor_units;
use odometer_core::subscription::billing_anchor_text;
use odometer_core::{Customer, Metric, MetricSpec, Plan, Subscription};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::error::LagoError;

/// Lago's instants: ISO 8601 in UTC, to the second.
pub fn iso(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Event timestamps keep their milliseconds, as Lago writes them.
pub fn iso_millis(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

// --- metrics ------------------------------------------------------------------------------

/// Lago's name of an aggregation; Odometer-only ones (`min`, `mean`, `custom_sql`, from
/// metrics made through another door) keep Odometer's name with Lago's `_agg` suffix.
pub fn aggregation_name(kind: AggregationType) -> &'static str {
    match kind {
        AggregationType::Count => "count_agg",
        AggregationType::Sum => "sum_agg",
        AggregationType::Max => "max_agg",
        AggregationType::Latest => "latest_agg",
        AggregationType::UniqueCount => "unique_count_agg",
        AggregationType::WeightedSum => "weighted_sum_agg",
        AggregationType::Min => "min_agg",
        AggregationType::Mean => "mean_agg",
        AggregationType::CustomSql => "custom_sql",
    }
}

/// The aggregation a Lago `aggregation_type` names (only Lago's public six).
pub fn parse_aggregation(text: &str) -> Option<AggregationType> {
    Some(match text {
        "count_agg" => AggregationType::Count,
        "sum_agg" => AggregationType::Sum,
        "max_agg" => AggregationType::Max,
        "latest_agg" => AggregationType::Latest,
        "unique_count_agg" => AggregationType::UniqueCount,
        "weighted_sum_agg" => AggregationType::WeightedSum,
        _ => return None,
    })
}

/// A metric's segmentation as Lago's metric `filters`: `[{key, values}]`, values sorted.
fn metric_filters(spec: &MetricSpec) -> Vec<Value> {
    let filter = |key: &str, values: &[String]| {
        let mut values = values.to_vec();
        values.sort();
        json!({"key": key, "values": values})
    };
    match &spec.segmentation {
        None => Vec::new(),
        Some(Segmentation::Single { key, values, .. }) => vec![filter(key, values)],
        Some(Segmentation::Double { dimension1, dimension2, .. }) => vec![
            filter(&dimension1.key, &dimension1.values),
            filter(&dimension2.key, &dimension2.values),
        ],
        Some(Segmentation::Linked { dimension1_key, dimension2_key, values, .. }) => {
            let firsts: Vec<String> = values.keys().cloned().collect();
            let mut seconds: Vec<String> = values.values().flatten().cloned().collect();
            seconds.dedup();
            vec![filter(dimension1_key, &firsts), filter(dimension2_key, &seconds)]
        }
    }
}

/// The Lago fields of a metric definition, as a Lago client would send them back.
pub fn metric_view(spec: &MetricSpec) -> Map<String, Value> {
    let kind = spec.aggregation.kind;
    let mut view = Map::new();
    view.insert("name".into(), json!(spec.name));
    view.insert("code".into(), json!(spec.code));
    view.insert("description".into(), json!(spec.description));
    view.insert("aggregation_type".into(), json!(aggregation_name(kind)));
    view.insert(
        "weighted_interval".into(),
        json!((kind == AggregationType::WeightedSum).then_some("seconds")),
    );
    view.insert("recurring".into(), json!(spec.aggregation.recurring));
    view.insert("field_name".into(), json!(spec.aggregation.field));
    view.insert("expression".into(), json!(spec.aggregation.expression));
    view.insert("rounding_function".into(), json!(spec.rounding.map(|r| r.function.as_str())));
    view.insert("rounding_precision".into(), json!(spec.rounding.map(|r| r.precision)));
    view.insert("filters".into(), Value::Array(metric_filters(spec)));
    view
}

/// A metric as Lago answers it; `with_counts` adds the three deprecated counters (always 0
/// in Lago too) that create, update, delete and list carry and show omits.
pub fn metric_to_lago(metric: &Metric, with_counts: bool) -> Value {
    let mut out = Map::new();
    out.insert("lago_id".into(), json!(metric.id.to_string()));
    out.extend(metric_view(&metric.spec));
    out.insert("created_at".into(), json!(iso(&metric.created_at)));
    if with_counts {
        for counter in ["active_subscriptions_count", "draft_invoices_count", "plans_count"] {
            out.insert(counter.into(), json!(0));
        }
    }
    Value::Object(out)
}

/// A Lago metric document (every field present, as [`metric_view`] gives) as an Odometer
/// definition, every optional member explicit (so it also serves as a full merge patch).
/// Checks what Lago itself checks, in Lago's words.
pub fn metric_definition(doc: &Map<String, Value>) -> Result<Value, LagoError> {
    let mut details = Map::new();
    let mut fail = |field: &str, code: &str| {
        details.insert(field.to_owned(), json!([code]));
    };
    let text = |key: &str| doc.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let kind = match doc.get("aggregation_type") {
        None | Some(Value::Null) => {
            fail("aggregation_type", "value_is_mandatory");
            None
        }
        Some(v) => {
            let kind = v.as_str().and_then(parse_aggregation);
            if kind.is_none() {
                fail("aggregation_type", "value_is_invalid");
            }
            kind
        }
    };
    if kind == Some(AggregationType::WeightedSum) && text("weighted_interval") != Some("seconds") {
        fail("weighted_interval", "value_is_invalid");
    }
    let recurring = match doc.get("recurring") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            fail("recurring", "value_is_invalid");
            false
        }
    };
    let expression = text("expression");
    // Lago ignores `field_name` for count_agg; with an expression, the expression's value is
    // what is aggregated (Lago writes it into `field_name` at ingestion; Odometer reads it
    // at query time), so the field is not kept.
    let field = match kind {
        Some(AggregationType::Count) => None,
        _ if expression.is_some() => None,
        _ => {
            let field = text("field_name");
            if field.is_none() && kind.is_some() {
                fail("field_name", "value_is_mandatory");
            }
            field
        }
    };
    let rounding = match (doc.get("rounding_function"), doc.get("rounding_precision")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Value::Null,
        (None | Some(Value::Null), Some(_)) => {
            fail("rounding_function", "value_is_mandatory");
            Value::Null
        }
        (Some(function), precision) => {
            let function = function.as_str().filter(|f| ["round", "ceil", "floor"].contains(f));
            if function.is_none() {
                fail("rounding_function", "value_is_invalid");
            }
            let precision = match precision {
                None | Some(Value::Null) => Some(0),
                Some(p) => p
                    .as_i64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .and_then(|p| i32::try_from(p).ok()),
            };
            if precision.is_none() {
                fail("rounding_precision", "value_is_invalid");
            }
            json!({"function": function, "precision": precision})
        }
    };
    let segmentation = match doc.get("filters") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(filters)) => {
            let mut dimensions = Vec::new();
            for filter in filters {
                let key = filter.get("key").and_then(Value::as_str).filter(|k| !k.is_empty());
                let values: Option<Vec<String>> =
                    filter.get("values").and_then(Value::as_array).map(|values| {
                        values
                            .iter()
                            .map(|v| match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect()
                    });
                match (key, values) {
                    (None, _) => fail("filters", "value_is_mandatory"),
                    (_, None) => fail("values", "value_is_mandatory"),
                    (_, Some(v)) if v.is_empty() => fail("values", "value_is_mandatory"),
                    (Some(key), Some(values)) => {
                        dimensions.push(Dimension { key: key.to_owned(), values })
                    }
                }
            }
            let segmentation = match dimensions.len() {
                0 => None,
                1 => {
                    let d = dimensions.remove(0);
                    Some(Segmentation::Single {
                        key: d.key,
                        values: d.values,
                        unmatched: Unmatched::Other,
                    })
                }
                2 => {
                    let dimension2 = dimensions.remove(1);
                    let dimension1 = dimensions.remove(0);
                    Some(Segmentation::Double {
                        dimension1,
                        dimension2,
                        unmatched: Unmatched::Other,
                    })
                }
                _ => {
                    fail("filters", "too_many_filters");
                    None
                }
            };
            serde_json::to_value(segmentation).unwrap_or(Value::Null)
        }
        Some(_) => {
            fail("filters", "value_is_invalid");
            Value::Null
        }
    };
    if !details.is_empty() {
        return Err(LagoError::validation(Value::Object(details)));
    }
    let code = doc.get("code").cloned().unwrap_or(Value::Null);
    Ok(json!({
        "code": code,
        "event_code": code,
        "name": doc.get("name").cloned().unwrap_or(Value::Null),
        "description": text("description"),
        "aggregation": {
            "type": kind.map(AggregationType::as_str),
            "field": field,
            "recurring": recurring,
            "expression": expression,
        },
        "segmentation": segmentation,
        "rounding": rounding,
    }))
}

/// The Lago field an Odometer metric problem path belongs to.
pub fn metric_field(path: &str) -> String {
    let head = path.split(['.', '[']).next().unwrap_or(path);
    match head {
        "event_code" | "code" => "code".into(),
        "aggregation" => match path {
            "aggregation.type" => "aggregation_type".into(),
            "aggregation.recurring" => "recurring".into(),
            "aggregation.expression" => "expression".into(),
            _ => "field_name".into(),
        },
        "segmentation" => "filters".into(),
        "rounding" => {
            if path.ends_with("precision") {
                "rounding_precision".into()
            } else {
                "rounding_function".into()
            }
        }
        "" => "billable_metric".into(),
        other => other.into(),
    }
}

/// The Lago field a locked Odometer field is.
pub fn locked_field(path: &str) -> &'static str {
    match path {
        "event_code" => "code",
        "aggregation.type" => "aggregation_type",
        "aggregation.field" => "field_name",
        "aggregation.expression" => "expression",
        "aggregation.recurring" => "recurring",
        _ => "billable_metric",
    }
}

// --- money --------------------------------------------------------------------------------

/// An amount in the currency's minor unit (Lago's `*_cents`), exact.
pub fn to_cents(amount: Decimal, currency: &str) -> Value {
    let scaled = amount * Decimal::from(10_i64.pow(minor_units(currency)));
    match i64::try_from(scaled.normalize()) {
        Ok(cents) if Decimal::from(cents) == scaled => json!(cents),
        _ => json!(scaled.normalize().to_string()),
    }
}

/// Cents to an amount of the currency.
pub fn from_cents(cents: i64, currency: &str) -> Decimal {
    Decimal::new(cents, minor_units(currency))
}

// --- customers ----------------------------------------------------------------------------

/// Where the Lago fields Odometer has no column for are kept, inside the customer's metadata.
pub const CUSTOMER_EXTRAS: &str = "lago";

pub fn customer_to_lago(customer: &Customer) -> Value {
    let spec = &customer.spec;
    let mut out = Map::new();
    if let Some(Value::Object(extras)) = spec.metadata.get(CUSTOMER_EXTRAS) {
        out.extend(extras.clone());
    }
    out.insert("lago_id".into(), json!(customer.id.to_string()));
    out.insert("external_id".into(), json!(spec.external_id));
    out.insert("name".into(), json!(spec.name));
    out.insert("email".into(), json!(spec.email));
    out.insert("timezone".into(), json!(spec.timezone));
    out.insert("applicable_timezone".into(), json!(spec.timezone.as_deref().unwrap_or("UTC")));
    out.insert("created_at".into(), json!(iso(&customer.created_at)));
    out.insert("updated_at".into(), json!(iso(&customer.updated_at)));
    out.entry("currency").or_insert(Value::Null);
    Value::Object(out)
}

// --- plans --------------------------------------------------------------------------------

pub fn charge_to_lago(charge: &ChargeSpec, metric_code: &str, created_at: &DateTime<Utc>) -> Value {
    let mut properties = charge.pricing.model.properties_json();
    if !charge.pricing_group_keys.is_empty() {
        if let Value::Object(map) = &mut properties {
            map.insert("pricing_group_keys".into(), json!(charge.pricing_group_keys));
        }
    }
    let filters: Vec<Value> = charge
        .pricing
        .filters
        .iter()
        .map(|f| {
            json!({"invoice_display_name": f.invoice_display_name,
                   "properties": f.model.properties_json(), "values": f.values})
        })
        .collect();
    json!({
        "lago_id": charge.id.to_string(),
        "lago_billable_metric_id": charge.metric_id.to_string(),
        "billable_metric_code": metric_code,
        "invoice_display_name": charge.invoice_display_name,
        "created_at": iso(created_at),
        "charge_model": charge.pricing.model.kind().as_str(),
        "pay_in_advance": false,
        "invoiceable": true,
        "prorated": false,
        "min_amount_cents": 0,
        "properties": properties,
        "filters": filters,
        "taxes": [],
    })
}

/// A plan as Lago answers it; `metric_codes` gives each charge's metric code, in order.
pub fn plan_to_lago(plan: &Plan, metric_codes: &[String]) -> Value {
    let spec = &plan.spec;
    let charges: Vec<Value> = spec
        .charges
        .iter()
        .zip(metric_codes)
        .map(|(charge, code)| charge_to_lago(charge, code, &plan.created_at))
        .collect();
    json!({
        "lago_id": plan.id.to_string(),
        "name": spec.name,
        "invoice_display_name": null,
        "created_at": iso(&plan.created_at),
        "code": spec.code,
        "interval": spec.interval.as_str(),
        "description": spec.description,
        "amount_cents": to_cents(spec.amount, &spec.currency),
        "amount_currency": spec.currency,
        "trial_period": 0.0,
        "pay_in_advance": spec.pay_in_advance,
        "bill_charges_monthly": null,
        "active_subscriptions_count": 0,
        "draft_invoices_count": 0,
        "taxes": [],
        "charges": charges,
    })
}

// --- subscriptions ------------------------------------------------------------------------

pub fn subscription_to_lago(
    subscription: &Subscription,
    plan_code: &str,
    customer_id: Option<String>,
    now: DateTime<Utc>,
) -> Value {
    let spec = &subscription.spec;
    // Odometer's statuses are named as Lago's (`active`, `terminated`, ...).
    let status = subscription.status_at(now).as_str();
    let terminated_at =
        subscription.terminated_at.or(spec.ended_at.filter(|end| *end <= now)).map(|t| iso(&t));
    json!({
        "lago_id": subscription.id.to_string(),
        "external_id": spec.external_id,
        "lago_customer_id": customer_id,
        "external_customer_id": spec.customer,
        "name": spec.name,
        "plan_code": plan_code,
        "status": status,
        "billing_time": billing_anchor_text(spec.billing_anchor),
        "subscription_at": iso(&spec.started_at),
        "started_at": iso(&spec.started_at),
        "ending_at": spec.ended_at.map(|t| iso(&t)),
        "terminated_at": terminated_at,
        "canceled_at": null,
        "created_at": iso(&subscription.created_at),
        "previous_plan_code": null,
        "next_plan_code": null,
        "downgrade_plan_date": null,
        "trial_ended_at": null,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn doc(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn lago_metrics_become_odometer_definitions() {
        let cases = [
            (
                json!({"name": "Calls", "code": "calls", "aggregation_type": "count_agg",
                       "field_name": "ignored for count"}),
                json!({"type": "count", "field": null, "recurring": false, "expression": null}),
            ),
            (
                json!({"name": "GB", "code": "gb", "aggregation_type": "weighted_sum_agg",
                       "weighted_interval": "seconds", "field_name": "gb", "recurring": true}),
                json!({"type": "weighted_sum", "field": "gb", "recurring": true,
                       "expression": null}),
            ),
            (
                json!({"name": "A", "code": "a", "aggregation_type": "sum_agg",
                       "field_name": "v", "expression": "event.properties.a * 2"}),
                json!({"type": "sum", "field": null, "recurring": false,
                       "expression": "event.properties.a * 2"}),
            ),
        ];
        for (lago, aggregation) in cases {
            let definition = metric_definition(&doc(lago.clone())).unwrap();
            assert_eq!(definition["aggregation"], aggregation, "{lago}");
            assert_eq!(definition["event_code"], definition["code"]);
        }
    }

    #[test]
    fn filters_become_dimensions_and_rounding_is_kept() {
        let definition = metric_definition(&doc(json!({
            "name": "X", "code": "x", "aggregation_type": "max_agg", "field_name": "v",
            "rounding_function": "floor", "rounding_precision": -2,
            "filters": [{"key": "region", "values": ["eu", "us"]},
                        {"key": "tier", "values": ["pro"]}]
        })))
        .unwrap();
        assert_eq!(definition["rounding"], json!({"function": "floor", "precision": -2}));
        assert_eq!(
            definition["segmentation"],
            json!({"type": "double", "unmatched": "other",
                   "dimension1": {"key": "region", "values": ["eu", "us"]},
                   "dimension2": {"key": "tier", "values": ["pro"]}})
        );
    }

    #[test]
    fn lago_validations_in_lago_words() {
        let error = metric_definition(&doc(json!({
            "name": "X", "code": "x", "aggregation_type": "weighted_sum_agg",
            "rounding_precision": 2,
            "filters": [{"key": "a", "values": []}, {"key": "b", "values": ["1"]},
                        {"key": "c", "values": ["1"]}, {"key": "d", "values": ["1"]}]
        })))
        .unwrap_err();
        let body = format!("{error:?}");
        for expected in ["weighted_interval", "field_name", "rounding_function", "values"] {
            assert!(body.contains(expected), "{expected} in {body}");
        }
    }

    #[test]
    fn cents_follow_the_currency() {
        assert_eq!(to_cents(Decimal::new(4999, 2), "USD"), json!(4999));
        assert_eq!(to_cents(Decimal::new(500, 0), "JPY"), json!(500));
        assert_eq!(to_cents(Decimal::new(-2, 0), "EUR"), json!(-200));
        assert_eq!(from_cents(4999, "USD"), Decimal::new(4999, 2));
        assert_eq!(metric_field("aggregation.type"), "aggregation_type");
        assert_eq!(metric_field("segmentation.values[1]"), "filters");
        assert_eq!(locked_field("event_code"), "code");
    }
}
