//! The Lago dialect over real HTTP against a real store: the rate limit (429 in Lago's
//! envelope, `x-ratelimit-*` headers), tenant isolation, and Lago's envelopes for unknown
//! routes, methods and malformed bodies. The Lago client suite (`tests/clients/lago/`) covers
//! the rest with `lago-python-client` itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use axum::Router;
use odometer_api::lago::rate_limit::RateLimiter;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct TestApp {
    base: String,
    http: reqwest::Client,
    key: String,
    other_key: String,
    _stores: support::Stores,
}

/// A fresh store and a server with only the Lago dialect, limited to `capacity` requests at
/// once per key (refilled at one per thousand seconds, so nothing refills during a test).
async fn spawn_lago(capacity: u64) -> TestApp {
    let stores = support::Stores::new().await;
    let (a, b) = (stores.organization("acme").await, stores.organization("globex").await);
    let limiter = Arc::new(RateLimiter::new(capacity, 0.001));
    let app = Router::new()
        .nest("/lago", odometer_api::lago::router_with(limiter))
        .with_state(stores.state());
    let addr = support::serve(app).await;
    TestApp {
        base: format!("http://{addr}/lago/api/v1"),
        http: reqwest::Client::new(),
        key: a.secret,
        other_key: b.secret,
        _stores: stores,
    }
}

impl TestApp {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer.json().await.unwrap();
        (status, headers, body)
    }
}

#[tokio::test]
async fn requests_past_the_limit_are_429_in_lagos_envelope() {
    let app = spawn_lago(2).await;
    for remaining in ["1", "0"] {
        let (status, headers, _) =
            app.send(reqwest::Method::GET, "/billable_metrics", &app.key, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-limit"], "2");
        assert_eq!(headers["x-ratelimit-remaining"], remaining);
    }
    let (status, headers, body) =
        app.send(reqwest::Method::GET, "/billable_metrics", &app.key, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({"status": 429, "error": "Too Many Requests",
                            "code": "too_many_requests"})
    );
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-reset"], "2000", "two tokens at one per 1000 s");
    // Each key has its own bucket.
    let (status, _, _) =
        app.send(reqwest::Method::GET, "/billable_metrics", &app.other_key, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn another_organizations_metric_is_not_found() {
    let app = spawn_lago(100).await;
    let metric = r#"{"billable_metric": {"name": "Calls", "code": "calls",
                                           "aggregation_type": "count_agg"}}"#;
    let (status, _, body) =
        app.send(reqwest::Method::POST, "/billable_metrics", &app.key, Some(metric)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["billable_metric"]["plans_count"], 0);
    let (status, _, body) =
        app.send(reqwest::Method::GET, "/billable_metrics/calls", &app.other_key, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"status": 404, "error": "Not Found",
                            "code": "billable_metric_not_found"})
    );
    let (status, _, body) =
        app.send(reqwest::Method::GET, "/billable_metrics/calls", "odo_nope", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"status": 401, "error": "Unauthorized"}))
    );
}

#[tokio::test]
async fn malformed_requests_get_lago_envelopes() {
    let app = spawn_lago(100).await;
    let (status, _, body) =
        app.send(reqwest::Method::POST, "/billable_metrics", &app.key, Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], 400);
    let (status, _, body) =
        app.send(reqwest::Method::POST, "/events", &app.key, Some(r#"{"event": {}}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        "BadRequest: param is missing or the value is empty or invalid: event"
    );
    let (status, _, body) = app
        .send(reqwest::Method::POST, "/events", &app.key, Some(r#"{"event": {"code": "c"}}"#))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error_details"],
        json!({"transaction_id": ["value_is_mandatory"],
               "external_subscription_id": ["value_is_mandatory"]})
    );
    let (status, _, body) =
        app.send(reqwest::Method::PATCH, "/billable_metrics/x", &app.key, Some("{}")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
    let (status, _, body) = app.send(reqwest::Method::GET, "/invoices", &app.key, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "resource_not_found");
}
