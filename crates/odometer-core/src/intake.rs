//! Event intake (semantics 1.2 and 2): parsing an incoming event, validating it against the
//! catalog, its identity and content, and the reference event log stores are tested against.
//!
//! An event goes through three steps, each a pure function of what the caller looked up:
//! 1. [`parse_event`]: structure only (required fields, lengths, types, timestamp, size of the
//!    properties, unknown members), giving an [`Event`];
//! 2. [`validate_event`]: the catalog rules of semantics 2.3, given an [`IntakeContext`];
//!    [`needs_customer`] then says whether the caller must create the customer;
//! 3. a store appends the batch, deduplicating by key and content ([`event_fingerprint`],
//!    [`content_hash`]) as [`ReferenceEventLog`] does.
//!
//! Each rejection is one [`EventRejection`]; when an event has several structural problems,
//! the code is the first one's and the message lists them all, so a client can fix the event
//! in one round trip.

mod identity;
mod reference_log;
mod timestamp;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

pub use self::identity::{content_differences, content_hash, event_fingerprint};
pub use self::reference_log::{batch_rejection, conflict_rejection, ReferenceEventLog};
pub use self::timestamp::{
    parse_timestamp, InvalidTimestamp, EARLIEST_TIMESTAMP_SECONDS, END_OF_TIMESTAMPS_SECONDS,
};
pub use crate::event::{Event, EventOutcome, EventRejection, StoredEvent};

use crate::customer::OrganizationSettings;
use crate::expression::json_to_decimal;
use crate::input::{type_name, ObjectReader};
use crate::metric::{AggregationType, MetricSpec};
use crate::problem::Problems;
use crate::time::{format_micros, truncate_to_micros};

/// Longest `transaction_id`, in characters (semantics 2.1).
pub const MAX_TRANSACTION_ID_CHARS: usize = 256;

/// Longest event `code`: the same as a metric's `event_code`, since a longer code could never
/// be read by any metric.
pub const MAX_EVENT_CODE_CHARS: usize = crate::metric_input::MAX_CODE_CHARS;

/// Longest `customer` (a customer's external id), in characters.
pub const MAX_CUSTOMER_CHARS: usize = 256;

/// Largest `properties`, in bytes of compact JSON (semantics 2.1: 64 KiB).
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;

/// How many characters of an offending value a message quotes.
const PREVIEW_CHARS: usize = 40;

/// Parses one incoming event (`{"transaction_id", "code", "customer", "timestamp",
/// "properties"}`); a missing or null `timestamp` is `now`, missing or null `properties` is
/// empty. Checks structure only; see [`validate_event`] for the catalog rules.
///
/// Codes: `missing_field` (absent or null required member), `invalid_type`, `invalid_value`
/// (empty string or control characters), `too_long`, `invalid_timestamp`,
/// `properties_too_large`, `unknown_field`.
pub fn parse_event(value: &Value, now: DateTime<Utc>) -> Result<Event, EventRejection> {
    parse_event_parts(value, None, now)
}

/// [`parse_event`] of a value the caller gives up: the properties are moved out of it instead
/// of copied (the ingest path parses every event of a request this way). A rejection comes
/// with the event's `transaction_id` when it had a readable one, for the caller's answer.
pub fn parse_event_owned(
    mut value: Value,
    now: DateTime<Utc>,
) -> Result<Event, (EventRejection, Option<String>)> {
    let taken = value.as_object_mut().and_then(|o| o.get_mut("properties")).map(Value::take);
    parse_event_parts(&value, taken, now).map_err(|rejection| {
        let id = value.get("transaction_id").and_then(Value::as_str).map(str::to_owned);
        (rejection, id)
    })
}

/// The checks of [`parse_event`]; `taken` is the `properties` member when the caller moved it
/// out of `value` (which then holds null there).
fn parse_event_parts(
    value: &Value,
    taken: Option<Value>,
    now: DateTime<Utc>,
) -> Result<Event, EventRejection> {
    let mut problems = Problems::new();
    let Some(mut reader) = ObjectReader::new("", value, &mut problems) else {
        return Err(rejection(&problems));
    };
    let transaction_id =
        reader.required_string("transaction_id", MAX_TRANSACTION_ID_CHARS, &mut problems);
    let code = reader.required_string("code", MAX_EVENT_CODE_CHARS, &mut problems);
    let customer = reader.required_string("customer", MAX_CUSTOMER_CHARS, &mut problems);
    let timestamp = match reader.get("timestamp") {
        None => Some(truncate_to_micros(now)),
        Some(value) => match parse_timestamp(value) {
            Ok(timestamp) => Some(timestamp),
            Err(invalid) => {
                problems.push("timestamp", invalid.code(), invalid.message);
                None
            }
        },
    };
    let present = reader.get("properties");
    let properties = match taken {
        Some(held) => properties_of(held, &mut problems),
        None => match present {
            Some(Value::Object(map)) if fits_in_properties(map) => Some(map.clone()),
            Some(Value::Object(_)) => {
                too_large(&mut problems);
                None
            }
            Some(other) => properties_of(other.clone(), &mut problems),
            None => Some(Map::new()),
        },
    };
    reader.finish(&mut problems);
    match (transaction_id, code, customer, timestamp, properties) {
        (Some(transaction_id), Some(code), Some(customer), Some(timestamp), Some(properties))
            if problems.is_empty() =>
        {
            Ok(Event { transaction_id, code, customer, timestamp, properties })
        }
        _ => Err(rejection(&problems)),
    }
}

/// The `properties` member's map, or the problem with it (absent or null is empty).
fn properties_of(value: Value, problems: &mut Problems) -> Option<Map<String, Value>> {
    match value {
        Value::Null => Some(Map::new()),
        Value::Object(map) if fits_in_properties(&map) => Some(map),
        Value::Object(_) => {
            too_large(problems);
            None
        }
        other => {
            problems.push(
                "properties",
                "invalid_type",
                format!("expected an object, got {}", type_name(&other)),
            );
            None
        }
    }
}

fn too_large(problems: &mut Problems) {
    problems.push(
        "properties",
        "properties_too_large",
        format!("must be at most {MAX_PROPERTIES_BYTES} bytes of JSON"),
    );
}

/// One rejection for all the problems: the first one's code, every message with its field.
fn rejection(problems: &Problems) -> EventRejection {
    let message = problems
        .iter()
        .map(|p| {
            if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    EventRejection::new(problems.first_code(), message)
}

/// Whether the compact JSON of `properties` is at most [`MAX_PROPERTIES_BYTES`] long. An
/// upper bound that needs no serialization settles almost every event; only when it is past
/// the limit is the document serialized, and the count stops there.
fn fits_in_properties(properties: &Map<String, Value>) -> bool {
    let bound = properties
        .iter()
        .map(|(k, v)| string_bound(k).saturating_add(json_bound(v)).saturating_add(2))
        .fold(2usize, usize::saturating_add);
    bound <= MAX_PROPERTIES_BYTES || serialized_fits(properties)
}

/// At most how long a string is in JSON: quotes, and every character escaped as `\uXXXX`.
fn string_bound(text: &str) -> usize {
    text.len().saturating_mul(6).saturating_add(2)
}

/// At most how long `value` is as compact JSON.
fn json_bound(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        // A number's text is as it was sent (exact numbers keep their spelling).
        Value::Number(n) => {
            struct Count(usize);
            impl std::fmt::Write for Count {
                fn write_str(&mut self, s: &str) -> std::fmt::Result {
                    self.0 += s.len();
                    Ok(())
                }
            }
            let mut count = Count(0);
            let _ = std::fmt::Write::write_fmt(&mut count, format_args!("{n}"));
            count.0
        }
        Value::String(text) => string_bound(text),
        Value::Array(items) => items
            .iter()
            .map(|v| json_bound(v).saturating_add(1))
            .fold(2usize, usize::saturating_add),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| string_bound(k).saturating_add(json_bound(v)).saturating_add(2))
            .fold(2usize, usize::saturating_add),
    }
}

/// The exact check: serializes, stopping past the limit.
fn serialized_fits(properties: &Map<String, Value>) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.checked_sub(buf.len()).ok_or(std::io::ErrorKind::FileTooLarge)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(MAX_PROPERTIES_BYTES), properties).is_ok()
}

/// What the caller looked up for validating one event (semantics 2.3).
#[derive(Debug, Clone, Copy)]
pub struct IntakeContext<'a> {
    /// The organization's metrics that are not deleted (active or archived), at least those
    /// reading the event's code. Metrics with another `event_code` are ignored, so a batch can
    /// pass all of the organization's metrics for every event.
    pub metrics: &'a [&'a MetricSpec],
    /// Whether a customer with the event's `customer` external id exists.
    pub customer_exists: bool,
    pub settings: &'a OrganizationSettings,
    /// The instant the event arrived.
    pub now: DateTime<Utc>,
}

/// Checks an event against the catalog (semantics 2.3), in the spec's order: `unknown_code`,
/// `unknown_customer`, `invalid_value`, `timestamp_in_future`.
///
/// * No metric reads the code: `unknown_code`, unless `accept_unknown_codes`.
/// * The customer does not exist: `unknown_customer`, unless `create_customers_on_first_sight`
///   (then [`needs_customer`] says to create it).
/// * A metric reading the code aggregates a property's value (`sum`, `min`, `max`, `mean`,
///   `latest`, `weighted_sum` with a `field` and no `expression`) and that property is present,
///   not null, and not a decimal (semantics 2.4): `invalid_value`, naming the metric and the
///   property. Filters do not exempt an event: they can change in a later revision (6.3), which
///   may then count it. With several such metrics, the one with the smallest code is named, so
///   every store answers the same message. An absent or null property is fine: the metric
///   skips the event and counts it under `events_skipped`.
/// * The timestamp is more than `future_timestamp_tolerance_seconds` after `now`:
///   `timestamp_in_future` (exactly at the tolerance is accepted).
pub fn validate_event(event: &Event, ctx: &IntakeContext<'_>) -> Result<(), EventRejection> {
    let readers: Vec<&MetricSpec> =
        ctx.metrics.iter().copied().filter(|metric| metric.event_code == event.code).collect();
    if readers.is_empty() && !ctx.settings.accept_unknown_codes {
        return Err(EventRejection::new(
            "unknown_code",
            format!("code: no metric reads the event code '{}'", preview(&event.code)),
        ));
    }
    if !ctx.customer_exists && !ctx.settings.create_customers_on_first_sight {
        return Err(EventRejection::new(
            "unknown_customer",
            format!("customer: no customer has the external id '{}'", preview(&event.customer)),
        ));
    }
    let mut invalid: Vec<(&MetricSpec, &str, &Value)> = readers
        .iter()
        .filter_map(|metric| {
            let field = numeric_field(metric)?;
            let value = event.property(field)?;
            let is_invalid = !value.is_null() && json_to_decimal(value).is_none();
            is_invalid.then_some((*metric, field, value))
        })
        .collect();
    invalid.sort_by(|a, b| a.0.code.cmp(&b.0.code));
    if let Some((metric, field, value)) = invalid.first() {
        return Err(EventRejection::new(
            "invalid_value",
            format!(
                "properties.{field}: metric '{}' ({}) needs a decimal number, got {}",
                metric.code,
                metric.aggregation.kind.as_str(),
                describe_non_decimal(value)
            ),
        ));
    }
    let tolerance = TimeDelta::seconds(i64::from(ctx.settings.future_timestamp_tolerance_seconds));
    // `now` is a real clock reading, so the sum cannot overflow; if it did, nothing is too far.
    if let Some(latest) = ctx.now.checked_add_signed(tolerance) {
        if event.timestamp > latest {
            return Err(EventRejection::new(
                "timestamp_in_future",
                format!(
                    "timestamp: {} is more than {} seconds after the time of arrival ({})",
                    format_micros(&event.timestamp),
                    ctx.settings.future_timestamp_tolerance_seconds,
                    format_micros(&ctx.now)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the caller must create the event's customer before storing it: the customer does
/// not exist and the organization creates customers on first sight. Ask only for an event that
/// passed [`validate_event`] (a rejected event creates nothing) and, in an atomic batch, create
/// only when the batch is stored. Later events of the same batch then see the customer as
/// existing.
pub fn needs_customer(ctx: &IntakeContext<'_>) -> bool {
    !ctx.customer_exists && ctx.settings.create_customers_on_first_sight
}

/// The property a metric needs to be a decimal in every event it reads, if any. `count` and
/// `custom_sql` read no value, `unique_count` counts any value (strings too), and an
/// expression decides for itself what it reads (an event it cannot evaluate is skipped).
fn numeric_field(metric: &MetricSpec) -> Option<&str> {
    let aggregation = &metric.aggregation;
    let reads_a_number = matches!(
        aggregation.kind,
        AggregationType::Sum
            | AggregationType::Min
            | AggregationType::Max
            | AggregationType::Mean
            | AggregationType::Latest
            | AggregationType::WeightedSum
    );
    if !reads_a_number || aggregation.expression.is_some() {
        return None;
    }
    aggregation.field.as_deref()
}

fn describe_non_decimal(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string '{}'", preview(text)),
        Value::Number(number) => {
            format!("{}, which does not fit in 28 significant digits", preview(&number.to_string()))
        }
        other => type_name(other).to_owned(),
    }
}

fn preview(text: &str) -> String {
    let mut shown: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().nth(PREVIEW_CHARS).is_some() {
        shown.push_str("...");
    }
    shown
}
