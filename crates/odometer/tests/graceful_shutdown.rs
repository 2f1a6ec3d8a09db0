//! Graceful shutdown (`spec/reliability.md`): SIGTERM while clients ingest. The server stops
//! accepting, answers the batches in flight, checkpoints, writes its snapshot and exits 0.
//! After a restart every acknowledged event is stored exactly once, and the usage index
//! answers the first question at once (it was loaded from the snapshot, not rebuilt), equal to
//! the reference engine over the stored events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use odometer_core::engine::compute_usage;
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use serde_json::{json, Value};

const CLIENTS: usize = 3;
const EVENTS_PER_BATCH: usize = 50;

fn event(client: usize, batch: usize, i: usize) -> Value {
    let ts = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        + chrono::TimeDelta::minutes(((batch * EVENTS_PER_BATCH + i) % 40_000) as i64);
    json!({
        "transaction_id": format!("c{client}-b{batch}-e{i}"),
        "code": "requests",
        "customer": format!("customer-{}", i % 2),
        "timestamp": ts.to_rfc3339(),
        "properties": {"units": format!("{}.{}", i % 7, client)}
    })
}

/// `odometer serve` on `port`, its standard error (the log, at `info`) written to `log`.
fn serve(data: &std::path::Path, port: u16, log: &std::path::Path) -> Child {
    support::odometer(data)
        .args(["--log", "info", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Every stored event, by transaction id (each must be stored once).
fn stored_events(
    http: &reqwest::blocking::Client,
    base: &str,
    key: &str,
) -> HashMap<String, Value> {
    let mut stored = HashMap::new();
    for e in support::list_events(http, base, key) {
        let tx = e["transaction_id"].as_str().unwrap().to_owned();
        assert!(stored.insert(tx.clone(), e).is_none(), "{tx} is stored twice");
    }
    stored
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "odometer did not exit within {limit:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_the_batches_in_flight_checkpoints_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let first_log = dir.path().join("first.log");
    let mut child = serve(&data, port, &first_log);
    let keys = support::printed_keys(&mut child);
    support::wait_healthy(&base, Duration::from_secs(60));
    let key = keys.recv_timeout(Duration::from_secs(5)).expect("the first start prints a key");
    let http =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let definition = json!({"code": "requests", "name": "Requests",
        "aggregation": {"type": "sum", "field": "units"}});
    let spec = parse_metric_spec(&definition).unwrap();
    let r = http.post(format!("{base}/v1/metrics")).bearer_auth(&key).json(&definition).send();
    assert_eq!(r.unwrap().status(), 201);
    for c in ["customer-0", "customer-1"] {
        let r = http
            .post(format!("{base}/v1/customers"))
            .bearer_auth(&key)
            .json(&json!({"external_id": c}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    // Clients send batches until the server stops answering. An answered batch must be a
    // complete 200 (never a 5xx while shutting down); a batch without an answer may or may
    // not be stored, and is kept aside.
    let acknowledged: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let unanswered: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let answered_batches = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, key, acknowledged, unanswered, answered_batches, stop) = (
                base.clone(),
                key.clone(),
                acknowledged.clone(),
                unanswered.clone(),
                answered_batches.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                for batch in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let events: Vec<Value> =
                        (0..EVENTS_PER_BATCH).map(|i| event(client, batch, i)).collect();
                    let answer = http
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&key)
                        .json(&json!({ "events": events }))
                        .send()
                        .ok();
                    let Some(response) = answer else {
                        let mut lost = unanswered.lock().unwrap();
                        for e in events {
                            lost.insert(e["transaction_id"].as_str().unwrap().to_owned(), e);
                        }
                        return;
                    };
                    assert_eq!(response.status(), 200, "an answered batch is a success");
                    let body: Value = response.json().unwrap();
                    let results = body["results"].as_array().unwrap();
                    assert_eq!(results.len(), EVENTS_PER_BATCH);
                    let mut acked = acknowledged.lock().unwrap();
                    for (e, result) in events.iter().zip(results) {
                        assert_eq!(result["status"], "accepted", "{result}");
                        acked.insert(e["transaction_id"].as_str().unwrap().to_owned(), e.clone());
                    }
                    answered_batches.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // SIGTERM once the clients are well under way.
    while answered_batches.load(Ordering::SeqCst) < 30 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status:?}");
    let log = std::fs::read_to_string(&first_log).unwrap();
    assert!(log.contains("shutting down"), "the signal was seen:\n{log}");
    assert!(log.contains("event store snapshot written"), "the snapshot was written:\n{log}");
    assert!(log.contains("odometer stopped"), "the server stopped cleanly:\n{log}");
    assert!(
        reqwest::blocking::get(format!("{base}/healthz")).is_err(),
        "nothing answers once the server has exited"
    );

    // Restart: every acknowledged event once; the only others are from unanswered batches.
    let mut child = serve(&data, port, &dir.path().join("second.log"));
    support::wait_healthy(&base, Duration::from_secs(60));
    let acknowledged = acknowledged.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    assert!(acknowledged.len() >= 30 * EVENTS_PER_BATCH);
    let stored = stored_events(&http, &base, &key);
    for (tx, sent) in &acknowledged {
        let kept = stored.get(tx).unwrap_or_else(|| panic!("acknowledged {tx} is lost"));
        assert_eq!(kept["properties"], sent["properties"], "{tx}");
    }
    for tx in stored.keys() {
        assert!(
            acknowledged.contains_key(tx) || unanswered.contains_key(tx),
            "{tx} is stored but was never sent"
        );
    }
    eprintln!(
        "graceful shutdown: {} events acknowledged, {} stored, {} in batches without an answer",
        acknowledged.len(),
        stored.len(),
        unanswered.len()
    );

    // The first question after the restart is answered from the usage index: its state came
    // back from the snapshot written at shutdown (after a crash it would be rebuilt first).
    for customer in ["customer-0", "customer-1"] {
        let events = support::sent_events_of(&stored, customer, "requests");
        let query = UsageQuery {
            from: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
            window: WindowSize::None,
            timezone: chrono_tz::UTC,
            group_by: Vec::new(),
            as_of: None,
            group_limit: DEFAULT_GROUP_LIMIT,
        };
        let expected = compute_usage(&spec, &events, &query).unwrap();
        let answer: Value = http
            .get(format!(
                "{base}/v1/usage?metric=requests&customer={customer}\
                 &from=2026-03-01T00:00:00Z&to=2026-05-01T00:00:00Z"
            ))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            answer["answered_from"].as_str().is_some_and(|p| p.starts_with("index")),
            "{customer}: answered from the index at once: {answer}"
        );
        assert_eq!(
            answer["windows"][0]["total"].as_str(),
            expected.windows[0].total.map(|d| d.to_string()).as_deref(),
            "{customer}: {answer}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
