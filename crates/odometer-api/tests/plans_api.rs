//! Plans and subscriptions over real HTTP, against a real SQLite catalog in a temporary
//! directory: the plan lifecycle with every charge model, validation errors with their paths,
//! conflicts, the subscription lifecycle, tenant isolation, the OpenAPI document, and the lock
//! rule live (semantics 6.3): a metric a live plan charges refuses changes to its locked fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use odometer_core::{ChargeId, PlanId, SubscriptionId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The app with two organizations (see `support::TwoOrgs`), with this file's helpers.
type TestApp = support::TwoOrgs;

async fn spawn_app() -> TestApp {
    support::TwoOrgs::spawn().await
}

struct Answer {
    status: StatusCode,
    body: Value,
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
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
        Answer { status, body }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_with(method, path, Some(&self.key), body).await
    }

    /// POSTs `body` to `path`, expecting 201; answers the created resource.
    async fn create(&self, path: &str, body: Value) -> Value {
        let answer = self.call(Method::POST, path, Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{path}: {}", answer.body);
        answer.body
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(method, path, body).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        answer.body
    }
}

/// Asserts an error answer: status and the envelope's code.
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

/// The (path, code) of every detail of an error answer.
fn details(answer: &Answer) -> Vec<(String, String)> {
    answer.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap().to_owned(), d["code"].as_str().unwrap().to_owned()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())).collect()
}

async fn create_metrics(app: &TestApp) -> (Value, Value) {
    let calls = app
        .create(
            "/v1/metrics",
            json!({"code": "api_calls", "name": "API calls", "aggregation": {"type": "count"}}),
        )
        .await;
    let payments = app
        .create(
            "/v1/metrics",
            json!({"code": "payments", "name": "Payments",
                   "aggregation": {"type": "sum", "field": "amount"}}),
        )
        .await;
    (calls, payments)
}

/// A plan with one charge of every model.
fn every_model_plan(calls_id: &str) -> Value {
    json!({
        "code": "startup",
        "name": "Startup",
        "description": "every charge model",
        "interval": "monthly",
        "currency": "EUR",
        "amount": "49.90",
        "pay_in_advance": true,
        "charges": [
            {"metric": "api_calls", "charge_model": "standard", "properties": {"amount": "0.001"},
             "filters": [{"values": {"region": ["eu", "us"]}, "properties": {"amount": "0.002"},
                          "invoice_display_name": "EU and US calls"}],
             "pricing_group_keys": ["project"], "invoice_display_name": "API calls"},
            {"metric": calls_id, "charge_model": "graduated", "properties": {"graduated_ranges": [
                {"from_value": 0, "to_value": 1000, "per_unit_amount": "0", "flat_amount": "0"},
                {"from_value": 1000, "to_value": null, "per_unit_amount": 0.0005, "flat_amount": "5"}
            ]}},
            {"metric": "api_calls", "charge_model": "volume", "properties": {"volume_ranges": [
                {"from_value": "0", "to_value": "100", "per_unit_amount": "1"},
                {"from_value": "101", "to_value": null, "per_unit_amount": "0.5", "flat_amount": "10"}
            ]}},
            {"metric": "api_calls", "charge_model": "package",
             "properties": {"amount": "5", "package_size": 1000, "free_units": 100}},
            {"metric": "payments", "charge_model": "percentage",
             "properties": {"rate": "1.5", "fixed_amount": "0.25", "free_units_per_events": 3,
                            "per_transaction_min_amount": "0.1",
                            "per_transaction_max_amount": "10"}}
        ]
    })
}

#[tokio::test]
async fn plan_lifecycle_with_every_charge_model() {
    let app = spawn_app().await;
    let (calls, payments) = create_metrics(&app).await;
    let calls_id = calls["id"].as_str().unwrap();
    let created = app.create("/v1/plans", every_model_plan(calls_id)).await;

    let id = created["id"].as_str().unwrap().to_owned();
    assert!(PlanId::parse(&id).is_some(), "{id}");
    assert_eq!(created["code"], "startup");
    assert_eq!(created["interval"], "monthly");
    assert_eq!(created["currency"], "EUR");
    assert_eq!(created["amount"], "49.9", "a decimal string");
    assert_eq!(created["pay_in_advance"], true);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(created.get("deleted_at").is_none(), "{created}");
    let charges = created["charges"].as_array().unwrap();
    let models: Vec<&str> = charges.iter().map(|c| c["charge_model"].as_str().unwrap()).collect();
    assert_eq!(models, ["standard", "graduated", "volume", "package", "percentage"]);
    for charge in charges {
        assert!(ChargeId::parse(charge["id"].as_str().unwrap()).is_some(), "{charge}");
    }
    assert_eq!(charges[0]["metric"], json!({"id": calls_id, "code": "api_calls"}));
    assert_eq!(charges[1]["metric"], json!({"id": calls_id, "code": "api_calls"}), "by id");
    assert_eq!(charges[4]["metric"]["id"], payments["id"]);
    assert_eq!(
        charges[0]["filters"],
        json!([{"values": {"region": ["eu", "us"]}, "properties": {"amount": "0.002"},
                "invoice_display_name": "EU and US calls"}])
    );
    assert_eq!(charges[0]["pricing_group_keys"], json!(["project"]));
    assert_eq!(charges[0]["invoice_display_name"], "API calls");
    assert_eq!(charges[1]["filters"], json!([]));
    assert_eq!(
        charges[1]["properties"]["graduated_ranges"][1],
        json!({"from_value": "1000", "to_value": null, "per_unit_amount": "0.0005",
               "flat_amount": "5"}),
        "decimals are strings, numbers were kept exactly"
    );
    assert_eq!(charges[2]["properties"]["volume_ranges"][0]["flat_amount"], "0", "defaulted");
    assert_eq!(
        charges[3]["properties"],
        json!({"amount": "5", "package_size": 1000, "free_units": 100})
    );
    assert_eq!(charges[4]["properties"]["rate"], "1.5");
    assert_eq!(charges[4]["properties"]["per_transaction_max_amount"], "10");

    // By id and by code; listed.
    assert_eq!(app.ok(Method::GET, &format!("/v1/plans/{id}"), None).await, created);
    assert_eq!(app.ok(Method::GET, "/v1/plans/startup", None).await, created);
    let list = app.ok(Method::GET, "/v1/plans", None).await;
    assert_eq!(list, json!({"data": [created.clone()], "next_cursor": null}));
    let searched = app.ok(Method::GET, "/v1/plans?search=START&limit=1", None).await;
    assert_eq!(searched["data"][0]["id"], created["id"]);
    let none = app.ok(Method::GET, "/v1/plans?search=enterprise", None).await;
    assert_eq!(none["data"], json!([]));

    // PUT replaces the definition; a charge naming an id keeps it.
    let kept = charges[3]["id"].as_str().unwrap().to_owned();
    let replacement = json!({
        "code": "startup-2026", "name": "Startup 2026", "interval": "yearly", "currency": "JPY",
        "amount": 10000,
        "charges": [
            {"id": kept, "metric": "api_calls", "charge_model": "package",
             "properties": {"amount": "6", "package_size": 500}},
            {"metric": "payments", "charge_model": "standard", "properties": {"amount": "1"}}
        ]
    });
    let replaced = app.ok(Method::PUT, "/v1/plans/startup", Some(replacement.clone())).await;
    assert_eq!(replaced["id"], created["id"], "same plan");
    assert_eq!(
        (&replaced["code"], &replaced["interval"], &replaced["amount"]),
        (&json!("startup-2026"), &json!("yearly"), &json!("10000"))
    );
    assert_eq!(replaced["pay_in_advance"], false, "absent is false");
    assert_eq!(replaced["description"], Value::Null, "a replacement, not a merge");
    assert_eq!(replaced["charges"][0]["id"], kept.as_str(), "the named charge keeps its id");
    assert_eq!(replaced["charges"][0]["properties"]["free_units"], 0);
    let new_id = replaced["charges"][1]["id"].as_str().unwrap();
    assert!(charges.iter().all(|c| c["id"] != new_id), "an unnamed charge is new");
    assert_ne!(replaced["updated_at"], created["updated_at"]);
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_error(
        &app.call(Method::GET, "/v1/plans/startup", None).await,
        StatusCode::NOT_FOUND,
        "plan_not_found",
    );
    let same = app.ok(Method::PUT, &format!("/v1/plans/{id}"), Some(replacement)).await;
    assert_eq!(same["charges"][0]["id"], kept.as_str());

    // DELETE frees the code; the plan is gone from reads and lists.
    let deleted = app.ok(Method::DELETE, "/v1/plans/startup-2026", None).await;
    assert!(deleted["deleted_at"].as_str().unwrap().ends_with('Z'), "{deleted}");
    for path in [format!("/v1/plans/{id}"), "/v1/plans/startup-2026".to_owned()] {
        let gone = app.call(Method::GET, &path, None).await;
        assert_error(&gone, StatusCode::NOT_FOUND, "plan_not_found");
        let again = app.call(Method::DELETE, &path, None).await;
        assert_error(&again, StatusCode::NOT_FOUND, "plan_not_found");
    }
    assert_eq!(app.ok(Method::GET, "/v1/plans", None).await["data"], json!([]));
    let recreated = app.create("/v1/plans", every_model_plan(calls_id)).await;
    assert_ne!(recreated["id"], created["id"]);
}

#[tokio::test]
async fn plan_validation_errors_name_their_paths() {
    let app = spawn_app().await;
    let (calls, _) = create_metrics(&app).await;
    let calls_id = calls["id"].as_str().unwrap();

    let bad_currency = app
        .call(
            Method::POST,
            "/v1/plans",
            Some(json!({"code": "p", "name": "P", "interval": "monthly", "currency": "euro"})),
        )
        .await;
    assert_error(&bad_currency, StatusCode::UNPROCESSABLE_ENTITY, "invalid_currency");
    assert_eq!(details(&bad_currency), pairs(&[("currency", "invalid_currency")]));

    let unknown_metric = app
        .call(
            Method::POST,
            "/v1/plans",
            Some(json!({"code": "p", "name": "P", "interval": "monthly", "currency": "USD",
            "charges": [
                {"metric": "api_calls", "charge_model": "standard",
                 "properties": {"amount": "1"}},
                {"metric": "nope", "charge_model": "standard",
                 "properties": {"amount": "1"}},
                {"metric": "bm_0000000000000000000000", "charge_model": "standard",
                 "properties": {"amount": "1"}}
            ]})),
        )
        .await;
    assert_error(&unknown_metric, StatusCode::UNPROCESSABLE_ENTITY, "unknown_metric");
    assert_eq!(
        details(&unknown_metric),
        pairs(&[("charges[1].metric", "unknown_metric"), ("charges[2].metric", "unknown_metric")])
    );

    let bad_tiers = app
        .call(
            Method::POST,
            "/v1/plans",
            Some(json!({"code": "p", "name": "P", "interval": "monthly", "currency": "USD",
                        "amount": "1.005", "fortnightly": true,
                        "charges": [{"metric": calls_id, "charge_model": "graduated",
                                     "properties": {"graduated_ranges": [
                            {"from_value": 0, "to_value": 100, "per_unit_amount": "1"},
                            {"from_value": 200, "to_value": 150, "per_unit_amount": "-1"}
                        ]}}, {"metric": "api_calls", "charge_model": "tiered", "properties": {}}]})),
        )
        .await;
    assert_error(&bad_tiers, StatusCode::UNPROCESSABLE_ENTITY, "invalid_value");
    let found = details(&bad_tiers);
    for expected in [
        ("amount", "invalid_value"),
        ("charges[0].properties.graduated_ranges[1].per_unit_amount", "invalid_value"),
        ("charges[0].properties.graduated_ranges[1].from_value", "invalid_range"),
        ("charges[1].charge_model", "unknown_charge_model"),
        ("fortnightly", "unknown_field"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(found.contains(&expected), "{expected:?} missing from {found:?}");
    }

    let valid = json!({"code": "pro", "name": "Pro", "interval": "weekly", "currency": "USD",
                       "charges": [{"metric": "api_calls", "charge_model": "standard",
                                    "properties": {"amount": "0.01"}}]});
    let plan = app.create("/v1/plans", valid.clone()).await;
    let taken = app.call(Method::POST, "/v1/plans", Some(valid.clone())).await;
    assert_error(&taken, StatusCode::CONFLICT, "code_taken");
    assert!(taken.body["error"]["message"].as_str().unwrap().contains("plan"), "{}", taken.body);

    let mut stranger = valid.clone();
    stranger["charges"][0]["id"] = json!(ChargeId::new().to_string());
    let unknown_charge = app.call(Method::PUT, "/v1/plans/pro", Some(stranger)).await;
    assert_error(&unknown_charge, StatusCode::UNPROCESSABLE_ENTITY, "unknown_charge");
    assert_eq!(details(&unknown_charge), pairs(&[("charges[0].id", "unknown_charge")]));
    let mut read_only = valid.clone();
    read_only["id"] = plan["id"].clone();
    let answer = app.call(Method::PUT, "/v1/plans/pro", Some(read_only)).await;
    assert_eq!(details(&answer), pairs(&[("id", "read_only")]));

    let missing = app.call(Method::PUT, "/v1/plans/nope", Some(valid)).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "plan_not_found");
    let bad_query = app.call(Method::GET, "/v1/plans?archived=true", None).await;
    assert_error(&bad_query, StatusCode::BAD_REQUEST, "invalid_query");
    let bad_cursor = app.call(Method::GET, "/v1/plans?cursor=xyz", None).await;
    assert_error(&bad_cursor, StatusCode::BAD_REQUEST, "invalid_cursor");
    let not_json = app.call(Method::POST, "/v1/plans", Some(json!([1]))).await;
    assert_error(&not_json, StatusCode::UNPROCESSABLE_ENTITY, "invalid_type");
}

#[tokio::test]
async fn subscription_lifecycle() {
    let app = spawn_app().await;
    create_metrics(&app).await;
    let plan = app
        .create(
            "/v1/plans",
            json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "USD",
                   "amount": "20",
                   "charges": [{"metric": "api_calls", "charge_model": "standard",
                                "properties": {"amount": "0.01"}}]}),
        )
        .await;
    let definition = json!({"external_id": "sub-1", "customer": "acme", "plan": "pro",
                            "started_at": "2026-01-15T09:30:00+01:00", "name": "Acme Pro"});
    let unknown_customer =
        app.call(Method::POST, "/v1/subscriptions", Some(definition.clone())).await;
    assert_error(&unknown_customer, StatusCode::UNPROCESSABLE_ENTITY, "unknown_customer");
    assert_eq!(details(&unknown_customer), pairs(&[("customer", "unknown_customer")]));

    app.create("/v1/customers", json!({"external_id": "acme", "timezone": "Europe/Paris"})).await;
    app.create("/v1/customers", json!({"external_id": "globex"})).await;
    let mut unknown_plan = definition.clone();
    unknown_plan["plan"] = json!("enterprise");
    let answer = app.call(Method::POST, "/v1/subscriptions", Some(unknown_plan)).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "unknown_plan");
    assert_eq!(details(&answer), pairs(&[("plan", "unknown_plan")]));
    let invalid = app
        .call(
            Method::POST,
            "/v1/subscriptions",
            Some(json!({"customer": "acme", "plan": "pro", "billing_anchor": "monday",
                        "ended_at": "soon"})),
        )
        .await;
    assert_error(&invalid, StatusCode::UNPROCESSABLE_ENTITY, "missing_field");
    assert_eq!(
        details(&invalid),
        pairs(&[
            ("external_id", "missing_field"),
            ("ended_at", "invalid_timestamp"),
            ("billing_anchor", "invalid_value"),
        ])
    );

    let created = app.create("/v1/subscriptions", definition.clone()).await;
    assert!(SubscriptionId::parse(created["id"].as_str().unwrap()).is_some(), "{created}");
    assert_eq!(created["external_id"], "sub-1");
    assert_eq!(created["customer"], "acme");
    assert_eq!(created["plan"], json!({"id": plan["id"], "code": "pro"}));
    assert_eq!(created["status"], "active");
    assert_eq!(created["started_at"], "2026-01-15T08:30:00.000000Z");
    assert_eq!(created["ended_at"], Value::Null);
    assert_eq!(created["terminated_at"], Value::Null);
    assert_eq!(created["billing_anchor"], "calendar");
    assert_eq!(created["timezone"], "Europe/Paris", "the customer's zone by default");
    assert_eq!(created["name"], "Acme Pro");

    let taken = app.call(Method::POST, "/v1/subscriptions", Some(definition)).await;
    assert_error(&taken, StatusCode::CONFLICT, "external_id_taken");
    let second = app
        .create(
            "/v1/subscriptions",
            json!({"external_id": "sub-2", "customer": "globex", "plan": plan["id"],
                   "billing_anchor": "2026-01-31", "timezone": "America/New_York"}),
        )
        .await;
    assert_eq!(
        (&second["billing_anchor"], &second["timezone"]),
        (&json!("2026-01-31"), &json!("America/New_York"))
    );

    assert_eq!(app.ok(Method::GET, "/v1/subscriptions/sub-1", None).await, created);
    let cases = [
        ("", vec!["sub-1", "sub-2"]),
        ("?customer=acme", vec!["sub-1"]),
        ("?plan=pro", vec!["sub-1", "sub-2"]),
        ("?plan=enterprise", vec![]),
        ("?status=active&limit=1", vec!["sub-1"]),
        ("?status=terminated", vec![]),
    ];
    for (query, expected) in cases {
        let list = app.ok(Method::GET, &format!("/v1/subscriptions{query}"), None).await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["external_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "{query}");
    }
    let bad_status = app.call(Method::GET, "/v1/subscriptions?status=paused", None).await;
    assert_error(&bad_status, StatusCode::BAD_REQUEST, "invalid_query");

    let patched = app
        .ok(
            Method::PATCH,
            "/v1/subscriptions/sub-1",
            Some(json!({"name": null, "billing_anchor": "anniversary",
                        "ended_at": "2027-01-15T08:30:00Z", "customer": "acme"})),
        )
        .await;
    assert_eq!(patched["name"], Value::Null);
    assert_eq!(patched["billing_anchor"], "anniversary");
    assert_eq!(patched["ended_at"], "2027-01-15T08:30:00.000000Z");
    assert_eq!(patched["status"], "active");
    let moved = app
        .call(
            Method::PATCH,
            "/v1/subscriptions/sub-1",
            Some(json!({"plan": "other", "timezone": "UTC"})),
        )
        .await;
    assert_error(&moved, StatusCode::UNPROCESSABLE_ENTITY, "not_allowed");
    assert_eq!(details(&moved), pairs(&[("plan", "not_allowed"), ("timezone", "not_allowed")]));
    let early = app
        .call(
            Method::PATCH,
            "/v1/subscriptions/sub-1",
            Some(json!({"ended_at": "2025-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(details(&early), pairs(&[("ended_at", "invalid_value")]));

    let terminated = app.ok(Method::POST, "/v1/subscriptions/sub-1/terminate", None).await;
    assert_eq!(terminated["status"], "terminated");
    let at = terminated["terminated_at"].as_str().unwrap();
    assert_eq!(terminated["ended_at"], at, "it ends when terminated");
    let again = app.ok(Method::POST, "/v1/subscriptions/sub-1/terminate", None).await;
    assert_eq!(again, terminated, "terminating twice changes nothing");
    let late = app.call(Method::PATCH, "/v1/subscriptions/sub-1", Some(json!({"name": "x"}))).await;
    assert_error(&late, StatusCode::CONFLICT, "subscription_terminated");
    let list = app.ok(Method::GET, "/v1/subscriptions?status=terminated", None).await;
    assert_eq!(list["data"], json!([terminated]));

    for (method, path) in [
        (Method::GET, "/v1/subscriptions/nope"),
        (Method::PATCH, "/v1/subscriptions/nope"),
        (Method::POST, "/v1/subscriptions/nope/terminate"),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"name": "x"}));
        let answer = app.call(method, path, body).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "subscription_not_found");
    }
}

#[tokio::test]
async fn other_organizations_see_nothing() {
    let app = spawn_app().await;
    let (calls, _) = create_metrics(&app).await;
    let plan = app
        .create(
            "/v1/plans",
            json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "USD",
                   "charges": [{"metric": "api_calls", "charge_model": "standard",
                                "properties": {"amount": "1"}}]}),
        )
        .await;
    app.create("/v1/customers", json!({"external_id": "acme"})).await;
    app.create("/v1/subscriptions", json!({"external_id": "s", "customer": "acme", "plan": "pro"}))
        .await;
    let other = Some(app.other_key.as_str());
    let plan_path = format!("/v1/plans/{}", plan["id"].as_str().unwrap());
    for path in [plan_path.as_str(), "/v1/plans/pro"] {
        let answer = app.call_with(Method::GET, path, other, None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "plan_not_found");
    }
    let answer = app.call_with(Method::GET, "/v1/subscriptions/s", other, None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "subscription_not_found");
    let list = app.call_with(Method::GET, "/v1/subscriptions", other, None).await;
    assert_eq!(list.body["data"], json!([]));
    // Another organization cannot charge this one's metric, by id or by code.
    let foreign = json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "USD",
                         "charges": [{"metric": calls["id"], "charge_model": "standard",
                                      "properties": {"amount": "1"}}]});
    let answer = app.call_with(Method::POST, "/v1/plans", other, Some(foreign)).await;
    assert_eq!(details(&answer), pairs(&[("charges[0].metric", "unknown_metric")]));
    let unauthorized = app.call_with(Method::GET, "/v1/plans", None, None).await;
    assert_error(&unauthorized, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn the_lock_rule_is_live() {
    let app = spawn_app().await;
    let metric = app
        .create(
            "/v1/metrics",
            json!({"code": "storage", "name": "Storage",
                   "aggregation": {"type": "sum", "field": "bytes"}}),
        )
        .await;
    let metric_path = format!("/v1/metrics/{}", metric["id"].as_str().unwrap());
    app.create(
        "/v1/plans",
        json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "USD",
               "charges": [{"metric": "storage", "charge_model": "standard",
                            "properties": {"amount": "0.1"}}]}),
    )
    .await;
    app.create("/v1/customers", json!({"external_id": "acme"})).await;
    app.create("/v1/subscriptions", json!({"external_id": "s", "customer": "acme", "plan": "pro"}))
        .await;

    let locked_patch = json!({"aggregation": {"field": "gigabytes"}});
    let locked = app.call(Method::PATCH, &metric_path, Some(locked_patch.clone())).await;
    assert_error(&locked, StatusCode::CONFLICT, "metric_locked");
    assert_eq!(details(&locked), pairs(&[("aggregation.field", "locked")]), "names the field");
    assert_eq!(
        locked.body["error"]["message"],
        "the metric is attached to plan 'pro', so these fields cannot change: aggregation.field",
        "names the plan that locks it"
    );
    let unchanged = app.ok(Method::GET, &metric_path, None).await;
    assert_eq!(
        (&unchanged["revision"], &unchanged["aggregation"]["field"]),
        (&json!(1), &json!("bytes"))
    );

    let renamed = app.ok(Method::PATCH, &metric_path, Some(json!({"name": "Disk"}))).await;
    assert_eq!((&renamed["revision"], &renamed["name"]), (&json!(2), &json!("Disk")));
    let attached = app.call(Method::DELETE, &metric_path, None).await;
    assert_error(&attached, StatusCode::CONFLICT, "metric_attached");

    let in_use = app.call(Method::DELETE, "/v1/plans/pro", None).await;
    assert_error(&in_use, StatusCode::CONFLICT, "plan_in_use");
    app.ok(Method::POST, "/v1/subscriptions/s/terminate", None).await;
    app.ok(Method::DELETE, "/v1/plans/pro", None).await;

    let unlocked = app.ok(Method::PATCH, &metric_path, Some(locked_patch)).await;
    assert_eq!(
        (&unlocked["revision"], &unlocked["aggregation"]["field"]),
        (&json!(3), &json!("gigabytes")),
        "once no live plan charges the metric, its locked fields change"
    );
    // The terminated subscription still names the deleted plan.
    let subscription = app.ok(Method::GET, "/v1/subscriptions/s", None).await;
    assert_eq!(subscription["plan"]["code"], "pro");
}

#[tokio::test]
async fn openapi_documents_plans_and_subscriptions() {
    let app = spawn_app().await;
    let openapi = app.call_with(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(openapi.status, StatusCode::OK);
    let paths = openapi.body["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/plans", &["post", "get"][..]),
        ("/v1/plans/{id_or_code}", &["get", "put", "delete"]),
        ("/v1/subscriptions", &["post", "get"]),
        ("/v1/subscriptions/{external_id}", &["get", "patch"]),
        ("/v1/subscriptions/{external_id}/terminate", &["post"]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "openapi lacks {method} {path}");
        }
    }
    let schemas = &openapi.body["components"]["schemas"];
    for schema in ["PlanDto", "PlanChargeDto", "PlanInput", "SubscriptionDto", "SubscriptionInput"]
    {
        assert!(schemas[schema].is_object(), "openapi lacks the schema {schema}");
    }
}
