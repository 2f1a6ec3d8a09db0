//! The crash test (reliability promise 1): client threads ingest with retries while the real
//! server process is killed with SIGKILL at a random moment, round after round. After every
//! restart (the clients first finish the batch they were retrying) every acknowledged event is
//! stored exactly once, nothing else is, and usage, answered from the usage index once its
//! state is rebuilt, equals the reference engine's answer over the acknowledged events, on the
//! 15-minute grid and off it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use odometer_core::engine::compute_usage;
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::MetricSpec;
use rand::Rng;
use serde_json::{json, Value};
use support::spawn_server;

const CLIENTS: usize = 3;
const EVENTS_PER_BATCH: usize = 25;
const KILLS: usize = 8;

fn wait_healthy(base: &str) {
    support::wait_healthy(base, Duration::from_secs(60));
}

fn event(client: usize, batch: usize, i: usize) -> Value {
    let minute = ((client * 100_000 + batch * EVENTS_PER_BATCH + i) % 40_000) as i64;
    let ts = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        + chrono::TimeDelta::minutes(minute)
        + chrono::TimeDelta::seconds((i * 7 % 60) as i64);
    json!({
        "transaction_id": format!("c{client}-b{batch}-e{i}"),
        "code": "requests",
        "customer": format!("customer-{}", (batch + i) % 2),
        "timestamp": ts.to_rfc3339(),
        "properties": {"units": format!("{}.{}", i % 7, client), "region": if i.is_multiple_of(3) { "eu" } else { "us" }}
    })
}

/// The questions asked after every restart: March by day (on the grid) and a period whose
/// edges are not (read from the events).
fn queries() -> Vec<(UsageQuery, String)> {
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
    [
        ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", WindowSize::Day),
        ("2026-03-02T10:07:00Z", "2026-03-20T23:52:13Z", WindowSize::None),
    ]
    .into_iter()
    .map(|(from, to, window)| {
        let query = UsageQuery {
            from: at(from),
            to: at(to),
            window,
            timezone: chrono_tz::UTC,
            group_by: Vec::new(),
            as_of: None,
            group_limit: DEFAULT_GROUP_LIMIT,
        };
        (query, format!("from={from}&to={to}&window={}", window.as_str()))
    })
    .collect()
}

/// Every stored event, page by page: each acknowledged one exactly once, nothing else.
fn check_stored(
    http: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    acknowledged: &HashMap<String, Value>,
    what: &str,
) {
    let mut stored: HashMap<String, Value> = HashMap::new();
    for e in support::list_events(http, base, key) {
        let tx = e["transaction_id"].as_str().unwrap().to_owned();
        assert!(stored.insert(tx.clone(), e).is_none(), "{what}: {tx} is stored twice");
    }
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "{what}: stored events differ from acknowledged ones"
    );
    for (tx, sent) in acknowledged {
        let kept = stored.get(tx).unwrap_or_else(|| panic!("{what}: acknowledged {tx} is lost"));
        assert_eq!(kept["properties"], sent["properties"], "{what}: {tx}");
    }
}

/// Usage of each customer, once the index answers it, against the reference engine over the
/// acknowledged events.
fn check_usage(
    http: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    spec: &MetricSpec,
    acknowledged: &HashMap<String, Value>,
    what: &str,
) {
    for customer in ["customer-0", "customer-1"] {
        let events = support::sent_events_of(acknowledged, customer, "requests");
        for (query, params) in queries() {
            let expected = compute_usage(spec, &events, &query).unwrap();
            let url = format!("{base}/v1/usage?metric=requests&customer={customer}&{params}");
            // After a crash the state is rebuilt from the stored events in the background;
            // until then the events answer (and must agree too).
            let deadline = Instant::now() + Duration::from_secs(60);
            let answer = loop {
                let answer: Value = http.get(&url).bearer_auth(key).send().unwrap().json().unwrap();
                compare(&answer, &expected, &format!("{what}, {customer}, {params}"));
                if answer["answered_from"].as_str().is_some_and(|p| p.starts_with("index")) {
                    break answer;
                }
                assert!(Instant::now() < deadline, "{what}: the index did not answer: {answer}");
                std::thread::sleep(Duration::from_millis(20));
            };
            compare(&answer, &expected, &format!("{what}, {customer}, {params}, from the index"));
        }
    }
}

fn compare(answer: &Value, expected: &odometer_core::usage::UsageResult, what: &str) {
    let windows = answer["windows"].as_array().unwrap_or_else(|| panic!("{what}: {answer}"));
    assert_eq!(windows.len(), expected.windows.len(), "{what}");
    for (got, want) in windows.iter().zip(&expected.windows) {
        assert_eq!(
            got["total"].as_str(),
            want.total.map(|d| d.to_string()).as_deref(),
            "{what} {}",
            got["from"]
        );
        let values: Vec<Option<&str>> =
            got["groups"].as_array().unwrap().iter().map(|g| g["value"].as_str()).collect();
        let want_values: Vec<Option<String>> =
            want.groups.iter().map(|g| g.value.map(|d| d.to_string())).collect();
        assert_eq!(values, want_values.iter().map(|v| v.as_deref()).collect::<Vec<_>>(), "{what}");
    }
}

#[test]
fn crash_test_sigkill_during_ingest_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let (mut child, keys) = spawn_server(&data, port);
    wait_healthy(&base);
    let key = keys.recv_timeout(Duration::from_secs(5)).expect("first start prints a key");
    let http =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let definition = json!({
        "code": "requests", "name": "Requests", "aggregation": {"type": "sum", "field": "units"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"]}
    });
    let spec = parse_metric_spec(&definition).unwrap();
    let created =
        http.post(format!("{base}/v1/metrics")).bearer_auth(&key).json(&definition).send().unwrap();
    assert_eq!(created.status(), 201);
    for c in ["customer-0", "customer-1"] {
        let r = http
            .post(format!("{base}/v1/customers"))
            .bearer_auth(&key)
            .json(&json!({"external_id": c}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    // transaction id -> the event, once acknowledged (accepted or duplicate).
    let acknowledged: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    // Each client's next batch number, kept across rounds.
    let next_batch: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let mut rng = rand::rng();
    let (mut batches, mut retries) = (0usize, 0usize);
    for round in 1..=KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (base, key, acknowledged, stop, next_batch) = (
                    base.clone(),
                    key.clone(),
                    acknowledged.clone(),
                    stop.clone(),
                    next_batch.clone(),
                );
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let (mut sent, mut retries) = (0usize, 0usize);
                    while !stop.load(Ordering::SeqCst) {
                        let batch = next_batch[client].fetch_add(1, Ordering::SeqCst);
                        let events: Vec<Value> =
                            (0..EVENTS_PER_BATCH).map(|i| event(client, batch, i)).collect();
                        // Retry the same batch until the server answers it: the promise is that
                        // retries never double-count.
                        loop {
                            let answer = http
                                .post(format!("{base}/v1/events"))
                                .bearer_auth(&key)
                                .json(&json!({ "events": events }))
                                .send()
                                .ok()
                                .filter(|r| r.status().is_success())
                                .and_then(|r| r.json::<Value>().ok());
                            let Some(answer) = answer else {
                                retries += 1;
                                std::thread::sleep(Duration::from_millis(30));
                                continue;
                            };
                            let results = answer["results"].as_array().unwrap();
                            assert_eq!(results.len(), EVENTS_PER_BATCH);
                            let mut acked = acknowledged.lock().unwrap();
                            for (event, result) in events.iter().zip(results) {
                                let status = result["status"].as_str().unwrap();
                                assert!(status == "accepted" || status == "duplicate", "{result}");
                                acked.insert(
                                    event["transaction_id"].as_str().unwrap().to_owned(),
                                    event.clone(),
                                );
                            }
                            break;
                        }
                        sent += 1;
                    }
                    (sent, retries)
                })
            })
            .collect();
        // SIGKILL at a random moment of the ingest, restart on the same port, let the clients
        // go on a little against the new process, then stop them.
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        child.kill().unwrap();
        child.wait().unwrap();
        child = spawn_server(&data, port).0;
        wait_healthy(&base);
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            let (sent, retried) = client.join().unwrap();
            batches += sent;
            retries += retried;
        }
        let acked = acknowledged.lock().unwrap().clone();
        let what = format!("after kill {round}");
        check_stored(&http, &base, &key, &acked, &what);
        check_usage(&http, &base, &key, &spec, &acked, &what);
    }
    eprintln!("crash test: {KILLS} kills, {batches} batches, {retries} retried requests");

    // One more hard kill and restart with nothing in flight, so the check reads recovered state.
    child.kill().unwrap();
    child.wait().unwrap();
    child = spawn_server(&data, port).0;
    wait_healthy(&base);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), batches * EVENTS_PER_BATCH);
    check_stored(&http, &base, &key, &acknowledged, "after the last kill");
    check_usage(&http, &base, &key, &spec, &acknowledged, "after the last kill");
    let _ = child.kill();
    let _ = child.wait();
}
