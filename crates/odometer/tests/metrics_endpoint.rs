//! `GET /metrics` (Prometheus text format) on `--metrics-listen`: after real traffic through
//! a real `odometer serve`, the scrape parses line by line and every family an operator needs
//! is there with the numbers the traffic implies: requests by dialect, route, method and
//! status with latency histograms, events by outcome and rejection code, append batches and
//! commit latency, usage answers by path, store sizes and process memory. The API's own port
//! does not serve it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::prometheus::{parse, value};

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[test]
fn metrics_show_every_family_after_real_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, metrics_port) = (support::free_port(), support::free_port());
    let base = format!("http://127.0.0.1:{port}");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut child = support::odometer(&data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let keys = support::printed_keys(&mut child);
    let key = keys.recv_timeout(Duration::from_secs(60)).expect("the first start prints a key");
    support::wait_healthy(&base, Duration::from_secs(60));
    let http = reqwest::blocking::Client::new();

    let metric = json!({"code": "calls", "name": "Calls", "aggregation": {"type": "count"}});
    let r = http.post(format!("{base}/v1/metrics")).bearer_auth(&key).json(&metric).send();
    assert_eq!(r.unwrap().status(), 201);
    let r = http
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&key)
        .json(&json!({"external_id": "acme"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let event = |i: usize| {
        json!({"transaction_id": format!("t{i}"), "code": "calls", "customer": "acme",
            "timestamp": format!("2026-03-01T00:{:02}:00Z", i % 60)})
    };
    // 20 new events in two batches, then one duplicate and one with a bad timestamp.
    for batch in 0..2 {
        let events: Vec<Value> = (batch * 10..batch * 10 + 10).map(event).collect();
        let r = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&json!({ "events": events }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut bad = event(99);
    bad["timestamp"] = json!("yesterday-ish");
    let response = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(&key)
        .json(&json!({ "events": [event(3), bad] }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 422, "a batch with a rejected event");
    let answer: Value = response.json().unwrap();
    assert_eq!(answer["results"][0]["status"], "duplicate", "{answer}");
    assert_eq!(answer["results"][1]["status"], "rejected", "{answer}");
    let rejection = answer["results"][1]["error"]["code"]
        .as_str()
        .or_else(|| answer["results"][1]["code"].as_str())
        .unwrap_or_else(|| panic!("the rejection names a code: {answer}"))
        .to_owned();

    // Usage until the index answers (the new metric's state is built in the background).
    let url = format!(
        "{base}/v1/usage?metric=calls&customer=acme&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut usage_answers = 0.0;
    loop {
        let answer: Value = http.get(&url).bearer_auth(&key).send().unwrap().json().unwrap();
        usage_answers += 1.0;
        assert_eq!(answer["windows"][0]["total"], "20", "{answer}");
        if answer["answered_from"] == "index" {
            break;
        }
        assert!(Instant::now() < deadline, "the index never answered: {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Other surfaces: a Lago request without a key, a path no route matches.
    let r = http.get(format!("{base}/lago/api/v1/billable_metrics")).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{base}/no/such/route/../42")).bearer_auth(&key).send().unwrap();
    assert_eq!(r.status(), 404);
    // Not on the API's port.
    let r = http.get(format!("{base}/metrics")).bearer_auth(&key).send().unwrap();
    assert_eq!(r.status(), 404, "/metrics is only on --metrics-listen");

    let response = http.get(&metrics_url).send().unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().unwrap();
    let samples = parse(&text);

    let requests = "odometer_http_requests_total";
    let events_ok = [("dialect", "native"), ("route", "/v1/events"), ("method", "POST")];
    assert_eq!(value(&samples, requests, &[&events_ok[..], &[("status", "200")]].concat()), 2.0);
    assert_eq!(value(&samples, requests, &[&events_ok[..], &[("status", "422")]].concat()), 1.0);
    assert_eq!(
        value(
            &samples,
            requests,
            &[("route", "/v1/metrics"), ("method", "POST"), ("status", "201")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, requests, &[("dialect", "lago"), ("method", "GET"), ("status", "401")]),
        1.0,
        "the Lago request, by its dialect"
    );
    // The unknown path and /metrics asked on the API's port.
    assert_eq!(value(&samples, requests, &[("route", "unmatched"), ("status", "404")]), 2.0);
    assert_eq!(
        value(
            &samples,
            "odometer_http_request_duration_seconds_count",
            &[("route", "/v1/events"), ("dialect", "native")]
        ),
        3.0
    );
    assert!(
        samples.iter().any(|s| s.name == "odometer_http_request_duration_seconds_bucket"
            && s.labels.get("le").is_some_and(|le| le == "+Inf")),
        "latency is a histogram"
    );

    assert_eq!(value(&samples, "odometer_events_total", &[("outcome", "accepted")]), 20.0);
    assert_eq!(value(&samples, "odometer_events_total", &[("outcome", "duplicate")]), 1.0);
    assert_eq!(value(&samples, "odometer_events_total", &[("outcome", "rejected")]), 1.0);
    assert_eq!(value(&samples, "odometer_events_rejected_total", &[("code", &rejection)]), 1.0);

    // Two appends stored events (the third stored nothing new).
    assert_eq!(value(&samples, "odometer_append_batch_events_count", &[]), 2.0);
    assert_eq!(value(&samples, "odometer_append_batch_events_sum", &[]), 20.0);
    assert_eq!(value(&samples, "odometer_append_commit_seconds_count", &[]), 2.0);

    let by_path: f64 =
        samples.iter().filter(|s| s.name == "odometer_usage_answers_total").map(|s| s.value).sum();
    assert_eq!(by_path, usage_answers, "every usage answer counted once, by its path");
    assert!(value(&samples, "odometer_usage_answers_total", &[("path", "index")]) >= 1.0);

    assert!(value(&samples, "odometer_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&samples, "odometer_store_bytes", &[("store", "catalog")]) > 0.0);
    assert!(value(&samples, "odometer_store_bytes", &[("store", "events")]) > 0.0);

    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn metrics_must_not_share_the_api_address() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = support::run(
        support::odometer(dir.path()).args([
            "serve",
            "--listen",
            "127.0.0.1:39123",
            "--metrics-listen",
            "127.0.0.1:39123",
        ]),
        None,
    );
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("metrics_listen must differ from listen"), "{stderr}");
}

#[test]
fn a_bench_run_leaves_what_metrics_shows_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let scraped = dir.path().join("bench.prom");
    let (status, stdout, stderr) = support::run(
        support::odometer(dir.path()).args([
            "bench",
            "--events",
            "20000",
            "--customers",
            "200",
            "--repeats",
            "2",
            "--output",
            dir.path().join("bench.json").to_str().unwrap(),
            "--metrics-output",
            scraped.to_str().unwrap(),
        ]),
        None,
    );
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("no snapshot written"),
        "the store closed after its directory went: {stderr}"
    );
    let samples = parse(&std::fs::read_to_string(&scraped).unwrap());
    for family in [
        "odometer_http_requests_total",
        "odometer_http_request_duration_seconds_count",
        "odometer_events_total",
        "odometer_append_batch_events_count",
        "odometer_append_requests_merged_count",
        "odometer_append_commit_seconds_count",
        "odometer_usage_answers_total",
        "odometer_store_bytes",
        "odometer_process_resident_memory_bytes",
        "odometer_process_peak_resident_memory_bytes",
    ] {
        assert!(samples.iter().any(|s| s.name == family), "{family} is missing");
    }
    // The numbers are the run's: 20 batches of 1,000 new events, each answered 200.
    assert_eq!(value(&samples, "odometer_events_total", &[("outcome", "accepted")]), 20_000.0);
    let ingested = value(
        &samples,
        "odometer_http_requests_total",
        &[("route", "/v1/events"), ("method", "POST"), ("status", "200")],
    );
    assert_eq!(ingested, 20.0);
    assert!(
        value(&samples, "odometer_usage_answers_total", &[("path", "index"), ("reason", "")]) > 0.0
    );
}
