//! The embedded event store: a durable log in front of DuckDB, an exactly-once index and a
//! usage index in memory.
//!
//! - **Appends** ([`writer`]) are group commits: the accepted events of every queued batch are
//!   written as one record of the events log ([`log`]) and flushed; only then are they
//!   acknowledged, and published to the exactly-once index, the usage index and the
//!   columnarizer.
//! - **The columnarizer** ([`columnar`]) copies log records into DuckDB's `events` table, with
//!   typed slot columns ([`slots`]), in large transactions in the background; each transaction
//!   records the LSN it copied through, so after a crash the records past it are copied again
//!   from the log, and segments DuckDB holds are deleted.
//! - **Reads of events** (lists, a customer's events, SQL metrics, usage from the events) first
//!   wait until DuckDB holds every event acknowledged before they started.
//! - **Usage** is answered from the usage index ([`index`]; the state is
//!   `odometer_core::usage_index`) when it has a complete state for the definition and the
//!   question is one it answers exactly, reading only the events of edge buckets; otherwise
//!   from the events: pushed down to DuckDB ([`pushdown`]) or by the reference engine. Under
//!   concurrent appends an answer counts every event acknowledged before the question arrived,
//!   and may count some acknowledged while it was answered (never one twice).
//! - **Closing** copies what is left, checkpoints DuckDB and writes a snapshot ([`snapshot`])
//!   of both indexes, so the next start reads no events; after a crash both are rebuilt from
//!   the stored events (the exactly-once index before the store opens, the usage states in
//!   the background, answered from the events meanwhile).
//!
//! Files: `events.duckdb` (and DuckDB's `events.duckdb.wal`), `events.log/` (segments),
//! `events.snapshot` (only between a clean close and the next open).

mod columnar;
mod exactly_once;
mod index;
mod log;
mod pushdown;
mod record;
mod rows;
mod slots;
mod snapshot;
mod sql;
mod writer;

pub use sql::{reference_usage, set_sql_time_limit};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use duckdb::arrow::array::{Array, Int64Array, StringArray, UInt64Array};
use duckdb::Connection;
use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::intake::{content_hash, event_fingerprint, EventOutcome};
use odometer_core::metric::AggregationType;
use odometer_core::usage::{UsageQuery, UsageResult};
use odometer_core::usage_index::{DefinitionKey, Fallback};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_store::events::{
    EventListParams, EventStore, EventsReason, IndexStatus, PathChoice, UsageAnswer, UsagePath,
    UsageQueryError,
};
use odometer_store::{Page, StoreError};
use serde_json::{Map, Value};

use columnar::Pipeline;
use exactly_once::{Entry, ExactlyOnce};
use index::{Build, UsageIndex};
use pushdown::Outcome;
use slots::{SlotOf, SlotRegistry};
pub use writer::AppendStats;
use writer::{Request, Targets, Writer};

/// The version of the events database's layout this build writes. Version 3 added the log
/// (`columnarized_lsn`) and the store id to `odometer_meta`; a version-2 database is upgraded
/// in place (its rows are unchanged).
const SCHEMA_VERSION: &str = "3";

/// The events table and the slot registry (see [`slots`]); `{typed}` is the slot columns.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq             UBIGINT NOT NULL,
    org             VARCHAR NOT NULL,
    customer        VARCHAR NOT NULL,
    transaction_id  VARCHAR NOT NULL,
    code            VARCHAR NOT NULL,
    ts              BIGINT NOT NULL,
    ingested_at     BIGINT NOT NULL,
    properties      VARCHAR NOT NULL,
    fp_hi           UBIGINT NOT NULL,
    fp_lo           UBIGINT NOT NULL,
    content_hi      UBIGINT NOT NULL,
    content_lo      UBIGINT NOT NULL,
    {typed}
);
CREATE TABLE IF NOT EXISTS property_slots (
    org   VARCHAR NOT NULL,
    key   VARCHAR NOT NULL,
    slot  INTEGER
);
";

/// Events in DuckDB behind a log (see the module documentation).
#[derive(Clone)]
pub struct DuckEventStore {
    inner: Arc<Inner>,
}

/// Where the store's files are.
#[derive(Debug, Clone)]
struct Files {
    log_dir: PathBuf,
    snapshot: PathBuf,
}

struct Inner {
    writer: Mutex<Writer>,
    /// Batches waiting for the writer (see [`writer::write_queued`]).
    queue: Mutex<Vec<Request>>,
    pipeline: Arc<Pipeline>,
    /// For reads, so queries do not wait behind appends.
    reader: Mutex<Connection>,
    /// For usage tables, idempotency records and the checkpoint at close.
    admin: Mutex<Connection>,
    /// Which slot column holds each organization's property keys.
    slots: Arc<RwLock<SlotRegistry>>,
    index: Arc<UsageIndex>,
    builds: Mutex<Option<mpsc::Sender<Build>>>,
    build_gate: Arc<BuildGate>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    paths: PathCounters,
    files: Option<Files>,
    store_id: String,
    /// The lock file of a store on disk, held while it is open; declared last, so it is
    /// released only after everything else (connections, threads) is closed.
    _held: Option<std::fs::File>,
}

/// How usage questions were answered, since the store was opened.
#[derive(Debug, Default)]
struct PathCounters {
    index: AtomicU64,
    pushed_down: AtomicU64,
    reference: AtomicU64,
    pushdown_errors: AtomicU64,
}

/// How many usage questions (calls of `usage`, `usage_of_customers` or `usage_answers`) were
/// answered from the usage index, by a pushed-down statement, by the reference engine over
/// the stored events, and how many pushed-down statements failed (and were answered by the
/// reference engine instead). A call answered partly from the index and partly from the
/// events counts once on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePaths {
    pub index: u64,
    pub pushed_down: u64,
    pub reference: u64,
    pub pushdown_errors: u64,
}

impl std::fmt::Debug for DuckEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuckEventStore").finish_non_exhaustive()
    }
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, StoreError> {
    mutex.lock().map_err(|_| StoreError::Backend("event store lock poisoned".into()))
}

fn read_lock<T>(lock: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>, StoreError> {
    lock.read().map_err(|_| StoreError::Backend("slot registry lock poisoned".into()))
}

fn write_lock<T>(lock: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>, StoreError> {
    lock.write().map_err(|_| StoreError::Backend("slot registry lock poisoned".into()))
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn instant(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| backend(format!("stored instant {micros} out of range")))
}

impl DuckEventStore {
    /// Opens (creating if needed) the event database at `path`, with its log and snapshot
    /// beside it (`events.log/`, `events.snapshot` for `events.duckdb`), recovering whatever a
    /// crash left.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(backend)?;
            }
            let started = std::time::Instant::now();
            let held = take_lock(&path).map_err(|refused| refused.into_error(&path))?;
            let conn = Connection::open(&path).map_err(backend)?;
            let files = Files {
                log_dir: path.with_extension("log"),
                snapshot: path.with_extension("snapshot"),
            };
            let store = Self::start(conn, Some(files), Some(held))?;
            tracing::info!(
                path = %path.display(),
                events = store.len()?,
                open_ms = started.elapsed().as_millis() as u64,
                "event store opened"
            );
            Ok(store)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("event store task failed: {e}")))?
    }

    /// An event store in memory, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(Connection::open_in_memory().map_err(backend)?, None, None)
    }

    /// Whether a store is open on the event database at `path`, in this process or another
    /// (its lock file is held). A store releases it last when it closes, after its checkpoint
    /// and snapshot, so `false` means the files are complete and a new store may open them.
    pub fn in_use(path: &Path) -> Result<bool, StoreError> {
        match take_lock(path) {
            Ok(_released_at_once) => Ok(false),
            Err(LockRefused::InUse) => Ok(true),
            Err(LockRefused::Failed(err)) => Err(err),
        }
    }

    fn start(
        conn: Connection,
        files: Option<Files>,
        held: Option<std::fs::File>,
    ) -> Result<Self, StoreError> {
        let store_id = create_schema(&conn)?;
        sql::create_tables(&conn)?;
        conn.execute_batch("SET checkpoint_threshold = '256MB'").map_err(backend)?;
        let columnarized = meta_u64(&conn, "columnarized_lsn")?;
        let (log, recovered) = match &files {
            Some(files) => log::Log::open(&files.log_dir, columnarized).map_err(backend)?,
            None => (log::Log::in_memory(), Vec::new()),
        };
        let recovered = recovered
            .into_iter()
            .map(|r| record::decode(r.lsn, &r.payload).map_err(backend))
            .collect::<Result<Vec<_>, _>>()?;
        let last_lsn = log.next_lsn() - 1;
        let snapshot = match &files {
            Some(files) => load_snapshot(&files.snapshot, &store_id, last_lsn),
            None => None,
        };
        let index = Arc::new(UsageIndex::default());
        let (exactly_once, next_sequence) = match snapshot {
            Some(snapshot) => {
                for (org, through, state) in snapshot.states {
                    index.restore(org, state, through)?;
                }
                (snapshot.exactly_once, snapshot.next_sequence)
            }
            None => rebuild_exactly_once(&conn, &recovered)?,
        };
        for (org, next) in &next_sequence {
            index.set_published(*org, next - 1)?;
        }
        let slots = Arc::new(RwLock::new(load_slots(&conn)?));
        let pipeline = Arc::new(Pipeline::new(columnarized));
        for pending in recovered {
            pipeline.push(pending)?;
        }
        let mut threads = Vec::new();
        {
            let (pipeline, slots, conn) =
                (pipeline.clone(), slots.clone(), conn.try_clone().map_err(backend)?);
            threads.push(
                std::thread::Builder::new()
                    .name("odometer-columnarizer".into())
                    .spawn(move || columnar::run(pipeline, conn, slots))
                    .map_err(backend)?,
            );
        }
        let (builds, queued) = mpsc::channel::<Build>();
        let build_gate = Arc::new(BuildGate::default());
        {
            let (pipeline, conn) = (pipeline.clone(), conn.try_clone().map_err(backend)?);
            let gate = build_gate.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("odometer-index-builder".into())
                    .spawn(move || build_states(queued, &pipeline, &conn, &gate))
                    .map_err(backend)?,
            );
        }
        let reader = conn.try_clone().map_err(backend)?;
        let admin = conn.try_clone().map_err(backend)?;
        drop(conn);
        let writer =
            Writer { log, exactly_once, next_sequence, failed: None, stats: Default::default() };
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                queue: Mutex::default(),
                pipeline,
                reader: Mutex::new(reader),
                admin: Mutex::new(admin),
                slots,
                index,
                builds: Mutex::new(Some(builds)),
                build_gate,
                threads: Mutex::new(threads),
                paths: PathCounters::default(),
                files,
                store_id,
                _held: held,
            }),
        })
    }

    /// How many distinct events are stored (the size of the exactly-once index).
    pub fn len(&self) -> Result<usize, StoreError> {
        Ok(lock(&self.inner.writer)?.exactly_once.len())
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// How usage questions were answered so far (for tests and diagnostics).
    pub fn usage_paths(&self) -> UsagePaths {
        let paths = &self.inner.paths;
        UsagePaths {
            index: paths.index.load(Ordering::Relaxed),
            pushed_down: paths.pushed_down.load(Ordering::Relaxed),
            reference: paths.reference.load(Ordering::Relaxed),
            pushdown_errors: paths.pushdown_errors.load(Ordering::Relaxed),
        }
    }

    /// What the writer did since the store was opened (group commits, batches merged).
    pub fn append_stats(&self) -> Result<AppendStats, StoreError> {
        Ok(lock(&self.inner.writer)?.stats)
    }

    /// Holds index builds that have not started until the answer is dropped: for tests, and
    /// to keep a bulk import from sharing the machine with builds. Questions of the states
    /// waiting are answered from the events meanwhile.
    pub fn hold_index_builds(&self) -> BuildHold {
        self.inner.build_gate.set(true);
        BuildHold { gate: self.inner.build_gate.clone() }
    }

    /// Waits until DuckDB holds every event acknowledged so far (for tests and the bench).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.pipeline.barrier()).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("event store task failed: {e}")))?
}

/// Whether builds wait (see [`DuckEventStore::hold_index_builds`]).
#[derive(Debug, Default)]
struct BuildGate {
    held: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl BuildGate {
    fn set(&self, held: bool) {
        if let Ok(mut flag) = self.held.lock() {
            *flag = held;
            self.opened.notify_all();
        }
    }

    /// Waits while held; `false` when the store is closing (`stop`).
    fn wait_open(&self, stop: &dyn Fn() -> bool) {
        let Ok(mut held) = self.held.lock() else { return };
        while *held && !stop() {
            match self.opened.wait_timeout(held, std::time::Duration::from_millis(50)) {
                Ok((next, _)) => held = next,
                Err(_) => return,
            }
        }
    }
}

/// Index builds wait while this lives.
#[derive(Debug)]
pub struct BuildHold {
    gate: Arc<BuildGate>,
}

impl Drop for BuildHold {
    fn drop(&mut self) {
        self.gate.set(false);
    }
}

impl Drop for Inner {
    /// Closes the store: the columnarizer copies what is left, builds stop, DuckDB is
    /// checkpointed (so the next start replays no DuckDB log), and the snapshot is written.
    /// After a crash instead, the log is copied again and the indexes rebuilt: nothing
    /// acknowledged is lost either way.
    fn drop(&mut self) {
        self.pipeline.stop();
        let _ = self.index.cancel_all();
        self.build_gate.set(false);
        if let Ok(mut builds) = self.builds.lock() {
            builds.take();
        }
        if let Ok(mut threads) = self.threads.lock() {
            for thread in threads.drain(..) {
                let _ = thread.join();
            }
        }
        if let Ok(conn) = self.admin.lock() {
            if let Err(err) = conn.execute_batch("CHECKPOINT") {
                tracing::warn!(%err, "checkpoint on close failed; the next start replays the log");
            }
        }
        if let Err(err) = self.write_snapshot() {
            tracing::warn!(%err, "no snapshot written at close; the next start rebuilds the indexes");
        }
    }
}

impl Inner {
    fn write_snapshot(&self) -> Result<(), StoreError> {
        let Some(files) = &self.files else { return Ok(()) };
        let writer = lock(&self.writer)?;
        if writer.failed.is_some() || !self.pipeline.is_drained()? {
            return Err(backend("records are left to copy"));
        }
        let mut writer = writer;
        let columnarized = self.pipeline.columnarized()?;
        writer.log.release_through(columnarized).map_err(backend)?;
        let lsn = writer.log.next_lsn() - 1;
        let entries = self.index.complete_states()?;
        let guards = entries
            .iter()
            .map(|(org, entry)| Ok((*org, index::read(&entry.state)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let states: Vec<_> =
            guards.iter().map(|(org, t)| (*org, t.applied_through, &t.state)).collect();
        let started = std::time::Instant::now();
        snapshot::write(
            &files.snapshot,
            &self.store_id,
            lsn,
            &writer.next_sequence,
            &writer.exactly_once,
            &states,
        )
        .map_err(backend)?;
        tracing::info!(
            lsn,
            states = states.len(),
            ms = started.elapsed().as_millis() as u64,
            "event store snapshot written"
        );
        Ok(())
    }
}

/// Reads the snapshot if it belongs to this database and is as new as the log, and deletes
/// it whatever it held.
fn load_snapshot(path: &Path, store_id: &str, last_lsn: u64) -> Option<snapshot::Snapshot> {
    let started = std::time::Instant::now();
    let read = snapshot::read(path);
    if let Err(err) = std::fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%err, "cannot delete the snapshot");
        }
    }
    match read {
        Ok(Some(s)) if s.store_id == store_id && s.lsn == last_lsn => {
            tracing::info!(ms = started.elapsed().as_millis() as u64, "event store snapshot read");
            Some(s)
        }
        Ok(Some(s)) => {
            tracing::info!(
                snapshot_lsn = s.lsn,
                last_lsn,
                "the snapshot is older than the log; rebuilding the indexes"
            );
            None
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(%err, "unreadable snapshot; rebuilding the indexes");
            None
        }
    }
}

/// The exactly-once index and each organization's next sequence, from every stored row and
/// the recovered log records.
fn rebuild_exactly_once(
    conn: &Connection,
    recovered: &[Arc<record::Pending>],
) -> Result<(ExactlyOnce, HashMap<OrganizationId, u64>), StoreError> {
    let mut next_sequence: HashMap<OrganizationId, u64> = HashMap::new();
    {
        let mut stmt =
            conn.prepare("SELECT org, max(seq) FROM events GROUP BY org").map_err(backend)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?)))
            .map_err(backend)?;
        for row in rows {
            let (org, last) = row.map_err(backend)?;
            let org: OrganizationId =
                org.parse().map_err(|_| backend(format!("stored organization id {org}")))?;
            next_sequence.insert(org, last + 1);
        }
    }
    let stored: u64 =
        conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).map_err(backend)?;
    let pending: usize = recovered.iter().map(|r| r.events()).sum();
    let mut index = ExactlyOnce::with_capacity(usize::try_from(stored).unwrap_or(0) + pending);
    // Read in Arrow batches of plain 64-bit halves: the row-at-a-time API costs far more per
    // value than the values themselves.
    let mut stmt =
        conn.prepare("SELECT fp_hi, fp_lo, content_lo, seq FROM events").map_err(backend)?;
    for batch in stmt.stream_arrow([]).map_err(backend)? {
        let batch = batch.map_err(backend)?;
        let column = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| backend("unexpected column type in the events index scan"))
        };
        let (fp_hi, fp_lo, content_lo, seq) = (column(0)?, column(1)?, column(2)?, column(3)?);
        for row in 0..batch.num_rows() {
            let fingerprint = (u128::from(fp_hi.value(row)) << 64) | u128::from(fp_lo.value(row));
            let content = u128::from(content_lo.value(row));
            index.insert(fingerprint, Entry::new(content, seq.value(row)));
        }
    }
    for record in recovered {
        for chunk in &record.chunks {
            for (stored, &(fingerprint, content)) in chunk.events.iter().zip(&chunk.keyed) {
                index.insert(fingerprint, Entry::new(content, stored.sequence));
                let next = next_sequence.entry(chunk.org).or_insert(1);
                *next = (*next).max(stored.sequence + 1);
            }
        }
    }
    Ok((index, next_sequence))
}

/// A value of `odometer_meta` as a number (0 when absent).
fn meta_u64(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    match meta(conn, key)? {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| backend(format!("odometer_meta {key} is {text}"))),
    }
}

fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT value FROM odometer_meta WHERE key = ?", [key], |row| row.get(0))
        .map(Some)
        .or_else(|e| match e {
            duckdb::Error::QueryReturnedNoRows => Ok(None),
            other => Err(backend(other)),
        })
}

/// Why the lock file of an event database could not be taken.
enum LockRefused {
    /// Another store holds it.
    InUse,
    Failed(StoreError),
}

impl LockRefused {
    fn into_error(self, path: &Path) -> StoreError {
        match self {
            Self::InUse => backend(format!(
                "the event store {} is already open (is another odometer using this data directory?)",
                path.display()
            )),
            Self::Failed(err) => err,
        }
    }
}

/// Takes the lock file beside the event database at `path` (`events.lock` for
/// `events.duckdb`): one store at a time may have the files open, in any process. Two stores
/// on the same files (a second server on the same data directory, or a reopen in the same
/// process before the first store closed) would each copy the log and write the snapshot the
/// other reads. The lock is an advisory `flock`, released by the kernel when its file is closed,
/// so a crashed process leaves none behind.
fn take_lock(path: &Path) -> Result<std::fs::File, LockRefused> {
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            LockRefused::Failed(backend(format!("cannot open {}: {e}", lock_path.display())))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockRefused::InUse),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LockRefused::Failed(backend(format!("cannot lock {}: {e}", lock_path.display()))))
        }
    }
}

/// Creates the tables of a new database, upgrades a version-2 one, or checks that an existing
/// one has this build's layout; answers the store's id.
fn create_schema(conn: &Connection) -> Result<String, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS odometer_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    )
    .map_err(backend)?;
    match meta(conn, "events_schema_version")?.as_deref() {
        None | Some("2") | Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(backend(format!(
                "the events database has layout version {other}, written by an earlier development \
                 build; this build reads versions 2 and {SCHEMA_VERSION} (no release ever wrote \
                 version {other}: export its events with that build and import them here)"
            )))
        }
    }
    conn.execute_batch(&SCHEMA.replace("{typed}", slots::column_definitions())).map_err(backend)?;
    let fresh_id = uuid::Uuid::now_v7().to_string();
    conn.execute_batch("BEGIN TRANSACTION").map_err(backend)?;
    for (key, value) in [
        ("store_id", fresh_id.as_str()),
        ("columnarized_lsn", "0"),
        ("events_schema_version", SCHEMA_VERSION),
    ] {
        conn.execute(
            "INSERT INTO odometer_meta VALUES (?, ?) ON CONFLICT DO NOTHING",
            [key, value],
        )
        .map_err(backend)?;
    }
    conn.execute(
        "UPDATE odometer_meta SET value = ? WHERE key = 'events_schema_version'",
        [SCHEMA_VERSION],
    )
    .map_err(backend)?;
    conn.execute_batch("COMMIT").map_err(backend)?;
    meta(conn, "store_id")?.ok_or_else(|| backend("the events database has no store id"))
}

/// The slot registry as stored, with the slot columns the table has.
fn load_slots(conn: &Connection) -> Result<SlotRegistry, StoreError> {
    let mut registry = SlotRegistry::default();
    {
        let mut stmt = conn
            .prepare(
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_name = 'events' ORDER BY ordinal_position",
            )
            .map_err(backend)?;
        let names = stmt.query_map([], |row| row.get::<_, String>(0)).map_err(backend)?;
        for name in names {
            if let Some(column) = slots::SlotColumn::parse(&name.map_err(backend)?) {
                registry.columns.push(column);
            }
        }
    }
    let mut stmt = conn.prepare("SELECT org, key, slot FROM property_slots").map_err(backend)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<i32>>(2)?))
        })
        .map_err(backend)?;
    for row in rows {
        let (org, key, slot) = row.map_err(backend)?;
        let org = registry.orgs.entry(org).or_default();
        let place = match slot.and_then(|i| usize::try_from(i).ok()) {
            Some(i) if i < slots::SLOTS => {
                org.used = org.used.max(i + 1);
                SlotOf::Slot(i)
            }
            _ => SlotOf::Spilled,
        };
        org.keys.insert(key, place);
    }
    Ok(registry)
}

/// The builder thread: folds the stored events into new states, one (organization, event
/// code) scan for all the states queued together that read it.
fn build_states(
    queued: mpsc::Receiver<Build>,
    pipeline: &Pipeline,
    conn: &Connection,
    gate: &BuildGate,
) {
    while let Ok(first) = queued.recv() {
        gate.wait_open(&|| first.entry.is_cancelled());
        let mut builds = vec![first];
        builds.extend(queued.try_iter());
        let mut groups: HashMap<(OrganizationId, String), Vec<Build>> = HashMap::new();
        for build in builds {
            groups.entry((build.org, build.code.clone())).or_default().push(build);
        }
        for ((org, code), builds) in groups {
            let started = std::time::Instant::now();
            match build_group(pipeline, conn, org, &code, &builds) {
                Ok(events) => tracing::info!(
                    %org,
                    code,
                    states = builds.len(),
                    events,
                    ms = started.elapsed().as_millis() as u64,
                    "usage index states built"
                ),
                Err(err) => {
                    tracing::error!(%err, %org, code, "building usage index states failed; their questions are answered from the events");
                }
            }
        }
    }
}

/// Events read from DuckDB per step of a build.
const BUILD_STEP: usize = 8192;

fn build_group(
    pipeline: &Pipeline,
    conn: &Connection,
    org: OrganizationId,
    code: &str,
    builds: &[Build],
) -> Result<u64, StoreError> {
    // DuckDB must hold every event the states were registered after.
    pipeline.barrier()?;
    let through = builds.iter().map(|b| b.through).max().unwrap_or(0);
    let org_text = org.to_string();
    let total: u64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE org = ? AND code = ? AND seq <= ?",
            duckdb::params![org_text, code, through],
            |row| row.get(0),
        )
        .map_err(backend)?;
    for build in builds {
        build.entry.set_to_build(total);
    }
    let mut stmt = conn
        .prepare(
            "SELECT seq, customer, transaction_id, ts, ingested_at, properties FROM events \
             WHERE org = ? AND code = ? AND seq <= ?",
        )
        .map_err(backend)?;
    let mut folded = 0u64;
    let mut events: Vec<StoredEvent> = Vec::with_capacity(BUILD_STEP);
    for batch in stmt.stream_arrow(duckdb::params![org_text, code, through]).map_err(backend)? {
        if builds.iter().all(|b| b.entry.is_cancelled()) {
            return Ok(folded);
        }
        let batch = batch.map_err(backend)?;
        events.clear();
        decode_events(&batch, code, &mut events)?;
        for build in builds {
            if build.entry.is_cancelled() {
                continue;
            }
            let mut tracked = index::write(&build.entry.state)?;
            for stored in events.iter().filter(|e| e.sequence <= build.through) {
                tracked.state.apply(stored);
            }
            drop(tracked);
            build.entry.add_built(events.len() as u64);
        }
        folded += events.len() as u64;
    }
    for build in builds {
        build.entry.finish_build();
    }
    Ok(folded)
}

/// Events of one code from an Arrow batch of `seq, customer, transaction_id, ts, ingested_at,
/// properties`.
fn decode_events(
    batch: &duckdb::arrow::record_batch::RecordBatch,
    code: &str,
    out: &mut Vec<StoredEvent>,
) -> Result<(), StoreError> {
    let unexpected = || backend("unexpected column type in an events scan");
    let seq = batch.column(0).as_any().downcast_ref::<UInt64Array>().ok_or_else(unexpected)?;
    let customer = batch.column(1).as_any().downcast_ref::<StringArray>().ok_or_else(unexpected)?;
    let tx = batch.column(2).as_any().downcast_ref::<StringArray>().ok_or_else(unexpected)?;
    let ts = batch.column(3).as_any().downcast_ref::<Int64Array>().ok_or_else(unexpected)?;
    let ingested = batch.column(4).as_any().downcast_ref::<Int64Array>().ok_or_else(unexpected)?;
    let props = batch.column(5).as_any().downcast_ref::<StringArray>().ok_or_else(unexpected)?;
    for row in 0..batch.num_rows() {
        let properties: Map<String, Value> =
            serde_json::from_str(props.value(row)).map_err(backend)?;
        out.push(StoredEvent {
            event: Event {
                transaction_id: tx.value(row).to_owned(),
                code: code.to_owned(),
                customer: customer.value(row).to_owned(),
                timestamp: instant(ts.value(row))?,
                properties,
            },
            sequence: seq.value(row),
            ingested_at: instant(ingested.value(row))?,
        });
    }
    Ok(())
}

const EVENT_COLUMNS: &str = "seq, customer, transaction_id, code, ts, ingested_at, properties";

fn read_events(
    conn: &Connection,
    sql: &str,
    params: &[&dyn duckdb::ToSql],
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(backend)?;
    let rows = stmt
        .query_map(params, |row| {
            Ok((
                row.get::<_, u64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, String>(6)?,
            ))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (sequence, customer, transaction_id, code, ts, ingested_at, properties) =
            row.map_err(backend)?;
        let properties: Map<String, Value> = serde_json::from_str(&properties).map_err(backend)?;
        out.push(StoredEvent {
            event: Event { transaction_id, code, customer, timestamp: instant(ts)?, properties },
            sequence,
            ingested_at: instant(ingested_at)?,
        });
    }
    Ok(out)
}

/// What events of several customers a usage read needs, in one scan.
struct EventScan<'a> {
    customers: &'a [String],
    code: &'a str,
    /// `[from, to)` ranges of timestamps (any of them).
    ranges: Vec<(i64, i64)>,
    /// Ingested at or before (microseconds).
    as_of: i64,
    /// Sequence at most.
    through: u64,
}

/// The events of a scan, grouped by customer, in sequence order.
fn scan_events(
    conn: &Connection,
    org: &str,
    scan: &EventScan<'_>,
) -> Result<HashMap<String, Vec<StoredEvent>>, StoreError> {
    let mut grouped: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    if scan.customers.is_empty() || scan.ranges.is_empty() {
        return Ok(grouped);
    }
    let placeholders = vec!["?"; scan.customers.len()].join(", ");
    let ranges = vec!["(ts >= ? AND ts < ?)"; scan.ranges.len()].join(" OR ");
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND code = ? AND ({ranges}) \
         AND ingested_at <= ? AND seq <= ? AND customer IN ({placeholders}) ORDER BY seq"
    );
    let mut params: Vec<&dyn duckdb::ToSql> = vec![&org, &scan.code];
    for (from, to) in &scan.ranges {
        params.push(from);
        params.push(to);
    }
    params.push(&scan.as_of);
    params.push(&scan.through);
    params.extend(scan.customers.iter().map(|c| c as &dyn duckdb::ToSql));
    for stored in read_events(conn, &sql, &params)? {
        grouped.entry(stored.event.customer.clone()).or_default().push(stored);
    }
    Ok(grouped)
}

/// The events a reference-engine answer needs: the customers' events of the metric's code
/// that happened before the period's end (from its start only when nothing carries over),
/// ingested by `as_of`.
fn usage_events(
    conn: &Connection,
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<HashMap<String, Vec<StoredEvent>>, StoreError> {
    let from = if spec.aggregation.recurring { i64::MIN } else { micros(&query.from) };
    let scan = EventScan {
        customers,
        code: &spec.event_code,
        ranges: vec![(from, micros(&query.to))],
        as_of: query.as_of.as_ref().map_or(i64::MAX, micros),
        through: u64::MAX,
    };
    scan_events(conn, org, &scan)
}

impl Inner {
    /// Usage from the stored events: pushed down when it can be, else the reference engine.
    fn usage_from_events(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        self.pipeline.barrier()?;
        let org = org.to_string();
        // Held for the whole query: no row may use a slot this query does not know.
        let registry = read_lock(&self.slots)?;
        let conn = lock(&self.reader)?;
        let paths = &self.paths;
        match pushdown::plan(&org, customers, spec, query, registry.org(&org))? {
            Ok(statement) => {
                match pushdown::run(&conn, &statement, spec, customers, query.group_limit) {
                    Ok(Outcome::Answered(results)) => {
                        paths.pushed_down.fetch_add(1, Ordering::Relaxed);
                        return Ok(results);
                    }
                    Ok(Outcome::Fallback(why)) => {
                        tracing::debug!(why, "usage answered by the reference engine");
                    }
                    Err(pushdown::PushdownError::Usage(err)) => return Err(err.into()),
                    Err(err) => {
                        paths.pushdown_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%err, "pushed-down usage failed; the reference engine answers");
                    }
                }
            }
            Err(why) => tracing::debug!(why, "usage answered by the reference engine"),
        }
        paths.reference.fetch_add(1, Ordering::Relaxed);
        let grouped = usage_events(&conn, &org, customers, spec, query)?;
        drop(conn);
        drop(registry);
        let mut results = Vec::with_capacity(customers.len());
        for customer in customers {
            // Borrowed, not taken out of the map: a customer listed twice is answered twice
            // from the same events.
            let events = grouped.get(customer).map_or(&[][..], Vec::as_slice);
            results.push(compute_usage(spec, events, query)?);
        }
        Ok(results)
    }

    /// Usage of each customer with the path that computed it.
    fn usage_answers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
        choice: PathChoice,
    ) -> Result<Vec<UsageAnswer>, UsageQueryError> {
        let from_events = |reason: EventsReason| -> Result<Vec<UsageAnswer>, UsageQueryError> {
            let results = self.usage_from_events(org, customers, spec, query)?;
            let path = UsagePath::Events(reason);
            Ok(results.into_iter().map(|result| UsageAnswer { result, path }).collect())
        };
        if choice == PathChoice::Events {
            return from_events(EventsReason::Requested);
        }
        let Some(key) = DefinitionKey::of(spec) else {
            return from_events(EventsReason::CustomSql);
        };
        let Some(entry) = self.index.lookup(org, &key)? else {
            return from_events(EventsReason::NotIndexed);
        };
        if entry.is_building() {
            return from_events(EventsReason::Building);
        }
        // Plan under the state's lock, read the edge events without it, answer under it.
        let (plan, through, by_events) = {
            let tracked = index::read(&entry.state)?;
            let plan = match tracked.state.plan(spec, query)? {
                Ok(plan) => plan,
                Err(fallback) => return from_events(reason_of(fallback)),
            };
            let by_events: Vec<usize> = (0..customers.len())
                .filter(|&i| tracked.state.customer_fallback(&customers[i]).is_some())
                .collect();
            (plan, tracked.applied_through, by_events)
        };
        let edges = if plan.has_edges() {
            self.pipeline.barrier()?;
            let ranges = plan.edge_ranges().iter().map(|(a, b)| (micros(a), micros(b))).collect();
            let scan = EventScan {
                customers,
                code: &spec.event_code,
                ranges,
                as_of: query.as_of.as_ref().map_or(i64::MAX, micros),
                through,
            };
            let conn = lock(&self.reader)?;
            scan_events(&conn, &org.to_string(), &scan)?
        } else {
            HashMap::new()
        };
        let mut answers: Vec<Option<UsageAnswer>> = vec![None; customers.len()];
        {
            let tracked = index::read(&entry.state)?;
            let path = UsagePath::Index { edges: plan.has_edges() };
            for (i, customer) in customers.iter().enumerate() {
                if by_events.contains(&i) {
                    continue;
                }
                let own = edges.get(customer).map_or(&[][..], Vec::as_slice);
                let result = tracked.state.answer(spec, &plan, customer, own)?;
                answers[i] = Some(UsageAnswer { result, path });
            }
        }
        self.paths.index.fetch_add(1, Ordering::Relaxed);
        if !by_events.is_empty() {
            let named: Vec<String> = by_events.iter().map(|&i| customers[i].clone()).collect();
            let results = self.usage_from_events(org, &named, spec, query)?;
            for (&i, result) in by_events.iter().zip(results) {
                let path = UsagePath::Events(EventsReason::Removals);
                answers[i] = Some(UsageAnswer { result, path });
            }
        }
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| backend("a usage answer is missing").into()))
            .collect()
    }
}

fn reason_of(fallback: Fallback) -> EventsReason {
    match fallback {
        Fallback::AsOf => EventsReason::AsOf,
        Fallback::Unaligned => EventsReason::Unaligned,
        Fallback::Removals => EventsReason::Removals,
        Fallback::Inexact => EventsReason::Inexact,
    }
}

#[async_trait]
impl EventStore for DuckEventStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || {
            lock(&inner.reader)?.query_row("SELECT 1", [], |_| Ok(())).map_err(backend)
        })
        .await
    }

    async fn append(
        &self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let inner = self.inner.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        blocking(move || {
            // The per-event work that needs no writer is done here, in parallel: hashing and
            // the properties' JSON text.
            let keyed = events
                .iter()
                .map(|e| (event_fingerprint(org, &e.customer, &e.transaction_id), content_hash(e)))
                .collect();
            let properties = events
                .iter()
                .map(|e| serde_json::to_string(&e.properties).map_err(backend))
                .collect::<Result<_, _>>()?;
            lock(&inner.queue)?.push(Request { org, events, keyed, properties, atomic, reply });
            // Whoever holds the writer next writes everything queued, this request included
            // (unless an earlier holder already took it).
            let targets =
                Targets { pipeline: &inner.pipeline, index: &inner.index, reader: &inner.reader };
            writer::write_queued(&mut *lock(&inner.writer)?, &inner.queue, &targets)
        })
        .await?;
        answer.await.map_err(|_| StoreError::Backend("the event writer dropped a batch".into()))?
    }

    async fn get_event(
        &self,
        org: OrganizationId,
        customer: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let fingerprint = event_fingerprint(org, customer, transaction_id);
        let inner = self.inner.clone();
        // The index sits behind the writer lock, which an append holds through its log write:
        // wait for it on the blocking pool, not on the async runtime.
        blocking(move || {
            let Some(entry) = lock(&inner.writer)?.exactly_once.get(fingerprint) else {
                return Ok(None);
            };
            let targets =
                Targets { pipeline: &inner.pipeline, index: &inner.index, reader: &inner.reader };
            writer::stored_event(&targets, org, entry.sequence).map(Some)
        })
        .await
    }

    async fn list_events(
        &self,
        org: OrganizationId,
        params: &EventListParams,
    ) -> Result<Page<StoredEvent>, StoreError> {
        let after: u64 = match &params.cursor {
            None => 0,
            Some(cursor) => cursor.parse().map_err(|_| StoreError::InvalidCursor)?,
        };
        let params = params.clone();
        let inner = self.inner.clone();
        blocking(move || {
            inner.pipeline.barrier()?;
            let org = org.to_string();
            let customer = params.customer.clone().unwrap_or_default();
            let code = params.code.clone().unwrap_or_default();
            let from = params.from.as_ref().map_or(i64::MIN, micros);
            let to = params.to.as_ref().map_or(i64::MAX, micros);
            let limit = u64::from(params.limit.clamp(1, 1000));
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND seq > ? \
                 AND (? = '' OR customer = ?) AND (? = '' OR code = ?) AND ts >= ? AND ts < ? \
                 ORDER BY seq LIMIT ?"
            );
            let fetch = limit + 1;
            let conn = lock(&inner.reader)?;
            let mut items = read_events(
                &conn,
                &sql,
                &[&org, &after, &customer, &customer, &code, &code, &from, &to, &fetch],
            )?;
            let next_cursor = if items.len() as u64 > limit {
                items.truncate(limit as usize);
                items.last().map(|e| e.sequence.to_string())
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn customer_events(
        &self,
        org: OrganizationId,
        customer: &str,
        code: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.inner.clone();
        let (customer, code) = (customer.to_owned(), code.to_owned());
        blocking(move || {
            inner.pipeline.barrier()?;
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND customer = ? AND code = ? \
                 AND ts >= ? AND ts < ? ORDER BY seq"
            );
            let org = org.to_string();
            let (from, to) = (from.as_ref().map_or(i64::MIN, micros), micros(&to));
            let conn = lock(&inner.reader)?;
            read_events(&conn, &sql, &[&org, &customer, &code, &from, &to])
        })
        .await
    }

    async fn usage(
        &self,
        org: OrganizationId,
        customer: &str,
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<UsageResult, UsageQueryError> {
        let customers = [customer.to_owned()];
        let mut results = self.usage_of_customers(org, &customers, spec, query).await?;
        results
            .pop()
            .ok_or_else(|| StoreError::Backend("usage query returned nothing".into()).into())
    }

    async fn usage_of_customers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        let answers = self.usage_answers(org, customers, spec, query, PathChoice::Any).await?;
        Ok(answers.into_iter().map(|a| a.result).collect())
    }

    async fn usage_answers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
        choice: PathChoice,
    ) -> Result<Vec<UsageAnswer>, UsageQueryError> {
        let inner = self.inner.clone();
        let (customers, spec, query) = (customers.to_vec(), spec.clone(), query.clone());
        tokio::task::spawn_blocking(move || {
            if spec.aggregation.kind == AggregationType::CustomSql {
                inner.pipeline.barrier()?;
                let org_text = org.to_string();
                // Held for the whole query: no row may use a slot this query does not know.
                let registry = read_lock(&inner.slots)?;
                let conn = lock(&inner.reader)?;
                let results = sql::usage(
                    &conn,
                    registry.slots_with_columns(),
                    registry.org(&org_text),
                    &org_text,
                    &customers,
                    &spec,
                    &query,
                )?;
                let path = UsagePath::Events(EventsReason::CustomSql);
                return Ok(results
                    .into_iter()
                    .map(|result| UsageAnswer { result, path })
                    .collect());
            }
            inner.usage_answers(org, &customers, &spec, &query, choice)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("usage task failed: {e}")))?
    }

    async fn index_definitions(
        &self,
        org: OrganizationId,
        specs: &[MetricSpec],
    ) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        let specs = specs.to_vec();
        blocking(move || {
            let builds = inner.index.define(org, &specs)?;
            if builds.is_empty() {
                return Ok(());
            }
            let sender = lock(&inner.builds)?;
            let Some(sender) = sender.as_ref() else {
                return Err(backend("the event store is closing"));
            };
            for build in builds {
                sender.send(build).map_err(|_| backend("the index builder stopped"))?;
            }
            Ok(())
        })
        .await
    }

    async fn index_status(
        &self,
        org: OrganizationId,
        spec: &MetricSpec,
    ) -> Result<IndexStatus, StoreError> {
        let Some(key) = DefinitionKey::of(spec) else { return Ok(IndexStatus::NotIndexed) };
        match self.inner.index.lookup(org, &key)? {
            Some(entry) => entry.status(),
            None => Ok(IndexStatus::NotIndexed),
        }
    }

    async fn create_usage_table(
        &self,
        org: OrganizationId,
        table: odometer_store::usage_tables::UsageTable,
    ) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        blocking(move || sql::create_usage_table(&*lock(&inner.admin)?, &org.to_string(), &table))
            .await
    }

    async fn usage_tables(
        &self,
        org: OrganizationId,
    ) -> Result<Vec<odometer_store::usage_tables::UsageTable>, StoreError> {
        let inner = self.inner.clone();
        blocking(move || sql::usage_tables(&*lock(&inner.reader)?, &org.to_string())).await
    }

    async fn idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
    ) -> Result<Option<odometer_store::usage_tables::IdempotentResponse>, StoreError> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        blocking(move || sql::idempotent_response(&*lock(&inner.reader)?, &org.to_string(), &key))
            .await
    }

    async fn keep_idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
        response: odometer_store::usage_tables::IdempotentResponse,
    ) -> Result<odometer_store::usage_tables::IdempotentResponse, StoreError> {
        let (inner, key) = (self.inner.clone(), key.to_owned());
        blocking(move || {
            sql::keep_idempotent_response(&*lock(&inner.admin)?, &org.to_string(), &key, response)
        })
        .await
    }
}
