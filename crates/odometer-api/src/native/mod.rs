//! The native API (`/v1`): metrics, customers, the organization; its OpenAPI document is
//! generated from these handlers.

pub mod current_usage;
pub mod customers;
pub mod dto;
pub mod error;
pub mod events;
pub mod explain;
pub mod extract;
pub mod health;
pub mod mapping;
pub mod metrics;
pub mod organization;
pub mod plan_dto;
pub mod plan_mapping;
pub mod plans;
pub mod preview;
pub mod subscriptions;
pub mod usage;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use error::ApiError;

/// Request bodies of the catalog routes (events get their own, larger limit).
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Request bodies of the event ingestion routes.
pub const EVENTS_BODY_LIMIT_BYTES: usize = 10 * 1024 * 1024;
const DEFAULT_PAGE_LIMIT: u32 = 100;
const MAX_PAGE_LIMIT: u32 = 1000;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Odometer",
        description = "The native API of Odometer, a usage-metering engine. Authenticate with `Authorization: Bearer <key>`. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`; decimals travel as strings; instants are RFC 3339 with microseconds and `Z`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "metrics", description = "Billable metrics and their revisions"),
        (name = "customers", description = "The customers usage is metered for"),
        (name = "plans", description = "Plans: a base amount and charges that price metrics' usage"),
        (name = "subscriptions", description = "Customers' subscriptions to plans, and their billing periods"),
        (name = "events", description = "Usage events: exactly-once ingestion and reads"),
        (name = "usage", description = "How much was used"),
        (name = "organization", description = "The API key's organization"),
        (name = "health", description = "Liveness"),
    )
)]
struct NativeApi;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/v1` routes and the OpenAPI document generated from them.
pub fn router() -> (Router<AppState>, OpenApiDoc) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(NativeApi::openapi())
        .routes(routes!(metrics::create_metric, metrics::list_metrics))
        .routes(routes!(metrics::get_metric, metrics::update_metric, metrics::delete_metric))
        .routes(routes!(metrics::archive_metric))
        .routes(routes!(metrics::unarchive_metric))
        .routes(routes!(metrics::list_revisions))
        .routes(routes!(metrics::get_revision))
        .routes(routes!(preview::preview_metric))
        .routes(routes!(customers::create_customer, customers::list_customers))
        .routes(routes!(
            customers::get_customer,
            customers::update_customer,
            customers::delete_customer
        ))
        .routes(routes!(plans::create_plan, plans::list_plans))
        .routes(routes!(plans::get_plan, plans::replace_plan, plans::delete_plan))
        .routes(routes!(subscriptions::create_subscription, subscriptions::list_subscriptions))
        .routes(routes!(subscriptions::get_subscription, subscriptions::update_subscription))
        .routes(routes!(subscriptions::terminate_subscription))
        .routes(routes!(organization::get_organization))
        .routes(routes!(usage::get_usage))
        .routes(routes!(current_usage::get_current_usage))
        .routes(routes!(events::list_events))
        .routes(routes!(events::get_event))
        .routes(routes!(explain::explain_event))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(events::ingest_events))
                .routes(routes!(events::ingest_ndjson))
                .layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT_BYTES)),
        )
        .split_for_parts();
    // /healthz is served beside the API (unauthenticated) but documented with it.
    let (_, health_doc) =
        OpenApiRouter::<AppState>::new().routes(routes!(health::healthz)).split_for_parts();
    openapi.merge(health_doc);
    (router, openapi)
}

/// A list's `limit`: 1 to 1000, 100 when absent; anything else is an error, not a clamp.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be from 1 to {MAX_PAGE_LIMIT}, not {n}"),
        )),
    }
}
