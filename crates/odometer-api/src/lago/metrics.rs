//! `/lago/api/v1/billable_metrics`: create, list, get, update (`PUT`, by code), delete and
//! `evaluate_expression`, over the store's metric operations. A change to a locked field of a
//! metric a plan charges is a 422 `modification_not_allowed` for that field (Lago silently
//! keeps the old value).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use odometer_core::expression::{property_at_path, EventView, ExprValue, Expression};
use odometer_core::intake::parse_timestamp;
use odometer_core::Metric;
use odometer_store::metrics::{
    create_metric, delete_metric, find_metric, update_metric, MetricError,
};
use odometer_store::{ArchivedFilter, MetricListParams};
use serde_json::{json, Map, Value};

use super::error::LagoError;
use super::extract::{LagoBody, LagoQuery, LagoTenant, Path};
use super::mapping::{locked_field, metric_definition, metric_field, metric_to_lago, metric_view};
use crate::AppState;

type Answer = Result<Json<Value>, LagoError>;

fn metric_error(error: MetricError) -> LagoError {
    match error {
        MetricError::Invalid(problems) => LagoError::problems(&problems, metric_field),
        MetricError::Locked(locked) => {
            let details: Map<String, Value> = locked
                .fields
                .iter()
                .map(|f| (locked_field(f).to_owned(), json!(["modification_not_allowed"])))
                .collect();
            LagoError::validation(Value::Object(details))
        }
        MetricError::Attached => LagoError::field("billable_metric", "attached_to_a_plan"),
        MetricError::Store(e) => LagoError::store(e, "billable_metric"),
    }
}

fn one(metric: &Metric, with_counts: bool) -> Json<Value> {
    Json(json!({"billable_metric": metric_to_lago(metric, with_counts)}))
}

pub async fn create(State(state): State<AppState>, tenant: LagoTenant, body: LagoBody) -> Answer {
    let input = body.root("billable_metric")?;
    let definition = metric_definition(&input)?;
    let metric = create_metric(state.catalog.as_ref(), tenant.organization_id, &definition)
        .await
        .map_err(metric_error)?;
    state.metrics_changed(tenant.organization_id).await;
    Ok(one(&metric, true))
}

pub async fn list(State(state): State<AppState>, tenant: LagoTenant, query: LagoQuery) -> Answer {
    let paging = query.paging()?;
    let mut all: Vec<Metric> = Vec::new();
    let mut params =
        MetricListParams { search: None, archived: ArchivedFilter::All, limit: 1000, cursor: None };
    loop {
        let page = state
            .catalog
            .list_metrics(tenant.organization_id, &params)
            .await
            .map_err(|e| LagoError::store(e, "billable_metric"))?;
        all.extend(page.items);
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => break,
        }
    }
    let (items, meta) = paging.slice(all);
    let metrics: Vec<Value> = items.iter().map(|m| metric_to_lago(m, true)).collect();
    Ok(Json(json!({"billable_metrics": metrics, "meta": meta})))
}

pub async fn get(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
) -> Answer {
    let metric = find_metric(state.catalog.as_ref(), tenant.organization_id, &code)
        .await
        .map_err(|e| LagoError::store(e, "billable_metric"))?;
    Ok(one(&metric, false))
}

/// `PUT`: the fields sent replace the metric's (a field not sent keeps its value, `null`
/// clears it), then the whole is validated again as a new revision.
pub async fn update(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
    body: LagoBody,
) -> Answer {
    let input = body.root("billable_metric")?;
    let org = tenant.organization_id;
    let current = find_metric(state.catalog.as_ref(), org, &code)
        .await
        .map_err(|e| LagoError::store(e, "billable_metric"))?;
    let mut doc = metric_view(&current.spec);
    // A new expression replaces the field (and the other way round), as Lago's model does.
    if input.get("expression").is_some_and(|e| !e.is_null()) {
        doc.insert("field_name".into(), Value::Null);
    }
    if input.get("field_name").is_some_and(|f| !f.is_null()) && !input.contains_key("expression") {
        doc.insert("expression".into(), Value::Null);
    }
    for (key, value) in input {
        doc.insert(key, value);
    }
    let patch = metric_definition(&doc)?;
    let metric = update_metric(state.catalog.as_ref(), org, &current.id.to_string(), &patch)
        .await
        .map_err(metric_error)?;
    state.metrics_changed(org).await;
    Ok(one(&metric, true))
}

pub async fn destroy(
    State(state): State<AppState>,
    tenant: LagoTenant,
    Path(code): Path<String>,
) -> Answer {
    let metric = delete_metric(state.catalog.as_ref(), tenant.organization_id, &code)
        .await
        .map_err(metric_error)?;
    state.metrics_changed(tenant.organization_id).await;
    Ok(one(&metric, true))
}

/// What an expression sees of the event given to `evaluate_expression`.
struct TestEvent {
    code: String,
    timestamp: DateTime<Utc>,
    properties: Value,
}

impl EventView for TestEvent {
    fn code(&self) -> &str {
        &self.code
    }
    fn timestamp_micros(&self) -> i64 {
        self.timestamp.timestamp_micros()
    }
    fn property(&self, path: &str) -> Option<&Value> {
        property_at_path(&self.properties, path)
    }
}

/// `POST evaluate_expression`: `{"expression", "event": {code, timestamp, properties}}` ->
/// `{"expression_result": {"value"}}`. Odometer's expression language is Lago's.
pub async fn evaluate_expression(
    State(_state): State<AppState>,
    _tenant: LagoTenant,
    body: LagoBody,
) -> Answer {
    let source = match body.0.get("expression") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        None => return Err(LagoError::missing_param("expression")),
        Some(_) => return Err(LagoError::field("expression", "value_is_mandatory")),
    };
    let expression = Expression::parse(&source)
        .map_err(|_| LagoError::field("expression", "invalid_expression"))?;
    let event = body.0.get("event").cloned().unwrap_or(Value::Null);
    let code = event.get("code").and_then(Value::as_str).unwrap_or("").to_owned();
    let timestamp = match event.get("timestamp") {
        None | Some(Value::Null) => odometer_core::time::now(),
        Some(ts) => parse_timestamp(ts).map_err(|_| LagoError::field("event", "invalid_event"))?,
    };
    let properties = match event.get("properties") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(LagoError::field("event", "invalid_event")),
    };
    let view = TestEvent { code, timestamp, properties };
    let value = match expression.evaluate(&view) {
        Ok(ExprValue::Decimal(d)) => json!(d.normalize().to_string()),
        Ok(ExprValue::String(s)) => json!(s),
        Err(_) => return Err(LagoError::field("event", "invalid_event")),
    };
    Ok(Json(json!({"expression_result": {"value": value}})))
}
