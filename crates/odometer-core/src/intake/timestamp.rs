//! Input timestamps (semantics 1.2): an RFC 3339 string with any offset, or Unix seconds.
//!
//! Accepted forms, all turned into a UTC instant with microsecond precision (semantics 1.1):
//!
//! * An RFC 3339 string with any offset (`2026-01-05T10:00:00+02:00`, `...Z`). As RFC 3339
//!   allows, `T`/`Z` may be lowercase and the date and time may be separated by a space.
//!   Fractional seconds past the microsecond are truncated: RFC 3339 sets no limit on their
//!   number and common producers (Go's `RFC3339Nano`) write nanoseconds, so refusing them would
//!   reject well-formed input for a precision the engine does not keep anyway. A leap second
//!   (`23:59:60`) becomes the first instant of the next minute.
//! * Unix seconds as a JSON number or a string of digits, with at most 6 fractional digits
//!   (`1700000000`, `1700000000.25`, `"1700000000.123456"`). More fractional digits, an
//!   exponent (`1.7e9`), a sign, or any whitespace make it invalid: the spec caps Unix seconds
//!   at microseconds, and a number that needs more digits is not an exact instant.
//!
//! Every accepted instant lies in `[1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z)`: usage before
//! the Unix epoch is a mistake in practice (negative Unix seconds are rejected for the same
//! reason), and every event store (ClickHouse's `DateTime64` ends in 2299) can hold that range.
//! The upper bound is also far beyond what the future-timestamp check of semantics 2.3 lets
//! through (its tolerance is at most `u32::MAX` seconds, about 136 years).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::input::type_name;

/// The earliest accepted instant, in Unix seconds: 1970-01-01T00:00:00Z.
pub const EARLIEST_TIMESTAMP_SECONDS: i64 = 0;

/// The first instant no longer accepted, in Unix seconds: 2200-01-01T00:00:00Z.
pub const END_OF_TIMESTAMPS_SECONDS: i64 = 7_258_118_400;

/// Unix seconds carry at most this many fractional digits (microseconds).
const MAX_FRACTION_DIGITS: usize = 6;

/// How many characters of an offending string a message quotes.
const PREVIEW_CHARS: usize = 40;

/// Why a value is not an input timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidTimestamp {
    /// For people: lowercase, no trailing period, without the field's name (the caller knows
    /// which field it read).
    pub message: String,
}

impl InvalidTimestamp {
    /// The machine code every dialect reports.
    pub fn code(&self) -> &'static str {
        "invalid_timestamp"
    }

    fn new(message: String) -> Self {
        Self { message }
    }
}

/// Parses an input timestamp (semantics 1.2; the module documentation lists the forms).
/// A missing or null timestamp means "now", which is the caller's to decide: `null` here is
/// invalid like any other non-timestamp.
pub fn parse_timestamp(value: &Value) -> Result<DateTime<Utc>, InvalidTimestamp> {
    match value {
        Value::Number(number) => {
            // With serde_json's `arbitrary_precision`, this is the number's original text, so
            // `1700000000.25` never passes through a binary float.
            let text = number.to_string();
            parse_unix_seconds(&text).map_err(|why| why.explain(&text))
        }
        Value::String(text) if looks_like_unix_seconds(text) => {
            parse_unix_seconds(text).map_err(|why| why.explain(&quoted(text)))
        }
        Value::String(text) => parse_rfc3339(text),
        other => Err(InvalidTimestamp::new(format!(
            "expected an RFC 3339 string or Unix seconds, got {}",
            type_name(other)
        ))),
    }
}

/// Strings that can only be meant as Unix seconds take that path, so their error says what
/// is wrong with them as Unix seconds rather than as RFC 3339.
fn looks_like_unix_seconds(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
}

fn parse_rfc3339(text: &str) -> Result<DateTime<Utc>, InvalidTimestamp> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|_| {
        InvalidTimestamp::new(format!(
            "{} is neither an RFC 3339 timestamp nor Unix seconds",
            quoted(text)
        ))
    })?;
    // `timestamp_micros` truncates past the microsecond and counts a leap second's extra
    // nanoseconds into the next second, so rebuilding from it normalizes both.
    in_range(parsed.timestamp_micros()).map_err(|why| why.explain(&quoted(text)))
}

/// Why a text is not accepted as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unaccepted {
    Malformed,
    OutOfRange,
}

impl Unaccepted {
    fn explain(self, shown: &str) -> InvalidTimestamp {
        InvalidTimestamp::new(match self {
            Self::Malformed => format!(
                "{shown} is not Unix seconds (digits with at most {MAX_FRACTION_DIGITS} \
                 fractional digits, no sign or exponent)"
            ),
            Self::OutOfRange => format!(
                "{shown} is outside the accepted range, from 1970-01-01T00:00:00Z to before \
                 2200-01-01T00:00:00Z"
            ),
        })
    }
}

/// `digits` or `digits.digits` with 1 to 6 fractional digits; a leading `-` on otherwise
/// well-formed seconds is a time before 1970, so it is reported as out of range.
fn parse_unix_seconds(text: &str) -> Result<DateTime<Utc>, Unaccepted> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (unsigned, ""),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok =
        !unsigned.contains('.') || (all_digits(fraction) && fraction.len() <= MAX_FRACTION_DIGITS);
    if !all_digits(whole) || !fraction_ok {
        return Err(Unaccepted::Malformed);
    }
    if negative {
        return Err(Unaccepted::OutOfRange);
    }
    // Only digits are left, so a failure here is a number too large for an i64.
    let seconds: i64 = whole.parse().map_err(|_| Unaccepted::OutOfRange)?;
    let micros_text = format!("{fraction:0<MAX_FRACTION_DIGITS$}");
    let micros: i64 = micros_text.parse().map_err(|_| Unaccepted::Malformed)?;
    let total = seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(micros))
        .ok_or(Unaccepted::OutOfRange)?;
    in_range(total)
}

fn in_range(micros: i64) -> Result<DateTime<Utc>, Unaccepted> {
    let earliest = EARLIEST_TIMESTAMP_SECONDS * 1_000_000;
    let end = END_OF_TIMESTAMPS_SECONDS * 1_000_000;
    if !(earliest..end).contains(&micros) {
        return Err(Unaccepted::OutOfRange);
    }
    DateTime::from_timestamp_micros(micros).ok_or(Unaccepted::OutOfRange)
}

fn quoted(text: &str) -> String {
    let mut shown: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().nth(PREVIEW_CHARS).is_some() {
        shown.push_str("...");
    }
    format!("'{shown}'")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_grammar() {
        let cases = [
            ("0", Ok(0)),
            ("1700000000", Ok(1_700_000_000_000_000)),
            ("1700000000.25", Ok(1_700_000_000_250_000)),
            ("1700000000.000001", Ok(1_700_000_000_000_001)),
            ("01700000000", Ok(1_700_000_000_000_000)),
            ("1700000000.1234567", Err(Unaccepted::Malformed)),
            ("1700000000.", Err(Unaccepted::Malformed)),
            (".5", Err(Unaccepted::Malformed)),
            ("1.7e9", Err(Unaccepted::Malformed)),
            ("+1700000000", Err(Unaccepted::Malformed)),
            ("1-2", Err(Unaccepted::Malformed)),
            ("", Err(Unaccepted::Malformed)),
            ("-1", Err(Unaccepted::OutOfRange)),
            ("7258118400", Err(Unaccepted::OutOfRange)),
            ("99999999999999999999999", Err(Unaccepted::OutOfRange)),
        ];
        for (text, expected) in cases {
            let got = parse_unix_seconds(text).map(|t| t.timestamp_micros());
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn long_strings_are_shortened_in_messages() {
        let long = "x".repeat(100);
        let err = parse_timestamp(&Value::String(long)).unwrap_err();
        assert!(err.message.starts_with(&format!("'{}...'", "x".repeat(40))), "{err}");
    }
}
