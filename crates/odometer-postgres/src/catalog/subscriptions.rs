//! SQL for subscriptions. A subscription keeps its customer's row id and is read back with the
//! customer's current external id; its status is computed at each read from `terminated_at`
//! and `ended_at`.
//!
//! Row locks (several replicas write one database; READ COMMITTED transactions):
//! - a creation takes its customer's row and its plan's row `FOR SHARE`: a concurrent delete of
//!   the customer or of the plan (which takes the plan `FOR UPDATE` to count its active
//!   subscriptions) either commits first and the creation finds nothing live, or waits until
//!   the subscription is there to be counted;
//! - an update and a termination take the subscription's row `FOR UPDATE` before judging its
//!   status, so two terminations from two replicas keep the first one's time.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};

use odometer_core::subscription::{billing_anchor_text, parse_billing_anchor};
use odometer_core::{
    time, OrganizationId, PlanId, Subscription, SubscriptionId, SubscriptionSpec,
    SubscriptionStatus,
};
use odometer_store::{Entity, Page, StoreError, SubscriptionListParams, SubscriptionUpdate};

use super::columns::{corrupt, ensure_organization, is_unique_violation, page_of, page_size};
use super::columns::{parse_id, Failure, Result};
use super::columns::{push_after, push_page_end};

/// The columns of a subscription with its customer's external id, from `subscriptions s JOIN
/// customers c`.
macro_rules! select_subscriptions {
    () => {
        "SELECT s.id, s.organization_id, s.external_id, c.external_id AS customer, s.plan_id, \
         s.name, s.started_at, s.ended_at, s.billing_anchor, s.timezone, s.terminated_at, \
         s.created_at, s.updated_at \
         FROM subscriptions s JOIN customers c ON c.id = s.customer_id"
    };
}

/// A subscription row as stored, before its columns are parsed.
#[derive(FromRow)]
struct SubscriptionRow {
    id: String,
    organization_id: String,
    external_id: String,
    customer: String,
    plan_id: String,
    name: Option<String>,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    billing_anchor: String,
    timezone: String,
    terminated_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SubscriptionRow {
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
            started_at: self.started_at,
            ended_at: self.ended_at,
            billing_anchor,
            timezone,
            name: self.name,
        };
        Ok(Subscription {
            id: parse_id(&self.id, SubscriptionId::parse, "subscription id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            status: SubscriptionStatus::at(spec.ended_at, self.terminated_at, now),
            spec,
            terminated_at: self.terminated_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn external_id_taken(error: sqlx::Error, spec: &SubscriptionSpec) -> Failure {
    if is_unique_violation(&error, "subscriptions_external_id") {
        StoreError::ExternalIdTaken { external_id: spec.external_id.clone() }.into()
    } else {
        error.into()
    }
}

pub(crate) async fn create(pool: &PgPool, subscription: &Subscription) -> Result<()> {
    let org = subscription.organization_id;
    let spec = &subscription.spec;
    let mut tx = pool.begin().await?;
    ensure_organization(&mut tx, org).await?;
    let customer_id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM customers \
         WHERE organization_id = $1 AND external_id = $2 AND deleted_at IS NULL FOR SHARE",
    )
    .bind(org.to_string())
    .bind(&spec.customer)
    .fetch_optional(&mut *tx)
    .await?;
    let customer_id =
        customer_id.ok_or_else(|| StoreError::not_found(Entity::Customer, &spec.customer))?;
    let plan_live: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM plans WHERE id = $1 AND organization_id = $2 AND deleted_at IS NULL \
         FOR SHARE",
    )
    .bind(spec.plan_id.to_string())
    .bind(org.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    if plan_live.is_none() {
        return Err(StoreError::not_found(Entity::Plan, spec.plan_id).into());
    }
    sqlx::query(
        "INSERT INTO subscriptions (id, organization_id, external_id, customer_id, plan_id, \
         name, started_at, ended_at, billing_anchor, timezone, terminated_at, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(subscription.id.to_string())
    .bind(org.to_string())
    .bind(&spec.external_id)
    .bind(customer_id)
    .bind(spec.plan_id.to_string())
    .bind(&spec.name)
    .bind(spec.started_at)
    .bind(spec.ended_at)
    .bind(billing_anchor_text(spec.billing_anchor))
    .bind(spec.timezone.name())
    .bind(subscription.terminated_at)
    .bind(subscription.created_at)
    .bind(subscription.updated_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| external_id_taken(e, spec))?;
    tx.commit().await?;
    Ok(())
}

/// The subscription with this external id, with its status at `now`; with `lock`, its row is
/// locked `FOR UPDATE` (the customer's row is not: `FOR UPDATE OF s`).
async fn find(
    conn: &mut PgConnection,
    org: OrganizationId,
    external_id: &str,
    now: DateTime<Utc>,
    lock: bool,
) -> Result<Subscription> {
    const PLAIN: &str =
        concat!(select_subscriptions!(), " WHERE s.organization_id = $1 AND s.external_id = $2");
    const LOCKED: &str = concat!(
        select_subscriptions!(),
        " WHERE s.organization_id = $1 AND s.external_id = $2 FOR UPDATE OF s"
    );
    let row: Option<SubscriptionRow> = sqlx::query_as(if lock { LOCKED } else { PLAIN })
        .bind(org.to_string())
        .bind(external_id)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => row.decode(now),
        None => Err(StoreError::not_found(Entity::Subscription, external_id).into()),
    }
}

pub(crate) async fn get(
    pool: &PgPool,
    org: OrganizationId,
    external_id: &str,
) -> Result<Subscription> {
    find(&mut *pool.acquire().await?, org, external_id, time::now(), false).await
}

pub(crate) async fn list(
    pool: &PgPool,
    org: OrganizationId,
    params: &SubscriptionListParams,
) -> Result<Page<Subscription>> {
    let now = time::now();
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = QueryBuilder::<Postgres>::new(concat!(
        select_subscriptions!(),
        " WHERE s.organization_id = "
    ));
    sql.push_bind(org.to_string());
    push_after(&mut sql, "s.id", params.cursor.as_deref(), SubscriptionId::parse)?;
    if let Some(customer) = &params.customer {
        sql.push(" AND s.customer_id IN (SELECT id FROM customers WHERE organization_id = ");
        sql.push_bind(org.to_string()).push(" AND external_id = ").push_bind(customer.clone());
        sql.push(" AND deleted_at IS NULL)");
    }
    if let Some(plan) = params.plan_id {
        sql.push(" AND s.plan_id = ").push_bind(plan.to_string());
    }
    if let Some(status) = params.status {
        // `SubscriptionStatus::at`, in SQL.
        sql.push(match status {
            SubscriptionStatus::Active => " AND ",
            SubscriptionStatus::Terminated => " AND NOT ",
        });
        sql.push("(s.terminated_at IS NULL AND (s.ended_at IS NULL OR s.ended_at > ");
        sql.push_bind(now).push("))");
    }
    let limit = page_size(params.limit);
    push_page_end(&mut sql, "s.id", limit);
    let rows: Vec<SubscriptionRow> = sql.build_query_as().fetch_all(pool).await?;
    let items = rows.into_iter().map(|row| row.decode(now)).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |s| s.id.to_string()))
}

pub(crate) async fn update(
    pool: &PgPool,
    org: OrganizationId,
    external_id: &str,
    update: &SubscriptionUpdate,
) -> Result<Subscription> {
    let mut tx = pool.begin().await?;
    let current = find(&mut tx, org, external_id, update.updated_at, true).await?;
    if current.status == SubscriptionStatus::Terminated {
        return Err(StoreError::SubscriptionTerminated.into());
    }
    sqlx::query(
        "UPDATE subscriptions SET name = $1, ended_at = $2, billing_anchor = $3, updated_at = $4 \
         WHERE id = $5",
    )
    .bind(&update.name)
    .bind(update.ended_at)
    .bind(billing_anchor_text(update.billing_anchor))
    .bind(update.updated_at)
    .bind(current.id.to_string())
    .execute(&mut *tx)
    .await?;
    let subscription = find(&mut tx, org, external_id, time::now(), false).await?;
    tx.commit().await?;
    Ok(subscription)
}

pub(crate) async fn terminate(
    pool: &PgPool,
    org: OrganizationId,
    external_id: &str,
    at: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = pool.begin().await?;
    let current = find(&mut tx, org, external_id, at, true).await?;
    if current.status == SubscriptionStatus::Terminated {
        return Ok(current);
    }
    let ended_at = current.end_when_terminated(at);
    sqlx::query(
        "UPDATE subscriptions SET ended_at = $1, terminated_at = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(ended_at)
    .bind(at)
    .bind(at)
    .bind(current.id.to_string())
    .execute(&mut *tx)
    .await?;
    let subscription = find(&mut tx, org, external_id, at, false).await?;
    tx.commit().await?;
    Ok(subscription)
}
