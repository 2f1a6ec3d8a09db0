//! Every route of every surface, for the sweeps that must cover them all (the isolation
//! sweep, the bad-input corpus), and the check that no route is missing: the native API's
//! routes come from its OpenAPI document (generated from its router), the dialects' from their
//! router sources.

use std::collections::BTreeSet;

use serde_json::Value;

/// Every (method, route pattern) the sweep calls, with the query string it adds.
pub fn inventory() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        // native
        ("GET", "/v1/organization", ""),
        ("GET", "/v1/metrics", "search=calls&archived=true"),
        ("POST", "/v1/metrics", ""),
        ("GET", "/v1/metrics/{id_or_code}", ""),
        ("PATCH", "/v1/metrics/{id_or_code}", ""),
        ("DELETE", "/v1/metrics/{id_or_code}", ""),
        ("POST", "/v1/metrics/{id_or_code}/archive", ""),
        ("POST", "/v1/metrics/{id_or_code}/unarchive", ""),
        ("POST", "/v1/metrics/{id_or_code}/preview", ""),
        ("GET", "/v1/metrics/{id_or_code}/revisions", ""),
        ("GET", "/v1/metrics/{id_or_code}/revisions/{revision}", ""),
        ("GET", "/v1/customers", "search=cust"),
        ("POST", "/v1/customers", ""),
        ("GET", "/v1/customers/{external_id}", ""),
        ("PATCH", "/v1/customers/{external_id}", ""),
        ("DELETE", "/v1/customers/{external_id}", ""),
        ("GET", "/v1/plans", "search=pro"),
        ("POST", "/v1/plans", ""),
        ("GET", "/v1/plans/{id_or_code}", ""),
        ("PUT", "/v1/plans/{id_or_code}", ""),
        ("DELETE", "/v1/plans/{id_or_code}", ""),
        ("GET", "/v1/subscriptions", ""),
        ("POST", "/v1/subscriptions", ""),
        ("GET", "/v1/subscriptions/{external_id}", ""),
        ("PATCH", "/v1/subscriptions/{external_id}", ""),
        ("POST", "/v1/subscriptions/{external_id}/terminate", ""),
        ("GET", "/v1/subscriptions/{external_id}/usage", ""),
        (
            "GET",
            "/v1/usage",
            "metric=calls&customer=cust-a&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z",
        ),
        ("GET", "/v1/events", "customer=cust-a"),
        ("POST", "/v1/events", ""),
        ("POST", "/v1/events/ndjson", ""),
        ("GET", "/v1/events/{transaction_id}", "customer=cust-a"),
        ("POST", "/v1/events/explain", ""),
        ("GET", "/healthz", ""),
        // Lago
        ("GET", "/lago/api/v1/billable_metrics", ""),
        ("POST", "/lago/api/v1/billable_metrics", ""),
        ("POST", "/lago/api/v1/billable_metrics/evaluate_expression", ""),
        ("GET", "/lago/api/v1/billable_metrics/{code}", ""),
        ("PUT", "/lago/api/v1/billable_metrics/{code}", ""),
        ("DELETE", "/lago/api/v1/billable_metrics/{code}", ""),
        ("GET", "/lago/api/v1/customers", ""),
        ("POST", "/lago/api/v1/customers", ""),
        ("GET", "/lago/api/v1/customers/{external_id}", ""),
        ("DELETE", "/lago/api/v1/customers/{external_id}", ""),
        (
            "GET",
            "/lago/api/v1/customers/{external_id}/current_usage",
            "external_subscription_id=sub-a",
        ),
        ("GET", "/lago/api/v1/plans", ""),
        ("POST", "/lago/api/v1/plans", ""),
        ("GET", "/lago/api/v1/plans/{code}", ""),
        ("PUT", "/lago/api/v1/plans/{code}", ""),
        ("DELETE", "/lago/api/v1/plans/{code}", ""),
        ("GET", "/lago/api/v1/plans/{code}/charges", ""),
        ("GET", "/lago/api/v1/subscriptions", "external_customer_id=cust-a"),
        ("POST", "/lago/api/v1/subscriptions", ""),
        ("GET", "/lago/api/v1/subscriptions/{external_id}", ""),
        ("PUT", "/lago/api/v1/subscriptions/{external_id}", ""),
        ("DELETE", "/lago/api/v1/subscriptions/{external_id}", ""),
        ("GET", "/lago/api/v1/events", "external_subscription_id=sub-a"),
        ("POST", "/lago/api/v1/events", ""),
        ("POST", "/lago/api/v1/events/batch", ""),
        ("POST", "/lago/api/v1/events/estimate_fees", ""),
        ("GET", "/lago/api/v1/events/{transaction_id}", ""),
        // Meteroid
        ("GET", "/meteroid/api/v1/metrics", ""),
        ("POST", "/meteroid/api/v1/metrics", ""),
        ("GET", "/meteroid/api/v1/metrics/{id}", ""),
        ("PATCH", "/meteroid/api/v1/metrics/{id}", ""),
        ("POST", "/meteroid/api/v1/metrics/{id}/archive", ""),
        ("POST", "/meteroid/api/v1/metrics/{id}/unarchive", ""),
        ("POST", "/meteroid/api/v1/events/ingest", ""),
        (
            "GET",
            "/meteroid/api/v1/usage/customer/{id}",
            "start_date=2026-03-01&end_date=2026-04-01",
        ),
        (
            "GET",
            "/meteroid/api/v1/usage/subscription/{id}",
            "start_date=2026-03-01&end_date=2026-04-01",
        ),
        ("GET", "/meteroid/api/v1/usage/summary", "start_date=2026-03-01&end_date=2026-04-01"),
        ("GET", "/meteroid/api/v1/customers", ""),
        ("POST", "/meteroid/api/v1/customers", ""),
        ("GET", "/meteroid/api/v1/customers/{id}", ""),
        ("PUT", "/meteroid/api/v1/customers/{id}", ""),
        ("PATCH", "/meteroid/api/v1/customers/{id}", ""),
        ("DELETE", "/meteroid/api/v1/customers/{id}", ""),
        ("POST", "/meteroid/api/v1/customers/{id}/unarchive", ""),
        ("GET", "/meteroid/api/v1/product_families", ""),
        ("POST", "/meteroid/api/v1/product_families", ""),
        ("GET", "/meteroid/api/v1/product_families/{id}", ""),
        ("POST", "/meteroid/api/v1/plans", ""),
        ("GET", "/meteroid/api/v1/plans/{id}", ""),
        ("POST", "/meteroid/api/v1/subscriptions", ""),
        ("GET", "/meteroid/api/v1/subscriptions/{id}", ""),
        // Zenskar
        ("GET", "/zenskar/aggregates", ""),
        ("POST", "/zenskar/aggregates", ""),
        (
            "GET",
            "/zenskar/aggregates/estimates",
            "customer_id=cust-a&start_date=2026-03-01&end_date=2026-04-01",
        ),
        ("GET", "/zenskar/aggregates/{aggregate_id}", ""),
        ("PATCH", "/zenskar/aggregates/{aggregate_id}", ""),
        ("DELETE", "/zenskar/aggregates/{aggregate_id}", ""),
        ("GET", "/zenskar/rawmetric", ""),
        ("POST", "/zenskar/rawmetric", ""),
        ("GET", "/zenskar/rawmetric/slug/{slug}", ""),
        ("GET", "/zenskar/rawmetric/{id}", ""),
        ("POST", "/zenskar/usage/{api_slug}", ""),
    ]
}

/// The (method, route) pairs of a dialect router's source: every `.route("PATH", get(..)
/// .post(..) ...)`, under `prefix`.
pub fn routes_in_source(source: &str, prefix: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap();
        let call = chunk.split("))\n").next().unwrap();
        for method in ["get", "post", "put", "patch", "delete"] {
            let called =
                call.contains(&format!("{method}(")) || call.contains(&format!(".{method}("));
            if called {
                found.insert((method.to_uppercase(), format!("{prefix}{path}")));
            }
        }
    }
    found
}

/// Fails, naming them, when a router has a route the inventory lacks or the inventory names a
/// route that no longer exists.
pub fn assert_inventory_is_complete(openapi: &Value) {
    let listed: BTreeSet<(String, String)> =
        inventory().iter().map(|(m, r, _)| ((*m).to_owned(), (*r).to_owned())).collect();
    let mut routed = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routed.insert((method.to_uppercase(), path.clone()));
        }
    }
    routed.extend(routes_in_source(include_str!("../../src/lago/mod.rs"), "/lago/api/v1"));
    routed.extend(routes_in_source(include_str!("../../src/meteroid/mod.rs"), "/meteroid/api/v1"));
    routed.extend(routes_in_source(include_str!("../../src/zenskar/mod.rs"), "/zenskar"));
    let missing: Vec<_> = routed.difference(&listed).collect();
    assert!(missing.is_empty(), "routes missing from tests/support/routes.rs: {missing:?}");
    let stale: Vec<_> = listed.difference(&routed).collect();
    assert!(stale.is_empty(), "tests/support/routes.rs names routes that do not exist: {stale:?}");
}
