//! The server-mode event store: events in ClickHouse, counted exactly once across any number
//! of `odometer serve` replicas through a ledger in PostgreSQL.
//!
//! - **Appends** ([`ledger`]): under the organization's row lock in PostgreSQL, the batch is
//!   classified against the identities already claimed (new, duplicate, conflict), and the new
//!   ones are claimed, numbered and recorded as a batch with its payload, in one transaction.
//!   Then the rows go to ClickHouse (merged with other appends of this replica into one insert,
//!   [`inserter`]), and the batch is marked inserted. Only then is the append answered, so an
//!   acknowledged event is both durable (PostgreSQL) and readable (ClickHouse).
//! - **Duplicates** of an event whose batch is still being inserted (a retry sent to another
//!   replica, or both at once) wait for that batch, or insert it themselves when its owner is
//!   gone, before they are answered.
//! - **Recovery** ([`recovery`]): at start and every few seconds, batches claimed but not
//!   inserted whose owner is gone are inserted (only the rows ClickHouse lacks); batches
//!   inserted a while ago are checked against ClickHouse and forgotten.
//! - **Usage state** ([`state`]): a materialized view keeps, per customer, event code and
//!   15-minute bucket, the count of events and the exact sum, min and max of every numeric
//!   top-level property, in ClickHouse itself, so every replica sees every replica's events.
//!   Counts, sums, means, mins and maxes of a field without filters, segmentation or
//!   `group_by` are answered from it (path `index`, or `index+edges` when windows leave the
//!   15-minute grid and their edges are read from the events).
//! - **Usage from the events** ([`pushdown`]): one SQL statement over the typed property
//!   arrays when it is exact, else the reference engine over the customers' events read from
//!   ClickHouse. `custom_sql` metrics run in the embedded store's DuckDB sandbox over the
//!   customer's events of the period, read from ClickHouse.

mod escape;
mod http;
mod inserter;
mod ledger;
mod pushdown;
mod recovery;
mod rows;
mod schema;
mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::intake::{
    batch_rejection, conflict_rejection, content_hash, event_fingerprint, EventOutcome,
};
use odometer_core::metric::AggregationType;
use odometer_core::usage::{UsageQuery, UsageResult};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_store::events::{
    EventListParams, EventStore, EventsReason, PathChoice, UsageAnswer, UsagePath, UsageQueryError,
};
use odometer_store::usage_tables::{IdempotentResponse, UsageTable};
use odometer_store::{Page, StoreError};

pub use escape::{literal, tsv_field, tsv_unescape};
pub use http::{valid_identifier, ClickHouse, ClickHouseUrl};

use ledger::{Decision, Ledger};
use rows::{read_event, write_row, RowOf, EVENT_COLUMNS, EVENT_COLUMN_COUNT};

/// How the store is reached and how its background work is paced.
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    /// `clickhouse://[user[:password]@]host[:port][/database]`.
    pub clickhouse_url: String,
    /// The PostgreSQL database holding the exactly-once ledger (the catalog's own).
    pub postgres_url: String,
    /// How often batches left pending by a replica that is gone are looked for.
    pub recovery_interval: Duration,
    /// How long an inserted batch's payload is kept before ClickHouse is checked to hold it
    /// and the batch is forgotten. 18.16 does not fsync the parts it writes, so this covers
    /// the kernel's writeback (about 30 s) with room to spare.
    pub retention: Duration,
}

impl ClickHouseOptions {
    pub fn new(clickhouse_url: impl Into<String>, postgres_url: impl Into<String>) -> Self {
        Self {
            clickhouse_url: clickhouse_url.into(),
            postgres_url: postgres_url.into(),
            recovery_interval: Duration::from_secs(2),
            retention: Duration::from_secs(120),
        }
    }
}

/// Events in ClickHouse with their ledger in PostgreSQL (see the module documentation).
#[derive(Clone)]
pub struct ClickHouseEventStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClickHouseEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseEventStore").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    ch: ClickHouse,
    ledger: Ledger,
    inserter: inserter::Inserter,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    paths: PathCounters,
    /// Organizations the usage state no longer answers for (the ledger's list, refreshed by
    /// the recovery loop).
    distrusted: std::sync::RwLock<HashSet<OrganizationId>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

/// How usage questions were answered since the store was opened.
#[derive(Debug, Default)]
struct PathCounters {
    from_state: AtomicU64,
    pushed_down: AtomicU64,
    reference: AtomicU64,
    pushdown_errors: AtomicU64,
}

/// How many usage questions were answered from the usage state, by a pushed-down statement, by
/// the reference engine over the stored events, and how many pushed-down or state statements
/// failed (and were answered another way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePaths {
    pub from_state: u64,
    pub pushed_down: u64,
    pub reference: u64,
    pub pushdown_errors: u64,
}

pub(crate) fn micros_to_instant(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| StoreError::Backend(format!("stored instant {micros} out of range")))
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

impl ClickHouseEventStore {
    /// Connects to both servers, creates (or checks) the ClickHouse database and table and the
    /// ledger's tables, recovers batches left pending, and starts the background work.
    pub async fn open(options: ClickHouseOptions) -> Result<Self, StoreError> {
        let url = ClickHouseUrl::parse(&options.clickhouse_url).map_err(backend)?;
        let ch = ClickHouse::new(url)?;
        let version = ch.version().await?;
        let ledger = Ledger::open(&options.postgres_url).await?;
        // Under the schema lock, so no replica starts answering from a state another one is
        // still adding to a database that holds events.
        let lock = ledger.lock_schema().await?;
        if schema::create(&ch, &version).await? {
            let marked = lock
                .distrust_every_organization("the usage state was added after events were stored")
                .await?;
            if marked > 0 {
                tracing::warn!(
                    organizations = marked,
                    "the usage state was added to a database holding events: those organizations are answered from the events"
                );
            }
        } else {
            lock.release().await?;
        }
        let distrusted = ledger.distrusted().await?;
        let inserter = inserter::Inserter::start(ch.clone());
        let inner = Arc::new(Inner {
            ch,
            ledger,
            inserter,
            tasks: Mutex::new(Vec::new()),
            paths: PathCounters::default(),
            distrusted: std::sync::RwLock::new(distrusted),
        });
        // Whatever a replica that stopped left pending is inserted before this one serves.
        recovery::recover_pending(&inner, Duration::ZERO).await?;
        let tasks = recovery::start(&inner, options.recovery_interval, options.retention);
        inner.tasks.lock().map_err(|_| backend("task list poisoned"))?.extend(tasks);
        tracing::info!(clickhouse = %version, database = inner.ch.database(), "clickhouse event store opened");
        Ok(Self { inner })
    }

    /// How usage questions were answered so far (for tests and diagnostics).
    pub fn usage_paths(&self) -> UsagePaths {
        let paths = &self.inner.paths;
        UsagePaths {
            from_state: paths.from_state.load(Ordering::Relaxed),
            pushed_down: paths.pushed_down.load(Ordering::Relaxed),
            reference: paths.reference.load(Ordering::Relaxed),
            pushdown_errors: paths.pushdown_errors.load(Ordering::Relaxed),
        }
    }

    /// Inserts now whatever is pending and checks and forgets every inserted batch (for tests
    /// and for an operator's maintenance): what the background work does over time.
    pub async fn settle(&self) -> Result<(), StoreError> {
        recovery::recover_pending(&self.inner, Duration::ZERO).await?;
        recovery::verify_retained(&self.inner, Duration::ZERO).await
    }

    /// Claims `events` in the ledger and stops there, as a replica killed between its
    /// PostgreSQL commit and its ClickHouse insert does (the batch's connection is closed, so
    /// its lock is free). Answers the accepted events' sequences. For tests of the recovery.
    #[doc(hidden)]
    pub async fn claim_without_inserting(
        &self,
        org: OrganizationId,
        events: Vec<Event>,
    ) -> Result<Vec<u64>, StoreError> {
        let keyed: Vec<(u128, u128)> = events
            .iter()
            .map(|e| (event_fingerprint(org, &e.customer, &e.transaction_id), content_hash(e)))
            .collect();
        let claimed = self.inner.ledger.claim(org, &events, &keyed, false).await?;
        drop(claimed.batch);
        Ok(claimed
            .decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Accepted { sequence } => Some(*sequence),
                _ => None,
            })
            .collect())
    }

    /// How many rows of `org` ClickHouse holds, and how many distinct sequences: equal unless
    /// an event was stored twice (for tests).
    pub async fn stored_counts(&self, org: OrganizationId) -> Result<(u64, u64), StoreError> {
        let rows = self
            .inner
            .ch
            .query(
                &format!(
                    "SELECT count(), uniqExact(sequence) FROM events WHERE org = {}",
                    literal(&org.to_string())
                ),
                2,
            )
            .await?;
        let row = rows.first().ok_or_else(|| backend("no count"))?;
        let number = |i: usize| -> Result<u64, StoreError> {
            row[i].as_deref().and_then(|t| t.parse().ok()).ok_or_else(|| backend("bad count"))
        };
        Ok((number(0)?, number(1)?))
    }
}

impl Inner {
    /// Reads again which organizations the usage state no longer answers for.
    pub(crate) async fn refresh_distrusted(&self) -> Result<(), StoreError> {
        let distrusted = self.ledger.distrusted().await?;
        *self.distrusted.write().map_err(|_| backend("distrust list poisoned"))? = distrusted;
        Ok(())
    }

    fn is_distrusted(&self, org: OrganizationId) -> bool {
        self.distrusted.read().map_or(true, |set| set.contains(&org))
    }

    /// Usage from the state where it answers, else from the events; with the path taken.
    async fn usage_any(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<(Vec<UsageResult>, UsagePath), UsageQueryError> {
        let reason = match self.usage_from_state(org, customers, spec, query).await? {
            Ok((results, edges)) => return Ok((results, UsagePath::Index { edges })),
            Err(reason) => reason,
        };
        let results = self.usage_from_events(org, customers, spec, query).await?;
        Ok((results, UsagePath::Events(reason)))
    }

    /// The answer from the usage state (and whether edges were read from the events), or why
    /// the state does not answer.
    async fn usage_from_state(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Result<(Vec<UsageResult>, bool), EventsReason>, UsageQueryError> {
        if spec.aggregation.kind == AggregationType::CustomSql {
            return Ok(Err(EventsReason::CustomSql));
        }
        if customers.is_empty() {
            return Ok(Err(EventsReason::NotIndexed));
        }
        let plan = match state::plan(&org.to_string(), customers, spec, query)? {
            Ok(plan) => plan,
            Err(reason) => return Ok(Err(reason)),
        };
        if self.is_distrusted(org) {
            return Ok(Err(EventsReason::Unverified));
        }
        let edges = async {
            match &plan.edges_sql {
                Some(sql) => self.ch.query(sql, state::EDGE_COLUMNS).await,
                None => Ok(Vec::new()),
            }
        };
        let (state_rows, edge_rows) =
            match tokio::join!(self.ch.query(&plan.state_sql, state::STATE_COLUMNS), edges) {
                (Ok(state_rows), Ok(edge_rows)) => (state_rows, edge_rows),
                (Err(err), _) | (_, Err(err)) => {
                    self.paths.pushdown_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%err, "usage from the state failed; the events answer");
                    return Ok(Err(EventsReason::NotIndexed));
                }
            };
        let folded = state::fold(&plan, state_rows, edge_rows).and_then(|folded| match folded {
            Some((statement, rows)) => {
                pushdown::assemble(&statement, rows, spec, customers, query.group_limit)
            }
            None => Ok(pushdown::Outcome::Fallback("a sum a decimal cannot hold")),
        });
        match folded {
            Ok(pushdown::Outcome::Answered(results)) => {
                self.paths.from_state.fetch_add(1, Ordering::Relaxed);
                Ok(Ok((results, plan.edges())))
            }
            Ok(pushdown::Outcome::Fallback(_)) => Ok(Err(EventsReason::Inexact)),
            Err(pushdown::PushdownError::Usage(err)) => Err(err.into()),
            Err(err) => {
                self.paths.pushdown_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%err, "usage from the state failed; the events answer");
                Ok(Err(EventsReason::NotIndexed))
            }
        }
    }

    async fn read_events(&self, sql: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self.ch.query(sql, EVENT_COLUMN_COUNT).await?;
        rows.iter().map(|row| read_event(row)).collect()
    }

    async fn event_by_key(
        &self,
        org: OrganizationId,
        customer: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE org = {} AND customer = {} \
             AND transaction_id = {} LIMIT 1",
            literal(&org.to_string()),
            literal(customer),
            literal(transaction_id)
        );
        Ok(self.read_events(&sql).await?.into_iter().next())
    }

    /// Waits until a batch is in ClickHouse, inserting it if its owner is gone.
    async fn ensure_inserted(&self, batch: i64) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.ledger.is_inserted(batch).await? {
                return Ok(());
            }
            if let Some(lock) = self.ledger.try_lock(batch).await? {
                return recovery::insert_batch(self, lock, false).await;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(backend(format!("batch {batch} is still being inserted")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The customers' events a usage question reads, by customer, in sequence order.
    async fn usage_events(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<HashMap<String, Vec<StoredEvent>>, StoreError> {
        let mut conditions = vec![
            format!("org = {}", literal(&org.to_string())),
            format!("code = {}", literal(&spec.event_code)),
            format!("customer IN ({})", escape::literals(customers.iter().map(String::as_str))),
            format!("ts < {}", query.to.timestamp_micros()),
        ];
        if !spec.aggregation.recurring {
            conditions.push(format!("ts >= {}", query.from.timestamp_micros()));
        }
        if let Some(as_of) = query.as_of {
            conditions.push(format!("ingested_at <= {}", as_of.timestamp_micros()));
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY sequence LIMIT 1 BY sequence",
            conditions.join(" AND ")
        );
        let mut grouped: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for event in self.read_events(&sql).await? {
            grouped.entry(event.event.customer.clone()).or_default().push(event);
        }
        Ok(grouped)
    }

    async fn usage_from_events(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        if spec.aggregation.kind == AggregationType::CustomSql {
            return self.sql_usage(org, customers, spec, query).await;
        }
        let org_text = org.to_string();
        match pushdown::plan(&org_text, customers, spec, query)? {
            Ok(statement) => {
                let answer = match self.ch.query(&statement.sql, statement.columns()).await {
                    Ok(rows) => {
                        pushdown::assemble(&statement, rows, spec, customers, query.group_limit)
                            .map_err(|e| match e {
                                pushdown::PushdownError::Usage(e) => Ok(e),
                                other => Err(other.to_string()),
                            })
                    }
                    Err(err) => Err(Err(err.to_string())),
                };
                match answer {
                    Ok(pushdown::Outcome::Answered(results)) => {
                        self.paths.pushed_down.fetch_add(1, Ordering::Relaxed);
                        return Ok(results);
                    }
                    Ok(pushdown::Outcome::Fallback(why)) => {
                        tracing::debug!(why, "usage answered by the reference engine");
                    }
                    Err(Ok(usage)) => return Err(usage.into()),
                    Err(Err(err)) => {
                        self.paths.pushdown_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%err, "pushed-down usage failed; the reference engine answers");
                    }
                }
            }
            Err(why) => tracing::debug!(why, "usage answered by the reference engine"),
        }
        self.paths.reference.fetch_add(1, Ordering::Relaxed);
        let grouped = self.usage_events(org, customers, spec, query).await?;
        let (customers, spec, query) = (customers.to_vec(), spec.clone(), query.clone());
        tokio::task::spawn_blocking(move || {
            let mut results = Vec::with_capacity(customers.len());
            for customer in &customers {
                let events = grouped.get(customer).map_or(&[][..], Vec::as_slice);
                results.push(compute_usage(&spec, events, &query)?);
            }
            Ok::<_, UsageQueryError>(results)
        })
        .await
        .map_err(|e| backend(format!("usage task failed: {e}")))?
    }

    /// A `custom_sql` metric: the embedded store's sandbox over each customer's events of the
    /// period (every code), read from ClickHouse, with the organization's property keys and
    /// usage tables.
    async fn sql_usage(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        let keys = self.ledger.property_keys(org).await?;
        let tables = self.usage_tables(org).await?;
        let org_text = org.to_string();
        let mut results = Vec::with_capacity(customers.len());
        for customer in customers {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE org = {} AND customer = {} \
                 AND ts >= {} AND ts < {} ORDER BY sequence LIMIT 1 BY sequence",
                literal(&org_text),
                literal(customer),
                query.from.timestamp_micros(),
                query.to.timestamp_micros()
            );
            let events = self.read_events(&sql).await?;
            let (org_text, customer, keys, tables, spec, query) = (
                org_text.clone(),
                customer.clone(),
                keys.clone(),
                tables.clone(),
                spec.clone(),
                query.clone(),
            );
            let result = tokio::task::spawn_blocking(move || {
                odometer_embedded::events::reference_usage(
                    &org_text, &customer, &events, &keys, &tables, &spec, &query,
                )
            })
            .await
            .map_err(|e| backend(format!("sql metric task failed: {e}")))??;
            results.push(result);
        }
        Ok(results)
    }

    async fn usage_tables(&self, org: OrganizationId) -> Result<Vec<UsageTable>, StoreError> {
        self.ledger
            .usage_tables(org)
            .await?
            .iter()
            .map(|text| serde_json::from_str(text).map_err(backend))
            .collect()
    }
}

/// The rows of `events` (accepted, with their sequences) as `TabSeparated` text.
pub(crate) fn rows_of(
    org: OrganizationId,
    events: &[(&Event, u64)],
    ingested_at: i64,
    batch: i64,
) -> Result<String, StoreError> {
    let org = org.to_string();
    let batch = u64::try_from(batch).map_err(|_| backend("negative batch id"))?;
    let mut out = String::with_capacity(events.len() * 256);
    for &(event, sequence) in events {
        write_row(RowOf { org: &org, event, sequence, ingested_at, batch }, &mut out)?;
    }
    Ok(out)
}

#[async_trait]
impl EventStore for ClickHouseEventStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ledger.ping().await?;
        self.inner.ch.version().await.map(drop)
    }

    async fn append(
        &self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let (events, keyed) = tokio::task::spawn_blocking(move || {
            let keyed: Vec<(u128, u128)> = events
                .iter()
                .map(|e| (event_fingerprint(org, &e.customer, &e.transaction_id), content_hash(e)))
                .collect();
            (events, keyed)
        })
        .await
        .map_err(|e| backend(format!("hashing task failed: {e}")))?;
        let claimed = inner.ledger.claim(org, &events, &keyed, atomic).await?;
        if let Some(batch) = claimed.batch {
            let accepted: Vec<(&Event, u64)> = claimed
                .decisions
                .iter()
                .zip(&events)
                .filter_map(|(d, e)| match d {
                    Decision::Accepted { sequence } => Some((e, *sequence)),
                    _ => None,
                })
                .collect();
            let rows = rows_of(org, &accepted, batch.ingested_at, batch.id)?;
            inner.inserter.insert(rows).await?;
            let id = batch.id;
            if let Err(err) = inner.ledger.mark_inserted(batch).await {
                // The events are claimed and in ClickHouse: acknowledged. The recovery finds
                // the rows there and marks the batch.
                tracing::warn!(%err, batch = id, "an inserted batch could not be marked");
            }
        }
        // A duplicate or conflict of an event still being inserted (by another request or
        // replica) is answered once that event is in ClickHouse.
        let pending: BTreeSet<i64> = claimed
            .decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Duplicate { batch: Some(claim), .. }
                | Decision::ConflictStored { claim } => claim.pending.then_some(claim.batch),
                _ => None,
            })
            .collect();
        for batch in pending {
            inner.ensure_inserted(batch).await?;
        }
        let mut outcomes = Vec::with_capacity(events.len());
        for (i, decision) in claimed.decisions.iter().enumerate() {
            outcomes.push(match decision {
                Decision::Accepted { sequence } => EventOutcome::Accepted { sequence: *sequence },
                Decision::Duplicate { sequence, .. } => {
                    EventOutcome::Duplicate { sequence: *sequence }
                }
                Decision::ConflictInBatch { first } => {
                    EventOutcome::Rejected(conflict_rejection(&events[*first], &events[i]))
                }
                Decision::ConflictStored { .. } => {
                    let e = &events[i];
                    let first = inner
                        .event_by_key(org, &e.customer, &e.transaction_id)
                        .await?
                        .ok_or_else(|| backend("a claimed event is not in ClickHouse"))?;
                    EventOutcome::Rejected(conflict_rejection(&first.event, e))
                }
            });
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
        }
        Ok(outcomes)
    }

    async fn get_event(
        &self,
        org: OrganizationId,
        customer: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.event_by_key(org, customer, transaction_id).await
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
        // Sequences past the first batch still being inserted are left for the next page, so
        // a cursor never skips an event that becomes readable after it.
        let through = self.inner.ledger.visible_through(org).await?;
        let mut conditions = vec![
            format!("org = {}", literal(&org.to_string())),
            format!("sequence > {after}"),
            format!("sequence <= {through}"),
        ];
        if let Some(customer) = &params.customer {
            conditions.push(format!("customer = {}", literal(customer)));
        }
        if let Some(code) = &params.code {
            conditions.push(format!("code = {}", literal(code)));
        }
        if let Some(from) = &params.from {
            conditions.push(format!("ts >= {}", from.timestamp_micros()));
        }
        if let Some(to) = &params.to {
            conditions.push(format!("ts < {}", to.timestamp_micros()));
        }
        let limit = u64::from(params.limit.clamp(1, 1000));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY sequence LIMIT 1 BY sequence \
             LIMIT {}",
            conditions.join(" AND "),
            limit + 1
        );
        let mut items = self.inner.read_events(&sql).await?;
        let next_cursor = if items.len() as u64 > limit {
            items.truncate(limit as usize);
            items.last().map(|e| e.sequence.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn customer_events(
        &self,
        org: OrganizationId,
        customer: &str,
        code: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conditions = vec![
            format!("org = {}", literal(&org.to_string())),
            format!("customer = {}", literal(customer)),
            format!("code = {}", literal(code)),
            format!("ts < {}", to.timestamp_micros()),
        ];
        if let Some(from) = from {
            conditions.push(format!("ts >= {}", from.timestamp_micros()));
        }
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY sequence LIMIT 1 BY sequence",
            conditions.join(" AND ")
        );
        self.inner.read_events(&sql).await
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
        results.pop().ok_or_else(|| backend("usage query returned nothing").into())
    }

    async fn usage_of_customers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Vec<UsageResult>, UsageQueryError> {
        Ok(self.inner.usage_any(org, customers, spec, query).await?.0)
    }

    async fn usage_answers(
        &self,
        org: OrganizationId,
        customers: &[String],
        spec: &MetricSpec,
        query: &UsageQuery,
        choice: PathChoice,
    ) -> Result<Vec<UsageAnswer>, UsageQueryError> {
        let (results, path) = match choice {
            PathChoice::Events => (
                self.inner.usage_from_events(org, customers, spec, query).await?,
                UsagePath::Events(EventsReason::Requested),
            ),
            PathChoice::Any => self.inner.usage_any(org, customers, spec, query).await?,
        };
        Ok(results.into_iter().map(|result| UsageAnswer { result, path }).collect())
    }

    async fn create_usage_table(
        &self,
        org: OrganizationId,
        table: UsageTable,
    ) -> Result<bool, StoreError> {
        let definition = serde_json::to_string(&table).map_err(backend)?;
        self.inner.ledger.create_usage_table(org, &table.api_slug, &definition).await
    }

    async fn usage_tables(&self, org: OrganizationId) -> Result<Vec<UsageTable>, StoreError> {
        self.inner.usage_tables(org).await
    }

    async fn idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        match self.inner.ledger.idempotent_response(org, key).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(backend),
        }
    }

    async fn keep_idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
        response: IdempotentResponse,
    ) -> Result<IdempotentResponse, StoreError> {
        let text = serde_json::to_string(&response).map_err(backend)?;
        let kept = self.inner.ledger.keep_idempotent_response(org, key, &text).await?;
        serde_json::from_str(&kept).map_err(backend)
    }
}
