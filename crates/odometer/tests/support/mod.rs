//! What the binary's integration tests share: starting the real `odometer serve` on a free
//! port and waiting until it answers, and reading the API key it prints on first start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod prometheus;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// `odometer --data-dir DIR`, with the environment's settings removed so tests see defaults.
pub fn odometer(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odometer"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("ODOMETER_LISTEN")
        .env_remove("ODOMETER_DATA_DIR")
        .env_remove("ODOMETER_URL")
        .env_remove("ODOMETER_API_KEY")
        .env_remove("ODOMETER_CATALOG")
        .env_remove("ODOMETER_EVENTS");
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Spawns `odometer serve` on `port`; the receiver gets every API key it prints.
pub fn spawn_server(data_dir: &Path, port: u16) -> (Child, Receiver<String>) {
    let mut child = odometer(data_dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let keys = printed_keys(&mut child);
    (child, keys)
}

/// Every API key `child` prints on its standard output (piped), as it prints them. Reads the
/// output to its end, so the server never writes to a closed pipe.
pub fn printed_keys(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("the child's standard output is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(key) = line.split_whitespace().find(|w| w.starts_with("odo_")) {
                let _ = tx.send(key.to_owned());
            }
        }
    });
    rx
}

/// The events of `customer` among `sent` (the JSON bodies sent, by transaction id) as the
/// reference engine reads them, numbered in the map's order, all of code `code`.
pub fn sent_events_of(
    sent: &std::collections::HashMap<String, serde_json::Value>,
    customer: &str,
    code: &str,
) -> Vec<odometer_core::event::StoredEvent> {
    use chrono::TimeZone;
    sent.values()
        .filter(|e| e["customer"] == customer)
        .enumerate()
        .map(|(i, e)| odometer_core::event::StoredEvent {
            event: odometer_core::event::Event {
                transaction_id: e["transaction_id"].as_str().unwrap().to_owned(),
                code: code.into(),
                customer: customer.into(),
                timestamp: chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap())
                    .unwrap()
                    .into(),
                properties: e["properties"].as_object().unwrap().clone(),
            },
            sequence: i as u64 + 1,
            ingested_at: chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        })
        .collect()
}

/// Waits until `base` answers `/healthz`, for at most `limit`.
pub fn wait_healthy(base: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if reqwest::blocking::get(format!("{base}/healthz")).is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "odometer serve did not answer /healthz within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to the end, feeding `stdin`: its exit status (-1 when killed by a signal),
/// standard output and standard error.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> (i32, String, String) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every event stored for `key`'s organization, through `GET /v1/events`, page by page, in
/// the API's order.
pub fn list_events(
    http: &reqwest::blocking::Client,
    base: &str,
    key: &str,
) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value =
            http.get(url).bearer_auth(key).send().unwrap().json().unwrap();
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

/// A test server's URL from the environment `scripts/servers` prints; panics with what to do
/// when it is missing (the server-mode tests never pass by skipping).
pub fn server_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs real PostgreSQL and ClickHouse servers. Start \
             them with `scripts/servers start` and export what it prints \
             (eval \"$(scripts/servers env)\")"
        )
    })
}
