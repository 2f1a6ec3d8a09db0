//! The Meteroid dialect under `/meteroid` (so the `meteroid` Python SDK's `base_url` is
//! `http://host:port/meteroid`): billable metrics, event ingestion, usage, customers and
//! product families, in Meteroid's wire format and error envelope. It computes nothing
//! itself: every number comes from the store's operations and the engine.

mod customers;
pub(crate) mod error;
mod events;
mod extract;
pub(crate) mod mapping;
mod metrics;
mod plans;
mod product_families;
mod usage;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

/// The dialect's routes, to be nested under `/meteroid`.
pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route("/metrics", get(metrics::list).post(metrics::create))
        .route("/metrics/{id}", get(metrics::get).patch(metrics::update))
        .route("/metrics/{id}/archive", post(metrics::archive))
        .route("/metrics/{id}/unarchive", post(metrics::unarchive))
        .route("/events/ingest", post(events::ingest))
        .route("/usage/customer/{id}", get(usage::by_customer))
        .route("/usage/subscription/{id}", get(usage::by_subscription))
        .route("/usage/summary", get(usage::summary))
        .route("/customers", get(customers::list).post(customers::create))
        .route(
            "/customers/{id}",
            get(customers::get)
                .put(customers::replace)
                .patch(customers::update)
                .delete(customers::archive),
        )
        .route("/customers/{id}/unarchive", post(customers::unarchive))
        .route("/product_families", get(product_families::list).post(product_families::create))
        .route("/product_families/{id}", get(product_families::get))
        .route("/plans", post(plans::create_plan_route))
        .route("/plans/{id}", get(plans::get_plan))
        .route("/subscriptions", post(plans::create_subscription_route))
        .route("/subscriptions/{id}", get(plans::get_subscription));
    Router::new()
        .nest("/api/v1", api)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
}
