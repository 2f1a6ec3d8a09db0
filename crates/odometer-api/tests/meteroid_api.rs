//! The Meteroid dialect over real HTTP, for what its SDK cannot send: every failure is a JSON
//! `{code, message}` (unknown routes, wrong methods, content types, malformed bodies and query
//! strings), tenants are isolated, and metrics Meteroid cannot describe stay invisible. The
//! SDK-driven suite is `tests/clients/meteroid/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The app with two organizations (see `support::TwoOrgs`), with this file's helpers.
type TestApp = support::TwoOrgs;

async fn spawn_app() -> TestApp {
    support::TwoOrgs::spawn().await
}

impl TestApp {
    async fn raw(
        &self,
        method: Method,
        path: &str,
        key: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let answer = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, body)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.raw(method, path, key, "application/json", &body.to_string()).await
    }
}

fn error(code: &str, status: StatusCode, answer: &(StatusCode, Value)) {
    assert_eq!(answer.0, status, "{:?}", answer.1);
    assert_eq!(answer.1["code"], code, "{:?}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{:?}", answer.1);
}

#[tokio::test]
async fn every_failure_is_a_json_error() {
    let app = spawn_app().await;
    let key = app.key.clone();
    error(
        "NOT_FOUND",
        StatusCode::NOT_FOUND,
        &app.call(Method::GET, "/meteroid/api/v1/nothing", &key, Value::Null).await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::METHOD_NOT_ALLOWED,
        &app.call(Method::DELETE, "/meteroid/api/v1/metrics", &key, Value::Null).await,
    );
    error(
        "UNAUTHORIZED",
        StatusCode::UNAUTHORIZED,
        &app.call(Method::GET, "/meteroid/api/v1/metrics", "odo_wrong", Value::Null).await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &app.raw(Method::POST, "/meteroid/api/v1/product_families", &key, "text/plain", "x").await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::BAD_REQUEST,
        &app.raw(Method::POST, "/meteroid/api/v1/product_families", &key, "application/json", "{")
            .await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::BAD_REQUEST,
        &app.call(Method::POST, "/meteroid/api/v1/product_families", &key, json!({"nom": "x"}))
            .await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::BAD_REQUEST,
        &app.call(Method::GET, "/meteroid/api/v1/metrics?colour=red", &key, Value::Null).await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::BAD_REQUEST,
        &app.call(Method::GET, "/meteroid/api/v1/metrics?page=-1", &key, Value::Null).await,
    );
    error(
        "BAD_REQUEST",
        StatusCode::BAD_REQUEST,
        &app.call(
            Method::GET,
            "/meteroid/api/v1/usage/summary?start_date=2026-13-01&end_date=2026-12-01",
            &key,
            Value::Null,
        )
        .await,
    );
}

#[tokio::test]
async fn tenants_are_isolated_and_native_only_metrics_are_invisible() {
    let app = spawn_app().await;
    let (key, other) = (app.key.clone(), app.other_key.clone());
    let (status, family) = app
        .call(Method::POST, "/meteroid/api/v1/product_families", &key, json!({"name": "infra"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, metric) = app
        .call(
            Method::POST,
            "/meteroid/api/v1/metrics",
            &key,
            json!({"name": "Calls", "code": "calls", "aggregation_type": "COUNT",
                   "product_family_id": family["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{metric}");
    let id = metric["id"].as_str().unwrap();

    // Another organization sees neither the family nor the metric.
    let family_path =
        format!("/meteroid/api/v1/product_families/{}", family["id"].as_str().unwrap());
    error(
        "NOT_FOUND",
        StatusCode::NOT_FOUND,
        &app.call(Method::GET, &family_path, &other, Value::Null).await,
    );
    let metric_path = format!("/meteroid/api/v1/metrics/{id}");
    error(
        "NOT_FOUND",
        StatusCode::NOT_FOUND,
        &app.call(Method::GET, &metric_path, &other, Value::Null).await,
    );
    let (_, listed) = app.call(Method::GET, "/meteroid/api/v1/metrics", &other, Value::Null).await;
    assert_eq!(listed["data"], json!([]));
    assert_eq!(listed["pagination_meta"]["total_items"], 0);

    // The same metric natively: its Odometer code is derived from the id, its event code is
    // Meteroid's code.
    let (status, native) =
        app.call(Method::GET, &format!("/v1/metrics/{id}"), &key, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(native["event_code"], "calls");
    assert_eq!(native["product_family_id"], family["id"]);

    // A native metric without a product family has no Meteroid form.
    let (status, plain) = app
        .call(
            Method::POST,
            "/v1/metrics",
            &key,
            json!({"code": "plain", "name": "Plain", "aggregation": {"type": "count"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let plain_path = format!("/meteroid/api/v1/metrics/{}", plain["id"].as_str().unwrap());
    error(
        "NOT_FOUND",
        StatusCode::NOT_FOUND,
        &app.call(Method::GET, &plain_path, &key, Value::Null).await,
    );
    let (_, listed) = app.call(Method::GET, "/meteroid/api/v1/metrics", &key, Value::Null).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}
