//! The bad-input corpus (`spec/reliability.md` promise 2), over every route of every surface
//! (the inventory of `support/routes.rs`, checked against the routers): malformed JSON, wrong
//! types, missing and empty fields, huge strings, `1e400`, `NaN`, `-0`, deep nesting, invalid
//! UTF-8, control characters, oversize bodies, wrong content types, path traversal, NUL and
//! invalid UTF-8 in ids, SQL in codes and values, garbage query strings. Each answer must be a
//! 4xx in its surface's envelope (native `error.code`, Lago `status`/`error`, Meteroid
//! `code`/`message`, Zenskar `detail`); the status and code of every case are pinned in a
//! snapshot (`snapshots/bad_input_corpus__corpus.snap`). Afterwards the server still answers
//! and the stored data is exactly as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fmt::Write as _;

use serde_json::{json, Value};

/// A request body: raw bytes and the content type it is sent with.
struct Body {
    bytes: Vec<u8>,
    content_type: &'static str,
}

fn json_text(text: &str) -> Body {
    Body { bytes: text.as_bytes().to_vec(), content_type: "application/json" }
}

/// The body cases, by name.
fn body_cases() -> Vec<(&'static str, Body)> {
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut invalid_utf8 = br#"{"code": "calls", "name": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#"", "external_id": "x"}"#);
    let huge_string =
        format!(r#"{{"code": "{}", "external_id": "{}"}}"#, "c".repeat(1_100_000), "e");
    let oversize = format!(r#"{{"events": [{}]}}"#, vec![r#"{"pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#; 120_000].join(","));
    vec![
        ("malformed_json", json_text(r#"{"code": "calls", "name": "#)),
        ("not_an_object", json_text("[1, 2, 3]")),
        (
            "wrong_types",
            json_text(
                r#"{"code": 5, "name": [], "events": "x", "event": 7, "external_id": {}, "transaction_id": 1.5, "customer": false, "plan": 3, "aggregation": "sum", "properties": [1]}"#,
            ),
        ),
        ("missing_fields", json_text("{}")),
        (
            "empty_strings",
            json_text(
                r#"{"code": "", "name": "", "external_id": "", "transaction_id": "", "customer": "", "plan": "", "event_code": "", "events": []}"#,
            ),
        ),
        (
            "number_1e400",
            json_text(
                r#"{"code": 1e400, "amount": 1e400, "events": [{"transaction_id": "t", "code": "calls", "customer": "cust-a", "timestamp": 1e400}]}"#,
            ),
        ),
        ("nan", json_text(r#"{"code": NaN, "value": NaN}"#)),
        ("negative_zero", json_text(r#"{"code": -0, "name": -0, "external_id": -0, "limit": -0}"#)),
        ("deep_nesting", json_text(&nested)),
        ("invalid_utf8", Body { bytes: invalid_utf8, content_type: "application/json" }),
        (
            "control_characters",
            json_text(
                r#"{"code": "ca\u0000lls", "name": "\u001b[31mred\u0007", "external_id": "cust\u0000-x", "transaction_id": "t\u0000", "customer": "cust\u0008"}"#,
            ),
        ),
        (
            "sql_in_codes",
            json_text(
                r#"{"code": "calls'; DROP TABLE metrics;--", "name": "x", "event_code": "calls' OR '1'='1", "aggregation": {"type": "custom_sql", "query": "SELECT 1; DROP TABLE events"}, "external_id": "x'--", "plan": "pro' OR 1=1--"}"#,
            ),
        ),
        ("huge_string", json_text(&huge_string)),
        ("oversize_body", json_text(&oversize)),
        (
            "wrong_content_type",
            Body { bytes: br#"{"code": "calls"}"#.to_vec(), content_type: "text/plain" },
        ),
    ]
}

/// Path parameter values, by name (already percent-encoded where needed).
const PATH_CASES: &[(&str, &str)] = &[
    ("path_traversal", "..%2F..%2F..%2Fetc%2Fpasswd"),
    ("path_nul", "calls%00"),
    ("path_invalid_utf8", "%FF%FE"),
    ("path_sql", "calls'%20OR%20'1'%3D'1"),
];

/// A query string of garbage, for every route.
const QUERY_CASE: &str = "limit=-1&from=not-a-date&to=1e400&cursor=%FF%00&window=%00&as_of=NaN";

/// The error code of an answer in its surface's envelope, or why it is not one.
fn envelope_code(route: &str, status: u16, body: &Value) -> Result<String, String> {
    let dialect = route.trim_start_matches('/').split('/').next().unwrap_or("");
    match dialect {
        "lago" => {
            if body["status"] != status || !body["error"].is_string() {
                return Err(format!("not Lago's envelope: {body}"));
            }
            // Lago's 400s have no code: the error's kind before its detail.
            let error = body["error"].as_str().unwrap();
            Ok(body["code"].as_str().unwrap_or_else(|| error.split(':').next().unwrap()).to_owned())
        }
        "meteroid" => match (body["code"].as_str(), body["message"].as_str()) {
            (Some(code), Some(_)) => Ok(code.to_owned()),
            _ => Err(format!("not Meteroid's envelope: {body}")),
        },
        "zenskar" => match &body["detail"] {
            Value::String(_) => Ok("detail".to_owned()),
            Value::Array(errors) if !errors.is_empty() => {
                Ok(format!("detail:{}", errors[0]["type"].as_str().unwrap_or("?")))
            }
            _ => Err(format!("not Zenskar's envelope: {body}")),
        },
        _ => match (body["error"]["code"].as_str(), body["results"].as_array()) {
            (Some(code), _) if body["error"]["message"].is_string() => Ok(code.to_owned()),
            // The ingest routes answer a batch: each event's rejection in the same shape.
            (None, Some(results)) => match results.first().map(|r| &r["error"]) {
                Some(error) if error["code"].is_string() && error["message"].is_string() => {
                    Ok(format!("results:{}", error["code"].as_str().unwrap()))
                }
                _ => Err(format!("a batch answer without rejections: {body}")),
            },
            _ => Err(format!("not the native envelope: {body}")),
        },
    }
}

/// Everything the organization has stored, to compare before and after the corpus.
async fn stored(http: &reqwest::Client, base: &str, key: &str) -> Value {
    let mut all = serde_json::Map::new();
    for path in [
        "/v1/metrics?archived=true",
        "/v1/customers",
        "/v1/plans",
        "/v1/subscriptions",
        "/v1/events",
    ] {
        let body: Value = http
            .get(format!("{base}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.insert(path.to_owned(), body);
    }
    Value::Object(all)
}

#[tokio::test]
async fn every_route_answers_bad_input_with_a_4xx_in_its_envelope() {
    let stores = support::Stores::new().await;
    let org = stores.organization("acme").await;
    let (key, org_id) = (org.secret.clone(), org.organization.id.to_string());
    let addr = support::serve(odometer_api::app(stores.state())).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/v1/metrics",
            json!({"code": "calls", "name": "Calls", "aggregation": {"type": "count"}}),
        ),
        ("/v1/customers", json!({"external_id": "cust-a"})),
        (
            "/v1/events",
            json!({"events": [{"transaction_id": "t1", "code": "calls",
            "customer": "cust-a", "timestamp": "2026-03-01T00:00:00Z"}]}),
        ),
    ] {
        let r =
            http.post(format!("{base}{path}")).bearer_auth(&key).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    let openapi: Value =
        http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    support::routes::assert_inventory_is_complete(&openapi);
    let before = stored(&http, &base, &key).await;

    let send = |method: &str, url: String, body: Option<&Body>| {
        let mut request = http
            .request(method.parse().unwrap(), url)
            .bearer_auth(&key)
            .header("x-api-key", &key)
            .header("organisation", &org_id);
        if let Some(body) = body {
            request = request.header("content-type", body.content_type).body(body.bytes.clone());
        }
        request.send()
    };
    let bodies = body_cases();
    let mut table = String::new();
    let mut failures = Vec::new();
    let mut per_dialect: std::collections::BTreeMap<&str, usize> = Default::default();
    for (method, route, _) in support::routes::inventory() {
        if route == "/healthz" {
            continue;
        }
        // The parameters a case does not target name nothing that exists: the case tests the
        // input, never a real operation.
        let plain = route
            .split('/')
            .map(|s| if s.starts_with('{') { "nothing-here" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let mut cases: Vec<(String, String, Option<&Body>)> = Vec::new();
        cases.push(("query_garbage".into(), format!("{base}{plain}?{QUERY_CASE}"), None));
        if route.contains('{') {
            for (name, value) in PATH_CASES {
                let path = route
                    .split('/')
                    .map(|s| if s.starts_with('{') { *value } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                cases.push(((*name).into(), format!("{base}{path}"), None));
            }
        }
        if matches!(method, "POST" | "PUT" | "PATCH") {
            for (name, body) in &bodies {
                cases.push(((*name).into(), format!("{base}{plain}"), Some(body)));
            }
        }
        let dialect = route.trim_start_matches('/').split('/').next().unwrap_or("");
        let dialect = if dialect == "v1" { "native" } else { dialect };
        for (case, url, body) in cases {
            let response = send(method, url, body).await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            *per_dialect.entry(dialect).or_default() += 1;
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            // A read that takes no such parameters ignores them (and changes nothing).
            let ignored = method == "GET" && case == "query_garbage" && status == 200;
            let code = match envelope_code(route, status, &parsed) {
                Ok(code) => code,
                Err(_) if ignored => "ignored".into(),
                Err(why) => {
                    failures.push(format!("{method} {route} {case}: {status} {why}"));
                    "-".into()
                }
            };
            if !(400..500).contains(&status) && !ignored {
                failures
                    .push(format!("{method} {route} {case}: {status} is not a 4xx: {text:.300}"));
            }
            writeln!(table, "{method} {route} {case}: {status} {code}").unwrap();
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("bad-input corpus: {per_dialect:?} cases");

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server still answers");
    assert_eq!(stored(&http, &base, &key).await, before, "stored data is unchanged");
    insta::assert_snapshot!("corpus", table);
}
