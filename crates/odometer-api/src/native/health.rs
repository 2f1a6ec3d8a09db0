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
    match state.catalog.ping().await {
        Ok(()) => (StatusCode::OK, Json(HealthDto { status: "ok".into(), store: "ok".into() })),
        Err(err) => {
            tracing::warn!(error = %err, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthDto { status: "unavailable".into(), store: err.code().into() }),
            )
        }
    }
}
