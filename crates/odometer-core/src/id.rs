//! Typed, prefixed identifiers (`bm_...`, `org_...`): a UUIDv7 printed as fixed-width base62.
//!
//! Every id is a 128-bit UUIDv7, so ids sort by creation time; they print as a prefix and 22
//! base62 digits (`0-9A-Za-z`, ASCII order), so their text sorts the same way as their value.
//! That lets list endpoints page with the last id as the cursor. Ids are never reused: a new
//! id is drawn for every new thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Number of base62 digits a `u128` needs at most; ids are left-padded to this width.
const ID_DIGITS: usize = 22;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid {kind} id (expected '{prefix}' followed by {ID_DIGITS} base62 digits)")]
pub struct IdParseError {
    pub input: String,
    pub kind: &'static str,
    pub prefix: &'static str,
}

fn encode(value: u128) -> String {
    let digits = base62::encode(value);
    format!("{digits:0>ID_DIGITS$}")
}

fn decode(digits: &str) -> Option<u128> {
    if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    base62::decode(digits).ok()
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// The text every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, never seen before (UUIDv7: time-ordered, random low bits).
            pub fn new() -> Self {
                Self(Uuid::now_v7().as_u128())
            }

            /// The id as a UUID (the form some dialects print, such as Lago's `lago_id`).
            pub fn as_uuid(&self) -> Uuid {
                Uuid::from_u128(self.0)
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid.as_u128())
            }

            /// Parses the printed form; `None` when `text` is not an id of this kind.
            pub fn parse(text: &str) -> Option<Self> {
                text.strip_prefix($prefix).and_then(decode).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(text: &str) -> Result<Self, IdParseError> {
                Self::parse(text).ok_or_else(|| IdParseError {
                    input: text.chars().take(64).collect(),
                    kind: $kind,
                    prefix: $prefix,
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A billable metric (`bm_`).
    MetricId, "bm_", "metric"
);
prefixed_id!(
    /// An organization, the tenant everything belongs to (`org_`).
    OrganizationId, "org_", "organization"
);
prefixed_id!(
    /// An API key's public identifier (`key_`); the secret itself is never stored.
    ApiKeyId, "key_", "api key"
);
prefixed_id!(
    /// A customer (`cus_`); clients mostly address customers by their external id.
    CustomerId, "cus_", "customer"
);
prefixed_id!(
    /// A plan (`plan_`): a price list of a base amount and charges.
    PlanId, "plan_", "plan"
);
prefixed_id!(
    /// One charge of a plan (`ch_`); it keeps its id while the plan is replaced.
    ChargeId, "ch_", "charge"
);
prefixed_id!(
    /// A subscription of a customer to a plan (`sub_`); clients mostly address subscriptions
    /// by their external id.
    SubscriptionId, "sub_", "subscription"
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prints_prefix_and_fixed_width_digits_and_parses_back() {
        let id = MetricId::new();
        let text = id.to_string();
        assert!(text.starts_with("bm_"));
        assert_eq!(text.len(), 3 + ID_DIGITS);
        assert_eq!(MetricId::parse(&text), Some(id));
        assert_eq!(text.parse::<MetricId>().unwrap(), id);
    }

    #[test]
    fn small_and_large_values_round_trip() {
        for value in [0u128, 1, 61, 62, u64::MAX as u128, u128::MAX] {
            let id = CustomerId(value);
            assert_eq!(CustomerId::parse(&id.to_string()), Some(id), "{value}");
        }
        assert_eq!(CustomerId(0).to_string(), "cus_0000000000000000000000");
    }

    #[test]
    fn text_order_is_creation_order() {
        let ids: Vec<MetricId> = (0..50).map(|_| MetricId::new()).collect();
        let mut by_text = ids.clone();
        by_text.sort_by_key(|id| id.to_string());
        let mut by_value = ids;
        by_value.sort();
        assert_eq!(by_text, by_value);
    }

    #[test]
    fn rejects_other_kinds_and_malformed_text() {
        let metric = MetricId::new().to_string();
        assert_eq!(OrganizationId::parse(&metric), None);
        for bad in ["", "bm_", "bm_abc", "bm_!!!!!!!!!!!!!!!!!!!!!!", "BM_0000000000000000000000"] {
            assert_eq!(MetricId::parse(bad), None, "{bad}");
        }
        let err = "bm_x".parse::<MetricId>().unwrap_err();
        assert_eq!(err.kind, "metric");
        // 22 digits that overflow a u128 are not an id either.
        assert_eq!(MetricId::parse("bm_zzzzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn serde_uses_the_printed_form() {
        let id = OrganizationId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<OrganizationId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<OrganizationId>("\"bm_0\"").is_err());
    }
}
