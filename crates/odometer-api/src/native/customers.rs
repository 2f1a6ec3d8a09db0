//! `/v1/customers`: create, list, get, patch, delete (addressed by external id).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_store::customers as ops;
use odometer_store::CustomerListParams;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{CustomerDto, CustomerInput, ListDto};
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, Tenant};
use super::{mapping, page_limit};
use crate::AppState;

/// Query of `GET /v1/customers`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerListQuery {
    /// Case-insensitive substring of the external id, name or email.
    search: Option<String>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Create a customer.
#[utoipa::path(post, path = "/v1/customers", tag = "customers", request_body = CustomerInput,
    responses(
        (status = 201, body = CustomerDto),
        (status = 409, description = "`external_id_taken`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn create_customer(
    tenant: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<CustomerDto>), ApiError> {
    let customer =
        ops::create_customer(state.catalog.as_ref(), tenant.organization_id, &body).await?;
    Ok((StatusCode::CREATED, Json(mapping::customer(&customer))))
}

/// List customers, oldest first.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(CustomerListQuery),
    responses((status = 200, body = ListDto<CustomerDto>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_customers(
    tenant: Tenant,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<CustomerListQuery>,
) -> Result<Json<ListDto<CustomerDto>>, ApiError> {
    let params = CustomerListParams {
        search: query.search.filter(|s| !s.is_empty()),
        limit: page_limit(query.limit)?,
        cursor: query.cursor,
    };
    let page = state.catalog.list_customers(tenant.organization_id, &params).await?;
    Ok(Json(mapping::page(page, mapping::customer)))
}

/// Get a customer by external id.
#[utoipa::path(get, path = "/v1/customers/{external_id}", tag = "customers",
    params(("external_id" = String, Path)),
    responses((status = 200, body = CustomerDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_customer(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
) -> Result<Json<CustomerDto>, ApiError> {
    let customer = state.catalog.get_customer(tenant.organization_id, &external_id).await?;
    Ok(Json(mapping::customer(&customer)))
}

/// Update a customer with a JSON merge patch.
#[utoipa::path(patch, path = "/v1/customers/{external_id}", tag = "customers",
    params(("external_id" = String, Path)), request_body = CustomerInput,
    responses(
        (status = 200, body = CustomerDto),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn update_customer(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
    JsonBody(patch): JsonBody,
) -> Result<Json<CustomerDto>, ApiError> {
    let customer =
        ops::update_customer(state.catalog.as_ref(), tenant.organization_id, &external_id, &patch)
            .await?;
    Ok(Json(mapping::customer(&customer)))
}

/// Delete a customer; its external id becomes free.
#[utoipa::path(delete, path = "/v1/customers/{external_id}", tag = "customers",
    params(("external_id" = String, Path)),
    responses((status = 200, description = "the deleted customer", body = CustomerDto), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_customer(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(external_id): PathParams<String>,
) -> Result<Json<CustomerDto>, ApiError> {
    let customer = state.catalog.delete_customer(tenant.organization_id, &external_id).await?;
    Ok(Json(mapping::customer(&customer)))
}
