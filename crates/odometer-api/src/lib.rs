//! Odometer's HTTP surfaces: the native `/v1` API, the Lago, Meteroid and Zenskar dialects,
//! the web console (`/console`), request ids, health, the generated OpenAPI document and the
//! `/docs` page.

mod console;
mod docs;
pub mod lago;
mod meteroid;
pub mod native;
mod request_context;
pub mod shed;
pub mod telemetry;
pub mod zenskar;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use odometer_store::{Catalog, EventStore};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use request_context::REQUEST_ID_HEADER;

/// The dialects' metric mappings, for the fuzz targets in `fuzz/`: not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::lago::mapping::metric_definition as lago_metric_definition;
    pub use crate::meteroid::mapping::{
        create_definition as meteroid_create_definition, update_patch as meteroid_update_patch,
    };
}

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
    app_with(state, Limits::default())
}

/// Every bound a server applies: load shedding ([`shed::Limits`]) and the native API's rate
/// limit per API key (the Lago dialect keeps its own, with Lago's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub shed: shed::Limits,
    /// Requests a key may send at once before it is limited.
    pub native_burst: u64,
    /// Requests per second a key's allowance refills at.
    pub native_per_second: f64,
}

impl Default for Limits {
    /// Generous: they protect the server from a runaway client, they are not quotas.
    fn default() -> Self {
        Self { shed: shed::Limits::default(), native_burst: 10_000, native_per_second: 2_000.0 }
    }
}

/// [`app`] with the given bounds.
pub fn app_with(state: AppState, limits: Limits) -> Router {
    let (native, openapi) = native::router();
    let limiter =
        Arc::new(lago::rate_limit::RateLimiter::new(limits.native_burst, limits.native_per_second));
    let native = native.layer(axum::middleware::from_fn(move |request, next| {
        lago::rate_limit::limit_with(limiter.clone(), request, next, || {
            use axum::response::IntoResponse;
            native::error::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this API key: retry after the seconds in retry-after",
            )
            .into_response()
        })
    }));
    let shedder = Arc::new(shed::Shedder::new(limits.shed));
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
        .layer(axum::middleware::from_fn(move |request, next| {
            shed::shed(shedder.clone(), request, next)
        }))
        .layer(axum::middleware::from_fn(telemetry::record_request))
        .layer(axum::middleware::from_fn(request_context::scope))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_context::header_name()))
        .layer(SetRequestIdLayer::new(request_context::header_name(), MakeRequestUuid))
}
