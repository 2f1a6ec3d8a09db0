//! `GET /healthz`: liveness and store reachability, without authentication.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::dto::HealthDto;
use crate::AppState;

/// Liveness and store reachability.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, body = HealthDto), (status = 503, description = "the store does not answer", body = HealthDto)))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<HealthDto>) {
    let describe = |result: Result<(), odometer_store::StoreError>, part: &str| match result {
        Ok(()) => "ok".to_owned(),
        Err(err) => {
            tracing::warn!(error = %err, "health check: {part} unavailable");
            err.code().to_owned()
        }
    };
    let catalog = describe(state.catalog.ping().await, "catalog");
    let events = describe(state.events.ping().await, "event store");
    let healthy = catalog == "ok" && events == "ok";
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let dto = HealthDto {
        status: if healthy { "ok" } else { "unavailable" }.to_owned(),
        catalog,
        events,
    };
    (status, Json(dto))
}
