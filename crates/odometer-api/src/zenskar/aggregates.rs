//! `/zenskar/aggregates`: Zenskar's billable metrics, each a `custom_sql` metric. PATCH follows
//! the seed's `UpdateAggregateRequestSchema` to the letter; every accepted PATCH that changes
//! something is a metric revision (semantics 6).

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::metric_update::{check_lock, diff};
use odometer_core::sql_metric::parse_sql_query;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{Metric, MetricId, OrganizationId};
use odometer_store::metrics::{create_metric, delete_metric};
use odometer_store::{ArchivedFilter, MetricListParams, MetricRevisionInput, StoreError};
use serde_json::{json, Map, Value};

use super::error::{FieldError, ZenskarError};
use super::extract::{ilike, limit, query_map, Body, Organisation, Path};
use super::mapping::aggregate_json;
use crate::AppState;

/// The members of a create or update body, by the seed's types.
#[derive(Debug, Default)]
struct AggregateFields {
    name: Option<String>,
    dataschema: Option<String>,
    aggregation_query: Option<String>,
    cust_agg_query: Option<String>,
    visual_query_builder: Option<Map<String, Value>>,
    datasource: Option<String>,
}

/// Reads the body; `null` is the same as absent (the seed types every member `X | null`).
/// Unknown members are ignored, as FastAPI does.
fn read_fields(body: &Value) -> Result<AggregateFields, ZenskarError> {
    let Value::Object(map) = body else {
        return Err(ZenskarError::invalid(
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        ));
    };
    let mut errors = Vec::new();
    let mut string = |member: &str| match map.get(member) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                &["body", member],
                "Input should be a valid string",
                "string_type",
            ));
            None
        }
    };
    let mut fields = AggregateFields {
        name: string("name"),
        dataschema: string("dataschema"),
        aggregation_query: string("aggregation_query"),
        cust_agg_query: string("cust_agg_query"),
        datasource: string("datasource"),
        visual_query_builder: None,
    };
    match map.get("visual_query_builder") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => fields.visual_query_builder = Some(o.clone()),
        Some(_) => errors.push(FieldError::new(
            &["body", "visual_query_builder"],
            "Input should be a valid dictionary",
            "dict_type",
        )),
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(ZenskarError::Validation(errors))
    }
}

/// Refuses a query that reads a table the organization does not have (the domain checks the
/// rest when the definition is parsed).
async fn check_tables(
    state: &AppState,
    org: OrganizationId,
    member: &str,
    query: &str,
) -> Result<(), ZenskarError> {
    let Ok(parsed) = parse_sql_query(query) else {
        return Ok(()); // reported with its position by the definition's validation
    };
    let tables = state.events.usage_tables(org).await?;
    parsed
        .check_tables(|name| name == "events" || tables.iter().any(|t| t.api_slug == name))
        .map_err(|e| ZenskarError::invalid(&["body", member], e.to_string(), "value_error"))
}

/// The aggregate with this id, as a live `custom_sql` metric of the organization.
async fn find(state: &AppState, org: OrganizationId, id: &str) -> Result<Metric, ZenskarError> {
    let uuid = uuid::Uuid::parse_str(id).map_err(|_| {
        ZenskarError::invalid(
            &["path", "aggregate_id"],
            "Input should be a valid UUID",
            "uuid_parsing",
        )
    })?;
    let metric = state.catalog.get_metric(org, MetricId::from_uuid(uuid)).await?;
    if metric.deleted_at.is_some() || metric.spec.aggregation.sql.is_none() {
        return Err(ZenskarError::not_found("Aggregate"));
    }
    Ok(metric)
}

pub async fn create(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ZenskarError> {
    let fields = read_fields(&body.value)?;
    let mut missing = Vec::new();
    for (member, given) in
        [("name", fields.name.is_some()), ("aggregation_query", fields.aggregation_query.is_some())]
    {
        if !given {
            missing.push(FieldError::new(&["body", member], "Field required", "missing"));
        }
    }
    if !missing.is_empty() {
        return Err(ZenskarError::Validation(missing));
    }
    let query = fields.aggregation_query.clone().unwrap_or_default();
    check_tables(&state, org, "aggregation_query", &query).await?;
    if let Some(q) = &fields.cust_agg_query {
        check_tables(&state, org, "cust_agg_query", q).await?;
    }
    let mut aggregation = json!({"type": "custom_sql", "query": query});
    set_documents(&mut aggregation, &fields);
    let code = format!("zenskar_{}", uuid::Uuid::now_v7().simple());
    let definition = json!({"code": code, "name": fields.name, "aggregation": aggregation});
    let metric = create_metric(state.catalog.as_ref(), org, &definition).await?;
    Ok((StatusCode::CREATED, Json(aggregate_json(&metric))))
}

/// Puts the members kept verbatim into a native aggregation document.
fn set_documents(aggregation: &mut Value, fields: &AggregateFields) {
    let Value::Object(a) = aggregation else { return };
    if let Some(q) = &fields.cust_agg_query {
        a.insert("customer_query".into(), Value::String(q.clone()));
    }
    if let Some(d) = &fields.dataschema {
        a.insert("dataschema".into(), Value::String(d.clone()));
    }
    if let Some(v) = &fields.visual_query_builder {
        a.insert("visual_query_builder".into(), Value::Object(v.clone()));
    }
    if let Some(d) = &fields.datasource {
        a.insert("datasource".into(), Value::String(d.clone()));
    }
}

pub async fn get(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    Path(id): Path<String>,
) -> Result<Json<Value>, ZenskarError> {
    Ok(Json(aggregate_json(&find(&state, org, &id).await?)))
}

pub async fn patch(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ZenskarError> {
    let metric = find(&state, org, &id).await?;
    let fields = read_fields(&body.value)?;
    if let Some(q) = &fields.aggregation_query {
        check_tables(&state, org, "aggregation_query", q).await?;
    }
    if let Some(q) = &fields.cust_agg_query {
        check_tables(&state, org, "cust_agg_query", q).await?;
    }
    let updated = revise(&state, org, metric, &fields).await?;
    Ok(Json(aggregate_json(&updated)))
}

/// Applies the given members to the aggregate as one new revision (none when nothing changes).
/// Not a JSON merge patch: `visual_query_builder` replaces the stored one whole, `null`
/// members inside it included, so it round-trips verbatim.
async fn revise(
    state: &AppState,
    org: OrganizationId,
    mut current: Metric,
    fields: &AggregateFields,
) -> Result<Metric, ZenskarError> {
    for attempt in 1..=5 {
        let mut spec = current.spec.clone();
        if let Some(name) = &fields.name {
            spec.name = name.clone();
        }
        if let Some(sql) = spec.aggregation.sql.as_mut() {
            if let Some(q) = &fields.aggregation_query {
                sql.query = q.clone();
            }
            if let Some(q) = &fields.cust_agg_query {
                sql.customer_query = Some(q.clone());
            }
            if let Some(d) = &fields.dataschema {
                sql.dataschema = Some(Value::String(d.clone()));
            }
            if let Some(v) = &fields.visual_query_builder {
                sql.visual_query_builder = Some(Value::Object(v.clone()));
            }
            if let Some(d) = &fields.datasource {
                sql.datasource = Some(Value::String(d.clone()));
            }
        }
        // The whole definition is validated again, as any update is.
        let spec =
            parse_metric_spec(&spec.to_json()).map_err(|p| ZenskarError::from_problems(&p))?;
        let changes = diff(&current.spec.to_json(), &spec.to_json());
        if changes.is_empty() {
            return Ok(current);
        }
        let attached = state.catalog.is_metric_attached(org, current.id).await?;
        check_lock(&current.spec, &spec, attached)
            .map_err(|locked| ZenskarError::Status(StatusCode::CONFLICT, locked.to_string()))?;
        let revision = MetricRevisionInput {
            previous_revision: current.revision,
            spec,
            changes,
            effective_at: odometer_core::time::now(),
        };
        match state.catalog.add_metric_revision(org, current.id, &revision).await {
            Err(StoreError::RevisionConflict { .. }) if attempt < 5 => {
                current = find(state, org, &current.id.as_uuid().to_string()).await?;
            }
            other => return Ok(other?),
        }
    }
    Err(ZenskarError::Status(StatusCode::CONFLICT, "the aggregate kept changing; retry".to_owned()))
}

pub async fn delete(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    Path(id): Path<String>,
) -> Result<Json<Value>, ZenskarError> {
    let metric = find(&state, org, &id).await?;
    delete_metric(state.catalog.as_ref(), org, &metric.id.to_string()).await?;
    Ok(Json(json!({"id": metric.id.as_uuid().to_string(), "deleted": true})))
}

pub async fn list(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ZenskarError> {
    let query = query_map(raw.as_deref())?;
    let limit = limit(&query)?;
    let after = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(uuid::Uuid::parse_str(c).map_err(|_| {
            ZenskarError::invalid(
                &["query", "cursor"],
                "Input should be a valid cursor",
                "value_error",
            )
        })?),
    };
    let pattern = query.get("name__ilike");
    if pattern.is_some_and(|p| p.chars().count() > 100) {
        return Err(ZenskarError::invalid(
            &["query", "name__ilike"],
            "String should have at most 100 characters",
            "string_too_long",
        ));
    }
    let datasource = query.get("datasource");
    let mut params =
        MetricListParams { search: None, archived: ArchivedFilter::All, limit: 1000, cursor: None };
    let mut matching = Vec::new();
    loop {
        let page = state.catalog.list_metrics(org, &params).await?;
        for metric in page.items {
            let Some(sql) = &metric.spec.aggregation.sql else { continue };
            if after.is_some_and(|a| metric.id.as_uuid() <= a) {
                continue;
            }
            if pattern.is_some_and(|p| !ilike(&metric.spec.name, p)) {
                continue;
            }
            if datasource
                .is_some_and(|d| sql.datasource.as_ref().and_then(Value::as_str) != Some(d))
            {
                continue;
            }
            matching.push(metric);
        }
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => break,
        }
    }
    matching.sort_by_key(|m| m.id.as_uuid());
    let next = (matching.len() > limit).then(|| matching[limit - 1].id.as_uuid().to_string());
    matching.truncate(limit);
    let results: Vec<Value> = matching.iter().map(aggregate_json).collect();
    Ok(Json(json!({"results": results, "next_cursor": next})))
}

/// A date (`2026-03-31`, the whole day) or an RFC 3339 instant.
fn instant(
    query: &HashMap<String, String>,
    member: &str,
    end: bool,
) -> Result<DateTime<Utc>, ZenskarError> {
    let Some(text) = query.get(member) else {
        return Err(ZenskarError::invalid(&["query", member], "Field required", "missing"));
    };
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let start = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        // An end date includes its whole day.
        let value = if end { start.map(|t| t + TimeDelta::days(1)) } else { start };
        if let Some(value) = value {
            return Ok(value);
        }
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        ZenskarError::invalid(
            &["query", member],
            "Input should be a valid date (YYYY-MM-DD) or datetime (RFC 3339)",
            "datetime_parsing",
        )
    })
}

/// `GET /aggregates/estimates`: the aggregate's value for one customer and period.
pub async fn estimates(
    State(state): State<AppState>,
    Organisation(org): Organisation,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ZenskarError> {
    let query = query_map(raw.as_deref())?;
    let Some(id) = query.get("aggregate_id") else {
        return Err(ZenskarError::invalid(&["query", "aggregate_id"], "Field required", "missing"));
    };
    let Some(customer) = query.get("customer_id").filter(|c| !c.is_empty()) else {
        return Err(ZenskarError::invalid(&["query", "customer_id"], "Field required", "missing"));
    };
    let from = instant(&query, "start_date", false)?;
    let to = instant(&query, "end_date", true)?;
    if from >= to {
        return Err(ZenskarError::invalid(
            &["query", "end_date"],
            "end_date must not be before start_date",
            "value_error",
        ));
    }
    let metric = find(&state, org, id).await.map_err(|e| match e {
        ZenskarError::Validation(_) => ZenskarError::invalid(
            &["query", "aggregate_id"],
            "Input should be a valid UUID",
            "uuid_parsing",
        ),
        other => other,
    })?;
    let usage_query = UsageQuery {
        from,
        to,
        window: WindowSize::None,
        timezone: chrono_tz::Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let result = state.events.usage(org, customer, &metric.spec, &usage_query).await?;
    let window = result.windows.first();
    let groups: Vec<Value> = window
        .map(|w| {
            w.groups
                .iter()
                .map(|g| json!({"keys": g.key.group_by, "value": g.value.map(|v| v.to_string())}))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "aggregate_id": metric.id.as_uuid().to_string(),
        "customer_id": customer,
        "start_date": odometer_core::time::format_micros(&from),
        "end_date": odometer_core::time::format_micros(&to),
        "value": window.and_then(|w| w.total).map(|v| v.to_string()),
        "groups": groups,
        "revision": metric.revision,
    })))
}
