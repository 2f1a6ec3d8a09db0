//! Post-aggregation (semantics 4.8): unit conversion, its rounding, then the rounding function.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::metric::{ConversionRounding, MetricSpec, RoundingFunction};
use crate::usage::UsageError;

/// Post-aggregation: unit conversion (divide by `factor`), its rounding, then the rounding
/// function (semantics 4.8). The result is normalized (no trailing zeros, no `-0`), so equal
/// numbers have one text whichever backend computed them. A value that no longer fits a
/// [`Decimal`] (dividing by a factor below 1, rounding up past the largest value) is
/// [`UsageError::Overflow`].
pub fn finalize(spec: &MetricSpec, value: Decimal) -> Result<Decimal, UsageError> {
    let mut value = value;
    if let Some(conversion) = &spec.unit_conversion {
        value = value.checked_div(conversion.factor).ok_or(UsageError::Overflow)?;
        value = convert_rounding(value, conversion.rounding);
    }
    if let Some(rounding) = spec.rounding {
        value = round_at(value, rounding.function, rounding.precision)?;
    }
    Ok(value.normalize())
}

fn convert_rounding(value: Decimal, rounding: ConversionRounding) -> Decimal {
    match rounding {
        ConversionRounding::None => value,
        ConversionRounding::Up => value.ceil(),
        ConversionRounding::Down => value.floor(),
        ConversionRounding::Nearest => {
            value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        }
        ConversionRounding::NearestHalf => nearest_half(value),
        ConversionRounding::NearestDecile => {
            value.round_dp_with_strategy(1, RoundingStrategy::MidpointAwayFromZero)
        }
    }
}

/// To the nearest multiple of 0.5, half away from zero. Decided on the fractional part of the
/// magnitude rather than by doubling, since doubling a value with 29 digits would itself round.
fn nearest_half(value: Decimal) -> Decimal {
    let whole = value.abs().trunc();
    let fraction = value.abs().fract();
    let quarter = Decimal::new(25, 2);
    let three_quarters = Decimal::new(75, 2);
    let half = Decimal::new(5, 1);
    let magnitude = if fraction < quarter {
        whole
    } else if fraction < three_quarters {
        // `whole` has at most 28 integer digits when a fraction exists, so this cannot overflow.
        whole.checked_add(half).unwrap_or(whole)
    } else {
        whole.checked_add(Decimal::ONE).unwrap_or(whole)
    };
    if value.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

/// Rounds at `precision` decimal places; a negative precision rounds to tens (-1), hundreds
/// (-2) and so on.
fn round_at(
    value: Decimal,
    function: RoundingFunction,
    precision: i32,
) -> Result<Decimal, UsageError> {
    let strategy = match function {
        RoundingFunction::Round => RoundingStrategy::MidpointAwayFromZero,
        RoundingFunction::Ceil => RoundingStrategy::ToPositiveInfinity,
        RoundingFunction::Floor => RoundingStrategy::ToNegativeInfinity,
    };
    if let Ok(places) = u32::try_from(precision) {
        return Ok(value.round_dp_with_strategy(places, strategy));
    }
    // Negative precision: count in units of 10^k. Dividing the value itself by 10^k could drop
    // its last decimal places (a Decimal keeps 28), so the value is first made whole in the
    // same direction: ceil and floor commute with that, and for half away from zero the
    // midpoint (n + 1/2) × 10^k is itself whole, so truncation cannot move a value across it.
    let k = precision.unsigned_abs();
    let whole = match function {
        RoundingFunction::Round => value.trunc(),
        RoundingFunction::Ceil => value.ceil(),
        RoundingFunction::Floor => value.floor(),
    };
    let unit = 10i128
        .checked_pow(k)
        .and_then(|u| Decimal::try_from_i128_with_scale(u, 0).ok())
        .ok_or(UsageError::Overflow)?;
    // Exact: the whole number's digits are kept, only the decimal point moves k places.
    let mut in_units = whole;
    in_units.rescale(0);
    in_units.set_scale(k).map_err(|_| UsageError::Overflow)?;
    in_units.round_dp_with_strategy(0, strategy).checked_mul(unit).ok_or(UsageError::Overflow)
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
    fn nearest_half_on_both_sides_of_each_midpoint() {
        let cases = [
            ("1.24", "1"),
            ("1.25", "1.5"),
            ("1.74", "1.5"),
            ("1.75", "2"),
            ("-1.25", "-1.5"),
            ("-1.24", "-1"),
            ("-0.1", "0"),
            // Doubling 4.2499...9 (29 digits) would round it to 8.5 and then up to 9 / 2 = 4.5.
            ("4.2499999999999999999999999999", "4"),
        ];
        for (value, expected) in cases {
            assert_eq!(nearest_half(d(value)).normalize().to_string(), expected, "{value}");
        }
    }

    #[test]
    fn negative_precision_is_exact_for_tiny_and_huge_values() {
        let cases = [
            (RoundingFunction::Ceil, "0.0000000000000000000000000001", -2, Ok("100")),
            (RoundingFunction::Floor, "-0.0000000000000000000000000001", -1, Ok("-10")),
            (RoundingFunction::Round, "149.9999999999999999999999999", -2, Ok("100")),
            (RoundingFunction::Round, "150", -2, Ok("200")),
            (RoundingFunction::Round, "-150", -2, Ok("-200")),
            (
                RoundingFunction::Round,
                "44999999999999999999999999999",
                -28,
                Ok("40000000000000000000000000000"),
            ),
            (
                RoundingFunction::Round,
                "79228162514264337593543950335",
                -28,
                Err(UsageError::Overflow),
            ),
            (
                RoundingFunction::Ceil,
                "79228162514264337593543950335",
                -1,
                Err(UsageError::Overflow),
            ),
            (
                RoundingFunction::Floor,
                "79228162514264337593543950335",
                -1,
                Ok("79228162514264337593543950330"),
            ),
        ];
        for (function, value, precision, expected) in cases {
            let got = round_at(d(value), function, precision).map(|v| v.normalize());
            assert_eq!(got, expected.map(d), "{function:?} {value} at {precision}");
        }
    }
}
