//! The exactly-once ledger in PostgreSQL: which identities are stored, with which content and
//! sequence, in which batch, and which batches ClickHouse already holds.
//!
//! Tables (schema `event_ledger`, created at start under an advisory lock):
//! - `sequences (org, last_sequence, last_ingested_at)`: each organization's last sequence and
//!   ingestion time. Its row is locked (`FOR UPDATE`) by every append of the organization, so
//!   appends of one organization are serialized across all replicas: that is what numbers
//!   events from 1 without gaps in acceptance order, and what makes the claims below race-free.
//! - `claims (fingerprint, content, sequence, batch)`: one row per stored identity, for all
//!   time (no window). The fingerprint (`event_fingerprint`) includes the organization.
//! - `batches (id, org, first_sequence, last_sequence, events, ingested_at, inserted,
//!   claimed_at, inserted_at, payload)`: the accepted events of one append (`payload`, JSON),
//!   kept until ClickHouse is known to hold them (then the row is deleted by the pruner).
//! - `property_keys (org, key)`: every top-level property key an organization has sent (SQL
//!   metrics see them as columns); `usage_tables`, `idempotency`: what the trait keeps besides
//!   events.
//! - `usage_state_distrust (org, reason, since)`: organizations whose precomputed usage state
//!   in ClickHouse ([`crate::state`]) may differ from their events, so it no longer answers
//!   for them: the state was added to a database that already held their events, or a
//!   batch's marker disagreed with its count.
//!
//! A batch is inserted into ClickHouse only by a session holding the batch's advisory lock
//! (`pg_advisory_lock`, session level). The appending replica takes it inside the claiming
//! transaction, so from the moment the claims are visible until the batch is marked
//! `inserted` the lock says "its owner is alive and inserting". Everyone else (a duplicate
//! waiting for the original, the recovery loop) inserts a batch only after taking the lock
//! themselves and finding it still not inserted; the insert then writes only the batch's rows
//! ClickHouse does not have. PostgreSQL drops a session's locks when its connection ends, so a
//! replica killed mid-insert frees its batches for the others at once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use odometer_core::event::Event;
use odometer_core::OrganizationId;
use odometer_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row};
use uuid::Uuid;

/// The ledger's layout version, kept in `event_ledger.meta`.
const LAYOUT_VERSION: &str = "1";

const SCHEMA: [&str; 10] = [
    "CREATE SCHEMA IF NOT EXISTS event_ledger",
    "CREATE TABLE IF NOT EXISTS event_ledger.meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_ledger.sequences (
        org uuid PRIMARY KEY,
        last_sequence bigint NOT NULL,
        last_ingested_at bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_ledger.claims (
        fingerprint uuid PRIMARY KEY,
        content uuid NOT NULL,
        sequence bigint NOT NULL,
        batch bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_ledger.batches (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        org uuid NOT NULL,
        first_sequence bigint NOT NULL,
        last_sequence bigint NOT NULL,
        events integer NOT NULL,
        ingested_at bigint NOT NULL,
        inserted boolean NOT NULL DEFAULT false,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        inserted_at timestamptz,
        payload text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS batches_not_inserted
        ON event_ledger.batches (org, first_sequence) WHERE NOT inserted",
    "CREATE TABLE IF NOT EXISTS event_ledger.property_keys (
        org uuid NOT NULL, key text NOT NULL, PRIMARY KEY (org, key))",
    "CREATE TABLE IF NOT EXISTS event_ledger.usage_tables (
        org uuid NOT NULL, slug text NOT NULL, created bigint GENERATED ALWAYS AS IDENTITY,
        definition text NOT NULL, PRIMARY KEY (org, slug))",
    "CREATE TABLE IF NOT EXISTS event_ledger.idempotency (
        org uuid NOT NULL, key text NOT NULL, response text NOT NULL, PRIMARY KEY (org, key))",
    "CREATE TABLE IF NOT EXISTS event_ledger.usage_state_distrust (
        org uuid PRIMARY KEY, reason text NOT NULL, since timestamptz NOT NULL DEFAULT now())",
];

/// The schema lock, held (see [`Ledger::lock_schema`]).
pub struct SchemaLock(sqlx::Transaction<'static, Postgres>);

impl SchemaLock {
    /// Every organization that has ever stored an event is no longer answered from the usage
    /// state, then the lock is released.
    pub async fn distrust_every_organization(mut self, reason: &str) -> Result<u64, StoreError> {
        let marked = sqlx::query(
            "INSERT INTO event_ledger.usage_state_distrust (org, reason) \
             SELECT org, $1 FROM event_ledger.sequences ON CONFLICT (org) DO NOTHING",
        )
        .bind(reason)
        .execute(&mut *self.0)
        .await
        .map_err(pg)?
        .rows_affected();
        self.0.commit().await.map_err(pg)?;
        Ok(marked)
    }

    pub async fn release(self) -> Result<(), StoreError> {
        self.0.commit().await.map_err(pg)
    }
}

/// The advisory lock serializing schema creation (`odo` + 1).
const SCHEMA_LOCK: i64 = 0x6f64_6f00_0000_0001;
/// Batch locks are this plus the batch id (another batch's lock with the same key would only
/// make someone wait, never let two sessions insert one batch).
const BATCH_LOCK_BASE: i64 = 0x6f64_6f01_0000_0000;

fn lock_key(batch: i64) -> i64 {
    BATCH_LOCK_BASE.wrapping_add(batch)
}

pub fn pg(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}

/// An accepted event as a batch's payload keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayloadEvent {
    pub customer: String,
    pub transaction_id: String,
    pub code: String,
    pub timestamp: i64,
    pub properties: Map<String, Value>,
    pub sequence: u64,
}

impl PayloadEvent {
    pub fn event(&self) -> Result<Event, StoreError> {
        Ok(Event {
            transaction_id: self.transaction_id.clone(),
            code: self.code.clone(),
            customer: self.customer.clone(),
            timestamp: crate::micros_to_instant(self.timestamp)?,
            properties: self.properties.clone(),
        })
    }
}

/// What the ledger knew of one identity before an append.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub content: u128,
    pub sequence: u64,
    pub batch: i64,
    /// Its batch is not yet in ClickHouse.
    pub pending: bool,
}

/// A batch whose claims are committed and whose lock this value holds, on its own
/// connection. [`Ledger::mark_inserted`] releases it; dropped without that, the connection is
/// closed, which releases the lock too.
#[derive(Debug)]
pub struct OwnedBatch {
    pub id: i64,
    pub ingested_at: i64,
    conn: Option<PoolConnection<Postgres>>,
}

impl Drop for OwnedBatch {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not back to the pool: a pooled connection would keep the lock.
            drop(conn.detach());
        }
    }
}

/// What [`Ledger::claim`] decided: per event, what the earlier claims say, and the batch if
/// anything was accepted.
#[derive(Debug)]
pub struct Claimed {
    pub decisions: Vec<Decision>,
    pub batch: Option<OwnedBatch>,
}

/// One event of an append, as decided under the organization's lock.
#[derive(Debug, Clone)]
pub enum Decision {
    Accepted {
        sequence: u64,
    },
    /// The same content as an earlier event: of this batch (`batch: None`) or of a stored
    /// batch.
    Duplicate {
        sequence: u64,
        batch: Option<Claim>,
    },
    /// Other content than the event at this index of the batch.
    ConflictInBatch {
        first: usize,
    },
    /// Other content than a stored event.
    ConflictStored {
        claim: Claim,
    },
}

impl Decision {
    pub fn is_stored(&self) -> bool {
        matches!(self, Self::Accepted { .. } | Self::Duplicate { .. })
    }
}

/// A batch not yet inserted, as the recovery reads it.
#[derive(Debug)]
pub struct PendingBatch {
    pub org: OrganizationId,
    pub ingested_at: i64,
    pub events: Vec<PayloadEvent>,
    pub inserted: bool,
}

/// The ledger (see the module documentation).
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: PgPool,
}

fn uuid(value: u128) -> Uuid {
    Uuid::from_u128(value)
}

fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| pg(format!("negative sequence {value}")))
}

impl Ledger {
    /// Connects and creates (or checks) the ledger's tables.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(pg)?;
        // `CREATE ... IF NOT EXISTS` at every start is expected: no notice for each.
        let options = options.options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(pg)?;
        let mut tx = pool.begin().await.map_err(pg)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&mut *tx).await.map_err(pg)?;
        }
        let found: Option<String> =
            sqlx::query_scalar("SELECT value FROM event_ledger.meta WHERE key = 'layout'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg)?;
        match found.as_deref() {
            None => {
                sqlx::query("INSERT INTO event_ledger.meta VALUES ('layout', $1)")
                    .bind(LAYOUT_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg)?;
            }
            Some(LAYOUT_VERSION) => {}
            Some(other) => {
                return Err(pg(format!(
                    "the event ledger has layout {other}; this build reads {LAYOUT_VERSION}"
                )))
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(Self { pool })
    }

    /// Takes the schema lock until the answer is committed: what is done in ClickHouse
    /// meanwhile is seen by every other replica's start as done.
    pub async fn lock_schema(&self) -> Result<SchemaLock, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        Ok(SchemaLock(tx))
    }

    /// The organizations the usage state no longer answers for.
    pub async fn distrusted(&self) -> Result<HashSet<OrganizationId>, StoreError> {
        let orgs: Vec<Uuid> =
            sqlx::query_scalar("SELECT org FROM event_ledger.usage_state_distrust")
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?;
        Ok(orgs.into_iter().map(OrganizationId::from_uuid).collect())
    }

    /// The usage state no longer answers for `org` (the first reason stays).
    pub async fn distrust(&self, org: OrganizationId, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO event_ledger.usage_state_distrust (org, reason) VALUES ($1, $2) \
             ON CONFLICT (org) DO NOTHING",
        )
        .bind(org.as_uuid())
        .bind(reason)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(pg)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(pg)
    }

    /// Decides every event of an append under the organization's lock, and when some are
    /// accepted (and the batch is not a failed atomic one), commits their claims, the batch
    /// with its payload and the new last sequence in one transaction, holding the batch's lock.
    pub async fn claim(
        &self,
        org: OrganizationId,
        events: &[Event],
        keyed: &[(u128, u128)],
        atomic: bool,
    ) -> Result<Claimed, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(pg)?;
        let mut tx = conn.begin().await.map_err(pg)?;
        let org_id = org.as_uuid();
        sqlx::query(
            "INSERT INTO event_ledger.sequences VALUES ($1, 0, 0) ON CONFLICT (org) DO NOTHING",
        )
        .bind(org_id)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        let row = sqlx::query(
            "SELECT last_sequence, last_ingested_at FROM event_ledger.sequences \
             WHERE org = $1 FOR UPDATE",
        )
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg)?;
        let last_sequence: i64 = row.try_get(0).map_err(pg)?;
        let last_ingested: i64 = row.try_get(1).map_err(pg)?;
        // The clock is read after the lock is held, so ingestion times follow sequences; never
        // backwards, even if the server's clock is.
        let now: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
                .fetch_one(&mut *tx)
                .await
                .map_err(pg)?;
        let ingested_at = now.max(last_ingested);

        let fingerprints: Vec<Uuid> = keyed.iter().map(|(f, _)| uuid(*f)).collect();
        let rows = sqlx::query(
            "SELECT c.fingerprint, c.content, c.sequence, c.batch, \
                    (b.id IS NOT NULL AND NOT b.inserted) \
             FROM event_ledger.claims c LEFT JOIN event_ledger.batches b ON b.id = c.batch \
             WHERE c.fingerprint = ANY($1)",
        )
        .bind(&fingerprints)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        let mut stored: HashMap<u128, Claim> = HashMap::with_capacity(rows.len());
        for row in rows {
            let fingerprint: Uuid = row.try_get(0).map_err(pg)?;
            let content: Uuid = row.try_get(1).map_err(pg)?;
            let claim = Claim {
                content: content.as_u128(),
                sequence: to_u64(row.try_get(2).map_err(pg)?)?,
                batch: row.try_get(3).map_err(pg)?,
                pending: row.try_get(4).map_err(pg)?,
            };
            stored.insert(fingerprint.as_u128(), claim);
        }

        let mut next = to_u64(last_sequence)?;
        let mut in_batch: HashMap<u128, usize> = HashMap::new();
        let mut decisions = Vec::with_capacity(events.len());
        let mut accepted: Vec<usize> = Vec::new();
        for (i, &(fingerprint, content)) in keyed.iter().enumerate() {
            let decision = if let Some(&first) = in_batch.get(&fingerprint) {
                match (&decisions[first], keyed[first].1 == content) {
                    (Decision::Accepted { sequence }, true) => {
                        Decision::Duplicate { sequence: *sequence, batch: None }
                    }
                    _ => Decision::ConflictInBatch { first },
                }
            } else if let Some(claim) = stored.get(&fingerprint) {
                if claim.content == content {
                    Decision::Duplicate { sequence: claim.sequence, batch: Some(*claim) }
                } else {
                    Decision::ConflictStored { claim: *claim }
                }
            } else {
                next += 1;
                in_batch.insert(fingerprint, i);
                accepted.push(i);
                Decision::Accepted { sequence: next }
            };
            decisions.push(decision);
        }
        let failed_atomic = atomic && decisions.iter().any(|d| !d.is_stored());
        if accepted.is_empty() || failed_atomic {
            tx.rollback().await.map_err(pg)?;
            return Ok(Claimed { decisions, batch: None });
        }

        let payload: Vec<PayloadEvent> = accepted
            .iter()
            .map(|&i| {
                let e = &events[i];
                let Decision::Accepted { sequence } = decisions[i] else { unreachable!() };
                PayloadEvent {
                    customer: e.customer.clone(),
                    transaction_id: e.transaction_id.clone(),
                    code: e.code.clone(),
                    timestamp: e.timestamp.timestamp_micros(),
                    properties: e.properties.clone(),
                    sequence,
                }
            })
            .collect();
        let payload_text = serde_json::to_string(&payload).map_err(pg)?;
        let first_sequence = next - accepted.len() as u64 + 1;
        let batch: i64 = sqlx::query_scalar(
            "INSERT INTO event_ledger.batches \
             (org, first_sequence, last_sequence, events, ingested_at, payload) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(org_id)
        .bind(first_sequence as i64)
        .bind(next as i64)
        .bind(accepted.len() as i32)
        .bind(ingested_at)
        .bind(&payload_text)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg)?;
        let claimed_fingerprints: Vec<Uuid> = accepted.iter().map(|&i| fingerprints[i]).collect();
        let contents: Vec<Uuid> = accepted.iter().map(|&i| uuid(keyed[i].1)).collect();
        let sequences: Vec<i64> = payload.iter().map(|p| p.sequence as i64).collect();
        sqlx::query(
            "INSERT INTO event_ledger.claims (fingerprint, content, sequence, batch) \
             SELECT f, c, s, $4 FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS t(f, c, s)",
        )
        .bind(&claimed_fingerprints)
        .bind(&contents)
        .bind(&sequences)
        .bind(batch)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        // PostgreSQL text cannot hold NUL; a key with one cannot name a SQL column either.
        let keys: HashSet<&str> = accepted
            .iter()
            .flat_map(|&i| events[i].properties.keys().map(String::as_str))
            .filter(|key| !key.contains('\0'))
            .collect();
        let keys: Vec<&str> = keys.into_iter().collect();
        sqlx::query(
            "INSERT INTO event_ledger.property_keys (org, key) \
             SELECT $1, k FROM unnest($2::text[]) AS t(k) ON CONFLICT DO NOTHING",
        )
        .bind(org_id)
        .bind(&keys)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        sqlx::query(
            "UPDATE event_ledger.sequences SET last_sequence = $2, last_ingested_at = $3 \
             WHERE org = $1",
        )
        .bind(org_id)
        .bind(next as i64)
        .bind(ingested_at)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        // Session level: held past the commit, until the batch is marked inserted. Taken last,
        // so an error before it leaves no lock on a pooled connection; if the commit fails
        // the connection is closed below (not pooled), which releases it.
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock_key(batch))
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        match tx.commit().await {
            Ok(()) => {
                let owned = OwnedBatch { id: batch, ingested_at, conn: Some(conn) };
                Ok(Claimed { decisions, batch: Some(owned) })
            }
            Err(err) => {
                drop(conn.detach());
                Err(pg(err))
            }
        }
    }

    /// Marks an owned batch inserted and releases its lock.
    pub async fn mark_inserted(&self, mut batch: OwnedBatch) -> Result<(), StoreError> {
        let Some(mut conn) = batch.conn.take() else {
            return Err(pg("the batch has no connection"));
        };
        let marked = async {
            sqlx::query(
                "UPDATE event_ledger.batches SET inserted = true, inserted_at = now() WHERE id = $1",
            )
            .bind(batch.id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(lock_key(batch.id))
                .execute(&mut *conn)
                .await
        }
        .await;
        match marked {
            Ok(_) => Ok(()),
            Err(err) => {
                drop(conn.detach());
                Err(pg(err))
            }
        }
    }

    /// Tries to take a batch's lock on a connection of its own: `None` when someone holds it.
    pub async fn try_lock(&self, batch: i64) -> Result<Option<BatchLock>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(pg)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(batch))
            .fetch_one(&mut *conn)
            .await
            .map_err(pg)?;
        Ok(got.then(|| BatchLock { batch, conn: Some(conn) }))
    }

    /// Whether the batch is inserted (a batch no longer in the ledger was, long ago).
    pub async fn is_inserted(&self, batch: i64) -> Result<bool, StoreError> {
        let inserted: Option<bool> =
            sqlx::query_scalar("SELECT inserted FROM event_ledger.batches WHERE id = $1")
                .bind(batch)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg)?;
        Ok(inserted.unwrap_or(true))
    }

    /// The largest sequence below which every event of `org` is in ClickHouse: just before
    /// the first batch not yet inserted, else the last sequence committed.
    pub async fn visible_through(&self, org: OrganizationId) -> Result<u64, StoreError> {
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT coalesce( \
                (SELECT min(first_sequence) - 1 FROM event_ledger.batches \
                 WHERE org = $1 AND NOT inserted), \
                (SELECT last_sequence FROM event_ledger.sequences WHERE org = $1), 0)",
        )
        .bind(org.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(pg)?;
        to_u64(through.unwrap_or(0))
    }

    /// Batches not inserted, claimed at least `older_than` ago, oldest first.
    pub async fn pending_batches(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM event_ledger.batches WHERE NOT inserted \
             AND claimed_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)
    }

    /// Inserted batches past their retention: `(id, org, events)`.
    pub async fn retained_batches(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(i64, OrganizationId, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org, events FROM event_ledger.batches WHERE inserted \
             AND inserted_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let org: Uuid = row.try_get(1).map_err(pg)?;
                let events: i32 = row.try_get(2).map_err(pg)?;
                Ok((
                    row.try_get(0).map_err(pg)?,
                    OrganizationId::from_uuid(org),
                    u64::try_from(events).map_err(pg)?,
                ))
            })
            .collect()
    }

    /// Forgets batches ClickHouse was checked to hold (their claims stay, for all time).
    pub async fn forget_batches(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM event_ledger.batches WHERE id = ANY($1) AND inserted")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(pg)
    }

    /// The organization's property keys.
    pub async fn property_keys(&self, org: OrganizationId) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT key FROM event_ledger.property_keys WHERE org = $1 ORDER BY key")
            .bind(org.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(pg)
    }

    /// Defines a usage table; `false` when the slug is taken.
    pub async fn create_usage_table(
        &self,
        org: OrganizationId,
        slug: &str,
        definition: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO event_ledger.usage_tables (org, slug, definition) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(org.as_uuid())
        .bind(slug)
        .bind(definition)
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(done.rows_affected() == 1)
    }

    /// The organization's usage tables' definitions, oldest first.
    pub async fn usage_tables(&self, org: OrganizationId) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT definition FROM event_ledger.usage_tables WHERE org = $1 ORDER BY created",
        )
        .bind(org.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(pg)
    }

    pub async fn idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT response FROM event_ledger.idempotency WHERE org = $1 AND key = $2",
        )
        .bind(org.as_uuid())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)
    }

    /// Keeps `response` unless one is kept already; answers the one kept.
    pub async fn keep_idempotent_response(
        &self,
        org: OrganizationId,
        key: &str,
        response: &str,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO event_ledger.idempotency (org, key, response) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(org.as_uuid())
        .bind(key)
        .bind(response)
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        self.idempotent_response(org, key)
            .await?
            .ok_or_else(|| pg("an idempotency record vanished"))
    }
}

/// A batch's lock taken by someone other than its owner.
#[derive(Debug)]
pub struct BatchLock {
    batch: i64,
    conn: Option<PoolConnection<Postgres>>,
}

impl Drop for BatchLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl BatchLock {
    pub fn batch(&self) -> i64 {
        self.batch
    }

    fn conn(&mut self) -> Result<&mut PoolConnection<Postgres>, StoreError> {
        self.conn.as_mut().ok_or_else(|| pg("the batch lock has no connection"))
    }

    /// The batch as the ledger holds it; `None` when it was forgotten (inserted long ago).
    pub async fn read(&mut self) -> Result<Option<PendingBatch>, StoreError> {
        let batch = self.batch;
        let row = sqlx::query(
            "SELECT org, ingested_at, payload, inserted FROM event_ledger.batches WHERE id = $1",
        )
        .bind(batch)
        .fetch_optional(&mut **self.conn()?)
        .await
        .map_err(pg)?;
        let Some(row) = row else { return Ok(None) };
        let org: Uuid = row.try_get(0).map_err(pg)?;
        let payload: String = row.try_get(2).map_err(pg)?;
        let events: Vec<PayloadEvent> = serde_json::from_str(&payload).map_err(pg)?;
        Ok(Some(PendingBatch {
            org: OrganizationId::from_uuid(org),
            ingested_at: row.try_get(1).map_err(pg)?,
            events,
            inserted: row.try_get(3).map_err(pg)?,
        }))
    }

    /// Marks the batch inserted and releases the lock.
    pub async fn mark_inserted(mut self) -> Result<(), StoreError> {
        let batch = self.batch;
        let conn = self.conn()?;
        sqlx::query(
            "UPDATE event_ledger.batches SET inserted = true, inserted_at = now() WHERE id = $1",
        )
        .bind(batch)
        .execute(&mut **conn)
        .await
        .map_err(pg)?;
        self.release().await
    }

    /// Releases the lock and gives the connection back to the pool.
    pub async fn release(mut self) -> Result<(), StoreError> {
        let batch = self.batch;
        let mut conn = self.conn.take().ok_or_else(|| pg("the batch lock has no connection"))?;
        match sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lock_key(batch))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                drop(conn.detach());
                Err(pg(err))
            }
        }
    }
}
