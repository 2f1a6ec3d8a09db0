//! The aggregations of semantics 4.1-4.6 over the events feeding one group (or one total) of
//! one window, and the exact division that `mean` and `weighted_sum` end with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::reading::{Operation, PreparedEvent, Reading};
use super::Window;
use crate::metric::AggregationType;
use crate::usage::UsageError;

/// Significant digits a quotient is rounded to (semantics 4.3).
const QUOTIENT_DIGITS: u32 = 28;

/// The aggregate of `feeding` (in `(timestamp, sequence)` order) for the window `[from, to)`,
/// before unit conversion and rounding. `feeding` holds the window's events, plus the earlier
/// ones for recurring metrics; only `weighted_sum` tells them apart.
pub(super) fn aggregate(
    kind: AggregationType,
    window: Window,
    feeding: &[&PreparedEvent],
) -> Result<Option<Decimal>, UsageError> {
    let numbers = || {
        feeding.iter().filter_map(|e| match e.reading {
            Reading::Number(value) => Some(value),
            _ => None,
        })
    };
    Ok(match kind {
        AggregationType::Count => {
            let counted = feeding.iter().filter(|e| e.reading == Reading::Counted).count();
            Some(Decimal::from(counted))
        }
        AggregationType::Sum => Some(sum(numbers())?),
        AggregationType::Min => numbers().min(),
        AggregationType::Max => numbers().max(),
        AggregationType::Mean => {
            let count = numbers().count();
            if count == 0 {
                None
            } else {
                Some(divide_rounded(sum(numbers())?, count as u64)?)
            }
        }
        AggregationType::Latest => feeding
            .iter()
            .filter_map(|e| match e.reading {
                Reading::Number(value) => Some(((e.timestamp, e.sequence), value)),
                _ => None,
            })
            .max_by_key(|(order, _)| *order)
            .map(|(_, value)| value),
        AggregationType::UniqueCount => Some(unique_count(feeding)),
        AggregationType::WeightedSum => Some(weighted_sum(window, feeding)?),
        AggregationType::CustomSql => return Err(UsageError::UnsupportedAggregation),
    })
}

fn sum(mut values: impl Iterator<Item = Decimal>) -> Result<Decimal, UsageError> {
    values.try_fold(Decimal::ZERO, |acc, v| acc.checked_add(v).ok_or(UsageError::Overflow))
}

/// The values whose last operation, by `(timestamp, sequence)`, is `add`.
fn unique_count(feeding: &[&PreparedEvent]) -> Decimal {
    let mut ordered: Vec<&PreparedEvent> = feeding.to_vec();
    ordered.sort_by_key(|e| (e.timestamp, e.sequence));
    let mut state: BTreeMap<&str, Operation> = BTreeMap::new();
    for event in ordered {
        if let Reading::Distinct(value, operation) = &event.reading {
            state.insert(value, *operation);
        }
    }
    Decimal::from(state.values().filter(|op| **op == Operation::Add).count())
}

/// The time-weighted average level over `[from, to)`: changes before `from` set the starting
/// level, each change inside moves it at its timestamp. The integral is exact (level ×
/// microseconds); only the final division rounds.
fn weighted_sum((from, to): Window, feeding: &[&PreparedEvent]) -> Result<Decimal, UsageError> {
    let mut changes: Vec<(DateTime<Utc>, u64, Decimal)> = feeding
        .iter()
        .filter_map(|e| match e.reading {
            Reading::Number(change) => Some((e.timestamp, e.sequence, change)),
            _ => None,
        })
        .collect();
    changes.sort_by_key(|(at, sequence, _)| (*at, *sequence));

    let mut level = Decimal::ZERO;
    let mut integral = Decimal::ZERO;
    let mut since = from;
    for (at, _, change) in changes {
        if at > since {
            integral = add_area(integral, level, since, at)?;
            since = at;
        }
        level = level.checked_add(change).ok_or(UsageError::Overflow)?;
    }
    integral = add_area(integral, level, since, to)?;
    let length = micros(from, to)?;
    divide_rounded(integral, length)
}

/// `integral + level × (to - from)` in microseconds.
fn add_area(
    integral: Decimal,
    level: Decimal,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Decimal, UsageError> {
    let area = level.checked_mul(Decimal::from(micros(from, to)?)).ok_or(UsageError::Overflow)?;
    integral.checked_add(area).ok_or(UsageError::Overflow)
}

/// Microseconds from `from` to `to` (`to >= from`).
fn micros(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64, UsageError> {
    (to - from).num_microseconds().and_then(|m| u64::try_from(m).ok()).ok_or(UsageError::Overflow)
}

/// `dividend / divisor`, rounded half away from zero to 28 significant digits (and at most 28
/// decimal places), by long division on the exact integers, so the result never depends on
/// how a library rounds. A quotient that is exact at the dividend's own scale is returned as
/// is, whatever its digits (the mean of equal values is that value). Used by `mean`
/// (sum / count) and `weighted_sum` (integral / length). A zero divisor, or a result that does
/// not fit a [`Decimal`], is an overflow.
pub fn divide_rounded(dividend: Decimal, divisor: u64) -> Result<Decimal, UsageError> {
    if divisor == 0 {
        return Err(UsageError::Overflow);
    }
    let divisor = u128::from(divisor);
    let magnitude = dividend.mantissa().unsigned_abs();
    let mut scale = dividend.scale();
    let mut quotient = magnitude / divisor;
    // `remainder / divisor` is the part of the quotient below its last digit, in [0, 1).
    let mut remainder = magnitude % divisor;

    if remainder != 0 && digits(quotient) > QUOTIENT_DIGITS {
        // Only a 29-digit mantissa divided by a small divisor gets here: drop one digit.
        let last = quotient % 10;
        quotient /= 10;
        // The dropped part is (last + remainder / divisor) / 10, at or past half when
        // 2 × (last × divisor + remainder) >= 10 × divisor.
        let round_up = 2 * (last * divisor + remainder) >= 10 * divisor;
        quotient += u128::from(round_up);
        if scale > 0 {
            scale -= 1;
        } else {
            quotient *= 10;
        }
        remainder = 0;
    }
    while remainder != 0 && scale < Decimal::MAX_SCALE && digits(quotient) < QUOTIENT_DIGITS {
        remainder *= 10;
        quotient = quotient * 10 + remainder / divisor;
        remainder %= divisor;
        scale += 1;
    }
    if 2 * remainder >= divisor && remainder != 0 {
        quotient += 1;
    }
    let signed = i128::try_from(quotient).map_err(|_| UsageError::Overflow)?;
    let signed = if dividend.is_sign_negative() { -signed } else { signed };
    Decimal::try_from_i128_with_scale(signed, scale).map_err(|_| UsageError::Overflow)
}

/// The number of decimal digits of `n`; 0 for 0, since leading zeros are not significant.
fn digits(n: u128) -> u32 {
    n.checked_ilog10().map_or(0, |log| log + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn quotients_round_half_away_from_zero_at_28_significant_digits() {
        let cases = [
            // 10 / 4 terminates: exact.
            ("10", 4, "2.5"),
            // 10 / 3: 1 integer digit + 27 decimals = 28 significant digits.
            ("10", 3, "3.333333333333333333333333333"),
            // 2 / 3 = 0.666...: leading zeros are not significant, the 28th six rounds up.
            ("2", 3, "0.6666666666666666666666666667"),
            ("-2", 3, "-0.6666666666666666666666666667"),
            // 0.5 / 1 keeps its digits; 0.0000000000000000000000000001 / 3 is 0 at 28 places
            // (1/3 of the last place rounds down), / 2 is half a place: away from zero.
            ("0.5", 1, "0.5"),
            ("0.0000000000000000000000000001", 3, "0"),
            ("0.0000000000000000000000000001", 2, "0.0000000000000000000000000001"),
            // 1 / 6 = 0.1666...7 at 28 digits.
            ("1", 6, "0.1666666666666666666666666667"),
            // 29 digits / 2 = 39614081257132168796771975167.5: not exact at scale 0, and 29
            // integer digits; to 28 significant digits it is 3961408125713216879677197517 × 10.
            ("79228162514264337593543950335", 2, "39614081257132168796771975170"),
            // 29 digits / 3 = 2640938750475477919784798344.5, exact at the dividend's scale.
            ("7922816251426433759354395033.5", 3, "2640938750475477919784798344.5"),
        ];
        for (dividend, divisor, expected) in cases {
            let got = divide_rounded(d(dividend), divisor).unwrap();
            assert_eq!(got.normalize().to_string(), expected, "{dividend} / {divisor}");
        }
    }

    #[test]
    fn exact_quotients_keep_all_their_digits() {
        // 29 significant digits, but exact: the mean of one value is that value.
        assert_eq!(divide_rounded(Decimal::MAX, 1), Ok(Decimal::MAX));
        assert_eq!(divide_rounded(Decimal::MIN, 1), Ok(Decimal::MIN));
        let twice = d("-15845632502852867518708790066");
        assert_eq!(divide_rounded(twice, 2), Ok(d("-7922816251426433759354395033")));
    }

    #[test]
    fn a_zero_divisor_is_an_error_not_a_panic() {
        assert_eq!(divide_rounded(Decimal::ONE, 0), Err(UsageError::Overflow));
    }
}
