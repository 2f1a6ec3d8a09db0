//! Events as rows of ClickHouse's `events` table, and back.
//!
//! Besides the event as sent (the properties as their JSON text, so every spelling reads back
//! as it came), a row holds the top-level properties as three parallel typed arrays, which is
//! what usage queries read instead of parsing JSON (18.16 has no `JSONExtract`):
//! `prop_keys` (every top-level key), `prop_present` (1 when the value is not null),
//! `prop_texts` (the canonical text of a scalar, semantics 4.5, for filters, segmentation,
//! grouping and `unique_count`) and `prop_nums` (the exact decimal, for `sum`, `min`, `max`
//! and `mean`). A query reads key `k` as `prop_nums[indexOf(prop_keys, 'k')]` (index 0, a
//! missing key, reads NULL).
//!
//! A decimal a `Decimal128(10)` column cannot hold with room to sum (more than 10 fractional
//! digits, or 10^18 and beyond) is left out of `prop_nums` and marks the row `wide`; a
//! pushed-down statement that meets a wide row is answered by the reference engine instead.
//! With every value below 10^18, a sum of fewer than 10^19 rows stays below 10^37 and cannot
//! overflow the column's 128 bits.

use chrono::{DateTime, TimeZone, Utc};
use odometer_core::engine::canonical_value;
use odometer_core::event::{Event, StoredEvent};
use odometer_core::input::decimal_value;
use odometer_store::StoreError;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::escape::{literal, tsv_field};

/// The columns an insert writes, in the order [`write_row`] writes them.
pub const INSERT_COLUMNS: &str = "org, code, customer, ts, sequence, transaction_id, \
     ingested_at, batch, properties, prop_keys, prop_present, prop_texts, prop_nums, wide";

/// The columns [`read_event`] reads, in its order.
pub const EVENT_COLUMNS: &str =
    "customer, transaction_id, code, ts, sequence, ingested_at, properties";
pub const EVENT_COLUMN_COUNT: usize = 7;

/// Fractional digits of `prop_nums`.
pub const SCALE: u32 = 10;

/// Magnitudes from here on do not go into `prop_nums` (see the module documentation).
fn limit() -> Decimal {
    Decimal::from(1_000_000_000_000_000_000u64)
}

/// The decimal as `prop_nums` holds it, or `None` when it does not fit.
pub fn storable(value: Decimal) -> Option<Decimal> {
    let value = value.normalize();
    (value.scale() <= SCALE && value.abs() < limit()).then_some(value)
}

/// One accepted event and where it stands.
#[derive(Debug, Clone, Copy)]
pub struct RowOf<'a> {
    pub org: &'a str,
    pub event: &'a Event,
    pub sequence: u64,
    pub ingested_at: i64,
    pub batch: u64,
}

/// Appends one `TabSeparated` row (ending with a newline).
pub fn write_row(row: RowOf<'_>, out: &mut String) -> Result<(), StoreError> {
    let e = row.event;
    let properties = serde_json::to_string(&e.properties)
        .map_err(|err| StoreError::Backend(format!("properties as JSON: {err}")))?;
    for text in [row.org, &e.code, &e.customer] {
        tsv_field(text, out);
        out.push('\t');
    }
    out.push_str(&format!("{}\t{}\t", e.timestamp.timestamp_micros(), row.sequence));
    tsv_field(&e.transaction_id, out);
    out.push_str(&format!("\t{}\t{}\t", row.ingested_at, row.batch));
    tsv_field(&properties, out);
    out.push('\t');
    let typed = TypedProperties::of(&e.properties);
    // Array fields are written in ClickHouse's quoted form, whose literals escape tabs and
    // newlines themselves; the field needs no further escaping.
    out.push_str(&typed.keys);
    out.push('\t');
    out.push_str(&typed.present);
    out.push('\t');
    out.push_str(&typed.texts);
    out.push('\t');
    out.push_str(&typed.numbers);
    out.push('\t');
    out.push(if typed.wide { '1' } else { '0' });
    out.push('\n');
    Ok(())
}

/// The typed arrays of one event, as array fields.
#[derive(Debug, PartialEq, Eq)]
struct TypedProperties {
    keys: String,
    present: String,
    texts: String,
    numbers: String,
    wide: bool,
}

impl TypedProperties {
    fn of(properties: &Map<String, Value>) -> Self {
        let mut keys = Vec::with_capacity(properties.len());
        let mut present = Vec::with_capacity(properties.len());
        let mut texts = Vec::with_capacity(properties.len());
        let mut numbers = Vec::with_capacity(properties.len());
        let mut wide = false;
        for (key, value) in properties {
            keys.push(literal(key));
            present.push(if value.is_null() { "0" } else { "1" });
            texts.push(canonical_value(value).map_or_else(|| "NULL".to_owned(), |t| literal(&t)));
            numbers.push(match decimal_value(value) {
                None => "NULL".to_owned(),
                Some(number) => match storable(number) {
                    Some(number) => number.to_string(),
                    None => {
                        wide = true;
                        "NULL".to_owned()
                    }
                },
            });
        }
        let array = |items: Vec<String>| format!("[{}]", items.join(","));
        Self {
            keys: array(keys),
            present: format!("[{}]", present.join(",")),
            texts: array(texts),
            numbers: array(numbers),
            wide,
        }
    }
}

fn instant(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| StoreError::Backend(format!("stored instant {micros} out of range")))
}

fn field(row: &[Option<String>], i: usize) -> Result<&str, StoreError> {
    row.get(i)
        .and_then(Option::as_deref)
        .ok_or_else(|| StoreError::Backend(format!("clickhouse: column {i} is missing or NULL")))
}

fn number<T: std::str::FromStr>(row: &[Option<String>], i: usize) -> Result<T, StoreError> {
    let text = field(row, i)?;
    text.parse().map_err(|_| StoreError::Backend(format!("clickhouse: column {i} is {text}")))
}

/// A stored event from a row of [`EVENT_COLUMNS`].
pub fn read_event(row: &[Option<String>]) -> Result<StoredEvent, StoreError> {
    let properties: Map<String, Value> = serde_json::from_str(field(row, 6)?)
        .map_err(|e| StoreError::Backend(format!("stored properties: {e}")))?;
    Ok(StoredEvent {
        event: Event {
            customer: field(row, 0)?.to_owned(),
            transaction_id: field(row, 1)?.to_owned(),
            code: field(row, 2)?.to_owned(),
            timestamp: instant(number(row, 3)?)?,
            properties,
        },
        sequence: number(row, 4)?,
        ingested_at: instant(number(row, 5)?)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn props(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn typed_arrays_hold_canonical_texts_and_exact_numbers() {
        let typed = TypedProperties::of(&props(
            r#"{"n": "2.50", "region": "e'u", "obj": {"a": 1}, "nothing": null, "flag": true,
                "tiny": 0.00000000001, "huge": 1000000000000000000, "neg": -3}"#,
        ));
        assert_eq!(typed.keys, r"['n','region','obj','nothing','flag','tiny','huge','neg']");
        assert_eq!(typed.present, "[1,1,1,0,1,1,1,1]");
        assert_eq!(
            typed.texts,
            r"['2.5','e\'u',NULL,NULL,'true','0.00000000001','1000000000000000000','-3']"
        );
        assert_eq!(typed.numbers, "[2.5,NULL,NULL,NULL,NULL,NULL,NULL,-3]");
        assert!(typed.wide, "tiny and huge do not fit");
        let plain = TypedProperties::of(&props(r#"{"n": 999999999999999999.9999999999}"#));
        assert_eq!(plain.numbers, "[999999999999999999.9999999999]");
        assert!(!plain.wide);
    }

    #[test]
    fn storable_decimals_have_room_to_sum() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(storable(d("1.50")), Some(d("1.5")));
        assert_eq!(storable(d("-0.0000000001")), Some(d("-0.0000000001")));
        assert_eq!(storable(d("0.00000000001")), None);
        assert_eq!(storable(d("999999999999999999")), Some(d("999999999999999999")));
        assert_eq!(storable(d("-1000000000000000000")), None);
    }

    #[test]
    fn rows_escape_every_text_field() {
        let event = Event {
            transaction_id: "tx\t1\n".into(),
            code: "api".into(),
            customer: "c\\1".into(),
            timestamp: instant(1_700_000_000_000_001).unwrap(),
            properties: props(r#"{"text": "a\tb"}"#),
        };
        let mut out = String::new();
        let row = RowOf { org: "org", event: &event, sequence: 7, ingested_at: 5, batch: 9 };
        write_row(row, &mut out).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
        assert_eq!(out.matches('\t').count(), 13, "14 fields: {out:?}");
        assert!(out.starts_with("org\tapi\tc\\\\1\t1700000000000001\t7\ttx\\t1\\n\t5\t9\t"));
    }
}
