//! `/api/v1/product_families`: Meteroid's product families, kept as dialect records (Odometer
//! has no product catalog; a metric keeps its family's id verbatim).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::{time, MetricId, OrganizationId};
use odometer_store::dialect_records::DialectRecord;
use odometer_store::Catalog;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::MeteroidError;
use super::extract::{typed, JsonBody, PathParam, QueryParams, Tenant};
use super::mapping;
use crate::AppState;

const KIND: &str = "meteroid.product_family";
const PREFIX: &str = "pf_";

fn view(record: &DialectRecord) -> Value {
    json!({"id": record.id, "name": record.name})
}

/// A product family by id; 404 when the organization has none with it.
pub async fn find(
    catalog: &dyn Catalog,
    org: OrganizationId,
    id: &str,
) -> Result<DialectRecord, MeteroidError> {
    catalog
        .get_dialect_record(org, KIND, id)
        .await?
        .ok_or_else(|| MeteroidError::not_found(format!("product family '{id}' not found")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    order_by: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
    search: Option<String>,
}

pub async fn list(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Value>, MeteroidError> {
    let (page, per_page) = mapping::page_bounds(params.page, params.per_page)?;
    let mut records = state.catalog.list_dialect_records(org, KIND).await?;
    if let Some(search) = params.search.as_deref().filter(|s| !s.is_empty()) {
        let needle = search.to_lowercase();
        records.retain(|r| r.name.to_lowercase().contains(&needle));
    }
    match params.order_by.as_deref() {
        None | Some("created_at.asc") => {}
        Some("created_at.desc") => records.reverse(),
        Some("name.asc") => records.sort_by(|a, b| a.name.cmp(&b.name)),
        Some("name.desc") => records.sort_by(|a, b| b.name.cmp(&a.name)),
        Some(other) => {
            return Err(MeteroidError::bad_request(format!(
                "order_by must be name or created_at followed by .asc or .desc, not '{other}'"
            )))
        }
    }
    let items = records.iter().map(view).collect();
    Ok(Json(mapping::paginate(items, page, per_page)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
}

pub async fn create(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), MeteroidError> {
    let request: CreateRequest = typed(body)?;
    if request.name.trim().is_empty() {
        return Err(MeteroidError::bad_request("name must not be empty"));
    }
    // The same look as every Odometer id: a UUIDv7 as 22 base62 digits, with its own prefix.
    let digits = MetricId::new().to_string()[MetricId::PREFIX.len()..].to_owned();
    let record = DialectRecord {
        organization_id: org,
        kind: KIND.to_owned(),
        id: format!("{PREFIX}{digits}"),
        name: request.name,
        document: json!({}),
        created_at: time::now(),
    };
    if !state.catalog.create_dialect_record(&record).await? {
        return Err(MeteroidError::internal("a fresh product family id was taken"));
    }
    Ok((StatusCode::CREATED, Json(view(&record))))
}

pub async fn get(
    Tenant(org): Tenant,
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<Value>, MeteroidError> {
    Ok(Json(view(&find(state.catalog.as_ref(), org, &id).await?)))
}
