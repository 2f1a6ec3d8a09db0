//! Currencies' minor units (ISO 4217): how many decimal places an amount is rounded to.

/// ISO 4217 currencies whose minor unit is not 2 decimal places, with it.
const NOT_TWO: [(&str, u32); 26] = [
    ("BHD", 3),
    ("BIF", 0),
    ("CLF", 4),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("UYI", 0),
    ("UYW", 4),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

/// The decimal places of `currency`'s minor unit (`JPY` 0, `USD` 2, `KWD` 3), by its ISO 4217
/// code in any case. Codes not listed as different, known or not, have 2: amounts are in
/// cents unless the currency says otherwise.
pub fn minor_units(currency: &str) -> u32 {
    NOT_TWO
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(currency))
        .map_or(2, |(_, places)| *places)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_follow_iso_4217() {
        let cases = [("USD", 2), ("eur", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)];
        for (code, places) in cases {
            assert_eq!(minor_units(code), places, "{code}");
        }
        assert_eq!(minor_units("XYZ"), 2);
    }

    #[test]
    fn table_is_sorted_and_upper_case() {
        assert!(NOT_TWO.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(NOT_TWO
            .iter()
            .all(|(c, _)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }
}
