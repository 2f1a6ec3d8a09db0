//! The timestamp parser: any text (as a JSON string) and any JSON number; an accepted instant
//! lies within the range ingestion accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odometer_core::intake::{
    parse_timestamp, EARLIEST_TIMESTAMP_SECONDS, END_OF_TIMESTAMPS_SECONDS,
};
use serde_json::Value;

fn check(value: &Value) {
    if let Ok(t) = parse_timestamp(value) {
        let seconds = t.timestamp();
        assert!(
            (EARLIEST_TIMESTAMP_SECONDS..END_OF_TIMESTAMPS_SECONDS).contains(&seconds),
            "{value} -> {t}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(&Value::String(text.to_owned()));
    if let Ok(number @ Value::Number(_)) = serde_json::from_str::<Value>(text) {
        check(&number);
    }
});
