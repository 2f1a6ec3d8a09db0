//! `/v1/plans`: create, list, get, replace (`PUT`), delete; addressed by id or code.

use std::collections::hash_map::Entry;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::{OrganizationId, Plan};
use odometer_store::plans::{self as ops, find_plan};
use odometer_store::{Catalog, PlanListParams};
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::ListDto;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, Tenant};
use super::page_limit;
use super::plan_dto::{PlanDto, PlanInput};
use super::plan_mapping::{self, MetricCodes};
use crate::AppState;

/// Query of `GET /v1/plans`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanListQuery {
    /// Case-insensitive substring of the code or the name.
    search: Option<String>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The current codes of the metrics these plans charge (deleted metrics too: a plan's metrics
/// are live while it is, but a deleted plan's may not be).
pub(crate) async fn metric_codes(
    catalog: &dyn Catalog,
    org: OrganizationId,
    plans: &[&Plan],
) -> Result<MetricCodes, ApiError> {
    let mut codes = MetricCodes::new();
    for id in plans.iter().flat_map(|p| p.spec.metric_ids()) {
        if let Entry::Vacant(entry) = codes.entry(id) {
            entry.insert(catalog.get_metric(org, id).await?.spec.code);
        }
    }
    Ok(codes)
}

async fn plan_dto(
    catalog: &dyn Catalog,
    org: OrganizationId,
    plan: &Plan,
) -> Result<PlanDto, ApiError> {
    let codes = metric_codes(catalog, org, &[plan]).await?;
    Ok(plan_mapping::plan(plan, &codes))
}

/// Create a plan.
///
/// Each charge names its metric by id or code; the metrics a live plan charges are attached,
/// which locks their `event_code` and aggregation (semantics 6.3).
#[utoipa::path(post, path = "/v1/plans", tag = "plans",
    request_body = PlanInput,
    responses(
        (status = 201, description = "created", body = PlanDto),
        (status = 409, description = "`code_taken`", body = ErrorBody),
        (status = 422, description = "invalid definition (`details` lists every problem, such as `unknown_metric` at `charges[0].metric`)", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn create_plan(
    tenant: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<PlanDto>), ApiError> {
    let catalog = state.catalog.as_ref();
    let plan = ops::create_plan(catalog, tenant.organization_id, &body).await?;
    Ok((StatusCode::CREATED, Json(plan_dto(catalog, tenant.organization_id, &plan).await?)))
}

/// List plans, oldest first.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", params(PlanListQuery),
    responses((status = 200, body = ListDto<PlanDto>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_plans(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<PlanListQuery>,
) -> Result<Json<ListDto<PlanDto>>, ApiError> {
    let catalog = state.catalog.as_ref();
    let params = PlanListParams {
        search: query.search.filter(|s| !s.is_empty()),
        limit: page_limit(query.limit)?,
        cursor: query.cursor,
    };
    let page = catalog.list_plans(tenant.organization_id, &params).await?;
    let plans: Vec<&Plan> = page.items.iter().collect();
    let codes = metric_codes(catalog, tenant.organization_id, &plans).await?;
    Ok(Json(ListDto {
        data: page.items.iter().map(|p| plan_mapping::plan(p, &codes)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get a plan by id or code.
#[utoipa::path(get, path = "/v1/plans/{id_or_code}", tag = "plans",
    params(("id_or_code" = String, Path, description = "`plan_...` id or code")),
    responses((status = 200, body = PlanDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_plan(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<PlanDto>, ApiError> {
    let catalog = state.catalog.as_ref();
    let plan = find_plan(catalog, tenant.organization_id, &id_or_code).await?;
    Ok(Json(plan_dto(catalog, tenant.organization_id, &plan).await?))
}

/// Replace a plan's definition.
///
/// The body is a whole definition, as for create. A charge whose `id` names one of the plan's
/// charges keeps that id; a charge without `id` is new. The metrics the plan attaches move to
/// those the new charges read.
#[utoipa::path(put, path = "/v1/plans/{id_or_code}", tag = "plans",
    params(("id_or_code" = String, Path, description = "`plan_...` id or code")),
    request_body = PlanInput,
    responses(
        (status = 200, description = "the plan as replaced (unchanged when the definition is the same)", body = PlanDto),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`code_taken`", body = ErrorBody),
        (status = 422, description = "invalid definition (`unknown_metric`, `unknown_charge`, ...)", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn replace_plan(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<PlanDto>, ApiError> {
    let catalog = state.catalog.as_ref();
    let plan = ops::replace_plan(catalog, tenant.organization_id, &id_or_code, &body).await?;
    Ok(Json(plan_dto(catalog, tenant.organization_id, &plan).await?))
}

/// Delete a plan: its code becomes free and its metrics are no longer attached by it.
#[utoipa::path(delete, path = "/v1/plans/{id_or_code}", tag = "plans",
    params(("id_or_code" = String, Path, description = "`plan_...` id or code")),
    responses(
        (status = 200, description = "the deleted plan", body = PlanDto),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`plan_in_use`: active subscriptions are on it (terminate them first)", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn delete_plan(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
) -> Result<Json<PlanDto>, ApiError> {
    let catalog = state.catalog.as_ref();
    let plan = ops::delete_plan(catalog, tenant.organization_id, &id_or_code).await?;
    Ok(Json(plan_dto(catalog, tenant.organization_id, &plan).await?))
}
