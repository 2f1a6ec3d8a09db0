//! `/v1/subscriptions`: create, list, get, patch, terminate (addressed by external id).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::{OrganizationId, PlanId, Subscription, SubscriptionStatus};
use odometer_store::subscriptions as ops;
use odometer_store::{Catalog, Entity, Page, StoreError, SubscriptionListParams};
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::ListDto;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, Tenant};
use super::page_limit;
use super::plan_dto::{SubscriptionDto, SubscriptionInput, SubscriptionPatchInput};
use super::plan_mapping;
use crate::AppState;

/// Query of `GET /v1/subscriptions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionListQuery {
    /// Only this customer's (by external id).
    customer: Option<String>,
    /// Only those on this plan (`plan_...` id, or a live plan's code).
    plan: Option<String>,
    /// `active` or `terminated`; both when absent.
    status: Option<String>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The subscriptions as the API writes them, with their plans' current codes.
async fn subscription_dtos(
    catalog: &dyn Catalog,
    org: OrganizationId,
    subscriptions: &[Subscription],
) -> Result<Vec<SubscriptionDto>, ApiError> {
    let mut codes: HashMap<PlanId, String> = HashMap::new();
    for s in subscriptions {
        if let Entry::Vacant(entry) = codes.entry(s.spec.plan_id) {
            // Deleted plans too: a terminated subscription may be on one.
            entry.insert(catalog.get_plan(org, s.spec.plan_id).await?.spec.code);
        }
    }
    Ok(subscriptions
        .iter()
        .map(|s| {
            let code = codes.get(&s.spec.plan_id).map_or("", String::as_str);
            plan_mapping::subscription(s, code)
        })
        .collect())
}

async fn subscription_dto(
    catalog: &dyn Catalog,
    org: OrganizationId,
    subscription: Subscription,
) -> Result<SubscriptionDto, ApiError> {
    let mut dtos = subscription_dtos(catalog, org, std::slice::from_ref(&subscription)).await?;
    dtos.pop().ok_or_else(|| ApiError::internal("a subscription mapped to nothing"))
}

/// Create a subscription.
///
/// The customer must exist and the plan must be live; otherwise 422 with `unknown_customer` at
/// `customer` or `unknown_plan` at `plan`.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = SubscriptionInput,
    responses(
        (status = 201, description = "created", body = SubscriptionDto),
        (status = 409, description = "`external_id_taken`", body = ErrorBody),
        (status = 422, description = "invalid definition, unknown customer or plan", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn create_subscription(
    tenant: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<SubscriptionDto>), ApiError> {
    let catalog = state.catalog.as_ref();
    let org = tenant.organization_id;
    let subscription = ops::create_subscription(catalog, org, &body).await?;
    Ok((StatusCode::CREATED, Json(subscription_dto(catalog, org, subscription).await?)))
}

/// List subscriptions, oldest first.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    params(SubscriptionListQuery),
    responses((status = 200, body = ListDto<SubscriptionDto>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_subscriptions(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<SubscriptionListQuery>,
) -> Result<Json<ListDto<SubscriptionDto>>, ApiError> {
    let catalog = state.catalog.as_ref();
    let org = tenant.organization_id;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(SubscriptionStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("status must be active or terminated, not '{text}'"),
            )
        })?),
    };
    let limit = page_limit(query.limit)?;
    let plan_id = match query.plan.as_deref() {
        None => None,
        Some(text) => match PlanId::parse(text) {
            Some(id) => Some(id),
            None => match catalog.get_plan_by_code(org, text).await {
                Ok(plan) => Some(plan.id),
                // No live plan has this code, so no subscription is on it.
                Err(StoreError::NotFound { entity: Entity::Plan, .. }) => {
                    return Ok(Json(ListDto { data: Vec::new(), next_cursor: None }))
                }
                Err(other) => return Err(other.into()),
            },
        },
    };
    let params = SubscriptionListParams {
        customer: query.customer,
        plan_id,
        status,
        limit,
        cursor: query.cursor,
    };
    let Page { items, next_cursor } = catalog.list_subscriptions(org, &params).await?;
    Ok(Json(ListDto { data: subscription_dtos(catalog, org, &items).await?, next_cursor }))
}

/// Get a subscription by external id.
#[utoipa::path(get, path = "/v1/subscriptions/{external_id}", tag = "subscriptions",
    params(("external_id" = String, Path)),
    responses((status = 200, body = SubscriptionDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_subscription(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
) -> Result<Json<SubscriptionDto>, ApiError> {
    let catalog = state.catalog.as_ref();
    let org = tenant.organization_id;
    let subscription = catalog.get_subscription(org, &external_id).await?;
    Ok(Json(subscription_dto(catalog, org, subscription).await?))
}

/// Update a subscription with a JSON merge patch.
///
/// Only `name`, `ended_at` and `billing_anchor` may change (others: `not_allowed`, unless they
/// repeat the current value). A terminated subscription takes no changes (409
/// `subscription_terminated`).
#[utoipa::path(patch, path = "/v1/subscriptions/{external_id}", tag = "subscriptions",
    params(("external_id" = String, Path)), request_body = SubscriptionPatchInput,
    responses(
        (status = 200, body = SubscriptionDto),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`subscription_terminated`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn update_subscription(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
    JsonBody(patch): JsonBody,
) -> Result<Json<SubscriptionDto>, ApiError> {
    let catalog = state.catalog.as_ref();
    let org = tenant.organization_id;
    let subscription = ops::update_subscription(catalog, org, &external_id, &patch).await?;
    Ok(Json(subscription_dto(catalog, org, subscription).await?))
}

/// Terminate a subscription now: it ends now (or at its earlier end). Terminating a
/// terminated subscription answers it unchanged.
#[utoipa::path(post, path = "/v1/subscriptions/{external_id}/terminate", tag = "subscriptions",
    params(("external_id" = String, Path)),
    responses((status = 200, body = SubscriptionDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn terminate_subscription(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
) -> Result<Json<SubscriptionDto>, ApiError> {
    let catalog = state.catalog.as_ref();
    let org = tenant.organization_id;
    let subscription = ops::terminate_subscription(catalog, org, &external_id).await?;
    Ok(Json(subscription_dto(catalog, org, subscription).await?))
}
