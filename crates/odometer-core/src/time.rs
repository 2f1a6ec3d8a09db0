//! Instants as the engine keeps them: UTC with microsecond precision (semantics 1.1).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The current instant, truncated to the microsecond.
pub fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

/// Drops sub-microsecond precision.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// RFC 3339 with exactly six fractional digits and `Z`, as the native API writes instants.
pub fn format_micros(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_six_digits_and_z() {
        let t =
            DateTime::parse_from_rfc3339("2026-01-05T10:00:00+02:00").unwrap().with_timezone(&Utc);
        assert_eq!(format_micros(&t), "2026-01-05T08:00:00.000000Z");
        let t = DateTime::parse_from_rfc3339("2026-01-05T10:00:00.1234569Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_micros(&truncate_to_micros(t)), "2026-01-05T10:00:00.123456Z");
    }
}
