//! Usage answered from a state: one sweep over the customer's cells and edge events in time
//! order, window by window, assembling groups, totals and counters exactly as
//! [`crate::engine::compute_usage`] does (see its documentation for the rules this follows:
//! which groups appear, what is counted where, how totals are formed).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use rust_decimal::Decimal;

use super::cells::{key_bucket, key_group, Accs, CustomerCells, EXCLUDED};
use super::{bucket_of, bucket_start, DefinitionState, IndexPlan};
use crate::engine::reading::Reading;
use crate::engine::{divide_rounded, finalize};
use crate::event::StoredEvent;
use crate::metric::{AggregationType, MetricSpec};
use crate::usage::{GroupKey, GroupUsage, UsageError, UsageResult, WindowUsage};

/// Hashes value ids (already small, distinct integers) with one multiplication.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdSet = HashSet<u32, BuildHasherDefault<IdHasher>>;

/// The state of one group (or of the total) while windows are assembled.
#[derive(Debug, Clone)]
enum Acc {
    Count,
    Sum(Decimal),
    Min(Option<Decimal>),
    Max(Option<Decimal>),
    Mean(Decimal),
    Latest(Option<(i64, u64, Decimal)>),
    Unique(IdSet),
    /// `level`: at the window's start (carried for recurring metrics); `change`: the changes
    /// inside the window; `area`: Σ change × (window end - change time).
    Weighted {
        level: Decimal,
        change: Decimal,
        area: Decimal,
    },
}

fn overflow<T>(value: Option<T>) -> Result<T, UsageError> {
    value.ok_or(UsageError::Overflow)
}

impl Acc {
    fn new(kind: AggregationType) -> Self {
        match kind {
            AggregationType::Sum => Self::Sum(Decimal::ZERO),
            AggregationType::Min => Self::Min(None),
            AggregationType::Max => Self::Max(None),
            AggregationType::Mean => Self::Mean(Decimal::ZERO),
            AggregationType::Latest => Self::Latest(None),
            AggregationType::UniqueCount => Self::Unique(IdSet::default()),
            AggregationType::WeightedSum => {
                Self::Weighted { level: Decimal::ZERO, change: Decimal::ZERO, area: Decimal::ZERO }
            }
            AggregationType::Count | AggregationType::CustomSql => Self::Count,
        }
    }

    /// One event's value, at `order` = (timestamp, sequence), inside a window ending at `end`
    /// (microseconds).
    fn add_number(&mut self, v: Decimal, order: (i64, u64), end: i64) -> Result<(), UsageError> {
        match self {
            Self::Sum(sum) | Self::Mean(sum) => *sum = overflow(sum.checked_add(v))?,
            Self::Min(min) => *min = Some(min.map_or(v, |m| m.min(v))),
            Self::Max(max) => *max = Some(max.map_or(v, |m| m.max(v))),
            Self::Latest(latest) => {
                if latest.is_none_or(|(t, s, _)| order > (t, s)) {
                    *latest = Some((order.0, order.1, v));
                }
            }
            Self::Weighted { change, area, .. } => {
                *change = overflow(change.checked_add(v))?;
                let product = overflow(v.checked_mul(Decimal::from(end - order.0)))?;
                *area = overflow(area.checked_add(product))?;
            }
            Self::Count | Self::Unique(_) => {}
        }
        Ok(())
    }

    /// A change before the window (recurring `weighted_sum`): it moves the starting level.
    fn carry(&mut self, v: Decimal) -> Result<(), UsageError> {
        if let Self::Weighted { level, .. } = self {
            *level = overflow(level.checked_add(v))?;
        }
        Ok(())
    }

    fn add_value(&mut self, id: u32) {
        if let Self::Unique(set) = self {
            set.insert(id);
        }
    }

    /// Cell `i` of `cells` (with at least one counted event for min, max and latest), inside
    /// a window ending at `end`, or before the window (`before`: only what carries).
    fn add_cell(
        &mut self,
        cells: &CustomerCells,
        i: usize,
        end: i64,
        before: bool,
    ) -> Result<(), UsageError> {
        let has_values = cells.counted[i] > 0;
        match (&mut *self, &cells.accs) {
            (Self::Sum(sum) | Self::Mean(sum), Accs::Decimals(column)) => {
                *sum = overflow(sum.checked_add(column[i]))?;
            }
            (Self::Min(min), Accs::Decimals(column)) if has_values => {
                *min = Some(min.map_or(column[i], |m| m.min(column[i])));
            }
            (Self::Max(max), Accs::Decimals(column)) if has_values => {
                *max = Some(max.map_or(column[i], |m| m.max(column[i])));
            }
            (Self::Latest(latest), Accs::Latest(column)) if has_values => {
                let cell = column[i];
                if latest.is_none_or(|(t, s, _)| (cell.timestamp, cell.sequence) > (t, s)) {
                    *latest = Some((cell.timestamp, cell.sequence, cell.value));
                }
            }
            (Self::Weighted { level, change, area }, Accs::Weighted(column)) => {
                let (c, moment) = column[i];
                if before {
                    *level = overflow(level.checked_add(c))?;
                } else {
                    let start = bucket_start(key_bucket(cells.keys[i]));
                    let product = overflow(c.checked_mul(Decimal::from(end - start)))?;
                    let contribution = overflow(product.checked_sub(moment))?;
                    *change = overflow(change.checked_add(c))?;
                    *area = overflow(area.checked_add(contribution))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The aggregate of a window `[start, end)` given the events counted in it (and, for
    /// recurring metrics, before it), before unit conversion and rounding.
    fn value(&self, counted: u64, start: i64, end: i64) -> Result<Option<Decimal>, UsageError> {
        Ok(match self {
            Self::Count => Some(Decimal::from(counted)),
            Self::Sum(sum) => Some(*sum),
            Self::Min(v) | Self::Max(v) => *v,
            Self::Mean(sum) => match counted {
                0 => None,
                n => Some(divide_rounded(*sum, n)?),
            },
            Self::Latest(latest) => latest.map(|(_, _, v)| v),
            Self::Unique(set) => Some(Decimal::from(set.len())),
            Self::Weighted { level, area, .. } => {
                let length = u64::try_from(end - start).map_err(|_| UsageError::Overflow)?;
                let base = overflow(level.checked_mul(Decimal::from(length)))?;
                Some(divide_rounded(overflow(base.checked_add(*area))?, length)?)
            }
        })
    }

    /// Moves to the next window of a recurring metric: the window's changes join the level.
    fn next_window(&mut self) -> Result<(), UsageError> {
        if let Self::Weighted { level, change, area } = self {
            *level = overflow(level.checked_add(*change))?;
            *change = Decimal::ZERO;
            *area = Decimal::ZERO;
        }
        Ok(())
    }
}

/// One group of the query (the definition's groups projected on the query's `group_by`).
#[derive(Debug, Clone)]
struct Slot {
    key: GroupKey,
    /// Events of the current window.
    counted: u64,
    skipped: u64,
    /// Counted events before the current window (recurring metrics).
    carried: u64,
    acc: Acc,
    /// The last window this slot was touched in.
    touched: Option<usize>,
}

/// Maps the definition's groups onto the query's slots.
struct Projection<'a> {
    state: &'a DefinitionState,
    positions: &'a [usize],
    by_id: Vec<usize>,
    by_key: HashMap<GroupKey, usize>,
    slots: Vec<Slot>,
}

const UNMAPPED: usize = usize::MAX;

impl Projection<'_> {
    fn project(&self, full: &GroupKey) -> GroupKey {
        GroupKey {
            segment: full.segment.clone(),
            group_by: self.positions.iter().map(|&p| full.group_by[p].clone()).collect(),
        }
    }

    fn slot_of_key(&mut self, full: &GroupKey) -> usize {
        let key = self.project(full);
        if let Some(&slot) = self.by_key.get(&key) {
            return slot;
        }
        let slot = self.slots.len();
        self.slots.push(Slot {
            key: key.clone(),
            counted: 0,
            skipped: 0,
            carried: 0,
            acc: Acc::new(self.state.kind),
            touched: None,
        });
        self.by_key.insert(key, slot);
        slot
    }

    fn slot_of_id(&mut self, id: u32) -> usize {
        let index = id as usize;
        if index >= self.by_id.len() {
            self.by_id.resize(index + 1, UNMAPPED);
        }
        if self.by_id[index] == UNMAPPED {
            let state = self.state;
            self.by_id[index] = self.slot_of_key(&state.groups[index]);
        }
        self.by_id[index]
    }
}

/// An edge event as the sweep needs it.
struct EdgeEvent {
    timestamp: i64,
    sequence: u64,
    group: Option<GroupKey>,
    reading: Reading,
}

/// The window being assembled.
struct WindowState {
    index: usize,
    start: i64,
    end: i64,
    touched: Vec<usize>,
    total: Acc,
    total_counted: u64,
    excluded: u64,
}

pub(super) fn answer(
    state: &DefinitionState,
    spec: &MetricSpec,
    plan: &IndexPlan,
    cells: Option<&CustomerCells>,
    edge_events: &[StoredEvent],
) -> Result<UsageResult, UsageError> {
    let recurring = state.recurring;
    let kind = state.kind;
    let mut edges: Vec<EdgeEvent> = edge_events
        .iter()
        .filter(|stored| {
            bucket_of(stored.event.timestamp.timestamp_micros()).is_some_and(|b| plan.is_edge(b))
        })
        .filter_map(|stored| state.reader.prepare(stored))
        .map(|p| EdgeEvent {
            timestamp: p.timestamp.timestamp_micros(),
            sequence: p.sequence,
            group: p.group,
            reading: p.reading,
        })
        .collect();
    edges.sort_by_key(|e| (e.timestamp, e.sequence));

    let empty = CustomerCells::new(kind);
    let cells = cells.unwrap_or(&empty);
    let mut projection = Projection {
        state,
        positions: &plan.positions,
        by_id: Vec::new(),
        by_key: HashMap::new(),
        slots: Vec::new(),
    };
    let mut sweep = Sweep { cells, cell: 0, distinct: 0, edges: &edges, edge: 0 };
    let mut ids = ValueIds { state, extra: HashMap::new() };
    // The running total of a recurring metric (everything before the current window).
    let mut carried_total = Acc::new(kind);
    let first_start = plan.windows.first().map_or(i64::MAX, |w| w.0.timestamp_micros());

    // Before the first window: only what carries into it, for recurring metrics.
    sweep.cells_before(first_start, |cells, i, distinct, bucket| {
        let group = key_group(cells.keys[i]);
        if !recurring || group == EXCLUDED || plan.is_edge(bucket) || cells.counted[i] == 0 {
            return Ok(());
        }
        let slot = projection.slot_of_id(group);
        let slot = &mut projection.slots[slot];
        slot.carried += u64::from(cells.counted[i]);
        for &(_, id) in distinct {
            slot.acc.add_value(id);
            carried_total.add_value(id);
        }
        slot.acc.add_cell(cells, i, first_start, true)?;
        carried_total.add_cell(cells, i, first_start, true)
    })?;
    while let Some(event) = sweep.edge_before(first_start) {
        if !recurring {
            continue;
        }
        let Some(group) = &event.group else { continue };
        let slot = projection.slot_of_key(group);
        let slot = &mut projection.slots[slot];
        match &event.reading {
            Reading::Number(v) => {
                slot.carried += 1;
                slot.acc.carry(*v)?;
                carried_total.carry(*v)?;
                if !matches!(slot.acc, Acc::Weighted { .. }) {
                    slot.acc.add_number(*v, (event.timestamp, event.sequence), first_start)?;
                    carried_total.add_number(*v, (event.timestamp, event.sequence), first_start)?;
                }
            }
            Reading::Distinct(text, _) => {
                slot.carried += 1;
                let id = ids.id(text);
                slot.acc.add_value(id);
                carried_total.add_value(id);
            }
            Reading::Counted => slot.carried += 1,
            Reading::Skipped => {}
        }
    }

    let mut windows = Vec::with_capacity(plan.windows.len());
    for (index, &(from, to)) in plan.windows.iter().enumerate() {
        let (start, end) = (from.timestamp_micros(), to.timestamp_micros());
        let mut window = WindowState {
            index,
            start,
            end,
            touched: Vec::new(),
            total: if recurring {
                std::mem::replace(&mut carried_total, Acc::new(kind))
            } else {
                Acc::new(kind)
            },
            total_counted: 0,
            excluded: 0,
        };
        sweep.cells_before(end, |cells, i, distinct, bucket| {
            if plan.is_edge(bucket) {
                return Ok(());
            }
            let group = key_group(cells.keys[i]);
            if group == EXCLUDED {
                window.excluded += u64::from(cells.counted[i]);
                return Ok(());
            }
            let slot_index = projection.slot_of_id(group);
            let slot = &mut projection.slots[slot_index];
            if slot.touched != Some(index) {
                slot.touched = Some(index);
                window.touched.push(slot_index);
            }
            slot.counted += u64::from(cells.counted[i]);
            slot.skipped += u64::from(cells.skipped[i]);
            window.total_counted += u64::from(cells.counted[i]);
            for &(_, id) in distinct {
                slot.acc.add_value(id);
                window.total.add_value(id);
            }
            slot.acc.add_cell(cells, i, end, false)?;
            window.total.add_cell(cells, i, end, false)
        })?;
        while let Some(event) = sweep.edge_before(end) {
            let Some(group) = &event.group else {
                window.excluded += 1;
                continue;
            };
            let slot_index = projection.slot_of_key(group);
            let slot = &mut projection.slots[slot_index];
            if slot.touched != Some(index) {
                slot.touched = Some(index);
                window.touched.push(slot_index);
            }
            let order = (event.timestamp, event.sequence);
            match &event.reading {
                Reading::Skipped => slot.skipped += 1,
                Reading::Counted => {
                    slot.counted += 1;
                    window.total_counted += 1;
                }
                Reading::Number(v) => {
                    slot.counted += 1;
                    window.total_counted += 1;
                    slot.acc.add_number(*v, order, end)?;
                    window.total.add_number(*v, order, end)?;
                }
                Reading::Distinct(text, _) => {
                    slot.counted += 1;
                    window.total_counted += 1;
                    let id = ids.id(text);
                    slot.acc.add_value(id);
                    window.total.add_value(id);
                }
            }
        }
        windows.push(assemble(spec, &projection.slots, &window, recurring, plan.group_limit)?);
        // Only the slots touched in this window have anything of it to clear or carry.
        for &i in &window.touched {
            let slot = &mut projection.slots[i];
            if recurring {
                slot.carried += slot.counted;
                slot.acc.next_window()?;
            } else {
                slot.acc = Acc::new(kind);
            }
            slot.counted = 0;
            slot.skipped = 0;
        }
        if recurring {
            window.total.next_window()?;
            carried_total = window.total;
        }
    }
    Ok(UsageResult { windows })
}

/// Ids of distinct values: the state's dictionary, then ids past it for values that only
/// edge events carry (not folded into the state yet), numbered as they are met.
struct ValueIds<'a> {
    state: &'a DefinitionState,
    extra: HashMap<String, u32>,
}

impl ValueIds<'_> {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.state.value_ids.get(text) {
            return id;
        }
        let next = self.state.values.len().saturating_add(self.extra.len());
        let next = u32::try_from(next).unwrap_or(u32::MAX);
        *self.extra.entry(text.to_owned()).or_insert(next)
    }
}

/// One window's result from the slots touched in it (and, for recurring metrics, every slot
/// that carries a counted event), in group order.
fn assemble(
    spec: &MetricSpec,
    slots: &[Slot],
    window: &WindowState,
    recurring: bool,
    group_limit: usize,
) -> Result<WindowUsage, UsageError> {
    let mut appearing: Vec<usize> = if recurring {
        (0..slots.len())
            .filter(|&i| slots[i].touched == Some(window.index) || slots[i].carried > 0)
            .collect()
    } else {
        window.touched.clone()
    };
    if appearing.len() > group_limit {
        return Err(UsageError::TooManyGroups { limit: group_limit });
    }
    appearing.sort_by(|&a, &b| slots[a].key.cmp(&slots[b].key));
    let finalized = |value: Option<Decimal>| value.map(|v| finalize(spec, v)).transpose();
    let mut groups = Vec::with_capacity(appearing.len());
    for i in appearing {
        let slot = &slots[i];
        let counted = slot.counted + if recurring { slot.carried } else { 0 };
        groups.push(GroupUsage {
            key: slot.key.clone(),
            value: finalized(slot.acc.value(counted, window.start, window.end)?)?,
            events_count: slot.counted,
            events_skipped: slot.skipped,
        });
    }
    let total_counted = window.total_counted
        + if recurring { slots.iter().map(|s| s.carried).sum::<u64>() } else { 0 };
    let total = finalized(window.total.value(total_counted, window.start, window.end)?)?;
    let from = chrono::DateTime::from_timestamp_micros(window.start).ok_or(UsageError::Overflow)?;
    let to = chrono::DateTime::from_timestamp_micros(window.end).ok_or(UsageError::Overflow)?;
    Ok(WindowUsage { from, to, total, groups, events_excluded: window.excluded })
}

/// Cursors over the customer's cells (with their distinct values) and edge events.
struct Sweep<'a> {
    cells: &'a CustomerCells,
    cell: usize,
    distinct: usize,
    edges: &'a [EdgeEvent],
    edge: usize,
}

impl<'a> Sweep<'a> {
    /// Calls `f(cells, i, distinct values of cell i, bucket)` for every cell not yet visited
    /// whose bucket starts before `end`.
    fn cells_before(
        &mut self,
        end: i64,
        mut f: impl FnMut(&CustomerCells, usize, &[(u64, u32)], u32) -> Result<(), UsageError>,
    ) -> Result<(), UsageError> {
        let cells = self.cells;
        while self.cell < cells.keys.len() {
            let key = cells.keys[self.cell];
            let bucket = key_bucket(key);
            if bucket_start(bucket) >= end {
                break;
            }
            while self.distinct < cells.distinct.len() && cells.distinct[self.distinct].0 < key {
                self.distinct += 1;
            }
            let first = self.distinct;
            while self.distinct < cells.distinct.len() && cells.distinct[self.distinct].0 == key {
                self.distinct += 1;
            }
            f(cells, self.cell, &cells.distinct[first..self.distinct], bucket)?;
            self.cell += 1;
        }
        Ok(())
    }

    /// The next edge event, if it is before `end`.
    fn edge_before(&mut self, end: i64) -> Option<&'a EdgeEvent> {
        let event = self.edges.get(self.edge).filter(|e| e.timestamp < end)?;
        self.edge += 1;
        Some(event)
    }
}
