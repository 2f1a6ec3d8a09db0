//! The Zenskar dialect over real HTTP: a raw metric, usage rows through `/zenskar/usage/{slug}`
//! (with `Idempotency-Key`), an aggregate in Zenskar's documented SQL form, its estimate, the
//! seed's PATCH (revisions, verbatim documents, FastAPI errors) and authentication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use odometer_core::OrganizationId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct TestApp {
    base: String,
    http: reqwest::Client,
    key: String,
    org: OrganizationId,
    other_key: String,
    other_org: OrganizationId,
    _stores: support::Stores,
}

async fn spawn_app() -> TestApp {
    let stores = support::Stores::new().await;
    let (a, b) = (stores.organization("acme").await, stores.organization("globex").await);
    let addr = support::serve(odometer_api::app(stores.state())).await;
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        key: a.secret,
        org: a.organization.id,
        other_key: b.secret,
        other_org: b.organization.id,
        _stores: stores,
    }
}

impl TestApp {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}/zenskar{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    fn auth(&self) -> Vec<(&'static str, String)> {
        vec![("x-api-key", self.key.clone()), ("organisation", self.org.to_string())]
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(method, path, body, &self.auth()).await
    }
}

const ZENSKAR_QUERY: &str =
    "SELECT COALESCE(COUNT(data.Premises_used)) AS \"quantity\" FROM premises\n\
WHERE DATE(\"timestamp\") >= DATE({{start_date}}) AND DATE(\"timestamp\") <= DATE({{end_date}})\n  \
AND \"customer_id\" = CAST({{customer.external_id}} AS String)";

async fn premises(app: &TestApp) {
    let (status, body) = app
        .call(
            Method::POST,
            "/rawmetric",
            Some(json!({"name": "Premises", "api_slug": "premises", "dataschema": {
                "customer_id": "String", "timestamp": "DateTime64",
                "data": {"Premises_used": "Int64", "site": "String",
                         "Error_in_entry_do_not_count": "Bool"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn documented_sql_over_ingested_rows_gives_the_worked_out_estimate() {
    let app = spawn_app().await;
    premises(&app).await;
    let row = |customer: &str, ts: &str, n: i64| json!({"customer_id": customer, "timestamp": ts, "data": {"Premises_used": n, "site": "hq"}});
    // acme: 3 rows in March (one on the last day), one in April; globex: one in March.
    let (status, body) = app
        .call(
            Method::POST,
            "/usage/premises",
            Some(json!([
                row("acme", "2026-03-02T10:00:00Z", 3),
                row("acme", "2026-03-15T10:00:00Z", 4),
                row("acme", "2026-03-31T23:59:59Z", 5),
                row("acme", "2026-04-01T00:00:00Z", 6),
                row("globex", "2026-03-03T10:00:00Z", 7),
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 5);
    // One row on its own.
    let (status, _) = app
        .call(Method::POST, "/usage/premises", Some(row("acme", "2026-03-20T00:00:00Z", 1)))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, aggregate) = app
        .call(
            Method::POST,
            "/aggregates",
            Some(json!({"name": "Premises used", "aggregation_query": ZENSKAR_QUERY,
                "cust_agg_query": ZENSKAR_QUERY})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{aggregate}");
    let id = aggregate["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let estimate = |customer: &'static str, from: &'static str, to: &'static str| {
        let (app, id) = (&app, id.clone());
        async move {
            app.call(
                Method::GET,
                &format!(
                    "/aggregates/estimates?aggregate_id={id}&customer_id={customer}\
                     &start_date={from}&end_date={to}"
                ),
                None,
            )
            .await
        }
    };
    // March for acme: rows of the 2nd, 15th, 20th and 31st (end date inclusive) = 4.
    let (status, body) = estimate("acme", "2026-03-01", "2026-03-31").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], "4", "{body}");
    let (_, body) = estimate("globex", "2026-03-01", "2026-03-31").await;
    assert_eq!(body["value"], "1");
    let (_, body) = estimate("acme", "2026-03-10", "2026-04-30").await;
    assert_eq!(body["value"], "4", "15th, 20th, 31st, April 1st: {body}");
    let (_, body) = estimate("nobody", "2026-03-01", "2026-03-31").await;
    assert_eq!(body["value"], "0");

    // Another organization sees none of it.
    let other =
        vec![("x-api-key", app.other_key.clone()), ("organisation", app.other_org.to_string())];
    let (status, _) = app.send(Method::GET, &format!("/aggregates/{id}"), None, &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A PATCH is a revision, and the new SQL answers at once.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/aggregates/{id}"),
            Some(json!({"aggregation_query":
                "SELECT SUM(data.Premises_used) AS value FROM premises \
                 WHERE customer_id = {{customer.external_id}}"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 2);
    let (_, body) = estimate("acme", "2026-03-01", "2026-03-31").await;
    assert_eq!(body["value"], "13", "3 + 4 + 1 + 5: {body}");
}

#[tokio::test]
async fn patch_follows_the_seed() {
    let app = spawn_app().await;
    let (_, created) = app
        .call(
            Method::POST,
            "/aggregates",
            Some(json!({"name": "Calls", "aggregation_query": "SELECT count(*) AS value FROM events",
                "cust_agg_query": "SELECT count(*) AS value FROM events",
                "dataschema": "{\"a\": \"Int64\"}", "datasource": "0190a0b0-0000-7000-8000-000000000001",
                "visual_query_builder": {"steps": [1, {"x": null}], "agg": "COUNT"}})),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["dataschema"], "{\"a\": \"Int64\"}");
    assert_eq!(created["visual_query_builder"], json!({"steps": [1, {"x": null}], "agg": "COUNT"}));

    // Every member null or absent: nothing changes, no revision.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/aggregates/{id}"),
            Some(json!({"name": null, "unknown": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 1);
    // Documents round-trip verbatim, each accepted change a revision.
    let vqb = json!({"table": "premises", "filters": [{"op": "=", "v": 1.50}]});
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/aggregates/{id}"),
            Some(json!({"name": "Calls v2", "visual_query_builder": vqb, "dataschema": "x",
                "datasource": "ds"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revision"], 2);
    assert_eq!(body["visual_query_builder"], vqb);
    assert_eq!((body["dataschema"].as_str(), body["datasource"].as_str()), (Some("x"), Some("ds")));
    let (_, got) = app.call(Method::GET, &format!("/aggregates/{id}"), None).await;
    assert_eq!(got, body);

    // FastAPI-shaped validation errors.
    let cases = [
        (json!({"name": 5}), json!(["body", "name"]), "string_type"),
        (
            json!({"visual_query_builder": [1]}),
            json!(["body", "visual_query_builder"]),
            "dict_type",
        ),
        (json!([]), json!(["body"]), "model_attributes_type"),
        (
            json!({"aggregation_query": "DELETE FROM events"}),
            json!(["body", "aggregation_query"]),
            "value_error",
        ),
        (
            json!({"aggregation_query": "SELECT 1; DROP TABLE events"}),
            json!(["body", "aggregation_query"]),
            "value_error",
        ),
        (
            json!({"aggregation_query": "SELECT count(*) FROM main.events"}),
            json!(["body", "aggregation_query"]),
            "value_error",
        ),
        (
            json!({"aggregation_query": "SELECT count(*) FROM other_table"}),
            json!(["body", "aggregation_query"]),
            "value_error",
        ),
    ];
    for (patch, loc, kind) in cases {
        let (status, body) =
            app.call(Method::PATCH, &format!("/aggregates/{id}"), Some(patch.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {body}");
        assert_eq!(body["detail"][0]["loc"], loc, "{patch}: {body}");
        assert_eq!(body["detail"][0]["type"], kind, "{patch}: {body}");
        assert!(body["detail"][0]["msg"].as_str().is_some());
    }
    let (status, body) = app.call(Method::PATCH, "/aggregates/not-a-uuid", Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["loc"], json!(["path", "aggregate_id"]));
    let (_, body) = app.call(Method::GET, &format!("/aggregates/{id}"), None).await;
    assert_eq!(body["revision"], 2, "refused patches change nothing");

    // List with name__ilike and a cursor; delete.
    let (_, second) = app
        .call(
            Method::POST,
            "/aggregates",
            Some(json!({"name": "Storage", "aggregation_query": "SELECT 1 AS value"})),
        )
        .await;
    let (_, page) = app.call(Method::GET, "/aggregates?limit=1", None).await;
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) =
        app.call(Method::GET, &format!("/aggregates?limit=1&cursor={cursor}"), None).await;
    assert_eq!(page["results"][0]["id"], second["id"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = app.call(Method::GET, "/aggregates?name__ilike=calls%25", None).await;
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    let (status, _) = app.call(Method::DELETE, &format!("/aggregates/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.call(Method::GET, &format!("/aggregates/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Aggregate not found");
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_a_changed_body() {
    let app = spawn_app().await;
    premises(&app).await;
    let mut headers = app.auth();
    headers.push(("idempotency-key", "retry-1".to_owned()));
    let body = json!([{"customer_id": "acme", "timestamp": "2026-03-02T10:00:00Z",
        "data": {"Premises_used": 2}}]);
    let (status, first) =
        app.send(Method::POST, "/usage/premises", Some(body.clone()), &headers).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) =
        app.send(Method::POST, "/usage/premises", Some(body.clone()), &headers).await;
    assert_eq!((status, &again), (StatusCode::OK, &first), "the first answer, replayed");
    let changed = json!([{"customer_id": "acme", "timestamp": "2026-03-02T10:00:00Z",
        "data": {"Premises_used": 3}}]);
    let (status, err) = app.send(Method::POST, "/usage/premises", Some(changed), &headers).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(err["detail"].as_str().unwrap().contains("different request"));
    let (_, aggregate) = app
        .call(
            Method::POST,
            "/aggregates",
            Some(json!({"name": "n", "aggregation_query":
            "SELECT sum(data.Premises_used) AS value FROM premises"})),
        )
        .await;
    let (_, estimate) = app
        .call(
            Method::GET,
            &format!("/aggregates/estimates?aggregate_id={}&customer_id=acme&start_date=2026-03-01&end_date=2026-03-31", aggregate["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(estimate["value"], "2", "stored once: {estimate}");
    // A row that does not fit the schema.
    let (status, err) = app
        .call(
            Method::POST,
            "/usage/premises",
            Some(json!({"customer_id": "acme",
            "timestamp": "2026-03-02T10:00:00Z", "data": {"Premises_used": "lots", "nope": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["detail"].as_array().unwrap().len(), 2, "{err}");
}

#[tokio::test]
async fn authentication_needs_the_key_and_its_organisation() {
    let app = spawn_app().await;
    // No credentials, a wrong key, another organization, or an organisation that is not an id.
    let unauthorized = [
        vec![],
        vec![("x-api-key", app.key.clone()), ("organisation", app.other_org.to_string())],
        vec![("x-api-key", "odo_wrong".to_owned()), ("organisation", app.org.to_string())],
        vec![("x-api-key", "odo_wrong".to_owned())],
        vec![("organisation", "not-an-org".to_owned())],
    ];
    for headers in unauthorized {
        let (status, body) = app.send(Method::GET, "/aggregates", None, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(body["detail"].is_string());
    }
    // One of the two required headers missing: FastAPI's 422 for a missing header.
    for (headers, missing) in [
        (vec![("x-api-key", app.key.clone())], "organisation"),
        (vec![("organisation", app.org.to_string())], "x-api-key"),
    ] {
        let (status, body) = app.send(Method::GET, "/aggregates", None, &headers).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{headers:?}");
        assert_eq!(body["detail"][0]["loc"], json!(["header", missing]));
        assert_eq!(body["detail"][0]["type"], "missing");
    }
    let (status, _) = app.call(Method::GET, "/aggregates", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.call(Method::GET, "/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Not Found");
    // Raw metrics: get by id and by slug, and the slug rules.
    premises(&app).await;
    let (_, table) = app.call(Method::GET, "/rawmetric/slug/premises", None).await;
    let (status, by_id) =
        app.call(Method::GET, &format!("/rawmetric/{}", table["id"].as_str().unwrap()), None).await;
    assert_eq!((status, &by_id), (StatusCode::OK, &table));
    let (status, _) = app
        .call(
            Method::POST,
            "/rawmetric",
            Some(json!({"name": "x", "api_slug": "Bad Slug", "dataschema": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = app.call(Method::GET, "/rawmetric?api_slug__ilike=prem%25", None).await;
    assert_eq!(list["results"].as_array().unwrap().len(), 1);
}
