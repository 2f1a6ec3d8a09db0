//! The SQL-metric validator: any text is accepted or refused with a position, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odometer_core::sql_metric::parse_sql_query;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_sql_query(text);
});
