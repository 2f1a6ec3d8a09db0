//! The event decoder: any bytes that are JSON are parsed as an event, by reference and by
//! value; both must agree, and an accepted event must satisfy what ingestion promises.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use odometer_core::intake::{parse_event, parse_event_owned};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let borrowed = parse_event(&value, now);
    let owned = parse_event_owned(value, now);
    assert_eq!(borrowed, owned.clone().map_err(|(rejection, _)| rejection));
    if let Ok(event) = owned {
        assert!(!event.transaction_id.is_empty() && !event.code.is_empty());
        assert!(!event.customer.is_empty());
    }
});
