//! Precomputed per-bucket usage state, kept by ClickHouse itself: a materialized view folds
//! every insert into `events` into `usage_state` (an `AggregatingMergeTree`), in the same
//! `INSERT`, so the state holds exactly the rows the table holds, whichever replica wrote them.
//!
//! The state does not depend on any metric: per (organization, event code, customer, 15-minute
//! UTC bucket) it keeps the number of events and of `wide` rows (`kind` 0), and per top-level
//! property key the count, exact `Decimal128(10)` sum, min and max of its numeric values
//! (`kind` 2). So every metric, current or future, that counts events or sums, averages or
//! takes the min or max of a top-level field, without filters, segmentation or `group_by`,
//! is answered from it with no build step and no revision to track. Windows and periods off
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

use odometer_core::engine::{windows, Window};
use odometer_core::metric::{AggregationType, MetricSpec};
use odometer_core::usage::{UsageError, UsageQuery};
use odometer_store::events::EventsReason;

use crate::escape::{literal, literals};
use crate::pushdown::{self, Statement};

/// A bucket's length in microseconds.
pub const BUCKET_MICROS: i64 = 15 * 60 * 1_000_000;

/// The state table and the view that feeds it, in order (after the `events` table).
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
            ORDER BY (org, code, customer, kind, key, bucket)"
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

/// A question the state answers: its statement, and whether edges were read from the events.
#[derive(Debug)]
pub struct StatePlan {
    pub statement: Statement,
    pub edges: bool,
}

/// The statement answering `query` for `customers` from the state (with the edges from the
/// events), or why the state cannot. Errors are the reference engine's for the question.
pub fn plan(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<Result<StatePlan, EventsReason>, UsageError> {
    if let Some(key) = query.group_by.iter().find(|key| !spec.group_by.contains(key)) {
        return Err(UsageError::UnknownGroupKey { key: key.clone() });
    }
    let cuts = windows(query.from, query.to, query.window, query.timezone)?;
    Ok(statement(org, customers, spec, query, cuts))
}

fn statement(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
    cuts: Vec<Window>,
) -> Result<StatePlan, EventsReason> {
    let aggregation = &spec.aggregation;
    let kind = aggregation.kind;
    let folded = matches!(
        kind,
        AggregationType::Count
            | AggregationType::Sum
            | AggregationType::Min
            | AggregationType::Max
            | AggregationType::Mean
    );
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

    // Parts: events and wide rows from the state, the field's numbers from the state, then
    // both from the events at the edges. One row per (customer, window, part).
    let zero = "toDecimal128(0, 10)";
    let (in_buckets, bucket_window) = window_of("bucket", &whole);
    let mut parts = vec![format!(
        "SELECT customer, {bucket_window} AS w, countMerge(events) AS n_events, \
         toUInt64(sumMerge(wide)) AS n_wide, toUInt64(0) AS n_numbers, {zero} AS s, \
         {zero} AS lo, {zero} AS hi FROM usage_state \
         WHERE {base} AND kind = 0 AND key = '' AND {in_buckets} GROUP BY customer, w"
    )];
    let value = match field {
        Some(field) => {
            parts.push(format!(
                "SELECT customer, {bucket_window} AS w, toUInt64(0) AS n_events, \
                 toUInt64(0) AS n_wide, countIfMerge(numbers) AS n_numbers, \
                 sumIfMerge(total) AS s, minIfMerge(least) AS lo, maxIfMerge(greatest) AS hi \
                 FROM usage_state WHERE {base} AND kind = 2 AND key = {} AND {in_buckets} \
                 GROUP BY customer, w",
                literal(field)
            ));
            format!("prop_nums[indexOf(prop_keys, {})]", literal(field))
        }
        None => "CAST(NULL AS Nullable(Decimal128(10)))".to_owned(),
    };
    if !edges.is_empty() {
        let (in_edges, ts_window) = window_of("ts", &edges);
        let numeric = format!("isNotNull({value})");
        parts.push(format!(
            "SELECT customer, {ts_window} AS w, count() AS n_events, \
             toUInt64(countIf(wide = 1)) AS n_wide, countIf({numeric}) AS n_numbers, \
             sumIf(assumeNotNull({value}), {numeric}) AS s, \
             minIf(assumeNotNull({value}), {numeric}) AS lo, \
             maxIf(assumeNotNull({value}), {numeric}) AS hi \
             FROM events WHERE {base} AND {in_edges} GROUP BY customer, w"
        ));
    }
    // The parts of one (customer, window) folded, in the pushed-down statement's row layout
    // (customer, window, segment, total marker, counted, skipped, excluded, unsafe, value) so
    // one assembly serves both.
    let counted = if field.is_some() { "sum(n_numbers)" } else { "sum(n_events)" };
    let aggregate = match kind {
        AggregationType::Count => "CAST(NULL AS Nullable(Decimal128(10)))".to_owned(),
        AggregationType::Min => "toNullable(minIf(lo, n_numbers > 0))".to_owned(),
        AggregationType::Max => "toNullable(maxIf(hi, n_numbers > 0))".to_owned(),
        _ => "toNullable(sum(s))".to_owned(),
    };
    let sql = format!(
        "SELECT customer, w, toInt32(0), toUInt8(0), {counted} AS counted, \
         sum(n_events) - counted, toUInt64(0), sum(n_wide), {aggregate} \
         FROM ({}) GROUP BY customer, w HAVING sum(n_events) > 0",
        parts.join(" UNION ALL ")
    );
    Ok(StatePlan { statement: Statement::folded(sql, kind, cuts), edges: !edges.is_empty() })
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
