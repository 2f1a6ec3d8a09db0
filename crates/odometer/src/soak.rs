//! `odometer soak`: the bounded load test of `spec/reliability.md` (promise 4). It starts this
//! same binary as `odometer serve` in a child process (a fresh data directory, 127.0.0.1 only,
//! `/metrics` on a second port), then for `--duration` seconds drives it with more concurrent
//! ingest and usage requests than its bounds admit:
//!
//! - ingest senders post batches of the standard workload (`bench`'s generator); a batch
//!   answered 429 is sent again after its `retry-after`, as a well-behaved client does. Once
//!   the workload's `--events` are all acknowledged the senders keep re-sending its batches,
//!   so the load goes on while the data stops growing: from then on memory must be flat.
//! - query senders ask usage of one customer (sum, unique count, segmented) and a page of the
//!   invoice run, and count what they get.
//!
//! The server's resident memory is sampled all along (`/proc/PID/status`). At the end the
//! soak checks that the server counted exactly the events it acknowledged, scrapes
//! `/metrics` (kept in a file), stops the server with SIGTERM and expects exit 0. It fails
//! (exit status 1) on any 5xx, any request without an answer, a count that differs, memory
//! above `--memory-bound`, a server that did not stop cleanly, or a load that never reached
//! a bound (no 429: the soak proved nothing). Results go to stdout and a JSON file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::bench::workload::{Workload, CODES, REGIONS};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Seconds of load
    #[arg(long, default_value_t = 180)]
    pub duration: u64,
    /// Events of the workload; once all are acknowledged its batches are sent again (all
    /// duplicates), so the load goes on without the data growing
    #[arg(long, default_value_t = 5_000_000)]
    pub events: u64,
    /// Number of customers
    #[arg(long, default_value_t = 1_000)]
    pub customers: usize,
    /// Events per ingest request
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: u64,
    /// Concurrent ingest senders (above the server's max_ingest_in_flight, to overload it)
    #[arg(long, default_value_t = 128)]
    pub ingest_connections: usize,
    /// Concurrent query senders (above max_queries_in_flight, to overload it)
    #[arg(long, default_value_t = 320)]
    pub query_connections: usize,
    /// The server's max_ingest_in_flight [default: the server's default]
    #[arg(long)]
    pub max_ingest_in_flight: Option<usize>,
    /// The server's max_queries_in_flight [default: the server's default]
    #[arg(long)]
    pub max_queries_in_flight: Option<usize>,
    /// Resident memory the server must stay under, in MiB (spec/performance.md's first bar
    /// for W10M ingest is 4 GiB)
    #[arg(long, default_value_t = 4_096)]
    pub memory_bound_mib: u64,
    /// Seed of the workload
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server mode: soak a replica on fresh databases made on this PostgreSQL server (and on
    /// the --clickhouse one), dropped after the run
    #[arg(long, value_name = "postgres://...", requires = "clickhouse")]
    pub catalog: Option<String>,
    /// Server mode: the ClickHouse server of the fresh event store (with --catalog)
    #[arg(long, value_name = "clickhouse://...", requires = "catalog")]
    pub clickhouse: Option<String>,
    /// Where to write the JSON results
    #[arg(long, default_value = "soak-results.json")]
    pub output: PathBuf,
    /// Where to write the server's `/metrics` as scraped after the load
    #[arg(long, default_value = "soak-metrics.prom")]
    pub metrics_output: PathBuf,
}

/// The metric families an operator is promised at `/metrics` (they must all be there after
/// a soak).
pub const METRIC_FAMILIES: [&str; 11] = [
    "odometer_http_requests_total",
    "odometer_http_request_duration_seconds",
    "odometer_events_total",
    "odometer_append_batch_events",
    "odometer_append_requests_merged",
    "odometer_append_commit_seconds",
    "odometer_usage_answers_total",
    "odometer_shed_total",
    "odometer_store_bytes",
    "odometer_process_resident_memory_bytes",
    "odometer_process_peak_resident_memory_bytes",
];

/// The period every usage question asks about (the workload's events and its late ones).
const PERIOD: &str = "from=2025-12-01T00:00:00Z&to=2026-04-01T00:00:00Z";

/// The server under load: a child process, stopped (SIGKILL) if the soak ends early.
struct Server {
    child: Child,
    base: String,
    metrics: String,
    key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    /// Starts `odometer serve` on free ports (a server-mode replica when `servers` names its
    /// catalog and event store) and waits for its address, metrics address and first key.
    fn start(args: &SoakArgs, servers: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let mut command = Command::new(exe);
        command
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--log", "warn", "serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("ODOMETER_CATALOG")
            .env_remove("ODOMETER_EVENTS")
            .env_remove("ODOMETER_CONFIG")
            .env_remove("ODOMETER_MAX_INGEST_IN_FLIGHT")
            .env_remove("ODOMETER_MAX_QUERIES_IN_FLIGHT")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((catalog, events)) = servers {
            command.env("ODOMETER_CATALOG", catalog).env("ODOMETER_EVENTS", events);
        }
        if let Some(n) = args.max_ingest_in_flight {
            command.env("ODOMETER_MAX_INGEST_IN_FLIGHT", n.to_string());
        }
        if let Some(n) = args.max_queries_in_flight {
            command.env("ODOMETER_MAX_QUERIES_IN_FLIGHT", n.to_string());
        }
        let mut child = command.spawn().context("cannot start odometer serve")?;
        let (tx, rx) = std::sync::mpsc::channel::<(&'static str, String)>();
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let keys = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.split_whitespace().find(|w| w.starts_with("odo_")) {
                    let _ = keys.send(("key", key.to_owned()));
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let url = line.split_whitespace().find(|w| w.starts_with("http://"));
                match url {
                    Some(url) if line.starts_with("odometer metrics on") => {
                        let _ = tx.send(("metrics", url.trim_end_matches("/metrics").to_owned()));
                    }
                    Some(url) if line.starts_with("odometer listening on") => {
                        let _ = tx.send(("base", url.to_owned()));
                    }
                    // The server's warnings and errors reach the operator.
                    _ => eprintln!("server: {line}"),
                }
            }
        });
        let (mut base, mut metrics, mut key) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while base.is_none() || metrics.is_none() || key.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("base", v)) => base = Some(v),
                Ok(("metrics", v)) => metrics = Some(v),
                Ok((_, v)) => key = Some(v),
                Err(_) => {
                    if let Some(status) = child.try_wait()? {
                        bail!("odometer serve stopped at start ({status}); its errors are above");
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("odometer serve did not start within 60 s");
                }
            }
        }
        Ok(Self {
            child,
            base: base.unwrap_or_default(),
            metrics: metrics.unwrap_or_default(),
            key: key.unwrap_or_default(),
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status and how long the server took to stop.
    fn stop(mut self) -> anyhow::Result<(Option<i32>, f64)> {
        let stopping = Instant::now();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            bail!("cannot send SIGTERM to the server ({pid})");
        }
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status.code(), stopping.elapsed().as_secs_f64()));
            }
            if stopping.elapsed() > Duration::from_secs(300) {
                bail!("the server did not stop within 5 minutes of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The mode soaked, for the reports.
fn mode_of(servers: Option<(&str, &str)>) -> &'static str {
    match servers {
        Some(_) => "server mode: PostgreSQL + ClickHouse, one replica; its memory is the replica's",
        None => "embedded",
    }
}

/// `/proc/PID/status` field in bytes.
fn process_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What the senders saw, shared between them.
#[derive(Default)]
struct Tally {
    /// Answers by request kind and status (`ingest 200`, `query 429`, ...).
    statuses: Mutex<BTreeMap<String, u64>>,
    /// Latencies of successful answers, by kind.
    latencies: Mutex<BTreeMap<&'static str, Vec<Duration>>>,
    /// Requests that got no answer at all (connection refused, reset, timeout).
    failures: Mutex<Vec<String>>,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    /// Seconds since the start at which the first 429 came, and the server's memory then.
    first_429: Mutex<Option<(f64, Option<u64>)>>,
    /// Seconds since the start at which the last new event was acknowledged.
    all_new_at: Mutex<Option<f64>>,
    /// Whether a 5xx was seen, with the first one's body.
    first_5xx: Mutex<Option<String>>,
}

impl Tally {
    fn status(&self, kind: &str, status: u16) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        *statuses.entry(format!("{kind} {status}")).or_default() += 1;
    }

    fn latency(&self, kind: &'static str, took: Duration) {
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        latencies.entry(kind).or_default().push(took);
    }

    fn failure(&self, what: String) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }

    /// Answers of `kind` (`ingest`, `query`, or `` for both) whose status passes `pred`.
    fn count(&self, kind: &str, pred: impl Fn(u16) -> bool) -> u64 {
        let statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        count_statuses(&statuses, kind, pred)
    }
}

/// Sums the answers of `kind` (every kind when empty) whose status passes `pred`; keys are
/// `"<kind> <status>"`.
fn count_statuses(statuses: &BTreeMap<String, u64>, kind: &str, pred: impl Fn(u16) -> bool) -> u64 {
    statuses
        .iter()
        .filter_map(|(key, n)| {
            let (k, status) = key.split_once(' ')?;
            let status: u16 = status.parse().ok()?;
            ((kind.is_empty() || k == kind) && pred(status)).then_some(*n)
        })
        .sum()
}

/// The seconds in a 429's `retry-after` (1 when absent or unreadable).
fn retry_after(response: &reqwest::Response) -> Duration {
    let seconds = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.clamp(1, 60))
}

#[derive(serde::Deserialize)]
struct IngestCounts {
    accepted: u64,
    duplicates: u64,
}

pub async fn run(args: &SoakArgs) -> anyhow::Result<()> {
    if args.duration == 0
        || args.events == 0
        || args.customers == 0
        || args.batch_size == 0
        || args.batch_size > 10_000
        || args.ingest_connections == 0
    {
        bail!(
            "--duration, --events, --customers, --ingest-connections must be at least 1 and \
             --batch-size 1 to 10000"
        );
    }
    let databases = match (&args.catalog, &args.clickhouse) {
        (Some(catalog), Some(events)) => {
            Some(crate::bench::fresh_databases(catalog, events, "soak").await?)
        }
        _ => None,
    };
    let result = soak(args, databases.as_ref().map(|(c, e, _)| (c.as_str(), e.as_str()))).await;
    if let (Some(catalog), Some(events), Some((_, _, name))) =
        (&args.catalog, &args.clickhouse, &databases)
    {
        if let Err(err) = crate::bench::drop_databases(catalog, events, name).await {
            eprintln!("soak: could not drop the databases {name}: {err:#}");
        }
    }
    result
}

async fn soak(args: &SoakArgs, servers: Option<(&str, &str)>) -> anyhow::Result<()> {
    let limits = odometer_api::Limits::default();
    let ingest_bound = args.max_ingest_in_flight.unwrap_or(limits.shed.max_ingest_in_flight);
    let query_bound = args.max_queries_in_flight.unwrap_or(limits.shed.max_queries_in_flight);
    let server = Server::start(args, servers)?;
    eprintln!(
        "soak: server {} (pid {}), metrics {}/metrics; {} s of load, {} ingest senders \
         (server admits {ingest_bound} at once), {} query senders (server admits {query_bound}), \
         {} events of {} customers, memory bound {} MiB ({} build, {})",
        server.base,
        server.pid(),
        server.metrics,
        args.duration,
        args.ingest_connections,
        args.query_connections,
        args.events,
        args.customers,
        args.memory_bound_mib,
        if cfg!(debug_assertions) { "dev" } else { "release" },
        mode_of(servers)
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.ingest_connections + args.query_connections)
        .timeout(Duration::from_secs(120))
        .build()?;
    setup(&http, &server, args).await?;

    let workload = Arc::new(Workload::new(args.events, args.customers, args.seed));
    let batches = workload.batches(args.batch_size);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let pid = server.pid();

    // Memory, sampled every 100 ms; a point of the timeline every second.
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            let mut timeline = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                if let Some(rss) = process_status_bytes(pid, "VmRSS:") {
                    peak = peak.max(rss);
                    if n.is_multiple_of(10) {
                        timeline.push((started.elapsed().as_secs_f64(), rss));
                    }
                }
                n += 1;
            }
            (peak, timeline)
        })
    };

    let next_batch = Arc::new(AtomicU64::new(0));
    let acknowledged_batches = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..args.ingest_connections {
        let (http, base, key) = (http.clone(), server.base.clone(), server.key.clone());
        let (workload, tally, stop) = (workload.clone(), tally.clone(), stop.clone());
        let (next_batch, acknowledged_batches) = (next_batch.clone(), acknowledged_batches.clone());
        let size = args.batch_size;
        senders.push(tokio::spawn(async move {
            'batches: while !stop.load(Ordering::SeqCst) {
                let b = next_batch.fetch_add(1, Ordering::SeqCst) % batches;
                let body = serde_json::to_vec(&json!({"events": workload.batch(b, size)}))?;
                // Until it is acknowledged (or the soak ends): 429 means "later", as promised.
                while !stop.load(Ordering::SeqCst) {
                    let request = http
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    let bytes =
                        match exchange(&tally, request, "ingest", "ingest", started, pid).await? {
                            Exchange::Shed => continue,
                            Exchange::Failed => continue 'batches,
                            Exchange::Answered(bytes) => bytes,
                        };
                    let counts: IngestCounts = serde_json::from_slice(&bytes)
                        .context("an ingest answer without counts")?;
                    tally.accepted.fetch_add(counts.accepted, Ordering::SeqCst);
                    tally.duplicates.fetch_add(counts.duplicates, Ordering::SeqCst);
                    if acknowledged_batches.fetch_add(1, Ordering::SeqCst) + 1 == batches {
                        let mut at = tally.all_new_at.lock().unwrap_or_else(|e| e.into_inner());
                        at.get_or_insert(started.elapsed().as_secs_f64());
                    }
                    continue 'batches;
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for worker in 0..args.query_connections {
        let (http, base, key) = (http.clone(), server.base.clone(), server.key.clone());
        let (tally, stop, customers) = (tally.clone(), stop.clone(), args.customers);
        senders.push(tokio::spawn(async move {
            let mut n = worker as u64;
            while !stop.load(Ordering::SeqCst) {
                n += 7;
                let customer = Workload::customer((n as usize * 31) % customers);
                let (kind, url) = match n % 4 {
                    0 => ("q1", format!("{base}/v1/usage?metric=api_calls&customer={customer}&{PERIOD}")),
                    1 => ("q2", format!("{base}/v1/usage?metric=seats&customer={customer}&{PERIOD}")),
                    2 => ("q4", format!("{base}/v1/usage?metric=api_calls_by_region&customer={customer}&{PERIOD}")),
                    _ => ("invoice_page", format!("{base}/v1/usage?metric=api_calls&{PERIOD}&limit=100")),
                };
                exchange(&tally, http.get(&url).bearer_auth(&key), "query", kind, started, pid)
                    .await?;
            }
            Ok(())
        }));
    }

    // Progress every 10 seconds until the end.
    let deadline = started + Duration::from_secs(args.duration);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10).min(deadline - Instant::now())).await;
        eprintln!(
            "soak: {:>4.0} s  events acknowledged {} (+{} duplicates)  ingest 200/429 {}/{}  \
             queries 200/429 {}/{}  5xx {}  no answer {}  server memory {:.0} MiB",
            started.elapsed().as_secs_f64(),
            tally.accepted.load(Ordering::SeqCst),
            tally.duplicates.load(Ordering::SeqCst),
            tally.count("ingest", |c| c == 200),
            tally.count("ingest", |c| c == 429),
            tally.count("query", |c| c == 200),
            tally.count("query", |c| c == 429),
            tally.count("", |c| c >= 500),
            tally.failures.lock().map(|f| f.len()).unwrap_or(0),
            process_status_bytes(pid, "VmRSS:").unwrap_or(0) as f64 / (1u64 << 20) as f64
        );
    }
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let (peak_sampled, timeline) = {
        stop.store(true, Ordering::SeqCst);
        sampler.await?
    };
    let peak_hwm = process_status_bytes(pid, "VmHWM:");
    let peak = peak_hwm.unwrap_or(0).max(peak_sampled);

    // Nothing lost, nothing counted twice: the server's counts equal the acknowledged ones.
    let counted = count_stored(&http, &server).await?;
    let accepted = tally.accepted.load(Ordering::SeqCst);

    // What an operator's scraper would have seen.
    let metrics_text = http
        .get(format!("{}/metrics", server.metrics))
        .send()
        .await
        .context("cannot scrape /metrics")?
        .text()
        .await?;
    std::fs::write(&args.metrics_output, &metrics_text)
        .with_context(|| format!("cannot write {}", args.metrics_output.display()))?;
    // Server mode's stores are other servers: they report their own sizes.
    let missing: Vec<&str> = METRIC_FAMILIES
        .iter()
        .copied()
        .filter(|family| servers.is_none() || *family != "odometer_store_bytes")
        .filter(|family| !metrics_text.lines().any(|l| l.starts_with(family)))
        .collect();

    let (exit_code, stop_secs) = tokio::task::spawn_blocking(move || server.stop()).await??;

    report(Report {
        args,
        tally: &tally,
        load_secs,
        peak,
        timeline,
        counted,
        accepted,
        missing,
        exit_code,
        stop_secs,
        ingest_bound,
        query_bound,
        mode: mode_of(servers),
        expected_families: METRIC_FAMILIES.len() - usize::from(servers.is_some()),
    })
}

/// What became of one request.
enum Exchange {
    /// A success, with its body.
    Answered(axum::body::Bytes),
    /// 429: waited for its `retry-after`; send it again.
    Shed,
    /// No answer, or a 5xx (both counted as failures of the soak).
    Failed,
}

/// Sends `request`, counts its status under `family` (`ingest`, `query`) and its latency under
/// `kind`; waits out a 429's `retry-after`. Any other 4xx is a bug of the soak itself: an error.
async fn exchange(
    tally: &Tally,
    request: reqwest::RequestBuilder,
    family: &str,
    kind: &'static str,
    started: Instant,
    pid: u32,
) -> anyhow::Result<Exchange> {
    let sent = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            tally.failure(format!("{kind}: {err:?}"));
            return Ok(Exchange::Failed);
        }
    };
    let status = response.status();
    tally.status(family, status.as_u16());
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        note_429(tally, started, pid);
        tokio::time::sleep(retry_after(&response)).await;
        return Ok(Exchange::Shed);
    }
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(err) => {
            tally.failure(format!("{kind} answer: {err:?}"));
            return Ok(Exchange::Failed);
        }
    };
    if status.is_server_error() {
        note_5xx(tally, kind, status, &bytes);
        return Ok(Exchange::Failed);
    }
    if !status.is_success() {
        bail!("{kind} answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    tally.latency(kind, sent.elapsed());
    Ok(Exchange::Answered(bytes))
}

fn note_429(tally: &Tally, started: Instant, pid: u32) {
    let mut first = tally.first_429.lock().unwrap_or_else(|e| e.into_inner());
    first.get_or_insert_with(|| {
        (started.elapsed().as_secs_f64(), process_status_bytes(pid, "VmRSS:"))
    });
}

fn note_5xx(tally: &Tally, kind: &str, status: reqwest::StatusCode, body: &[u8]) {
    let mut first = tally.first_5xx.lock().unwrap_or_else(|e| e.into_inner());
    first.get_or_insert_with(|| format!("{kind} {status}: {}", String::from_utf8_lossy(body)));
}

/// The customers and metrics of the workload, made through the API.
async fn setup(http: &reqwest::Client, server: &Server, args: &SoakArgs) -> anyhow::Result<()> {
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{}{path}", server.base)).bearer_auth(&server.key);
        async move {
            let response = request.json(&body).send().await?;
            let status = response.status();
            if !status.is_success() {
                bail!("setup answered {status}: {}", response.text().await.unwrap_or_default());
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    let mut metrics = vec![
        json!({"code": "api_calls", "name": "API calls", "aggregation": {"type": "sum", "field": "value"}}),
        json!({"code": "seats", "name": "Seats", "aggregation": {"type": "unique_count", "field": "user_id"}}),
        json!({"code": "api_calls_by_region", "event_code": "api_calls", "name": "API calls by region",
               "aggregation": {"type": "sum", "field": "value"},
               "segmentation": {"type": "single", "key": "region", "values": REGIONS}}),
    ];
    // One count per event code: together they count every stored event.
    for code in CODES {
        metrics.push(json!({"code": format!("count_{code}"), "event_code": code,
                            "name": format!("{code} events"), "aggregation": {"type": "count"}}));
    }
    for metric in metrics {
        post("/v1/metrics", metric).await?;
    }
    for rank in 0..args.customers {
        post("/v1/customers", json!({"external_id": Workload::customer(rank)})).await?;
    }
    Ok(())
}

/// Every stored event, counted by the server: the three count metrics summed over every
/// customer (the invoice run, page by page).
async fn count_stored(http: &reqwest::Client, server: &Server) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for code in CODES {
        let mut cursor: Option<String> = None;
        loop {
            let mut url =
                format!("{}/v1/usage?metric=count_{code}&{PERIOD}&limit=1000", server.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = crate::bench::send_json(http.get(&url).bearer_auth(&server.key))
                .await
                .context("counting the stored events")?;
            for answer in page["data"].as_array().into_iter().flatten() {
                let value = &answer["windows"][0]["total"];
                let count = match value {
                    Value::String(text) => text.parse::<u64>().ok(),
                    Value::Number(number) => number.as_u64(),
                    _ => None,
                };
                total += count.with_context(|| format!("a count answered as {answer}"))?;
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
    }
    Ok(total)
}

struct Report<'a> {
    args: &'a SoakArgs,
    tally: &'a Tally,
    load_secs: f64,
    peak: u64,
    timeline: Vec<(f64, u64)>,
    counted: u64,
    accepted: u64,
    missing: Vec<&'static str>,
    exit_code: Option<i32>,
    stop_secs: f64,
    ingest_bound: usize,
    query_bound: usize,
    mode: &'static str,
    /// The families `/metrics` must show (server mode has no store sizes of its own).
    expected_families: usize,
}

fn report(r: Report<'_>) -> anyhow::Result<()> {
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let statuses = r.tally.statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let failures = r.tally.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let first_429 = r.tally.first_429.lock().map(|f| *f).unwrap_or_default();
    let first_5xx = r.tally.first_5xx.lock().map(|f| f.clone()).unwrap_or_default();
    let all_new_at = r.tally.all_new_at.lock().map(|f| *f).unwrap_or_default();
    let mut latencies = r.tally.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let count = |kind: &str, pred: &dyn Fn(u16) -> bool| count_statuses(&statuses, kind, pred);
    let server_errors = count("", &|c| c >= 500);
    let shed_ingest = count("ingest", &|c| c == 429);
    let shed_queries = count("query", &|c| c == 429);
    let duplicates = r.tally.duplicates.load(Ordering::SeqCst);
    // Memory once the data stopped growing: the load went on, memory must not.
    let rss_when_all_new =
        all_new_at.and_then(|at| r.timeline.iter().find(|(t, _)| *t >= at).map(|(_, rss)| *rss));
    let rss_at_end = r.timeline.last().map(|(_, rss)| *rss);

    println!();
    println!(
        "odometer soak: {:.0} s of load, {} ingest senders (server bound {}), {} query senders \
         (server bound {}), {} build, {}",
        r.load_secs,
        r.args.ingest_connections,
        r.ingest_bound,
        r.args.query_connections,
        r.query_bound,
        if cfg!(debug_assertions) { "dev" } else { "release" },
        r.mode
    );
    // New events arrive until the workload is all acknowledged, duplicates after that.
    let new_secs = all_new_at.unwrap_or(r.load_secs);
    println!(
        "ingest: {} events acknowledged as new ({:.0} events/s over the {:.0} s they took), {} \
         answered as duplicates ({:.0} events/s over the whole load); {} requests answered 200, \
         {} answered 429",
        r.accepted,
        r.accepted as f64 / new_secs,
        new_secs,
        duplicates,
        (r.accepted + duplicates) as f64 / r.load_secs,
        count("ingest", &|c| c == 200),
        shed_ingest
    );
    let mut rows = serde_json::Map::new();
    for (kind, samples) in latencies.iter_mut() {
        samples.sort();
        let p50 = crate::bench::percentile(samples, 0.5);
        let p99 = crate::bench::percentile(samples, 0.99);
        let max = samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        println!(
            "{kind:<14} {:>8} answered  {:>8.1}/s  p50 {p50:>8.2} ms  p99 {p99:>8.2} ms  max {max:>8.1} ms",
            samples.len(),
            samples.len() as f64 / r.load_secs
        );
        rows.insert(
            (*kind).to_owned(),
            json!({"answered": samples.len(), "per_second": samples.len() as f64 / r.load_secs,
                   "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
        );
    }
    println!(
        "queries: {} answered 200, {} answered 429",
        count("query", &|c| c == 200),
        shed_queries
    );
    match first_429 {
        Some((at, rss)) => println!(
            "first 429 after {at:.1} s, server memory then {:.0} MiB",
            mib(rss.unwrap_or(0))
        ),
        None => println!("no 429 at all"),
    }
    println!(
        "server memory: peak {:.0} MiB (bound {} MiB){}{}",
        mib(r.peak),
        r.args.memory_bound_mib,
        rss_when_all_new
            .map(|b| format!(", {:.0} MiB when the last new event was acknowledged", mib(b)))
            .unwrap_or_default(),
        rss_at_end.map(|b| format!(", {:.0} MiB at the end", mib(b))).unwrap_or_default()
    );
    println!(
        "stored: the server counts {} events, {} were acknowledged as new",
        r.counted, r.accepted
    );
    println!("5xx: {server_errors}; requests without an answer: {}", failures.len());
    println!(
        "/metrics after the load: {} of {} families{}",
        r.expected_families - r.missing.len(),
        r.expected_families,
        if r.missing.is_empty() {
            String::new()
        } else {
            format!(", missing {}", r.missing.join(", "))
        }
    );
    println!(
        "SIGTERM: exit {} after {:.1} s",
        r.exit_code.map_or_else(|| "by signal".to_owned(), |c| c.to_string()),
        r.stop_secs
    );

    let mut problems = Vec::new();
    if server_errors > 0 {
        problems.push(format!(
            "{server_errors} answers were 5xx (first: {})",
            first_5xx.unwrap_or_default()
        ));
    }
    if !failures.is_empty() {
        problems.push(format!(
            "{} requests got no answer (first: {})",
            failures.len(),
            failures[0]
        ));
    }
    if r.counted != r.accepted {
        problems.push(format!(
            "the server counts {} events, {} were acknowledged",
            r.counted, r.accepted
        ));
    }
    if r.peak > r.args.memory_bound_mib << 20 {
        problems.push(format!(
            "server memory peaked at {:.0} MiB, above the bound of {} MiB",
            mib(r.peak),
            r.args.memory_bound_mib
        ));
    }
    if shed_ingest + shed_queries == 0 {
        problems.push(
            "no request was answered 429: the load never reached a bound, so the soak shows \
             nothing about overload (raise --ingest-connections / --query-connections)"
                .to_owned(),
        );
    }
    if !r.missing.is_empty() {
        problems.push(format!("/metrics lacks {}", r.missing.join(", ")));
    }
    if r.exit_code != Some(0) {
        problems.push(format!("the server exited with {:?} after SIGTERM", r.exit_code));
    }

    let results = json!({
        "build": if cfg!(debug_assertions) { "dev" } else { "release" },
        "mode": r.mode,
        "seconds": r.load_secs, "events": r.args.events, "customers": r.args.customers,
        "batch_size": r.args.batch_size,
        "ingest_connections": r.args.ingest_connections, "query_connections": r.args.query_connections,
        "max_ingest_in_flight": r.ingest_bound, "max_queries_in_flight": r.query_bound,
        "accepted": r.accepted, "duplicates_answered": duplicates,
        "new_events_per_second": r.accepted as f64 / new_secs,
        "events_answered_per_second": (r.accepted + duplicates) as f64 / r.load_secs,
        "all_new_acknowledged_at_seconds": all_new_at,
        "statuses": statuses,
        "latency": rows,
        "shed": {"ingest": shed_ingest, "queries": shed_queries,
                 "first_after_seconds": first_429.map(|f| f.0),
                 "memory_at_first_bytes": first_429.and_then(|f| f.1)},
        "server_errors": server_errors, "no_answer": failures.len(),
        "first_no_answer": failures.first(),
        "memory": {"peak_bytes": r.peak, "bound_bytes": r.args.memory_bound_mib << 20,
                   "when_all_new_bytes": rss_when_all_new, "at_end_bytes": rss_at_end,
                   "timeline": r.timeline.iter().map(|(t, b)| json!([t, b])).collect::<Vec<_>>()},
        "stored_events_counted": r.counted,
        "metrics_families_missing": r.missing,
        "sigterm_exit_code": r.exit_code, "sigterm_stop_seconds": r.stop_secs,
        "problems": problems,
    });
    std::fs::write(&r.args.output, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", r.args.output.display()))?;
    println!(
        "\nresults written to {}, /metrics to {}",
        r.args.output.display(),
        r.args.metrics_output.display()
    );
    if !problems.is_empty() {
        bail!("the soak failed:\n  - {}", problems.join("\n  - "));
    }
    println!("soak passed: no 5xx, every request answered, nothing lost or counted twice, memory under its bound, load shed with 429");
    Ok(())
}
