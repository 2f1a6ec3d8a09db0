//! The arithmetic of each charge model: exact, checked, unrounded (the caller rounds the final
//! amount once). The rules are documented on the property types in [`super`].

use rust_decimal::Decimal;

use super::{
    ChargeInput, PackageProperties, PercentageProperties, PriceDetails, PriceRange, PricingError,
    StandardProperties, TierAmount,
};

type Outcome = Result<(Decimal, PriceDetails), PricingError>;

fn add(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_add(b).ok_or(PricingError::Overflow)
}

fn sub(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_sub(b).ok_or(PricingError::Overflow)
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, PricingError> {
    a.checked_mul(b).ok_or(PricingError::Overflow)
}

/// `value × rate / 100`, multiplying first so the product stays exact.
fn percent_of(value: Decimal, rate: Decimal) -> Result<Decimal, PricingError> {
    mul(value, rate)?.checked_div(Decimal::ONE_HUNDRED).ok_or(PricingError::Overflow)
}

pub(super) fn standard(p: &StandardProperties, units: Decimal) -> Outcome {
    Ok((mul(units, p.amount)?, PriceDetails::Standard))
}

fn tier_amount(
    index: usize,
    range: &PriceRange,
    units: Decimal,
) -> Result<TierAmount, PricingError> {
    Ok(TierAmount {
        index,
        from_value: range.from_value,
        to_value: range.to_value,
        units,
        per_unit_amount: range.per_unit_amount,
        flat_amount: range.flat_amount,
        amount: add(mul(units, range.per_unit_amount)?, range.flat_amount)?,
    })
}

pub(super) fn graduated(ranges: &[PriceRange], units: Decimal) -> Outcome {
    let units = units.max(Decimal::ZERO);
    let mut tiers = Vec::new();
    let mut total = Decimal::ZERO;
    // The units below this tier: the previous tier's `to_value`.
    let mut lower = Decimal::ZERO;
    if !units.is_zero() {
        for (index, range) in ranges.iter().enumerate() {
            let reaches_beyond = range.to_value.filter(|upper| *upper < units);
            let top = reaches_beyond.unwrap_or(units);
            let tier = tier_amount(index, range, sub(top, lower)?.max(Decimal::ZERO))?;
            total = add(total, tier.amount)?;
            tiers.push(tier);
            match reaches_beyond {
                Some(upper) => lower = upper,
                None => break,
            }
        }
    }
    Ok((total, PriceDetails::Tiers { tiers }))
}

pub(super) fn volume(ranges: &[PriceRange], units: Decimal) -> Outcome {
    let units = units.max(Decimal::ZERO);
    if units.is_zero() || ranges.is_empty() {
        return Ok((Decimal::ZERO, PriceDetails::Tiers { tiers: Vec::new() }));
    }
    // Valid ranges end open, so some tier holds the units; the last is the fallback.
    let index = ranges
        .iter()
        .position(|r| r.to_value.is_none_or(|upper| units <= upper))
        .unwrap_or(ranges.len() - 1);
    let tier = tier_amount(index, &ranges[index], units)?;
    Ok((tier.amount, PriceDetails::Tiers { tiers: vec![tier] }))
}

pub(super) fn package(p: &PackageProperties, units: Decimal) -> Outcome {
    let paid_units = sub(units, Decimal::from(p.free_units))?.max(Decimal::ZERO);
    let packages = packages_started(paid_units, Decimal::from(p.package_size.max(1)))?;
    Ok((mul(packages, p.amount)?, PriceDetails::Package { paid_units, packages }))
}

/// `ceil(units / size)` exactly: a division rounded at 28 digits could hide a remainder, so the
/// quotient is checked by multiplying back.
fn packages_started(units: Decimal, size: Decimal) -> Result<Decimal, PricingError> {
    let mut whole = units.checked_div(size).ok_or(PricingError::Overflow)?.floor();
    while mul(whole, size)? > units {
        whole -= Decimal::ONE;
    }
    while mul(add(whole, Decimal::ONE)?, size)? <= units {
        whole += Decimal::ONE;
    }
    if mul(whole, size)? == units {
        Ok(whole)
    } else {
        add(whole, Decimal::ONE)
    }
}

/// What is left of a percentage charge's free units while events are walked in order.
struct Allowance {
    active: bool,
    events_left: Option<u64>,
    amount_left: Option<Decimal>,
}

impl Allowance {
    fn new(p: &PercentageProperties) -> Self {
        Allowance {
            active: p.free_units_per_events.is_some_and(|n| n > 0)
                || p.free_units_per_total_aggregation.is_some_and(|a| a > Decimal::ZERO),
            events_left: p.free_units_per_events,
            amount_left: p.free_units_per_total_aggregation,
        }
    }

    /// The part of the next event's `value` (at least 0) that is free, and whether all of it
    /// is (the event then pays nothing, fixed fee included).
    fn take(&mut self, value: Decimal) -> (Decimal, bool) {
        if !self.active {
            return (Decimal::ZERO, false);
        }
        if let Some(left) = &mut self.events_left {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.active = false;
            }
        }
        let Some(left) = &mut self.amount_left else {
            return (value, true);
        };
        if value <= *left {
            *left -= value;
            if left.is_zero() {
                self.active = false;
            }
            (value, true)
        } else {
            let part = *left;
            *left = Decimal::ZERO;
            self.active = false;
            (part, false)
        }
    }
}

pub(super) fn percentage(p: &PercentageProperties, input: &ChargeInput) -> Outcome {
    let values = match &input.event_values {
        Some(values) => {
            if u64::try_from(values.len()).ok() != Some(input.events_count) {
                return Err(PricingError::EventCountMismatch {
                    values: values.len(),
                    events: input.events_count,
                });
            }
            values.as_slice()
        }
        None if p.needs_event_values() => return Err(PricingError::EventValuesRequired),
        None => &[],
    };
    let fixed = p.fixed_amount.unwrap_or(Decimal::ZERO);
    let mut allowance = Allowance::new(p);
    let mut free_units = Decimal::ZERO;
    let mut free_events: u64 = 0;
    let mut rate_amount = Decimal::ZERO;
    let mut bounded_total = Decimal::ZERO;
    let per_transaction = p.has_transaction_bounds();

    for value in values {
        let value = (*value).max(Decimal::ZERO);
        let (free_part, entirely_free) = allowance.take(value);
        free_units = add(free_units, free_part)?;
        if entirely_free {
            free_events += 1;
            continue;
        }
        if per_transaction {
            let event_rate = percent_of(sub(value, free_part)?, p.rate)?;
            rate_amount = add(rate_amount, event_rate)?;
            let mut fee = add(event_rate, fixed)?;
            if let Some(min) = p.per_transaction_min_amount {
                fee = fee.max(min);
            }
            if let Some(max) = p.per_transaction_max_amount {
                fee = fee.min(max);
            }
            bounded_total = add(bounded_total, fee)?;
        }
    }

    let paying_events = Decimal::from(input.events_count.saturating_sub(free_events));
    let fixed_amount = mul(paying_events, fixed)?;
    let amount = if per_transaction {
        bounded_total
    } else {
        rate_amount = percent_of(sub(input.units, free_units)?.max(Decimal::ZERO), p.rate)?;
        add(rate_amount, fixed_amount)?
    };
    Ok((
        amount,
        PriceDetails::Percentage {
            free_events,
            free_units,
            rate_amount,
            fixed_amount,
            per_transaction,
        },
    ))
}
