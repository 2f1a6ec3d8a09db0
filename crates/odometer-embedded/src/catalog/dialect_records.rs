//! SQL for dialect records (a Meteroid product family): insert if absent, list, get.

use rusqlite::{params, Connection, OptionalExtension, Row};

use odometer_core::OrganizationId;
use odometer_store::dialect_records::DialectRecord;

use super::columns::{instant, parse_instant, to_json, Result};

struct RecordRow {
    kind: String,
    id: String,
    name: String,
    document: String,
    created_at: String,
}

impl RecordRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            kind: row.get(0)?,
            id: row.get(1)?,
            name: row.get(2)?,
            document: row.get(3)?,
            created_at: row.get(4)?,
        })
    }

    fn decode(self, org: OrganizationId) -> Result<DialectRecord> {
        Ok(DialectRecord {
            organization_id: org,
            kind: self.kind,
            id: self.id,
            name: self.name,
            document: serde_json::from_str(&self.document)?,
            created_at: parse_instant(&self.created_at)?,
        })
    }
}

pub(crate) fn create(conn: &Connection, record: &DialectRecord) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO dialect_records (organization_id, kind, id, name, document, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            record.organization_id.to_string(),
            record.kind,
            record.id,
            record.name,
            to_json(&record.document)?,
            instant(&record.created_at),
        ])?;
    Ok(inserted == 1)
}

pub(crate) fn list(
    conn: &Connection,
    org: OrganizationId,
    kind: &str,
) -> Result<Vec<DialectRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, id, name, document, created_at FROM dialect_records \
         WHERE organization_id = ?1 AND kind = ?2 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map(params![org.to_string(), kind], RecordRow::read)?;
    rows.map(|row| row?.decode(org)).collect()
}

pub(crate) fn get(
    conn: &Connection,
    org: OrganizationId,
    kind: &str,
    id: &str,
) -> Result<Option<DialectRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT kind, id, name, document, created_at FROM dialect_records \
             WHERE organization_id = ?1 AND kind = ?2 AND id = ?3",
        )?
        .query_row(params![org.to_string(), kind, id], RecordRow::read)
        .optional()?;
    row.map(|r| r.decode(org)).transpose()
}
