//! Usage tables (Zenskar's raw metrics): a typed schema of events under an `api_slug`. Rows
//! ingested for a table are events whose `code` is the slug; SQL metrics see each table under
//! its slug with columns `customer_id`, `timestamp` and `data` (one member per field, typed).
//! Also the records that make a retried ingestion request safe (`Idempotency-Key`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of one data field (ClickHouse's names, as Zenskar writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldType {
    String,
    Int64,
    Float64,
    Date32,
    DateTime64,
    #[serde(rename = "UUID")]
    Uuid,
    Bool,
}

impl FieldType {
    pub const ALL: [FieldType; 7] = [
        Self::String,
        Self::Int64,
        Self::Float64,
        Self::Date32,
        Self::DateTime64,
        Self::Uuid,
        Self::Bool,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Int64 => "Int64",
            Self::Float64 => "Float64",
            Self::Date32 => "Date32",
            Self::DateTime64 => "DateTime64",
            Self::Uuid => "UUID",
            Self::Bool => "Bool",
        }
    }

    /// Also accepts `DateTime64(3)` and other parameterized forms of `DateTime64`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.starts_with("DateTime64(") && text.ends_with(')') {
            return Some(Self::DateTime64);
        }
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// One usage table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageTable {
    /// A UUID, as text.
    pub id: String,
    pub name: String,
    /// Lowercase letters, digits and `_`, starting with a letter: both the event code of its
    /// rows and the table's name in SQL.
    pub api_slug: String,
    pub description: Option<String>,
    /// The data fields, in the schema's order.
    pub fields: Vec<(String, FieldType)>,
    /// The `dataschema` document as the client sent it.
    pub dataschema: Value,
    pub created_at: DateTime<Utc>,
}

/// Whether `slug` may name a usage table (it is pasted into SQL as an identifier, so the
/// rule is strict; `odometer_` names are the engine's own).
pub fn valid_slug(slug: &str) -> bool {
    let mut chars = slug.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && slug.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !matches!(slug, "events" | "main" | "temp" | "system")
        && !slug.starts_with("odometer_")
}

/// Whether `name` may name a data field (letters, digits and `_`, not starting with a digit).
pub fn valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The answer first given to a request made with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentResponse {
    /// SHA-256 (hex) of what identifies the request: its route and its body.
    pub request_hash: String,
    pub status: u16,
    /// The response body, as JSON text.
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_field_names_are_safe_identifiers() {
        for ok in ["premises", "api_calls_2", "a"] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in ["", "Premises", "2x", "a-b", "a b", "events", "odometer_scope", "x\"y"] {
            assert!(!valid_slug(bad), "{bad}");
        }
        assert!(valid_field_name("Premises_used") && valid_field_name("_x"));
        assert!(!valid_field_name("1x") && !valid_field_name("a.b") && !valid_field_name(""));
        assert_eq!(FieldType::parse("DateTime64(3)"), Some(FieldType::DateTime64));
        assert_eq!(FieldType::parse("UUID"), Some(FieldType::Uuid));
        assert_eq!(FieldType::parse("Int32"), None);
    }
}
