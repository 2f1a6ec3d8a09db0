//! The usage index's state: for one organization and one metric definition, per customer, per
//! 15-minute UTC bucket and per group, the mergeable state of the aggregation, folded from the
//! events as they are stored; and usage answered from it exactly as
//! [`crate::engine::compute_usage`] answers from the events.
//!
//! # What a state is keyed by
//! A state belongs to a [`DefinitionKey`]: the part of a metric definition that decides what
//! each event contributes (event code, aggregation type, field, expression, recurring, filters,
//! segmentation, `group_by`). Unit conversion and rounding apply after aggregation, so
//! revisions that differ only there (or in name and description) share one state, and a
//! revision that changes what counts has another key: a state is never served for a definition
//! it was not folded for (semantics 6.5).
//!
//! # Buckets
//! Buckets are 15 minutes of UTC from the Unix epoch. Every UTC offset in use today is a
//! multiple of 15 minutes, so day and month windows in any IANA zone (and hour windows, and
//! windows cut at DST changes) start and end on bucket boundaries. A query whose period or
//! windows start or end inside a bucket reads that bucket's events instead of its state (the
//! *edge buckets* of an [`IndexPlan`]); everything else comes from the state.
//!
//! # Cells
//! Per customer the state is a handful of columns sorted by `(bucket, group)`
//! ([`cells::CustomerCells`]): counted and skipped events, and the aggregation's state:
//! - `count`: the count; `sum`, `mean`: the exact sum (and the count);
//! - `min`, `max`: the extreme value (normalized: [`crate::engine::finalize`] gives the same
//!   result for every spelling of a value);
//! - `latest`: the value with the greatest `(timestamp, sequence)`;
//! - `unique_count`: the distinct values of the bucket, as ids into the state's dictionary;
//!   a customer who ever sent a `remove` operation is answered from the events;
//! - `weighted_sum`: the sum of the changes and their moment `Σ change × (t - bucket start)`,
//!   from which the integral over any window of whole buckets follows exactly:
//!   `∫ level = L0 × (b - a) + Σ change × (b - t)`.
//!
//! Events outside the segmentation under `unmatched: drop` are counted in a cell of their own
//! (they only feed `events_excluded`).
//!
//! # Exactness
//! A state answers only what it can answer exactly as the reference engine would:
//! - Sums are exact decimal additions as long as no intermediate result needs more than 96 bits
//!   of mantissa at the largest scale seen. The state keeps an upper bound of the absolute
//!   values it folded (a float sum with a wide margin) and refuses ([`Fallback::Inexact`]) any
//!   query for which that bound does not guarantee it; the reference engine then computes the
//!   same numbers in the same order as always.
//! - `as_of` before the newest ingestion the state holds is [`Fallback::AsOf`].
//! - More than [`MAX_EDGE_BUCKETS`] edge buckets (minute windows) is [`Fallback::Unaligned`].

mod answer;
mod cells;
mod snapshot;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::json;

use crate::engine::reading::{EventReader, Operation, Reading};
use crate::engine::{windows, Window};
use crate::event::StoredEvent;
use crate::metric::{AggregationType, MetricSpec};
use crate::usage::{GroupKey, UsageError, UsageQuery, UsageResult};

pub use snapshot::SnapshotError;

use cells::{CustomerCells, EXCLUDED};

/// Length of a bucket, in microseconds.
pub const BUCKET_MICROS: i64 = 15 * 60 * 1_000_000;

/// The most edge buckets a query may read from the events before the whole query is answered
/// from the events instead (a day of minute windows has 96 of them).
pub const MAX_EDGE_BUCKETS: usize = 64;

/// Powers of ten as floats, for the exactness bound.
const TWO_POW_95: f64 = 39_614_081_257_132_168_796_771_975_168.0;

/// The bucket holding an instant given in microseconds since the epoch; `None` before 1970
/// (intake refuses such timestamps) or past the range of a `u32`.
pub fn bucket_of(micros: i64) -> Option<u32> {
    u32::try_from(micros.div_euclid(BUCKET_MICROS)).ok()
}

/// Where a bucket starts, in microseconds since the epoch.
pub fn bucket_start(bucket: u32) -> i64 {
    i64::from(bucket) * BUCKET_MICROS
}

/// The counting part of a metric definition (see the module documentation); `None` for
/// `custom_sql`, which has no per-event contribution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DefinitionKey(String);

impl DefinitionKey {
    pub fn of(spec: &MetricSpec) -> Option<Self> {
        let a = &spec.aggregation;
        if a.kind == AggregationType::CustomSql {
            return None;
        }
        let doc = json!({
            "event_code": spec.event_code,
            "type": a.kind,
            "field": a.field,
            "expression": a.expression,
            "recurring": a.recurring && a.kind.may_recur(),
            "filters": spec.filters,
            "segmentation": spec.segmentation,
            "group_by": spec.group_by,
        });
        Some(Self(doc.to_string()))
    }

    /// The key as canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a question goes to the events instead of the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// `as_of` is before the newest ingestion the state holds.
    AsOf,
    /// More than [`MAX_EDGE_BUCKETS`] window boundaries lie inside buckets.
    Unaligned,
    /// `unique_count` with `remove` operations for this customer.
    Removals,
    /// The state cannot guarantee the exact numbers (values too large for exact sums in any
    /// order, or a counter past its range).
    Inexact,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AsOf => "as_of",
            Self::Unaligned => "unaligned_windows",
            Self::Removals => "removals",
            Self::Inexact => "inexact",
        }
    }
}

/// How a query is answered from a state: its windows, the buckets read from the events, and
/// how the definition's groups map onto the query's `group_by`.
#[derive(Debug, Clone)]
pub struct IndexPlan {
    windows: Vec<Window>,
    /// Buckets containing a window boundary that is not on a bucket boundary, ascending.
    edge_buckets: Vec<u32>,
    /// For each of the query's `group_by` keys, its position among the definition's.
    positions: Vec<usize>,
    group_limit: usize,
}

impl IndexPlan {
    /// The time ranges whose events the answer needs (the edge buckets, adjacent ones joined),
    /// in time order.
    pub fn edge_ranges(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &bucket in &self.edge_buckets {
            let start = bucket_start(bucket);
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = start + BUCKET_MICROS,
                _ => ranges.push((start, start + BUCKET_MICROS)),
            }
        }
        ranges
            .into_iter()
            .filter_map(|(a, b)| {
                Some((DateTime::from_timestamp_micros(a)?, DateTime::from_timestamp_micros(b)?))
            })
            .collect()
    }

    /// Whether the answer needs any events at all.
    pub fn has_edges(&self) -> bool {
        !self.edge_buckets.is_empty()
    }

    fn is_edge(&self, bucket: u32) -> bool {
        self.edge_buckets.binary_search(&bucket).is_ok()
    }
}

/// The exactness bound (see the module documentation): a float upper bound of the sum of the
/// absolute values folded, and the largest scale among them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bound {
    abs_total: f64,
    max_scale: u32,
}

impl Bound {
    fn note(&mut self, value: Decimal) {
        self.abs_total += value.abs().to_f64().unwrap_or(f64::INFINITY);
        self.max_scale = self.max_scale.max(value.scale());
    }

    /// Whether every sum of these values, and (for `weighted_sum`) every product of such a sum
    /// by a duration up to `longest` microseconds, is exact in a decimal. The margin (a factor
    /// of 4 and 2^95 instead of 2^96) covers the float's rounding many times over.
    fn exact(&self, kind: AggregationType, longest: i64) -> bool {
        let scale = 10f64.powi(self.max_scale.min(28) as i32);
        let times = match kind {
            AggregationType::WeightedSum => 4.0 * (longest as f64 + BUCKET_MICROS as f64),
            _ => 4.0,
        };
        self.abs_total * scale * times < TWO_POW_95
    }
}

/// One organization's precomputed usage state for one [`DefinitionKey`].
#[derive(Debug, Clone)]
pub struct DefinitionState {
    key: DefinitionKey,
    /// The definition the state was created for (any revision with the same key).
    spec: MetricSpec,
    reader: EventReader,
    kind: AggregationType,
    recurring: bool,
    /// Group ids: index into this is the id a cell carries.
    groups: Vec<GroupKey>,
    group_ids: HashMap<GroupKey, u32>,
    /// `unique_count` values (canonical text) by id.
    values: Vec<Box<str>>,
    value_ids: HashMap<Box<str>, u32>,
    customers: HashMap<Box<str>, CustomerCells>,
    bound: Bound,
    /// The latest `ingested_at` (microseconds) among the events folded.
    max_ingested_at: i64,
    /// Events folded that count for the definition (passed its code and filters).
    events: u64,
    /// A counter or a sum went past its range: every question is answered from the events.
    overflowed: bool,
}

impl DefinitionState {
    /// An empty state for the definition; `None` for `custom_sql`.
    pub fn new(spec: &MetricSpec) -> Option<Self> {
        let key = DefinitionKey::of(spec)?;
        Some(Self {
            key,
            spec: spec.clone(),
            reader: EventReader::new(spec, &spec.group_by),
            kind: spec.aggregation.kind,
            recurring: spec.aggregation.recurring && spec.aggregation.kind.may_recur(),
            groups: Vec::new(),
            group_ids: HashMap::new(),
            values: Vec::new(),
            value_ids: HashMap::new(),
            customers: HashMap::new(),
            bound: Bound::default(),
            max_ingested_at: i64::MIN,
            events: 0,
            overflowed: false,
        })
    }

    pub fn key(&self) -> &DefinitionKey {
        &self.key
    }

    /// The definition the state was created for.
    pub fn spec(&self) -> &MetricSpec {
        &self.spec
    }

    /// The event code the definition reads.
    pub fn event_code(&self) -> &str {
        &self.spec.event_code
    }

    /// Events folded that count for the definition.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Customers with cells.
    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    /// Cells held, over all customers (a measure of the state's size).
    pub fn cells(&self) -> usize {
        self.customers.values().map(CustomerCells::len).sum()
    }

    /// Folds one stored event in (events of other codes, or that fail the filters, change
    /// nothing). Each event must be folded exactly once; the order does not matter.
    pub fn apply(&mut self, stored: &StoredEvent) {
        let Some(prepared) = self.reader.prepare(stored) else { return };
        self.events += 1;
        self.max_ingested_at = self.max_ingested_at.max(stored.ingested_at.timestamp_micros());
        let Some(bucket) = bucket_of(prepared.timestamp.timestamp_micros()) else {
            self.overflowed = true;
            return;
        };
        let group = match prepared.group {
            None => EXCLUDED,
            Some(key) => self.group_id(key),
        };
        let kind = self.kind;
        let value = match &prepared.reading {
            Reading::Distinct(text, _) => Some(self.value_id(text)),
            _ => None,
        };
        if let Reading::Number(v) = prepared.reading {
            self.bound.note(v);
        }
        let customer = stored.event.customer.as_str();
        let cells = match self.customers.get_mut(customer) {
            Some(cells) => cells,
            None => {
                self.customers.entry(customer.into()).or_insert_with(|| CustomerCells::new(kind))
            }
        };
        if let Reading::Distinct(_, Operation::Remove) = prepared.reading {
            cells.note_removal();
        }
        let fits = cells.fold(
            kind,
            bucket,
            group,
            &prepared.reading,
            value,
            (prepared.timestamp.timestamp_micros(), prepared.sequence),
        );
        if !fits {
            self.overflowed = true;
        }
    }

    fn group_id(&mut self, key: GroupKey) -> u32 {
        if let Some(&id) = self.group_ids.get(&key) {
            return id;
        }
        let id = u32::try_from(self.groups.len()).unwrap_or(EXCLUDED - 1).min(EXCLUDED - 1);
        self.groups.push(key.clone());
        self.group_ids.insert(key, id);
        id
    }

    fn value_id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.value_ids.get(text) {
            return id;
        }
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        if id == u32::MAX {
            self.overflowed = true;
        }
        self.values.push(text.into());
        self.value_ids.insert(text.into(), id);
        id
    }

    /// How `query` is answered from this state for a definition `spec` with this state's key,
    /// or why it must be answered from the events. Fails exactly where
    /// [`crate::engine::compute_usage`] fails before reading any event.
    pub fn plan(
        &self,
        spec: &MetricSpec,
        query: &UsageQuery,
    ) -> Result<Result<IndexPlan, Fallback>, UsageError> {
        if spec.aggregation.kind == AggregationType::CustomSql {
            return Err(UsageError::UnsupportedAggregation);
        }
        if let Some(key) = query.group_by.iter().find(|key| !spec.group_by.contains(key)) {
            return Err(UsageError::UnknownGroupKey { key: key.clone() });
        }
        let cuts = windows(query.from, query.to, query.window, query.timezone)?;
        if self.overflowed {
            return Ok(Err(Fallback::Inexact));
        }
        if query.as_of.is_some_and(|as_of| as_of.timestamp_micros() < self.max_ingested_at) {
            return Ok(Err(Fallback::AsOf));
        }
        let longest = cuts.iter().map(|(a, b)| (*b - *a).num_microseconds().unwrap_or(i64::MAX));
        if !self.bound.exact(self.kind, longest.max().unwrap_or(0)) {
            return Ok(Err(Fallback::Inexact));
        }
        let mut edge_buckets: Vec<u32> = Vec::new();
        let boundaries = cuts.iter().map(|c| c.0).chain(cuts.last().map(|c| c.1));
        for boundary in boundaries {
            let micros = boundary.timestamp_micros();
            if micros.rem_euclid(BUCKET_MICROS) != 0 {
                let Some(bucket) = bucket_of(micros) else { return Ok(Err(Fallback::Inexact)) };
                edge_buckets.push(bucket);
            }
        }
        edge_buckets.dedup();
        if edge_buckets.len() > MAX_EDGE_BUCKETS {
            return Ok(Err(Fallback::Unaligned));
        }
        let positions = query
            .group_by
            .iter()
            .filter_map(|key| spec.group_by.iter().position(|k| k == key))
            .collect();
        Ok(Ok(IndexPlan { windows: cuts, edge_buckets, positions, group_limit: query.group_limit }))
    }

    /// Why this customer's answer must come from the events even though the query has a plan.
    pub fn customer_fallback(&self, customer: &str) -> Option<Fallback> {
        let cells = self.customers.get(customer)?;
        cells.has_removals().then_some(Fallback::Removals)
    }

    /// The usage of `customer` for `spec` (a definition with this state's key; its unit
    /// conversion and rounding are applied) under `plan`, given the customer's events in the
    /// plan's edge ranges (others are ignored). Equal to `compute_usage` over all the
    /// customer's events folded into the state.
    pub fn answer(
        &self,
        spec: &MetricSpec,
        plan: &IndexPlan,
        customer: &str,
        edge_events: &[StoredEvent],
    ) -> Result<UsageResult, UsageError> {
        answer::answer(self, spec, plan, self.customers.get(customer), edge_events)
    }
}
