//! The append path: group commit through the log. Concurrent appends queue their batches;
//! whoever holds the writer next classifies every queued batch (new, duplicate, conflict)
//! against the exactly-once index and the batches before it in the group, writes the accepted
//! events of all of them as one log record, flushes it, and only then publishes them: to the
//! columnarizer, to the usage index, to the exactly-once index, and to the callers.
//!
//! Invariants:
//! - An event is acknowledged (`accepted` or `duplicate`) only after the record holding it (or
//!   its first copy) is durable.
//! - Every fingerprint in the exactly-once index is in a durable record.
//! - A record is handed to the columnarizer before its events reach the usage index, so a
//!   reader that saw an event in a state and then waits for the columnarizer finds it in
//!   DuckDB.
//! - After a failed log write nothing more is appended (the state of the file is unknown);
//!   the next start recovers from what is on disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use duckdb::Connection;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::intake::{batch_rejection, conflict_rejection, EventOutcome};
use odometer_core::{time, OrganizationId};
use odometer_store::StoreError;

use super::columnar::Pipeline;
use super::exactly_once::{Entry, ExactlyOnce, FingerprintMap};
use super::index::UsageIndex;
use super::log::Log;
use super::record::{self, Chunk, Pending};
use super::{backend, lock, read_events, EVENT_COLUMNS};

/// The single writer's state.
#[derive(Debug)]
pub(super) struct Writer {
    pub log: Log,
    pub exactly_once: ExactlyOnce,
    /// Each organization's next sequence (semantics 1.5: from 1, strictly increasing).
    pub next_sequence: HashMap<OrganizationId, u64>,
    /// Why appending stopped, after a failed log write.
    pub failed: Option<String>,
    pub stats: AppendStats,
}

/// What the writer did since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Log records written (group commits).
    pub records: u64,
    /// Batches (append calls) those records merged.
    pub batches: u64,
    /// Events they accepted.
    pub events: u64,
    /// Times the writer waited for the columnarizer (more than the bound not yet in DuckDB).
    pub waits: u64,
}

/// One caller's batch, waiting for the writer.
#[derive(Debug)]
pub(super) struct Request {
    pub org: OrganizationId,
    pub events: Vec<Event>,
    /// Fingerprint and content hash of each event, computed before queueing.
    pub keyed: Vec<(u128, u128)>,
    /// Each event's properties as compact JSON text, computed before queueing.
    pub properties: Vec<String>,
    pub atomic: bool,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<EventOutcome>, StoreError>>,
}

/// What the writer publishes to.
pub(super) struct Targets<'a> {
    pub pipeline: &'a Pipeline,
    pub index: &'a UsageIndex,
    /// For the first event of a conflict that is already in DuckDB.
    pub reader: &'a Mutex<Connection>,
}

/// Where the first event of a key accepted earlier in this group is.
#[derive(Debug, Clone, Copy)]
struct InGroup {
    content: u128,
    sequence: u64,
    chunk: usize,
    position: usize,
}

/// The group being written.
#[derive(Default)]
struct Group {
    accepted: FingerprintMap<InGroup>,
    next_sequence: HashMap<OrganizationId, u64>,
    chunks: Vec<Chunk>,
}

/// Where the first event of a conflicting key is.
enum FirstOfKey {
    Stored(u64),
    InGroup(usize, usize),
    InBatch(usize),
}

/// Writes every queued request as one record (see the module documentation). Replies are
/// sent only once the record is durable (or the write failed).
pub(super) fn write_queued(
    writer: &mut Writer,
    queue: &Mutex<Vec<Request>>,
    targets: &Targets<'_>,
) -> Result<(), StoreError> {
    let requests = std::mem::take(&mut *lock(queue)?);
    if requests.is_empty() {
        return Ok(());
    }
    if let Some(why) = &writer.failed {
        let error = StoreError::Backend(format!("the event store stopped appending: {why}"));
        for request in requests {
            let _ = request.reply.send(Err(error.clone()));
        }
        return Ok(());
    }
    // Wait while the columnarizer is far behind, so memory stays bounded.
    if targets.pipeline.wait_for_room()? {
        writer.stats.waits += 1;
    }
    let merged = requests.len() as u64;
    let mut group = Group::default();
    let mut answers: Vec<Result<Vec<EventOutcome>, StoreError>> = Vec::new();
    let mut replies = Vec::with_capacity(requests.len());
    for request in requests {
        let Request { org, events, keyed, properties, atomic, reply } = request;
        answers.push(stage(writer, &mut group, targets, org, events, keyed, properties, atomic));
        replies.push(reply);
    }
    if !group.chunks.is_empty() {
        let events = group.chunks.iter().map(|c| c.events.len() as u64).sum::<u64>();
        writer.stats.records += 1;
        writer.stats.batches += merged;
        writer.stats.events += events;
        let started = std::time::Instant::now();
        if let Err(err) = commit(writer, group, targets) {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            return Ok(());
        }
        metrics::histogram!("odometer_append_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("odometer_append_batch_events").record(events as f64);
        metrics::histogram!("odometer_append_requests_merged").record(merged as f64);
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
    Ok(())
}

/// Makes the group's record durable, then publishes it.
fn commit(writer: &mut Writer, group: Group, targets: &Targets<'_>) -> Result<(), StoreError> {
    let payload = record::encode(&group.chunks).map_err(backend)?;
    let lsn = match writer.log.append(&payload) {
        Ok(lsn) => lsn,
        Err(err) => {
            let why = format!("writing the events log failed: {err}");
            tracing::error!(%why, "the event store stops appending until it is reopened");
            writer.failed = Some(why.clone());
            return Err(StoreError::Backend(why));
        }
    };
    let pending = Arc::new(Pending { lsn, chunks: group.chunks });
    targets.pipeline.push(pending.clone())?;
    let accepted: usize = pending.events();
    writer.exactly_once.reserve(accepted);
    for chunk in &pending.chunks {
        let through = chunk.events.last().map_or(0, |e| e.sequence);
        targets.index.publish(chunk.org, &chunk.events, through)?;
        for (stored, &(fingerprint, content)) in chunk.events.iter().zip(&chunk.keyed) {
            writer.exactly_once.insert(fingerprint, Entry::new(content, stored.sequence));
        }
    }
    writer.next_sequence.extend(group.next_sequence);
    if let Err(err) = writer.log.release_through(targets.pipeline.columnarized()?) {
        tracing::warn!(%err, "cannot delete copied log segments; will try again");
    }
    Ok(())
}

/// Classifies one request's events against what is stored, what this group accepted before,
/// and what came earlier in the request; adds its accepted events to the group (unless it is
/// atomic and something was rejected).
#[allow(clippy::too_many_arguments)]
fn stage(
    writer: &Writer,
    group: &mut Group,
    targets: &Targets<'_>,
    org: OrganizationId,
    events: Vec<Event>,
    keyed: Vec<(u128, u128)>,
    properties: Vec<String>,
    atomic: bool,
) -> Result<Vec<EventOutcome>, StoreError> {
    let first_sequence = group
        .next_sequence
        .get(&org)
        .or_else(|| writer.next_sequence.get(&org))
        .copied()
        .unwrap_or(1);
    let mut sequence = first_sequence;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut conflicts: Vec<(usize, FirstOfKey)> = Vec::new();
    let mut in_batch: FingerprintMap<(usize, u64)> = FingerprintMap::default();
    for (i, &(fingerprint, content)) in keyed.iter().enumerate() {
        // (same content?, the first copy's sequence, where it is)
        let known = writer
            .exactly_once
            .get(fingerprint)
            .map(|e| (e.same_content(content), e.sequence, FirstOfKey::Stored(e.sequence)))
            .or_else(|| {
                group.accepted.get(&fingerprint).map(|g| {
                    (g.content == content, g.sequence, FirstOfKey::InGroup(g.chunk, g.position))
                })
            })
            .or_else(|| {
                in_batch
                    .get(&fingerprint)
                    .map(|&(j, seq)| (keyed[j].1 == content, seq, FirstOfKey::InBatch(j)))
            });
        let outcome = match known {
            Some((true, first_sequence, _)) => EventOutcome::Duplicate { sequence: first_sequence },
            Some((_, _, first)) => {
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
            FirstOfKey::InGroup(chunk, position) => {
                group.chunks[chunk].events[position].event.clone()
            }
            FirstOfKey::Stored(seq) => stored_event(targets, org, seq)?.event,
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
    let ingested_at = time::now();
    let chunk_index = group.chunks.len();
    let mut chunk = Chunk {
        org,
        events: Vec::with_capacity((sequence - first_sequence) as usize),
        properties: Vec::with_capacity((sequence - first_sequence) as usize),
        keyed: Vec::with_capacity((sequence - first_sequence) as usize),
    };
    for ((event, properties), (outcome, &(fingerprint, content))) in
        events.into_iter().zip(properties).zip(outcomes.iter().zip(&keyed))
    {
        let EventOutcome::Accepted { sequence } = *outcome else { continue };
        group.accepted.insert(
            fingerprint,
            InGroup { content, sequence, chunk: chunk_index, position: chunk.events.len() },
        );
        chunk.events.push(StoredEvent { event, sequence, ingested_at });
        chunk.properties.push(properties);
        chunk.keyed.push((fingerprint, content));
    }
    group.chunks.push(chunk);
    group.next_sequence.insert(org, sequence);
    Ok(outcomes)
}

/// A stored event by sequence: still waiting for the columnarizer, or in DuckDB.
pub(super) fn stored_event(
    targets: &Targets<'_>,
    org: OrganizationId,
    sequence: u64,
) -> Result<StoredEvent, StoreError> {
    if let Some(found) = targets.pipeline.find(org, sequence)? {
        return Ok(found);
    }
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE org = ? AND seq = ?");
    let conn = lock(targets.reader)?;
    read_events(&conn, &sql, &[&org.to_string(), &sequence])?
        .pop()
        .ok_or_else(|| backend(format!("indexed event {sequence} is missing")))
}
