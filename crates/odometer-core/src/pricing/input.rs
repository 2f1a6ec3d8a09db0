//! Turning untrusted JSON charges into valid [`ChargePricing`] and [`ChargeModel`] values,
//! reporting every problem with its path (`properties.graduated_ranges[1].to_value`,
//! `filters[0].values.region[2]`).
//!
//! Amounts are decimals given as JSON numbers or strings (`"0.25"`, `0.25`), at least 0.
//! Defaults where Lago requires a member: a range's `flat_amount` and a package's `free_units`
//! are 0 when absent.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::Value;

use super::filters::ALL_FILTER_VALUES;
use super::{
    ChargeFilter, ChargeModel, ChargeModelKind, ChargePricing, GraduatedProperties,
    PackageProperties, PercentageProperties, PriceRange, StandardProperties, VolumeProperties,
};
use crate::engine::canonical_value;
use crate::input::{decimal_value, distinct_strings, type_name, ObjectReader};
use crate::metric_input::parse_property_path;
use crate::problem::{index, join, Problems};

/// Most ranges of a graduated or volume charge.
pub const MAX_RANGES: usize = 100;
/// Most filters of one charge.
pub const MAX_CHARGE_FILTERS: usize = 100;
/// Most keys of one charge filter.
pub const MAX_FILTER_KEYS: usize = 16;
/// Most values of one key of a charge filter.
pub const MAX_FILTER_VALUES: usize = 1_000;
const MAX_VALUE_CHARS: usize = 1_000;
const MAX_DISPLAY_NAME_CHARS: usize = 255;

/// Parses a whole charge: `{"charge_model", "properties", "filters"}`.
pub fn parse_charge_pricing(value: &Value) -> Result<ChargePricing, Problems> {
    let mut problems = Problems::new();
    let pricing = read_charge_pricing("", value, &mut problems);
    match pricing {
        Some(pricing) if problems.is_empty() => Ok(pricing),
        _ => Err(problems),
    }
}

/// Parses `{"charge_model", "properties"}`.
pub fn parse_charge_model(value: &Value) -> Result<ChargeModel, Problems> {
    let mut problems = Problems::new();
    let model = read_charge_model("", value, &mut problems);
    match model {
        Some(model) if problems.is_empty() => Ok(model),
        _ => Err(problems),
    }
}

/// A charge at `path` inside a larger document; `None` when it has problems (all recorded).
pub fn read_charge_pricing(
    path: &str,
    value: &Value,
    problems: &mut Problems,
) -> Option<ChargePricing> {
    let mut reader = ObjectReader::new(path, value, problems)?;
    let pricing = read_charge_pricing_members(&mut reader, problems);
    reader.finish(problems);
    pricing
}

/// Reads `charge_model`, `properties` and `filters` from an object whose other members the
/// caller reads (a plan's charge also names its metric, for instance); the caller finishes the
/// reader.
pub fn read_charge_pricing_members(
    reader: &mut ObjectReader<'_>,
    problems: &mut Problems,
) -> Option<ChargePricing> {
    let before = problems.0.len();
    let model = read_model_members(reader, problems);
    let kind = model.as_ref().map(ChargeModel::kind);

    let filters_path = reader.path("filters");
    let items = reader.array("filters", problems);
    if items.len() > MAX_CHARGE_FILTERS {
        problems.push(&filters_path, "too_many", format!("at most {MAX_CHARGE_FILTERS} filters"));
    }
    let parts: Vec<FilterParts> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_filter(&index(&filters_path, i), item, kind, problems))
        .collect();
    check_distinct_filters(&filters_path, &parts, problems);

    let model = model?;
    if problems.0.len() > before {
        return None;
    }
    let filters = parts
        .into_iter()
        .map(|p| {
            Some(ChargeFilter {
                values: p.values?,
                model: p.model?,
                invoice_display_name: p.invoice_display_name,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ChargePricing { model, filters })
}

/// `{"charge_model", "properties"}` at `path`.
pub fn read_charge_model(
    path: &str,
    value: &Value,
    problems: &mut Problems,
) -> Option<ChargeModel> {
    let mut reader = ObjectReader::new(path, value, problems)?;
    let model = read_model_members(&mut reader, problems);
    reader.finish(problems);
    model
}

/// The `properties` object (at `path`) of a `kind` charge model.
pub fn read_properties(
    kind: ChargeModelKind,
    path: &str,
    value: &Value,
    problems: &mut Problems,
) -> Option<ChargeModel> {
    let before = problems.0.len();
    let mut reader = ObjectReader::new(path, value, problems)?;
    let model = match kind {
        ChargeModelKind::Standard => read_standard(&mut reader, problems),
        ChargeModelKind::Graduated => read_ranges(&mut reader, "graduated_ranges", problems)
            .map(|ranges| ChargeModel::Graduated(GraduatedProperties { ranges })),
        ChargeModelKind::Volume => read_ranges(&mut reader, "volume_ranges", problems)
            .map(|ranges| ChargeModel::Volume(VolumeProperties { ranges })),
        ChargeModelKind::Package => read_package(&mut reader, problems),
        ChargeModelKind::Percentage => read_percentage(&mut reader, problems),
    };
    reader.finish(problems);
    if problems.0.len() > before {
        None
    } else {
        model
    }
}

fn read_model_members(
    reader: &mut ObjectReader<'_>,
    problems: &mut Problems,
) -> Option<ChargeModel> {
    let kind_path = reader.path("charge_model");
    let kind = match reader.get("charge_model") {
        None => {
            problems.push(&kind_path, "missing_field", "is required");
            None
        }
        Some(Value::String(text)) => {
            let kind = ChargeModelKind::parse(text);
            if kind.is_none() {
                let known: Vec<&str> = ChargeModelKind::ALL.iter().map(|k| k.as_str()).collect();
                problems.push(
                    &kind_path,
                    "unknown_charge_model",
                    format!("'{text}' is not one of {}", known.join(", ")),
                );
            }
            kind
        }
        Some(other) => {
            problems.push(
                &kind_path,
                "invalid_type",
                format!("expected a string, got {}", type_name(other)),
            );
            None
        }
    };
    let properties_path = reader.path("properties");
    match (reader.get("properties"), kind) {
        (None, Some(_)) => {
            problems.push(properties_path, "missing_field", "is required");
            None
        }
        (Some(value), Some(kind)) => read_properties(kind, &properties_path, value, problems),
        // Without a known model the properties cannot be judged; do not pile up noise.
        (_, None) => None,
    }
}

/// Which values must a decimal member be.
#[derive(Debug, Clone, Copy)]
enum Bound {
    NonNegative,
    Positive,
}

/// An optional decimal member; `None` when absent or null, or invalid (recorded).
fn decimal(
    reader: &mut ObjectReader<'_>,
    key: &'static str,
    bound: Bound,
    problems: &mut Problems,
) -> Option<Decimal> {
    let path = reader.path(key);
    let value = reader.get(key)?;
    let parsed = decimal_value(value).filter(|d| match bound {
        Bound::NonNegative => *d >= Decimal::ZERO,
        Bound::Positive => *d > Decimal::ZERO,
    });
    if parsed.is_none() {
        let what = match bound {
            Bound::NonNegative => "a decimal of at least 0",
            Bound::Positive => "a decimal greater than 0",
        };
        problems.push(path, "invalid_value", format!("must be {what}, got {value}"));
    }
    parsed.map(|d| d.normalize())
}

fn required_decimal(
    reader: &mut ObjectReader<'_>,
    key: &'static str,
    bound: Bound,
    problems: &mut Problems,
) -> Option<Decimal> {
    if !reader.has_value(key) {
        reader.get(key);
        problems.push(reader.path(key), "missing_field", "is required");
        return None;
    }
    decimal(reader, key, bound, problems)
}

/// An optional whole-number member of at least `min`.
fn integer(
    reader: &mut ObjectReader<'_>,
    key: &'static str,
    min: u64,
    problems: &mut Problems,
) -> Option<u64> {
    let path = reader.path(key);
    let value = reader.get(key)?;
    let parsed = decimal_value(value)
        .filter(|d| d.fract().is_zero())
        .and_then(|d| d.to_u64())
        .filter(|n| *n >= min);
    if parsed.is_none() {
        problems.push(
            path,
            "invalid_value",
            format!("must be a whole number of at least {min}, got {value}"),
        );
    }
    parsed
}

fn read_standard(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<ChargeModel> {
    let amount = required_decimal(reader, "amount", Bound::NonNegative, problems);
    Some(ChargeModel::Standard(StandardProperties { amount: amount? }))
}

fn read_package(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<ChargeModel> {
    let amount = required_decimal(reader, "amount", Bound::NonNegative, problems);
    let package_size = if reader.has_value("package_size") {
        integer(reader, "package_size", 1, problems)
    } else {
        reader.get("package_size");
        problems.push(reader.path("package_size"), "missing_field", "is required");
        None
    };
    let free_units = if reader.has_value("free_units") {
        integer(reader, "free_units", 0, problems)
    } else {
        reader.get("free_units");
        Some(0)
    };
    Some(ChargeModel::Package(PackageProperties {
        amount: amount?,
        package_size: package_size?,
        free_units: free_units?,
    }))
}

fn read_percentage(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<ChargeModel> {
    let rate = required_decimal(reader, "rate", Bound::NonNegative, problems);
    let fixed_amount = decimal(reader, "fixed_amount", Bound::NonNegative, problems);
    let free_units_per_events = integer(reader, "free_units_per_events", 1, problems);
    let free_units_per_total_aggregation =
        decimal(reader, "free_units_per_total_aggregation", Bound::Positive, problems);
    let min = decimal(reader, "per_transaction_min_amount", Bound::NonNegative, problems);
    let max = decimal(reader, "per_transaction_max_amount", Bound::NonNegative, problems);
    if let (Some(min), Some(max)) = (min, max) {
        if max < min {
            problems.push(
                reader.path("per_transaction_max_amount"),
                "invalid_value",
                format!("must be at least per_transaction_min_amount ({min})"),
            );
        }
    }
    Some(ChargeModel::Percentage(PercentageProperties {
        rate: rate?,
        fixed_amount,
        free_units_per_events,
        free_units_per_total_aggregation,
        per_transaction_min_amount: min,
        per_transaction_max_amount: max,
    }))
}

/// One range's members, each `None` when absent or invalid.
struct RangeParts {
    from_value: Option<Decimal>,
    to_value: Option<Decimal>,
    per_unit_amount: Option<Decimal>,
    flat_amount: Option<Decimal>,
}

fn read_ranges(
    reader: &mut ObjectReader<'_>,
    key: &'static str,
    problems: &mut Problems,
) -> Option<Vec<PriceRange>> {
    let path = reader.path(key);
    let items = match reader.get(key) {
        None => {
            problems.push(&path, "missing_field", "is required");
            return None;
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(
                &path,
                "invalid_type",
                format!("expected an array, got {}", type_name(other)),
            );
            return None;
        }
    };
    if items.is_empty() {
        problems.push(&path, "invalid_value", "must list at least one range");
        return None;
    }
    if items.len() > MAX_RANGES {
        problems.push(&path, "too_many", format!("at most {MAX_RANGES} ranges"));
        return None;
    }
    let parts: Vec<Option<RangeParts>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_range(&index(&path, i), item, problems))
        .collect();
    check_bounds(&path, &parts, problems);
    parts
        .into_iter()
        .map(|p| {
            let p = p?;
            Some(PriceRange {
                from_value: p.from_value?,
                to_value: p.to_value,
                per_unit_amount: p.per_unit_amount?,
                flat_amount: p.flat_amount?,
            })
        })
        .collect()
}

fn read_range(path: &str, value: &Value, problems: &mut Problems) -> Option<RangeParts> {
    let mut reader = ObjectReader::new(path, value, problems)?;
    let from_value = required_decimal(&mut reader, "from_value", Bound::NonNegative, problems);
    let to_value = decimal(&mut reader, "to_value", Bound::NonNegative, problems);
    let per_unit_amount =
        required_decimal(&mut reader, "per_unit_amount", Bound::NonNegative, problems);
    let flat_amount = if reader.has_value("flat_amount") {
        decimal(&mut reader, "flat_amount", Bound::NonNegative, problems)
    } else {
        reader.get("flat_amount");
        Some(Decimal::ZERO)
    };
    reader.finish(problems);
    Some(RangeParts { from_value, to_value, per_unit_amount, flat_amount })
}

/// Ranges start at 0, follow each other without gap or overlap (continuous or Lago's `+1`
/// notation), and only the last is open-ended.
fn check_bounds(path: &str, parts: &[Option<RangeParts>], problems: &mut Problems) {
    let last = parts.len() - 1;
    // The previous range's `to_value`, when known.
    let mut previous_to: Option<Decimal> = None;
    for (i, part) in parts.iter().enumerate() {
        let Some(part) = part else {
            previous_to = None;
            continue;
        };
        let range_path = index(path, i);
        if let Some(from) = part.from_value {
            if i == 0 && !from.is_zero() {
                problems.push(
                    join(&range_path, "from_value"),
                    "invalid_range",
                    "the first range must start at 0",
                );
            } else if let Some(prev) = previous_to.filter(|_| i > 0) {
                let next = prev + Decimal::ONE;
                if from != prev && from != next {
                    problems.push(
                        join(&range_path, "from_value"),
                        "invalid_range",
                        format!(
                            "must be {prev} (the previous to_value) or {next}: no gap, no overlap"
                        ),
                    );
                }
            }
        }
        match (i == last, part.to_value) {
            (true, Some(_)) => problems.push(
                join(&range_path, "to_value"),
                "invalid_range",
                "must be null on the last range (it is open-ended)",
            ),
            (false, None) => problems.push(
                join(&range_path, "to_value"),
                "missing_field",
                "is required on every range but the last",
            ),
            (false, Some(to)) => {
                if let Some(from) = part.from_value.filter(|from| to <= *from) {
                    problems.push(
                        join(&range_path, "to_value"),
                        "invalid_range",
                        format!("must be greater than from_value ({from})"),
                    );
                }
            }
            (true, None) => {}
        }
        previous_to = part.to_value;
    }
}

/// One filter's members, each `None` when absent or invalid.
struct FilterParts {
    values: Option<BTreeMap<String, Vec<String>>>,
    model: Option<ChargeModel>,
    invoice_display_name: Option<String>,
}

fn read_filter(
    path: &str,
    value: &Value,
    kind: Option<ChargeModelKind>,
    problems: &mut Problems,
) -> FilterParts {
    let mut parts = FilterParts { values: None, model: None, invoice_display_name: None };
    let Some(mut reader) = ObjectReader::new(path, value, problems) else {
        return parts;
    };
    let values_path = reader.path("values");
    parts.values = match reader.get("values") {
        None => {
            problems.push(&values_path, "missing_field", "is required");
            None
        }
        Some(value) => read_filter_values(&values_path, value, problems),
    };
    let properties_path = reader.path("properties");
    parts.model = match (reader.get("properties"), kind) {
        (None, _) => {
            problems.push(&properties_path, "missing_field", "is required");
            None
        }
        (Some(value), Some(kind)) => read_properties(kind, &properties_path, value, problems),
        (Some(_), None) => None,
    };
    parts.invoice_display_name =
        reader.optional_string("invoice_display_name", MAX_DISPLAY_NAME_CHARS, problems);
    reader.finish(problems);
    parts
}

/// `{key: [values]}`: 1 to [`MAX_FILTER_KEYS`] property keys, each with 1 to
/// [`MAX_FILTER_VALUES`] distinct strings.
fn read_filter_values(
    path: &str,
    value: &Value,
    problems: &mut Problems,
) -> Option<BTreeMap<String, Vec<String>>> {
    let Value::Object(map) = value else {
        problems.push(
            path,
            "invalid_type",
            format!("expected an object of value lists, got {}", type_name(value)),
        );
        return None;
    };
    if map.is_empty() {
        problems.push(path, "invalid_value", "must name at least one property");
        return None;
    }
    if map.len() > MAX_FILTER_KEYS {
        problems.push(path, "too_many", format!("at most {MAX_FILTER_KEYS} properties"));
        return None;
    }
    let before = problems.0.len();
    let mut out = BTreeMap::new();
    for (key, items) in map {
        let key_path = join(path, key);
        let Some(key) = parse_property_path(&key_path, &Value::String(key.clone()), problems)
        else {
            continue;
        };
        let Value::Array(items) = items else {
            problems.push(
                &key_path,
                "invalid_type",
                format!("expected an array, got {}", type_name(items)),
            );
            continue;
        };
        if items.is_empty() {
            problems.push(&key_path, "invalid_value", "must list at least one value");
            continue;
        }
        if items.len() > MAX_FILTER_VALUES {
            problems.push(&key_path, "too_many", format!("at most {MAX_FILTER_VALUES} values"));
            continue;
        }
        let values = distinct_strings(&key_path, items, MAX_VALUE_CHARS, problems);
        if let Some(i) = items.iter().position(|v| v.as_str() == Some(ALL_FILTER_VALUES)) {
            problems.push(
                index(&key_path, i),
                "invalid_value",
                format!("'{ALL_FILTER_VALUES}' is not supported: list the values"),
            );
        }
        out.insert(key, values);
    }
    (problems.0.len() == before).then_some(out)
}

/// Two filters matching exactly the same events would leave the later one empty forever.
fn check_distinct_filters(path: &str, parts: &[FilterParts], problems: &mut Problems) {
    let signatures: Vec<Option<BTreeMap<&str, BTreeSet<String>>>> = parts
        .iter()
        .map(|p| {
            p.values.as_ref().map(|values| {
                values
                    .iter()
                    .map(|(key, vals)| {
                        let canonical = vals
                            .iter()
                            .filter_map(|v| canonical_value(&Value::String(v.clone())))
                            .collect();
                        (key.as_str(), canonical)
                    })
                    .collect()
            })
        })
        .collect();
    for (j, later) in signatures.iter().enumerate() {
        let Some(later) = later else { continue };
        if let Some(i) = signatures[..j].iter().position(|earlier| earlier.as_ref() == Some(later))
        {
            problems.push(
                index(path, j),
                "duplicate_value",
                format!("matches the same events as filters[{i}], which counts them first"),
            );
        }
    }
}
