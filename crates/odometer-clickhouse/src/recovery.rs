//! Batches whose owner is gone, and batches to forget.
//!
//! A batch is claimed in PostgreSQL before its rows go to ClickHouse, so a replica that dies
//! (or loses ClickHouse) in between leaves a batch that is durable but not readable. Whoever
//! holds the batch's lock next (a duplicate of one of its events, or the loop here) reads the
//! payload, asks ClickHouse which of the batch's sequences it already has, inserts the rest
//! and marks the batch inserted.
//!
//! Inserted batches are kept for the retention, then ClickHouse is asked to count each one's
//! rows: a batch whose rows are all there is forgotten (its claims stay); one that lost rows
//! (a ClickHouse crash before its parts reached the disk) is inserted again first. Before a
//! batch is forgotten its marker in the usage state ([`crate::state`]) must count its events
//! too; when it does not (the crash kept one of the two parts and not the other, or the view
//! saw a row twice) the organization's usage is no longer answered from the state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use odometer_core::event::Event;
use odometer_core::OrganizationId;
use odometer_store::StoreError;

use crate::escape::literal;
use crate::ledger::BatchLock;
use crate::Inner;

/// Batches handled per round.
const ROUND: i64 = 500;

/// Inserts a locked batch's rows that ClickHouse lacks and marks it inserted. Without
/// `force`, a batch already marked inserted is left as it is.
pub async fn insert_batch(
    inner: &Inner,
    mut lock: BatchLock,
    force: bool,
) -> Result<(), StoreError> {
    let Some(batch) = lock.read().await? else { return lock.release().await };
    if batch.inserted && !force {
        return lock.release().await;
    }
    let id = lock.batch();
    let present: HashSet<u64> = inner
        .ch
        .query(
            &format!(
                "SELECT sequence FROM events WHERE org = {} AND batch = {id}",
                literal(&batch.org.to_string())
            ),
            1,
        )
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten()?.parse().ok())
        .collect();
    let missing: Vec<(Event, u64)> = batch
        .events
        .iter()
        .filter(|e| !present.contains(&e.sequence))
        .map(|e| Ok((e.event()?, e.sequence)))
        .collect::<Result<_, StoreError>>()?;
    if !missing.is_empty() {
        let refs: Vec<(&Event, u64)> = missing.iter().map(|(e, s)| (e, *s)).collect();
        let rows = crate::rows_of(batch.org, &refs, batch.ingested_at, id)?;
        inner.ch.insert_tsv("events", crate::rows::INSERT_COLUMNS, rows).await?;
        tracing::info!(batch = id, events = missing.len(), "a batch left pending was inserted");
    }
    lock.mark_inserted().await
}

/// Inserts every batch claimed at least `older_than` ago that is not inserted and whose lock
/// is free (its owner is gone).
pub async fn recover_pending(inner: &Inner, older_than: Duration) -> Result<(), StoreError> {
    for id in inner.ledger.pending_batches(older_than, ROUND).await? {
        if let Some(lock) = inner.ledger.try_lock(id).await? {
            insert_batch(inner, lock, false).await?;
        }
    }
    Ok(())
}

/// Checks the batches inserted at least `older_than` ago against ClickHouse, inserts what it
/// lost, and forgets them.
pub async fn verify_retained(inner: &Inner, older_than: Duration) -> Result<(), StoreError> {
    loop {
        let retained = inner.ledger.retained_batches(older_than, ROUND).await?;
        if retained.is_empty() {
            return Ok(());
        }
        let mut by_org: HashMap<OrganizationId, Vec<(i64, u64)>> = HashMap::new();
        for (id, org, events) in &retained {
            by_org.entry(*org).or_default().push((*id, *events));
        }
        let mut verified = Vec::new();
        for (org, batches) in by_org {
            let mut checked = Vec::new();
            let ids: Vec<String> = batches.iter().map(|(id, _)| id.to_string()).collect();
            let counted = batch_counts(
                inner,
                &format!(
                    "SELECT batch, count() FROM events WHERE org = {} AND batch IN ({}) \
                     GROUP BY batch",
                    literal(&org.to_string()),
                    ids.join(", ")
                ),
            )
            .await?;
            for (id, events) in batches {
                let count = counted.get(&id).copied().unwrap_or(0);
                if count < events {
                    tracing::warn!(
                        batch = id,
                        count,
                        events,
                        "clickhouse lost rows of a batch; inserting them again"
                    );
                    match inner.ledger.try_lock(id).await? {
                        Some(lock) => insert_batch(inner, lock, true).await?,
                        None => continue,
                    }
                } else if count > events {
                    tracing::error!(
                        batch = id,
                        count,
                        events,
                        "a batch has more rows in clickhouse than events"
                    );
                }
                checked.push((id, events));
            }
            check_state_markers(inner, org, &checked).await?;
            verified.extend(checked.iter().map(|(id, _)| *id));
        }
        inner.ledger.forget_batches(&verified).await?;
        if (retained.len() as i64) < ROUND {
            return Ok(());
        }
    }
}

/// A `SELECT batch, count` statement's answer by batch.
async fn batch_counts(inner: &Inner, sql: &str) -> Result<HashMap<i64, u64>, StoreError> {
    Ok(inner
        .ch
        .query(sql, 2)
        .await?
        .into_iter()
        .filter_map(|row| {
            let id = row[0].as_deref()?.parse().ok()?;
            let count = row[1].as_deref()?.parse().ok()?;
            Some((id, count))
        })
        .collect())
}

/// Compares what the usage state saw of each batch with its events; on any difference the
/// organization is no longer answered from the state.
async fn check_state_markers(
    inner: &Inner,
    org: OrganizationId,
    batches: &[(i64, u64)],
) -> Result<(), StoreError> {
    if batches.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = batches.iter().map(|(id, _)| *id).collect();
    let seen = batch_counts(inner, &crate::state::markers_sql(&org.to_string(), &ids)).await?;
    for &(id, events) in batches {
        let saw = seen.get(&id).copied().unwrap_or(0);
        if saw != events {
            let reason = format!("batch {id}: the usage state saw {saw} of its {events} events");
            tracing::error!(%org, batch = id, saw, events, "the usage state differs from the events; the organization's usage is answered from the events from now on");
            inner.ledger.distrust(org, &reason).await?;
            inner.refresh_distrusted().await?;
            return Ok(());
        }
    }
    Ok(())
}

/// The background loops: pending batches every `interval`, retained ones every minute. They
/// hold the store weakly and end with it.
pub fn start(
    inner: &Arc<Inner>,
    interval: Duration,
    retention: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let pending = {
        let weak: Weak<Inner> = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(err) = recover_pending(&inner, Duration::from_secs(1)).await {
                    tracing::warn!(%err, "recovering pending batches failed; retrying");
                }
                // Another replica may have found an organization's usage state wrong.
                if let Err(err) = inner.refresh_distrusted().await {
                    tracing::warn!(%err, "reading the organizations the usage state does not answer for failed");
                }
            }
        })
    };
    let retained = {
        let weak: Weak<Inner> = Arc::downgrade(inner);
        let every = retention.min(Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(err) = verify_retained(&inner, retention).await {
                    tracing::warn!(%err, "checking inserted batches failed; retrying");
                }
            }
        })
    };
    vec![pending, retained]
}
