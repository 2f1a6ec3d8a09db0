//! Records a dialect keeps for its clients that Odometer's own model has no place for (a
//! Meteroid product family): a kind, an id, a name and a JSON document, per organization.
//! Odometer never interprets them; the dialect that wrote them reads them back.

use chrono::{DateTime, Utc};
use odometer_core::OrganizationId;
use serde_json::Value;

/// One record of a dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct DialectRecord {
    pub organization_id: OrganizationId,
    /// Namespaced by the dialect (`meteroid.product_family`).
    pub kind: String,
    /// The id the dialect shows its clients, unique per organization and kind.
    pub id: String,
    pub name: String,
    /// Everything else the dialect keeps, verbatim.
    pub document: Value,
    pub created_at: DateTime<Utc>,
}
