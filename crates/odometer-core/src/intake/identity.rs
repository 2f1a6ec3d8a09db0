//! An event's identity and content (semantics 2.2): the key `(organization, customer,
//! transaction_id)` and what "the same content" means, as stable 128-bit hashes.
//!
//! Both hashes are the first 16 bytes of SHA-256 (read big-endian) over an unambiguous
//! encoding: every variable-length part is prefixed with its length, and each hash starts
//! with its own versioned domain tag. Stores keep these numbers, so the encoding is part of
//! the storage format: changing it means a new tag and a migration.
//!
//! Keys compare exactly: customer ids and transaction ids are case-sensitive and not
//! Unicode-normalized, as clients sent them.
//!
//! Content is the code, the timestamp (at microseconds) and the properties in a canonical
//! form:
//! * object members sorted by key (byte order), at every depth, so member order never
//!   matters;
//! * numbers by exact decimal value where they fit a decimal (semantics 2.4), so `1`, `1.0`,
//!   `1e0` and `1.000` are the same content: many JSON libraries do not keep a number's
//!   spelling, and a retry re-encoded by one of them must still be a duplicate. A number too
//!   large or too precise for a decimal compares by its text;
//! * a string is never equal to a number (`"1"` and `1` differ): the documents differ in type;
//! * array order matters.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::Event;
use crate::expression::json_to_decimal;
use crate::id::OrganizationId;

const KEY_DOMAIN: &[u8] = b"odometer/event-key/v1";
const CONTENT_DOMAIN: &[u8] = b"odometer/event-content/v1";
const PROPERTIES_DOMAIN: &[u8] = b"odometer/event-properties/v1";

/// A stable 128-bit hash of an event's key `(organization, customer, transaction_id)`.
pub fn event_fingerprint(org: OrganizationId, customer: &str, transaction_id: &str) -> u128 {
    let mut hasher = Sha256::new();
    put_bytes(&mut hasher, KEY_DOMAIN);
    put_bytes(&mut hasher, org.as_uuid().as_bytes());
    put_bytes(&mut hasher, customer.as_bytes());
    put_bytes(&mut hasher, transaction_id.as_bytes());
    first_128_bits(hasher)
}

/// A stable 128-bit hash of an event's content: code, timestamp and canonical properties.
/// Two events with the same key are duplicates exactly when their content hashes are equal.
pub fn content_hash(event: &Event) -> u128 {
    let mut hasher = Sha256::new();
    put_bytes(&mut hasher, CONTENT_DOMAIN);
    put_bytes(&mut hasher, event.code.as_bytes());
    hasher.update(event.timestamp.timestamp_micros().to_be_bytes());
    put_object(&mut hasher, &event.properties);
    first_128_bits(hasher)
}

/// Which parts of the content differ between two events (`code`, `timestamp`, `properties`),
/// for a conflict's message; empty when the content is the same.
pub fn content_differences(a: &Event, b: &Event) -> Vec<&'static str> {
    let mut parts = Vec::new();
    if a.code != b.code {
        parts.push("code");
    }
    if a.timestamp != b.timestamp {
        parts.push("timestamp");
    }
    if properties_hash(&a.properties) != properties_hash(&b.properties) {
        parts.push("properties");
    }
    parts
}

fn properties_hash(properties: &Map<String, Value>) -> u128 {
    let mut hasher = Sha256::new();
    put_bytes(&mut hasher, PROPERTIES_DOMAIN);
    put_object(&mut hasher, properties);
    first_128_bits(hasher)
}

fn first_128_bits(hasher: Sha256) -> u128 {
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

fn put_len(hasher: &mut Sha256, len: usize) {
    hasher.update((len as u64).to_be_bytes());
}

fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    put_len(hasher, bytes.len());
    hasher.update(bytes);
}

/// One tag byte per JSON type, then the value; see the module documentation for the rules.
fn put_value(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hasher.update(b"n"),
        Value::Bool(false) => hasher.update(b"f"),
        Value::Bool(true) => hasher.update(b"t"),
        Value::Number(number) => match json_to_decimal(value) {
            Some(decimal) => {
                hasher.update(b"d");
                // `normalize` drops trailing fractional zeros and the sign of zero, so every
                // spelling of one value prints the same.
                put_bytes(hasher, decimal.normalize().to_string().as_bytes());
            }
            None => {
                hasher.update(b"x");
                put_bytes(hasher, number.to_string().as_bytes());
            }
        },
        Value::String(text) => {
            hasher.update(b"s");
            put_bytes(hasher, text.as_bytes());
        }
        Value::Array(items) => {
            hasher.update(b"a");
            put_len(hasher, items.len());
            for item in items {
                put_value(hasher, item);
            }
        }
        Value::Object(map) => put_object(hasher, map),
    }
}

fn put_object(hasher: &mut Sha256, map: &Map<String, Value>) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    hasher.update(b"o");
    put_len(hasher, members.len());
    for (key, value) in members {
        put_bytes(hasher, key.as_bytes());
        put_value(hasher, value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn props(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn canonical_properties() {
        let same = [
            (r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#),
            (r#"{"a":1}"#, r#"{"a":1.0}"#),
            (r#"{"a":1000}"#, r#"{"a":1e3}"#),
            (r#"{"a":0}"#, r#"{"a":-0.0}"#),
            (
                r#"{"o":{"x":[1,{"q":2,"p":1}],"y":null}}"#,
                r#"{"o":{"y":null,"x":[1.00,{"p":1,"q":2}]}}"#,
            ),
        ];
        for (a, b) in same {
            assert_eq!(properties_hash(&props(a)), properties_hash(&props(b)), "{a} vs {b}");
        }
        let different = [
            (r#"{"a":1}"#, r#"{"a":"1"}"#),
            (r#"{"a":[1,2]}"#, r#"{"a":[2,1]}"#),
            (r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":true}"#, r#"{"a":false}"#),
            (r#"{"a":"x","b":""}"#, r#"{"a":"","b":"x"}"#),
            (r#"{"ab":"c"}"#, r#"{"a":"bc"}"#),
            (r#"{"a":1e400}"#, r#"{"a":1e401}"#),
        ];
        for (a, b) in different {
            assert_ne!(properties_hash(&props(a)), properties_hash(&props(b)), "{a} vs {b}");
        }
    }

    #[test]
    fn fingerprint_parts_cannot_run_together() {
        let org = OrganizationId::new();
        assert_ne!(event_fingerprint(org, "ab", "c"), event_fingerprint(org, "a", "bc"));
        assert_eq!(event_fingerprint(org, "a", "b"), event_fingerprint(org, "a", "b"));
        assert_ne!(
            event_fingerprint(org, "a", "b"),
            event_fingerprint(OrganizationId::new(), "a", "b")
        );
    }

    #[test]
    fn hashes_are_stable_across_releases() {
        // Stores keep these numbers: if they change, stored keys and contents no longer match.
        // The expected values were computed independently (Python's hashlib) from the encoding
        // the module documentation describes.
        let org = OrganizationId::from_uuid(uuid::Uuid::from_u128(1));
        assert_eq!(event_fingerprint(org, "cus", "tx"), 223902617410102661605087804576154114250);
        let event = Event {
            transaction_id: "tx".into(),
            code: "c".into(),
            customer: "cus".into(),
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            properties: props(r#"{"b":"x","a":1.0}"#),
        };
        assert_eq!(content_hash(&event), 53389634742157144475290155828218921207);
    }
}
