//! Customers (whose usage is metered) and organizations (the tenants), with input validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{CustomerId, OrganizationId};
use crate::input::{type_name, ObjectReader};
use crate::problem::Problems;

const MAX_EXTERNAL_ID_CHARS: usize = 256;
const MAX_NAME_CHARS: usize = 255;
const MAX_EMAIL_CHARS: usize = 320;
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What a client sets about a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerSpec {
    /// The client's own identifier for the customer; events name customers by it.
    pub external_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// IANA time zone the customer's billing periods follow (`Europe/Paris`); UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Free-form key/value data kept for the client.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A customer in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub organization_id: OrganizationId,
    pub spec: CustomerSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Customer {
    /// A new customer created at `now`, with a fresh id.
    pub fn new(organization_id: OrganizationId, spec: CustomerSpec, now: DateTime<Utc>) -> Self {
        Self { id: CustomerId::new(), organization_id, spec, created_at: now, updated_at: now }
    }
}

/// Per-organization behaviour switches (semantics 2.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationSettings {
    /// Accept events whose code no metric reads (for backfills that precede the metric).
    #[serde(default)]
    pub accept_unknown_codes: bool,
    /// Create a customer the first time an event names it.
    #[serde(default)]
    pub create_customers_on_first_sight: bool,
    /// How far in the future an event's timestamp may be, in seconds.
    #[serde(default = "default_future_tolerance")]
    pub future_timestamp_tolerance_seconds: u32,
}

fn default_future_tolerance() -> u32 {
    3600
}

impl Default for OrganizationSettings {
    fn default() -> Self {
        Self {
            accept_unknown_codes: false,
            create_customers_on_first_sight: false,
            future_timestamp_tolerance_seconds: default_future_tolerance(),
        }
    }
}

/// A tenant: everything else belongs to exactly one organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub settings: OrganizationSettings,
    pub created_at: DateTime<Utc>,
}

impl CustomerSpec {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Parses and validates a customer definition, reporting every problem.
pub fn parse_customer_spec(value: &Value) -> Result<CustomerSpec, Problems> {
    let mut problems = Problems::new();
    let Some(mut reader) = ObjectReader::new("", value, &mut problems) else {
        return Err(problems);
    };
    reader.refuse_read_only(&["id", "created_at", "updated_at", "organization_id"], &mut problems);
    let external_id = reader.required_string("external_id", MAX_EXTERNAL_ID_CHARS, &mut problems);
    let name = reader.optional_string("name", MAX_NAME_CHARS, &mut problems);
    let email = reader.optional_string("email", MAX_EMAIL_CHARS, &mut problems);
    if let Some(email) = &email {
        let parts: Vec<&str> = email.split('@').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) || email.contains(' ') {
            problems.push("email", "invalid_value", format!("'{email}' is not an email address"));
        }
    }
    let timezone = reader.optional_string("timezone", 64, &mut problems);
    if let Some(tz) = &timezone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            problems.push(
                "timezone",
                "invalid_timezone",
                format!("'{tz}' is not an IANA time zone"),
            );
        }
    }
    let metadata = match reader.get("metadata") {
        None => Map::new(),
        Some(Value::Object(map)) => {
            if value_size(&Value::Object(map.clone())) > MAX_METADATA_BYTES {
                problems.push(
                    "metadata",
                    "too_large",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                );
            }
            map.clone()
        }
        Some(other) => {
            problems.push(
                "metadata",
                "invalid_type",
                format!("expected an object, got {}", type_name(other)),
            );
            Map::new()
        }
    };
    reader.finish(&mut problems);
    match external_id {
        Some(external_id) if problems.is_empty() => {
            Ok(CustomerSpec { external_id, name, email, timezone, metadata })
        }
        _ => Err(problems),
    }
}

/// Applies a JSON merge patch to a customer and validates the result.
pub fn apply_customer_patch(
    current: &CustomerSpec,
    patch: &Value,
) -> Result<CustomerSpec, Problems> {
    if !patch.is_object() {
        let mut problems = Problems::new();
        problems.push("", "invalid_type", "a patch must be a JSON object");
        return Err(problems);
    }
    let mut merged = current.to_json();
    json_patch::merge(&mut merged, patch);
    parse_customer_spec(&merged)
}

fn value_size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_customer_parses() {
        let spec = parse_customer_spec(&json!({
            "external_id": "acme-1", "name": "Acme", "email": "billing@acme.test",
            "timezone": "Europe/Paris", "metadata": {"tier": "gold"}
        }))
        .unwrap();
        assert_eq!(spec.external_id, "acme-1");
        assert_eq!(spec.timezone.as_deref(), Some("Europe/Paris"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = parse_customer_spec(&json!({
            "name": 3, "email": "nope", "timezone": "Mars/Olympus", "metadata": [], "id": "x", "extra": 1
        }))
        .unwrap_err();
        let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            found,
            [
                ("id", "read_only"),
                ("external_id", "missing_field"),
                ("name", "invalid_type"),
                ("email", "invalid_value"),
                ("timezone", "invalid_timezone"),
                ("metadata", "invalid_type"),
                ("extra", "unknown_field"),
            ]
        );
    }

    #[test]
    fn patch_sets_clears_and_keeps() {
        let current =
            parse_customer_spec(&json!({"external_id": "c1", "name": "Old", "email": "a@b.c"}))
                .unwrap();
        let next = apply_customer_patch(&current, &json!({"name": "New", "email": null})).unwrap();
        assert_eq!(next.name.as_deref(), Some("New"));
        assert_eq!(next.email, None);
        assert_eq!(next.external_id, "c1");
        assert!(apply_customer_patch(&current, &json!({"external_id": null})).is_err());
    }
}
