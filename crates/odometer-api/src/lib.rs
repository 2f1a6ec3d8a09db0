//! Odometer's HTTP surfaces: the native `/v1` API, the Lago, Meteroid and Zenskar dialects,
//! the web console (`/console`), request ids, health, the generated OpenAPI document and the
//! `/docs` page.

mod console;
mod docs;
pub mod lago;
mod meteroid;
pub mod native;
mod request_context;
pub mod telemetry;
pub mod zenskar;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use odometer_store::{Catalog, EventStore};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use request_context::REQUEST_ID_HEADER;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<dyn Catalog>,
    pub events: Arc<dyn EventStore>,
}

impl AppState {
    /// Tells the event store's usage index the organization's current metric definitions,
    /// after a metric was created, changed or deleted. A failure is logged, not returned: the
    /// change itself is saved, and until the index has the new definition its questions are
    /// answered from the events.
    pub async fn metrics_changed(&self, org: odometer_core::OrganizationId) {
        let synced = odometer_store::usage_index::sync_organization(
            self.catalog.as_ref(),
            self.events.as_ref(),
            org,
        )
        .await;
        if let Err(err) = synced {
            tracing::warn!(%err, %org, "cannot give the usage index the new metric definitions");
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The whole HTTP application: every surface, with request ids and tracing.
pub fn app(state: AppState) -> Router {
    let (native, openapi) = native::router();
    let openapi = Arc::new(openapi);
    let docs_html = Arc::new(docs::render(&openapi));
    Router::new()
        .route("/healthz", get(native::health::healthz))
        .route(
            "/openapi.json",
            get({
                let openapi = openapi.clone();
                move || async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let html = docs_html.clone();
                async move { axum::response::Html(html.as_ref().clone()) }
            }),
        )
        .merge(native)
        .merge(console::router())
        .nest("/lago", lago::router())
        .nest("/zenskar", zenskar::router())
        .nest("/meteroid", meteroid::router())
        .fallback(native::error::route_not_found)
        .method_not_allowed_fallback(native::error::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(telemetry::record_request))
        .layer(axum::middleware::from_fn(request_context::scope))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_context::header_name()))
        .layer(SetRequestIdLayer::new(request_context::header_name(), MakeRequestUuid))
}
