//! What one charge comes to over one period: the metric's events split into the charge's
//! buckets, each bucket's units from the reference engine and its amount from the charge model.
//!
//! Buckets: every event counts in exactly one bucket, the most specific charge filter it
//! matches ([`BucketMatcher`]), or the charge's default bucket when it matches none. With
//! pricing group keys, each bucket is further split by the events' canonical values of those
//! keys (an absent key is its own group, `null`), and each group is priced on its own.
//!
//! Units are the window total of the metric over the bucket's events, exactly as
//! `/v1/usage` would compute it for those events (unit conversion and rounding included); an
//! aggregation with no value (`max` of nothing) is 0 units. Every filter's bucket is listed,
//! with 0 units when no event reached it; the default bucket is listed when the charge has no
//! filters or when events reached it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::engine::{canonical_value, compute_usage, counted_values};
use crate::event::StoredEvent;
use crate::metric::MetricSpec;
use crate::pricing::{
    BucketMatcher, ChargeInput, ChargeModel, ChargePricing, Priced, PricingError,
};
use crate::usage::{UsageError, UsageQuery, WindowSize, DEFAULT_GROUP_LIMIT};

/// One bucket (and pricing group) of a charge.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketUsage {
    /// The charge filter's index; `None` for the default bucket.
    pub filter: Option<usize>,
    /// The pricing group: each group key's canonical value (`None` when absent). Empty when
    /// the charge has no group keys.
    pub group: BTreeMap<String, Option<String>>,
    pub units: Decimal,
    /// Events of the period that counted for the metric in this bucket.
    pub events_count: u64,
    /// The amount, rounded to the currency's minor unit, and how it was reached.
    pub priced: Priced,
}

/// A charge over one period.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeUsage {
    pub buckets: Vec<BucketUsage>,
    /// The sum of the buckets' units (meaningful for additive aggregations).
    pub units: Decimal,
    pub events_count: u64,
    /// The sum of the buckets' amounts.
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChargeUsageError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("a charge amount does not fit in a decimal")]
    Overflow,
}

impl ChargeUsageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Usage(e) => e.code(),
            Self::Pricing(e) => e.code(),
            Self::Overflow => "overflow",
        }
    }
}

/// The charge described by `pricing` and `group_keys` over `[from, to)`, from the customer's
/// events (all of them may be given: other codes are ignored; for recurring metrics the events
/// before `from` must be included). Only events ingested by `as_of` count. Amounts are
/// rounded to `precision` decimals.
#[allow(clippy::too_many_arguments)]
pub fn charge_usage(
    spec: &MetricSpec,
    pricing: &ChargePricing,
    group_keys: &[String],
    events: &[StoredEvent],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    as_of: Option<DateTime<Utc>>,
    precision: u32,
) -> Result<ChargeUsage, ChargeUsageError> {
    let matcher = BucketMatcher::new(&pricing.filters);
    type Key = (Option<usize>, BTreeMap<String, Option<String>>);
    let mut parts: BTreeMap<Key, Vec<StoredEvent>> = BTreeMap::new();
    for stored in events.iter().filter(|e| e.event.code == spec.event_code) {
        let bucket = matcher.bucket_of(&stored.event.properties);
        let group = group_keys
            .iter()
            .map(|k| (k.clone(), stored.event.property(k).and_then(canonical_value)))
            .collect();
        parts.entry((bucket, group)).or_default().push(stored.clone());
    }
    // Every filter's bucket shows, priced at 0 units when empty; the default bucket too when
    // there are no filters.
    let no_group: BTreeMap<String, Option<String>> = BTreeMap::new();
    let listed_empty: Vec<Option<usize>> = if pricing.filters.is_empty() {
        vec![None]
    } else {
        (0..pricing.filters.len()).map(Some).collect()
    };
    for bucket in listed_empty {
        if !parts.keys().any(|(b, _)| *b == bucket) {
            parts.insert((bucket, no_group.clone()), Vec::new());
        }
    }

    let query = UsageQuery {
        from,
        to,
        window: WindowSize::None,
        timezone: chrono_tz::Tz::UTC,
        group_by: Vec::new(),
        as_of,
        group_limit: DEFAULT_GROUP_LIMIT,
    };
    let mut buckets = Vec::with_capacity(parts.len());
    for ((filter, group), part) in parts {
        let result = compute_usage(spec, &part, &query)?;
        let window = result.windows.first();
        let units = window.and_then(|w| w.total).unwrap_or(Decimal::ZERO);
        let events_count = window.map_or(0, |w| w.groups.iter().map(|g| g.events_count).sum());
        let model = pricing.model_of(filter).unwrap_or(&pricing.model);
        let input = charge_input(model, spec, &part, (from, to), as_of, units, events_count)?;
        let priced = model.price(&input, precision)?;
        buckets.push(BucketUsage { filter, group, units, events_count, priced });
    }
    let mut units = Decimal::ZERO;
    let mut amount = Decimal::ZERO;
    let mut events_count = 0u64;
    for bucket in &buckets {
        units = units.checked_add(bucket.units).ok_or(ChargeUsageError::Overflow)?;
        amount = amount.checked_add(bucket.priced.amount).ok_or(ChargeUsageError::Overflow)?;
        events_count += bucket.events_count;
    }
    Ok(ChargeUsage { buckets, units, events_count, amount })
}

/// What the model needs: units and count, plus each event's value for a percentage charge
/// that prices event by event.
fn charge_input(
    model: &ChargeModel,
    spec: &MetricSpec,
    events: &[StoredEvent],
    period: (DateTime<Utc>, DateTime<Utc>),
    as_of: Option<DateTime<Utc>>,
    units: Decimal,
    events_count: u64,
) -> Result<ChargeInput, PricingError> {
    match model {
        ChargeModel::Percentage(p) if p.needs_event_values() => {
            ChargeInput::from_event_values(counted_values(spec, events, period, as_of))
        }
        _ => Ok(ChargeInput::new(units, events_count)),
    }
}
