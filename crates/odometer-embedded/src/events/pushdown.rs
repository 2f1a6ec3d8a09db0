//! Usage computed by DuckDB over the typed slot columns: one SQL statement per question,
//! whatever the number of customers, windows and groups.
//!
//! Pushed down: `count`, `sum`, `min`, `max`, `mean` and `unique_count`, not recurring, reading a
//! `field` (not an expression), with any filters, segmentation and `group_by`, any window size
//! and zone, `as_of`. The statement groups by `GROUPING SETS ((customer, window, segment,
//! group_by...), (customer, window))`: the first set gives the groups, the second the window's
//! total (semantics 4.9: the aggregation over all the window's non-excluded events, not a sum
//! of groups) and its excluded count. Everything else (latest, weighted sums, recurring
//! metrics, expressions, dotted paths, spilled keys) is answered by the reference engine.
//!
//! A pushed-down answer is only given when it is exactly the reference engine's: rows whose
//! decimals a slot cannot hold (`wide`), `unique_count` removals, and sums a decimal cannot
//! hold make the statement report [`Outcome::Fallback`], and the caller asks the reference
//! engine instead. The conformance proptest checks both paths against the reference engine.

use std::collections::HashMap;

use duckdb::types::Value as DuckValue;
use duckdb::Connection;
use odometer_core::engine::{canonical_value, divide_rounded, finalize, windows, Window};
use odometer_core::metric::{AggregationType, FilterOp, MetricSpec, Segmentation, Unmatched};
use odometer_core::usage::{
    GroupKey, GroupUsage, Segment, UsageError, UsageQuery, UsageResult, WindowUsage,
};
use rust_decimal::Decimal;
use serde_json::Value;

use super::slots::{unscaled, OrgSlots, SlotOf};

/// Segment code of events outside the matrix under `unmatched: other`.
const OTHER: i32 = -1;
/// Segment code of events outside the matrix under `unmatched: drop`.
const DROPPED: i32 = -2;

/// What a pushed-down question came to.
pub enum Outcome {
    Answered(Vec<UsageResult>),
    /// The reference engine must answer (see the module docs).
    Fallback(&'static str),
}

/// Where the SQL finds a property.
#[derive(Clone, Copy)]
enum Column {
    Slot(usize),
    /// The organization never sent this key: absent from every event.
    Absent,
}

impl Column {
    fn text(self) -> String {
        match self {
            Self::Slot(i) => format!("s{i}"),
            Self::Absent => "NULL::VARCHAR".into(),
        }
    }

    fn number(self) -> String {
        match self {
            Self::Slot(i) => format!("n{i}"),
            Self::Absent => "NULL::HUGEINT".into(),
        }
    }

    /// Present and not null.
    fn present(self) -> String {
        match self {
            Self::Slot(i) => format!("((present & {}) <> 0)", 1u32 << i),
            Self::Absent => "FALSE".into(),
        }
    }
}

/// The place of `key`; `None` when only the JSON has it (a spilled key, or a dotted path that
/// may reach into nested objects).
fn column(slots: Option<&OrgSlots>, key: &str) -> Option<Column> {
    if key.contains('.') {
        return None;
    }
    match slots.and_then(|s| s.get(key)) {
        None => Some(Column::Absent),
        Some(SlotOf::Slot(i)) => Some(Column::Slot(i)),
        Some(SlotOf::Spilled) => None,
    }
}

/// Statement parameters, bound positionally.
#[derive(Default)]
struct Params(Vec<DuckValue>);

impl Params {
    /// A placeholder with its type spelled out: DuckDB otherwise infers a parameter's type
    /// from its surroundings, which in a `CASE` can be the type of the results.
    fn bind(&mut self, value: DuckValue) -> &'static str {
        let placeholder = match value {
            DuckValue::Text(_) => "CAST(? AS VARCHAR)",
            _ => "CAST(? AS BIGINT)",
        };
        self.0.push(value);
        placeholder
    }

    fn text(&mut self, text: &str) -> &'static str {
        self.bind(DuckValue::Text(text.to_owned()))
    }

    fn micros(&mut self, instant: &chrono::DateTime<chrono::Utc>) -> &'static str {
        self.bind(DuckValue::BigInt(instant.timestamp_micros()))
    }

    fn list<'a>(&mut self, texts: impl IntoIterator<Item = &'a str>) -> String {
        texts.into_iter().map(|t| self.text(t)).collect::<Vec<_>>().join(", ")
    }
}

fn canonical_text(text: &str) -> String {
    canonical_value(&Value::String(text.to_owned())).unwrap_or_else(|| text.to_owned())
}

/// `CASE <expr> WHEN ? THEN 0 ... ELSE <otherwise> END` over listed values, with each listed
/// value's spelling; the first listed spelling of a canonical value wins, as in the engine.
fn case_of(expr: &str, listed: &[String], otherwise: &str, params: &mut Params) -> String {
    if listed.is_empty() {
        return otherwise.to_owned();
    }
    let mut sql = format!("CASE {expr}");
    for (i, value) in listed.iter().enumerate() {
        sql += &format!(" WHEN {} THEN {i}", params.text(&canonical_text(value)));
    }
    sql + &format!(" ELSE {otherwise} END")
}

/// The segment code expression and the segments its codes (from 0) stand for.
fn segment_sql(
    segmentation: Option<&Segmentation>,
    slots: Option<&OrgSlots>,
    params: &mut Params,
) -> Option<(String, Vec<Segment>)> {
    let unmatched = |u: Unmatched| match u {
        Unmatched::Other => OTHER.to_string(),
        Unmatched::Drop => DROPPED.to_string(),
    };
    Some(match segmentation {
        None => ("0".into(), vec![Segment::None]),
        Some(Segmentation::Single { key, values, unmatched: u }) => {
            let text = column(slots, key)?.text();
            let sql = case_of(&text, values, &unmatched(*u), params);
            (sql, values.iter().map(|v| Segment::Matched(vec![v.clone()])).collect())
        }
        Some(Segmentation::Double { dimension1, dimension2, unmatched: u }) => {
            let (t1, t2) =
                (column(slots, &dimension1.key)?.text(), column(slots, &dimension2.key)?.text());
            let first = case_of(&t1, &dimension1.values, "NULL", params);
            let second = case_of(&t2, &dimension2.values, "NULL", params);
            let n2 = dimension2.values.len();
            let sql = format!("COALESCE(({first}) * {n2} + ({second}), {})", unmatched(*u));
            let segments = dimension1
                .values
                .iter()
                .flat_map(|v1| {
                    dimension2
                        .values
                        .iter()
                        .map(move |v2| Segment::Matched(vec![v1.clone(), v2.clone()]))
                })
                .collect();
            (sql, segments)
        }
        Some(Segmentation::Linked { dimension1_key, dimension2_key, values, unmatched: u }) => {
            let (t1, t2) =
                (column(slots, dimension1_key)?.text(), column(slots, dimension2_key)?.text());
            let mut segments = Vec::new();
            let mut sql = "CASE".to_owned();
            for (first, seconds) in values {
                for second in seconds {
                    let (p1, p2) =
                        (params.text(&canonical_text(first)), params.text(&canonical_text(second)));
                    sql += &format!(" WHEN {t1} = {p1} AND {t2} = {p2} THEN {}", segments.len());
                    segments.push(Segment::Matched(vec![first.clone(), second.clone()]));
                }
            }
            if segments.is_empty() {
                (unmatched(*u), segments)
            } else {
                (sql + &format!(" ELSE {} END", unmatched(*u)), segments)
            }
        }
    })
}

/// A statement ready to run, and what its rows mean.
pub struct Statement {
    sql: String,
    params: Vec<DuckValue>,
    kind: AggregationType,
    windows: Vec<Window>,
    segments: Vec<Segment>,
    group_by: usize,
}

/// The statement answering `query` for `customers`, or why the reference engine must.
/// Errors are the ones the reference engine gives for the same question.
pub fn plan(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
    slots: Option<&OrgSlots>,
) -> Result<Result<Statement, &'static str>, UsageError> {
    if let Some(key) = query.group_by.iter().find(|key| !spec.group_by.contains(key)) {
        return Err(UsageError::UnknownGroupKey { key: key.clone() });
    }
    let cuts = windows(query.from, query.to, query.window, query.timezone)?;
    Ok(statement(org, customers, spec, query, slots, cuts))
}

fn statement(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
    slots: Option<&OrgSlots>,
    cuts: Vec<Window>,
) -> Result<Statement, &'static str> {
    let aggregation = &spec.aggregation;
    let kind = aggregation.kind;
    if !kind.is_sql_aggregate() {
        return Err("aggregation");
    }
    if aggregation.recurring && kind.may_recur() {
        return Err("recurring");
    }
    let mut params = Params::default();
    // The per-event value, whether the event is skipped, and whether it removes a value.
    let (value, skipped, removes) = if kind == AggregationType::Count {
        ("NULL::HUGEINT".to_owned(), "FALSE".to_owned(), "FALSE".to_owned())
    } else {
        if aggregation.expression.is_some() {
            return Err("expression");
        }
        let field = column(slots, aggregation.field.as_deref().ok_or("no field")?)
            .ok_or("field not in a slot")?;
        if kind == AggregationType::UniqueCount {
            let operation = match column(slots, "operation_type").ok_or("operation_type not in a slot")? {
                Column::Absent => "0".to_owned(),
                op @ Column::Slot(_) => format!(
                    "CASE WHEN NOT {} THEN 0 WHEN {t} = 'add' THEN 0 WHEN {t} = 'remove' THEN 1 ELSE 2 END",
                    op.present(),
                    t = op.text()
                ),
            };
            let text = field.text();
            (
                text.clone(),
                format!("({text} IS NULL OR {operation} = 2)"),
                format!("({operation} = 1)"),
            )
        } else {
            let number = field.number();
            (number.clone(), format!("({number} IS NULL)"), "FALSE".to_owned())
        }
    };

    let (segment, segments) = segment_sql(spec.segmentation.as_ref(), slots, &mut params)
        .ok_or("segmentation key not in a slot")?;
    // Bound after the segment's values, in the order the placeholders appear in the text.
    // The window of each event.
    let (window, join) = if cuts.len() == 1 {
        ("0".to_owned(), String::new())
    } else {
        let rows: Vec<String> = cuts
            .iter()
            .enumerate()
            .map(|(i, (from, to))| format!("({i}, {}, {})", params.micros(from), params.micros(to)))
            .collect();
        (
            "win.w".to_owned(),
            format!(
                " JOIN (VALUES {}) AS win(w, lo, hi) ON ts >= win.lo AND ts < win.hi",
                rows.join(", ")
            ),
        )
    };
    let mut groups = Vec::new();
    for (j, key) in query.group_by.iter().enumerate() {
        groups.push(format!(
            "{} AS g{j}",
            column(slots, key).ok_or("group_by key not in a slot")?.text()
        ));
    }

    // One customer is a comparison; many are a hash join (an `IN` list of a thousand values
    // is tested value by value on every row).
    let asked = if let [customer] = customers {
        format!(" WHERE customer = {}", params.text(customer))
    } else {
        let rows: Vec<String> = customers.iter().map(|c| format!("({})", params.text(c))).collect();
        format!(
            " SEMI JOIN (VALUES {}) AS asked(c) ON customer = asked.c WHERE TRUE",
            rows.join(", ")
        )
    };
    let mut conditions = vec![
        format!("org = {}", params.text(org)),
        format!("code = {}", params.text(&spec.event_code)),
        format!("ts >= {}", params.micros(&query.from)),
        format!("ts < {}", params.micros(&query.to)),
    ];
    if let Some(as_of) = query.as_of {
        conditions.push(format!("ingested_at <= {}", params.micros(&as_of)));
    }
    for filter in &spec.filters {
        let col = column(slots, &filter.property).ok_or("filter key not in a slot")?;
        let values: Vec<String> = filter.values.iter().filter_map(canonical_value).collect();
        let equals_a_value = if values.is_empty() {
            "FALSE".to_owned()
        } else {
            format!(
                "COALESCE({} IN ({}), FALSE)",
                col.text(),
                params.list(values.iter().map(String::as_str))
            )
        };
        conditions.push(match filter.op {
            FilterOp::Eq | FilterOp::In => equals_a_value,
            FilterOp::Ne | FilterOp::NotIn => format!("NOT {equals_a_value}"),
            FilterOp::Exists => col.present(),
            FilterOp::NotExists => format!("NOT {}", col.present()),
        });
    }

    let group_columns: String = (0..query.group_by.len()).map(|j| format!(", g{j}")).collect();
    let inner_groups: String = groups.iter().map(|g| format!(", {g}")).collect();
    let counted = format!("seg <> {DROPPED} AND NOT skipped");
    let aggregate = match kind {
        AggregationType::Count => return_null(),
        AggregationType::Sum | AggregationType::Mean => format!("sum(v) FILTER (WHERE {counted})"),
        AggregationType::Min => format!("min(v) FILTER (WHERE {counted})"),
        AggregationType::Max => format!("max(v) FILTER (WHERE {counted})"),
        _ => format!("count(DISTINCT v) FILTER (WHERE {counted})"),
    };
    let sql = format!(
        "WITH r AS (SELECT customer, {window} AS w, {segment} AS seg{inner_groups}, {value} AS v, \
         {skipped} AS skipped, {removes} AS removes, wide FROM events{join}{asked} AND {conditions}) \
         SELECT customer, w, seg{group_columns}, CAST(GROUPING(seg) AS INTEGER), \
         count(*) FILTER (WHERE {counted}), \
         count(*) FILTER (WHERE seg <> {DROPPED} AND skipped), \
         count(*) FILTER (WHERE seg = {DROPPED}), \
         count(*) FILTER (WHERE wide OR removes), \
         CAST({aggregate} AS HUGEINT) \
         FROM r GROUP BY GROUPING SETS ((customer, w, seg{group_columns}), (customer, w))",
        conditions = conditions.join(" AND "),
    );
    Ok(Statement {
        sql,
        params: params.0,
        kind,
        windows: cuts,
        segments,
        group_by: query.group_by.len(),
    })
}

/// `count` has no aggregate beyond the counted events.
fn return_null() -> String {
    "NULL".to_owned()
}

/// One row of the statement's answer.
struct Row {
    customer: String,
    window: usize,
    /// `None` on a window's total row.
    group: Option<(i32, Vec<Option<String>>)>,
    counted: u64,
    skipped: u64,
    excluded: u64,
    unsafe_rows: u64,
    value: Option<i128>,
}

/// A window being assembled from rows.
#[derive(Default, Clone)]
struct WindowRows {
    total: Option<(u64, Option<i128>)>,
    excluded: u64,
    groups: Vec<(GroupKey, u64, u64, Option<i128>)>,
}

/// Runs the statement and assembles one result per customer, in the order given.
pub fn run(
    conn: &Connection,
    statement: &Statement,
    spec: &MetricSpec,
    customers: &[String],
    group_limit: usize,
) -> Result<Outcome, PushdownError> {
    let mut stmt = conn.prepare(&statement.sql)?;
    let n = statement.group_by;
    let mut rows = stmt.query(duckdb::params_from_iter(statement.params.iter()))?;
    let mut by_customer: HashMap<String, Vec<WindowRows>> = HashMap::new();
    while let Some(row) = rows.next()? {
        let total_row: i32 = row.get(3 + n)?;
        let parsed = Row {
            customer: row.get(0)?,
            window: usize::try_from(row.get::<_, i32>(1)?).map_err(|_| PushdownError::Shape)?,
            group: if total_row == 0 {
                let values = (0..n)
                    .map(|j| row.get::<_, Option<String>>(3 + j))
                    .collect::<Result<_, _>>()?;
                Some((row.get(2)?, values))
            } else {
                None
            },
            counted: row.get(4 + n)?,
            skipped: row.get(5 + n)?,
            excluded: row.get(6 + n)?,
            unsafe_rows: row.get(7 + n)?,
            value: row.get(8 + n)?,
        };
        if parsed.unsafe_rows > 0 {
            return Ok(Outcome::Fallback("a wide decimal or a unique_count removal"));
        }
        let windows = by_customer
            .entry(parsed.customer.clone())
            .or_insert_with(|| vec![WindowRows::default(); statement.windows.len()]);
        let window = windows.get_mut(parsed.window).ok_or(PushdownError::Shape)?;
        match parsed.group {
            None => {
                window.total = Some((parsed.counted, parsed.value));
                window.excluded = parsed.excluded;
            }
            Some((DROPPED, _)) => {}
            Some((code, group_by)) => {
                let segment = if code == OTHER {
                    Segment::Other
                } else {
                    let i = usize::try_from(code).map_err(|_| PushdownError::Shape)?;
                    statement.segments.get(i).cloned().ok_or(PushdownError::Shape)?
                };
                let key = GroupKey { segment, group_by };
                window.groups.push((key, parsed.counted, parsed.skipped, parsed.value));
            }
        }
    }
    let empty = vec![WindowRows::default(); statement.windows.len()];
    let mut results = Vec::with_capacity(customers.len());
    for customer in customers {
        let rows = by_customer.get(customer).unwrap_or(&empty);
        let mut windows = Vec::with_capacity(rows.len());
        for (&(from, to), window) in statement.windows.iter().zip(rows) {
            if window.groups.len() > group_limit {
                return Err(UsageError::TooManyGroups { limit: group_limit }.into());
            }
            let value =
                |counted: u64, raw: Option<i128>| -> Result<Option<Decimal>, PushdownError> {
                    let Some(v) = value_of(statement.kind, counted, raw)? else { return Ok(None) };
                    Ok(Some(finalize(spec, v)?))
                };
            let (counted, raw) = window.total.unwrap_or((0, None));
            let total = value(counted, raw)?;
            let mut groups = Vec::with_capacity(window.groups.len());
            for (key, counted, skipped, raw) in &window.groups {
                groups.push(GroupUsage {
                    key: key.clone(),
                    value: value(*counted, *raw)?,
                    events_count: *counted,
                    events_skipped: *skipped,
                });
            }
            groups.sort_by(|a, b| a.key.cmp(&b.key));
            windows.push(WindowUsage { from, to, total, groups, events_excluded: window.excluded });
        }
        results.push(UsageResult { windows });
    }
    Ok(Outcome::Answered(results))
}

/// The aggregation's value from the counted events' count and the SQL aggregate.
fn value_of(
    kind: AggregationType,
    counted: u64,
    raw: Option<i128>,
) -> Result<Option<Decimal>, PushdownError> {
    let exact = |raw: i128| unscaled(raw).ok_or(PushdownError::NotExact);
    Ok(match kind {
        AggregationType::Count => Some(Decimal::from(counted)),
        AggregationType::UniqueCount => Some(Decimal::from(raw.unwrap_or(0))),
        AggregationType::Sum => Some(raw.map_or(Ok(Decimal::ZERO), exact)?),
        AggregationType::Mean => match raw {
            Some(sum) if counted > 0 => Some(divide_rounded(exact(sum)?, counted)?),
            _ => None,
        },
        _ => raw.map(exact).transpose()?,
    })
}

/// Why a pushed-down statement gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PushdownError {
    /// The question itself fails, as it does in the reference engine.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A result a decimal cannot hold exactly: the reference engine decides.
    #[error("a result is not exact as a decimal")]
    NotExact,
    #[error("unexpected row shape")]
    Shape,
    #[error(transparent)]
    Sql(#[from] duckdb::Error),
}
