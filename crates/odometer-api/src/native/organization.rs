//! `GET /v1/organization`: the organization the API key belongs to.

use axum::extract::State;
use axum::Json;

use super::dto::OrganizationDto;
use super::error::{ApiError, ErrorBody};
use super::extract::Tenant;
use super::mapping;
use crate::AppState;

/// The key's organization: id, name, settings.
#[utoipa::path(get, path = "/v1/organization", tag = "organization",
    responses((status = 200, body = OrganizationDto), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_organization(
    tenant: Tenant,
    State(state): State<AppState>,
) -> Result<Json<OrganizationDto>, ApiError> {
    let org = state.catalog.get_organization(tenant.organization_id).await?;
    Ok(Json(mapping::organization(&org)))
}
