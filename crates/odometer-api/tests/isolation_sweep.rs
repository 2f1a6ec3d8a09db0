//! Tenant isolation, swept over every route of every surface (native, Lago, Meteroid,
//! Zenskar): organization A owns a metric, a SQL metric, a customer, a plan, a subscription
//! and events, each carrying marker text only A knows (names, property values) and internal
//! ids only A was told. Organization B's key then calls every route with A's codes and ids in
//! the path, the query and the body. Every answer must be a non-5xx that contains none of
//! A's markers (except text B itself sent in that request), and afterwards A's data must be
//! exactly as before. The route list is checked against the routers: the native API's
//! OpenAPI document (generated from its router) and the dialects' router sources, so a new
//! route without a line here fails this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};

const PERIOD: &str = "from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z";

/// What organization A owns, and the text only A knows.
struct Owner {
    key: String,
    org_id: String,
    /// Names, property values and internal ids B must never see.
    markers: Vec<String>,
}

async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request =
        http.request(method.parse().unwrap(), url).bearer_auth(key).header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn json_ok(response: reqwest::Response, what: &str) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{what}: {status} {body}");
    body
}

/// Everything A can read of its own data, to compare before and after B's sweep.
async fn snapshot(http: &reqwest::Client, base: &str, key: &str, org_id: &str) -> Value {
    let mut all = serde_json::Map::new();
    for path in [
        "/v1/metrics?archived=true",
        "/v1/metrics/calls",
        "/v1/metrics/calls/revisions",
        "/v1/customers",
        "/v1/customers/cust-a",
        "/v1/plans",
        "/v1/plans/pro",
        "/v1/subscriptions",
        "/v1/subscriptions/sub-a",
        "/v1/events",
        "/zenskar/rawmetric",
        "/zenskar/aggregates",
    ] {
        let mut request =
            http.get(format!("{base}{path}")).bearer_auth(key).header("x-api-key", key);
        if path.starts_with("/zenskar") {
            request = request.header("organisation", org_id);
        }
        let body = json_ok(request.send().await.unwrap(), path).await;
        all.insert(path.to_owned(), body);
    }
    let usage = format!("/v1/usage?metric=calls&customer=cust-a&{PERIOD}");
    let mut answer =
        json_ok(send(http, "GET", &format!("{base}{usage}"), key, None).await, &usage).await;
    // How it was computed may change while the index builds; the numbers may not.
    answer.as_object_mut().unwrap().remove("answered_from");
    all.insert(usage, answer);
    Value::Object(all)
}

async fn create_owner(http: &reqwest::Client, base: &str, key: &str, org_id: &str) -> Owner {
    let post = |path: &str, body: Value| {
        let url = format!("{base}{path}");
        async move { json_ok(send(http, "POST", &url, key, Some(body)).await, &url).await }
    };
    let metric = post(
        "/v1/metrics",
        json!({"code": "calls", "name": "ACMESECRET metric name", "event_code": "calls",
            "description": "ACMESECRET description",
            "aggregation": {"type": "sum", "field": "units"},
            "segmentation": {"type": "single", "key": "region", "values": ["ACMESECRETREGION"]}}),
    )
    .await;
    let sql = post(
        "/v1/metrics",
        json!({"code": "sqlcalls", "name": "ACMESECRET sql metric", "event_code": "calls",
            "aggregation": {"type": "custom_sql",
                "query": "SELECT COUNT(*) AS quantity FROM events WHERE code = 'calls'"}}),
    )
    .await;
    let customer =
        post("/v1/customers", json!({"external_id": "cust-a", "name": "ACMESECRET customer name"}))
            .await;
    let plan = post(
        "/v1/plans",
        json!({"code": "pro", "name": "ACMESECRET plan name", "interval": "monthly",
            "currency": "USD", "charges": [{"metric": "calls", "charge_model": "standard",
            "properties": {"amount": "7"}}]}),
    )
    .await;
    let subscription = post(
        "/v1/subscriptions",
        json!({"external_id": "sub-a", "customer": "cust-a", "plan": "pro",
            "started_at": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let events: Vec<Value> = (0..5)
        .map(|i| {
            json!({"transaction_id": format!("tx-a-{i}"), "code": "calls", "customer": "cust-a",
                "timestamp": format!("2026-03-0{}T10:00:00Z", i + 1),
                "properties": {"units": "3", "region": "ACMESECRETREGION",
                    "note": "ACMESECRETVALUE"}})
        })
        .collect();
    let ingested = post("/v1/events", json!({ "events": events })).await;
    assert_eq!(ingested["accepted"], 5, "{ingested}");
    let mut markers = vec!["ACMESECRET".to_owned(), org_id.to_owned()];
    for object in [&metric, &sql, &customer, &plan, &subscription] {
        markers.push(object["id"].as_str().unwrap().to_owned());
    }
    Owner { key: key.to_owned(), org_id: org_id.to_owned(), markers }
}

/// A body for a write, naming A's objects (codes and external ids, which B may also use in
/// its own organization).
fn body_for(method: &str, route: &str) -> Option<Value> {
    if method == "GET" || method == "DELETE" {
        return None;
    }
    let event = json!({"transaction_id": "tx-a-0", "code": "calls", "customer": "cust-a",
        "timestamp": "2026-03-01T10:00:00Z", "properties": {"units": "3"}});
    let lago_event = json!({"transaction_id": "tx-a-0", "code": "calls",
        "external_subscription_id": "sub-a", "external_customer_id": "cust-a",
        "timestamp": 1_772_359_200, "properties": {"units": "3"}});
    Some(match route {
        "/v1/events" | "/v1/events/ndjson" => json!({"events": [event]}),
        "/v1/events/explain" => json!({"customer": "cust-a", "transaction_id": "tx-a-0"}),
        "/v1/metrics/{id_or_code}/preview" => json!({"patch": {"name": "x"},
            "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}),
        "/v1/metrics/{id_or_code}" => json!({"name": "hijacked"}),
        "/v1/customers/{external_id}" => json!({"name": "hijacked"}),
        "/v1/subscriptions/{external_id}" => json!({"ending_at": "2026-05-01T00:00:00Z"}),
        "/v1/plans/{id_or_code}" => {
            json!({"code": "pro", "name": "hijacked", "interval": "monthly",
            "currency": "USD", "charges": []})
        }
        "/v1/subscriptions" => json!({"external_id": "sub-b", "customer": "cust-a", "plan": "pro"}),
        "/lago/api/v1/events" | "/lago/api/v1/events/estimate_fees" => json!({"event": lago_event}),
        "/lago/api/v1/events/batch" => json!({"events": [lago_event]}),
        "/lago/api/v1/subscriptions" => json!({"subscription": {"external_customer_id": "cust-a",
            "plan_code": "pro", "external_id": "sub-b"}}),
        "/lago/api/v1/subscriptions/{external_id}" => json!({"subscription": {"name": "hijacked"}}),
        "/lago/api/v1/billable_metrics/{code}" => json!({"billable_metric": {"name": "hijacked"}}),
        "/lago/api/v1/plans/{code}" => json!({"plan": {"name": "hijacked", "code": "pro",
            "interval": "monthly", "amount_cents": 0, "amount_currency": "USD"}}),
        "/meteroid/api/v1/events/ingest" => json!({"events": [{"id": "tx-a-0", "code": "calls",
            "customer_id": {"external_id": "cust-a"}, "timestamp": "2026-03-01T10:00:00Z",
            "properties": {"units": "3"}}]}),
        "/meteroid/api/v1/subscriptions" => json!({"customer_id": "cust-a", "plan_id": "pro"}),
        "/zenskar/usage/{api_slug}" => json!({"data": {"units": 3}, "customer_id": "cust-a",
            "timestamp": "2026-03-01T10:00:00Z", "idempotency_key": "tx-a-0"}),
        _ => json!({"name": "hijacked"}),
    })
}

/// A's codes and ids that may stand for a path parameter, by the segment before it.
fn candidates(owner: &Owner, before: &str, name: &str) -> Vec<String> {
    let id = |i: usize| owner.markers[2 + i].clone();
    match (before, name) {
        (_, "revision") => vec!["1".into()],
        (_, "transaction_id") => vec!["tx-a-0".into()],
        ("metrics" | "billable_metrics" | "aggregates" | "rawmetric" | "slug" | "usage", _) => {
            vec!["calls".into(), "sqlcalls".into(), id(0), id(1)]
        }
        ("customers" | "customer", _) => vec!["cust-a".into(), id(2)],
        ("plans", _) => vec!["pro".into(), id(3)],
        ("subscriptions" | "subscription", _) => vec!["sub-a".into(), id(4)],
        _ => vec!["calls".into(), "cust-a".into(), "pro".into(), "sub-a".into(), id(0), id(2)],
    }
}

/// The concrete paths of a route pattern: each parameter filled with each candidate.
fn expand(owner: &Owner, route: &str) -> Vec<String> {
    let mut paths = vec![String::new()];
    let segments: Vec<&str> = route.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let options = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => candidates(owner, if i == 0 { "" } else { segments[i - 1] }, name),
            None => vec![(*segment).to_owned()],
        };
        paths =
            paths.iter().flat_map(|p| options.iter().map(move |o| format!("{p}/{o}"))).collect();
    }
    paths
}

#[tokio::test]
async fn another_organizations_key_gets_nothing_of_the_first_on_any_route() {
    let stores = support::Stores::new().await;
    let (a, b) = (stores.organization("acme").await, stores.organization("globex").await);
    let (a_org, b_org) = (a.organization.id.to_string(), b.organization.id.to_string());
    let addr = support::serve(odometer_api::app(stores.state())).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let owner = create_owner(&http, &base, &a.secret, &a_org).await;
    let before = snapshot(&http, &base, &owner.key, &owner.org_id).await;
    // The markers are real: A reads its names and values back.
    assert!(before.to_string().contains("ACMESECRET metric name"), "{before}");
    assert!(before.to_string().contains("ACMESECRETVALUE"), "{before}");

    // Every route is in the inventory (checked against the routers).
    let openapi: Value =
        http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    support::routes::assert_inventory_is_complete(&openapi);
    let inventory = support::routes::inventory();

    // B calls everything with A's names in it.
    let mut calls = 0;
    for (method, route, query) in &inventory {
        let body = body_for(method, route);
        for path in expand(&owner, route) {
            let url = if query.is_empty() {
                format!("{base}{path}")
            } else {
                format!("{base}{path}?{query}")
            };
            let mut request = http
                .request(method.parse().unwrap(), &url)
                .bearer_auth(&b.secret)
                .header("x-api-key", &b.secret)
                .header("organisation", &b_org);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            calls += 1;
            assert!(!status.is_server_error(), "{method} {url}: {status} {text}");
            let sent = format!("{url} {}", body.as_ref().map(Value::to_string).unwrap_or_default());
            for marker in &owner.markers {
                if !sent.contains(marker.as_str()) {
                    assert!(
                        !text.contains(marker.as_str()),
                        "{method} {url} with B's key shows A's {marker}: {status} {text}"
                    );
                }
            }
        }
    }
    eprintln!(
        "isolation sweep: {} routes, {calls} calls with another organization's key",
        inventory.len()
    );

    let after = snapshot(&http, &base, &owner.key, &owner.org_id).await;
    assert_eq!(before, after, "A's data changed during B's sweep");
}
