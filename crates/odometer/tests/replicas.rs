//! Server mode with two replicas (reliability promise 1): two real `odometer serve` processes
//! on different ports share one PostgreSQL catalog and one ClickHouse event store. Client
//! threads send overlapping batches with retries to both (a retry goes to the other replica;
//! some batches go to both at once), one replica is SIGKILLed and restarted during the run.
//! Afterwards every acknowledged event is stored exactly once and nothing else is, a changed
//! body under a stored identity is `transaction_id_conflict` on either replica, and usage
//! equals the reference engine on the acknowledged set, asked through either replica.
//!
//! Needs the servers `scripts/servers start` runs (ODOMETER_TEST_POSTGRES_URL,
//! ODOMETER_TEST_CLICKHOUSE_URL); fails, and says so, without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::metric_input::parse_metric_spec;
use odometer_core::usage::{UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};
use serde_json::{json, Value};
use sqlx::Connection;

const CLIENTS: usize = 4;
const BATCHES_PER_CLIENT: usize = 30;
const EVENTS_PER_BATCH: usize = 20;
/// Keys are drawn from this many, so batches of different clients overlap.
const KEYS: usize = 1200;

fn with_database(url: &str, name: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// A PostgreSQL database for the catalog (and the ledger) and a ClickHouse database name,
/// dropped at the end.
struct Databases {
    name: String,
    postgres_admin: String,
    clickhouse_admin: String,
}

impl Databases {
    fn create() -> Self {
        let postgres_admin = support::server_url("ODOMETER_TEST_POSTGRES_URL");
        let clickhouse_admin = support::server_url("ODOMETER_TEST_CLICKHOUSE_URL");
        let name = format!("odometer_replicas_{:016x}", rand::random::<u64>());
        postgres(&postgres_admin, &format!("CREATE DATABASE {name}"));
        Self { name, postgres_admin, clickhouse_admin }
    }

    fn catalog(&self) -> String {
        with_database(&self.postgres_admin, &self.name)
    }

    fn events(&self) -> String {
        with_database(&self.clickhouse_admin, &self.name)
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        postgres(
            &self.postgres_admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        let endpoint = reqwest::Url::parse(&self.clickhouse_admin).unwrap();
        let http =
            format!("http://{}:{}/", endpoint.host_str().unwrap(), endpoint.port().unwrap_or(8123));
        let _ = reqwest::blocking::Client::new()
            .post(http)
            .body(format!("DROP DATABASE IF EXISTS {}", self.name))
            .send();
    }
}

fn postgres(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
    });
}

/// `odometer serve` in server mode on `port`; the receiver gets the key printed on the very
/// first start of the shared catalog.
fn spawn_replica(
    dir: &Path,
    port: u16,
    databases: &Databases,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = support::odometer(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--catalog", &databases.catalog(), "--events", &databases.events()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let keys = support::printed_keys(&mut child);
    (child, keys)
}

/// Key `k`'s event: the same content every time it is sent.
fn event(k: usize) -> Value {
    let ts = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        + chrono::TimeDelta::minutes((k * 37 % 40_000) as i64)
        + chrono::TimeDelta::microseconds((k * 7919 % 1_000_000) as i64);
    let region = ["eu", "us"][k % 2];
    json!({
        "transaction_id": format!("k{k}"),
        "code": "requests",
        "customer": format!("customer-{}", k % 3),
        "timestamp": ts.to_rfc3339(),
        "properties": {"units": format!("{}.{}", k % 11, k % 10), "region": region}
    })
}

/// Sends `events` to `bases[first]`, then to the other replica on each failure, until one
/// answers: the per-event answers.
fn send_until_answered(
    http: &reqwest::blocking::Client,
    bases: &[String; 2],
    first: usize,
    key: &str,
    events: &[Value],
    retries: &AtomicUsize,
) -> Vec<Value> {
    let mut target = first;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = http
            .post(format!("{}/v1/events", bases[target]))
            .bearer_auth(key)
            .json(&json!({ "events": events }))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json::<Value>().ok());
        if let Some(answer) = answer {
            return answer["results"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "no replica answered for two minutes");
        retries.fetch_add(1, Ordering::Relaxed);
        target = 1 - target;
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stored_event(e: &Value, sequence: u64) -> StoredEvent {
    StoredEvent {
        event: Event {
            transaction_id: e["transaction_id"].as_str().unwrap().to_owned(),
            code: "requests".into(),
            customer: e["customer"].as_str().unwrap().to_owned(),
            timestamp: chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap())
                .unwrap()
                .into(),
            properties: e["properties"].as_object().unwrap().clone(),
        },
        sequence,
        ingested_at: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
    }
}

#[test]
fn two_replicas_store_and_count_each_acknowledged_event_once() {
    let databases = Databases::create();
    let dir = tempfile::tempdir().unwrap();
    let ports = [support::free_port(), support::free_port()];
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));
    // The first replica creates the organization (and prints its key); the second finds it.
    let (a, keys) = spawn_replica(&dir.path().join("a"), ports[0], &databases);
    support::wait_healthy(&bases[0], Duration::from_secs(60));
    let key = keys.recv_timeout(Duration::from_secs(10)).expect("the first start prints a key");
    let (b, _) = spawn_replica(&dir.path().join("b"), ports[1], &databases);
    support::wait_healthy(&bases[1], Duration::from_secs(60));
    let replicas = Arc::new(Mutex::new([Some(a), Some(b)]));

    let http =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let definition = json!({
        "code": "requests", "name": "Requests", "aggregation": {"type": "sum", "field": "units"},
        "segmentation": {"type": "single", "key": "region", "values": ["eu", "us"]}
    });
    let spec = parse_metric_spec(&definition).unwrap();
    let r = http
        .post(format!("{}/v1/metrics", bases[0]))
        .bearer_auth(&key)
        .json(&definition)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    for c in 0..3 {
        let r = http
            .post(format!("{}/v1/customers", bases[1]))
            .bearer_auth(&key)
            .json(&json!({"external_id": format!("customer-{c}")}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "customers through the other replica");
    }

    // transaction id -> the event, once acknowledged (accepted or duplicate).
    let acknowledged: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (bases, key, acknowledged, retries, progress) = (
                bases.clone(),
                key.clone(),
                acknowledged.clone(),
                retries.clone(),
                progress.clone(),
            );
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                for batch in 0..BATCHES_PER_CLIENT {
                    let events: Vec<Value> = (0..EVENTS_PER_BATCH)
                        .map(|i| event((client * 131 + batch * 53 + i * 17) % KEYS))
                        .collect();
                    let first = (client + batch) % 2;
                    // Every third batch goes to both replicas at once.
                    let answers: Vec<Vec<Value>> = if batch % 3 == 0 {
                        std::thread::scope(|scope| {
                            let twins: Vec<_> = [first, 1 - first]
                                .map(|target| {
                                    let (http, bases, key, events, retries) =
                                        (&http, &bases, &key, &events, &retries);
                                    scope.spawn(move || {
                                        send_until_answered(
                                            http, bases, target, key, events, retries,
                                        )
                                    })
                                })
                                .into_iter()
                                .collect();
                            twins.into_iter().map(|t| t.join().unwrap()).collect()
                        })
                    } else {
                        vec![send_until_answered(&http, &bases, first, &key, &events, &retries)]
                    };
                    let mut acked = acknowledged.lock().unwrap();
                    for results in answers {
                        for (event, result) in events.iter().zip(&results) {
                            let status = result["status"].as_str().unwrap();
                            assert!(status == "accepted" || status == "duplicate", "{result}");
                            let tx = event["transaction_id"].as_str().unwrap().to_owned();
                            acked.insert(tx, event.clone());
                        }
                    }
                    drop(acked);
                    progress.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // SIGKILL the first replica once a third of the batches are in, restart it a moment later
    // on the same port, while the clients keep going (their retries reach the other one).
    let killer = {
        let (replicas, progress, done, databases_catalog, databases_events, dir) = (
            replicas.clone(),
            progress.clone(),
            done.clone(),
            databases.catalog(),
            databases.events(),
            dir.path().join("a"),
        );
        let base = bases[0].clone();
        std::thread::spawn(move || {
            while progress.load(Ordering::SeqCst) < CLIENTS * BATCHES_PER_CLIENT / 3 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut child = replicas.lock().unwrap()[0].take().unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let restarted = support::odometer(&dir)
                .args(["serve", "--listen", &base.replace("http://", "")])
                .args(["--catalog", &databases_catalog, "--events", &databases_events])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            replicas.lock().unwrap()[0] = Some(restarted);
            support::wait_healthy(&base, Duration::from_secs(60));
            done.store(true, Ordering::SeqCst);
        })
    };
    for client in clients {
        client.join().unwrap();
    }
    killer.join().unwrap();
    assert!(done.load(Ordering::SeqCst), "the replica was killed and restarted during the run");
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!(
        "two replicas: {} events acknowledged, {} retried requests",
        acknowledged.len(),
        retries.load(Ordering::Relaxed)
    );
    assert!(acknowledged.len() > KEYS / 2, "the batches overlapped and covered many keys");

    for base in &bases {
        // Stored exactly once, as sent, nothing else; sequences from 1 without gaps.
        let listed = support::list_events(&http, base, &key);
        let mut seen: HashMap<String, (Value, u64)> = HashMap::new();
        for e in &listed {
            let tx = e["transaction_id"].as_str().unwrap().to_owned();
            let sequence = e["sequence"].as_u64().unwrap();
            let first = seen.insert(tx.clone(), (e.clone(), sequence));
            assert!(first.is_none(), "{base}: {tx} is stored twice");
        }
        assert_eq!(
            seen.len(),
            acknowledged.len(),
            "{base}: stored events are the acknowledged ones"
        );
        for (tx, sent) in &acknowledged {
            let (stored, _) = seen.get(tx).unwrap_or_else(|| panic!("{base}: {tx} is lost"));
            assert_eq!(stored["properties"], sent["properties"], "{base}: {tx}");
        }
        let mut sequences: Vec<u64> = seen.values().map(|(_, s)| *s).collect();
        sequences.sort_unstable();
        assert_eq!(
            sequences,
            (1..=acknowledged.len() as u64).collect::<Vec<_>>(),
            "{base}: no gaps"
        );
    }
    // A changed body under a stored identity is a conflict on either replica.
    let some = acknowledged.values().next().unwrap().clone();
    for base in &bases {
        let mut changed = some.clone();
        changed["properties"]["units"] = json!("999");
        let answer: Value = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&json!({"events": [changed]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            answer["results"][0]["error"]["code"], "transaction_id_conflict",
            "{base}: {answer}"
        );
    }
    // Usage through either replica equals the reference engine over the acknowledged events.
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
    let query = UsageQuery {
        from: at("2026-03-01T00:00:00Z"),
        to: at("2026-04-01T00:00:00Z"),
        window: WindowSize::Day,
        timezone: chrono_tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let listed: HashMap<String, u64> = support::list_events(&http, &bases[0], &key)
        .iter()
        .map(|e| {
            (e["transaction_id"].as_str().unwrap().to_owned(), e["sequence"].as_u64().unwrap())
        })
        .collect();
    for c in 0..3 {
        let customer = format!("customer-{c}");
        let mut events: Vec<StoredEvent> = acknowledged
            .iter()
            .filter(|(_, e)| e["customer"] == customer.as_str())
            .map(|(tx, e)| stored_event(e, listed[tx]))
            .collect();
        events.sort_by_key(|e| e.sequence);
        let expected = compute_usage(&spec, &events, &query).unwrap();
        for base in &bases {
            let url = format!(
                "{base}/v1/usage?metric=requests&customer={customer}&from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z&window=day"
            );
            let answer: Value = http.get(url).bearer_auth(&key).send().unwrap().json().unwrap();
            let windows = answer["windows"].as_array().unwrap_or_else(|| panic!("{answer}"));
            assert_eq!(windows.len(), expected.windows.len());
            for (got, want) in windows.iter().zip(&expected.windows) {
                assert_eq!(
                    got["total"].as_str(),
                    want.total.map(|d| d.to_string()).as_deref(),
                    "{base} {customer} {}",
                    got["from"]
                );
                let values: Vec<Option<&str>> =
                    got["groups"].as_array().unwrap().iter().map(|g| g["value"].as_str()).collect();
                let want_values: Vec<Option<String>> =
                    want.groups.iter().map(|g| g.value.map(|d| d.to_string())).collect();
                assert_eq!(values, want_values.iter().map(|v| v.as_deref()).collect::<Vec<_>>());
            }
        }
    }
    for child in replicas.lock().unwrap().iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
