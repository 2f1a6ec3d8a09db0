//! SQL for subscriptions. A subscription keeps its customer's row id and is read back with the
//! customer's current external id; its status is computed at each read from `terminated_at`
//! and `ended_at`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use odometer_core::subscription::{billing_anchor_text, parse_billing_anchor};
use odometer_core::{
    time, OrganizationId, PlanId, Subscription, SubscriptionId, SubscriptionSpec,
    SubscriptionStatus,
};
use odometer_store::{Entity, Page, StoreError, SubscriptionListParams, SubscriptionUpdate};

use super::columns::{
    corrupt, ensure_organization, instant, is_unique_violation, optional_instant, page_of,
    page_size, parse_id, parse_instant, parse_optional_instant, Failure, Result,
};

/// The columns of a subscription with its customer's external id, from `subscriptions s JOIN
/// customers c`.
const SELECT_SUBSCRIPTIONS: &str = "SELECT s.id, s.organization_id, s.external_id, \
     c.external_id, s.plan_id, s.name, s.started_at, s.ended_at, s.billing_anchor, s.timezone, \
     s.terminated_at, s.created_at, s.updated_at \
     FROM subscriptions s JOIN customers c ON c.id = s.customer_id";

/// A subscription row as stored, before its columns are parsed.
struct SubscriptionRow {
    id: String,
    organization_id: String,
    external_id: String,
    customer: String,
    plan_id: String,
    name: Option<String>,
    started_at: String,
    ended_at: Option<String>,
    billing_anchor: String,
    timezone: String,
    terminated_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl SubscriptionRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            external_id: row.get(2)?,
            customer: row.get(3)?,
            plan_id: row.get(4)?,
            name: row.get(5)?,
            started_at: row.get(6)?,
            ended_at: row.get(7)?,
            billing_anchor: row.get(8)?,
            timezone: row.get(9)?,
            terminated_at: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
        })
    }

    /// The subscription, with its status at `now`.
    fn decode(self, now: DateTime<Utc>) -> Result<Subscription> {
        let billing_anchor = parse_billing_anchor(&self.billing_anchor)
            .ok_or_else(|| corrupt("billing anchor", &self.billing_anchor))?;
        let timezone: Tz =
            self.timezone.parse().map_err(|_| corrupt("time zone", &self.timezone))?;
        let spec = SubscriptionSpec {
            external_id: self.external_id,
            customer: self.customer,
            plan_id: parse_id(&self.plan_id, PlanId::parse, "plan id")?,
            started_at: parse_instant(&self.started_at)?,
            ended_at: parse_optional_instant(self.ended_at.as_deref())?,
            billing_anchor,
            timezone,
            name: self.name,
        };
        let terminated_at = parse_optional_instant(self.terminated_at.as_deref())?;
        Ok(Subscription {
            id: parse_id(&self.id, SubscriptionId::parse, "subscription id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            status: SubscriptionStatus::at(spec.ended_at, terminated_at, now),
            spec,
            terminated_at,
            created_at: parse_instant(&self.created_at)?,
            updated_at: parse_instant(&self.updated_at)?,
        })
    }
}

fn external_id_taken(error: rusqlite::Error, spec: &SubscriptionSpec) -> Failure {
    if is_unique_violation(&error, "subscriptions.external_id") {
        StoreError::ExternalIdTaken { external_id: spec.external_id.clone() }.into()
    } else {
        error.into()
    }
}

pub(crate) fn create(conn: &mut Connection, subscription: &Subscription) -> Result<()> {
    let org = subscription.organization_id;
    let spec = &subscription.spec;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    ensure_organization(&tx, org)?;
    let customer_id: Option<String> = tx
        .prepare_cached(
            "SELECT id FROM customers \
             WHERE organization_id = ?1 AND external_id = ?2 AND deleted_at IS NULL",
        )?
        .query_row([org.to_string(), spec.customer.clone()], |row| row.get(0))
        .optional()?;
    let customer_id =
        customer_id.ok_or_else(|| StoreError::not_found(Entity::Customer, &spec.customer))?;
    let plan_live = tx
        .prepare_cached(
            "SELECT 1 FROM plans WHERE id = ?1 AND organization_id = ?2 AND deleted_at IS NULL",
        )?
        .exists([spec.plan_id.to_string(), org.to_string()])?;
    if !plan_live {
        return Err(StoreError::not_found(Entity::Plan, spec.plan_id).into());
    }
    tx.prepare_cached(
        "INSERT INTO subscriptions (id, organization_id, external_id, customer_id, plan_id, \
         name, started_at, ended_at, billing_anchor, timezone, terminated_at, created_at, \
         updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        subscription.id.to_string(),
        org.to_string(),
        spec.external_id,
        customer_id,
        spec.plan_id.to_string(),
        spec.name,
        instant(&spec.started_at),
        optional_instant(spec.ended_at.as_ref()),
        billing_anchor_text(spec.billing_anchor),
        spec.timezone.name(),
        optional_instant(subscription.terminated_at.as_ref()),
        instant(&subscription.created_at),
        instant(&subscription.updated_at),
    ])
    .map_err(|e| external_id_taken(e, spec))?;
    tx.commit()?;
    Ok(())
}

/// The subscription with this external id, with its status at `now`.
fn find(
    conn: &Connection,
    org: OrganizationId,
    external_id: &str,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let sql = format!("{SELECT_SUBSCRIPTIONS} WHERE s.organization_id = ?1 AND s.external_id = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt
        .query_row([org.to_string(), external_id.to_owned()], SubscriptionRow::read)
        .optional()?;
    match row {
        Some(row) => row.decode(now),
        None => Err(StoreError::not_found(Entity::Subscription, external_id).into()),
    }
}

pub(crate) fn get(
    conn: &Connection,
    org: OrganizationId,
    external_id: &str,
) -> Result<Subscription> {
    find(conn, org, external_id, time::now())
}

pub(crate) fn list(
    conn: &Connection,
    org: OrganizationId,
    params: &SubscriptionListParams,
) -> Result<Page<Subscription>> {
    let now = time::now();
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = format!("{SELECT_SUBSCRIPTIONS} WHERE s.organization_id = ?1");
    let mut values = vec![SqlValue::Text(org.to_string())];
    if let Some(cursor) = &params.cursor {
        let after = SubscriptionId::parse(cursor).ok_or(StoreError::InvalidCursor)?;
        values.push(SqlValue::Text(after.to_string()));
        sql.push_str(&format!(" AND s.id > ?{}", values.len()));
    }
    if let Some(customer) = &params.customer {
        values.push(SqlValue::Text(customer.clone()));
        sql.push_str(&format!(
            " AND s.customer_id IN (SELECT id FROM customers WHERE organization_id = ?1 \
             AND external_id = ?{} AND deleted_at IS NULL)",
            values.len()
        ));
    }
    if let Some(plan) = params.plan_id {
        values.push(SqlValue::Text(plan.to_string()));
        sql.push_str(&format!(" AND s.plan_id = ?{}", values.len()));
    }
    if let Some(status) = params.status {
        values.push(SqlValue::Text(instant(&now)));
        let n = values.len();
        // `SubscriptionStatus::at`, in SQL.
        let active =
            format!("(s.terminated_at IS NULL AND (s.ended_at IS NULL OR s.ended_at > ?{n}))");
        match status {
            SubscriptionStatus::Active => sql.push_str(&format!(" AND {active}")),
            SubscriptionStatus::Terminated => sql.push_str(&format!(" AND NOT {active}")),
        }
    }
    let limit = page_size(params.limit);
    // One more than the page tells whether there is a next page without a second query.
    values.push(SqlValue::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY s.id LIMIT ?{}", values.len()));

    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), SubscriptionRow::read)?;
    let items = rows.map(|row| row?.decode(now)).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |s| s.id.to_string()))
}

pub(crate) fn update(
    conn: &mut Connection,
    org: OrganizationId,
    external_id: &str,
    update: &SubscriptionUpdate,
) -> Result<Subscription> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = find(&tx, org, external_id, update.updated_at)?;
    if current.status == SubscriptionStatus::Terminated {
        return Err(StoreError::SubscriptionTerminated.into());
    }
    tx.prepare_cached(
        "UPDATE subscriptions SET name = ?1, ended_at = ?2, billing_anchor = ?3, updated_at = ?4 \
         WHERE id = ?5",
    )?
    .execute(params![
        update.name,
        optional_instant(update.ended_at.as_ref()),
        billing_anchor_text(update.billing_anchor),
        instant(&update.updated_at),
        current.id.to_string(),
    ])?;
    let subscription = find(&tx, org, external_id, time::now())?;
    tx.commit()?;
    Ok(subscription)
}

pub(crate) fn terminate(
    conn: &mut Connection,
    org: OrganizationId,
    external_id: &str,
    at: DateTime<Utc>,
) -> Result<Subscription> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = find(&tx, org, external_id, at)?;
    if current.status == SubscriptionStatus::Terminated {
        return Ok(current);
    }
    let ended_at = current.end_when_terminated(at);
    tx.prepare_cached(
        "UPDATE subscriptions SET ended_at = ?1, terminated_at = ?2, updated_at = ?3 WHERE id = ?4",
    )?
    .execute(params![
        instant(&ended_at),
        instant(&at),
        instant(&at),
        current.id.to_string()
    ])?;
    let subscription = find(&tx, org, external_id, at)?;
    tx.commit()?;
    Ok(subscription)
}
