//! Plans priced over real usage, over real HTTP: current usage of a subscription (its billing
//! period in the customer's zone, per charge and bucket), answers reproduced exactly with
//! `as_of` after metric updates and late events, and charge filters with every charge model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use odometer_core::OrganizationId;
use odometer_store::Catalog;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct TestApp {
    base: String,
    http: reqwest::Client,
    key: String,
    _stores: support::Stores,
}

/// A fresh server whose organization accepts event timestamps up to ten years ahead, so the
/// tests can place events in fixed periods of the future and ask about them with `as_of`.
async fn spawn_app() -> TestApp {
    let stores = support::Stores::new().await;
    let created = stores.organization("acme").await;
    let org: OrganizationId = created.organization.id;
    let mut settings = created.organization.settings.clone();
    settings.future_timestamp_tolerance_seconds = 10 * 366 * 24 * 3600;
    stores.catalog.update_organization_settings(org, &settings).await.unwrap();
    let addr = support::serve(odometer_api::app(stores.state())).await;
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        key: created.secret,
        _stores: stores,
    }
}

impl TestApp {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")))
    }

    async fn ok(&self, method: Method, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, answer) = self.call(method, path, Some(body)).await;
        assert_eq!(status, expected, "{path}: {answer}");
        answer
    }

    async fn ingest(&self, events: Vec<Value>) {
        let answer =
            self.ok(Method::POST, "/v1/events", json!({"events": events}), StatusCode::OK).await;
        assert_eq!(answer["rejected"], 0, "{answer}");
    }

    async fn usage(&self, subscription: &str, as_of: Option<&str>) -> Value {
        let path = match as_of {
            Some(at) => format!("/v1/subscriptions/{subscription}/usage?as_of={at}"),
            None => format!("/v1/subscriptions/{subscription}/usage"),
        };
        let (status, answer) = self.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    /// A customer, a `sum(bytes)` metric `storage`, a plan `pro` with the given charges on it
    /// and a subscription `sub` to it.
    async fn setup(&self, timezone: &str, charges: Value, started_at: &str) {
        let customer = json!({"external_id": "acme", "timezone": timezone});
        self.ok(Method::POST, "/v1/customers", customer, StatusCode::CREATED).await;
        let metric = json!({"code": "storage", "name": "Storage",
            "aggregation": {"type": "sum", "field": "bytes"}});
        self.ok(Method::POST, "/v1/metrics", metric, StatusCode::CREATED).await;
        let plan = json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "EUR",
            "amount": "10", "charges": charges});
        self.ok(Method::POST, "/v1/plans", plan, StatusCode::CREATED).await;
        let subscription = json!({"external_id": "sub", "customer": "acme", "plan": "pro",
            "started_at": started_at, "billing_anchor": "calendar", "timezone": timezone});
        self.ok(Method::POST, "/v1/subscriptions", subscription, StatusCode::CREATED).await;
    }
}

fn event(tx: &str, ts: &str, properties: Value) -> Value {
    json!({"transaction_id": tx, "code": "storage", "customer": "acme", "timestamp": ts,
        "properties": properties})
}

fn standard(amount: &str) -> Value {
    json!([{"metric": "storage", "charge_model": "standard", "properties": {"amount": amount}}])
}

#[tokio::test]
async fn current_usage_in_paris_across_a_dst_change_is_correct_to_the_event() {
    let app = spawn_app().await;
    app.setup("Europe/Paris", standard("0.10"), "2029-12-31T23:00:00Z").await;
    // March 2030 in Paris: from 1 March 00:00 CET (28 Feb 23:00Z) to 1 April 00:00 CEST
    // (31 March 22:00Z); summer time starts on 31 March at 02:00.
    app.ingest(vec![
        event("feb", "2030-02-28T22:59:59.999999Z", json!({"bytes": 1})), // 23:59:59 CET, February
        event("first", "2030-02-28T23:00:00Z", json!({"bytes": 2})),      // 00:00 CET, 1 March
        event("dst", "2030-03-31T01:30:00Z", json!({"bytes": 20})), // 03:30 CEST, after the change
        event("last", "2030-03-31T21:59:59.999999Z", json!({"bytes": 3})), // 23:59:59 CEST
        event("apr", "2030-03-31T22:00:00Z", json!({"bytes": 4})),  // 00:00 CEST, 1 April
    ])
    .await;
    let march = app.usage("sub", Some("2030-03-15T12:00:00Z")).await;
    assert_eq!(march["from"], "2030-02-28T23:00:00.000000Z", "{march}");
    assert_eq!(march["to"], "2030-03-31T22:00:00.000000Z");
    assert_eq!(march["timezone"], "Europe/Paris");
    assert_eq!(march["as_of"], "2030-03-15T12:00:00.000000Z");
    let charge = &march["charges"][0];
    // 2 + 20 + 3 bytes at 0.10.
    assert_eq!(charge["units"], "25");
    assert_eq!(charge["events_count"], 3);
    assert_eq!(charge["amount"], "2.50");
    assert_eq!(charge["metric"]["code"], "storage");
    assert_eq!(march["amount"], "2.50");
    assert_eq!(march["currency"], "EUR");

    let april = app.usage("sub", Some("2030-04-02T00:00:00Z")).await;
    assert_eq!(april["from"], "2030-03-31T22:00:00.000000Z");
    assert_eq!(april["to"], "2030-04-30T22:00:00.000000Z");
    assert_eq!(april["charges"][0]["units"], "4");
    assert_eq!(april["amount"], "0.40");

    let february = app.usage("sub", Some("2030-02-10T00:00:00Z")).await;
    assert_eq!(february["from"], "2030-01-31T23:00:00.000000Z");
    assert_eq!(february["charges"][0]["units"], "1");
    assert_eq!(february["amount"], "0.10");

    // Before the subscription starts there is no period.
    let (status, early) =
        app.call(Method::GET, "/v1/subscriptions/sub/usage?as_of=2029-06-01T00:00:00Z", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{early}");
    assert_eq!(early["error"]["code"], "subscription_not_started");
    let (status, unknown) = app.call(Method::GET, "/v1/subscriptions/nope/usage", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
}

#[tokio::test]
async fn a_billed_period_is_reproduced_exactly_after_an_update_and_late_events() {
    let app = spawn_app().await;
    app.setup("UTC", standard("0.10"), "2020-01-01T00:00:00Z").await;
    // The current period contains now; place the events between its start and now.
    let empty = app.usage("sub", None).await;
    let from: chrono::DateTime<chrono::Utc> = empty["from"].as_str().unwrap().parse().unwrap();
    let now = odometer_core::time::now();
    let at = |share: i32| (from + (now - from) * share / 10).to_rfc3339();
    app.ingest(vec![
        event("e1", &at(1), json!({"bytes": 100})),
        event("e2", &at(2), json!({"bytes": 50})),
    ])
    .await;
    let billed = app.usage("sub", None).await;
    assert_eq!(billed["charges"][0]["units"], "150", "{billed}");
    assert_eq!(billed["amount"], "15.00");
    assert_eq!(billed["charges"][0]["metric"]["revision"], 1);
    let billed_at = billed["as_of"].as_str().unwrap().to_owned();

    // Later: a late event inside the period, and an update of an unlocked field (the metric is
    // charged by a live plan, so its aggregation is locked).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.ingest(vec![event("late", &at(3), json!({"bytes": 1000}))]).await;
    let locked = json!({"aggregation": {"type": "max", "field": "bytes"}});
    let (status, refused) = app.call(Method::PATCH, "/v1/metrics/storage", Some(locked)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "metric_locked");
    let update = json!({"unit_conversion": {"factor": "10", "rounding": "none"}});
    let updated = app.ok(Method::PATCH, "/v1/metrics/storage", update, StatusCode::OK).await;
    assert_eq!(updated["revision"], 2);

    // As of the first answer: that answer, exactly.
    let again = app.usage("sub", Some(&billed_at)).await;
    assert_eq!(again, billed);
    // Without as_of: the late event counts and the new revision applies: 1150 / 10 = 115 units.
    let now = app.usage("sub", None).await;
    assert_eq!(now["charges"][0]["units"], "115", "{now}");
    assert_eq!(now["charges"][0]["metric"]["revision"], 2);
    assert_eq!(now["amount"], "11.50");
}

#[tokio::test]
async fn every_event_lands_in_one_bucket_and_every_charge_model_prices_its_units() {
    let app = spawn_app().await;
    let tiers = json!([
        {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "10"},
        {"from_value": 10, "to_value": null, "per_unit_amount": "0.5", "flat_amount": "5"}
    ]);
    let charges = json!([
        {"metric": "storage", "charge_model": "standard", "properties": {"amount": "1"},
         "filters": [
            {"values": {"region": ["eu", "us"]}, "properties": {"amount": "2"}},
            {"values": {"region": ["eu"], "tier": ["gold"]}, "properties": {"amount": "5"}}
         ]},
        {"metric": "storage", "charge_model": "graduated", "properties": {"graduated_ranges": tiers}},
        {"metric": "storage", "charge_model": "volume", "properties": {"volume_ranges": tiers}},
        {"metric": "storage", "charge_model": "package",
         "properties": {"amount": "5", "package_size": 10, "free_units": 5}},
        {"metric": "storage", "charge_model": "percentage",
         "properties": {"rate": "1.5", "per_transaction_min_amount": "0.10"}}
    ]);
    app.setup("UTC", charges, "2030-01-01T00:00:00Z").await;
    app.ingest(vec![
        event("gold", "2030-01-05T00:00:00Z", json!({"bytes": 10, "region": "eu", "tier": "gold"})),
        event(
            "silver",
            "2030-01-06T00:00:00Z",
            json!({"bytes": 3, "region": "eu", "tier": "silver"}),
        ),
        event("us", "2030-01-07T00:00:00Z", json!({"bytes": 1, "region": "us"})),
        event("ap", "2030-01-08T00:00:00Z", json!({"bytes": 7, "region": "ap"})),
        event("next", "2030-02-01T00:00:00Z", json!({"bytes": 1000, "region": "ap"})),
    ])
    .await;
    let usage = app.usage("sub", Some("2030-01-20T00:00:00Z")).await;
    let charges = usage["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 5, "{usage}");

    // Filters: eu/gold matches both filters and counts in the more specific one (10 x 5);
    // eu/silver and us in the region filter (4 x 2); ap in the default bucket (7 x 1).
    let filtered = &charges[0];
    let buckets: Vec<(Value, String, String)> = filtered["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["filter"]["index"].clone(),
                b["units"].as_str().unwrap().to_owned(),
                b["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            (Value::Null, "7".to_owned(), "7.00".to_owned()),
            (json!(0), "4".to_owned(), "8.00".to_owned()),
            (json!(1), "10".to_owned(), "50.00".to_owned()),
        ],
        "{filtered}"
    );
    assert_eq!(filtered["amount"], "65.00");
    assert_eq!(filtered["units"], "21");
    assert_eq!(filtered["events_count"], 4);

    // 21 units. Graduated: 10 x 1 + 10 (first tier) + 11 x 0.5 + 5 (second tier) = 30.50.
    assert_eq!(charges[1]["amount"], "30.50", "{}", charges[1]);
    // Volume: all 21 units at the reached tier, 21 x 0.5 + 5 = 15.50.
    assert_eq!(charges[2]["amount"], "15.50", "{}", charges[2]);
    // Package: ceil((21 - 5) / 10) = 2 packages of 5.
    assert_eq!(charges[3]["amount"], "10.00", "{}", charges[3]);
    // Percentage, event by event with a 0.10 minimum: 10 -> 0.15; 3 -> 0.045 -> 0.10;
    // 1 -> 0.015 -> 0.10; 7 -> 0.105. Total 0.455, rounded half-up: 0.46.
    assert_eq!(charges[4]["amount"], "0.46", "{}", charges[4]);
    assert_eq!(usage["amount"], "121.46");
}

#[tokio::test]
async fn a_preview_prices_the_proposed_definition_for_subscribed_customers() {
    let app = spawn_app().await;
    app.setup("UTC", standard("0.10"), "2030-01-01T00:00:00Z").await;
    app.ok(Method::POST, "/v1/customers", json!({"external_id": "free"}), StatusCode::CREATED)
        .await;
    app.ingest(vec![
        event("eu", "2030-01-05T00:00:00Z", json!({"bytes": 100, "region": "eu"})),
        event("us", "2030-01-06T00:00:00Z", json!({"bytes": 50, "region": "us"})),
        json!({"transaction_id": "f", "code": "storage", "customer": "free",
            "timestamp": "2030-01-06T00:00:00Z", "properties": {"bytes": 7, "region": "us"}}),
    ])
    .await;
    let body = json!({"patch": {"filters": [{"property": "region", "op": "eq", "values": ["eu"]}]},
        "from": "2030-01-01T00:00:00Z", "to": "2030-02-01T00:00:00Z"});
    let preview = app.ok(Method::POST, "/v1/metrics/storage/preview", body, StatusCode::OK).await;
    assert_eq!(preview["would_be_refused"], false, "filters stay editable on a charged metric");
    let results = preview["results"].as_array().unwrap();
    // acme: 150 -> 100 (-50), priced at 0.10: 15.00 -> 10.00. free: 7 -> 0, no subscription.
    assert_eq!(results[0]["customer"], "acme", "{preview}");
    assert_eq!(results[0]["difference"], "-50");
    assert_eq!(
        results[0]["amounts"],
        json!([{"subscription": "sub", "plan": "pro", "currency": "EUR",
            "current": "15.00", "proposed": "10.00", "difference": "-5.00"}])
    );
    assert_eq!(results[1]["customer"], "free");
    assert_eq!(results[1]["difference"], "-7");
    assert_eq!(results[1]["amounts"], json!([]));

    // A locked change is flagged: the metric is charged by a live plan.
    let body = json!({"patch": {"aggregation": {"type": "max", "field": "bytes"}},
        "from": "2030-01-01T00:00:00Z", "to": "2030-02-01T00:00:00Z", "customers": ["acme"]});
    let preview = app.ok(Method::POST, "/v1/metrics/storage/preview", body, StatusCode::OK).await;
    assert_eq!(preview["would_be_refused"], true);
    assert_eq!(preview["locked_fields"], json!(["aggregation.type"]));
    // max(100, 50) = 100 -> 10.00 instead of 15.00.
    assert_eq!(preview["results"][0]["amounts"][0]["proposed"], "10.00");
}
