//! Metric definitions as every surface reads them: the native definition parser, Lago's
//! billable metric and Meteroid's metric create and update bodies mapped to the native
//! definition (Zenskar's aggregates are SQL metrics: the `sql_metric` target). Any JSON is
//! mapped or refused with a 4xx-shaped error, never a panic; a mapped definition either
//! parses or is refused with problems.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odometer_api::fuzzing::{
    lago_metric_definition, meteroid_create_definition, meteroid_update_patch,
};
use odometer_core::id::MetricId;
use odometer_core::metric_input::parse_metric_spec;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let _ = parse_metric_spec(&value);
    if let Value::Object(doc) = &value {
        if let Ok(definition) = lago_metric_definition(doc) {
            let _ = parse_metric_spec(&definition);
        }
    }
    if let Ok(definition) = meteroid_create_definition(&value, MetricId::new()) {
        let _ = parse_metric_spec(&definition);
    }
    let _ = meteroid_update_patch(&value);
});
