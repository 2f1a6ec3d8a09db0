//! Usage events (semantics section 2): the accepted event, as stored with its ingestion
//! sequence, what became of each event of a batch, and reading a property by dotted path.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An event as accepted: every field valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1 to 256 characters; unique per organization and customer for all time.
    pub transaction_id: String,
    /// The event code metrics read (`event_code`).
    pub code: String,
    /// The customer's external id.
    pub customer: String,
    /// When the usage happened, UTC, microsecond precision.
    pub timestamp: DateTime<Utc>,
    /// At most 64 KiB of JSON.
    pub properties: Map<String, Value>,
}

impl Event {
    /// A property by top-level key or dotted path into nested objects (`usage.bytes`);
    /// `None` when absent. A top-level key containing dots is found as is first.
    pub fn property(&self, path: &str) -> Option<&Value> {
        property_at(&self.properties, path)
    }
}

/// An accepted event with what the store assigned it (semantics 1.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event: Event,
    /// Strictly increasing per organization, in acceptance order.
    pub sequence: u64,
    /// When it was accepted.
    pub ingested_at: DateTime<Utc>,
}

/// Why one event was not accepted: a machine code (`missing_field`, `unknown_code`,
/// `transaction_id_conflict`, ...) and a message for people that names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct EventRejection {
    pub code: &'static str,
    /// Lowercase, no trailing period.
    pub message: String,
}

impl EventRejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// What became of one event of a batch (semantics 2.2 and 2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Stored now, with this ingestion sequence.
    Accepted { sequence: u64 },
    /// The same event (key and content) was already stored: a success, stored once.
    /// `sequence` is the original's.
    Duplicate { sequence: u64 },
    /// Not stored.
    Rejected(EventRejection),
}

impl EventOutcome {
    /// `accepted`, `duplicate` or `rejected`, as the native API reports it.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::Duplicate { .. } => "duplicate",
            Self::Rejected(_) => "rejected",
        }
    }

    /// Whether the client may consider the event stored (accepted now or before).
    pub fn is_stored(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }

    /// The stored event's sequence, when it is stored.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            Self::Accepted { sequence } | Self::Duplicate { sequence } => Some(*sequence),
            Self::Rejected(_) => None,
        }
    }

    pub fn rejection(&self) -> Option<&EventRejection> {
        match self {
            Self::Rejected(rejection) => Some(rejection),
            _ => None,
        }
    }
}

/// Looks up `path` in `properties`: the whole path as a top-level key, else segment by segment
/// through nested objects.
pub fn property_at<'a>(properties: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = properties.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = properties.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn properties_by_key_and_dotted_path() {
        let Value::Object(props) =
            json!({"a": 1, "usage": {"bytes": 5, "deep": {"x": "y"}}, "dotted.key": true})
        else {
            unreachable!()
        };
        assert_eq!(property_at(&props, "a"), Some(&json!(1)));
        assert_eq!(property_at(&props, "usage.bytes"), Some(&json!(5)));
        assert_eq!(property_at(&props, "usage.deep.x"), Some(&json!("y")));
        assert_eq!(property_at(&props, "dotted.key"), Some(&json!(true)));
        assert_eq!(property_at(&props, "usage.missing"), None);
        assert_eq!(property_at(&props, "a.b"), None);
    }
}
