//! `/api/v1/metrics`: Meteroid's billable metrics over Odometer's metric operations.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::{time, Metric, MetricId, OrganizationId};
use odometer_store::metrics::{archive_metric, unarchive_metric, update_metric};
use odometer_store::{ArchivedFilter, Catalog, MetricListParams};
use serde::Deserialize;
use serde_json::Value;

use super::error::MeteroidError;
use super::extract::{JsonBody, PathParam, QueryParams, Tenant};
use super::mapping::{self, metric_view};
use super::product_families;
use crate::AppState;

/// Every live metric of the organization this dialect can show, oldest first.
pub async fn visible_metrics(
    catalog: &dyn Catalog,
    org: OrganizationId,
    archived: ArchivedFilter,
) -> Result<Vec<(Metric, Value)>, MeteroidError> {
    let mut params = MetricListParams { search: None, archived, limit: 1000, cursor: None };
    let mut out = Vec::new();
    loop {
        let page = catalog.list_metrics(org, &params).await?;
        out.extend(page.items.into_iter().filter_map(|m| metric_view(&m).map(|v| (m, v))));
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => return Ok(out),
        }
    }
}

/// A metric this dialect can show, by its `bm_` id (archived ones too); 404 otherwise.
pub async fn find_visible(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id: &str,
) -> Result<(Metric, Value), MeteroidError> {
    let not_found = || MeteroidError::not_found(format!("metric '{id}' not found"));
    let parsed = MetricId::parse(id).ok_or_else(not_found)?;
    let metric = match catalog.get_metric(org, parsed).await {
        Ok(m) => m,
        Err(odometer_store::StoreError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let view = metric_view(&metric).ok_or_else(not_found)?;
    Ok((metric, view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    product_family_id: Option<String>,
    search: Option<String>,
    order_by: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

pub async fn list(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Value>, MeteroidError> {
    let (page, per_page) = mapping::page_bounds(params.page, params.per_page)?;
    let (column, descending) = parse_order(params.order_by.as_deref())?;
    let mut items: Vec<(Metric, Value)> =
        visible_metrics(state.catalog.as_ref(), org, ArchivedFilter::Active).await?;
    if let Some(family) = &params.product_family_id {
        items.retain(|(m, _)| m.spec.product_family_id.as_deref() == Some(family.as_str()));
    }
    if let Some(search) = params.search.as_deref().filter(|s| !s.is_empty()) {
        let needle = search.to_lowercase();
        items.retain(|(m, _)| {
            m.spec.name.to_lowercase().contains(&needle)
                || m.spec.event_code.to_lowercase().contains(&needle)
        });
    }
    items.sort_by(|(a, _), (b, _)| {
        let ordering = match column {
            OrderColumn::Name => a.spec.name.cmp(&b.spec.name),
            OrderColumn::Code => a.spec.event_code.cmp(&b.spec.event_code),
            OrderColumn::CreatedAt => a.created_at.cmp(&b.created_at),
        };
        let ordering = if descending { ordering.reverse() } else { ordering };
        ordering.then_with(|| a.id.to_string().cmp(&b.id.to_string()))
    });
    let summaries = items.iter().map(|(_, v)| mapping::metric_summary(v)).collect();
    Ok(Json(mapping::paginate(summaries, page, per_page)))
}

enum OrderColumn {
    Name,
    Code,
    CreatedAt,
}

fn parse_order(text: Option<&str>) -> Result<(OrderColumn, bool), MeteroidError> {
    let text = text.unwrap_or("name.asc");
    let bad = || {
        MeteroidError::bad_request(format!(
            "order_by must be name, code or created_at followed by .asc or .desc, not '{text}'"
        ))
    };
    let (column, direction) = text.split_once('.').ok_or_else(bad)?;
    let column = match column {
        "name" => OrderColumn::Name,
        "code" => OrderColumn::Code,
        "created_at" => OrderColumn::CreatedAt,
        _ => return Err(bad()),
    };
    let descending = match direction {
        "asc" => false,
        "desc" => true,
        _ => return Err(bad()),
    };
    Ok((column, descending))
}

pub async fn create(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), MeteroidError> {
    let id = MetricId::new();
    let definition = mapping::create_definition(&body, id)?;
    // The product family must exist (Meteroid checks it too).
    let family = definition["product_family_id"].as_str().unwrap_or_default();
    product_families::find(state.catalog.as_ref(), org, family).await?;
    let spec = odometer_core::metric_input::parse_metric_spec(&definition).map_err(|problems| {
        MeteroidError::bad_request(super::error::problems_message(&problems))
    })?;
    // What `odometer_store::metrics::create_metric` does, with the id chosen first: Odometer's
    // unique metric code is derived from it.
    let mut metric = Metric::new(org, spec, time::now());
    metric.id = id;
    state.catalog.create_metric(&metric).await?;
    state.metrics_changed(org).await;
    let view = metric_view(&metric)
        .ok_or_else(|| MeteroidError::internal("a created metric has no Meteroid view"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn get(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<Value>, MeteroidError> {
    let (_, view) = find_visible(state.catalog.as_ref(), org, &id).await?;
    Ok(Json(view))
}

pub async fn update(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, MeteroidError> {
    let (metric, _) = find_visible(state.catalog.as_ref(), org, &id).await?;
    let mut patch = mapping::update_patch(&body)?;
    // Meteroid replaces the whole matrix; a merge patch would keep members of the old one
    // (a SINGLE's `key` inside a new DOUBLE, a LINKED's old values), so those are cleared.
    if let (Some(new), Some(Ok(old))) =
        (patch.get_mut("segmentation"), metric.spec.segmentation.as_ref().map(serde_json::to_value))
    {
        clear_missing(&old, new);
    }
    let updated =
        update_metric(state.catalog.as_ref(), org, &metric.id.to_string(), &patch).await?;
    state.metrics_changed(org).await;
    let view = metric_view(&updated).ok_or_else(|| {
        MeteroidError::bad_request("the update leaves a metric Meteroid cannot describe")
    })?;
    Ok(Json(view))
}

pub async fn archive(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<StatusCode, MeteroidError> {
    let (metric, _) = find_visible(state.catalog.as_ref(), org, &id).await?;
    archive_metric(state.catalog.as_ref(), org, &metric.id.to_string()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unarchive(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<StatusCode, MeteroidError> {
    let (metric, _) = find_visible(state.catalog.as_ref(), org, &id).await?;
    unarchive_metric(state.catalog.as_ref(), org, &metric.id.to_string()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes `new`, read as a merge patch over `old`, replace it: every member of `old` that `new`
/// lacks becomes `null`, at any depth.
fn clear_missing(old: &Value, new: &mut Value) {
    if let (Value::Object(old), Value::Object(new)) = (old, new) {
        for (key, old_value) in old {
            match new.get_mut(key) {
                Some(new_value) => clear_missing(old_value, new_value),
                None => {
                    new.insert(key.clone(), Value::Null);
                }
            }
        }
    }
}
