//! The Zenskar dialect under `/zenskar`: aggregates (SQL metrics), their estimates, raw
//! metrics (usage tables) and usage ingestion, authenticated by `x-api-key` plus
//! `organisation`, with errors in FastAPI's shape. See `docs/zenskar.md`.

mod aggregates;
pub(crate) mod error;
mod extract;
mod mapping;
mod rawmetric;
mod usage;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;
pub use error::ZenskarError;

/// The dialect's routes, to be nested under `/zenskar`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/aggregates", get(aggregates::list).post(aggregates::create))
        .route("/aggregates/estimates", get(aggregates::estimates))
        .route(
            "/aggregates/{aggregate_id}",
            get(aggregates::get).patch(aggregates::patch).delete(aggregates::delete),
        )
        .route("/rawmetric", get(rawmetric::list).post(rawmetric::create))
        .route("/rawmetric/slug/{slug}", get(rawmetric::get_by_slug))
        .route("/rawmetric/{id}", get(rawmetric::get))
        .route("/usage/{api_slug}", post(usage::ingest))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ZenskarError {
    ZenskarError::Status(axum::http::StatusCode::NOT_FOUND, "Not Found".to_owned())
}

async fn method_not_allowed() -> ZenskarError {
    ZenskarError::Status(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed".to_owned(),
    )
}
