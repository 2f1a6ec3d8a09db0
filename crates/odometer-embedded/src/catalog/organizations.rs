//! SQL for organizations and their API keys.

use chrono::TimeDelta;
use rusqlite::{params, Connection, OptionalExtension, Row};

use odometer_core::{time, ApiKeyId, Organization, OrganizationId, OrganizationSettings};
use odometer_store::{ApiKey, Entity, NewApiKey, StoreError};

use super::columns::{
    ensure_organization, from_json, instant, optional_instant, parse_id, parse_instant,
    parse_optional_instant, to_json, Result,
};

/// `last_used_at` is refreshed at most this often: a key is looked up on every request, and
/// a durable write per request would cost an fsync each for a value people read in minutes.
const LAST_USED_RESOLUTION: TimeDelta = TimeDelta::seconds(60);

const ORGANIZATION_COLUMNS: &str = "id, name, settings, created_at";

/// An organization row as stored, before its columns are parsed.
struct OrganizationRow {
    id: String,
    name: String,
    settings: String,
    created_at: String,
}

impl OrganizationRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            settings: row.get(2)?,
            created_at: row.get(3)?,
        })
    }

    fn decode(self) -> Result<Organization> {
        Ok(Organization {
            id: parse_id(&self.id, OrganizationId::parse, "organization id")?,
            name: self.name,
            settings: from_json(&self.settings, "organization settings")?,
            created_at: parse_instant(&self.created_at)?,
        })
    }
}

pub(crate) fn create(conn: &Connection, org: &Organization) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO organizations (id, name, settings, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    stmt.execute(params![
        org.id.to_string(),
        org.name,
        to_json(&org.settings)?,
        instant(&org.created_at)
    ])?;
    Ok(())
}

pub(crate) fn get(conn: &Connection, id: OrganizationId) -> Result<Organization> {
    let sql = format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE id = ?1");
    let row =
        conn.prepare_cached(&sql)?.query_row([id.to_string()], OrganizationRow::read).optional()?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Organization, id).into()),
    }
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<Organization>> {
    let sql = format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], OrganizationRow::read)?;
    rows.map(|row| row?.decode()).collect()
}

pub(crate) fn update_settings(
    conn: &Connection,
    id: OrganizationId,
    settings: &OrganizationSettings,
) -> Result<Organization> {
    let sql = format!(
        "UPDATE organizations SET settings = ?1 WHERE id = ?2 RETURNING {ORGANIZATION_COLUMNS}"
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row(params![to_json(settings)?, id.to_string()], OrganizationRow::read)
        .optional()?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::Organization, id).into()),
    }
}

const KEY_COLUMNS: &str = "id, organization_id, name, prefix, created_at, revoked_at, last_used_at";

/// An API key row as stored (without its hash, which is never read back).
struct KeyRow {
    id: String,
    organization_id: String,
    name: String,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

impl KeyRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            organization_id: row.get(1)?,
            name: row.get(2)?,
            prefix: row.get(3)?,
            created_at: row.get(4)?,
            revoked_at: row.get(5)?,
            last_used_at: row.get(6)?,
        })
    }

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
            created_at: parse_instant(&self.created_at)?,
            revoked_at: parse_optional_instant(self.revoked_at.as_deref())?,
            last_used_at: parse_optional_instant(self.last_used_at.as_deref())?,
        })
    }
}

pub(crate) fn create_key(conn: &mut Connection, new: &NewApiKey) -> Result<()> {
    let tx = conn.transaction()?;
    let key = &new.key;
    ensure_organization(&tx, key.organization_id)?;
    tx.prepare_cached(
        "INSERT INTO api_keys \
         (id, organization_id, name, prefix, secret_hash, created_at, revoked_at, last_used_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        key.id.to_string(),
        key.organization_id.to_string(),
        key.name,
        key.prefix,
        new.secret_hash,
        instant(&key.created_at),
        optional_instant(key.revoked_at.as_ref()),
        optional_instant(key.last_used_at.as_ref()),
    ])?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn find_key(conn: &mut Connection, secret_hash: &str) -> Result<Option<ApiKey>> {
    let now = time::now();
    let tx = conn.transaction()?;
    tx.prepare_cached(
        "UPDATE api_keys SET last_used_at = ?1 \
         WHERE secret_hash = ?2 AND revoked_at IS NULL \
         AND (last_used_at IS NULL OR last_used_at < ?3)",
    )?
    .execute(params![instant(&now), secret_hash, instant(&(now - LAST_USED_RESOLUTION))])?;
    let sql =
        format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1 AND revoked_at IS NULL");
    let row = tx.prepare_cached(&sql)?.query_row([secret_hash], KeyRow::read).optional()?;
    tx.commit()?;
    row.map(KeyRow::decode).transpose()
}

pub(crate) fn list_keys(conn: &Connection, org: OrganizationId) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE organization_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([org.to_string()], KeyRow::read)?;
    rows.map(|row| row?.decode()).collect()
}

pub(crate) fn revoke_key(conn: &Connection, org: OrganizationId, id: ApiKeyId) -> Result<ApiKey> {
    // COALESCE keeps the first revocation time when a key is revoked again.
    let sql = format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?1) \
         WHERE id = ?2 AND organization_id = ?3 RETURNING {KEY_COLUMNS}"
    );
    let row = conn
        .prepare_cached(&sql)?
        .query_row(params![instant(&time::now()), id.to_string(), org.to_string()], KeyRow::read)
        .optional()?;
    match row {
        Some(row) => row.decode(),
        None => Err(StoreError::not_found(Entity::ApiKey, id).into()),
    }
}
