//! The reference usage engine (semantics sections 1, 3, 4 and 5): usage of one customer for one
//! metric revision, computed from that customer's events in plain, exact Rust.
//!
//! Every storage backend is tested against this engine, so it favours being obviously right
//! over being fast: each window is aggregated from its events afresh, with [`Decimal`]
//! arithmetic throughout (never floats) and every overflow reported as
//! [`UsageError::Overflow`] rather than wrapped or saturated.
//!
//! # Which events count
//! `events` holds one customer's events of any code. An event counts for a metric when its
//! `code` is the metric's `event_code`, it was ingested at or before `as_of` (when the query
//! sets one; the caller passes the revision that was current then), and it passes every filter
//! of the metric:
//! - `eq` / `in`: the property is present and its [`canonical_value`] equals the canonical value
//!   of one of the filter's values;
//! - `ne` / `not_in`: the property is absent, or has no canonical value (null, object, array),
//!   or its canonical value differs from all of them;
//! - `exists`: present and not null; `not_exists`: absent or null.
//!
//! # Canonical values
//! Grouping, segmentation, filters and `unique_count` compare properties by
//! [`canonical_value`]: numbers, and strings holding a decimal (by
//! [`crate::input::parse_decimal`]), by their exact value in normalized text (`1`, `1.0`, `"1"`
//! and `"1e0"` are all `"1"`); other strings as they are; booleans as `"true"`/`"false"`; null,
//! objects and arrays have none. So a segmentation value `"1"` matches a property `1`, and a
//! string `"true"` equals the boolean.
//!
//! # Windows
//! See [`windows`]: calendar units of the query's zone, clipped to `[from, to)`, at most
//! [`MAX_WINDOWS`]. Minute and hour windows also end where the zone's UTC offset changes, so
//! the hour repeated at a DST fall-back is two windows of one hour.
//!
//! # Per-event values
//! Aggregations that read a value take the metric's expression (section 4.10) when it has one,
//! else its `field` read with [`crate::input::decimal_value`]. A missing or null property, a
//! value that is not a decimal, or an expression error *skips* the event: it counts under
//! `events_skipped` and contributes nothing. An expression that no longer parses (it was
//! checked when the metric was saved) skips every event. For `unique_count` the value is the
//! field's canonical value, or the expression's value in canonical text; an event whose
//! property `operation_type` is present and is neither `"add"` nor `"remove"` is skipped (null
//! counts as absent, which means `add`).
//!
//! # Groups
//! An event's group is its segment (section 3; the listed spelling of the matched values is
//! reported, so `Matched(["1.0"])` for a listed `"1.0"` and a property `1`) and the canonical
//! value of each queried `group_by` key (`None` when absent). Under `unmatched: drop` an event
//! outside the matrix belongs to no group and no total; it counts under the window's
//! `events_excluded`. Groups are listed in [`GroupKey`] order; a window with more groups than
//! `group_limit` fails the query with `too_many_groups`.
//!
//! A group appears in a window when one of its events lies inside the window (counted or
//! skipped) or, for recurring metrics, when a counted event before the window carries a value
//! into it. A skipped event before the window carries nothing and does not make a group
//! appear. So a non-recurring window without events has no groups.
//!
//! `events_count` and `events_skipped` count events whose timestamp lies inside the window;
//! earlier events that feed a recurring value are not counted again.
//!
//! # Aggregations (section 4)
//! - `count`: the events; `sum`: the exact sum; `min`, `max`: exact; `mean`: sum / count by
//!   [`divide_rounded`] (28 significant digits, half away from zero).
//! - `latest`: the value of the greatest `(timestamp, sequence)`; negative values stay negative.
//! - `unique_count`: distinct canonical values; each value's state is its last operation by
//!   `(timestamp, sequence)`, and the values whose state is `add` count.
//! - `weighted_sum`: values change a level that starts at 0 (recurring: at the sum of all
//!   changes before the window's start); the result is the integral of the level over the
//!   window, in level × microseconds, divided by the window's length in microseconds with
//!   [`divide_rounded`].
//! - Recurring `sum` and `unique_count` use every event before the window's end, including
//!   those before `from`.
//! - `custom_sql`: [`UsageError::UnsupportedAggregation`] for now.
//!
//! With no counted event, `min`, `max`, `mean` and `latest` are `None` (also in a group that
//! exists through skipped events), while `count`, `sum` and `unique_count` are 0.
//!
//! # Totals (section 4.9)
//! Each window's `total` is the same aggregation over all the window's non-excluded events
//! across groups (the max of everything, the distinct values of everything, the level of all
//! changes), so it is the sum of the group values only for `count` and `sum`. A window without
//! events totals 0 for `count`, `sum` and `unique_count`, the (possibly carried) average level
//! for `weighted_sum`, and `None` for `min`, `max`, `mean` and `latest`.
//!
//! # Finishing (section 4.8)
//! Every value and total that is present goes through [`finalize`]: unit conversion, its
//! rounding, the rounding function, then normalization. Nothing is rounded before.
//!
//! # Cost
//! Each window aggregates its events afresh (a recurring window re-reads every earlier event),
//! so a query costs about windows × events. That is the price of an oracle that is easy to
//! check; backends are the ones that must be fast.

mod aggregate;
mod finalize;
pub(crate) mod reading;
mod windows;

use std::collections::BTreeMap;

use crate::event::StoredEvent;
use crate::metric::{AggregationType, MetricSpec};
use crate::usage::{GroupKey, GroupUsage, UsageError, UsageQuery, UsageResult, WindowUsage};

pub use aggregate::divide_rounded;
pub use finalize::finalize;
pub use reading::canonical_value;
pub use windows::{windows, Window, MAX_WINDOWS};

#[cfg(doc)]
use rust_decimal::Decimal;

use aggregate::aggregate;
use reading::{EventReader, PreparedEvent, Reading};

/// Computes usage of one customer for one metric revision, from that customer's events.
pub fn compute_usage(
    spec: &MetricSpec,
    events: &[StoredEvent],
    query: &UsageQuery,
) -> Result<UsageResult, UsageError> {
    let kind = spec.aggregation.kind;
    if kind == AggregationType::CustomSql {
        return Err(UsageError::UnsupportedAggregation);
    }
    if let Some(key) = query.group_by.iter().find(|key| !spec.group_by.contains(key)) {
        return Err(UsageError::UnknownGroupKey { key: key.clone() });
    }
    let cuts = windows(query.from, query.to, query.window, query.timezone)?;

    let reader = EventReader::new(spec, &query.group_by);
    let mut prepared: Vec<PreparedEvent> = events
        .iter()
        .filter(|stored| query.as_of.is_none_or(|as_of| stored.ingested_at <= as_of))
        .filter_map(|stored| reader.prepare(stored))
        .collect();
    // Time order (ties by sequence) is what `latest`, `unique_count` operations and the
    // weighted level walk rely on, and it lets each window find its events by bisection.
    prepared.sort_by_key(|e| (e.timestamp, e.sequence));

    let recurring = spec.aggregation.recurring && kind.may_recur();
    let windows = cuts
        .into_iter()
        .map(|cut| window_usage(spec, &prepared, cut, recurring, query.group_limit))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UsageResult { windows })
}

/// The per-event values of the events that count for `spec` in `[from, to)` (and were ingested
/// by `as_of`), in `(timestamp, sequence)` order: what a percentage charge prices event by
/// event. Events outside the segmentation under `unmatched: drop` and skipped events have no
/// value; a `count` metric's events are worth 1 each. Values are read before unit conversion
/// and rounding, as the aggregation reads them.
pub fn counted_values(
    spec: &MetricSpec,
    events: &[StoredEvent],
    (from, to): Window,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<rust_decimal::Decimal> {
    let reader = EventReader::new(spec, &[]);
    let mut prepared: Vec<PreparedEvent> = events
        .iter()
        .filter(|stored| as_of.is_none_or(|as_of| stored.ingested_at <= as_of))
        .filter(|stored| stored.event.timestamp >= from && stored.event.timestamp < to)
        .filter_map(|stored| reader.prepare(stored))
        .filter(|e| e.group.is_some())
        .collect();
    prepared.sort_by_key(|e| (e.timestamp, e.sequence));
    prepared
        .into_iter()
        .filter_map(|e| match e.reading {
            Reading::Number(value) => Some(value),
            Reading::Counted => Some(rust_decimal::Decimal::ONE),
            Reading::Distinct(..) | Reading::Skipped => None,
        })
        .collect()
}

/// One group's events within one window, while the window is being assembled.
#[derive(Default)]
struct GroupEvents<'a> {
    /// Every event feeding the value: the window's own, plus earlier ones when recurring.
    feeding: Vec<&'a PreparedEvent>,
    events_count: u64,
    events_skipped: u64,
    /// Whether the group shows in this window (see the module docs, "Groups").
    appears: bool,
}

fn window_usage(
    spec: &MetricSpec,
    prepared: &[PreparedEvent],
    (from, to): Window,
    recurring: bool,
    group_limit: usize,
) -> Result<WindowUsage, UsageError> {
    let first_inside = prepared.partition_point(|e| e.timestamp < from);
    let end = prepared.partition_point(|e| e.timestamp < to);
    let feeding = if recurring { &prepared[..end] } else { &prepared[first_inside..end] };

    let mut events_excluded = 0u64;
    let mut all_feeding: Vec<&PreparedEvent> = Vec::new();
    let mut groups: BTreeMap<&GroupKey, GroupEvents<'_>> = BTreeMap::new();
    for event in feeding {
        let inside = event.timestamp >= from;
        let skipped = matches!(event.reading, Reading::Skipped);
        let Some(key) = &event.group else {
            if inside {
                events_excluded += 1;
            }
            continue;
        };
        all_feeding.push(event);
        let group = groups.entry(key).or_default();
        group.feeding.push(event);
        match (inside, skipped) {
            (true, true) => group.events_skipped += 1,
            (true, false) => group.events_count += 1,
            (false, _) => {}
        }
        group.appears |= inside || !skipped;
    }

    let appearing: Vec<(&GroupKey, GroupEvents<'_>)> =
        groups.into_iter().filter(|(_, g)| g.appears).collect();
    if appearing.len() > group_limit {
        return Err(UsageError::TooManyGroups { limit: group_limit });
    }
    let kind = spec.aggregation.kind;
    let finalized = |value: Option<_>| value.map(|v| finalize(spec, v)).transpose();
    let groups = appearing
        .into_iter()
        .map(|(key, g)| {
            Ok(GroupUsage {
                key: key.clone(),
                value: finalized(aggregate(kind, (from, to), &g.feeding)?)?,
                events_count: g.events_count,
                events_skipped: g.events_skipped,
            })
        })
        .collect::<Result<Vec<_>, UsageError>>()?;
    let total = finalized(aggregate(kind, (from, to), &all_feeding)?)?;
    Ok(WindowUsage { from, to, total, groups, events_excluded })
}
