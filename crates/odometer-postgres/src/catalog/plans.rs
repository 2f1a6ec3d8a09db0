//! SQL for plans, their charges and the metric attachments they make. A deleted plan's row
//! stays (with `deleted_at`) so subscriptions that were on it still name it, while its code is
//! freed for a new plan.
//!
//! Row locks (several replicas write one database; READ COMMITTED transactions):
//! - a replacement and a delete take the plan's row `FOR UPDATE`: two replacements never
//!   interleave their charges and attachments, and a delete counts the active subscriptions
//!   while no subscription can be created on the plan (`subscriptions.rs` takes the plan's row
//!   `FOR SHARE`), so `plan_in_use` cannot be slipped past;
//! - every metric a plan's charges read is taken `FOR SHARE` before it is attached, in the
//!   plan's transaction: the attachments commit with the plan, never beside a revision of the
//!   metric's locked fields or its deletion (`metrics.rs` explains the pairing).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};

use odometer_core::{MetricId, OrganizationId, Plan, PlanId, PlanSpec};
use odometer_store::{Entity, Page, PlanListParams, StoreError};

use super::columns::{
    ensure_organization, fold, from_json, is_unique_violation, page_of, page_size, parse_id,
    push_after, push_page_end, push_search, to_json, Failure, Result,
};
use super::metrics::{self, RowLock};

macro_rules! plan_columns {
    () => {
        "id, organization_id, spec, created_at, updated_at, deleted_at"
    };
}

/// A plan row as stored, before its columns are parsed.
#[derive(FromRow)]
struct PlanRow {
    id: String,
    organization_id: String,
    spec: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

impl PlanRow {
    fn decode(self) -> Result<Plan> {
        Ok(Plan {
            id: parse_id(&self.id, PlanId::parse, "plan id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            spec: from_json(&self.spec, "plan spec")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        })
    }
}

fn code_taken(error: sqlx::Error, spec: &PlanSpec) -> Failure {
    if is_unique_violation(&error, "plans_live_code") {
        StoreError::CodeTaken { code: spec.code.clone() }.into()
    } else {
        error.into()
    }
}

/// The plan `id` of `org`, deleted or not, if there is one.
pub(crate) async fn get(pool: &PgPool, org: OrganizationId, id: PlanId) -> Result<Plan> {
    let row: Option<PlanRow> = sqlx::query_as(concat!(
        "SELECT ",
        plan_columns!(),
        " FROM plans WHERE id = $1 AND organization_id = $2"
    ))
    .bind(id.to_string())
    .bind(org.to_string())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Plan, id).into()),
    }
}

/// Locks the live plan's row `FOR UPDATE`, failing with `plan_not_found` for an unknown, a
/// foreign or a deleted plan: what every write of a plan starts with.
async fn lock_live(conn: &mut PgConnection, org: OrganizationId, id: PlanId) -> Result<()> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM plans WHERE id = $1 AND organization_id = $2 AND deleted_at IS NULL \
         FOR UPDATE",
    )
    .bind(id.to_string())
    .bind(org.to_string())
    .fetch_optional(conn)
    .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found(Entity::Plan, id).into()),
    }
}

pub(crate) async fn get_by_code(pool: &PgPool, org: OrganizationId, code: &str) -> Result<Plan> {
    let row: Option<PlanRow> = sqlx::query_as(concat!(
        "SELECT ",
        plan_columns!(),
        " FROM plans WHERE organization_id = $1 AND code = $2 AND deleted_at IS NULL"
    ))
    .bind(org.to_string())
    .bind(code)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Plan, code).into()),
    }
}

pub(crate) async fn create(pool: &PgPool, plan: &Plan) -> Result<()> {
    if !plan.is_live() {
        return Err(StoreError::Backend("a new plan cannot be deleted already".to_owned()).into());
    }
    let mut tx = pool.begin().await?;
    ensure_organization(&mut tx, plan.organization_id).await?;
    sqlx::query(
        "INSERT INTO plans (id, organization_id, code, search_code, search_name, spec, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(plan.id.to_string())
    .bind(plan.organization_id.to_string())
    .bind(&plan.spec.code)
    .bind(fold(&plan.spec.code))
    .bind(fold(&plan.spec.name))
    .bind(to_json(&plan.spec)?)
    .bind(plan.created_at)
    .bind(plan.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| code_taken(e, &plan.spec))?;
    write_charges(&mut tx, plan.organization_id, plan.id, &plan.spec).await?;
    tx.commit().await?;
    Ok(())
}

/// Records the plan's charges and attaches the metrics they read, after checking (and locking
/// `FOR SHARE`) each metric is live in the organization. The plan's previous charges and
/// attachments must be gone.
async fn write_charges(
    conn: &mut PgConnection,
    org: OrganizationId,
    id: PlanId,
    spec: &PlanSpec,
) -> Result<()> {
    let attached_by = id.to_string();
    // In the charges' order, so the first bad metric is the one reported (as on SQLite). No
    // deadlock can come of the order: share locks do not conflict with each other, and the
    // writers that take a metric `FOR UPDATE` lock only that one metric.
    for metric in spec.metric_ids() {
        metrics::get_live(conn, org, metric, RowLock::Share).await?;
        metrics::attach(conn, metric, &attached_by).await?;
    }
    for (position, charge) in spec.charges.iter().enumerate() {
        let position = i32::try_from(position)
            .map_err(|_| StoreError::Backend("a plan has too many charges".to_owned()))?;
        sqlx::query(
            "INSERT INTO plan_charges (charge_id, plan_id, metric_id, position) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(charge.id.to_string())
        .bind(&attached_by)
        .bind(charge.metric_id.to_string())
        .bind(position)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Removes the plan's attachments (its charges stay unless `charges_too`).
async fn clear_attachments(conn: &mut PgConnection, id: PlanId, charges_too: bool) -> Result<()> {
    let id = id.to_string();
    sqlx::query("DELETE FROM metric_attachments WHERE attached_by = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    if charges_too {
        sqlx::query("DELETE FROM plan_charges WHERE plan_id = $1").bind(&id).execute(conn).await?;
    }
    Ok(())
}

pub(crate) async fn list(
    pool: &PgPool,
    org: OrganizationId,
    params: &PlanListParams,
) -> Result<Page<Plan>> {
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = QueryBuilder::<Postgres>::new(concat!(
        "SELECT ",
        plan_columns!(),
        " FROM plans WHERE deleted_at IS NULL AND organization_id = "
    ));
    sql.push_bind(org.to_string());
    push_after(&mut sql, "id", params.cursor.as_deref(), PlanId::parse)?;
    push_search(&mut sql, params.search.as_deref(), &["search_code", "search_name"]);
    let limit = page_size(params.limit);
    push_page_end(&mut sql, "id", limit);
    let rows: Vec<PlanRow> = sql.build_query_as().fetch_all(pool).await?;
    let items = rows.into_iter().map(PlanRow::decode).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |p| p.id.to_string()))
}

pub(crate) async fn update(
    pool: &PgPool,
    org: OrganizationId,
    id: PlanId,
    spec: &PlanSpec,
    updated_at: DateTime<Utc>,
) -> Result<Plan> {
    let mut tx = pool.begin().await?;
    lock_live(&mut tx, org, id).await?;
    let row: PlanRow = sqlx::query_as(concat!(
        "UPDATE plans SET code = $1, search_code = $2, search_name = $3, spec = $4, \
         updated_at = $5 WHERE id = $6 RETURNING ",
        plan_columns!()
    ))
    .bind(&spec.code)
    .bind(fold(&spec.code))
    .bind(fold(&spec.name))
    .bind(to_json(spec)?)
    .bind(updated_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| code_taken(e, spec))?;
    clear_attachments(&mut tx, id, true).await?;
    write_charges(&mut tx, org, id, spec).await?;
    tx.commit().await?;
    row.decode()
}

/// How many subscriptions on the plan are active at `at`.
async fn active_subscriptions(
    conn: &mut PgConnection,
    id: PlanId,
    at: DateTime<Utc>,
) -> Result<u64> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions WHERE plan_id = $1 AND terminated_at IS NULL \
         AND (ended_at IS NULL OR ended_at > $2)",
    )
    .bind(id.to_string())
    .bind(at)
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(crate) async fn delete(
    pool: &PgPool,
    org: OrganizationId,
    id: PlanId,
    deleted_at: DateTime<Utc>,
) -> Result<Plan> {
    let mut tx = pool.begin().await?;
    lock_live(&mut tx, org, id).await?;
    let active = active_subscriptions(&mut tx, id, deleted_at).await?;
    if active > 0 {
        return Err(StoreError::PlanInUse { active }.into());
    }
    let row: PlanRow = sqlx::query_as(concat!(
        "UPDATE plans SET deleted_at = $1 WHERE id = $2 RETURNING ",
        plan_columns!()
    ))
    .bind(deleted_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    // The charges stay listed (a deleted plan is still readable); only the attachments go.
    clear_attachments(&mut tx, id, false).await?;
    tx.commit().await?;
    row.decode()
}

pub(crate) async fn charging_metric(
    pool: &PgPool,
    org: OrganizationId,
    metric: MetricId,
) -> Result<Vec<Plan>> {
    metrics::get(pool, org, metric).await?;
    let rows: Vec<PlanRow> = sqlx::query_as(concat!(
        "SELECT ",
        plan_columns!(),
        " FROM plans WHERE organization_id = $1 AND deleted_at IS NULL \
         AND id IN (SELECT plan_id FROM plan_charges WHERE metric_id = $2) ORDER BY id"
    ))
    .bind(org.to_string())
    .bind(metric.to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(PlanRow::decode).collect()
}
