//! Precomputed per-bucket usage state, kept by ClickHouse itself: a materialized view folds
//! every insert into `events` into `usage_state` (an `AggregatingMergeTree`), in the same
//! `INSERT`, so the state holds exactly the rows the table holds, whichever replica wrote them.
//!
//! The state does not depend on any metric: per (organization, event code, customer, 15-minute
//! UTC bucket) it keeps the number of events and of `wide` rows (`kind` 0), and per top-level
//! property key that holds numbers the count, exact `Decimal128(10)` sum, min and max of its
//! numeric values (`kind` 2; text properties make no rows). So every metric, current or
//! future, that counts events or sums, averages or takes the min or max of a top-level field,
//! without filters, segmentation or `group_by`, is answered from it with no build step and no
//! revision to track. Windows and periods off
//! the 15-minute grid read their edges from the events; everything else (filters, unique
//! counts, latest, weighted sums, recurring metrics, expressions, `as_of`) is the pushed-down
//! statement's or the reference engine's ([`crate::pushdown`]).
//!
//! Every insert also adds, in the same part of `usage_state`, one marker per batch (`kind` 1,
//! bucket `-1 - batch`) counting the batch's rows the view saw. 18.16 does not fsync its parts
//! and writes a view's part after the table's, so a crash of the machine can leave the events
//! and their state apart; the recovery compares each batch's marker with the ledger's count
//! before it forgets the batch, and an organization whose state disagrees is no longer
//! answered from it (its questions go to the events, exact; see [`crate::ledger`]'s
//! `usage_state_distrust`).

use std::collections::BTreeMap;

use odometer_core::engine::Window;
use odometer_core::metric::{AggregationType, MetricSpec};
use odometer_core::usage::{UsageError, UsageQuery};
use odometer_store::events::EventsReason;
use rust_decimal::Decimal;

use crate::escape::{literal, literals};
use crate::pushdown::{self, Statement};

/// A bucket's length in microseconds.
pub const BUCKET_MICROS: i64 = 15 * 60 * 1_000_000;

/// The state table and the view that feeds it, in order (after the `events` table). A
/// question reads a few hundred rows of one customer; granules of 1,024 rows instead of the
/// default 8,192 halve the time of a usage question on a merged table (4.4 ms instead of 8.8
/// on the bench machine, measured by hand on 18.16).
pub fn statements(database: &str) -> [String; 2] {
    // Each row is joined with positions 0 and 1 (its own records: events, batch marker) and
    // then one position per top-level property, with that property's key and number. (The
    // arrays are joined, not indexed: 18.16 crashes indexing a block's decimal arrays when
    // all of them are empty.)
    let numeric = "i >= 2 AND isNotNull(num)";
    let no_number = "CAST(NULL AS Nullable(Decimal128(10)))";
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.usage_state (
                org String,
                code String,
                customer String,
                kind UInt8,
                key String,
                bucket Int64,
                events AggregateFunction(count),
                numbers AggregateFunction(countIf, UInt8),
                total AggregateFunction(sumIf, Decimal128(10), UInt8),
                least AggregateFunction(minIf, Decimal128(10), UInt8),
                greatest AggregateFunction(maxIf, Decimal128(10), UInt8),
                wide AggregateFunction(sum, UInt8)
            ) ENGINE = AggregatingMergeTree
            ORDER BY (org, code, customer, kind, key, bucket)
            SETTINGS index_granularity = 1024"
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.usage_state_view
            TO {database}.usage_state AS
            SELECT org,
                if(i = 1, '', code) AS code,
                if(i = 1, '', customer) AS customer,
                toUInt8(if(i < 2, i, 2)) AS kind,
                k AS key,
                if(i = 1, -1 - toInt64(batch),
                   intDiv(ts - ((ts % {BUCKET_MICROS}) + {BUCKET_MICROS}) % {BUCKET_MICROS},
                          {BUCKET_MICROS})) AS bucket,
                countState() AS events,
                countIfState({numeric}) AS numbers,
                sumIfState(assumeNotNull(num), {numeric}) AS total,
                minIfState(assumeNotNull(num), {numeric}) AS least,
                maxIfState(assumeNotNull(num), {numeric}) AS greatest,
                sumState(wide) AS wide
            FROM {database}.events
            ARRAY JOIN range(toUInt64(length(prop_keys) + 2)) AS i,
                arrayConcat(['', ''], prop_keys) AS k,
                arrayConcat([{no_number}, {no_number}], prop_nums) AS num
            WHERE i < 2 OR isNotNull(num)
            GROUP BY org, code, customer, kind, key, bucket"
        ),
    ]
}

/// The bucket holding instant `micros` (floor, also before 1970).
fn bucket_of(micros: i64) -> i64 {
    micros.div_euclid(BUCKET_MICROS)
}

/// The first bucket starting at or after `micros`.
fn bucket_from(micros: i64) -> i64 {
    bucket_of(micros) + i64::from(micros.rem_euclid(BUCKET_MICROS) != 0)
}

/// A question the state answers: one statement over the state (whole buckets), and one over
/// the events when windows leave the grid (their edges).
#[derive(Debug)]
pub struct StatePlan {
    pub state_sql: String,
    pub edges_sql: Option<String>,
    kind: AggregationType,
    windows: Vec<Window>,
}

impl StatePlan {
    /// Whether edges are read from the events.
    pub fn edges(&self) -> bool {
        self.edges_sql.is_some()
    }
}

/// Columns of a row of [`StatePlan::state_sql`] and of [`StatePlan::edges_sql`].
pub const STATE_COLUMNS: usize = 9;
pub const EDGE_COLUMNS: usize = 8;

/// The statements answering `query` for `customers` from the state (with the edges from the
/// events), or why the state cannot. Errors are the reference engine's for the question.
pub fn plan(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<Result<StatePlan, EventsReason>, UsageError> {
    Ok(statements_for(org, customers, spec, query, pushdown::checked_windows(spec, query)?))
}

fn statements_for(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
    cuts: Vec<Window>,
) -> Result<StatePlan, EventsReason> {
    let aggregation = &spec.aggregation;
    let kind = aggregation.kind;
    // The state keeps counts, sums, mins and maxes: every SQL aggregate but distinct counts.
    let folded = kind.is_sql_aggregate() && kind != AggregationType::UniqueCount;
    if !folded
        || (aggregation.recurring && kind.may_recur())
        || aggregation.expression.is_some()
        || !spec.filters.is_empty()
        || spec.segmentation.is_some()
        || !query.group_by.is_empty()
    {
        return Err(EventsReason::NotIndexed);
    }
    if query.as_of.is_some() {
        return Err(EventsReason::AsOf);
    }
    if cuts.len() > pushdown::MAX_PUSHED_WINDOWS {
        return Err(EventsReason::Unaligned);
    }
    let field = match kind {
        AggregationType::Count => None,
        _ => match aggregation.field.as_deref() {
            Some(field) if !field.contains('.') => Some(field),
            _ => return Err(EventsReason::NotIndexed),
        },
    };

    // Each window's whole buckets come from the state, the rest of it from the events.
    let mut whole: Vec<(usize, i64, i64)> = Vec::new();
    let mut edges: Vec<(usize, i64, i64)> = Vec::new();
    for (w, (from, to)) in cuts.iter().enumerate() {
        let (a, b) = (from.timestamp_micros(), to.timestamp_micros());
        let (first, end) = (bucket_from(a), bucket_of(b));
        if first < end {
            whole.push((w, first, end));
            if a < first * BUCKET_MICROS {
                edges.push((w, a, first * BUCKET_MICROS));
            }
            if end * BUCKET_MICROS < b {
                edges.push((w, end * BUCKET_MICROS, b));
            }
        } else {
            edges.push((w, a, b));
        }
    }
    if whole.is_empty() {
        return Err(EventsReason::Unaligned);
    }

    let asked = if let [customer] = customers {
        format!("customer = {}", literal(customer))
    } else {
        format!("customer IN ({})", literals(customers.iter().map(String::as_str)))
    };
    let base =
        format!("org = {} AND code = {} AND {asked}", literal(org), literal(&spec.event_code));
    let window_of = |column: &str, ranges: &[(usize, i64, i64)]| -> (String, String) {
        let within: Vec<String> = ranges
            .iter()
            .map(|(_, lo, hi)| format!("({column} >= {lo} AND {column} < {hi})"))
            .collect();
        let window = if cuts.len() == 1 {
            "0".to_owned()
        } else {
            let branches: Vec<String> =
                ranges.iter().map(|(w, _, hi)| format!("{column} < {hi}, {w}")).collect();
            format!("multiIf({}, 0)", branches.join(", "))
        };
        (format!("({})", within.join(" OR ")), format!("toInt32({window})"))
    };

    // One statement over the state: the events (kind 0) and the field's numbers (kind 2) of
    // each (customer, window), one row per kind (one range of the sorting key each).
    let records = match field {
        Some(field) => {
            format!("((kind = 0 AND key = '') OR (kind = 2 AND key = {}))", literal(field))
        }
        None => "kind = 0 AND key = ''".to_owned(),
    };
    let (in_buckets, bucket_window) = window_of("bucket", &whole);
    let state_sql = format!(
        "SELECT customer, {bucket_window} AS w, kind, countMerge(events), sumMerge(wide), \
         countIfMerge(numbers), sumIfMerge(total), minIfMerge(least), maxIfMerge(greatest) \
         FROM usage_state WHERE {base} AND {records} AND {in_buckets} \
         GROUP BY customer, w, kind"
    );
    let edges_sql = (!edges.is_empty()).then(|| {
        let value = match field {
            Some(field) => format!("prop_nums[indexOf(prop_keys, {})]", literal(field)),
            None => "CAST(NULL AS Nullable(Decimal128(10)))".to_owned(),
        };
        let (in_edges, ts_window) = window_of("ts", &edges);
        let numeric = format!("isNotNull({value})");
        format!(
            "SELECT customer, {ts_window} AS w, count(), countIf(wide = 1), countIf({numeric}), \
             sumIf(assumeNotNull({value}), {numeric}), minIf(assumeNotNull({value}), {numeric}), \
             maxIf(assumeNotNull({value}), {numeric}) \
             FROM events WHERE {base} AND {in_edges} GROUP BY customer, w"
        )
    });
    Ok(StatePlan { state_sql, edges_sql, kind, windows: cuts })
}

/// A row of an answer, as the ClickHouse client gives it.
type Row = Vec<Option<String>>;

/// One (customer, window) folded from the state's rows and the edges'.
#[derive(Debug, Default)]
struct Folded {
    events: u64,
    wide: u64,
    numbers: u64,
    total: Decimal,
    least: Option<Decimal>,
    greatest: Option<Decimal>,
}

impl Folded {
    /// Adds numbers (`count` of them, their sum, min and max as the server wrote them);
    /// `None` when a value is not an exact decimal here.
    fn add_numbers(&mut self, count: u64, total: &str, least: &str, greatest: &str) -> Option<()> {
        if count == 0 {
            return Some(());
        }
        let exact = |text: &str| Decimal::from_str_exact(text).ok();
        self.numbers += count;
        self.total = self.total.checked_add(exact(total)?)?;
        let (least, greatest) = (exact(least)?, exact(greatest)?);
        self.least = Some(self.least.map_or(least, |l| l.min(least)));
        self.greatest = Some(self.greatest.map_or(greatest, |g| g.max(greatest)));
        Some(())
    }
}

/// What the state's and the edges' rows come to: rows in [`crate::pushdown`]'s layout (each
/// (customer, window) once as its one group and once as its total) for its assembly, or
/// `None` when a sum does not fit an exact decimal here (the events answer instead).
pub fn fold(
    plan: &StatePlan,
    state_rows: Vec<Row>,
    edge_rows: Vec<Row>,
) -> Result<Option<(Statement, Vec<Row>)>, pushdown::PushdownError> {
    let shape = |what: &str| pushdown::PushdownError::Shape(what.to_owned());
    let text = |row: &[Option<String>], i: usize| -> Result<String, pushdown::PushdownError> {
        row.get(i).cloned().flatten().ok_or_else(|| shape("a NULL in the state's answer"))
    };
    let number = |row: &[Option<String>], i: usize| -> Result<u64, pushdown::PushdownError> {
        text(row, i)?.parse().map_err(|_| shape("a count that is not a number"))
    };
    let mut folded: BTreeMap<(String, i32), Folded> = BTreeMap::new();
    for row in &state_rows {
        let w: i32 = text(row, 1)?.parse().map_err(|_| shape("a window"))?;
        let slot = folded.entry((text(row, 0)?, w)).or_default();
        if text(row, 2)? == "0" {
            slot.events += number(row, 3)?;
            slot.wide += number(row, 4)?;
        } else if slot
            .add_numbers(number(row, 5)?, &text(row, 6)?, &text(row, 7)?, &text(row, 8)?)
            .is_none()
        {
            return Ok(None);
        }
    }
    for row in &edge_rows {
        let w: i32 = text(row, 1)?.parse().map_err(|_| shape("a window"))?;
        let slot = folded.entry((text(row, 0)?, w)).or_default();
        slot.events += number(row, 2)?;
        slot.wide += number(row, 3)?;
        if slot
            .add_numbers(number(row, 4)?, &text(row, 5)?, &text(row, 6)?, &text(row, 7)?)
            .is_none()
        {
            return Ok(None);
        }
    }
    let mut rows = Vec::with_capacity(folded.len() * 2);
    for ((customer, w), f) in folded {
        if f.events == 0 {
            continue;
        }
        let counted = if plan.kind == AggregationType::Count { f.events } else { f.numbers };
        let value = match plan.kind {
            AggregationType::Count => None,
            AggregationType::Min => Some(f.least.unwrap_or_default().to_string()),
            AggregationType::Max => Some(f.greatest.unwrap_or_default().to_string()),
            _ => Some(f.total.to_string()),
        };
        let group = vec![
            Some(customer),
            Some(w.to_string()),
            Some("0".to_owned()),
            Some("0".to_owned()),
            Some(counted.to_string()),
            Some((f.events - counted).to_string()),
            Some("0".to_owned()),
            Some(f.wide.to_string()),
            value,
        ];
        let mut total = group.clone();
        total[3] = Some("1".to_owned());
        rows.push(group);
        rows.push(total);
    }
    Ok(Some((Statement::folded(plan.kind, plan.windows.clone()), rows)))
}

/// The statement counting what the view saw of each batch (`batch`, rows) among `batches`
/// of `org`.
pub fn markers_sql(org: &str, batches: &[i64]) -> String {
    let buckets: Vec<String> = batches.iter().map(|b| (-1 - b).to_string()).collect();
    format!(
        "SELECT -1 - bucket, countMerge(events) FROM usage_state WHERE org = {} AND code = '' \
         AND customer = '' AND kind = 1 AND key = '' AND bucket IN ({}) GROUP BY bucket",
        literal(org),
        buckets.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_floor_also_before_1970() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(BUCKET_MICROS - 1), 0);
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_of(-BUCKET_MICROS), -1);
        assert_eq!(bucket_from(0), 0);
        assert_eq!(bucket_from(1), 1);
        assert_eq!(bucket_from(-1), 0);
        assert_eq!(bucket_from(-BUCKET_MICROS - 1), -1);
    }
}
