//! The columnarizer: a thread that copies durable log records into DuckDB's `events` table
//! (typed slot columns and all) in large transactions, in LSN order, recording in the same
//! transaction the LSN it has copied through. Readers that need DuckDB to hold every
//! acknowledged event wait for it ([`Pipeline::barrier`]); appends wait when it falls too far
//! behind ([`Pipeline::wait_for_room`]), so memory stays bounded.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use duckdb::Connection;
use odometer_core::event::StoredEvent;
use odometer_core::OrganizationId;
use odometer_store::StoreError;

use super::record::Pending;
use super::rows::Rows;
use super::slots::{self, SlotOf, SlotRegistry};
use super::{backend, read_lock, write_lock};

/// Appends wait while this many events are not yet in DuckDB.
pub(super) const MAX_PENDING_EVENTS: usize = 400_000;

/// The most events one DuckDB transaction copies.
const MAX_EVENTS_PER_COMMIT: usize = 300_000;

/// The columnarizer waits for this many events (two of DuckDB's row groups of 122,880 rows)
/// before it commits, unless a reader is waiting, the store is closing, or nothing came for
/// [`LINGER`]: a transaction of whole row groups is written to the database file compressed,
/// where a smaller one goes through DuckDB's own write-ahead log first and is compressed again
/// at the next checkpoint (the log in front of DuckDB already makes every event durable).
const MIN_EVENTS_PER_COMMIT: usize = 2 * 122_880;

/// How long the columnarizer waits for more events before it commits what it has.
const LINGER: Duration = Duration::from_millis(250);

/// How long a reader waits for the columnarizer before it gives up.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct PipelineState {
    /// Durable records not yet in DuckDB, in LSN order.
    pending: VecDeque<Arc<Pending>>,
    pending_events: usize,
    /// The LSN of the last record handed over.
    queued: u64,
    /// The LSN through which DuckDB holds the records.
    columnarized: u64,
    stop: bool,
    /// Readers waiting for the columnarizer.
    waiting: usize,
    /// The columnarizer's last failure, while it retries.
    error: Option<String>,
}

/// What the writer, the readers and the columnarizer share.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    state: Mutex<PipelineState>,
    changed: Condvar,
}

impl Pipeline {
    pub fn new(columnarized: u64) -> Self {
        let state = PipelineState { queued: columnarized, columnarized, ..Default::default() };
        Self { state: Mutex::new(state), changed: Condvar::new() }
    }

    fn lock(&self) -> Result<MutexGuard<'_, PipelineState>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Backend("columnarizer lock poisoned".into()))
    }

    /// Hands a durable record over (in LSN order).
    pub fn push(&self, record: Arc<Pending>) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state.pending_events += record.events();
        state.queued = record.lsn;
        state.pending.push_back(record);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits until fewer than [`MAX_PENDING_EVENTS`] events wait for DuckDB; answers whether
    /// it had to wait.
    pub fn wait_for_room(&self) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        let mut waited = false;
        while state.pending_events >= MAX_PENDING_EVENTS && !state.stop {
            waited = true;
            state = self
                .changed
                .wait(state)
                .map_err(|_| StoreError::Backend("columnarizer lock poisoned".into()))?;
        }
        Ok(waited)
    }

    /// Waits until DuckDB holds every record handed over before this call.
    pub fn barrier(&self) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        let target = state.queued;
        if state.columnarized >= target {
            return Ok(());
        }
        // The columnarizer commits at once while someone waits.
        state.waiting += 1;
        self.changed.notify_all();
        let deadline = std::time::Instant::now() + BARRIER_TIMEOUT;
        let mut outcome = Ok(());
        while state.columnarized < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                let why = state.error.clone().unwrap_or_else(|| "it is still copying".into());
                outcome = Err(StoreError::Backend(format!(
                    "the events written to the log are not in DuckDB yet ({why})"
                )));
                break;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .map_err(|_| StoreError::Backend("columnarizer lock poisoned".into()))?
                .0;
        }
        state.waiting -= 1;
        outcome
    }

    /// A stored event still waiting for DuckDB.
    pub fn find(
        &self,
        org: OrganizationId,
        sequence: u64,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let state = self.lock()?;
        Ok(state.pending.iter().rev().find_map(|r| r.find(org, sequence)).cloned())
    }

    /// The LSN through which DuckDB holds the records.
    pub fn columnarized(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.columnarized)
    }

    /// Whether every record handed over is in DuckDB.
    pub fn is_drained(&self) -> Result<bool, StoreError> {
        let state = self.lock()?;
        Ok(state.pending.is_empty())
    }

    /// Asks the columnarizer to copy what is left and stop.
    pub fn stop(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.stop = true;
            self.changed.notify_all();
        }
    }

    /// The records to copy next (at least one, together at most about
    /// [`MAX_EVENTS_PER_COMMIT`] events, once there are [`MIN_EVENTS_PER_COMMIT`] or a
    /// reason not to wait for them); `None` once stopped with nothing left.
    fn next_batch(&self) -> Option<Vec<Arc<Pending>>> {
        let mut state = self.state.lock().ok()?;
        loop {
            if state.pending.is_empty() {
                if state.stop {
                    return None;
                }
                state = self.changed.wait(state).ok()?;
                continue;
            }
            if state.pending_events >= MIN_EVENTS_PER_COMMIT || state.waiting > 0 || state.stop {
                break;
            }
            let before = state.pending_events;
            let (next, timeout) = self.changed.wait_timeout(state, LINGER).ok()?;
            state = next;
            // Nothing more came for a while: commit what there is.
            if timeout.timed_out() && state.pending_events == before {
                break;
            }
        }
        let mut batch = Vec::new();
        let mut events = 0;
        for record in &state.pending {
            if !batch.is_empty() && events + record.events() > MAX_EVENTS_PER_COMMIT {
                break;
            }
            events += record.events();
            batch.push(record.clone());
        }
        Some(batch)
    }

    /// The first `count` records are in DuckDB, through `lsn`.
    fn copied(&self, count: usize, lsn: u64) {
        if let Ok(mut state) = self.state.lock() {
            for _ in 0..count {
                if let Some(record) = state.pending.pop_front() {
                    state.pending_events -= record.events();
                }
            }
            state.columnarized = lsn;
            state.error = None;
            self.changed.notify_all();
        }
    }

    fn failed(&self, error: String) -> bool {
        match self.state.lock() {
            Ok(mut state) => {
                state.error = Some(error);
                self.changed.notify_all();
                state.stop
            }
            Err(_) => true,
        }
    }
}

/// The columnarizer's loop: copy, commit, repeat; retry a failed copy every second (giving up
/// after a few tries once asked to stop: the records stay in the log for the next start).
pub(super) fn run(pipeline: Arc<Pipeline>, conn: Connection, slots: Arc<RwLock<SlotRegistry>>) {
    let mut failures_while_stopping = 0;
    while let Some(batch) = pipeline.next_batch() {
        let lsn = batch.last().map_or(0, |r| r.lsn);
        match copy(&conn, &slots, &batch) {
            Ok(()) => pipeline.copied(batch.len(), lsn),
            Err(err) => {
                tracing::error!(%err, lsn, "cannot copy log records into DuckDB; retrying");
                if pipeline.failed(err.to_string()) {
                    failures_while_stopping += 1;
                    if failures_while_stopping >= 3 {
                        tracing::error!(
                            "stopping with records left in the log: the next start copies them"
                        );
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// One transaction: the records' rows, and the LSN copied through.
fn copy(
    conn: &Connection,
    slots: &RwLock<SlotRegistry>,
    batch: &[Arc<Pending>],
) -> Result<(), StoreError> {
    for record in batch {
        for chunk in &record.chunks {
            register_keys(conn, slots, &chunk.org.to_string(), &chunk.events)?;
        }
    }
    let events: usize = batch.iter().map(|r| r.events()).sum();
    let registry = read_lock(slots)?;
    let mut rows = Rows::with_capacity(events, &registry.columns).map_err(backend)?;
    {
        let no_slots = slots::OrgSlots::default();
        for record in batch {
            for chunk in &record.chunks {
                let org = chunk.org.to_string();
                let org_slots = registry.org(&org).unwrap_or(&no_slots);
                for ((stored, properties), keyed) in
                    chunk.events.iter().zip(&chunk.properties).zip(&chunk.keyed)
                {
                    let typed = slots::typed_columns(org_slots, &stored.event.properties);
                    rows.push(
                        stored.sequence,
                        &org,
                        &stored.event,
                        *keyed,
                        stored.ingested_at.timestamp_micros(),
                        properties,
                        &typed,
                    );
                }
            }
        }
    }
    drop(registry);
    let batch_rows = rows.finish().map_err(backend)?;
    let lsn = batch.last().map_or(0, |r| r.lsn);
    conn.execute_batch("BEGIN TRANSACTION").map_err(backend)?;
    let written = (|| {
        let mut appender = conn.appender("events").map_err(backend)?;
        appender.append_record_batch(batch_rows).map_err(backend)?;
        appender.flush().map_err(backend)?;
        drop(appender);
        conn.execute(
            "UPDATE odometer_meta SET value = ? WHERE key = 'columnarized_lsn'",
            [lsn.to_string()],
        )
        .map_err(backend)?;
        conn.execute_batch("COMMIT").map_err(backend)
    })();
    if written.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

/// Gives each property key the organization has not sent before a slot (or marks it spilled),
/// stored before any row using it is committed (see [`slots`]).
fn register_keys(
    conn: &Connection,
    slots: &RwLock<SlotRegistry>,
    org: &str,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    let known = {
        let registry = read_lock(slots)?;
        let org_slots = registry.org(org);
        events.iter().all(|e| {
            e.event.properties.keys().all(|k| org_slots.is_some_and(|s| s.get(k).is_some()))
        })
    };
    if known {
        return Ok(());
    }
    let mut registry = write_lock(slots)?;
    let mut org_slots = registry.org(org).cloned().unwrap_or_default();
    let mut added: Vec<(String, Option<i32>)> = Vec::new();
    for event in events {
        for key in event.event.properties.keys() {
            if let (place, true) = org_slots.assign(key) {
                let slot = match place {
                    SlotOf::Slot(i) => i32::try_from(i).ok(),
                    SlotOf::Spilled => None,
                };
                added.push((key.clone(), slot));
            }
        }
    }
    // A slot no organization had before gets its columns first.
    for i in 0..org_slots.used {
        if !registry.has_slot(i) {
            conn.execute_batch(&slots::add_slot_columns(i)).map_err(backend)?;
            registry.columns.push(slots::SlotColumn::Text(i));
            registry.columns.push(slots::SlotColumn::Number(i));
        }
    }
    let mut insert =
        conn.prepare("INSERT INTO property_slots VALUES (?, ?, ?)").map_err(backend)?;
    for (key, slot) in &added {
        insert.execute(duckdb::params![org, key, slot]).map_err(backend)?;
    }
    registry.orgs.insert(org.to_owned(), org_slots);
    Ok(())
}
