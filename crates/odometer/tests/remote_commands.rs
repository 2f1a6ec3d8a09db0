//! The commands that talk HTTP to a running server, run as shipped: `odometer events import`
//! against a real `odometer serve` (NDJSON and CSV, duplicates, conflicts, malformed lines,
//! atomic batches, standard input), `odometer usage` in JSON and as tables with numbers worked
//! out by hand, the errors for a missing key and an unreachable server, and retries against a
//! fake server that fails on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{free_port, odometer, run, spawn_server, wait_healthy};

/// A running `odometer serve` on a fresh data directory, killed on drop.
struct Server {
    child: Child,
    base: String,
    key: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server (as `tests/cli.rs` does) and keeps the key it prints on first start.
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (child, keys) = spawn_server(&dir.path().join("data"), port);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(30));
    let key = keys.recv_timeout(Duration::from_secs(5)).expect("first start prints an API key");
    Server { child, base, key, dir }
}

impl Server {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::blocking::Client::new();
        let mut request =
            client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap())
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(reqwest::Method::POST, path, Some(body));
        assert!((200..300).contains(&status), "POST {path}: {status} {answer}");
        answer
    }

    fn get(&self, path: &str) -> Value {
        let (status, answer) = self.call(reqwest::Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {answer}");
        answer
    }

    /// The binary with this server's URL and key.
    fn cli(&self) -> Command {
        let mut cmd = odometer(&self.dir.path().join("unused"));
        cmd.args(["--log", "warn"])
            .env("ODOMETER_URL", &self.base)
            .env("ODOMETER_API_KEY", &self.key);
        cmd
    }

    fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A metric summing `bytes` grouped by `project`, and the customers acme and globex.
fn start_with_catalog() -> Server {
    let server = start();
    server.post(
        "/v1/metrics",
        json!({"code": "storage", "name": "Storage",
               "aggregation": {"type": "sum", "field": "bytes"}, "group_by": ["project"]}),
    );
    for customer in ["acme", "globex"] {
        server.post("/v1/customers", json!({"external_id": customer}));
    }
    server
}

/// The number on the summary line that starts with `label` (`accepted`, `events read`, a code).
fn count(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(label) && line[label.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no '{label}' line in:\n{summary}"));
    line[label.len()..].trim().parse().unwrap_or_else(|_| panic!("'{line}' has no count"))
}

fn event(id: &str, customer: &str, at: &str, bytes: &str, project: &str) -> String {
    json!({"transaction_id": id, "code": "storage", "customer": customer, "timestamp": at,
           "properties": {"bytes": bytes, "project": project}})
    .to_string()
}

/// acme: 10 + 5 on apollo and 7 on zeus; globex: 100 on apollo. With a duplicate, a
/// conflicting copy, a line that is not JSON and an unknown customer among them.
fn ndjson_fixture() -> String {
    [
        event("t1", "acme", "2026-01-01T10:00:00Z", "10", "apollo"),
        event("t2", "acme", "2026-01-01T11:00:00Z", "5", "apollo"),
        String::new(),
        event("t1", "acme", "2026-01-01T10:00:00Z", "10", "apollo"),
        "{\"transaction_id\": \"t9\", not json".to_owned(),
        event("t2", "acme", "2026-01-01T11:00:00Z", "6", "apollo"),
        event("t3", "nobody", "2026-01-01T11:00:00Z", "1", "apollo"),
        event("t4", "acme", "2026-01-02T09:00:00Z", "7", "zeus"),
        event("t5", "globex", "2026-01-01T12:00:00Z", "100", "apollo"),
    ]
    .join("\n")
        + "\n"
}

/// acme: 3 on apollo on Jan 1; globex: 1 on hermes on Jan 2 (its `properties` column wins over
/// the `bytes` and `project` cells).
const CSV_FIXTURE: &str = "\
transaction_id,code,customer,timestamp,bytes,project,properties
c1,storage,acme,2026-01-01T20:00:00Z,3,apollo,
c2,storage,globex,2026-01-02T08:00:00Z,4,,\"{\"\"project\"\": \"\"hermes\"\", \"\"bytes\"\": 1}\"
";

#[test]
fn ndjson_import_reports_duplicates_conflicts_and_malformed_lines_by_line() {
    let server = start_with_catalog();
    let file = server.file("events.ndjson", &ndjson_fixture());
    let rejects = server.dir.path().join("rejects.ndjson");
    let (status, out, err) = run(
        server
            .cli()
            .args(["events", "import", "--batch-size", "3", "--rejects"])
            .arg(&rejects)
            .arg(&file),
        None,
    );
    assert_eq!(status, 1, "some events were rejected\n{out}\n{err}");
    assert_eq!(count(&out, "events read"), 8, "{out}");
    assert_eq!(count(&out, "accepted"), 4, "{out}");
    assert_eq!(count(&out, "duplicates"), 1, "{out}");
    assert_eq!(count(&out, "rejected"), 3, "{out}");
    for code in ["malformed_json", "transaction_id_conflict", "unknown_customer"] {
        assert_eq!(count(&out, code), 1, "{out}");
    }
    assert!(out.contains("events/s"), "{out}");
    assert!(err.contains("3 of 8 events were rejected"), "{err}");

    let written: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary: Vec<(u64, Value, &str)> = written
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["transaction_id"].clone(),
                r["error"]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (5, Value::Null, "malformed_json"),
            (6, json!("t2"), "transaction_id_conflict"),
            (7, json!("t3"), "unknown_customer"),
        ]
    );
    assert!(written.iter().all(|r| r["error"]["message"].as_str().is_some_and(|m| !m.is_empty())));

    // The conflicting copy changed nothing: t2 still has its first content.
    let stored = server.get("/v1/events/t2?customer=acme");
    assert_eq!(stored["properties"]["bytes"], "5");

    // Without --rejects the first rejections are printed, by line.
    let (status, out, _) = run(server.cli().args(["events", "import"]).arg(&file), None);
    assert_eq!(status, 1);
    assert_eq!((count(&out, "accepted"), count(&out, "duplicates")), (0, 5), "{out}");
    assert!(out.contains("line 6 (t2): transaction_id_conflict:"), "{out}");
    assert!(out.contains("line 5: malformed_json: line 5 is not valid JSON"), "{out}");
}

#[test]
fn csv_import_stores_events_and_a_second_import_is_all_duplicates() {
    let server = start_with_catalog();
    let file = server.file("events.csv", CSV_FIXTURE);
    let (status, out, err) = run(server.cli().args(["events", "import"]).arg(&file), None);
    assert_eq!(status, 0, "{out}\n{err}");
    assert_eq!((count(&out, "events read"), count(&out, "accepted")), (2, 2), "{out}");

    let acme = server.get("/v1/events?customer=acme");
    let events = acme["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{acme}");
    assert_eq!(events[0]["transaction_id"], "c1");
    assert_eq!(events[0]["timestamp"], "2026-01-01T20:00:00.000000Z");
    assert_eq!(events[0]["properties"], json!({"bytes": "3", "project": "apollo"}));
    let globex = server.get("/v1/events?customer=globex");
    assert_eq!(globex["data"][0]["transaction_id"], "c2");
    assert_eq!(globex["data"][0]["properties"], json!({"bytes": 1, "project": "hermes"}));

    let (status, out, err) = run(server.cli().args(["events", "import"]).arg(&file), None);
    assert_eq!(status, 0, "a re-import is all duplicates, not an error\n{out}\n{err}");
    assert_eq!((count(&out, "accepted"), count(&out, "duplicates")), (0, 2), "{out}");
    assert_eq!(count(&out, "rejected"), 0, "{out}");
    assert_eq!(server.get("/v1/events?customer=acme")["data"].as_array().unwrap().len(), 1);
}

#[test]
fn atomic_batches_and_standard_input() {
    let server = start_with_catalog();
    let lines = [
        event("a1", "acme", "2026-01-05T10:00:00Z", "1", "apollo"),
        event("a2", "nobody", "2026-01-05T10:00:00Z", "1", "apollo"),
        event("a3", "acme", "2026-01-05T10:00:00Z", "1", "apollo"),
    ]
    .join("\n");
    // Batches of two: the first holds a rejected event, so none of it is stored.
    let file = server.file("atomic.jsonl", &lines);
    let (status, out, _) = run(
        server.cli().args(["events", "import", "--atomic-batches", "--batch-size", "2"]).arg(&file),
        None,
    );
    assert_eq!(status, 1, "{out}");
    assert_eq!((count(&out, "accepted"), count(&out, "rejected")), (1, 2), "{out}");
    assert_eq!(count(&out, "unknown_customer"), 1, "{out}");
    let (status, _) = server.call(reqwest::Method::GET, "/v1/events/a1?customer=acme", None);
    assert_eq!(status, 404, "a1 was in the failed atomic batch");
    assert_eq!(server.get("/v1/events/a3?customer=acme")["transaction_id"], "a3");

    // Standard input needs --format; with it, it works like a file.
    let (status, _, err) = run(server.cli().args(["events", "import", "-"]), Some(&lines));
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("--format"), "{err}");
    let one = event("a1", "acme", "2026-01-05T10:00:00Z", "1", "apollo");
    let (status, out, err) =
        run(server.cli().args(["events", "import", "--format", "ndjson", "-"]), Some(&one));
    assert_eq!(status, 0, "{out}\n{err}");
    assert_eq!(count(&out, "accepted"), 1, "{out}");
    assert!(out.starts_with("standard input:"), "{out}");
}

#[test]
fn usage_prints_json_and_tables_for_one_customer_and_the_invoice_run() {
    let server = start_with_catalog();
    let ndjson = server.file("events.ndjson", &ndjson_fixture());
    let csv = server.file("events.csv", CSV_FIXTURE);
    assert_eq!(run(server.cli().args(["events", "import"]).arg(&ndjson), None).0, 1);
    assert_eq!(run(server.cli().args(["events", "import"]).arg(&csv), None).0, 0);
    // 99 more customers without events: the invoice run then spans two pages of 100.
    for i in 0..99 {
        server.post("/v1/customers", json!({"external_id": format!("idle-{i:02}")}));
    }
    let period =
        ["--metric", "storage", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-03T00:00:00Z"];

    // acme by day: Jan 1 is 10 + 5 (NDJSON) + 3 (CSV) on apollo, Jan 2 is 7 on zeus.
    let (status, out, err) = run(
        server.cli().arg("usage").args(period).args([
            "--customer",
            "acme",
            "--window",
            "day",
            "--json",
        ]),
        None,
    );
    assert_eq!(status, 0, "{err}");
    let acme: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(acme["customer"], "acme");
    let windows = acme["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0]["total"], "18");
    assert_eq!(windows[0]["groups"][0]["group_by"], json!({"project": "apollo"}));
    assert_eq!(windows[0]["groups"][0]["events_count"], 3);
    assert_eq!(windows[1]["total"], "7");
    assert_eq!(windows[1]["groups"][0]["group_by"], json!({"project": "zeus"}));

    // The same as a table: a row per group and a TOTAL row per window.
    let (status, out, err) = run(
        server.cli().arg("usage").args(period).args(["--customer", "acme", "--window", "day"]),
        None,
    );
    assert_eq!(status, 0, "{err}");
    let rows: Vec<Vec<&str>> = out.lines().map(|line| line.split_whitespace().collect()).collect();
    assert!(out.starts_with("customer acme, metric storage (revision 1)"), "{out}");
    assert_eq!(
        rows[1],
        ["WINDOW", "FROM", "WINDOW", "TO", "SEGMENT", "GROUP", "VALUE", "EVENTS", "SKIPPED"],
        "{out}"
    );
    let day1 = "2026-01-01T00:00:00.000000Z";
    let day2 = "2026-01-02T00:00:00.000000Z";
    let day3 = "2026-01-03T00:00:00.000000Z";
    assert_eq!(
        rows[2..].to_vec(),
        [
            vec![day1, day2, "-", "project=apollo", "18", "3", "0"],
            vec![day1, day2, "TOTAL", "18", "3", "0"],
            vec![day2, day3, "-", "project=zeus", "7", "1", "0"],
            vec![day2, day3, "TOTAL", "7", "1", "0"],
        ],
        "{out}"
    );
    // The header and the rows line up: each column starts at the same offset.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1].find("VALUE").map(|at| at + 5),
        lines[2].find("18").map(|at| at + 2),
        "{out}"
    );

    // The invoice run, without groups or windows: every customer, across both pages.
    let (status, out, err) =
        run(server.cli().arg("usage").args(period).args(["--group-by", "", "--json"]), None);
    assert_eq!(status, 0, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 101, "every customer once");
    let total = |customer: &str| {
        let result = all.iter().find(|r| r["customer"] == customer).unwrap();
        result["windows"][0]["total"].as_str().unwrap().to_owned()
    };
    assert_eq!(total("acme"), "25");
    assert_eq!(total("globex"), "101");
    assert_eq!(total("idle-98"), "0");

    let (status, out, _) =
        run(server.cli().arg("usage").args(period).args(["--group-by", ""]), None);
    assert_eq!(status, 0);
    assert_eq!(out.matches("\ncustomer ").count() + usize::from(out.starts_with("customer ")), 101);
    assert!(out.contains("customer globex,"), "{out}");

    // A server error is shown as its code and message.
    let (status, _, err) = run(
        server.cli().arg("usage").args([
            "--metric",
            "nope",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-02T00:00:00Z",
            "--customer",
            "acme",
        ]),
        None,
    );
    assert_eq!(status, 1);
    assert!(err.starts_with("error: metric_not_found: "), "{err}");
}

#[test]
fn a_missing_key_and_an_unreachable_server_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, event("t1", "acme", "2026-01-01T00:00:00Z", "1", "a")).unwrap();
    let usage = [
        "usage",
        "--metric",
        "m",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
    ];

    let (status, _, err) = run(odometer(dir.path()).args(usage), None);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("no API key") && err.contains("ODOMETER_API_KEY"), "{err}");
    let (status, _, err) = run(odometer(dir.path()).args(["events", "import"]).arg(&file), None);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("--api-key"), "{err}");

    let url = format!("http://127.0.0.1:{}", free_port());
    let (status, _, err) =
        run(odometer(dir.path()).args(usage).args(["--url", &url, "--api-key", "odo_x"]), None);
    assert_eq!(status, 1, "{err}");
    assert!(err.contains(&format!("cannot reach odometer at {url}")), "{err}");
    assert!(err.contains("odometer serve"), "{err}");
    let (status, out, err) = run(
        odometer(dir.path())
            .args(["events", "import", "--api-key", "odo_x", "--url", &url])
            .arg(&file),
        None,
    );
    assert_eq!(status, 3, "{err}");
    assert!(err.contains(&format!("cannot reach odometer at {url}")), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");
    assert!(out.is_empty(), "{out}");

    // Flag problems are usage errors too.
    let (status, _, _) = run(
        odometer(dir.path()).args(["events", "import", "--batch-size", "10001"]).arg(&file),
        None,
    );
    assert_eq!(status, 2);
    let (status, _, err) =
        run(odometer(dir.path()).args(["events", "import", "--api-key", "k", "events.txt"]), None);
    assert_eq!(status, 2);
    assert!(err.contains("--format"), "{err}");
}

/// A fake server: `GET /v1/organization` answers `{}`, and each `POST /v1/events` is answered
/// by `answer(call_number, events)` as (status, extra headers). Counts the POSTs.
fn fake_server(
    answer: impl Fn(usize, &[Value]) -> (u16, &'static str) + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let (status, headers, text) = if request_line.starts_with("POST /v1/events") {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let events: Value = serde_json::from_slice(&body).unwrap();
                let events = events["events"].as_array().unwrap().clone();
                let (status, headers) = answer(n, &events);
                let text = if status == 200 {
                    let results: Vec<Value> = events
                        .iter()
                        .map(|e| json!({"transaction_id": e["transaction_id"], "status": "accepted"}))
                        .collect();
                    json!({"results": results, "accepted": events.len(), "duplicates": 0, "rejected": 0})
                } else {
                    json!({"error": {"code": "unavailable", "message": "try later", "details": []}})
                };
                (status, headers, text.to_string())
            } else {
                (200, "", "{}".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (base, posts)
}

#[test]
fn a_batch_is_retried_after_server_errors() {
    let (base, posts) = fake_server(|n, _| if n < 2 { (503, "") } else { (200, "") });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let lines = [
        event("t1", "acme", "2026-01-01T10:00:00Z", "10", "apollo"),
        event("t2", "acme", "2026-01-01T11:00:00Z", "5", "apollo"),
        event("t3", "acme", "2026-01-01T12:00:00Z", "5", "apollo"),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (status, out, err) = run(
        odometer(dir.path())
            .args(["events", "import", "--url", &base, "--api-key", "k"])
            .arg(&file),
        None,
    );
    assert_eq!(status, 0, "{out}\n{err}");
    assert_eq!(posts.load(Ordering::SeqCst), 3, "two failures, then the batch went through");
    assert_eq!(count(&out, "accepted"), 3, "{out}");
    assert_eq!(err.matches("retrying").count(), 2, "{err}");
}

#[test]
fn an_import_that_cannot_finish_names_the_first_line_not_sent() {
    // The first batch goes through; every later one fails, with `retry-after: 0` so the test
    // does not wait out the backoff.
    let (base, posts) =
        fake_server(|n, _| if n == 0 { (200, "") } else { (503, "retry-after: 0\r\n") });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, ndjson_fixture()).unwrap();
    let (status, out, err) = run(
        odometer(dir.path())
            .args(["events", "import", "--batch-size", "2", "--url", &base, "--api-key", "k"])
            .arg(&file),
        None,
    );
    assert_eq!(status, 3, "{out}\n{err}");
    // Lines 1 and 2 were the first batch; line 4 opens the second.
    assert!(err.contains("the import stopped at line 4: unavailable: try later"), "{err}");
    assert!(err.contains("Running the same import again is safe"), "{err}");
    assert_eq!(posts.load(Ordering::SeqCst), 1 + 6, "one success, then six attempts");
    assert_eq!(count(&out, "accepted"), 2, "the summary still says what was done\n{out}");
}
