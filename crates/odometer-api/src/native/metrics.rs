//! `/v1/metrics`: create, list, get, patch, archive, unarchive, delete, revisions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::MetricId;
use odometer_store::metrics::{self as ops, find_metric};
use odometer_store::{ArchivedFilter, Entity, MetricListParams, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{ListDto, MetricDto, MetricInput, MetricRevisionDto};
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, Tenant};
use super::{mapping, page_limit};
use crate::AppState;

/// Query of `GET /v1/metrics`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricListQuery {
    /// Case-insensitive substring of the code or the name.
    search: Option<String>,
    /// `false` (default): live metrics only; `true`: archived only; `all`: both.
    archived: Option<String>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Create a metric.
#[utoipa::path(post, path = "/v1/metrics", tag = "metrics",
    request_body = MetricInput,
    responses(
        (status = 201, description = "created, at revision 1", body = MetricDto),
        (status = 409, description = "`code_taken`", body = ErrorBody),
        (status = 422, description = "invalid definition; `details` lists every problem", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn create_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<MetricDto>), ApiError> {
    let metric = ops::create_metric(state.catalog.as_ref(), tenant.organization_id, &body).await?;
    state.metrics_changed(tenant.organization_id).await;
    Ok((StatusCode::CREATED, Json(mapping::metric(&metric))))
}

/// List metrics, oldest first.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics", params(MetricListQuery),
    responses((status = 200, body = ListDto<MetricDto>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_metrics(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<MetricListQuery>,
) -> Result<Json<ListDto<MetricDto>>, ApiError> {
    let archived = match query.archived.as_deref() {
        None | Some("false") => ArchivedFilter::Active,
        Some("true") => ArchivedFilter::Archived,
        Some("all") => ArchivedFilter::All,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("archived must be true, false or all, not '{other}'"),
            ))
        }
    };
    let params = MetricListParams {
        search: query.search.filter(|s| !s.is_empty()),
        archived,
        limit: page_limit(query.limit)?,
        cursor: query.cursor,
    };
    let page = state.catalog.list_metrics(tenant.organization_id, &params).await?;
    Ok(Json(mapping::page(page, mapping::metric)))
}

/// Get a metric by id or code.
#[utoipa::path(get, path = "/v1/metrics/{id_or_code}", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id or code")),
    responses((status = 200, body = MetricDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<MetricDto>, ApiError> {
    let metric = find_metric(state.catalog.as_ref(), tenant.organization_id, &id_or_code).await?;
    Ok(Json(mapping::metric(&metric)))
}

/// Update a metric with a JSON merge patch; each change is a new revision.
///
/// An absent member is unchanged and `null` clears it. While the metric is attached to a plan,
/// changes to `event_code`, `aggregation.type`, `aggregation.field`, `aggregation.expression`
/// or `aggregation.recurring` are refused with 409 `metric_locked`, naming the fields.
#[utoipa::path(patch, path = "/v1/metrics/{id_or_code}", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id or code")),
    request_body = MetricInput,
    responses(
        (status = 200, description = "the new revision (or the metric unchanged when the patch changes nothing)", body = MetricDto),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`metric_locked`, `code_taken` or `revision_conflict`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn update_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
    JsonBody(patch): JsonBody,
) -> Result<Json<MetricDto>, ApiError> {
    let metric =
        ops::update_metric(state.catalog.as_ref(), tenant.organization_id, &id_or_code, &patch)
            .await?;
    state.metrics_changed(tenant.organization_id).await;
    Ok(Json(mapping::metric(&metric)))
}

/// Delete a metric: its code becomes free; its events and revisions stay.
#[utoipa::path(delete, path = "/v1/metrics/{id_or_code}", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id or code")),
    responses(
        (status = 200, description = "the deleted metric", body = MetricDto),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`metric_attached`: a plan uses it", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn delete_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<MetricDto>, ApiError> {
    let metric =
        ops::delete_metric(state.catalog.as_ref(), tenant.organization_id, &id_or_code).await?;
    state.metrics_changed(tenant.organization_id).await;
    Ok(Json(mapping::metric(&metric)))
}

/// Archive a metric: hidden from lists unless asked for; it still reads its events.
#[utoipa::path(post, path = "/v1/metrics/{id_or_code}/archive", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id or code")),
    responses((status = 200, body = MetricDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn archive_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<MetricDto>, ApiError> {
    let metric =
        ops::archive_metric(state.catalog.as_ref(), tenant.organization_id, &id_or_code).await?;
    Ok(Json(mapping::metric(&metric)))
}

/// Unarchive a metric.
#[utoipa::path(post, path = "/v1/metrics/{id_or_code}/unarchive", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id or code")),
    responses((status = 200, body = MetricDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn unarchive_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<MetricDto>, ApiError> {
    let metric =
        ops::unarchive_metric(state.catalog.as_ref(), tenant.organization_id, &id_or_code).await?;
    Ok(Json(mapping::metric(&metric)))
}

/// The metric a revision route names: by id even when deleted (revisions stay readable for
/// reproducibility), else a live metric by code.
async fn revision_owner(
    state: &AppState,
    tenant: Tenant,
    id_or_code: &str,
) -> Result<MetricId, ApiError> {
    let catalog = state.catalog.as_ref();
    match MetricId::parse(id_or_code) {
        Some(id) => Ok(catalog.get_metric(tenant.organization_id, id).await?.id),
        None => Ok(find_metric(catalog, tenant.organization_id, id_or_code).await?.id),
    }
}

/// List a metric's revisions, oldest first, each with what changed.
#[utoipa::path(get, path = "/v1/metrics/{id_or_code}/revisions", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id (also of a deleted metric) or code")),
    responses((status = 200, body = ListDto<MetricRevisionDto>), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_revisions(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<ListDto<MetricRevisionDto>>, ApiError> {
    let id = revision_owner(&state, tenant, &id_or_code).await?;
    let revisions = state.catalog.list_metric_revisions(tenant.organization_id, id).await?;
    Ok(Json(ListDto { data: revisions.iter().map(mapping::revision).collect(), next_cursor: None }))
}

/// Get one revision of a metric.
#[utoipa::path(get, path = "/v1/metrics/{id_or_code}/revisions/{revision}", tag = "metrics",
    params(
        ("id_or_code" = String, Path, description = "`bm_...` id (also of a deleted metric) or code"),
        ("revision" = String, Path, description = "revision number, from 1"),
    ),
    responses((status = 200, body = MetricRevisionDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_revision(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams((id_or_code, revision)): PathParams<(String, String)>,
) -> Result<Json<MetricRevisionDto>, ApiError> {
    let id = revision_owner(&state, tenant, &id_or_code).await?;
    let number =
        revision.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::from(StoreError::not_found(Entity::MetricRevision, &revision))
        })?;
    let found = state.catalog.get_metric_revision(tenant.organization_id, id, number).await?;
    Ok(Json(mapping::revision(&found)))
}
