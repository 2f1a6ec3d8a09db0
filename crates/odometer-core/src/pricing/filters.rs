//! Charge filters: which pricing bucket of a charge an event counts in (`reference/lago.md`
//! 2.2).
//!
//! # Rules
//! - A filter maps property keys (top-level keys or dotted paths, as in a metric) to allowed
//!   values. An event matches it when, for every key, the event has the property and its
//!   canonical value is one of the allowed values (AND across keys, OR within a key).
//! - Values compare by [`canonical_value`], the text the engine compares segmentation and
//!   filters by: strings as they are, numbers (and strings holding one) by their exact value in
//!   normalized text, booleans as `true`/`false`. So an allowed `"1"` matches a property `1`
//!   or `1.0`; null, objects and arrays match nothing.
//! - An event counts in exactly one bucket: the matching filter with the most keys; between
//!   matching filters with as many keys, the one declared first (Lago's event matching keeps
//!   the first of the largest, too). An event matching no filter counts in the default bucket
//!   (`None`), priced by the charge's own properties.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ChargeModel;
use crate::engine::canonical_value;
use crate::event::property_at;

/// Lago's "all values of this key" marker. Refused in a filter: the Lago dialect expands it to
/// the metric's listed values, so a filter always lists what it matches.
pub const ALL_FILTER_VALUES: &str = "__ALL_FILTER_VALUES__";

/// One bucket of a charge: the events whose properties have one of the listed values for every
/// key, priced by their own properties (of the charge's model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFilter {
    /// Property key or dotted path -> allowed values (at least one key, one value each).
    pub values: BTreeMap<String, Vec<String>>,
    pub model: ChargeModel,
    /// What invoices call the bucket.
    pub invoice_display_name: Option<String>,
}

/// Charge filters with their values in canonical form, for matching many events.
#[derive(Debug, Clone)]
pub struct BucketMatcher {
    /// Per filter, in declaration order: (key, canonical allowed values).
    filters: Vec<Vec<(String, Vec<String>)>>,
}

impl BucketMatcher {
    pub fn new(filters: &[ChargeFilter]) -> Self {
        let filters = filters
            .iter()
            .map(|filter| {
                filter
                    .values
                    .iter()
                    .map(|(key, values)| {
                        let canonical = values
                            .iter()
                            .filter_map(|v| canonical_value(&Value::String(v.clone())))
                            .collect();
                        (key.clone(), canonical)
                    })
                    .collect()
            })
            .collect();
        Self { filters }
    }

    /// The bucket of an event with these properties: the index of the most specific matching
    /// filter (the first declared among equals), or `None` for the default bucket.
    pub fn bucket_of(&self, properties: &Map<String, Value>) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (index, conditions) in self.filters.iter().enumerate() {
            let specificity = conditions.len();
            if best.is_some_and(|(_, best_specificity)| specificity <= best_specificity) {
                continue;
            }
            let matches = conditions.iter().all(|(key, allowed)| {
                property_at(properties, key)
                    .and_then(canonical_value)
                    .is_some_and(|value| allowed.contains(&value))
            });
            if matches {
                best = Some((index, specificity));
            }
        }
        best.map(|(index, _)| index)
    }
}

/// [`BucketMatcher::bucket_of`] for one event. To bucket many events, build the
/// [`BucketMatcher`] once.
pub fn bucket_of(filters: &[ChargeFilter], properties: &Map<String, Value>) -> Option<usize> {
    BucketMatcher::new(filters).bucket_of(properties)
}
