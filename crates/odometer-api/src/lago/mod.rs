//! The Lago dialect (`/lago/api/v1/...`): Lago's wire format over Odometer's catalog, event
//! store and billing, so `lago-python-client` (1.55.0) works against Odometer with
//! `api_url="http://host:port/lago/"`. Facts about the wire format: `reference/lago.md`; what
//! maps and what differs: `docs/lago.md`. A dialect never computes usage itself: every number
//! comes from `odometer-store` (`billing::current_usage`) and the core engine.

pub mod customers;
pub mod error;
pub mod events;
pub mod extract;
pub mod mapping;
pub mod metrics;
pub mod plans;
pub mod rate_limit;
pub mod subscriptions;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;
use rate_limit::RateLimiter;

/// Request bodies of the catalog routes.
const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Request bodies of the event routes (a batch is at most 100 events).
const EVENTS_BODY_LIMIT_BYTES: usize = 10 * 1024 * 1024;

/// The routes under `/lago/api/v1`, to nest under `/lago`, each answering Lago's envelope
/// (unknown routes included) and carrying `x-ratelimit-*` headers, with the default limits.
pub fn router() -> Router<AppState> {
    router_with(Arc::new(RateLimiter::default()))
}

/// [`router`] with the given rate limiter.
pub fn router_with(limiter: Arc<RateLimiter>) -> Router<AppState> {
    let catalog = Router::new()
        .route("/billable_metrics", get(metrics::list).post(metrics::create))
        .route("/billable_metrics/evaluate_expression", post(metrics::evaluate_expression))
        .route(
            "/billable_metrics/{code}",
            get(metrics::get).put(metrics::update).delete(metrics::destroy),
        )
        .route("/customers", get(customers::list).post(customers::create))
        .route("/customers/{external_id}", get(customers::get).delete(customers::destroy))
        .route("/customers/{external_id}/current_usage", get(customers::current_usage))
        .route("/plans", get(plans::list).post(plans::create))
        .route("/plans/{code}", get(plans::get).put(plans::update).delete(plans::destroy))
        .route("/plans/{code}/charges", get(plans::list_charges))
        .route("/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route(
            "/subscriptions/{external_id}",
            get(subscriptions::get).put(subscriptions::update).delete(subscriptions::terminate),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    let events = Router::new()
        .route("/events", get(events::list).post(events::create))
        .route("/events/batch", post(events::batch))
        .route("/events/estimate_fees", post(events::estimate_fees))
        .route("/events/{transaction_id}", get(events::get))
        .layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT_BYTES));
    let api = catalog
        .merge(events)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(move |request, next| {
            rate_limit::limit(limiter.clone(), request, next)
        }));
    Router::new()
        .nest("/api/v1", api)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
}
