//! SQL for organizations and their API keys. None of these writes needs a row lock: each is one
//! statement (atomic on its own), and organizations are never deleted.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{FromRow, PgPool};

use odometer_core::{time, ApiKeyId, Organization, OrganizationId, OrganizationSettings};
use odometer_store::{ApiKey, Entity, NewApiKey, StoreError};

use super::columns::{ensure_organization, from_json, parse_id, to_json, Result};

/// `last_used_at` is refreshed at most this often: a key is looked up on every request, and a
/// write per request would cost a round of WAL for a value people read in minutes.
const LAST_USED_RESOLUTION: TimeDelta = TimeDelta::seconds(60);

macro_rules! organization_columns {
    () => {
        "id, name, settings, created_at"
    };
}

/// An organization row as stored, before its columns are parsed.
#[derive(FromRow)]
struct OrganizationRow {
    id: String,
    name: String,
    settings: String,
    created_at: DateTime<Utc>,
}

impl OrganizationRow {
    fn decode(self) -> Result<Organization> {
        Ok(Organization {
            id: parse_id(&self.id, OrganizationId::parse, "organization id")?,
            name: self.name,
            settings: from_json(&self.settings, "organization settings")?,
            created_at: self.created_at,
        })
    }
}

pub(crate) async fn create(pool: &PgPool, org: &Organization) -> Result<()> {
    sqlx::query(
        "INSERT INTO organizations (id, name, settings, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org.id.to_string())
    .bind(&org.name)
    .bind(to_json(&org.settings)?)
    .bind(org.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn get(pool: &PgPool, id: OrganizationId) -> Result<Organization> {
    let row: Option<OrganizationRow> = sqlx::query_as(concat!(
        "SELECT ",
        organization_columns!(),
        " FROM organizations WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Organization, id).into()),
    }
}

pub(crate) async fn list(pool: &PgPool) -> Result<Vec<Organization>> {
    let rows: Vec<OrganizationRow> = sqlx::query_as(concat!(
        "SELECT ",
        organization_columns!(),
        " FROM organizations ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(OrganizationRow::decode).collect()
}

pub(crate) async fn update_settings(
    pool: &PgPool,
    id: OrganizationId,
    settings: &OrganizationSettings,
) -> Result<Organization> {
    let row: Option<OrganizationRow> = sqlx::query_as(concat!(
        "UPDATE organizations SET settings = $1 WHERE id = $2 RETURNING ",
        organization_columns!()
    ))
    .bind(to_json(settings)?)
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Organization, id).into()),
    }
}

macro_rules! key_columns {
    () => {
        "id, organization_id, name, prefix, created_at, revoked_at, last_used_at"
    };
}

/// An API key row as stored (without its hash, which is never read back).
#[derive(FromRow)]
struct KeyRow {
    id: String,
    organization_id: String,
    name: String,
    prefix: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    fn decode(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: parse_id(&self.id, ApiKeyId::parse, "api key id")?,
            organization_id: parse_id(
                &self.organization_id,
                OrganizationId::parse,
                "organization id",
            )?,
            name: self.name,
            prefix: self.prefix,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
        })
    }
}

pub(crate) async fn create_key(pool: &PgPool, new: &NewApiKey) -> Result<()> {
    let key = &new.key;
    let mut conn = pool.acquire().await?;
    ensure_organization(&mut conn, key.organization_id).await?;
    sqlx::query(
        "INSERT INTO api_keys \
         (id, organization_id, name, prefix, secret_hash, created_at, revoked_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.id.to_string())
    .bind(key.organization_id.to_string())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&new.secret_hash)
    .bind(key.created_at)
    .bind(key.revoked_at)
    .bind(key.last_used_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn find_key(pool: &PgPool, secret_hash: &str) -> Result<Option<ApiKey>> {
    let now = time::now();
    // Two statements, no transaction: the read comes after the refresh commits, so it sees
    // either this refresh or a concurrent one (another replica's), never a stale `NULL`.
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $1 \
         WHERE secret_hash = $2 AND revoked_at IS NULL \
         AND (last_used_at IS NULL OR last_used_at < $3)",
    )
    .bind(now)
    .bind(secret_hash)
    .bind(now - LAST_USED_RESOLUTION)
    .execute(pool)
    .await?;
    let row: Option<KeyRow> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(secret_hash)
    .fetch_optional(pool)
    .await?;
    row.map(KeyRow::decode).transpose()
}

pub(crate) async fn list_keys(pool: &PgPool, org: OrganizationId) -> Result<Vec<ApiKey>> {
    let rows: Vec<KeyRow> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE organization_id = $1 ORDER BY id"
    ))
    .bind(org.to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(KeyRow::decode).collect()
}

pub(crate) async fn revoke_key(pool: &PgPool, org: OrganizationId, id: ApiKeyId) -> Result<ApiKey> {
    // COALESCE keeps the first revocation time when a key is revoked again (the row lock the
    // UPDATE takes orders two concurrent revocations, and the second sees the first's time).
    let row: Option<KeyRow> = sqlx::query_as(concat!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE id = $2 AND organization_id = $3 RETURNING ",
        key_columns!()
    ))
    .bind(time::now())
    .bind(id.to_string())
    .bind(org.to_string())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::ApiKey, id).into()),
    }
}
