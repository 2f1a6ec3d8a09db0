//! The crash test (reliability promise 1): client threads ingest with retries while the real
//! server process is killed with SIGKILL at random moments, round after round. Afterwards
//! every acknowledged event is stored exactly once, nothing else is, and usage equals the
//! reference engine's answer over the acknowledged events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use rand::Rng;
use serde_json::{json, Value};
use support::spawn_server;

const CLIENTS: usize = 3;
/// Each client sends at least this many batches, and goes on until the killer is done.
const MIN_BATCHES_PER_CLIENT: usize = 20;
const EVENTS_PER_BATCH: usize = 25;
const KILLS: usize = 8;

fn wait_healthy(base: &str) {
    support::wait_healthy(base, Duration::from_secs(60));
}

fn event(client: usize, batch: usize, i: usize) -> Value {
    let minute = ((client * 100_000 + batch * EVENTS_PER_BATCH + i) % 40_000) as i64;
    let ts =
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::minutes(minute);
    json!({
        "transaction_id": format!("c{client}-b{batch}-e{i}"),
        "code": "requests",
        "customer": format!("customer-{}", (batch + i) % 2),
        "timestamp": ts.to_rfc3339(),
        "properties": {"units": format!("{}.{}", i % 7, client), "region": if i.is_multiple_of(3) { "eu" } else { "us" }}
    })
}

#[test]
fn crash_test_sigkill_during_ingest_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let (child, keys) = spawn_server(&data, port);
    wait_healthy(&base);
    let key = keys.recv_timeout(Duration::from_secs(5)).expect("first start prints a key");
    let http =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let definition = json!({
        "code": "requests", "name": "Requests", "aggregation": {"type": "sum", "field": "units"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"]}
    });
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

    let server = Arc::new(Mutex::new(child));
    let done = Arc::new(AtomicBool::new(false));
    // transaction id -> how the server answered it (accepted or duplicate), once acknowledged.
    let acknowledged: Arc<Mutex<HashMap<String, Value>>> = Arc::default();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, key, acknowledged, done) =
                (base.clone(), key.clone(), acknowledged.clone(), done.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut retries = 0usize;
                let mut batch = 0;
                while batch < MIN_BATCHES_PER_CLIENT || !done.load(Ordering::SeqCst) {
                    batch += 1;
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
                }
                (batch, retries)
            })
        })
        .collect();

    // The killer: SIGKILL at random moments, then restart on the same port.
    let killer = {
        let (server, done, data, base) = (server.clone(), done.clone(), data.clone(), base.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            let mut kills = 0;
            while kills < KILLS {
                std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
                let mut child = server.lock().unwrap();
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                let (restarted, _) = spawn_server(&data, port);
                *child = restarted;
                drop(child);
                wait_healthy(&base);
            }
            done.store(true, Ordering::SeqCst);
            kills
        })
    };

    let kills = killer.join().unwrap();
    let (batches, retries) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |(b, r), (b2, r2)| (b + b2, r + r2));
    assert_eq!(kills, KILLS);
    eprintln!("crash test: {kills} kills, {batches} batches, {retries} retried requests");

    // One more hard kill and restart before checking, so the check reads recovered state.
    {
        let mut child = server.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        *child = spawn_server(&data, port).0;
    }
    wait_healthy(&base);

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), batches * EVENTS_PER_BATCH);

    // Every stored event, page by page: each acknowledged one exactly once, nothing else.
    let mut stored: HashMap<String, Value> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http.get(url).bearer_auth(&key).send().unwrap().json().unwrap();
        for e in page["data"].as_array().unwrap() {
            let tx = e["transaction_id"].as_str().unwrap().to_owned();
            assert!(stored.insert(tx.clone(), e.clone()).is_none(), "{tx} is stored twice");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(stored.len(), acknowledged.len(), "stored events differ from acknowledged ones");
    for (tx, sent) in &acknowledged {
        let kept = stored.get(tx).unwrap_or_else(|| panic!("acknowledged {tx} is lost"));
        assert_eq!(kept["properties"], sent["properties"], "{tx}");
    }

    // Usage equals the reference engine over the acknowledged set.
    let spec = parse_metric_spec(&definition).unwrap();
    let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let query = UsageQuery {
        from,
        to,
        window: WindowSize::Day,
        timezone: chrono_tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    for customer in ["customer-0", "customer-1"] {
        let events: Vec<StoredEvent> = acknowledged
            .values()
            .filter(|e| e["customer"] == customer)
            .enumerate()
            .map(|(i, e)| StoredEvent {
                event: Event {
                    transaction_id: e["transaction_id"].as_str().unwrap().to_owned(),
                    code: "requests".into(),
                    customer: customer.into(),
                    timestamp: chrono::DateTime::parse_from_rfc3339(
                        e["timestamp"].as_str().unwrap(),
                    )
                    .unwrap()
                    .into(),
                    properties: e["properties"].as_object().unwrap().clone(),
                },
                sequence: i as u64 + 1,
                ingested_at: from,
            })
            .collect();
        let expected = compute_usage(&spec, &events, &query).unwrap();
        let url = format!(
            "{base}/v1/usage?metric=requests&customer={customer}&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z&window=day"
        );
        let answer: Value = http.get(url).bearer_auth(&key).send().unwrap().json().unwrap();
        let windows = answer["windows"].as_array().unwrap();
        assert_eq!(windows.len(), expected.windows.len());
        for (got, want) in windows.iter().zip(&expected.windows) {
            assert_eq!(
                got["total"].as_str(),
                want.total.map(|d| d.to_string()).as_deref(),
                "{customer} {}",
                got["from"]
            );
            let values: Vec<Option<&str>> =
                got["groups"].as_array().unwrap().iter().map(|g| g["value"].as_str()).collect();
            let want_values: Vec<Option<String>> =
                want.groups.iter().map(|g| g.value.map(|d| d.to_string())).collect();
            assert_eq!(
                values,
                want_values.iter().map(|v| v.as_deref()).collect::<Vec<_>>(),
                "{customer}"
            );
        }
    }
    let mut child = server.lock().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
