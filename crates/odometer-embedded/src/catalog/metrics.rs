//! SQL for metrics, their revisions and their attachments.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use odometer_core::metric::{FieldChange, MetricRevision};
use odometer_core::{time, Metric, MetricId, MetricSpec, OrganizationId};
use odometer_store::{
    ArchivedFilter, Entity, MetricListParams, MetricRevisionInput, Page, StoreError,
};

use super::columns::{
    corrupt, ensure_organization, fold, from_json, instant, is_unique_violation, like_pattern,
    optional_instant, page_of, page_size, parse_id, parse_instant, parse_optional_instant, to_json,
    Failure, Result,
};

const METRIC_COLUMNS: &str =
    "id, organization_id, spec, revision, created_at, updated_at, archived_at, deleted_at";

/// A metric row as stored, before its columns are parsed.
struct MetricRow {
    id: String,
    organization_id: String,
    spec: String,
    revision: u32,
    created_at: String,
    updated_at: String,
    archived_at: Option<String>,
    deleted_at: Option<String>,
}

impl MetricRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            spec: row.get(2)?,
            revision: row.get(3)?,
            created_at: row.get(4)?,
            updated_at: row.get(5)?,
            archived_at: row.get(6)?,
            deleted_at: row.get(7)?,
        })
    }

    fn decode(self) -> Result<Metric> {
        Ok(Metric {
            id: parse_id(&self.id, MetricId::parse, "metric id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            spec: from_json(&self.spec, "metric spec")?,
            revision: self.revision,
            created_at: parse_instant(&self.created_at)?,
            updated_at: parse_instant(&self.updated_at)?,
            archived_at: parse_optional_instant(self.archived_at.as_deref())?,
            deleted_at: parse_optional_instant(self.deleted_at.as_deref())?,
        })
    }
}

fn code_taken(error: rusqlite::Error, spec: &MetricSpec) -> Failure {
    if is_unique_violation(&error, "metrics.code") {
        StoreError::CodeTaken { code: spec.code.clone() }.into()
    } else {
        error.into()
    }
}

/// The metric `id` of `org`, deleted or not, if there is one.
fn find(conn: &Connection, org: OrganizationId, id: MetricId) -> Result<Option<Metric>> {
    let sql =
        format!("SELECT {METRIC_COLUMNS} FROM metrics WHERE id = ?1 AND organization_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt.query_row([id.to_string(), org.to_string()], MetricRow::read).optional()?;
    row.map(MetricRow::decode).transpose()
}

pub(crate) fn get(conn: &Connection, org: OrganizationId, id: MetricId) -> Result<Metric> {
    find(conn, org, id)?.ok_or_else(|| StoreError::not_found(Entity::Metric, id).into())
}

/// The metric, failing with `metric_deleted` if it is deleted: what every write starts with.
fn get_live(conn: &Connection, org: OrganizationId, id: MetricId) -> Result<Metric> {
    let metric = get(conn, org, id)?;
    if metric.deleted_at.is_some() {
        return Err(StoreError::MetricDeleted.into());
    }
    Ok(metric)
}

pub(crate) fn get_by_code(conn: &Connection, org: OrganizationId, code: &str) -> Result<Metric> {
    let sql = format!(
        "SELECT {METRIC_COLUMNS} FROM metrics \
         WHERE organization_id = ?1 AND code = ?2 AND deleted_at IS NULL"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    match stmt.query_row([org.to_string(), code.to_owned()], MetricRow::read).optional()? {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Metric, code).into()),
    }
}

pub(crate) fn create(conn: &mut Connection, metric: &Metric) -> Result<()> {
    if metric.revision != 1 {
        return Err(StoreError::Backend(format!(
            "a new metric starts at revision 1, not {}",
            metric.revision
        ))
        .into());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    ensure_organization(&tx, metric.organization_id)?;
    let spec = to_json(&metric.spec)?;
    tx.prepare_cached(
        "INSERT INTO metrics (id, organization_id, code, event_code, search_code, search_name, \
         spec, revision, created_at, updated_at, archived_at, deleted_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        metric.id.to_string(),
        metric.organization_id.to_string(),
        metric.spec.code,
        metric.spec.event_code,
        fold(&metric.spec.code),
        fold(&metric.spec.name),
        spec,
        instant(&metric.created_at),
        instant(&metric.updated_at),
        optional_instant(metric.archived_at.as_ref()),
        optional_instant(metric.deleted_at.as_ref()),
    ])
    .map_err(|e| code_taken(e, &metric.spec))?;
    // Revision 1 is the definition as created, in effect from the creation.
    insert_revision(&tx, metric.id, 1, &spec, &[], &metric.created_at)?;
    tx.commit()?;
    Ok(())
}

fn insert_revision(
    conn: &Connection,
    id: MetricId,
    revision: u32,
    spec_json: &str,
    changes: &[FieldChange],
    effective_at: &DateTime<Utc>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO metric_revisions (metric_id, revision, spec, changes, effective_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id.to_string(),
        revision,
        spec_json,
        to_json(&changes)?,
        instant(effective_at)
    ])?;
    Ok(())
}

pub(crate) fn list(
    conn: &Connection,
    org: OrganizationId,
    params: &MetricListParams,
) -> Result<Page<Metric>> {
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = format!(
        "SELECT {METRIC_COLUMNS} FROM metrics WHERE organization_id = ?1 AND deleted_at IS NULL"
    );
    let mut values = vec![SqlValue::Text(org.to_string())];
    if let Some(cursor) = &params.cursor {
        let after = MetricId::parse(cursor).ok_or(StoreError::InvalidCursor)?;
        values.push(SqlValue::Text(after.to_string()));
        sql.push_str(&format!(" AND id > ?{}", values.len()));
    }
    if let Some(search) = params.search.as_deref().filter(|s| !s.is_empty()) {
        values.push(SqlValue::Text(like_pattern(search)));
        let n = values.len();
        sql.push_str(&format!(
            " AND (search_code LIKE ?{n} ESCAPE '\\' OR search_name LIKE ?{n} ESCAPE '\\')"
        ));
    }
    sql.push_str(match params.archived {
        ArchivedFilter::Active => " AND archived_at IS NULL",
        ArchivedFilter::Archived => " AND archived_at IS NOT NULL",
        ArchivedFilter::All => "",
    });
    let limit = page_size(params.limit);
    // One more than the page tells whether there is a next page without a second query.
    values.push(SqlValue::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", values.len()));

    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), MetricRow::read)?;
    let items = rows.map(|row| row?.decode()).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |m| m.id.to_string()))
}

pub(crate) fn reading_event_code(
    conn: &Connection,
    org: OrganizationId,
    event_code: &str,
) -> Result<Vec<Metric>> {
    let sql = format!(
        "SELECT {METRIC_COLUMNS} FROM metrics \
         WHERE organization_id = ?1 AND event_code = ?2 AND deleted_at IS NULL ORDER BY id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([org.to_string(), event_code.to_owned()], MetricRow::read)?;
    rows.map(|row| row?.decode()).collect()
}

pub(crate) fn add_revision(
    conn: &mut Connection,
    org: OrganizationId,
    id: MetricId,
    input: &MetricRevisionInput,
) -> Result<Metric> {
    // Immediate: the write lock is taken before the current revision is read, so no other
    // writer can slip a revision in between the check and the insert.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = get_live(&tx, org, id)?;
    if current.revision != input.previous_revision {
        return Err(StoreError::RevisionConflict {
            expected: input.previous_revision,
            current: current.revision,
        }
        .into());
    }
    // The lock rule, checked where the write happens: a plan created since the caller's own
    // check cannot let a locked field change.
    let locked = odometer_core::metric_update::locked_changes(&current.spec, &input.spec);
    if !locked.is_empty() && is_attached(&tx, org, id)? {
        return Err(StoreError::MetricLocked { fields: locked }.into());
    }
    let next = current
        .revision
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend("the metric has no revision number left".to_owned()))?;
    let spec = to_json(&input.spec)?;
    tx.prepare_cached(
        "UPDATE metrics SET code = ?1, event_code = ?2, search_code = ?3, search_name = ?4, \
         spec = ?5, revision = ?6, updated_at = ?7 WHERE id = ?8",
    )?
    .execute(params![
        input.spec.code,
        input.spec.event_code,
        fold(&input.spec.code),
        fold(&input.spec.name),
        spec,
        next,
        instant(&input.effective_at),
        id.to_string(),
    ])
    .map_err(|e| code_taken(e, &input.spec))?;
    insert_revision(&tx, id, next, &spec, &input.changes, &input.effective_at)?;
    let metric = get(&tx, org, id)?;
    tx.commit()?;
    Ok(metric)
}

pub(crate) fn set_archived(
    conn: &mut Connection,
    org: OrganizationId,
    id: MetricId,
    archived_at: Option<DateTime<Utc>>,
) -> Result<Metric> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    get_live(&tx, org, id)?;
    tx.prepare_cached("UPDATE metrics SET archived_at = ?1 WHERE id = ?2")?
        .execute(params![optional_instant(archived_at.as_ref()), id.to_string()])?;
    let metric = get(&tx, org, id)?;
    tx.commit()?;
    Ok(metric)
}

pub(crate) fn delete(
    conn: &mut Connection,
    org: OrganizationId,
    id: MetricId,
    deleted_at: DateTime<Utc>,
) -> Result<Metric> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    get_live(&tx, org, id)?;
    tx.prepare_cached("UPDATE metrics SET deleted_at = ?1 WHERE id = ?2")?
        .execute(params![instant(&deleted_at), id.to_string()])?;
    let metric = get(&tx, org, id)?;
    tx.commit()?;
    Ok(metric)
}

const REVISION_COLUMNS: &str = "metric_id, revision, spec, changes, effective_at";

struct RevisionRow {
    metric_id: String,
    revision: u32,
    spec: String,
    changes: String,
    effective_at: String,
}

impl RevisionRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            metric_id: row.get(0)?,
            revision: row.get(1)?,
            spec: row.get(2)?,
            changes: row.get(3)?,
            effective_at: row.get(4)?,
        })
    }

    fn decode(self) -> Result<MetricRevision> {
        Ok(MetricRevision {
            metric_id: parse_id(&self.metric_id, MetricId::parse, "metric id")?,
            revision: self.revision,
            spec: from_json(&self.spec, "metric spec")?,
            effective_at: parse_instant(&self.effective_at)?,
            changes: from_json(&self.changes, "revision changes")?,
        })
    }
}

pub(crate) fn list_revisions(
    conn: &Connection,
    org: OrganizationId,
    id: MetricId,
) -> Result<Vec<MetricRevision>> {
    // Deleted metrics' revisions stay readable (semantics 8), so only the owner is checked.
    get(conn, org, id)?;
    let sql = format!(
        "SELECT {REVISION_COLUMNS} FROM metric_revisions WHERE metric_id = ?1 ORDER BY revision"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([id.to_string()], RevisionRow::read)?;
    let revisions = rows.map(|row| row?.decode()).collect::<Result<Vec<_>>>()?;
    if revisions.is_empty() {
        return Err(corrupt("metric without revisions", &id.to_string()));
    }
    Ok(revisions)
}

pub(crate) fn get_revision(
    conn: &Connection,
    org: OrganizationId,
    id: MetricId,
    revision: u32,
) -> Result<MetricRevision> {
    get(conn, org, id)?;
    let sql = format!(
        "SELECT {REVISION_COLUMNS} FROM metric_revisions WHERE metric_id = ?1 AND revision = ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    match stmt.query_row(params![id.to_string(), revision], RevisionRow::read).optional()? {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::MetricRevision, revision).into()),
    }
}

pub(crate) fn is_attached(conn: &Connection, org: OrganizationId, id: MetricId) -> Result<bool> {
    get(conn, org, id)?;
    let mut stmt = conn.prepare_cached("SELECT 1 FROM metric_attachments WHERE metric_id = ?1")?;
    Ok(stmt.exists([id.to_string()])?)
}

pub(crate) fn set_attachment(
    conn: &mut Connection,
    org: OrganizationId,
    id: MetricId,
    attached_by: &str,
    attached: bool,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if attached {
        // Nothing new may come to depend on a deleted metric; removing an attachment is
        // always allowed.
        get_live(&tx, org, id)?;
        tx.prepare_cached(
            "INSERT INTO metric_attachments (metric_id, attached_by, attached_at) \
             VALUES (?1, ?2, ?3) ON CONFLICT (metric_id, attached_by) DO NOTHING",
        )?
        .execute(params![id.to_string(), attached_by, instant(&time::now())])?;
    } else {
        get(&tx, org, id)?;
        tx.prepare_cached(
            "DELETE FROM metric_attachments WHERE metric_id = ?1 AND attached_by = ?2",
        )?
        .execute(params![id.to_string(), attached_by])?;
    }
    tx.commit()?;
    Ok(())
}
