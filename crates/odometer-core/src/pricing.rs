//! Pricing: what a charge costs for a number of units. Charge models (`standard`, `graduated`,
//! `volume`, `package`, `percentage`), charge filters (one pricing bucket per event) and the
//! rounding of the final amount to the currency's minor unit. Pure functions of exact decimals.
//!
//! The canonical JSON of a charge is Lago's shape (`reference/lago.md` 2.2, 5):
//! `{"charge_model": "graduated", "properties": {...}, "filters": [{"values": {...},
//! "properties": {...}}]}`. Untrusted documents go through [`parse_charge_pricing`] (or
//! [`read_charge_pricing`] inside a larger document), which reports every problem with its
//! path; serde's `Deserialize` is for trusted, stored documents.
//!
//! # Rules common to every model
//! - Amounts are computed exactly, then the *final* amount is rounded once, half away from zero
//!   ("half-up", as Ruby's `BigDecimal#round`), to the currency's minor unit
//!   ([`minor_units`]): `0.125` is `0.13`, `0.124` is `0.12`, `-0.125` is `-0.13`.
//! - Negative units (a sum of negative values) are priced as 0 by every model except
//!   `standard`, which multiplies them as they are (a credit).
//! - Every overflow is [`PricingError::Overflow`], never wrapped or saturated.
//!
//! The model-by-model rules are on [`ChargeModel`]'s variants' property types.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod currency;
mod filters;
mod input;
mod models;

pub use currency::minor_units;
pub use filters::{bucket_of, BucketMatcher, ChargeFilter, ALL_FILTER_VALUES};
pub use input::{
    parse_charge_model, parse_charge_pricing, read_charge_model, read_charge_pricing,
    read_charge_pricing_members, read_properties, MAX_CHARGE_FILTERS, MAX_FILTER_KEYS,
    MAX_FILTER_VALUES, MAX_RANGES,
};

/// The name of a charge model, as `charge_model` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeModelKind {
    Standard,
    Graduated,
    Volume,
    Package,
    Percentage,
}

impl ChargeModelKind {
    pub const ALL: [ChargeModelKind; 5] =
        [Self::Standard, Self::Graduated, Self::Volume, Self::Package, Self::Percentage];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Graduated => "graduated",
            Self::Volume => "volume",
            Self::Package => "package",
            Self::Percentage => "percentage",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// `standard`: every unit at the same price. `amount = units × amount` (negative units give a
/// negative amount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandardProperties {
    /// The price of one unit.
    pub amount: Decimal,
}

/// One tier of a `graduated` or `volume` charge.
///
/// A tier covers the units *above* the previous tier's `to_value` up to and including its own
/// `to_value` (the first tier starts at 0 inclusive; the last has no `to_value`). `from_value`
/// is redundant and checked: 0 for the first tier, then the previous `to_value` (continuous
/// notation) or the previous `to_value + 1` (Lago's integer notation, `0-100, 101-200, 201-`);
/// both mean the same tiers, so 100.5 units fall in the second tier either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRange {
    pub from_value: Decimal,
    /// `None` (JSON null) on the last, open-ended tier only.
    pub to_value: Option<Decimal>,
    pub per_unit_amount: Decimal,
    pub flat_amount: Decimal,
}

/// `graduated` (Lago's `graduated_ranges`): each tier prices the units that fall in it at its
/// `per_unit_amount`, and adds its `flat_amount` once as soon as the units reach into it (more
/// than the previous tier's `to_value`). Zero units cost nothing, not even the first tier's
/// flat amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraduatedProperties {
    #[serde(rename = "graduated_ranges")]
    pub ranges: Vec<PriceRange>,
}

/// `volume` (Lago's `volume_ranges`): all the units at the `per_unit_amount` of the tier the
/// total reaches, plus that tier's `flat_amount`. Zero units cost nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeProperties {
    #[serde(rename = "volume_ranges")]
    pub ranges: Vec<PriceRange>,
}

/// `package`: `ceil((units - free_units) / package_size) × amount`; a package counts from its
/// first unit, and units at or below `free_units` cost nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageProperties {
    /// The price of one package.
    pub amount: Decimal,
    /// Units per package, at least 1.
    pub package_size: u64,
    /// Units given for free before the first package.
    pub free_units: u64,
}

/// `percentage`: a rate on the amounts of transactions plus a fixed fee per transaction
/// (event), with free units and, optionally, bounds on what one transaction pays.
///
/// Units are the total amount (typically a `sum` of an `amount` property); the per-event values
/// are the amounts of the single transactions, in event order.
///
/// # Free units
/// `free_units_per_events` (N) and `free_units_per_total_aggregation` (A): "the first N events
/// or the first A of amount are free, whichever runs out first" (Lago's documentation). Events
/// are walked in order while the allowance lasts (fewer than N events used, when N is set, and
/// less than A used, when A is set):
/// - an event whose value fits in what is left of A (or any event when only N is set) is
///   entirely free: no rate, no fixed fee;
/// - an event that goes past A has the rest of A deducted from its value, pays the rate on the
///   excess and the full fixed fee, and ends the allowance.
///
/// An event landing exactly on A is free (it fits). Lago's code charges it the fixed fee; its
/// documentation does not say, and "the first A are free" reads as free. A negative value
/// counts as 0 in the walk (it uses no amount, but one free event). Free units need the
/// per-event values.
///
/// # Amount without per-transaction bounds
/// `max(0, units − free amount) × rate / 100 + (events − free events) × fixed_amount`: the rate
/// applies to the net total, and a negative net costs nothing. Every paying event pays the
/// fixed fee, whatever its value (Lago's code skips the fixed fee when the total is exactly 0;
/// its documentation says the fee "applies to each event").
///
/// # Amount with per-transaction bounds
/// When `per_transaction_min_amount` or `per_transaction_max_amount` is set, each paying event
/// costs `max(0, value − its free part) × rate / 100 + fixed_amount`, clamped to
/// `[min, max]`, and the amount is their sum (a negative value counts as 0, so it pays the
/// fixed fee, bounded). Entirely free events cost 0 (the minimum does not apply to them), as in
/// Lago. This needs the per-event values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PercentageProperties {
    /// Percent: `1.2` is 1.2 %.
    pub rate: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_units_per_events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_units_per_total_aggregation: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_transaction_min_amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_transaction_max_amount: Option<Decimal>,
}

impl PercentageProperties {
    /// Whether pricing needs the per-event values (free units or per-transaction bounds).
    pub fn needs_event_values(&self) -> bool {
        self.has_free_units() || self.has_transaction_bounds()
    }

    fn has_free_units(&self) -> bool {
        self.free_units_per_events.is_some() || self.free_units_per_total_aggregation.is_some()
    }

    fn has_transaction_bounds(&self) -> bool {
        self.per_transaction_min_amount.is_some() || self.per_transaction_max_amount.is_some()
    }
}

/// How a charge turns units into an amount. Valid by construction when it comes from
/// [`parse_charge_model`] or [`read_properties`].
///
/// Its JSON form is `{"charge_model": "...", "properties": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ChargeModelDoc", try_from = "ChargeModelDoc")]
pub enum ChargeModel {
    Standard(StandardProperties),
    Graduated(GraduatedProperties),
    Volume(VolumeProperties),
    Package(PackageProperties),
    Percentage(PercentageProperties),
}

/// The JSON form of [`ChargeModel`]. Properties go through a [`Value`] rather than an
/// adjacently tagged enum, whose buffering mishandles exact (arbitrary-precision) numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChargeModelDoc {
    charge_model: ChargeModelKind,
    properties: Value,
}

impl From<ChargeModel> for ChargeModelDoc {
    fn from(model: ChargeModel) -> Self {
        ChargeModelDoc { charge_model: model.kind(), properties: model.properties_json() }
    }
}

impl TryFrom<ChargeModelDoc> for ChargeModel {
    type Error = String;
    fn try_from(doc: ChargeModelDoc) -> Result<Self, String> {
        ChargeModel::from_properties(doc.charge_model, doc.properties)
    }
}

impl ChargeModel {
    pub fn kind(&self) -> ChargeModelKind {
        match self {
            Self::Standard(_) => ChargeModelKind::Standard,
            Self::Graduated(_) => ChargeModelKind::Graduated,
            Self::Volume(_) => ChargeModelKind::Volume,
            Self::Package(_) => ChargeModelKind::Package,
            Self::Percentage(_) => ChargeModelKind::Percentage,
        }
    }

    /// The `properties` object of this model.
    pub fn properties_json(&self) -> Value {
        // Serializing plain structs of decimals and integers cannot fail.
        let value = match self {
            Self::Standard(p) => serde_json::to_value(p),
            Self::Graduated(p) => serde_json::to_value(p),
            Self::Volume(p) => serde_json::to_value(p),
            Self::Package(p) => serde_json::to_value(p),
            Self::Percentage(p) => serde_json::to_value(p),
        };
        value.unwrap_or(Value::Null)
    }

    /// A model from a trusted, stored `properties` object.
    fn from_properties(kind: ChargeModelKind, properties: Value) -> Result<Self, String> {
        let model = match kind {
            ChargeModelKind::Standard => serde_json::from_value(properties).map(Self::Standard),
            ChargeModelKind::Graduated => serde_json::from_value(properties).map(Self::Graduated),
            ChargeModelKind::Volume => serde_json::from_value(properties).map(Self::Volume),
            ChargeModelKind::Package => serde_json::from_value(properties).map(Self::Package),
            ChargeModelKind::Percentage => serde_json::from_value(properties).map(Self::Percentage),
        };
        model.map_err(|err| format!("invalid {} properties: {err}", kind.as_str()))
    }

    /// What `input` costs under this model, rounded to `precision` decimal places (the
    /// currency's [`minor_units`]).
    pub fn price(&self, input: &ChargeInput, precision: u32) -> Result<Priced, PricingError> {
        let (unrounded_amount, details) = match self {
            Self::Standard(p) => models::standard(p, input.units)?,
            Self::Graduated(p) => models::graduated(&p.ranges, input.units)?,
            Self::Volume(p) => models::volume(&p.ranges, input.units)?,
            Self::Package(p) => models::package(p, input.units)?,
            Self::Percentage(p) => models::percentage(p, input)?,
        };
        Ok(Priced {
            amount: round_amount(unrounded_amount, precision),
            unrounded_amount,
            units: input.units,
            details,
        })
    }
}

/// A charge's pricing: its model (the default bucket's price) and its filters, each a bucket
/// with its own properties of the same model.
///
/// Its JSON form is `{"charge_model", "properties", "filters": [{"values", "properties",
/// "invoice_display_name"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ChargePricingDoc", try_from = "ChargePricingDoc")]
pub struct ChargePricing {
    /// Prices the default bucket: events matching none of the filters (all events when there
    /// are no filters).
    pub model: ChargeModel,
    /// In declaration order; [`bucket_of`] breaks ties by it.
    pub filters: Vec<ChargeFilter>,
}

impl ChargePricing {
    /// The model pricing `bucket` (as [`bucket_of`] returns it: `None` is the default bucket).
    pub fn model_of(&self, bucket: Option<usize>) -> Option<&ChargeModel> {
        match bucket {
            None => Some(&self.model),
            Some(i) => self.filters.get(i).map(|f| &f.model),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChargePricingDoc {
    charge_model: ChargeModelKind,
    properties: Value,
    #[serde(default)]
    filters: Vec<ChargeFilterDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChargeFilterDoc {
    values: std::collections::BTreeMap<String, Vec<String>>,
    properties: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invoice_display_name: Option<String>,
}

impl From<ChargePricing> for ChargePricingDoc {
    fn from(pricing: ChargePricing) -> Self {
        ChargePricingDoc {
            charge_model: pricing.model.kind(),
            properties: pricing.model.properties_json(),
            filters: pricing
                .filters
                .into_iter()
                .map(|f| ChargeFilterDoc {
                    properties: f.model.properties_json(),
                    values: f.values,
                    invoice_display_name: f.invoice_display_name,
                })
                .collect(),
        }
    }
}

impl TryFrom<ChargePricingDoc> for ChargePricing {
    type Error = String;
    fn try_from(doc: ChargePricingDoc) -> Result<Self, String> {
        let kind = doc.charge_model;
        let model = ChargeModel::from_properties(kind, doc.properties)?;
        let filters = doc
            .filters
            .into_iter()
            .map(|f| {
                Ok(ChargeFilter {
                    values: f.values,
                    model: ChargeModel::from_properties(kind, f.properties)?,
                    invoice_display_name: f.invoice_display_name,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ChargePricing { model, filters })
    }
}

/// What one bucket of a charge is priced from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChargeInput {
    /// The bucket's aggregated units (the metric's value for the period).
    pub units: Decimal,
    /// The events that counted.
    pub events_count: u64,
    /// The per-event values the units were aggregated from, in event order (timestamp, then
    /// ingestion). Only `percentage` reads them, and only when it has free units or
    /// per-transaction bounds; then there must be exactly `events_count` of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_values: Option<Vec<Decimal>>,
}

impl ChargeInput {
    /// Units and an events count, without per-event values.
    pub fn new(units: Decimal, events_count: u64) -> Self {
        Self { units, events_count, event_values: None }
    }

    /// The per-event values of a sum: units are their total, the count their number.
    pub fn from_event_values(values: Vec<Decimal>) -> Result<Self, PricingError> {
        let units = values
            .iter()
            .try_fold(Decimal::ZERO, |total, v| total.checked_add(*v))
            .ok_or(PricingError::Overflow)?;
        let events_count = u64::try_from(values.len()).map_err(|_| PricingError::Overflow)?;
        Ok(Self { units, events_count, event_values: Some(values) })
    }
}

/// What a bucket costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priced {
    /// `unrounded_amount` rounded half away from zero to the currency's minor unit.
    pub amount: Decimal,
    /// The exact amount before the final rounding.
    pub unrounded_amount: Decimal,
    /// The units priced, as given.
    pub units: Decimal,
    pub details: PriceDetails,
}

/// How an amount was made up, per model (for invoices and explanations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PriceDetails {
    /// `standard`: nothing beyond units × amount.
    Standard,
    /// `graduated`: each tier the units reached, in order; `volume`: the one tier reached.
    /// Empty for zero (or negative) units.
    Tiers { tiers: Vec<TierAmount> },
    Package {
        /// Units beyond the free units (0 when there are none).
        paid_units: Decimal,
        /// Packages started: `ceil(paid_units / package_size)`.
        packages: Decimal,
    },
    Percentage {
        /// Events that were entirely free.
        free_events: u64,
        /// The amount (units) the free allowance covered.
        free_units: Decimal,
        /// The rate's part of the amount (before per-transaction bounds).
        rate_amount: Decimal,
        /// The fixed fees' part (before per-transaction bounds).
        fixed_amount: Decimal,
        /// Whether per-transaction bounds applied (the amount is then the sum of the bounded
        /// per-event amounts, not `rate_amount + fixed_amount`).
        per_transaction: bool,
    },
}

/// One tier's share of a graduated or volume amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierAmount {
    /// The tier's position in the ranges, from 0.
    pub index: usize,
    pub from_value: Decimal,
    pub to_value: Option<Decimal>,
    /// The units priced in this tier.
    pub units: Decimal,
    pub per_unit_amount: Decimal,
    pub flat_amount: Decimal,
    /// `units × per_unit_amount + flat_amount`, unrounded.
    pub amount: Decimal,
}

/// Why a bucket cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A percentage charge with free units or per-transaction bounds was given no per-event
    /// values.
    #[error("this percentage charge needs the per-event values")]
    EventValuesRequired,
    #[error("{values} per-event values were given for {events} events")]
    EventCountMismatch { values: usize, events: u64 },
    #[error("an amount does not fit in a decimal (arithmetic overflow)")]
    Overflow,
}

impl PricingError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::EventValuesRequired => "event_values_required",
            Self::EventCountMismatch { .. } => "event_count_mismatch",
            Self::Overflow => "overflow",
        }
    }
}

/// Rounds an amount half away from zero to `precision` decimal places.
pub fn round_amount(amount: Decimal, precision: u32) -> Decimal {
    amount.round_dp_with_strategy(precision, RoundingStrategy::MidpointAwayFromZero)
}
