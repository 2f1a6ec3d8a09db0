//! The native API over real HTTP, against a real SQLite catalog in a temporary directory:
//! metric lifecycle and revisions, the lock rule, every kind of invalid definition, customers,
//! authentication and tenant isolation, and the error envelope for malformed requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use odometer_core::{MetricId, OrganizationId};
use odometer_embedded::SqliteCatalog;
use odometer_store::Catalog;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct TestApp {
    base: String,
    http: reqwest::Client,
    catalog: Arc<SqliteCatalog>,
    key: String,
    org: OrganizationId,
    other_key: String,
    other_org: OrganizationId,
    _stores: support::Stores,
}

/// A fresh store and server on a free port, with two organizations.
async fn spawn_app() -> TestApp {
    let stores = support::Stores::new().await;
    let (a, b) = (stores.organization("acme").await, stores.organization("globex").await);
    let addr = support::serve(odometer_api::app(stores.state())).await;
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        catalog: stores.catalog.clone(),
        key: a.secret,
        org: a.organization.id,
        other_key: b.secret,
        other_org: b.organization.id,
        _stores: stores,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl TestApp {
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
        Answer { status, body, headers }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_with(method, path, Some(&self.key), body).await
    }

    async fn create_metric(&self, definition: Value) -> Value {
        let answer = self.call(Method::POST, "/v1/metrics", Some(definition)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body
    }
}

fn storage_metric() -> Value {
    json!({
        "code": "storage", "name": "Storage",
        "aggregation": {"type": "sum", "field": "bytes"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"]},
        "unit_conversion": {"factor": "1000000000", "rounding": "up"}
    })
}

/// Asserts an error answer: status, the envelope's code, and (when given) a detail path.
fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        answer.body
    );
    assert!(answer.body["error"]["details"].is_array(), "{}", answer.body);
}

#[tokio::test]
async fn metric_lifecycle_create_patch_revisions_archive_delete() {
    let app = spawn_app().await;
    let created = app.create_metric(storage_metric()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(MetricId::parse(&id).is_some(), "{id}");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["event_code"], "storage");
    assert_eq!(created["unit_conversion"]["factor"], "1000000000");
    assert_eq!(created["archived_at"], Value::Null);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    // By id and by code.
    assert_eq!(app.call(Method::GET, &format!("/v1/metrics/{id}"), None).await.body, created);
    assert_eq!(app.call(Method::GET, "/v1/metrics/storage", None).await.body, created);

    // Each PATCH that changes something is a new revision.
    let patched = app
        .call(Method::PATCH, &format!("/v1/metrics/{id}"), Some(json!({"name": "Storage (GB)"})))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["revision"], 2);
    assert_eq!(patched.body["name"], "Storage (GB)");
    let patched = app
        .call(
            Method::PATCH,
            "/v1/metrics/storage",
            Some(json!({"unit_conversion": null, "description": "bytes stored"})),
        )
        .await;
    assert_eq!(patched.body["revision"], 3);
    assert_eq!(patched.body["unit_conversion"], Value::Null);
    assert_ne!(patched.body["updated_at"], created["updated_at"]);

    let revisions = app.call(Method::GET, &format!("/v1/metrics/{id}/revisions"), None).await;
    let list = revisions.body["data"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["revision"], 1);
    assert_eq!(list[0]["changes"], json!([]));
    assert_eq!(
        list[1]["changes"],
        json!([{"path": "name", "before": "Storage", "after": "Storage (GB)"}])
    );
    let paths: Vec<&str> = list[2]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["description", "unit_conversion"]);
    assert_eq!(list[0]["definition"]["name"], "Storage");
    let second = app.call(Method::GET, &format!("/v1/metrics/{id}/revisions/2"), None).await;
    assert_eq!(second.body, list[1]);
    assert_error(
        &app.call(Method::GET, &format!("/v1/metrics/{id}/revisions/9"), None).await,
        StatusCode::NOT_FOUND,
        "revision_not_found",
    );

    // A stale revision precondition is a conflict, not a silent overwrite.
    let stale = app
        .call(
            Method::PATCH,
            &format!("/v1/metrics/{id}"),
            Some(json!({"name": "x", "revision": 2})),
        )
        .await;
    assert_error(&stale, StatusCode::CONFLICT, "revision_conflict");

    // Archive hides it from the default list; unarchive brings it back.
    let archived = app.call(Method::POST, &format!("/v1/metrics/{id}/archive"), None).await;
    assert_eq!(archived.status, StatusCode::OK);
    assert!(archived.body["archived_at"].is_string());
    assert_eq!(app.call(Method::GET, "/v1/metrics", None).await.body["data"], json!([]));
    let listed = app.call(Method::GET, "/v1/metrics?archived=true", None).await;
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    let unarchived = app.call(Method::POST, &format!("/v1/metrics/{id}/unarchive"), None).await;
    assert_eq!(unarchived.body["archived_at"], Value::Null);
    assert_eq!(
        app.call(Method::GET, "/v1/metrics", None).await.body["data"].as_array().unwrap().len(),
        1
    );

    // Delete frees the code; the revisions stay readable by id.
    let deleted = app.call(Method::DELETE, &format!("/v1/metrics/{id}"), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert!(deleted.body["deleted_at"].is_string());
    assert_error(
        &app.call(Method::GET, &format!("/v1/metrics/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "metric_not_found",
    );
    assert_eq!(
        app.call(Method::GET, &format!("/v1/metrics/{id}/revisions"), None).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let again = app.create_metric(storage_metric()).await;
    assert_ne!(again["id"], id.as_str());
}

#[tokio::test]
async fn patch_of_a_locked_field_on_an_attached_metric_is_409_metric_locked() {
    let app = spawn_app().await;
    let created = app.create_metric(storage_metric()).await;
    let id = MetricId::parse(created["id"].as_str().unwrap()).unwrap();
    // Until plans exist, attachment is recorded through the store.
    app.catalog.set_metric_attachment(app.org, id, "plan:startup", true).await.unwrap();

    let refused = app
        .call(
            Method::PATCH,
            "/v1/metrics/storage",
            Some(json!({"aggregation": {"field": "size"}, "event_code": "upload"})),
        )
        .await;
    assert_error(&refused, StatusCode::CONFLICT, "metric_locked");
    let fields: Vec<&str> = refused.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["event_code", "aggregation.field"]);
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("aggregation.field"));
    // Nothing was saved.
    assert_eq!(app.call(Method::GET, "/v1/metrics/storage", None).await.body["revision"], 1);

    // Unlocked fields still change, as a new revision.
    let renamed = app
        .call(
            Method::PATCH,
            "/v1/metrics/storage",
            Some(json!({"name": "Stored bytes", "rounding": {"function": "ceil", "precision": 2}})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["revision"], 2);

    // An attached metric cannot be deleted; once detached, the lock is gone.
    assert_error(
        &app.call(Method::DELETE, "/v1/metrics/storage", None).await,
        StatusCode::CONFLICT,
        "metric_attached",
    );
    app.catalog.set_metric_attachment(app.org, id, "plan:startup", false).await.unwrap();
    let changed = app
        .call(Method::PATCH, "/v1/metrics/storage", Some(json!({"aggregation": {"field": "size"}})))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["aggregation"]["field"], "size");
}

async fn assert_refused(app: &TestApp, definition: Value, path: &str, code: &str) {
    let answer = app.call(Method::POST, "/v1/metrics", Some(definition)).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, code);
    assert_eq!(answer.body["error"]["details"][0]["path"], path, "{}", answer.body);
    assert_eq!(answer.body["error"]["details"][0]["code"], code, "{}", answer.body);
}

#[tokio::test]
async fn invalid_sum_without_field() {
    let app = spawn_app().await;
    assert_refused(
        &app,
        json!({"code": "c", "name": "n", "aggregation": {"type": "sum"}}),
        "aggregation.field",
        "missing_field",
    )
    .await;
}

#[tokio::test]
async fn invalid_recurring_count() {
    let app = spawn_app().await;
    let definition =
        json!({"code": "c", "name": "n", "aggregation": {"type": "count", "recurring": true}});
    assert_refused(&app, definition, "aggregation.recurring", "recurring_not_allowed").await;
}

#[tokio::test]
async fn invalid_negative_factor() {
    let app = spawn_app().await;
    let mut definition = storage_metric();
    definition["unit_conversion"]["factor"] = json!("-1000");
    assert_refused(&app, definition, "unit_conversion.factor", "invalid_value").await;
}

#[tokio::test]
async fn invalid_unparsable_expression() {
    let app = spawn_app().await;
    let definition = json!({"code": "c", "name": "n", "aggregation": {"type": "sum", "expression": "event.properties.a * * 2"}});
    let answer = app.call(Method::POST, "/v1/metrics", Some(definition.clone())).await;
    assert_refused(&app, definition, "aggregation.expression", "invalid_expression").await;
    assert!(
        answer.body["error"]["details"][0]["message"].as_str().unwrap().contains("position 21"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn invalid_duplicate_code_is_409_code_taken() {
    let app = spawn_app().await;
    app.create_metric(storage_metric()).await;
    let answer = app.call(Method::POST, "/v1/metrics", Some(storage_metric())).await;
    assert_error(&answer, StatusCode::CONFLICT, "code_taken");
    // Another organization may use the same code.
    let other = app
        .call_with(Method::POST, "/v1/metrics", Some(&app.other_key), Some(storage_metric()))
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    // Renaming onto a taken code is refused too.
    app.create_metric(
        json!({"code": "uploads", "name": "Uploads", "aggregation": {"type": "count"}}),
    )
    .await;
    let renamed =
        app.call(Method::PATCH, "/v1/metrics/uploads", Some(json!({"code": "storage"}))).await;
    assert_error(&renamed, StatusCode::CONFLICT, "code_taken");
}

#[tokio::test]
async fn invalid_unknown_aggregation() {
    let app = spawn_app().await;
    let definition =
        json!({"code": "c", "name": "n", "aggregation": {"type": "p99", "field": "latency"}});
    assert_refused(&app, definition, "aggregation.type", "unknown_aggregation").await;
}

#[tokio::test]
async fn invalid_bad_segmentation() {
    let app = spawn_app().await;
    let mut definition = storage_metric();
    definition["segmentation"] = json!({"type": "double", "dimension1": {"key": "region", "values": ["eu"]}, "dimension2": {"key": "region", "values": ["a"]}});
    assert_refused(&app, definition, "segmentation.dimension2.key", "invalid_value").await;
    let mut definition = storage_metric();
    definition["segmentation"]["values"] = json!([]);
    assert_refused(&app, definition, "segmentation.values", "invalid_value").await;
}

#[tokio::test]
async fn every_problem_is_listed_with_its_path() {
    let app = spawn_app().await;
    let answer = app
        .call(Method::POST, "/v1/metrics", Some(json!({"code": "c", "aggregation": {"type": "max"}, "group_by": [1], "extra": true})))
        .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "missing_field");
    let paths: Vec<&str> = answer.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["name", "aggregation.field", "group_by[0]", "extra"]);
}

#[tokio::test]
async fn list_pages_with_cursor_and_searches() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create_metric(json!({"code": format!("m{i}"), "name": format!("Metric {i}"), "aggregation": {"type": "count"}})).await;
    }
    app.create_metric(json!({"code": "gpu_seconds", "name": "GPU time", "aggregation": {"type": "sum", "field": "s"}})).await;
    let mut seen = Vec::new();
    let mut path = "/v1/metrics?limit=2".to_owned();
    loop {
        let page = app.call(Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for m in page.body["data"].as_array().unwrap() {
            seen.push(m["code"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/metrics?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4", "gpu_seconds"]);
    let found = app.call(Method::GET, "/v1/metrics?search=gpu", None).await;
    assert_eq!(found.body["data"].as_array().unwrap().len(), 1);
    let found = app.call(Method::GET, "/v1/metrics?search=METRIC%203", None).await;
    assert_eq!(found.body["data"][0]["code"], "m3");
    assert_error(
        &app.call(Method::GET, "/v1/metrics?limit=0", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_limit",
    );
    assert_error(
        &app.call(Method::GET, "/v1/metrics?limit=1001", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_limit",
    );
    assert_error(
        &app.call(Method::GET, "/v1/metrics?limit=abc", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.call(Method::GET, "/v1/metrics?limt=5", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.call(Method::GET, "/v1/metrics?archived=maybe", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.call(Method::GET, "/v1/metrics?cursor=nonsense", None).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    );
}

#[tokio::test]
async fn customers_create_list_get_patch_delete() {
    let app = spawn_app().await;
    let created = app
        .call(
            Method::POST,
            "/v1/customers",
            Some(json!({"external_id": "acme-1", "name": "Acme", "timezone": "Europe/Paris"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.body["id"].as_str().unwrap().starts_with("cus_"));
    assert_error(
        &app.call(Method::POST, "/v1/customers", Some(json!({"external_id": "acme-1"}))).await,
        StatusCode::CONFLICT,
        "external_id_taken",
    );
    assert_error(
        &app.call(
            Method::POST,
            "/v1/customers",
            Some(json!({"external_id": "x", "timezone": "Mars/Base"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_timezone",
    );
    let got = app.call(Method::GET, "/v1/customers/acme-1", None).await;
    assert_eq!(got.body, created.body);
    let patched = app
        .call(
            Method::PATCH,
            "/v1/customers/acme-1",
            Some(json!({"email": "ops@acme.test", "timezone": null})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["email"], "ops@acme.test");
    assert_eq!(patched.body["timezone"], Value::Null);
    let listed = app.call(Method::GET, "/v1/customers", None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    let deleted = app.call(Method::DELETE, "/v1/customers/acme-1", None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_error(
        &app.call(Method::GET, "/v1/customers/acme-1", None).await,
        StatusCode::NOT_FOUND,
        "customer_not_found",
    );
}

#[tokio::test]
async fn organization_is_the_keys_own() {
    let app = spawn_app().await;
    let answer = app.call(Method::GET, "/v1/organization", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["id"], app.org.to_string());
    assert_eq!(answer.body["name"], "acme");
    assert_eq!(answer.body["settings"]["future_timestamp_tolerance_seconds"], 3600);
    let other = app.call_with(Method::GET, "/v1/organization", Some(&app.other_key), None).await;
    assert_eq!(other.body["id"], app.other_org.to_string());
}

/// Every authenticated route, with a path that names a resource of the first organization.
fn every_route(metric_id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/v1/organization".into(), None),
        (Method::GET, "/v1/metrics".into(), None),
        (Method::POST, "/v1/metrics".into(), Some(storage_metric())),
        (Method::GET, format!("/v1/metrics/{metric_id}"), None),
        (Method::PATCH, format!("/v1/metrics/{metric_id}"), Some(json!({"name": "x"}))),
        (Method::DELETE, format!("/v1/metrics/{metric_id}"), None),
        (Method::POST, format!("/v1/metrics/{metric_id}/archive"), None),
        (Method::POST, format!("/v1/metrics/{metric_id}/unarchive"), None),
        (Method::GET, format!("/v1/metrics/{metric_id}/revisions"), None),
        (Method::GET, format!("/v1/metrics/{metric_id}/revisions/1"), None),
        (Method::GET, "/v1/customers".into(), None),
        (Method::POST, "/v1/customers".into(), Some(json!({"external_id": "c"}))),
        (Method::GET, "/v1/customers/acme-1".into(), None),
        (Method::PATCH, "/v1/customers/acme-1".into(), Some(json!({"name": "x"}))),
        (Method::DELETE, "/v1/customers/acme-1".into(), None),
    ]
}

#[tokio::test]
async fn no_key_bad_key_revoked_key_and_another_organizations_key_get_401_everywhere() {
    let app = spawn_app().await;
    let metric = app.create_metric(storage_metric()).await;
    let id = metric["id"].as_str().unwrap();
    app.call(Method::POST, "/v1/customers", Some(json!({"external_id": "acme-1"}))).await;
    let (revoked_key, revoked_secret) =
        odometer_store::tenants::create_api_key(app.catalog.as_ref(), app.org, "old")
            .await
            .unwrap();
    app.catalog.revoke_api_key(app.org, revoked_key.id).await.unwrap();

    for (method, path, body) in every_route(id) {
        for key in
            [None, Some("odo_not-a-real-key"), Some("garbage"), Some(revoked_secret.as_str())]
        {
            let answer = app.call_with(method.clone(), &path, key, body.clone()).await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        // The other organization's key, on a request that names this organization.
        let mut request = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(&app.other_key);
        request = request.header("odometer-organization", app.org.to_string());
        if let Some(body) = body.clone() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // Without naming an organization, the other key only ever sees its own: the first
    // organization's metric is exactly as absent as one that never existed.
    let theirs =
        app.call_with(Method::GET, &format!("/v1/metrics/{id}"), Some(&app.other_key), None).await;
    let nobody = app
        .call_with(
            Method::GET,
            &format!("/v1/metrics/{}", MetricId::new()),
            Some(&app.other_key),
            None,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (theirs.status, &theirs.body["error"]["code"]),
        (nobody.status, &nobody.body["error"]["code"])
    );
    let patch = app
        .call_with(
            Method::PATCH,
            &format!("/v1/metrics/{id}"),
            Some(&app.other_key),
            Some(json!({"name": "stolen"})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::GET, &format!("/v1/metrics/{id}"), None).await.body["name"],
        "Storage"
    );
    assert_eq!(
        app.call_with(Method::GET, "/v1/metrics", Some(&app.other_key), None).await.body["data"],
        json!([])
    );
}

#[tokio::test]
async fn malformed_requests_get_json_errors_never_5xx() {
    let app = spawn_app().await;
    let url = format!("{}/v1/metrics", app.base);
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&app.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(Vec<u8>, &str, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), "application/json", StatusCode::BAD_REQUEST, "malformed_json"),
        (b"".to_vec(), "application/json", StatusCode::BAD_REQUEST, "malformed_json"),
        (vec![0xff, 0xfe, 0x7b], "application/json", StatusCode::BAD_REQUEST, "malformed_json"),
        (
            b"{\"code\": \"c\"}".to_vec(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (b"[1, 2]".to_vec(), "application/json", StatusCode::UNPROCESSABLE_ENTITY, "invalid_type"),
        (
            format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            vec![b' '; 2 * 1024 * 1024],
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = send(body, content_type).await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], code);
    }
    let unknown = app.call(Method::GET, "/v1/nothing-here", None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "route_not_found");
    let wrong_method = app.call(Method::PUT, "/v1/metrics", None).await;
    assert_error(&wrong_method, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // Odd ids and codes in paths are just not found.
    for path in [
        "/v1/metrics/..%2F..%2Fetc%2Fpasswd",
        "/v1/metrics/'%20OR%201=1--",
        "/v1/metrics/bm_0000000000000000000000",
    ] {
        assert_error(
            &app.call(Method::GET, path, None).await,
            StatusCode::NOT_FOUND,
            "metric_not_found",
        );
    }
    // Undecodable path segments are a JSON 400, not plain text.
    for path in ["/v1/metrics/%FF", "/v1/metrics/m/revisions/%FF", "/v1/customers/%C3%28"] {
        assert_error(
            &app.call(Method::GET, path, None).await,
            StatusCode::BAD_REQUEST,
            "invalid_path",
        );
    }
    // The server still answers and nothing was stored.
    assert_eq!(app.call(Method::GET, "/v1/metrics", None).await.body["data"], json!([]));
}

#[tokio::test]
async fn request_ids_health_openapi_and_docs() {
    let app = spawn_app().await;
    let answer = app.call(Method::GET, "/v1/metrics", None).await;
    let id = answer.headers.get("x-request-id").expect("x-request-id on every response");
    assert!(!id.is_empty());
    let echoed = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "req-123");
    let health: Value = echoed.json().await.unwrap();
    assert_eq!(health, json!({"status": "ok", "catalog": "ok", "events": "ok"}));
    let unauthorized = app.call_with(Method::GET, "/v1/metrics", None, None).await;
    assert!(unauthorized.headers.contains_key("x-request-id"));

    let openapi = app.call_with(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(openapi.status, StatusCode::OK);
    let paths = openapi.body["paths"].as_object().unwrap();
    for path in [
        "/v1/metrics",
        "/v1/metrics/{id_or_code}",
        "/v1/metrics/{id_or_code}/revisions",
        "/v1/customers",
        "/v1/organization",
        "/healthz",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
    assert!(openapi.body["components"]["schemas"]["MetricDto"].is_object());
    let docs = app.http.get(format!("{}/docs", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(docs.text().await.unwrap().contains("/v1/metrics/{id_or_code}/revisions"));
}

async fn seed_customers_and_metric(app: &TestApp) {
    for c in ["acme", "globex"] {
        let answer = app.call(Method::POST, "/v1/customers", Some(json!({"external_id": c}))).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    app.create_metric(json!({
        "code": "storage", "name": "Storage",
        "aggregation": {"type": "sum", "field": "bytes"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"]}
    }))
    .await;
}

fn event(tx: &str, customer: &str, ts: &str, props: Value) -> Value {
    json!({"transaction_id": tx, "code": "storage", "customer": customer, "timestamp": ts, "properties": props})
}

#[tokio::test]
async fn a_mixed_batch_answers_each_event_and_stores_exactly_the_good_ones() {
    let app = spawn_app().await;
    seed_customers_and_metric(&app).await;
    let first = app
        .call(
            Method::POST,
            "/v1/events",
            Some(event("t1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 10, "region": "eu"}))),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["accepted"], 1);

    let in_two_hours = (chrono::Utc::now() + chrono::TimeDelta::hours(2)).to_rfc3339();
    let batch = json!({"events": [
        event("t2", "acme", "2026-01-01T11:00:00Z", json!({"bytes": "2.5", "region": "us"})),
        event("t1", "acme", "2026-01-01T10:00:00Z", json!({"region": "eu", "bytes": 10})),
        event("t1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 11, "region": "eu"})),
        {"transaction_id": "t3", "code": "nope", "customer": "acme", "timestamp": "2026-01-01T10:00:00Z"},
        event("t4", "nobody", "2026-01-01T10:00:00Z", json!({"bytes": 1})),
        event("t5", "acme", "2026-01-01T10:00:00Z", json!({"bytes": "lots"})),
        event("t6", "acme", &in_two_hours, json!({"bytes": 1})),
        {"code": "storage", "customer": "acme"},
        event("t7", "acme", "yesterday", json!({})),
        event("t8", "globex", "1767261600", json!({"region": "apac"})),
    ]});
    let answer = app.call(Method::POST, "/v1/events", Some(batch)).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    let statuses: Vec<(&str, &str)> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["error"]["code"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        statuses,
        [
            ("accepted", ""),
            ("duplicate", ""),
            ("rejected", "transaction_id_conflict"),
            ("rejected", "unknown_code"),
            ("rejected", "unknown_customer"),
            ("rejected", "invalid_value"),
            ("rejected", "timestamp_in_future"),
            ("rejected", "missing_field"),
            ("rejected", "invalid_timestamp"),
            ("accepted", ""),
        ]
    );
    assert_eq!(
        (
            answer.body["accepted"].clone(),
            answer.body["duplicates"].clone(),
            answer.body["rejected"].clone()
        ),
        (json!(2), json!(1), json!(7))
    );
    let message = answer.body["results"][5]["error"]["message"].as_str().unwrap();
    assert!(message.contains("storage"), "{message}");

    // Exactly t1, t2 and t8 are stored, and t1 kept its first content.
    let listed = app.call(Method::GET, "/v1/events?limit=100", None).await;
    let stored: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, ["t1", "t2", "t8"]);
    let t1 = app.call(Method::GET, "/v1/events/t1?customer=acme", None).await;
    assert_eq!(t1.body["properties"]["bytes"], 10);
    assert_eq!(t1.body["sequence"], 1);
    assert_error(
        &app.call(Method::GET, "/v1/events/t1?customer=globex", None).await,
        StatusCode::NOT_FOUND,
        "event_not_found",
    );
}

#[tokio::test]
async fn an_atomic_batch_with_one_bad_event_stores_nothing() {
    let app = spawn_app().await;
    seed_customers_and_metric(&app).await;
    let batch = json!({"events": [
        event("a1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 1})),
        event("a2", "nobody", "2026-01-01T10:00:00Z", json!({"bytes": 1})),
    ]});
    let answer = app.call(Method::POST, "/v1/events?atomic=true", Some(batch.clone())).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["results"][0]["error"]["code"], "batch_rejected");
    assert_eq!(answer.body["results"][1]["error"]["code"], "unknown_customer");
    assert_eq!(app.call(Method::GET, "/v1/events", None).await.body["data"], json!([]));
    // Without atomic, the good one is stored.
    let answer = app.call(Method::POST, "/v1/events", Some(batch)).await;
    assert_eq!(answer.body["accepted"], 1);
    assert_error(
        &app.call(Method::POST, "/v1/events", Some(json!({"events": []}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty_batch",
    );
}

#[tokio::test]
async fn ndjson_import_answers_per_line() {
    let app = spawn_app().await;
    seed_customers_and_metric(&app).await;
    let body = format!(
        "{}\n\n{{not json\n{}\n{}",
        event("n1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 1})),
        event("n2", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 2})),
        event("n1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 1})),
    );
    let response = app
        .http
        .post(format!("{}/v1/events/ndjson", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = response.json().await.unwrap();
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "rejected", "accepted", "duplicate"]);
    assert_eq!(answer["results"][1]["error"]["code"], "malformed_json");
}

#[tokio::test]
async fn usage_per_customer_and_invoice_run_with_as_of_reproducing_a_past_answer() {
    let app = spawn_app().await;
    seed_customers_and_metric(&app).await;
    let batch = json!({"events": [
        event("u1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 10, "region": "eu"})),
        event("u2", "acme", "2026-01-01T23:00:00Z", json!({"bytes": "2.5", "region": "us"})),
        event("u3", "acme", "2026-01-02T01:00:00Z", json!({"bytes": 4, "region": "mars"})),
        event("u4", "acme", "2026-01-03T00:00:00Z", json!({"bytes": 100, "region": "eu"})),
        event("u5", "globex", "2026-01-01T12:00:00Z", json!({"bytes": 7, "region": "eu"})),
    ]});
    assert_eq!(app.call(Method::POST, "/v1/events", Some(batch)).await.body["accepted"], 5);
    let path = "/v1/usage?metric=storage&customer=acme&from=2026-01-01T00:00:00Z&to=2026-01-03T00:00:00Z&window=day";
    let usage = app.call(Method::GET, path, None).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    // Day 1: eu 10, us 2.5 (total 12.5); day 2: the 'mars' event is outside the matrix: other 4.
    // u4 is at exactly `to`, so it belongs to the next period.
    let windows = usage.body["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0]["total"], "12.5");
    assert_eq!(windows[0]["groups"][0]["segment"], json!({"region": "eu"}));
    assert_eq!(windows[0]["groups"][0]["value"], "10");
    assert_eq!(windows[0]["groups"][1]["value"], "2.5");
    assert_eq!(windows[1]["total"], "4");
    assert_eq!(windows[1]["groups"][0]["segment"], "other");
    assert_eq!(usage.body["metric"]["revision"], 1);

    let before_late_events = odometer_core::time::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let late = event("u6", "acme", "2026-01-01T15:00:00Z", json!({"bytes": 1000, "region": "eu"}));
    assert_eq!(app.call(Method::POST, "/v1/events", Some(late)).await.body["accepted"], 1);
    let patched = app
        .call(
            Method::PATCH,
            "/v1/metrics/storage",
            Some(json!({"unit_conversion": {"factor": "1000", "rounding": "none"}})),
        )
        .await;
    assert_eq!(patched.body["revision"], 2);

    // Now: 1012.5 bytes on day 1, converted to thousands.
    let now = app.call(Method::GET, path, None).await;
    assert_eq!(now.body["windows"][0]["total"], "1.0125");
    assert_eq!(now.body["metric"]["revision"], 2);
    // As of before the late event and the update: the first answer, exactly.
    let as_of = odometer_core::time::format_micros(&before_late_events);
    let again = app.call(Method::GET, &format!("{path}&as_of={as_of}"), None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["windows"], usage.body["windows"]);
    assert_eq!(again.body["metric"]["revision"], 1);
    // A pinned revision with today's events.
    let pinned = app.call(Method::GET, &format!("{path}&revision=1"), None).await;
    assert_eq!(pinned.body["windows"][0]["total"], "1012.5");

    // The invoice run: every customer, paginated.
    let run = app
        .call(
            Method::GET,
            "/v1/usage?metric=storage&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&limit=1",
            None,
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert_eq!(run.body["data"][0]["customer"], "acme");
    assert_eq!(run.body["data"][0]["windows"][0]["total"], "1.1165");
    let cursor = run.body["next_cursor"].as_str().unwrap();
    let next = app
        .call(Method::GET, &format!("/v1/usage?metric=storage&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&limit=1&cursor={cursor}"), None)
        .await;
    assert_eq!(next.body["data"][0]["customer"], "globex");
    assert_eq!(next.body["data"][0]["windows"][0]["total"], "0.007");

    // Bad questions are 4xx with specific codes.
    for (query, status, code) in [
        ("metric=storage&customer=acme&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", StatusCode::UNPROCESSABLE_ENTITY, "invalid_period"),
        ("metric=storage&customer=acme&from=x&to=2026-01-01T00:00:00Z", StatusCode::BAD_REQUEST, "invalid_timestamp"),
        ("metric=storage&customer=acme&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&timezone=Mars/Base", StatusCode::UNPROCESSABLE_ENTITY, "invalid_timezone"),
        ("metric=storage&customer=acme&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&group_by=project", StatusCode::UNPROCESSABLE_ENTITY, "unknown_group_key"),
        ("metric=storage&customer=nobody&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", StatusCode::NOT_FOUND, "customer_not_found"),
        ("metric=nothing&customer=acme&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", StatusCode::NOT_FOUND, "metric_not_found"),
        ("metric=storage&customer=acme&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&window=week", StatusCode::BAD_REQUEST, "invalid_query"),
    ] {
        assert_error(&app.call(Method::GET, &format!("/v1/usage?{query}"), None).await, status, code);
    }
}

#[tokio::test]
async fn sem_6_4_a_preview_proposes_exactly_what_usage_reports_once_the_patch_is_applied() {
    let app = spawn_app().await;
    seed_customers_and_metric(&app).await;
    let answer =
        app.call(Method::POST, "/v1/customers", Some(json!({"external_id": "idle"}))).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let batch = json!({"events": [
        event("p1", "acme", "2026-01-01T10:00:00Z", json!({"bytes": 10, "region": "eu"})),
        event("p2", "acme", "2026-01-02T10:00:00Z", json!({"bytes": 5, "region": "us"})),
        event("p3", "acme", "2026-01-03T10:00:00Z", json!({"bytes": 1, "region": "ap"})),
        event("p4", "globex", "2026-01-01T12:00:00Z", json!({"bytes": 7, "region": "us"})),
        event("p5", "globex", "2026-01-05T12:00:00Z", json!({"bytes": 100, "region": "us"})),
    ]});
    assert_eq!(app.call(Method::POST, "/v1/events", Some(batch)).await.body["accepted"], 5);
    // Only eu events, in thousands: acme 16 -> 0.01, globex 107 -> 0, idle 0 -> 0.
    let patch = json!({
        "filters": [{"property": "region", "op": "eq", "values": ["eu"]}],
        "unit_conversion": {"factor": "1000", "rounding": "none"}
    });
    let period = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    let body = json!({"patch": patch, "from": period.0, "to": period.1});
    let preview = app.call(Method::POST, "/v1/metrics/storage/preview", Some(body)).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(preview.body["would_be_refused"], false);
    assert_eq!(preview.body["locked_fields"], json!([]));
    assert_eq!(preview.body["metric"]["revision"], 1, "nothing saved");
    let rows = preview.body["results"].as_array().unwrap();
    let row = |i: usize| {
        (
            rows[i]["customer"].clone(),
            rows[i]["current"].clone(),
            rows[i]["proposed"].clone(),
            rows[i]["difference"].clone(),
        )
    };
    // Largest change first: globex -107, acme -15.99, idle 0.
    assert_eq!(row(0), (json!("globex"), json!("107"), json!("0"), json!("-107")));
    assert_eq!(row(1), (json!("acme"), json!("16"), json!("0.01"), json!("-15.99")));
    assert_eq!(row(2), (json!("idle"), json!("0"), json!("0"), json!("0")));
    let paths: Vec<&str> = preview.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["filters", "unit_conversion"]);

    // Saved, the usage is the preview's proposal, customer by customer.
    let patched = app.call(Method::PATCH, "/v1/metrics/storage", Some(patch)).await;
    assert_eq!(patched.body["revision"], 2, "{}", patched.body);
    for r in rows {
        let customer = r["customer"].as_str().unwrap();
        let path = format!(
            "/v1/usage?metric=storage&customer={customer}&from={}&to={}",
            period.0, period.1
        );
        let usage = app.call(Method::GET, &path, None).await;
        assert_eq!(usage.body["windows"][0]["total"], r["proposed"], "{customer}: {}", usage.body);
    }

    // Chosen customers only; a locked change is shown, flagged, not refused.
    let body = json!({"patch": {"aggregation": {"field": "other"}}, "from": period.0, "to": period.1,
        "customers": ["acme"]});
    let preview = app.call(Method::POST, "/v1/metrics/storage/preview", Some(body)).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert_eq!(preview.body["locked_fields"], json!(["aggregation.field"]));
    assert_eq!(preview.body["would_be_refused"], false, "no plan charges the metric");
    assert_eq!(preview.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(preview.body["results"][0]["proposed"], "0", "no event has 'other'");

    // Bad requests.
    let bad = app
        .call(Method::POST, "/v1/metrics/storage/preview", Some(json!({"from": period.0})))
        .await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "missing_field");
    let paths: Vec<&str> = bad.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["patch", "to"]);
    let reversed = json!({"patch": {}, "from": period.1, "to": period.0});
    assert_error(
        &app.call(Method::POST, "/v1/metrics/storage/preview", Some(reversed)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_period",
    );
    let unknown = json!({"patch": {}, "from": period.0, "to": period.1, "customers": ["nobody"]});
    assert_error(
        &app.call(Method::POST, "/v1/metrics/storage/preview", Some(unknown)).await,
        StatusCode::NOT_FOUND,
        "customer_not_found",
    );
    let invalid =
        json!({"patch": {"aggregation": {"type": "nope"}}, "from": period.0, "to": period.1});
    assert_eq!(
        app.call(Method::POST, "/v1/metrics/storage/preview", Some(invalid)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}
