//! The DuckDB event store: exactly-once appends checked against an in-memory fingerprint
//! index, durable commits, and usage computed from the stored events.
//!
//! Exactly-once does not use a DuckDB key: a `PRIMARY KEY` makes appends slow as its in-memory
//! index grows. Instead every event row carries the 128-bit fingerprint of its identity
//! `(organization, customer, transaction_id)` and a 128-bit hash of its content; at start the
//! store reads those two columns back into a hash map, and appends check the map under the
//! writer lock. A batch is written in one transaction and the map is only updated after the
//! commit returned, so an event is acknowledged only once it is durable, and a crash between
//! the commit and the map update loses nothing: the next start rebuilds the map from the rows.

mod pushdown;
mod rows;
mod slots;
mod sql;

pub use sql::{reference_usage, set_sql_time_limit};

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use duckdb::arrow::array::{Array, UInt64Array};
use duckdb::Connection;
use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::intake::{
    batch_rejection, conflict_rejection, content_hash, event_fingerprint, EventOutcome,
};
use odometer_core::metric::AggregationType;
use odometer_core::usage::{UsageQuery, UsageResult};
use odometer_core::{time, MetricSpec, OrganizationId};
use odometer_store::events::{EventListParams, EventStore, UsageQueryError};
use odometer_store::{Page, StoreError};
use serde_json::{Map, Value};

use pushdown::Outcome;
use slots::{SlotOf, SlotRegistry};

/// The version of the events database's layout this build writes.
const SCHEMA_VERSION: &str = "2";

/// The events table and the slot registry (see [`slots`]); `{typed}` is the slot columns.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS odometer_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
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

/// Hashes a fingerprint by its low 64 bits. Fingerprints are already uniformly distributed
/// (they are SHA-256 output), so hashing them again, as the default SipHash does, only costs
/// time: rebuilding the index of 10M events is most of a cold start.
#[derive(Debug, Default, Clone, Copy)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128; fold them in (FNV-1a) to stay correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

type FingerprintMap<V> = HashMap<u128, V, std::hash::BuildHasherDefault<FingerprintHasher>>;

/// What the index keeps per stored event identity.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    content: u128,
    /// The event's sequence within its organization.
    sequence: u64,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// Fingerprint of `(organization, customer, transaction_id)` to what was stored under it.
    index: FingerprintMap<IndexEntry>,
    /// Each organization's next sequence (semantics 1.5: from 1, strictly increasing).
    next_sequence: HashMap<String, u64>,
}

/// Events in DuckDB (`events.duckdb` in the data directory).
#[derive(Clone)]
pub struct DuckEventStore {
    writer: Arc<Mutex<Writer>>,
    /// Batches waiting for the writer (see [`write_queued`]).
    queue: Arc<Mutex<Vec<Request>>>,
    /// A connection for registering new property keys' slots, so that needs no writer.
    registrar: Arc<Mutex<Connection>>,
    /// A second connection for reads, so queries do not wait behind appends.
    reader: Arc<Mutex<Connection>>,
    /// Which slot column holds each organization's property keys.
    slots: Arc<RwLock<SlotRegistry>>,
    paths: Arc<PathCounters>,
}

/// How usage questions were answered, since the store was opened.
#[derive(Debug, Default)]
struct PathCounters {
    pushed_down: AtomicU64,
    reference: AtomicU64,
    pushdown_errors: AtomicU64,
}

/// How many usage questions (calls of `usage` or `usage_of_customers`) were answered by a
/// pushed-down statement, by the reference engine over the stored events, and how many
/// pushed-down statements failed (and were answered by the reference engine instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePaths {
    pub pushed_down: u64,
    pub reference: u64,
    pub pushdown_errors: u64,
}

impl Drop for Writer {
    /// Folds the write-ahead log into the database file when the store closes, so the next
    /// start does not replay it (the log may hold up to `checkpoint_threshold` of rows). After
    /// a crash the log is replayed instead: nothing committed is lost either way.
    fn drop(&mut self) {
        if let Err(err) = self.conn.execute_batch("CHECKPOINT") {
            tracing::warn!(%err, "checkpoint on close failed; the next start replays the log");
        }
    }
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("event store task failed: {e}")))?
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
    /// Opens (creating if needed) the event database at `path` and rebuilds the exactly-once
    /// index from it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(backend)?;
            }
            let started = std::time::Instant::now();
            let conn = Connection::open(&path).map_err(backend)?;
            let opened = started.elapsed();
            let store = Self::from_connection(conn)?;
            tracing::info!(
                path = %path.display(),
                events = store.len()?,
                open_ms = opened.as_millis() as u64,
                index_ms = (started.elapsed() - opened).as_millis() as u64,
                "event store opened"
            );
            Ok(store)
        })
        .await
    }

    /// An event store in memory, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::from_connection(Connection::open_in_memory().map_err(backend)?)
    }

    fn from_connection(conn: Connection) -> Result<Self, StoreError> {
        create_schema(&conn)?;
        sql::create_tables(&conn)?;
        conn.execute_batch("SET checkpoint_threshold = '256MB'").map_err(backend)?;
        let slots = Arc::new(RwLock::new(load_slots(&conn)?));
        // Each organization's next sequence, from one aggregate query.
        let mut next_sequence: HashMap<String, u64> = HashMap::new();
        {
            let mut stmt =
                conn.prepare("SELECT org, max(seq) FROM events GROUP BY org").map_err(backend)?;
            let rows = stmt
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?)))
                .map_err(backend)?;
            for row in rows {
                let (org, last) = row.map_err(backend)?;
                next_sequence.insert(org, last + 1);
            }
        }
        // The exactly-once index, sized up front: rebuilding it is most of a cold start.
        let stored: u64 =
            conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).map_err(backend)?;
        let mut index = FingerprintMap::with_capacity_and_hasher(
            usize::try_from(stored).unwrap_or(0),
            Default::default(),
        );
        // Read in Arrow batches of plain 64-bit halves: the row-at-a-time API costs far more
        // per value than the values themselves.
        let mut stmt = conn
            .prepare("SELECT fp_hi, fp_lo, content_hi, content_lo, seq FROM events")
            .map_err(backend)?;
        for batch in stmt.stream_arrow([]).map_err(backend)? {
            let batch = batch.map_err(backend)?;
            let column = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .ok_or_else(|| backend("unexpected column type in the events index scan"))
            };
            let (fp_hi, fp_lo, content_hi, content_lo, seq) =
                (column(0)?, column(1)?, column(2)?, column(3)?, column(4)?);
            for row in 0..batch.num_rows() {
                let fingerprint =
                    (u128::from(fp_hi.value(row)) << 64) | u128::from(fp_lo.value(row));
                let content =
                    (u128::from(content_hi.value(row)) << 64) | u128::from(content_lo.value(row));
                index.insert(fingerprint, IndexEntry { content, sequence: seq.value(row) });
            }
        }
        drop(stmt);
        let reader = conn.try_clone().map_err(backend)?;
        let registrar = conn.try_clone().map_err(backend)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer { conn, index, next_sequence })),
            queue: Arc::default(),
            registrar: Arc::new(Mutex::new(registrar)),
            reader: Arc::new(Mutex::new(reader)),
            slots,
            paths: Arc::default(),
        })
    }

    /// How many distinct events are stored (the size of the exactly-once index).
    pub fn len(&self) -> Result<usize, StoreError> {
        Ok(lock(&self.writer)?.index.len())
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Usage of a `custom_sql` metric (see [`sql`]).
    async fn sql_usage(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        let (reader, slots) = (self.reader.clone(), self.slots.clone());
        let (customers, spec, query) = (customers.to_vec(), spec.clone(), query.clone());
        tokio::task::spawn_blocking(move || {
            let org = org.to_string();
            // Held for the whole query: no row may use a slot this query does not know.
            let registry = read_lock(&slots)?;
            let conn = lock(&reader)?;
            sql::usage(&conn, registry.org(&org), &org, &customers, &spec, &query)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("usage task failed: {e}")))?
    }

    /// How usage questions were answered so far (for tests and diagnostics).
    pub fn usage_paths(&self) -> UsagePaths {
        UsagePaths {
            pushed_down: self.paths.pushed_down.load(Ordering::Relaxed),
            reference: self.paths.reference.load(Ordering::Relaxed),
            pushdown_errors: self.paths.pushdown_errors.load(Ordering::Relaxed),
        }
    }
}

/// Creates the tables of a new database, or checks that an existing one has this build's layout.
fn create_schema(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS odometer_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    )
    .map_err(backend)?;
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM odometer_meta WHERE key = 'events_schema_version'",
            [],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            duckdb::Error::QueryReturnedNoRows => Ok(None),
            other => Err(backend(other)),
        })?;
    match version.as_deref() {
        None | Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(backend(format!(
                "the events database has layout version {other}, written by an earlier development \
                 build; this build reads version {SCHEMA_VERSION} only (no release ever wrote \
                 version {other}: export its events with that build and import them here)"
            )))
        }
    }
    conn.execute_batch(&SCHEMA.replace("{typed}", &slots::column_definitions()))
        .map_err(backend)?;
    conn.execute(
        "INSERT INTO odometer_meta VALUES ('events_schema_version', ?) ON CONFLICT DO NOTHING",
        [SCHEMA_VERSION],
    )
    .map_err(backend)?;
    Ok(())
}

/// The slot registry as stored.
fn load_slots(conn: &Connection) -> Result<SlotRegistry, StoreError> {
    let mut registry = SlotRegistry::default();
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

/// Gives every new top-level key of a batch its place, stored (through the registrar
/// connection, outside the writer lock) before the batch is queued, so before any row using it
/// can be committed (see [`slots`], the invariant). Every event of the batch counts, also those
/// that will turn out duplicates: a slot too many is harmless, a row whose slot is not stored
/// is not.
fn register_keys(
    slots: &RwLock<SlotRegistry>,
    registrar: &Mutex<Connection>,
    org: &str,
    events: &[Event],
) -> Result<(), StoreError> {
    let known = read_lock(slots)?;
    let fresh =
        |slots: Option<&slots::OrgSlots>, key: &str| slots.is_none_or(|s| s.get(key).is_none());
    let any_new = events.iter().any(|e| e.properties.keys().any(|k| fresh(known.org(org), k)));
    drop(known);
    if !any_new {
        return Ok(());
    }
    let mut registry = write_lock(slots)?;
    let mut org_slots = registry.org(org).cloned().unwrap_or_default();
    let mut added: Vec<(String, Option<i32>)> = Vec::new();
    for event in events {
        for key in event.properties.keys() {
            if let (place, true) = org_slots.assign(key) {
                let slot = match place {
                    SlotOf::Slot(i) => i32::try_from(i).ok(),
                    SlotOf::Spilled => None,
                };
                added.push((key.clone(), slot));
            }
        }
    }
    let conn = lock(registrar)?;
    let mut insert =
        conn.prepare("INSERT INTO property_slots VALUES (?, ?, ?)").map_err(backend)?;
    for (key, slot) in &added {
        insert.execute(duckdb::params![org, key, slot]).map_err(backend)?;
    }
    registry.orgs.insert(org.to_owned(), org_slots);
    Ok(())
}

/// What a row needs that does not depend on the writer: the properties' JSON text and the
/// typed slot columns, computed before the batch is queued.
struct PreparedRow {
    properties: String,
    typed: slots::TypedRow,
}

fn prepare_rows(
    slots: &RwLock<SlotRegistry>,
    org: &str,
    events: &[Event],
) -> Result<Vec<PreparedRow>, StoreError> {
    let registry = read_lock(slots)?;
    let no_slots = slots::OrgSlots::default();
    let org_slots = registry.org(org).unwrap_or(&no_slots);
    events
        .iter()
        .map(|event| {
            Ok(PreparedRow {
                properties: serde_json::to_string(&event.properties).map_err(backend)?,
                typed: slots::typed_columns(org_slots, &event.properties),
            })
        })
        .collect()
}

/// Where the first event of a conflicting key is.
enum FirstOfKey {
    Stored(u64),
    InBatch(usize),
}

/// One caller's batch, waiting for the writer.
struct Request {
    org: OrganizationId,
    events: Vec<Event>,
    /// Fingerprint and content hash of each event, computed before queueing (outside the lock).
    keyed: Vec<(u128, u128)>,
    /// Each event's row columns, computed before queueing (outside the lock).
    rows: Vec<PreparedRow>,
    atomic: bool,
    reply: tokio::sync::oneshot::Sender<Result<Vec<EventOutcome>, StoreError>>,
}

/// What a group must undo if its commit fails.
#[derive(Default)]
struct Undo {
    fingerprints: Vec<u128>,
    sequences: HashMap<String, Option<u64>>,
}

/// Writes every queued request in one transaction (group commit): concurrent batches share
/// one commit, and so one WAL flush. Each request is classified against the index, which
/// already holds the identities of the requests before it in the group; the index entries and
/// sequences a group adds are taken back if its commit fails, so outside the writer lock every
/// fingerprint in the index is in a committed row. Replies are sent only after the commit.
fn write_queued(writer: &mut Writer, queue: &Mutex<Vec<Request>>) -> Result<(), StoreError> {
    let requests = std::mem::take(&mut *lock(queue)?);
    if requests.is_empty() {
        return Ok(());
    }
    let outcome = write_group(writer, &requests);
    match outcome {
        Ok(all) => {
            for (request, outcomes) in requests.into_iter().zip(all) {
                let _ = request.reply.send(Ok(outcomes));
            }
        }
        Err(err) => {
            for request in requests {
                let _ = request.reply.send(Err(StoreError::Backend(err.to_string())));
            }
        }
    }
    Ok(())
}

fn write_group(
    writer: &mut Writer,
    requests: &[Request],
) -> Result<Vec<Vec<EventOutcome>>, StoreError> {
    writer.conn.execute_batch("BEGIN TRANSACTION").map_err(backend)?;
    let mut undo = Undo::default();
    let staged = requests
        .iter()
        .map(|r| stage(writer, r.org, &r.events, &r.keyed, &r.rows, r.atomic, &mut undo))
        .collect::<Result<Vec<_>, _>>();
    let committed = staged.and_then(|all| {
        writer.conn.execute_batch("COMMIT").map_err(backend)?;
        Ok(all)
    });
    if committed.is_err() {
        let _ = writer.conn.execute_batch("ROLLBACK");
        for fingerprint in &undo.fingerprints {
            writer.index.remove(fingerprint);
        }
        for (org, before) in undo.sequences {
            match before {
                Some(next) => writer.next_sequence.insert(org, next),
                None => writer.next_sequence.remove(&org),
            };
        }
    }
    committed
}

/// Classifies one request's events and appends its accepted ones inside the open transaction.
fn stage(
    writer: &mut Writer,
    org: OrganizationId,
    events: &[Event],
    keyed: &[(u128, u128)],
    prepared: &[PreparedRow],
    atomic: bool,
    undo: &mut Undo,
) -> Result<Vec<EventOutcome>, StoreError> {
    let org_text = org.to_string();
    // The organization's sequence before the group, for the undo (recorded once per group).
    let before = writer.next_sequence.get(&org_text).copied();
    undo.sequences.entry(org_text.clone()).or_insert(before);
    let first_sequence = before.unwrap_or(1);
    let mut sequence = first_sequence;
    // Classify every event against what is stored and what came earlier in this batch.
    let mut outcomes = Vec::with_capacity(events.len());
    let mut conflicts: Vec<(usize, FirstOfKey)> = Vec::new();
    let mut in_batch: FingerprintMap<(usize, u64)> = FingerprintMap::default();
    for (i, &(fingerprint, content)) in keyed.iter().enumerate() {
        let known = writer.index.get(&fingerprint).map(|e| (e.content, e.sequence, None));
        let earlier = in_batch.get(&fingerprint).map(|&(j, seq)| (keyed[j].1, seq, Some(j)));
        let outcome = match known.or(earlier) {
            Some((first_content, first_sequence, _)) if first_content == content => {
                EventOutcome::Duplicate { sequence: first_sequence }
            }
            Some((_, first_sequence, batch_index)) => {
                let first =
                    batch_index.map_or(FirstOfKey::Stored(first_sequence), FirstOfKey::InBatch);
                conflicts.push((i, first));
                // Filled in below, once the first event is at hand.
                EventOutcome::Duplicate { sequence: 0 }
            }
            None => {
                in_batch.insert(fingerprint, (i, sequence));
                sequence += 1;
                EventOutcome::Accepted { sequence: sequence - 1 }
            }
        };
        outcomes.push(outcome);
    }
    for (i, first) in conflicts {
        let first_event = match first {
            FirstOfKey::InBatch(j) => events[j].clone(),
            FirstOfKey::Stored(seq) => {
                // Stored, or appended earlier in this group: the open transaction sees both.
                let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND seq = ?");
                read_events(&writer.conn, &sql, &[&org_text, &seq])?
                    .pop()
                    .map(|stored| stored.event)
                    .ok_or_else(|| backend(format!("indexed event {seq} is missing")))?
            }
        };
        outcomes[i] = EventOutcome::Rejected(conflict_rejection(&first_event, &events[i]));
    }
    let rejected: Vec<usize> =
        outcomes.iter().enumerate().filter(|(_, o)| !o.is_stored()).map(|(i, _)| i).collect();
    if atomic && !rejected.is_empty() {
        let not_stored = batch_rejection(rejected.len(), rejected[0]);
        for outcome in &mut outcomes {
            if outcome.is_stored() {
                *outcome = EventOutcome::Rejected(not_stored.clone());
            }
        }
        return Ok(outcomes);
    }
    if sequence == first_sequence {
        return Ok(outcomes);
    }
    let ingested_at = micros(&time::now());
    append_rows(&writer.conn, &org_text, events, keyed, prepared, &outcomes, ingested_at)?;
    // Known at once to the rest of the group; taken back if the commit fails.
    for (i, outcome) in outcomes.iter().enumerate() {
        if let EventOutcome::Accepted { sequence } = *outcome {
            writer.index.insert(keyed[i].0, IndexEntry { content: keyed[i].1, sequence });
            undo.fingerprints.push(keyed[i].0);
        }
    }
    writer.next_sequence.insert(org_text, sequence);
    Ok(outcomes)
}

fn append_rows(
    conn: &Connection,
    org: &str,
    events: &[Event],
    keyed: &[(u128, u128)],
    prepared: &[PreparedRow],
    outcomes: &[EventOutcome],
    ingested_at: i64,
) -> Result<(), StoreError> {
    let mut rows = rows::Rows::with_capacity(events.len()).map_err(backend)?;
    for (i, outcome) in outcomes.iter().enumerate() {
        let EventOutcome::Accepted { sequence } = *outcome else { continue };
        let row = &prepared[i];
        rows.push(sequence, org, &events[i], keyed[i], ingested_at, &row.properties, &row.typed);
    }
    let batch = rows.finish().map_err(backend)?;
    let mut appender = conn.appender("events").map_err(backend)?;
    appender.append_record_batch(batch).map_err(backend)?;
    appender.flush().map_err(backend)
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

/// The events a usage query needs, for several customers at once (one scan), grouped by
/// customer: their events of the metric's code that happened before the period's end (from its
/// start only when nothing carries over), ingested by `as_of`, in sequence order.
fn usage_events(
    conn: &Connection,
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<HashMap<String, Vec<StoredEvent>>, StoreError> {
    let mut grouped: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    if customers.is_empty() {
        return Ok(grouped);
    }
    let carries_over = spec.aggregation.recurring;
    let from = if carries_over { i64::MIN } else { micros(&query.from) };
    let to = micros(&query.to);
    let as_of = query.as_of.as_ref().map_or(i64::MAX, micros);
    let placeholders = vec!["?"; customers.len()].join(", ");
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND code = ? AND ts >= ? AND ts < ? \
         AND ingested_at <= ? AND customer IN ({placeholders}) ORDER BY seq"
    );
    let mut params: Vec<&dyn duckdb::ToSql> = vec![&org, &spec.event_code, &from, &to, &as_of];
    params.extend(customers.iter().map(|c| c as &dyn duckdb::ToSql));
    for stored in read_events(conn, &sql, &params)? {
        grouped.entry(stored.event.customer.clone()).or_default().push(stored);
    }
    Ok(grouped)
}

#[async_trait]
impl EventStore for DuckEventStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let reader = self.reader.clone();
        blocking(move || lock(&reader)?.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    async fn append(
        &self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let (writer, queue) = (self.writer.clone(), self.queue.clone());
        let (slots, registrar) = (self.slots.clone(), self.registrar.clone());
        let (reply, answer) = tokio::sync::oneshot::channel();
        blocking(move || {
            // The per-event work that does not need the writer is done here, in parallel:
            // hashing, new keys' slots, the properties' JSON text and typed columns.
            let keyed = events
                .iter()
                .map(|e| (event_fingerprint(org, &e.customer, &e.transaction_id), content_hash(e)))
                .collect();
            let org_text = org.to_string();
            register_keys(&slots, &registrar, &org_text, &events)?;
            let rows = prepare_rows(&slots, &org_text, &events)?;
            lock(&queue)?.push(Request { org, events, keyed, rows, atomic, reply });
            // Whoever holds the writer next writes everything queued, this request included
            // (unless an earlier holder already took it).
            write_queued(&mut *lock(&writer)?, &queue)
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
        let (writer, reader) = (self.writer.clone(), self.reader.clone());
        // The index sits behind the writer lock, which an append holds through its commit:
        // wait for it on the blocking pool, not on the async runtime.
        blocking(move || {
            let Some(entry) = lock(&writer)?.index.get(&fingerprint).copied() else {
                return Ok(None);
            };
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND seq = ?");
            let org = org.to_string();
            let conn = lock(&reader)?;
            Ok(read_events(&conn, &sql, &[&org, &entry.sequence])?.into_iter().next())
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
        let reader = self.reader.clone();
        blocking(move || {
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
            let conn = lock(&reader)?;
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
        let reader = self.reader.clone();
        let (customer, code) = (customer.to_owned(), code.to_owned());
        blocking(move || {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND customer = ? AND code = ? \
                 AND ts >= ? AND ts < ? ORDER BY seq"
            );
            let org = org.to_string();
            let (from, to) = (from.as_ref().map_or(i64::MIN, micros), micros(&to));
            let conn = lock(&reader)?;
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

    async fn create_usage_table(
        &self,
        org: OrganizationId,
        table: odometer_store::usage_tables::UsageTable,
    ) -> Result<bool, StoreError> {
        let writer = self.writer.clone();
        blocking(move || sql::create_usage_table(&lock(&writer)?.conn, &org.to_string(), &table))
            .await
    }

    async fn usage_tables(
        &self,
        org: OrganizationId,
    ) -> Result<Vec<odometer_store::usage_tables::UsageTable>, StoreError> {
        let reader = self.reader.clone();
        blocking(move || sql::usage_tables(&*lock(&reader)?, &org.to_string())).await
    }

    async fn idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
    ) -> Result<Option<odometer_store::usage_tables::IdempotentResponse>, StoreError> {
        let (reader, key) = (self.reader.clone(), key.to_owned());
        blocking(move || sql::idempotent_response(&*lock(&reader)?, &org.to_string(), &key)).await
    }

    async fn keep_idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
        response: odometer_store::usage_tables::IdempotentResponse,
    ) -> Result<odometer_store::usage_tables::IdempotentResponse, StoreError> {
        let (writer, key) = (self.writer.clone(), key.to_owned());
        blocking(move || {
            sql::keep_idempotent_response(&lock(&writer)?.conn, &org.to_string(), &key, response)
        })
        .await
    }

    async fn usage_of_customers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        if spec.aggregation.kind == AggregationType::CustomSql {
            return self.sql_usage(org, customers, spec, query).await;
        }
        let (reader, slots, paths) = (self.reader.clone(), self.slots.clone(), self.paths.clone());
        let customers = customers.to_vec();
        let spec = spec.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || {
            let org = org.to_string();
            if customers.is_empty() {
                return Ok(Vec::new());
            }
            // Held for the whole query: no row may use a slot this query does not know.
            let registry = read_lock(&slots)?;
            let conn = lock(&reader)?;
            match pushdown::plan(&org, &customers, &spec, &query, registry.org(&org))? {
                Ok(statement) => {
                    match pushdown::run(&conn, &statement, &spec, &customers, query.group_limit) {
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
            let grouped = usage_events(&conn, &org, &customers, &spec, &query)?;
            drop(conn);
            drop(registry);
            let mut results = Vec::with_capacity(customers.len());
            for customer in &customers {
                // Borrowed, not taken out of the map: a customer listed twice is answered
                // twice from the same events.
                let events = grouped.get(customer).map_or(&[][..], Vec::as_slice);
                results.push(compute_usage(&spec, events, &query)?);
            }
            Ok(results)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("usage task failed: {e}")))?
    }
}
