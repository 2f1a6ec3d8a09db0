//! SQL for customers. A deleted customer's row stays (with `deleted_at`) so its id is never
//! reused, while its external id is freed for a new customer.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use odometer_core::{time, Customer, CustomerId, CustomerSpec, OrganizationId};
use odometer_store::{CustomerListParams, Entity, Page, StoreError};

use super::columns::{
    ensure_organization, fold, from_json, instant, is_unique_violation, like_pattern, page_of,
    page_size, parse_id, parse_instant, to_json, Failure, Result,
};

const CUSTOMER_COLUMNS: &str = "id, organization_id, spec, created_at, updated_at";

/// A customer row as stored, before its columns are parsed.
struct CustomerRow {
    id: String,
    organization_id: String,
    spec: String,
    created_at: String,
    updated_at: String,
}

impl CustomerRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            spec: row.get(2)?,
            created_at: row.get(3)?,
            updated_at: row.get(4)?,
        })
    }

    fn decode(self) -> Result<Customer> {
        Ok(Customer {
            id: parse_id(&self.id, CustomerId::parse, "customer id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            spec: from_json(&self.spec, "customer spec")?,
            created_at: parse_instant(&self.created_at)?,
            updated_at: parse_instant(&self.updated_at)?,
        })
    }
}

fn external_id_taken(error: rusqlite::Error, spec: &CustomerSpec) -> Failure {
    if is_unique_violation(&error, "customers.external_id") {
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

pub(crate) fn create(conn: &mut Connection, customer: &Customer) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    ensure_organization(&tx, customer.organization_id)?;
    let [search_external_id, search_name, search_email] = search_columns(&customer.spec);
    tx.prepare_cached(
        "INSERT INTO customers (id, organization_id, external_id, search_external_id, \
         search_name, search_email, spec, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        customer.id.to_string(),
        customer.organization_id.to_string(),
        customer.spec.external_id,
        search_external_id,
        search_name,
        search_email,
        to_json(&customer.spec)?,
        instant(&customer.created_at),
        instant(&customer.updated_at),
    ])
    .map_err(|e| external_id_taken(e, &customer.spec))?;
    tx.commit()?;
    Ok(())
}

/// The live customer with this external id, if any.
fn find(conn: &Connection, org: OrganizationId, external_id: &str) -> Result<Option<Customer>> {
    let sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers \
         WHERE organization_id = ?1 AND external_id = ?2 AND deleted_at IS NULL"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let row =
        stmt.query_row([org.to_string(), external_id.to_owned()], CustomerRow::read).optional()?;
    row.map(CustomerRow::decode).transpose()
}

pub(crate) fn get(conn: &Connection, org: OrganizationId, external_id: &str) -> Result<Customer> {
    find(conn, org, external_id)?
        .ok_or_else(|| StoreError::not_found(Entity::Customer, external_id).into())
}

/// The live customers among `external_ids`, in one query.
pub(crate) fn existing(
    conn: &Connection,
    org: OrganizationId,
    external_ids: &[String],
) -> Result<std::collections::HashSet<String>> {
    let ids = serde_json::to_string(external_ids)?;
    let mut stmt = conn.prepare_cached(
        "SELECT external_id FROM customers WHERE organization_id = ?1 AND deleted_at IS NULL \
         AND external_id IN (SELECT value FROM json_each(?2))",
    )?;
    let rows = stmt.query_map([org.to_string(), ids], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn list(
    conn: &Connection,
    org: OrganizationId,
    params: &CustomerListParams,
) -> Result<Page<Customer>> {
    // The conditions are fixed text; everything the caller gave is bound.
    let mut sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE organization_id = ?1 AND deleted_at IS NULL"
    );
    let mut values = vec![SqlValue::Text(org.to_string())];
    if let Some(cursor) = &params.cursor {
        let after = CustomerId::parse(cursor).ok_or(StoreError::InvalidCursor)?;
        values.push(SqlValue::Text(after.to_string()));
        sql.push_str(&format!(" AND id > ?{}", values.len()));
    }
    if let Some(search) = params.search.as_deref().filter(|s| !s.is_empty()) {
        values.push(SqlValue::Text(like_pattern(search)));
        let n = values.len();
        sql.push_str(&format!(
            " AND (search_external_id LIKE ?{n} ESCAPE '\\' OR search_name LIKE ?{n} ESCAPE '\\' \
             OR search_email LIKE ?{n} ESCAPE '\\')"
        ));
    }
    let limit = page_size(params.limit);
    // One more than the page tells whether there is a next page without a second query.
    values.push(SqlValue::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", values.len()));

    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), CustomerRow::read)?;
    let items = rows.map(|row| row?.decode()).collect::<Result<Vec<_>>>()?;
    Ok(page_of(items, limit, |c| c.id.to_string()))
}

pub(crate) fn update(
    conn: &mut Connection,
    org: OrganizationId,
    external_id: &str,
    spec: &CustomerSpec,
    updated_at: DateTime<Utc>,
) -> Result<Customer> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = get(&tx, org, external_id)?;
    let [search_external_id, search_name, search_email] = search_columns(spec);
    let sql = format!(
        "UPDATE customers SET external_id = ?1, search_external_id = ?2, search_name = ?3, \
         search_email = ?4, spec = ?5, updated_at = ?6 WHERE id = ?7 RETURNING {CUSTOMER_COLUMNS}"
    );
    let row = tx
        .prepare_cached(&sql)?
        .query_row(
            params![
                spec.external_id,
                search_external_id,
                search_name,
                search_email,
                to_json(spec)?,
                instant(&updated_at),
                current.id.to_string(),
            ],
            CustomerRow::read,
        )
        .map_err(|e| external_id_taken(e, spec))?;
    let customer = row.decode()?;
    tx.commit()?;
    Ok(customer)
}

pub(crate) fn delete(
    conn: &Connection,
    org: OrganizationId,
    external_id: &str,
) -> Result<Customer> {
    let sql = format!(
        "UPDATE customers SET deleted_at = ?1 \
         WHERE organization_id = ?2 AND external_id = ?3 AND deleted_at IS NULL \
         RETURNING {CUSTOMER_COLUMNS}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let row = stmt
        .query_row(params![instant(&time::now()), org.to_string(), external_id], CustomerRow::read)
        .optional()?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Customer, external_id).into()),
    }
}
