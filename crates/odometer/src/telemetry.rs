//! `GET /metrics` in the Prometheus text format, on an address of its own (`metrics_listen`),
//! without an API key: it shows counts and sizes, never an organization's data, and is meant
//! for a private network or 127.0.0.1. The recorder installed here receives what the other
//! crates record through the `metrics` facade (requests, events by outcome, append batches,
//! usage answers by path; see `odometer_api::telemetry`); process memory and the embedded
//! store's file sizes are read at each scrape.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the count histograms (events per append, requests merged per commit).
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0];

/// Installs the process-wide recorder and describes every family. Call once, before serving.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Prefix("odometer_append_batch".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("odometer_append_requests_merged".into()),
            COUNT_BUCKETS,
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe();
    Ok(handle)
}

/// The `# HELP` line of each family.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "odometer_http_requests_total",
        "HTTP requests by dialect (native, lago, meteroid, zenskar, console), matched route, method and status"
    );
    describe_histogram!(
        "odometer_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by dialect and matched route"
    );
    describe_counter!(
        "odometer_events_total",
        "events answered, by outcome (accepted, duplicate, rejected)"
    );
    describe_counter!("odometer_events_rejected_total", "rejected events by rejection code");
    describe_histogram!(
        "odometer_append_batch_events",
        Unit::Count,
        "events stored per durable append (a group commit of the embedded store's log, or one ClickHouse insert in server mode)"
    );
    describe_histogram!(
        "odometer_append_requests_merged",
        Unit::Count,
        "requests merged into one group commit"
    );
    describe_histogram!(
        "odometer_append_commit_seconds",
        Unit::Seconds,
        "time to make a group commit durable and publish it"
    );
    describe_counter!(
        "odometer_usage_answers_total",
        "native usage answers by the path that computed them (index, index+edges, events) and why not the index"
    );
    describe_gauge!("odometer_store_bytes", Unit::Bytes, "size of the embedded store's files");
    describe_gauge!("odometer_process_resident_memory_bytes", Unit::Bytes, "resident memory");
    describe_gauge!(
        "odometer_process_peak_resident_memory_bytes",
        Unit::Bytes,
        "peak resident memory since start"
    );
}

/// Serves `GET /metrics` on `listener` until the process ends. `data_dir` is the embedded
/// store's directory (`None` in server mode: the servers report their own sizes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Histograms keep their samples until upkeep folds them in.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let data_dir = data_dir.clone();
            async move {
                record_gauges(data_dir.as_deref());
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await.context("metrics server error")
}

/// Binds the metrics address (before the API starts, so a bad address fails the start).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for /metrics on {addr}"))
}

/// Sets the gauges read at each scrape: process memory, and the embedded store's file sizes.
pub fn record_gauges(data_dir: Option<&Path>) {
    if let Some(bytes) = proc_status_bytes("VmRSS:") {
        metrics::gauge!("odometer_process_resident_memory_bytes").set(bytes as f64);
    }
    if let Some(bytes) = proc_status_bytes("VmHWM:") {
        metrics::gauge!("odometer_process_peak_resident_memory_bytes").set(bytes as f64);
    }
    let Some(dir) = data_dir else { return };
    let (mut catalog, mut events) = (0u64, 0u64);
    for (name, bytes) in file_sizes(dir) {
        if name.starts_with("catalog") {
            catalog += bytes;
        } else if name.starts_with("events") {
            events += bytes;
        }
    }
    metrics::gauge!("odometer_store_bytes", "store" => "catalog").set(catalog as f64);
    metrics::gauge!("odometer_store_bytes", "store" => "events").set(events as f64);
}

/// A line of `/proc/self/status` in bytes (the kernel gives kB; `VmHWM:` is the peak resident
/// memory, `VmRSS:` the current); `None` off Linux.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Each top-level entry of `dir` with its size (a directory's files summed, one level down:
/// the events log's segments).
fn file_sizes(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().ok()?;
            let bytes = if meta.is_dir() {
                std::fs::read_dir(entry.path())
                    .ok()?
                    .filter_map(Result::ok)
                    .filter_map(|f| f.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            } else {
                meta.len()
            };
            Some((name, bytes))
        })
        .collect()
}
