//! One customer's cells: columns sorted by `(bucket, group)`, each cell the folded state of the
//! customer's events of one bucket and one group.
//!
//! Events mostly arrive in time order, so a new cell is almost always pushed at the end; a late
//! event inserts into the middle of the columns (a move of the cells after it).

use rust_decimal::Decimal;

use crate::engine::reading::Reading;
use crate::metric::AggregationType;

/// The group id of events outside the segmentation under `unmatched: drop`; their cells only
/// count them (`events_excluded`).
pub(super) const EXCLUDED: u32 = u32::MAX;

/// A cell's position: bucket in the high 32 bits, group in the low ones, so sorting by key is
/// sorting by bucket, then group.
pub(super) fn cell_key(bucket: u32, group: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(group)
}

pub(super) fn key_bucket(key: u64) -> u32 {
    (key >> 32) as u32
}

pub(super) fn key_group(key: u64) -> u32 {
    key as u32
}

/// The value of `latest` in a cell: the greatest `(timestamp, sequence)` and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Latest {
    pub timestamp: i64,
    pub sequence: u64,
    pub value: Decimal,
}

/// The aggregation's column.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Accs {
    /// `count` and `unique_count`: the counters say it all (values are in `distinct`).
    Counts,
    /// `sum` and `mean`: the sum; `min` and `max`: the extreme (valid when `counted > 0`).
    Decimals(Vec<Decimal>),
    Latest(Vec<Latest>),
    /// `weighted_sum`: (sum of the changes, Σ change × microseconds since the bucket's start).
    Weighted(Vec<(Decimal, Decimal)>),
}

impl Accs {
    pub(super) fn new(kind: AggregationType) -> Self {
        match kind {
            AggregationType::Sum
            | AggregationType::Mean
            | AggregationType::Min
            | AggregationType::Max => Self::Decimals(Vec::new()),
            AggregationType::Latest => Self::Latest(Vec::new()),
            AggregationType::WeightedSum => Self::Weighted(Vec::new()),
            AggregationType::Count | AggregationType::UniqueCount | AggregationType::CustomSql => {
                Self::Counts
            }
        }
    }

    fn insert_identity(&mut self, at: usize) {
        match self {
            Self::Counts => {}
            Self::Decimals(v) => v.insert(at, Decimal::ZERO),
            Self::Latest(v) => {
                v.insert(at, Latest { timestamp: i64::MIN, sequence: 0, value: Decimal::ZERO })
            }
            Self::Weighted(v) => v.insert(at, (Decimal::ZERO, Decimal::ZERO)),
        }
    }

    fn len(&self) -> Option<usize> {
        match self {
            Self::Counts => None,
            Self::Decimals(v) => Some(v.len()),
            Self::Latest(v) => Some(v.len()),
            Self::Weighted(v) => Some(v.len()),
        }
    }
}

/// The cells of one customer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CustomerCells {
    pub(super) keys: Vec<u64>,
    /// Events that counted (for the excluded group: events excluded).
    pub(super) counted: Vec<u32>,
    /// Events that passed the filters but had no usable value.
    pub(super) skipped: Vec<u32>,
    pub(super) accs: Accs,
    /// `unique_count`: (cell key, value id), sorted, without repeats.
    pub(super) distinct: Vec<(u64, u32)>,
    /// The customer sent a `remove` operation (`unique_count`).
    pub(super) removals: bool,
}

impl CustomerCells {
    pub(super) fn new(kind: AggregationType) -> Self {
        Self {
            keys: Vec::new(),
            counted: Vec::new(),
            skipped: Vec::new(),
            accs: Accs::new(kind),
            distinct: Vec::new(),
            removals: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn has_removals(&self) -> bool {
        self.removals
    }

    pub(super) fn note_removal(&mut self) {
        self.removals = true;
    }

    /// Whether the columns agree in length (a snapshot read back is checked with this).
    pub(super) fn is_consistent(&self) -> bool {
        let n = self.keys.len();
        self.counted.len() == n
            && self.skipped.len() == n
            && self.accs.len().is_none_or(|len| len == n)
            && self.keys.windows(2).all(|w| w[0] < w[1])
            && self.distinct.windows(2).all(|w| w[0] < w[1])
    }

    /// The index of the cell `key`, inserted empty when absent.
    fn cell(&mut self, key: u64) -> usize {
        // The common case first: the newest bucket, already there or one past the end.
        let at = match self.keys.last() {
            Some(&last) if last == key => return self.keys.len() - 1,
            Some(&last) if last < key => self.keys.len(),
            None => 0,
            Some(_) => match self.keys.binary_search(&key) {
                Ok(found) => return found,
                Err(at) => at,
            },
        };
        self.keys.insert(at, key);
        self.counted.insert(at, 0);
        self.skipped.insert(at, 0);
        self.accs.insert_identity(at);
        at
    }

    /// Folds one event's reading into the cell of `(bucket, group)`; `value` is the distinct
    /// value's id for `unique_count`, `order` the event's `(timestamp, sequence)`. `false` when
    /// a counter or sum went past its range (the cell is then unusable).
    pub(super) fn fold(
        &mut self,
        kind: AggregationType,
        bucket: u32,
        group: u32,
        reading: &Reading,
        value: Option<u32>,
        order: (i64, u64),
    ) -> bool {
        let key = cell_key(bucket, group);
        let i = self.cell(key);
        if group == EXCLUDED {
            return bump(&mut self.counted[i]);
        }
        let number = match reading {
            Reading::Skipped => return bump(&mut self.skipped[i]),
            Reading::Counted => return bump(&mut self.counted[i]),
            Reading::Distinct(..) => {
                if let Some(value) = value {
                    if let Err(at) = self.distinct.binary_search(&(key, value)) {
                        self.distinct.insert(at, (key, value));
                    }
                }
                return bump(&mut self.counted[i]);
            }
            Reading::Number(number) => *number,
        };
        let first = self.counted[i] == 0;
        if !bump(&mut self.counted[i]) {
            return false;
        }
        match &mut self.accs {
            Accs::Counts => true,
            Accs::Decimals(column) => {
                let cell = &mut column[i];
                match kind {
                    AggregationType::Min if first || number < *cell => {
                        *cell = number.normalize();
                        true
                    }
                    AggregationType::Max if first || number > *cell => {
                        *cell = number.normalize();
                        true
                    }
                    AggregationType::Min | AggregationType::Max => true,
                    _ => match cell.checked_add(number) {
                        Some(sum) => {
                            *cell = sum;
                            true
                        }
                        None => false,
                    },
                }
            }
            Accs::Latest(column) => {
                let cell = &mut column[i];
                if first || order > (cell.timestamp, cell.sequence) {
                    *cell = Latest { timestamp: order.0, sequence: order.1, value: number };
                }
                true
            }
            Accs::Weighted(column) => {
                let (change, moment) = &mut column[i];
                let offset = order.0 - super::bucket_start(bucket);
                let product = number.checked_mul(Decimal::from(offset));
                match (change.checked_add(number), product.and_then(|p| moment.checked_add(p))) {
                    (Some(c), Some(m)) => {
                        *change = c;
                        *moment = m;
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Adds one to a counter; `false` past its range.
fn bump(counter: &mut u32) -> bool {
    match counter.checked_add(1) {
        Some(next) => {
            *counter = next;
            true
        }
        None => false,
    }
}
