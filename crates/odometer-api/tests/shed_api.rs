//! Load shedding and the native rate limit, through a real server: an ingest or usage request
//! past its bound is a 429 with `retry-after` in its own surface's envelope (native, Lago,
//! Meteroid, Zenskar), stores nothing, and leaves other requests alone; the native API limits
//! each key on its own, with the `x-ratelimit-*` headers the Lago dialect has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use odometer_api::{app_with, shed, Limits};
use serde_json::{json, Value};

/// A server whose shedding bounds are both 0: every bounded request is shed.
async fn saturated() -> (String, String, String, support::Stores) {
    let stores = support::Stores::new().await;
    let org = stores.organization("acme").await;
    let limits = Limits {
        shed: shed::Limits { max_ingest_in_flight: 0, max_queries_in_flight: 0 },
        ..Limits::default()
    };
    let addr = support::serve(app_with(stores.state(), limits)).await;
    (format!("http://{addr}"), org.secret, org.organization.id.to_string(), stores)
}

#[tokio::test]
async fn shed_requests_are_429_in_each_surfaces_envelope_and_store_nothing() {
    let (base, key, org_id, _stores) = saturated().await;
    let http = reqwest::Client::new();
    let event = json!({"transaction_id": "t1", "code": "calls", "customer": "acme",
        "timestamp": "2026-03-01T00:00:00Z"});
    let lago_event = json!({"transaction_id": "t1", "code": "calls",
        "external_subscription_id": "s1", "timestamp": 1_772_323_200});

    // (what, request, the check of the body)
    type Check = fn(&Value) -> bool;
    let cases: Vec<(&str, reqwest::RequestBuilder, Check)> = vec![
        (
            "native ingest",
            http.post(format!("{base}/v1/events"))
                .bearer_auth(&key)
                .json(&json!({"events": [event]})),
            |b| b["error"]["code"] == "overloaded",
        ),
        (
            "native usage",
            http.get(format!("{base}/v1/usage?metric=calls&customer=acme")).bearer_auth(&key),
            |b| b["error"]["code"] == "overloaded",
        ),
        (
            "lago ingest",
            http.post(format!("{base}/lago/api/v1/events"))
                .bearer_auth(&key)
                .json(&json!({"event": lago_event})),
            |b| b["status"] == 429 && b["code"] == "too_many_requests",
        ),
        (
            "lago current usage",
            http.get(format!(
                "{base}/lago/api/v1/customers/acme/current_usage?external_subscription_id=s1"
            ))
            .bearer_auth(&key),
            |b| b["status"] == 429 && b["code"] == "too_many_requests",
        ),
        (
            "meteroid ingest",
            http.post(format!("{base}/meteroid/api/v1/events/ingest"))
                .bearer_auth(&key)
                .json(&json!({"events": []})),
            |b| b["code"] == "TOO_MANY_REQUESTS" && b["message"].is_string(),
        ),
        (
            "zenskar ingest",
            http.post(format!("{base}/zenskar/usage/calls"))
                .header("x-api-key", &key)
                .header("organisation", &org_id)
                .json(&json!({"data": {}})),
            |b| b["detail"].as_str().is_some_and(|d| d.contains("retry")),
        ),
    ];
    for (what, request, check) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 429, "{what}");
        assert_eq!(response.headers()["retry-after"], "1", "{what}");
        let body: Value = response.json().await.unwrap();
        assert!(check(&body), "{what}: {body}");
    }

    // Requests that are neither ingest nor usage are not bounded; nothing was stored.
    let listed = http.get(format!("{base}/v1/events")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "{listed}");
    let metrics = http.get(format!("{base}/v1/metrics")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn the_native_api_limits_each_key_with_its_own_bucket() {
    let stores = support::Stores::new().await;
    let (a, b) = (stores.organization("acme").await, stores.organization("globex").await);
    let limits = Limits { native_burst: 2, native_per_second: 0.001, ..Limits::default() };
    let addr = support::serve(app_with(stores.state(), limits)).await;
    let http = reqwest::Client::new();
    let get = |key: &str| http.get(format!("http://{addr}/v1/metrics")).bearer_auth(key).send();
    for _ in 0..2 {
        let allowed = get(&a.secret).await.unwrap();
        assert_eq!(allowed.status(), 200);
        assert_eq!(allowed.headers()["x-ratelimit-limit"], "2");
    }
    let refused = get(&a.secret).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(get(&b.secret).await.unwrap().status(), 200, "another key has its own bucket");
}

/// Every route of every surface is bounded as decided here, and a route added to the routers
/// (the inventory is checked against them) fails this test until it is decided: ingest,
/// usage question (reads that fold events), or neither (small reads and writes).
#[test]
fn every_route_is_classified_as_decided() {
    use axum::http::Method;
    use shed::Kind::{Ingest, Query};
    let ingest = [
        "/v1/events",
        "/v1/events/ndjson",
        "/lago/api/v1/events",
        "/lago/api/v1/events/batch",
        "/meteroid/api/v1/events/ingest",
        "/zenskar/usage/{api_slug}",
    ];
    let questions = [
        "/v1/usage",
        "/v1/metrics/{id_or_code}/preview",
        "/v1/subscriptions/{external_id}/usage",
        "/lago/api/v1/customers/{external_id}/current_usage",
        "/lago/api/v1/events/estimate_fees",
        "/meteroid/api/v1/usage/customer/{id}",
        "/meteroid/api/v1/usage/subscription/{id}",
        "/meteroid/api/v1/usage/summary",
        "/zenskar/aggregates/estimates",
    ];
    let mut seen = (0, 0);
    for (method, route, _) in support::routes::inventory() {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let expected = if method == Method::POST && ingest.contains(&route) {
            seen.0 += 1;
            Some(Ingest)
        } else if questions.contains(&route) {
            seen.1 += 1;
            Some(Query)
        } else {
            None
        };
        assert_eq!(shed::classify(&method, route), expected, "{method} {route}");
    }
    // Every route named above is still in the inventory.
    assert_eq!(seen, (ingest.len(), questions.len()));
}
