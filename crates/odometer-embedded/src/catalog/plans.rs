//! SQL for plans, their charges and the metric attachments they make. A deleted plan's row
//! stays (with `deleted_at`) so subscriptions that were on it still name it, while its code is
//! freed for a new plan.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use odometer_core::{time, MetricId, OrganizationId, Plan, PlanId, PlanSpec};
use odometer_store::{Entity, Page, PlanListParams, StoreError};

use super::columns::{
    ensure_organization, fold, from_json, instant, is_unique_violation, like_pattern, page_of,
    page_size, parse_id, parse_instant, parse_optional_instant, to_json, Failure, Result,
};

const PLAN_COLUMNS: &str = "id, organization_id, spec, created_at, updated_at, deleted_at";

/// A plan row as stored, before its columns are parsed.
struct PlanRow {
    id: String,
    organization_id: String,
    spec: String,
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
}

impl PlanRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            spec: row.get(2)?,
            created_at: row.get(3)?,
            updated_at: row.get(4)?,
            deleted_at: row.get(5)?,
        })
    }

    fn decode(self) -> Result<Plan> {
        Ok(Plan {
            id: parse_id(&self.id, PlanId::parse, "plan id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            spec: from_json(&self.spec, "plan spec")?,
            created_at: parse_instant(&self.created_at)?,
            updated_at: parse_instant(&self.updated_at)?,
            deleted_at: parse_optional_instant(self.deleted_at.as_deref())?,
        })
    }
}

fn code_taken(error: rusqlite::Error, spec: &PlanSpec) -> Failure {
    if is_unique_violation(&error, "plans.code") {
        StoreError::CodeTaken { code: spec.code.clone() }.into()
    } else {
        error.into()
    }
}

/// The plan `id` of `org`, deleted or not, if there is one.
fn find(conn: &Connection, org: OrganizationId, id: PlanId) -> Result<Option<Plan>> {
    let sql = format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = ?1 AND organization_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt.query_row([id.to_string(), org.to_string()], PlanRow::read).optional()?;
    row.map(PlanRow::decode).transpose()
}

pub(crate) fn get(conn: &Connection, org: OrganizationId, id: PlanId) -> Result<Plan> {
    find(conn, org, id)?.ok_or_else(|| StoreError::not_found(Entity::Plan, id).into())
}

/// The plan, if it is live: what every write starts with (a deleted plan is not found).
fn get_live(conn: &Connection, org: OrganizationId, id: PlanId) -> Result<Plan> {
    match find(conn, org, id)? {
        Some(plan) if plan.is_live() => Ok(plan),
        _ => Err(StoreError::not_found(Entity::Plan, id).into()),
    }
}

pub(crate) fn get_by_code(conn: &Connection, org: OrganizationId, code: &str) -> Result<Plan> {
    let sql = format!(
        "SELECT {PLAN_COLUMNS} FROM plans \
         WHERE organization_id = ?1 AND code = ?2 AND deleted_at IS NULL"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    match stmt.query_row([org.to_string(), code.to_owned()], PlanRow::read).optional()? {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Plan, code).into()),
    }
}

pub(crate) fn create(conn: &mut Connection, plan: &Plan) -> Result<()> {
    if !plan.is_live() {
        return Err(StoreError::Backend("a new plan cannot be deleted already".to_owned()).into());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    ensure_organization(&tx, plan.organization_id)?;
    tx.prepare_cached(
        "INSERT INTO plans (id, organization_id, code, search_code, search_name, spec, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        plan.id.to_string(),
        plan.organization_id.to_string(),
        plan.spec.code,
        fold(&plan.spec.code),
        fold(&plan.spec.name),
        to_json(&plan.spec)?,
        instant(&plan.created_at),
        instant(&plan.updated_at),
    ])
    .map_err(|e| code_taken(e, &plan.spec))?;
    write_charges(&tx, plan.organization_id, plan.id, &plan.spec)?;
    tx.commit()?;
    Ok(())
}

/// Records the plan's charges and attaches the metrics they read, after checking each metric
/// is live in the organization. The plan's previous charges and attachments must be gone.
fn write_charges(
    conn: &Connection,
    org: OrganizationId,
    id: PlanId,
    spec: &PlanSpec,
) -> Result<()> {
    let attached_by = id.to_string();
    let now = instant(&time::now());
    for metric in spec.metric_ids() {
        ensure_live_metric(conn, org, metric)?;
        conn.prepare_cached(
            "INSERT INTO metric_attachments (metric_id, attached_by, attached_at) \
             VALUES (?1, ?2, ?3) ON CONFLICT (metric_id, attached_by) DO NOTHING",
        )?
        .execute(params![metric.to_string(), attached_by, now])?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO plan_charges (charge_id, plan_id, metric_id, position) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (position, charge) in spec.charges.iter().enumerate() {
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        insert.execute(params![
            charge.id.to_string(),
            attached_by,
            charge.metric_id.to_string(),
            position
        ])?;
    }
    Ok(())
}

/// Removes the plan's charges and the attachments they made.
fn clear_charges(conn: &Connection, id: PlanId) -> Result<()> {
    let id = id.to_string();
    conn.prepare_cached("DELETE FROM metric_attachments WHERE attached_by = ?1")?.execute([&id])?;
    conn.prepare_cached("DELETE FROM plan_charges WHERE plan_id = ?1")?.execute([&id])?;
    Ok(())
}

/// Fails with `metric_not_found` (unknown, or another organization's) or `metric_deleted`.
fn ensure_live_metric(conn: &Connection, org: OrganizationId, id: MetricId) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("SELECT deleted_at FROM metrics WHERE id = ?1 AND organization_id = ?2")?;
    let deleted_at: Option<Option<String>> =
        stmt.query_row([id.to_string(), org.to_string()], |row| row.get(0)).optional()?;
    match deleted_at {
        None => Err(StoreError::not_found(Entity::Metric, id).into()),
        Some(Some(_)) => Err(StoreError::MetricDeleted.into()),
        Some(None) => Ok(()),
    }
}

pub(crate) fn list(
    conn: &Connection,
    org: OrganizationId,
    params: &PlanListParams,
) -> Result<Page<Plan>> {
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = format!(
        "SELECT {PLAN_COLUMNS} FROM plans WHERE organization_id = ?1 AND deleted_at IS NULL"
    );
    let mut values = vec![SqlValue::Text(org.to_string())];
    if let Some(cursor) = &params.cursor {
        let after = PlanId::parse(cursor).ok_or(StoreError::InvalidCursor)?;
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
    let limit = page_size(params.limit);
    // One more than the page tells whether there is a next page without a second query.
    values.push(SqlValue::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", values.len()));

    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), PlanRow::read)?;
    let items = rows.map(|row| row?.decode()).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |p| p.id.to_string()))
}

pub(crate) fn update(
    conn: &mut Connection,
    org: OrganizationId,
    id: PlanId,
    spec: &PlanSpec,
    updated_at: DateTime<Utc>,
) -> Result<Plan> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    get_live(&tx, org, id)?;
    tx.prepare_cached(
        "UPDATE plans SET code = ?1, search_code = ?2, search_name = ?3, spec = ?4, \
         updated_at = ?5 WHERE id = ?6",
    )?
    .execute(params![
        spec.code,
        fold(&spec.code),
        fold(&spec.name),
        to_json(spec)?,
        instant(&updated_at),
        id.to_string(),
    ])
    .map_err(|e| code_taken(e, spec))?;
    clear_charges(&tx, id)?;
    write_charges(&tx, org, id, spec)?;
    let plan = get(&tx, org, id)?;
    tx.commit()?;
    Ok(plan)
}

/// How many subscriptions on the plan are active at `at`.
fn active_subscriptions(conn: &Connection, id: PlanId, at: &DateTime<Utc>) -> Result<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT count(*) FROM subscriptions WHERE plan_id = ?1 AND terminated_at IS NULL \
         AND (ended_at IS NULL OR ended_at > ?2)",
    )?;
    let count: i64 = stmt.query_row([id.to_string(), instant(at)], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(crate) fn delete(
    conn: &mut Connection,
    org: OrganizationId,
    id: PlanId,
    deleted_at: DateTime<Utc>,
) -> Result<Plan> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    get_live(&tx, org, id)?;
    let active = active_subscriptions(&tx, id, &deleted_at)?;
    if active > 0 {
        return Err(StoreError::PlanInUse { active }.into());
    }
    tx.prepare_cached("UPDATE plans SET deleted_at = ?1 WHERE id = ?2")?
        .execute(params![instant(&deleted_at), id.to_string()])?;
    // The charges stay listed (a deleted plan is still readable); only the attachments go.
    tx.prepare_cached("DELETE FROM metric_attachments WHERE attached_by = ?1")?
        .execute([id.to_string()])?;
    let plan = get(&tx, org, id)?;
    tx.commit()?;
    Ok(plan)
}

pub(crate) fn charging_metric(
    conn: &Connection,
    org: OrganizationId,
    metric: MetricId,
) -> Result<Vec<Plan>> {
    let mut exists =
        conn.prepare_cached("SELECT 1 FROM metrics WHERE id = ?1 AND organization_id = ?2")?;
    if !exists.exists([metric.to_string(), org.to_string()])? {
        return Err(StoreError::not_found(Entity::Metric, metric).into());
    }
    let sql = format!(
        "SELECT {PLAN_COLUMNS} FROM plans WHERE organization_id = ?1 AND deleted_at IS NULL \
         AND id IN (SELECT plan_id FROM plan_charges WHERE metric_id = ?2) ORDER BY id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([org.to_string(), metric.to_string()], PlanRow::read)?;
    rows.map(|row| row?.decode()).collect()
}
