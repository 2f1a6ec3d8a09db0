//! `odometer soak` end to end, short and with small bounds so it overloads a dev build on two
//! cores within seconds: the soak itself must pass (no 5xx, every request answered, the
//! server counts exactly the acknowledged events, memory under the bound, exit 0 on
//! SIGTERM), both bounds must have shed with 429, and the `/metrics` it scraped after the load
//! must parse and carry the numbers the load implies; embedded, and against a server-mode
//! replica on the servers `scripts/servers` runs. The release runs of the full soak are in
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::prometheus::{parse, value};

/// Runs a short soak with `extra` arguments; its results and its `/metrics` scrape.
fn short_soak(events: u64, extra: &[&str]) -> (Value, Vec<support::prometheus::Sample>) {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("soak.json");
    let scraped = dir.path().join("soak.prom");
    let events = events.to_string();
    let mut args = vec![
        "soak",
        "--duration",
        "12",
        "--events",
        &events,
        "--customers",
        "50",
        "--ingest-connections",
        "6",
        "--query-connections",
        "6",
        "--max-ingest-in-flight",
        "2",
        "--max-queries-in-flight",
        "2",
        "--memory-bound-mib",
        "2048",
        "--output",
        results.to_str().unwrap(),
        "--metrics-output",
        scraped.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = support::run(support::odometer(dir.path()).args(&args), None);
    assert_eq!(status, 0, "the soak failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("soak passed"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let samples = parse(&std::fs::read_to_string(&scraped).unwrap());
    (r, samples)
}

/// What every soak must show, whichever the mode: it passed, both bounds shed, every event of
/// the workload was acknowledged once and counted once, and the scrape agrees with the soak.
fn check(r: &Value, samples: &[support::prometheus::Sample], events: u64) {
    assert_eq!(r["problems"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["server_errors"], 0, "{r:#}");
    assert_eq!(r["no_answer"], 0, "{r:#}");
    assert!(r["shed"]["ingest"].as_u64().unwrap() > 0, "ingest was never shed: {r:#}");
    assert!(r["shed"]["queries"].as_u64().unwrap() > 0, "queries were never shed: {r:#}");
    // Every event of the workload was acknowledged once (retries after 429 included), and
    // the server counts exactly those.
    assert_eq!(r["accepted"], events, "{r:#}");
    assert_eq!(r["stored_events_counted"], events, "{r:#}");
    assert!(r["all_new_acknowledged_at_seconds"].is_number(), "{r:#}");
    let peak = r["memory"]["peak_bytes"].as_u64().unwrap();
    assert!(peak > 0 && peak < 2048 << 20, "{r:#}");
    assert_eq!(r["sigterm_exit_code"], 0, "{r:#}");
    for kind in ["ingest", "q1", "q2", "q4", "invoice_page"] {
        let answered = r["latency"][kind]["answered"].as_u64().unwrap_or(0);
        assert!(answered > 0, "no {kind} answered: {r:#}");
        let p50 = r["latency"][kind]["p50_ms"].as_f64().unwrap();
        let p99 = r["latency"][kind]["p99_ms"].as_f64().unwrap();
        assert!(0.0 < p50 && p50 <= p99, "{kind}: p50 {p50} p99 {p99}");
    }

    // The scrape after the load, read strictly, agrees with what the soak saw.
    let shed = |kind: &str| {
        value(samples, "odometer_shed_total", &[("dialect", "native"), ("kind", kind)]) as u64
    };
    assert_eq!(shed("ingest"), r["shed"]["ingest"].as_u64().unwrap());
    assert_eq!(shed("query"), r["shed"]["queries"].as_u64().unwrap());
    let accepted = value(samples, "odometer_events_total", &[("outcome", "accepted")]);
    assert_eq!(accepted as u64, events);
    let duplicates = value(samples, "odometer_events_total", &[("outcome", "duplicate")]);
    assert_eq!(duplicates as u64, r["duplicates_answered"].as_u64().unwrap());
    let ok_ingest = value(
        samples,
        "odometer_http_requests_total",
        &[("route", "/v1/events"), ("method", "POST"), ("status", "200")],
    );
    assert_eq!(ok_ingest as u64, r["statuses"]["ingest 200"].as_u64().unwrap());
    assert!(value(samples, "odometer_append_batch_events_count", &[]) > 0.0);
    assert!(value(samples, "odometer_append_commit_seconds_count", &[]) > 0.0);
    assert!(value(samples, "odometer_process_peak_resident_memory_bytes", &[]) > 0.0);
    let answers: f64 =
        samples.iter().filter(|s| s.name == "odometer_usage_answers_total").map(|s| s.value).sum();
    assert!(answers > 0.0);
}

#[test]
fn a_short_soak_sheds_with_429_loses_nothing_and_leaves_metrics() {
    let (r, samples) = short_soak(30_000, &[]);
    check(&r, &samples, 30_000);
    assert_eq!(r["mode"], "embedded");
}

#[test]
fn a_short_soak_of_a_server_mode_replica_sheds_with_429_and_loses_nothing() {
    let catalog = support::server_url("ODOMETER_TEST_POSTGRES_URL");
    let clickhouse = support::server_url("ODOMETER_TEST_CLICKHOUSE_URL");
    let (r, samples) = short_soak(10_000, &["--catalog", &catalog, "--clickhouse", &clickhouse]);
    check(&r, &samples, 10_000);
    assert!(r["mode"].as_str().unwrap().starts_with("server mode"), "{r:#}");
    // The replica's usage state answered (q1 is a sum of a field without filters).
    assert!(
        value(&samples, "odometer_usage_answers_total", &[("path", "index"), ("reason", "")]) > 0.0
    );
}
