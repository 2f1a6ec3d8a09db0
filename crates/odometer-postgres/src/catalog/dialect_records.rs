//! SQL for dialect records (a Meteroid product family): insert if absent, list, get. The
//! primary key decides between two replicas creating the same record (`ON CONFLICT DO
//! NOTHING`: the second one is told `false`).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use odometer_core::OrganizationId;
use odometer_store::dialect_records::DialectRecord;

use super::columns::{from_json, to_json, Result};

#[derive(FromRow)]
struct RecordRow {
    kind: String,
    id: String,
    name: String,
    document: String,
    created_at: DateTime<Utc>,
}

impl RecordRow {
    fn decode(self, org: OrganizationId) -> Result<DialectRecord> {
        Ok(DialectRecord {
            organization_id: org,
            kind: self.kind,
            id: self.id,
            name: self.name,
            document: from_json(&self.document, "dialect record")?,
            created_at: self.created_at,
        })
    }
}

pub(crate) async fn create(pool: &PgPool, record: &DialectRecord) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO dialect_records (organization_id, kind, id, name, document, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(record.organization_id.to_string())
    .bind(&record.kind)
    .bind(&record.id)
    .bind(&record.name)
    .bind(to_json(&record.document)?)
    .bind(record.created_at)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub(crate) async fn list(
    pool: &PgPool,
    org: OrganizationId,
    kind: &str,
) -> Result<Vec<DialectRecord>> {
    let rows: Vec<RecordRow> = sqlx::query_as(
        "SELECT kind, id, name, document, created_at FROM dialect_records \
         WHERE organization_id = $1 AND kind = $2 ORDER BY created_at, id",
    )
    .bind(org.to_string())
    .bind(kind)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|row| row.decode(org)).collect()
}

pub(crate) async fn get(
    pool: &PgPool,
    org: OrganizationId,
    kind: &str,
    id: &str,
) -> Result<Option<DialectRecord>> {
    let row: Option<RecordRow> = sqlx::query_as(
        "SELECT kind, id, name, document, created_at FROM dialect_records \
         WHERE organization_id = $1 AND kind = $2 AND id = $3",
    )
    .bind(org.to_string())
    .bind(kind)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| r.decode(org)).transpose()
}
