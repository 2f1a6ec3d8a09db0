//! The expression parser and evaluator: any text; a parsed expression prints to text that
//! parses to the same expression, and evaluates on an event without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odometer_core::expression::{property_at_path, EventView, Expression, MAX_SOURCE_CHARS};
use serde_json::{json, Value};

struct Sample(Value);

impl EventView for Sample {
    fn code(&self) -> &str {
        "api_calls"
    }
    fn timestamp_micros(&self) -> i64 {
        1_772_323_200_000_000
    }
    fn property(&self, path: &str) -> Option<&Value> {
        property_at_path(&self.0, path)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(expression) = Expression::parse(text) else { return };
    let printed = expression.to_string();
    // The canonical spacing can make a source near the length limit longer than the limit;
    // any other printed form must parse back to the same tree.
    if printed.chars().count() <= MAX_SOURCE_CHARS {
        let reparsed = Expression::parse(&printed)
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
        assert_eq!(expression, reparsed, "{text:?} printed as {printed:?}");
    }
    let event =
        Sample(json!({"a": "2.5", "b": 0, "c": "-1e3", "n": {"x": 7}, "s": "text", "t": true}));
    let _ = expression.evaluate(&event);
    let _ = expression.evaluate_decimal(&event);
});
