//! `odometer bench`: the harness of `spec/performance.md`. It generates the standard workload
//! (as request bodies in a file, before the clock starts), starts a fresh embedded instance in
//! a temporary directory, ingests over HTTP through the native batch endpoint with several
//! concurrent connections, runs the query suite, measures a rebuild after a metric update and
//! a cold start, optionally DuckDB's own numbers on the same events, and prints one table plus
//! a JSON file.
//!
//! In server mode (`--catalog postgres://... --events clickhouse://...`) the instance is
//! `--replicas` in-process servers, each with stores of its own (its own connections, as
//! separate processes would have) sharing fresh databases made on those servers for the run
//! (and dropped after it); requests are spread over the replicas in turn.

mod duckdb;
pub(crate) mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use odometer_api::AppState;
use odometer_store::{tenants, Catalog};

use crate::config::{redacted, CatalogBackend, EventsBackend};
use crate::stores::{open_catalog_at, open_event_store_at, EventStores};
use odometer_embedded::DuckEventStore;
use serde_json::{json, Value};

use self::workload::{Workload, REGIONS};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Number of events (W1M = 1000000, W10M = 10000000) [default: 1000000]; given as a
    /// clickhouse:// URL instead (the flag may be given twice), the server-mode event store to
    /// run against (with --catalog)
    #[arg(long, value_name = "N|clickhouse://...")]
    pub events: Vec<String>,
    /// Server mode: the PostgreSQL server to run against (a fresh database is made on it and
    /// on the ClickHouse server for the run, and dropped after it)
    #[arg(long, value_name = "postgres://...")]
    pub catalog: Option<String>,
    /// Server mode: how many replicas serve (requests go to each in turn)
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Number of customers
    #[arg(long, default_value_t = 10_000)]
    pub customers: usize,
    /// Seed of the workload
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent ingest connections
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Events per request
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u64,
    /// Timed runs of each query (p50 and p99 are taken over them)
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Where to write the JSON results
    #[arg(long, default_value = "bench-results.json")]
    pub output: PathBuf,
    /// Where to write what `GET /metrics` shows after the run (the instance's requests, events,
    /// appends, usage paths, sizes and memory, in the Prometheus text format)
    #[arg(long, default_value = "bench-metrics.prom")]
    pub metrics_output: PathBuf,
    /// Also measure DuckDB itself on the same events: the script (`scripts/bench-duckdb`) is
    /// given them as CSV and answers its load rate and query times as JSON
    #[arg(long)]
    pub duckdb_script: Option<PathBuf>,
}

impl BenchArgs {
    /// The number of events asked for (the last number given to --events).
    fn event_count(&self) -> anyhow::Result<u64> {
        let mut count = 1_000_000;
        for value in &self.events {
            if !value.contains("://") {
                count = value
                    .parse()
                    .with_context(|| format!("--events {value}: not a number nor a URL"))?;
            }
        }
        Ok(count)
    }

    /// Where the instance keeps its data.
    fn mode(&self) -> anyhow::Result<Mode> {
        let url = self.events.iter().find(|v| v.contains("://"));
        match (&self.catalog, url) {
            (None, None) => Ok(Mode::Embedded),
            (Some(catalog), Some(events)) if events.starts_with("clickhouse://") => {
                Ok(Mode::Server { catalog: catalog.clone(), events: events.clone() })
            }
            _ => bail!(
                "server mode needs both --catalog postgres://... and --events clickhouse://..."
            ),
        }
    }
}

/// Where the bench's instance keeps its data.
#[derive(Debug, Clone)]
enum Mode {
    /// A fresh data directory.
    Embedded,
    /// Fresh databases on these servers.
    Server { catalog: String, events: String },
}

/// The stores of one replica.
#[derive(Clone)]
struct Stores {
    catalog: Arc<dyn Catalog>,
    events: EventStores,
}

/// Where the run's data is: a data directory, or the URLs of the fresh server databases.
#[derive(Debug, Clone)]
enum Place {
    Directory(PathBuf),
    Servers { catalog: String, events: String },
}

impl Place {
    async fn open(&self) -> anyhow::Result<Stores> {
        let (catalog, events) = match self {
            Place::Directory(dir) => (
                CatalogBackend::Embedded(dir.join("catalog.sqlite3")),
                EventsBackend::Embedded(dir.join("events.duckdb")),
            ),
            Place::Servers { catalog, events } => (
                CatalogBackend::Postgres(catalog.clone()),
                EventsBackend::ClickHouse { url: events.clone(), ledger: catalog.clone() },
            ),
        };
        Ok(Stores {
            catalog: open_catalog_at(&catalog).await?,
            events: open_event_store_at(&events).await?,
        })
    }
}

/// A running instance: its replicas' addresses, and the handles that stop them.
struct Instance {
    bases: Vec<String>,
    stops: Vec<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Instance {
    /// The first replica's address.
    fn base(&self) -> &str {
        &self.bases[0]
    }

    async fn stop(self) -> anyhow::Result<()> {
        for (shutdown, task) in self.stops {
            let _ = shutdown.send(());
            task.await?;
        }
        Ok(())
    }
}

/// A running instance of `replicas` servers, each as `odometer serve` starts it (the usage
/// index told every current metric definition) with stores of its own on `place`. Answers
/// the first replica's stores.
async fn start_instance(place: &Place, replicas: usize) -> anyhow::Result<(Instance, Stores)> {
    let mut instance = Instance { bases: Vec::new(), stops: Vec::new() };
    let mut first = None;
    for _ in 0..replicas.max(1) {
        let stores = place.open().await?;
        let events = stores.events.as_dyn();
        odometer_store::usage_index::sync_all(stores.catalog.as_ref(), events.as_ref()).await?;
        let state = AppState { catalog: stores.catalog.clone(), events };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        instance.bases.push(format!("http://{}", listener.local_addr()?));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, odometer_api::app(state))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "bench server failed");
            }
        });
        instance.stops.push((shutdown, task));
        first.get_or_insert(stores);
    }
    let first = first.ok_or_else(|| anyhow::anyhow!("no replica started"))?;
    Ok((instance, first))
}

/// Waits until the embedded store of `place` released its files: it closes when its last
/// handle goes, and a request's task can outlive the server by a moment.
async fn wait_until_closed(place: &Place) -> anyhow::Result<()> {
    let Place::Directory(dir) = place else { return Ok(()) };
    let events_path = dir.join("events.duckdb");
    let closing = Instant::now();
    while DuckEventStore::in_use(&events_path)? {
        if closing.elapsed() > Duration::from_secs(120) {
            bail!("the event store did not close within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Fresh databases for the run on the servers of `mode` (dropped by [`drop_databases`]).
async fn create_databases(catalog: &str, events: &str) -> anyhow::Result<(Place, String)> {
    let (catalog, events, name) = fresh_databases(catalog, events, "bench").await?;
    Ok((Place::Servers { catalog, events }, name))
}

/// A fresh PostgreSQL database on the `catalog` server (the ClickHouse one is made by the
/// store at start): their URLs and their name, for [`drop_databases`].
pub(crate) async fn fresh_databases(
    catalog: &str,
    events: &str,
    purpose: &str,
) -> anyhow::Result<(String, String, String)> {
    let name = format!("odometer_{purpose}_{:016x}", rand::random::<u64>());
    postgres_statement(catalog, &format!("CREATE DATABASE {name}")).await?;
    let with_database = |url: &str| -> anyhow::Result<String> {
        let mut parsed =
            reqwest::Url::parse(url).with_context(|| format!("bad URL {}", redacted(url)))?;
        parsed.set_path(&format!("/{name}"));
        Ok(parsed.to_string())
    };
    Ok((with_database(catalog)?, with_database(events)?, name))
}

pub(crate) async fn drop_databases(catalog: &str, events: &str, name: &str) -> anyhow::Result<()> {
    let url = odometer_clickhouse::ClickHouseUrl::parse(events).map_err(anyhow::Error::msg)?;
    odometer_clickhouse::ClickHouse::new(url)?
        .execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    postgres_statement(catalog, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// Runs one statement that cannot run in a transaction (`CREATE DATABASE`) on the server.
async fn postgres_statement(url: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::{ConnectOptions, Connection};
    // `CREATE DATABASE` takes a second or so: not worth sqlx's slow-statement warning.
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().with_context(|| format!("bad URL {}", redacted(url)))?;
    let mut conn = sqlx::PgConnection::connect_with(&options.disable_statement_logging())
        .await
        .with_context(|| format!("cannot connect to {}", redacted(url)))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await?;
    Ok(())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

struct Timing {
    p50_ms: f64,
    p99_ms: f64,
}

async fn time_query(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    repeats: usize,
) -> anyhow::Result<(Timing, Value)> {
    let mut samples = Vec::with_capacity(repeats);
    let mut last = Value::Null;
    for run in 0..repeats + 2 {
        // (The first two are warm-ups.)
        let started = Instant::now();
        let response = http.get(url).bearer_auth(key).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{url} answered {status}: {body}");
        }
        if run >= 2 {
            samples.push(started.elapsed());
        }
        last = body;
    }
    samples.sort();
    Ok((Timing { p50_ms: percentile(&samples, 0.5), p99_ms: percentile(&samples, 0.99) }, last))
}

/// The invoice run: every customer's usage, page by page.
async fn invoice_run(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    period: &str,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut customers = 0;
    loop {
        let mut url = format!("{base}/v1/usage?metric=api_calls&{period}&limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let response = http.get(&url).bearer_auth(key).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!("invoice run answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        // Every answer is read, none is built into a `Value` tree (harness overhead).
        let page: InvoicePage = serde_json::from_slice(&bytes).context("an invoice run page")?;
        customers += page.data.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((started.elapsed(), customers))
}

/// The ingest's request bodies in a file: batch `b` is `offsets[b]`.
struct Bodies {
    file: std::fs::File,
    offsets: Vec<(u64, usize)>,
}

impl Bodies {
    fn write(workload: &Workload, size: u64, path: PathBuf) -> anyhow::Result<Self> {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for b in 0..workload.batches(size) {
            let body = serde_json::to_vec(&json!({ "events": workload.batch(b, size) }))?;
            out.write_all(&body)?;
            offsets.push((at, body.len()));
            at += body.len() as u64;
        }
        out.flush()?;
        drop(out);
        Ok(Self { file: std::fs::File::open(&path)?, offsets })
    }

    fn read(&self, b: usize) -> anyhow::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let (at, len) = self.offsets[b];
        let mut body = vec![0u8; len];
        self.file.read_exact_at(&mut body, at)?;
        Ok(body)
    }
}

/// A decimal answer (a JSON string or number) as text without trailing fractional zeros,
/// so `12.50` and `12.5` compare equal.
fn decimal_text(value: &Value) -> String {
    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// A page of the invoice run: its answers are parsed but not kept.
#[derive(serde::Deserialize)]
struct InvoicePage {
    data: Vec<serde::de::IgnoredAny>,
    next_cursor: Option<String>,
}

/// The counts of an ingest answer (its per-event results are skipped, not built).
#[derive(serde::Deserialize)]
struct IngestCounts {
    accepted: u64,
    duplicates: u64,
}

/// The answer's total and how it was computed.
fn total_and_path(answer: &Value) -> (Value, String) {
    (
        answer["windows"][0]["total"].clone(),
        answer["answered_from"].as_str().unwrap_or("").to_owned(),
    )
}

/// Sends a JSON request and answers the JSON body, failing on a status that is not success.
pub(crate) async fn send_json(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("answered {status}: {body}");
    }
    Ok(body)
}

/// What the rebuild measurement found.
struct Rebuild {
    /// From the update's answer until q1 was first answered from the new revision's state.
    millis: f64,
    /// q1 answers while the state was being built (all from the events, all the new
    /// revision's numbers).
    answers_while_building: usize,
    slowest_while_building_ms: f64,
}

/// Updates `api_calls` with a new filter, then asks q1 again and again: every answer must be
/// the new revision's (what the preview computed from the events before the update), until
/// one comes from the new revision's state.
async fn measure_rebuild(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    customer: &str,
    period: &str,
    indexed: bool,
) -> anyhow::Result<Rebuild> {
    let patch =
        json!({"filters": [{"property": "region", "op": "in", "values": ["eu-west", "us-east"]}]});
    let preview = send_json(http.post(format!("{base}/v1/metrics/api_calls/preview")).bearer_auth(key).json(&json!({
        "patch": patch, "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "customers": [customer],
    })))
    .await
    .context("preview of the update")?;
    let expected = preview["results"][0]["proposed"].clone();
    send_json(http.patch(format!("{base}/v1/metrics/api_calls")).bearer_auth(key).json(&patch))
        .await
        .context("the update")?;
    let updated = Instant::now();
    let url = format!("{base}/v1/usage?metric=api_calls&customer={customer}&{period}");
    let mut answers_while_building = 0;
    let mut slowest = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let answer = send_json(http.get(&url).bearer_auth(key)).await?;
        let took = asked.elapsed();
        let (total, path) = total_and_path(&answer);
        if total != expected {
            bail!("after the update q1 answered {total} ({path}), the new revision's total is {expected}");
        }
        // In server mode the state does not depend on the metric (nothing is rebuilt) and a
        // filtered metric is answered from the events: the first answer is the new
        // revision's.
        if path.starts_with("index") || !indexed {
            return Ok(Rebuild {
                millis: updated.elapsed().as_secs_f64() * 1000.0,
                answers_while_building,
                slowest_while_building_ms: slowest.as_secs_f64() * 1000.0,
            });
        }
        answers_while_building += 1;
        slowest = slowest.max(took);
        if updated.elapsed() > Duration::from_secs(600) {
            bail!("the new revision's state was not complete after 10 minutes");
        }
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.batch_size == 0
        || args.batch_size > 10_000
        || args.connections == 0
        || args.customers == 0
    {
        bail!("--batch-size must be 1 to 10000, --connections and --customers at least 1");
    }
    if args.customers <= 100 {
        // q1, q2 and q4 ask about the customer of rank 100.
        bail!("--customers must be above 100: the query suite asks about the customer of rank 100");
    }
    let event_count = args.event_count()?;
    let mode = args.mode()?;
    if args.replicas == 0 || (args.replicas > 1 && matches!(mode, Mode::Embedded)) {
        bail!("--replicas above 1 needs server mode (--catalog and --events), and at least 1");
    }
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    // The same recorder `serve --metrics-listen` installs: the run ends with its scrape.
    let metrics = crate::telemetry::install()?;
    let workload = Arc::new(Workload::new(event_count, args.customers, args.seed));
    let (place, databases) = match &mode {
        Mode::Embedded => (Place::Directory(dir.path().to_owned()), None),
        Mode::Server { catalog, events } => {
            let (place, name) = create_databases(catalog, events).await?;
            (place, Some(name))
        }
    };
    eprintln!(
        "bench: {} events, {} customers, seed {}, {} ({} build)",
        event_count,
        args.customers,
        args.seed,
        match &databases {
            None => format!("in {}", dir.path().display()),
            Some(name) => format!("server mode, {} replica(s), databases {name}", args.replicas),
        },
        if cfg!(debug_assertions) { "dev" } else { "release" }
    );
    let result = run_on(args, &workload, &place, dir.path(), event_count).await;
    if result.is_ok() {
        // Before the directory goes: the store sizes are read from it.
        crate::telemetry::record_gauges(matches!(mode, Mode::Embedded).then(|| dir.path()));
        metrics.run_upkeep();
        std::fs::write(&args.metrics_output, metrics.render())
            .with_context(|| format!("cannot write {}", args.metrics_output.display()))?;
        println!("/metrics after the run written to {}", args.metrics_output.display());
    }
    if let (Mode::Server { catalog, events }, Some(name)) = (&mode, &databases) {
        if let Err(err) = drop_databases(catalog, events, name).await {
            eprintln!("bench: could not drop the databases {name}: {err:#}");
        }
    }
    result
}

async fn run_on(
    args: &BenchArgs,
    workload: &Arc<Workload>,
    place: &Place,
    dir: &std::path::Path,
    event_count: u64,
) -> anyhow::Result<()> {
    let server_mode = matches!(place, Place::Servers { .. });
    // Setup (not timed): an organization, its customers and the metrics.
    let (instance, stores) = start_instance(place, args.replicas).await?;
    let catalog = stores.catalog.clone();
    let events = stores.events.as_dyn();
    let bootstrap = tenants::create_organization(catalog.as_ref(), "bench").await?;
    let org = bootstrap.organization.id;
    let key = bootstrap.secret;
    let setup = Instant::now();
    for rank in 0..args.customers {
        odometer_store::customers::create_customer(
            catalog.as_ref(),
            org,
            &json!({"external_id": Workload::customer(rank)}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create a customer: {e}"))?;
    }
    let metrics = [
        json!({"code": "api_calls", "name": "API calls", "aggregation": {"type": "sum", "field": "value"}}),
        json!({"code": "seats", "name": "Seats", "aggregation": {"type": "unique_count", "field": "user_id"}}),
        json!({"code": "storage_gb", "name": "Storage", "aggregation": {"type": "max", "field": "value"}}),
        json!({"code": "api_calls_by_region", "event_code": "api_calls", "name": "API calls by region",
               "aggregation": {"type": "sum", "field": "value"},
               "segmentation": {"type": "single", "key": "region", "values": REGIONS}}),
    ];
    for metric in &metrics {
        odometer_store::metrics::create_metric(catalog.as_ref(), org, metric)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create a metric: {e}"))?;
    }
    // As the API does after a metric changes: the index keeps state for each of them.
    odometer_store::usage_index::sync_organization(catalog.as_ref(), events.as_ref(), org).await?;
    eprintln!("bench: setup took {:.1} s", setup.elapsed().as_secs_f64());

    // The request bodies, generated before the clock starts and replayed from a file, so the
    // ingest figure is the server's, not the generator's (they share the machine).
    let generating = Instant::now();
    let bodies = {
        let (workload, path, size) =
            (workload.clone(), dir.join("requests.ndjson"), args.batch_size);
        Arc::new(tokio::task::spawn_blocking(move || Bodies::write(&workload, size, path)).await??)
    };
    eprintln!(
        "bench: {} request bodies written in {:.1} s",
        bodies.offsets.len(),
        generating.elapsed().as_secs_f64()
    );

    // Ingest over HTTP.
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let next_batch = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let batches = workload.batches(args.batch_size);
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        let (http, bases, key) = (http.clone(), instance.bases.clone(), key.clone());
        let (bodies, next_batch, accepted, duplicates) =
            (bodies.clone(), next_batch.clone(), accepted.clone(), duplicates.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let b = next_batch.fetch_add(1, Ordering::SeqCst);
                if b >= batches {
                    return Ok::<(), anyhow::Error>(());
                }
                let body = bodies.read(b as usize)?;
                // Spread over the replicas in turn.
                let base = &bases[b as usize % bases.len()];
                let response = http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                if !status.is_success() {
                    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    bail!(
                        "batch {b} answered {status}: {}",
                        answer["results"]
                            .as_array()
                            .and_then(|r| r.iter().find(|x| x["status"] == "rejected"))
                            .unwrap_or(&answer)
                    );
                }
                // Only the counts are read (not a `Value` of the 1,000 results): the client
                // shares the machine with the server it measures.
                let counts: IngestCounts = serde_json::from_slice(&bytes)
                    .with_context(|| format!("batch {b}: the answer has no counts"))?;
                accepted.fetch_add(counts.accepted, Ordering::Relaxed);
                duplicates.fetch_add(counts.duplicates, Ordering::Relaxed);
                if (b + 1) % (batches / 10).max(1) == 0 {
                    eprintln!(
                        "bench: ingested {} of {batches} batches ({:.0} s)",
                        b + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::SeqCst);
    let duplicates = duplicates.load(Ordering::SeqCst);
    if accepted != event_count {
        bail!("{accepted} events accepted, expected {event_count}");
    }
    let ingest_rate = accepted as f64 / ingest_secs;
    let peak_rss = crate::telemetry::proc_status_bytes("VmHWM:");
    let drain = Instant::now();
    let stats = match &stores.events {
        EventStores::Embedded(duck) => {
            duck.flush().await?;
            Some(duck.append_stats()?)
        }
        EventStores::ClickHouse(_) => None,
    };
    let drain_ms = drain.elapsed().as_secs_f64() * 1000.0;
    if let Some(stats) = &stats {
        eprintln!(
            "bench: {} log records (group commits) for {} batches, {:.2} batches per record; \
             {} waits for the columnarizer",
            stats.records,
            stats.batches,
            stats.batches as f64 / stats.records.max(1) as f64,
            stats.waits
        );
    }
    eprintln!(
        "bench: ingest {accepted} events ({duplicates} duplicates answered) in {ingest_secs:.1} s; \
         every event readable {drain_ms:.0} ms later"
    );

    // The query suite.
    let period = "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z";
    let mid = Workload::customer(100);
    let big = Workload::customer(0);
    let usage_url = |base: &str, metric: &str, customer: &str| {
        format!("{base}/v1/usage?metric={metric}&customer={customer}&{period}")
    };
    let url = |metric: &str, customer: &str| usage_url(instance.base(), metric, customer);
    let mut rows: Vec<(&str, f64, f64, String)> = Vec::new();
    let mut answers = serde_json::Map::new();
    for (name, metric, customer) in [
        ("q1", "api_calls", &mid),
        ("q2", "seats", &mid),
        ("q4", "api_calls_by_region", &mid),
        ("q1-big", "api_calls", &big),
        ("q2-big", "seats", &big),
    ] {
        let (timing, answer) =
            time_query(&http, &url(metric, customer), &key, args.repeats).await?;
        let (total, path) = total_and_path(&answer);
        answers.insert(name.to_owned(), total);
        rows.push((name, timing.p50_ms, timing.p99_ms, path));
    }
    let mut q3_samples = Vec::new();
    let mut q3_customers = 0;
    for _ in 0..3 {
        let (elapsed, customers) = invoice_run(&http, instance.base(), &key, period).await?;
        q3_samples.push(elapsed);
        q3_customers = customers;
    }
    q3_samples.sort();
    let q3_ms = percentile(&q3_samples, 0.5);

    let rebuild = measure_rebuild(&http, instance.base(), &key, &mid, period, !server_mode).await?;
    eprintln!(
        "bench: rebuild after the update took {:.0} ms ({} answers from the events meanwhile, slowest {:.1} ms)",
        rebuild.millis, rebuild.answers_while_building, rebuild.slowest_while_building_ms
    );
    let rebuilt_q1 =
        total_and_path(&send_json(http.get(url("api_calls", &mid)).bearer_auth(&key)).await?).0;

    // Cold start: stop (the store writes its snapshot), reopen the same directory, time until
    // the first correct q1.
    instance.stop().await?;
    drop(catalog);
    let closing = Instant::now();
    drop(events);
    drop(stores);
    // The reopen must be a cold start on complete files, never a second store beside the first.
    wait_until_closed(place).await?;
    let close_ms = closing.elapsed().as_secs_f64() * 1000.0;
    let cold = Instant::now();
    let (instance, stores) = start_instance(place, 1).await?;
    let first =
        send_json(http.get(usage_url(instance.base(), "api_calls", &mid)).bearer_auth(&key))
            .await?;
    let cold_ms = cold.elapsed().as_secs_f64() * 1000.0;
    let (cold_total, cold_path) = total_and_path(&first);
    if cold_total != rebuilt_q1 {
        bail!("after the restart q1 answered {first}, expected total {rebuilt_q1}");
    }
    instance.stop().await?;
    drop(stores);
    // Closed (its snapshot written) before the directory is removed.
    wait_until_closed(place).await?;

    let duckdb = match &args.duckdb_script {
        Some(script) if !server_mode => {
            Some(duckdb::compare(script, workload, dir, &mid, &big, args.repeats).await?)
        }
        Some(_) => bail!("--duckdb-script compares with the embedded store only"),
        None => None,
    };

    // The comparison means something only if both engines computed the same numbers.
    if let Some(theirs) = &duckdb {
        for name in ["q1", "q2", "q1-big", "q2-big"] {
            let ours = answers.get(name).map(decimal_text);
            for layout in ["", "sorted_"] {
                let answer = theirs.get(format!("{layout}{name}_answer")).map(decimal_text);
                if answer != ours {
                    bail!("DuckDB ({layout}{name}) answered {answer:?}, Odometer {ours:?}");
                }
            }
        }
    }

    // The table, and the JSON file.
    let bar = |name: &str| match name {
        "q1" => (5.0, 0.5),
        "q2" => (10.0, 1.0),
        "q4" => (5.0, 0.5),
        "q1-big" => (10.0, 1.0),
        "q2-big" => (30.0, 5.0),
        _ => (f64::NAN, f64::NAN),
    };
    let verdict = |value: f64, (first_bar, goal): (f64, f64), lower_is_better: bool| {
        let meets = |bar: f64| if lower_is_better { value <= bar } else { value >= bar };
        if meets(goal) {
            "meets the goal"
        } else if meets(first_bar) {
            "meets the first bar"
        } else {
            "below the first bar"
        }
    };
    // DuckDB's figures: in arrival order (`duck`), and sorted by customer (`sorted`).
    let duck = |name: &str| -> String {
        duckdb
            .as_ref()
            .and_then(|d| d.get(name))
            .and_then(Value::as_f64)
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
    };
    let sorted = |name: &str| duck(&format!("sorted_{name}"));
    println!();
    println!(
        "odometer bench: {} events, {} customers, seed {}, {} connections, batches of {}, {} build, {}",
        event_count,
        args.customers,
        args.seed,
        args.connections,
        args.batch_size,
        if cfg!(debug_assertions) { "dev" } else { "release" },
        if server_mode {
            format!("server mode (PostgreSQL + ClickHouse), {} replica(s)", args.replicas)
        } else {
            "embedded (SQLite + DuckDB)".to_owned()
        }
    );
    println!(
        "{:<30} {:>12} {:>10} {:>10} {:>10} {:>8}  {:<12} status",
        "figure", "measured", "first bar", "goal", "duckdb", "sorted", "answered"
    );
    println!(
        "{:<30} {:>12.0} {:>10} {:>10} {:>10} {:>8}  {:<12} {}",
        "ingest, events/s",
        ingest_rate,
        "100000",
        "1000000",
        duck("load_events_per_second").split('.').next().unwrap_or("-"),
        "-",
        "",
        verdict(ingest_rate, (100_000.0, 1_000_000.0), false)
    );
    for (name, p50, p99, path) in &rows {
        let (first_bar, goal) = bar(name);
        println!(
            "{:<30} {:>12.2} {:>10} {:>10} {:>10} {:>8}  {:<12} {}",
            format!("{name} p99 ms (p50 {p50:.2})"),
            p99,
            first_bar,
            goal,
            duck(&format!("{name}_p99_ms")),
            sorted(&format!("{name}_p99_ms")),
            path,
            verdict(*p99, (first_bar, goal), true)
        );
    }
    println!(
        "{:<30} {:>12.1} {:>10} {:>10} {:>10} {:>8}  {:<12} {}",
        format!("q3 invoice run ms ({q3_customers})"),
        q3_ms,
        "200",
        "10",
        duck("q3_ms"),
        sorted("q3_ms"),
        "",
        verdict(q3_ms, (200.0, 10.0), true)
    );
    println!(
        "{:<30} {:>12.0} {:>10} {:>10} {:>10} {:>8}  {:<12} {}",
        "rebuild after an update, ms",
        rebuild.millis,
        "30000",
        "2000",
        "-",
        "-",
        "",
        if server_mode {
            "n/a: the server-mode state is per property, not per metric: nothing to rebuild; the first answer is the new revision's"
        } else {
            verdict(rebuild.millis, (30_000.0, 2_000.0), true)
        }
    );
    println!(
        "{:<30} {:>12.1} {:>10} {:>10} {:>10} {:>8}  {:<12} {}",
        "cold start to first q1, ms",
        cold_ms,
        "5000",
        "500",
        "-",
        "-",
        cold_path,
        verdict(cold_ms, (5000.0, 500.0), true)
    );
    if let Some(rss) = peak_rss {
        let gib = rss as f64 / (1u64 << 30) as f64;
        println!(
            "{:<30} {:>12.2} {:>10} {:>10} {:>10} {:>8}  {:<12} {}",
            "peak resident memory, GiB",
            gib,
            "4",
            "1",
            "-",
            "-",
            "",
            verdict(gib, (4.0, 1.0), true)
        );
    }
    if server_mode {
        println!("(closing the stores took {close_ms:.0} ms)");
    } else {
        println!(
            "(DuckDB held every event {drain_ms:.0} ms after the last acknowledgement; closing wrote the snapshot in {close_ms:.0} ms)"
        );
    }

    let results = json!({
        "build": if cfg!(debug_assertions) { "dev" } else { "release" },
        "events": event_count, "customers": args.customers, "seed": args.seed,
        "mode": if server_mode { "server" } else { "embedded" }, "replicas": args.replicas,
        "connections": args.connections, "batch_size": args.batch_size, "repeats": args.repeats,
        "ingest": {"seconds": ingest_secs, "events_per_second": ingest_rate, "duplicates_answered": duplicates,
                   "readable_after_ms": drain_ms,
                   "log_records": stats.as_ref().map(|s| s.records),
                   "batches_per_record": stats.as_ref().map(|s| s.batches as f64 / s.records.max(1) as f64),
                   "columnarizer_waits": stats.as_ref().map(|s| s.waits)},
        "queries_ms": rows.iter().map(|(n, p50, p99, path)| (n.to_string(), json!({"p50": p50, "p99": p99, "answered_from": path}))).collect::<serde_json::Map<_, _>>(),
        "q3_invoice_run_ms": q3_ms, "q3_customers": q3_customers,
        "rebuild_ms": rebuild.millis, "rebuild_answers_while_building": rebuild.answers_while_building,
        "rebuild_slowest_answer_ms": rebuild.slowest_while_building_ms,
        "close_ms": close_ms,
        "cold_start_ms": cold_ms, "cold_start_answered_from": cold_path,
        "peak_rss_bytes": peak_rss,
        "answers": answers,
        "duckdb": duckdb,
    });
    std::fs::write(&args.output, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("\nresults written to {}", args.output.display());
    Ok(())
}
