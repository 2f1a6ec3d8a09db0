//! SQL for metrics, their revisions and their attachments.
//!
//! Row locks (several replicas write one database; READ COMMITTED transactions):
//! - a revision, an archive and a delete take the metric's row `FOR UPDATE` before reading it,
//!   so the revision number read is the one the next revision follows (no gaps, no repeats:
//!   a concurrent writer waits, then reads the new number and fails with `revision_conflict`),
//!   and the lock rule is judged on the attachments as they are when the revision commits;
//! - attaching (here, and every plan write in `plans.rs`) takes the metric's row `FOR SHARE`,
//!   which waits for and is waited on by those `FOR UPDATE` locks: an attachment and a revision
//!   of locked fields cannot both commit, and nothing attaches a metric deleted meanwhile.
//!   (The `FOR KEY SHARE` lock the attachment's foreign key takes would not do: it does not
//!   conflict with the `UPDATE` of a revision.)

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};

use odometer_core::metric::{FieldChange, MetricRevision};
use odometer_core::{time, Metric, MetricId, MetricSpec, OrganizationId};
use odometer_store::{
    ArchivedFilter, Entity, MetricListParams, MetricRevisionInput, Page, StoreError,
};

use super::columns::{
    corrupt, ensure_organization, fold, from_json, is_unique_violation, page_of, page_size,
    parse_id, parse_revision, push_after, push_page_end, push_search, revision_column, to_json,
    Failure, Result,
};

macro_rules! metric_columns {
    () => {
        "id, organization_id, spec, revision, created_at, updated_at, archived_at, deleted_at"
    };
}

/// A metric row as stored, before its columns are parsed.
#[derive(FromRow)]
struct MetricRow {
    id: String,
    organization_id: String,
    spec: String,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    archived_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

impl MetricRow {
    fn decode(self) -> Result<Metric> {
        Ok(Metric {
            id: parse_id(&self.id, MetricId::parse, "metric id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            spec: from_json(&self.spec, "metric spec")?,
            revision: parse_revision(self.revision)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            archived_at: self.archived_at,
            deleted_at: self.deleted_at,
        })
    }
}

fn code_taken(error: sqlx::Error, spec: &MetricSpec) -> Failure {
    if is_unique_violation(&error, "metrics_live_code") {
        StoreError::CodeTaken { code: spec.code.clone() }.into()
    } else {
        error.into()
    }
}

/// How a read of one metric locks its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowLock {
    /// A plain read.
    None,
    /// `FOR SHARE`: the metric stays as read (not revised, archived or deleted) until commit;
    /// what attaching it takes.
    Share,
    /// `FOR UPDATE`: what a write of the metric itself takes.
    Update,
}

/// The metric `id` of `org`, deleted or not, if there is one, read with `lock`.
async fn find(
    conn: &mut PgConnection,
    org: OrganizationId,
    id: MetricId,
    lock: RowLock,
) -> Result<Option<Metric>> {
    const SELECT: &str = concat!(
        "SELECT ",
        metric_columns!(),
        " FROM metrics WHERE id = $1 AND organization_id = $2"
    );
    const SHARE: &str = concat!(
        "SELECT ",
        metric_columns!(),
        " FROM metrics WHERE id = $1 AND organization_id = $2 FOR SHARE"
    );
    const UPDATE: &str = concat!(
        "SELECT ",
        metric_columns!(),
        " FROM metrics WHERE id = $1 AND organization_id = $2 FOR UPDATE"
    );
    let sql = match lock {
        RowLock::None => SELECT,
        RowLock::Share => SHARE,
        RowLock::Update => UPDATE,
    };
    let row: Option<MetricRow> =
        sqlx::query_as(sql).bind(id.to_string()).bind(org.to_string()).fetch_optional(conn).await?;
    row.map(MetricRow::decode).transpose()
}

async fn get_in(conn: &mut PgConnection, org: OrganizationId, id: MetricId) -> Result<Metric> {
    find(conn, org, id, RowLock::None)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Metric, id).into())
}

pub(crate) async fn get(pool: &PgPool, org: OrganizationId, id: MetricId) -> Result<Metric> {
    get_in(&mut *pool.acquire().await?, org, id).await
}

/// The metric, locked with `lock`, failing with `metric_not_found` (unknown, or another
/// organization's) or `metric_deleted`: what every write starts with.
pub(crate) async fn get_live(
    conn: &mut PgConnection,
    org: OrganizationId,
    id: MetricId,
    lock: RowLock,
) -> Result<Metric> {
    match find(conn, org, id, lock).await? {
        None => Err(StoreError::not_found(Entity::Metric, id).into()),
        Some(metric) if metric.deleted_at.is_some() => Err(StoreError::MetricDeleted.into()),
        Some(metric) => Ok(metric),
    }
}

pub(crate) async fn get_by_code(pool: &PgPool, org: OrganizationId, code: &str) -> Result<Metric> {
    let row: Option<MetricRow> = sqlx::query_as(concat!(
        "SELECT ",
        metric_columns!(),
        " FROM metrics WHERE organization_id = $1 AND code = $2 AND deleted_at IS NULL"
    ))
    .bind(org.to_string())
    .bind(code)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Metric, code).into()),
    }
}

pub(crate) async fn create(pool: &PgPool, metric: &Metric) -> Result<()> {
    if metric.revision != 1 {
        return Err(StoreError::Backend(format!(
            "a new metric starts at revision 1, not {}",
            metric.revision
        ))
        .into());
    }
    let mut tx = pool.begin().await?;
    ensure_organization(&mut tx, metric.organization_id).await?;
    let spec = to_json(&metric.spec)?;
    // The unique index over live codes decides between two replicas creating the same code:
    // the second insert waits for the first to commit, then fails.
    sqlx::query(
        "INSERT INTO metrics (id, organization_id, code, event_code, search_code, search_name, \
         spec, revision, created_at, updated_at, archived_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11)",
    )
    .bind(metric.id.to_string())
    .bind(metric.organization_id.to_string())
    .bind(&metric.spec.code)
    .bind(&metric.spec.event_code)
    .bind(fold(&metric.spec.code))
    .bind(fold(&metric.spec.name))
    .bind(&spec)
    .bind(metric.created_at)
    .bind(metric.updated_at)
    .bind(metric.archived_at)
    .bind(metric.deleted_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| code_taken(e, &metric.spec))?;
    // Revision 1 is the definition as created, in effect from the creation.
    insert_revision(&mut tx, metric.id, 1, &spec, &[], metric.created_at).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_revision(
    conn: &mut PgConnection,
    id: MetricId,
    revision: u32,
    spec_json: &str,
    changes: &[FieldChange],
    effective_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO metric_revisions (metric_id, revision, spec, changes, effective_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.to_string())
    .bind(revision_column(revision))
    .bind(spec_json)
    .bind(to_json(&changes)?)
    .bind(effective_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn list(
    pool: &PgPool,
    org: OrganizationId,
    params: &MetricListParams,
) -> Result<Page<Metric>> {
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = QueryBuilder::<Postgres>::new(concat!(
        "SELECT ",
        metric_columns!(),
        " FROM metrics WHERE deleted_at IS NULL AND organization_id = "
    ));
    sql.push_bind(org.to_string());
    push_after(&mut sql, "id", params.cursor.as_deref(), MetricId::parse)?;
    push_search(&mut sql, params.search.as_deref(), &["search_code", "search_name"]);
    sql.push(match params.archived {
        ArchivedFilter::Active => " AND archived_at IS NULL",
        ArchivedFilter::Archived => " AND archived_at IS NOT NULL",
        ArchivedFilter::All => "",
    });
    let limit = page_size(params.limit);
    push_page_end(&mut sql, "id", limit);
    let rows: Vec<MetricRow> = sql.build_query_as().fetch_all(pool).await?;
    let items = rows.into_iter().map(MetricRow::decode).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |m| m.id.to_string()))
}

pub(crate) async fn reading_event_code(
    pool: &PgPool,
    org: OrganizationId,
    event_code: &str,
) -> Result<Vec<Metric>> {
    let rows: Vec<MetricRow> = sqlx::query_as(concat!(
        "SELECT ",
        metric_columns!(),
        " FROM metrics WHERE organization_id = $1 AND event_code = $2 AND deleted_at IS NULL \
         ORDER BY id"
    ))
    .bind(org.to_string())
    .bind(event_code)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(MetricRow::decode).collect()
}

pub(crate) async fn add_revision(
    pool: &PgPool,
    org: OrganizationId,
    id: MetricId,
    input: &MetricRevisionInput,
) -> Result<Metric> {
    let mut tx = pool.begin().await?;
    // FOR UPDATE: no other revision of this metric (from any replica) can read the same
    // current revision until this transaction ends, and no attachment can be added meanwhile.
    let current = get_live(&mut tx, org, id, RowLock::Update).await?;
    if current.revision != input.previous_revision {
        return Err(StoreError::RevisionConflict {
            expected: input.previous_revision,
            current: current.revision,
        }
        .into());
    }
    // The lock rule, checked where the write happens: a plan created since the caller's own
    // check cannot let a locked field change. This statement runs after the row lock was
    // granted, so (READ COMMITTED) it sees every attachment committed before that.
    let locked = odometer_core::metric_update::locked_changes(&current.spec, &input.spec);
    if !locked.is_empty() && attached(&mut tx, id).await? {
        return Err(StoreError::MetricLocked { fields: locked }.into());
    }
    let next = current
        .revision
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend("the metric has no revision number left".to_owned()))?;
    let spec = to_json(&input.spec)?;
    let row: MetricRow = sqlx::query_as(concat!(
        "UPDATE metrics SET code = $1, event_code = $2, search_code = $3, search_name = $4, \
         spec = $5, revision = $6, updated_at = $7 WHERE id = $8 RETURNING ",
        metric_columns!()
    ))
    .bind(&input.spec.code)
    .bind(&input.spec.event_code)
    .bind(fold(&input.spec.code))
    .bind(fold(&input.spec.name))
    .bind(&spec)
    .bind(revision_column(next))
    .bind(input.effective_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| code_taken(e, &input.spec))?;
    insert_revision(&mut tx, id, next, &spec, &input.changes, input.effective_at).await?;
    tx.commit().await?;
    row.decode()
}

pub(crate) async fn set_archived(
    pool: &PgPool,
    org: OrganizationId,
    id: MetricId,
    archived_at: Option<DateTime<Utc>>,
) -> Result<Metric> {
    let mut tx = pool.begin().await?;
    get_live(&mut tx, org, id, RowLock::Update).await?;
    let row: MetricRow = sqlx::query_as(concat!(
        "UPDATE metrics SET archived_at = $1 WHERE id = $2 RETURNING ",
        metric_columns!()
    ))
    .bind(archived_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    row.decode()
}

pub(crate) async fn delete(
    pool: &PgPool,
    org: OrganizationId,
    id: MetricId,
    deleted_at: DateTime<Utc>,
) -> Result<Metric> {
    let mut tx = pool.begin().await?;
    // FOR UPDATE: a plan attaching the metric concurrently (FOR SHARE) either commits first, or
    // waits and then finds the metric deleted.
    get_live(&mut tx, org, id, RowLock::Update).await?;
    let row: MetricRow = sqlx::query_as(concat!(
        "UPDATE metrics SET deleted_at = $1 WHERE id = $2 RETURNING ",
        metric_columns!()
    ))
    .bind(deleted_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    row.decode()
}

macro_rules! revision_columns {
    () => {
        "metric_id, revision, spec, changes, effective_at"
    };
}

#[derive(FromRow)]
struct RevisionRow {
    metric_id: String,
    revision: i64,
    spec: String,
    changes: String,
    effective_at: DateTime<Utc>,
}

impl RevisionRow {
    fn decode(self) -> Result<MetricRevision> {
        Ok(MetricRevision {
            metric_id: parse_id(&self.metric_id, MetricId::parse, "metric id")?,
            revision: parse_revision(self.revision)?,
            spec: from_json(&self.spec, "metric spec")?,
            effective_at: self.effective_at,
            changes: from_json(&self.changes, "revision changes")?,
        })
    }
}

pub(crate) async fn list_revisions(
    pool: &PgPool,
    org: OrganizationId,
    id: MetricId,
) -> Result<Vec<MetricRevision>> {
    let mut conn = pool.acquire().await?;
    // Deleted metrics' revisions stay readable (semantics 8), so only the owner is checked.
    get_in(&mut conn, org, id).await?;
    let rows: Vec<RevisionRow> = sqlx::query_as(concat!(
        "SELECT ",
        revision_columns!(),
        " FROM metric_revisions WHERE metric_id = $1 ORDER BY revision"
    ))
    .bind(id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let revisions = rows.into_iter().map(RevisionRow::decode).collect::<Result<Vec<_>>>()?;
    if revisions.is_empty() {
        return Err(corrupt("metric without revisions", &id.to_string()));
    }
    Ok(revisions)
}

pub(crate) async fn get_revision(
    pool: &PgPool,
    org: OrganizationId,
    id: MetricId,
    revision: u32,
) -> Result<MetricRevision> {
    let mut conn = pool.acquire().await?;
    get_in(&mut conn, org, id).await?;
    let row: Option<RevisionRow> = sqlx::query_as(concat!(
        "SELECT ",
        revision_columns!(),
        " FROM metric_revisions WHERE metric_id = $1 AND revision = $2"
    ))
    .bind(id.to_string())
    .bind(revision_column(revision))
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::MetricRevision, revision).into()),
    }
}

/// Whether anything attaches the metric (its owner already checked).
async fn attached(conn: &mut PgConnection, id: MetricId) -> Result<bool> {
    let attached: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM metric_attachments WHERE metric_id = $1)")
            .bind(id.to_string())
            .fetch_one(conn)
            .await?;
    Ok(attached)
}

pub(crate) async fn is_attached(pool: &PgPool, org: OrganizationId, id: MetricId) -> Result<bool> {
    let mut conn = pool.acquire().await?;
    get_in(&mut conn, org, id).await?;
    attached(&mut conn, id).await
}

/// Attaches the metric by `attached_by` (idempotent). The caller's transaction must hold the
/// metric's row lock (`FOR SHARE`, through [`get_live`]).
pub(crate) async fn attach(conn: &mut PgConnection, id: MetricId, attached_by: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO metric_attachments (metric_id, attached_by, attached_at) \
         VALUES ($1, $2, $3) ON CONFLICT (metric_id, attached_by) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(attached_by)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn set_attachment(
    pool: &PgPool,
    org: OrganizationId,
    id: MetricId,
    attached_by: &str,
    attached: bool,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    if attached {
        // Nothing new may come to depend on a deleted metric; removing an attachment is
        // always allowed. FOR SHARE: see the module's documentation.
        get_live(&mut tx, org, id, RowLock::Share).await?;
        attach(&mut tx, id, attached_by).await?;
    } else {
        get_in(&mut tx, org, id).await?;
        sqlx::query("DELETE FROM metric_attachments WHERE metric_id = $1 AND attached_by = $2")
            .bind(id.to_string())
            .bind(attached_by)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
