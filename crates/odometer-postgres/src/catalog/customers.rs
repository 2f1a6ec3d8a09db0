//! SQL for customers. A deleted customer's row stays (with `deleted_at`) so its id is never
//! reused, while its external id is freed for a new customer.
//!
//! Every write is one statement, atomic on its own: an update or a delete finds the live
//! customer by external id and changes it in the same `UPDATE`, so a concurrent delete or
//! rename from another replica is either seen or waited for, never half-seen. The unique index
//! over live external ids decides between two creations of the same one.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};

use odometer_core::{time, Customer, CustomerId, CustomerSpec, OrganizationId};
use odometer_store::{CustomerListParams, Entity, Page, StoreError};

use super::columns::{
    ensure_organization, fold, from_json, is_unique_violation, page_of, page_size, parse_id,
    push_after, push_page_end, push_search, to_json, Failure, Result,
};

macro_rules! customer_columns {
    () => {
        "id, organization_id, spec, created_at, updated_at"
    };
}

/// A customer row as stored, before its columns are parsed.
#[derive(FromRow)]
struct CustomerRow {
    id: String,
    organization_id: String,
    spec: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl CustomerRow {
    fn decode(self) -> Result<Customer> {
        Ok(Customer {
            id: parse_id(&self.id, CustomerId::parse, "customer id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            spec: from_json(&self.spec, "customer spec")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn external_id_taken(error: sqlx::Error, spec: &CustomerSpec) -> Failure {
    if is_unique_violation(&error, "customers_live_external_id") {
        StoreError::ExternalIdTaken { external_id: spec.external_id.clone() }.into()
    } else {
        error.into()
    }
}

/// The copies of a spec's members that searches match, lowercased.
fn search_columns(spec: &CustomerSpec) -> [String; 3] {
    [
        fold(&spec.external_id),
        fold(spec.name.as_deref().unwrap_or("")),
        fold(spec.email.as_deref().unwrap_or("")),
    ]
}

pub(crate) async fn create(pool: &PgPool, customer: &Customer) -> Result<()> {
    let mut conn = pool.acquire().await?;
    ensure_organization(&mut conn, customer.organization_id).await?;
    let [search_external_id, search_name, search_email] = search_columns(&customer.spec);
    sqlx::query(
        "INSERT INTO customers (id, organization_id, external_id, search_external_id, \
         search_name, search_email, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(customer.id.to_string())
    .bind(customer.organization_id.to_string())
    .bind(&customer.spec.external_id)
    .bind(search_external_id)
    .bind(search_name)
    .bind(search_email)
    .bind(to_json(&customer.spec)?)
    .bind(customer.created_at)
    .bind(customer.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| external_id_taken(e, &customer.spec))?;
    Ok(())
}

pub(crate) async fn get(pool: &PgPool, org: OrganizationId, external_id: &str) -> Result<Customer> {
    let row: Option<CustomerRow> = sqlx::query_as(concat!(
        "SELECT ",
        customer_columns!(),
        " FROM customers WHERE organization_id = $1 AND external_id = $2 AND deleted_at IS NULL"
    ))
    .bind(org.to_string())
    .bind(external_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Customer, external_id).into()),
    }
}

/// The live customers among `external_ids`, in one query.
pub(crate) async fn existing(
    pool: &PgPool,
    org: OrganizationId,
    external_ids: &[String],
) -> Result<HashSet<String>> {
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT external_id FROM customers WHERE organization_id = $1 AND deleted_at IS NULL \
         AND external_id = ANY($2)",
    )
    .bind(org.to_string())
    .bind(external_ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

pub(crate) async fn list(
    pool: &PgPool,
    org: OrganizationId,
    params: &CustomerListParams,
) -> Result<Page<Customer>> {
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = QueryBuilder::<Postgres>::new(concat!(
        "SELECT ",
        customer_columns!(),
        " FROM customers WHERE deleted_at IS NULL AND organization_id = "
    ));
    sql.push_bind(org.to_string());
    push_after(&mut sql, "id", params.cursor.as_deref(), CustomerId::parse)?;
    push_search(
        &mut sql,
        params.search.as_deref(),
        &["search_external_id", "search_name", "search_email"],
    );
    let limit = page_size(params.limit);
    push_page_end(&mut sql, "id", limit);
    let rows: Vec<CustomerRow> = sql.build_query_as().fetch_all(pool).await?;
    let items = rows.into_iter().map(CustomerRow::decode).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |c| c.id.to_string()))
}

pub(crate) async fn update(
    pool: &PgPool,
    org: OrganizationId,
    external_id: &str,
    spec: &CustomerSpec,
    updated_at: DateTime<Utc>,
) -> Result<Customer> {
    let [search_external_id, search_name, search_email] = search_columns(spec);
    let row: Option<CustomerRow> = sqlx::query_as(concat!(
        "UPDATE customers SET external_id = $1, search_external_id = $2, search_name = $3, \
         search_email = $4, spec = $5, updated_at = $6 \
         WHERE organization_id = $7 AND external_id = $8 AND deleted_at IS NULL RETURNING ",
        customer_columns!()
    ))
    .bind(&spec.external_id)
    .bind(search_external_id)
    .bind(search_name)
    .bind(search_email)
    .bind(to_json(spec)?)
    .bind(updated_at)
    .bind(org.to_string())
    .bind(external_id)
    .fetch_optional(pool)
    .await
    .map_err(|e| external_id_taken(e, spec))?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Customer, external_id).into()),
    }
}

pub(crate) async fn delete(
    pool: &PgPool,
    org: OrganizationId,
    external_id: &str,
) -> Result<Customer> {
    let row: Option<CustomerRow> = sqlx::query_as(concat!(
        "UPDATE customers SET deleted_at = $1 \
         WHERE organization_id = $2 AND external_id = $3 AND deleted_at IS NULL RETURNING ",
        customer_columns!()
    ))
    .bind(time::now())
    .bind(org.to_string())
    .bind(external_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Customer, external_id).into()),
    }
}
