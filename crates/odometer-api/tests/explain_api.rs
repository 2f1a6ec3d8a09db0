//! `POST /v1/events/explain` over real HTTP, against real stores in a temporary directory: the
//! whole answer for a stored event, each outcome (counted, filtered out, excluded, skipped,
//! another code), pasted events with what ingestion would say, errors, tenant isolation, and
//! agreement with `/v1/usage`. Also the console's files: served without a key, with their
//! content types and security headers.
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
    async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.key, method, path, body).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body).await;
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    async fn explain(&self, body: Value) -> Value {
        self.ok(Method::POST, "/v1/events/explain", Some(body)).await
    }

    /// A metric reading `transfer` (sum of bytes, tier filter, region segmentation dropping
    /// the rest, group_by project), a customer, and events of every outcome.
    async fn with_events(&self) {
        self.ok(
            Method::POST,
            "/v1/metrics",
            Some(json!({"code": "transfer", "name": "Transfer",
                "aggregation": {"type": "sum", "field": "bytes"},
                "filters": [{"property": "tier", "op": "in", "values": ["pro", "team"]}],
                "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"], "unmatched": "drop"},
                "group_by": ["project"]})),
        )
        .await;
        self.ok(
            Method::POST,
            "/v1/metrics",
            Some(json!({"code": "calls", "name": "Calls", "aggregation": {"type": "count"}})),
        )
        .await;
        self.ok(Method::POST, "/v1/customers", Some(json!({"external_id": "acme"}))).await;
        let event = |tx: &str, props: Value| {
            json!({"transaction_id": tx, "code": "transfer", "customer": "acme",
                   "timestamp": "2026-01-10T10:00:00Z", "properties": props})
        };
        let answer = self
            .ok(
                Method::POST,
                "/v1/events",
                Some(json!({"events": [
                    event("counted", json!({"bytes": "2.5", "tier": "pro", "region": "eu", "project": "web"})),
                    event("filtered", json!({"bytes": 4, "tier": "free", "region": "eu"})),
                    event("excluded", json!({"bytes": 8, "tier": "team", "region": "ap"})),
                    event("skipped", json!({"tier": "pro", "region": "us", "project": 7})),
                ]})),
            )
            .await;
        assert_eq!(answer["accepted"], 4);
    }
}

fn stored(tx: &str) -> Value {
    json!({"customer": "acme", "transaction_id": tx})
}

#[tokio::test]
async fn a_stored_event_that_counts_is_explained_whole() {
    let app = spawn_app().await;
    app.with_events().await;
    let mut answer = app.explain(stored("counted")).await;
    // Ids and instants the store assigned.
    assert!(answer["metrics"][0]["metric"]["id"].as_str().unwrap().starts_with("bm_"));
    answer["metrics"][0]["metric"]["id"] = json!("bm_...");
    assert!(answer["event"]["ingested_at"].as_str().unwrap().ends_with('Z'));
    answer["event"]["ingested_at"] = json!("...");
    assert_eq!(
        answer,
        json!({
            "event": {"transaction_id": "counted", "code": "transfer", "customer": "acme",
                      "timestamp": "2026-01-10T10:00:00.000000Z",
                      "properties": {"bytes": "2.5", "tier": "pro", "region": "eu", "project": "web"},
                      "sequence": 1, "ingested_at": "..."},
            "ingestion": {"status": "stored"},
            "counts": true,
            "metrics": [{
                "metric": {"id": "bm_...", "code": "transfer", "name": "Transfer",
                           "event_code": "transfer", "aggregation": "sum", "revision": 1,
                           "archived": false},
                "outcome": "counted",
                "counts": true,
                "reads_code": true,
                "filters": [{"property": "tier", "op": "in", "values": ["pro", "team"],
                             "present": true, "found": "pro", "passes": true}],
                "failed_filter": null,
                "segment": {"placement": "matched", "segment": {"region": "eu"}},
                "group_by": {"project": "web"},
                "value": "2.5"
            }]
        })
    );
}

#[tokio::test]
async fn each_outcome_with_its_reason() {
    let app = spawn_app().await;
    app.with_events().await;
    let cases = [
        ("filtered", "filtered_out", "filtered_out", "filter 1 fails: tier in [\"pro\",\"team\"], and the event has \"free\""),
        ("excluded", "excluded_by_segmentation", "excluded_by_segmentation", "outside the segmentation (region = \"ap\"), which drops unmatched events: counted under events_excluded"),
        ("skipped", "skipped", "missing_property", "the event has no property 'bytes': counted under events_skipped, with no value"),
    ];
    for (tx, outcome, code, message) in cases {
        let answer = app.explain(stored(tx)).await;
        let metric = &answer["metrics"][0];
        assert_eq!(metric["outcome"], outcome, "{tx}");
        assert_eq!(metric["counts"], false);
        assert_eq!(metric["reason"], json!({"code": code, "message": message}), "{tx}");
        assert_eq!(answer["counts"], false);
    }
    let filtered = app.explain(stored("filtered")).await;
    assert_eq!(filtered["metrics"][0]["failed_filter"], 0);
    assert_eq!(filtered["metrics"][0]["value"], "4", "what it would contribute");
    let skipped = app.explain(stored("skipped")).await;
    assert_eq!(skipped["metrics"][0]["segment"]["segment"], json!({"region": "us"}));
    assert_eq!(skipped["metrics"][0]["group_by"], json!({"project": "7"}));
    assert_eq!(skipped["metrics"][0]["value"], Value::Null);

    // Another metric, named: it reads another code.
    let other = app
        .explain(json!({"customer": "acme", "transaction_id": "counted", "metric": "calls"}))
        .await;
    assert_eq!(other["metrics"][0]["outcome"], "other_code");
    assert_eq!(
        other["metrics"][0]["reason"]["message"],
        "metric 'calls' reads the event code 'calls', not 'transfer'"
    );
}

#[tokio::test]
async fn what_the_explanations_say_is_what_usage_counts() {
    let app = spawn_app().await;
    app.with_events().await;
    let usage = app
        .ok(Method::GET, "/v1/usage?metric=transfer&customer=acme&from=2026-01-10T00:00:00Z&to=2026-01-11T00:00:00Z", None)
        .await;
    let window = &usage["windows"][0];
    // counted: 2.5 in eu/web; skipped: us/7 with no value; excluded: one; filtered: nothing.
    assert_eq!(window["total"], "2.5");
    assert_eq!(window["events_excluded"], 1);
    let groups: Vec<(Value, Value, Value, Value, Value)> = window["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["segment"].clone(),
                g["group_by"].clone(),
                g["value"].clone(),
                g["events_count"].clone(),
                g["events_skipped"].clone(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (json!({"region": "eu"}), json!({"project": "web"}), json!("2.5"), json!(1), json!(0)),
            (json!({"region": "us"}), json!({"project": "7"}), json!("0"), json!(0), json!(1)),
        ]
    );
}

#[tokio::test]
async fn a_pasted_event_is_checked_as_ingestion_would_and_not_stored() {
    let app = spawn_app().await;
    app.with_events().await;
    let pasted = |customer: &str| {
        json!({"event": {"transaction_id": "p", "code": "transfer", "customer": customer,
                         "properties": {"bytes": 1, "tier": "pro", "region": "eu"}}})
    };
    let accepted = app.explain(pasted("acme")).await;
    assert_eq!(accepted["ingestion"], json!({"status": "would_be_accepted"}));
    assert_eq!(accepted["event"]["sequence"], Value::Null);
    assert_eq!(accepted["metrics"][0]["outcome"], "counted");
    let refused = app.explain(pasted("nobody")).await;
    assert_eq!(refused["ingestion"]["status"], "would_be_rejected");
    assert_eq!(refused["ingestion"]["error"]["code"], "unknown_customer");
    let (status, _) = app.call(Method::GET, "/v1/events/p?customer=acme", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "explaining stores nothing");

    let unread = app
        .explain(json!({"event": {"transaction_id": "u", "code": "nothing_reads_this", "customer": "acme"}}))
        .await;
    assert_eq!(unread["metrics"], json!([]));
    assert_eq!(unread["counts"], false);
    assert_eq!(unread["ingestion"]["error"]["code"], "unknown_code");
}

#[tokio::test]
async fn bad_requests_and_other_organizations() {
    let app = spawn_app().await;
    app.with_events().await;
    let cases = [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "missing_field"),
        (json!({"customer": "acme"}), StatusCode::UNPROCESSABLE_ENTITY, "missing_field"),
        (
            json!({"event": {}, "customer": "acme", "transaction_id": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_allowed",
        ),
        (json!({"event": {"code": "transfer"}}), StatusCode::UNPROCESSABLE_ENTITY, "missing_field"),
        (
            json!({"customer": "acme", "transaction_id": "counted", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
        ),
        (stored("never"), StatusCode::NOT_FOUND, "event_not_found"),
        (
            json!({"customer": "acme", "transaction_id": "counted", "metric": "nope"}),
            StatusCode::NOT_FOUND,
            "metric_not_found",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app.call(Method::POST, "/v1/events/explain", Some(body.clone())).await;
        assert_eq!((got, answer["error"]["code"].as_str().unwrap()), (status, code), "{body}");
    }
    // Another organization's key finds neither the event nor the metric.
    let (status, answer) = app
        .call_as(&app.other_key, Method::POST, "/v1/events/explain", Some(stored("counted")))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "event_not_found")
    );
    let pasted = json!({"event": {"transaction_id": "p", "code": "transfer", "customer": "acme"}});
    let (status, answer) =
        app.call_as(&app.other_key, Method::POST, "/v1/events/explain", Some(pasted)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["metrics"], json!([]), "no metric of the first organization");
    let response = app
        .http
        .post(format!("{}/v1/events/explain", app.base))
        .json(&stored("counted"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_route_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = &doc["paths"]["/v1/events/explain"]["post"];
    assert_eq!(route["tags"], json!(["events"]));
    assert!(route["responses"]["200"].is_object());
    assert!(doc["components"]["schemas"]["ExplanationDto"].is_object());
}

#[tokio::test]
async fn the_console_is_served_without_a_key_with_strict_headers() {
    let app = spawn_app().await;
    for path in ["/console", "/console/", "/console/metrics/transfer/edit"] {
        let response = app.http.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<script type="module" src="/console/assets/app.js">"#));
    }
    let script = app.http.get(format!("{}/console/assets/api.js", app.base)).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(script.text().await.unwrap().contains("sessionStorage"));
    let missing =
        app.http.get(format!("{}/console/assets/nope.js", app.base)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");
}
