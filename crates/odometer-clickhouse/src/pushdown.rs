//! Usage computed by ClickHouse over the typed property arrays: one statement per question,
//! whatever the number of customers, windows and groups.
//!
//! Pushed down: `count`, `sum`, `min`, `max`, `mean` and `unique_count`, not recurring, reading
//! a top-level `field` (not an expression), with any filters, segmentation and `group_by`, up
//! to [`MAX_PUSHED_WINDOWS`] windows in any zone, and `as_of`. Everything else (latest,
//! weighted sums, recurring metrics, expressions, dotted paths) is answered by the reference
//! engine over the customers' events read from ClickHouse.
//!
//! The statement groups twice over one filtered subquery: by (customer, window, segment,
//! group_by...) for the groups, and by (customer, window) for each window's total (semantics
//! 4.9: the aggregation over all the window's non-excluded events, not a sum of groups) and
//! its excluded count. A newer server (22.6 and later) would say this in one pass with `GROUP
//! BY GROUPING SETS`, and could put the subquery in a `WITH`; 18.16 has neither, so it is a
//! `UNION ALL` of two `GROUP BY`s over the same subquery text.
//!
//! A pushed-down answer is only given when it is exactly the reference engine's: rows with a
//! decimal `prop_nums` cannot hold (`wide`), `unique_count` removals, and sums a decimal
//! cannot hold make the statement report [`Outcome::Fallback`].

use std::collections::HashMap;
use std::str::FromStr;

use odometer_core::engine::{canonical_value, divide_rounded, finalize, windows, Window};
use odometer_core::metric::{AggregationType, FilterOp, MetricSpec, Segmentation, Unmatched};
use odometer_core::usage::{
    GroupKey, GroupUsage, Segment, UsageError, UsageQuery, UsageResult, WindowUsage,
};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::escape::{literal, literals};

/// Segment code of events outside the matrix under `unmatched: other`.
const OTHER: i32 = -1;
/// Segment code of events outside the matrix under `unmatched: drop`.
const DROPPED: i32 = -2;

/// Windows a statement tells apart (each row compares its timestamp with every boundary:
/// 18.16's lambdas cannot be relied on to read the row's columns, so this is a `multiIf`).
pub const MAX_PUSHED_WINDOWS: usize = 256;

/// What a pushed-down question came to.
#[derive(Debug)]
pub enum Outcome {
    Answered(Vec<UsageResult>),
    /// The reference engine must answer (see the module docs).
    Fallback(&'static str),
}

/// The SQL reading property `key` of a row; `None` for a dotted path (it may reach into
/// nested objects, which only the JSON has).
#[derive(Debug, Clone)]
struct Property(String);

impl Property {
    fn of(key: &str) -> Option<Self> {
        (!key.contains('.')).then(|| Self(format!("indexOf(prop_keys, {})", literal(key))))
    }

    fn text(&self) -> String {
        format!("prop_texts[{}]", self.0)
    }

    fn number(&self) -> String {
        format!("prop_nums[{}]", self.0)
    }

    /// Present and not null.
    fn present(&self) -> String {
        format!("(prop_present[{}] = 1)", self.0)
    }
}

fn canonical_text(text: &str) -> String {
    canonical_value(&Value::String(text.to_owned())).unwrap_or_else(|| text.to_owned())
}

/// The 1-based position of the text of `property` among `listed` (canonical), 0 when it is
/// not listed or has no text; the first listed spelling of a canonical value wins, as in the
/// engine.
fn position(property: &Property, listed: &[String]) -> String {
    if listed.is_empty() {
        return "0".to_owned();
    }
    let canonical: Vec<String> = listed.iter().map(|v| canonical_text(v)).collect();
    let text = property.text();
    format!(
        "if(isNull({text}), 0, indexOf([{}], assumeNotNull({text})))",
        literals(canonical.iter().map(String::as_str))
    )
}

/// The segment code expression and the segments its codes (from 0) stand for.
fn segment_sql(segmentation: Option<&Segmentation>) -> Option<(String, Vec<Segment>)> {
    let unmatched = |u: Unmatched| match u {
        Unmatched::Other => OTHER,
        Unmatched::Drop => DROPPED,
    };
    Some(match segmentation {
        None => ("0".into(), vec![Segment::None]),
        Some(Segmentation::Single { key, values, unmatched: u }) => {
            let at = position(&Property::of(key)?, values);
            let sql = format!("if(({at}) = 0, {}, ({at}) - 1)", unmatched(*u));
            (sql, values.iter().map(|v| Segment::Matched(vec![v.clone()])).collect())
        }
        Some(Segmentation::Double { dimension1, dimension2, unmatched: u }) => {
            let first = position(&Property::of(&dimension1.key)?, &dimension1.values);
            let second = position(&Property::of(&dimension2.key)?, &dimension2.values);
            let n2 = dimension2.values.len();
            let sql = format!(
                "if(({first}) = 0 OR ({second}) = 0, {}, (({first}) - 1) * {n2} + ({second}) - 1)",
                unmatched(*u)
            );
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
                (Property::of(dimension1_key)?.text(), Property::of(dimension2_key)?.text());
            let mut segments = Vec::new();
            let mut branches = Vec::new();
            for (first, seconds) in values {
                for second in seconds {
                    branches.push(format!(
                        "ifNull({t1} = {} AND {t2} = {}, 0), {}",
                        literal(&canonical_text(first)),
                        literal(&canonical_text(second)),
                        segments.len()
                    ));
                    segments.push(Segment::Matched(vec![first.clone(), second.clone()]));
                }
            }
            if segments.is_empty() {
                (unmatched(*u).to_string(), segments)
            } else {
                (format!("multiIf({}, {})", branches.join(", "), unmatched(*u)), segments)
            }
        }
    })
}

/// A statement ready to run, and what its rows mean.
#[derive(Debug)]
pub struct Statement {
    pub sql: String,
    kind: AggregationType,
    windows: Vec<Window>,
    segments: Vec<Segment>,
    group_by: usize,
}

impl Statement {
    /// A statement of [`crate::state`]: rows in this module's layout, one group per window
    /// (no segmentation, no `group_by`).
    pub fn folded(kind: AggregationType, windows: Vec<Window>) -> Self {
        Self { sql: String::new(), kind, windows, segments: vec![Segment::None], group_by: 0 }
    }

    /// Columns of each answer row.
    pub fn columns(&self) -> usize {
        9 + self.group_by
    }
}

/// The statement answering `query` for `customers`, or why the reference engine must.
/// Errors are the ones the reference engine gives for the same question.
pub fn plan(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<Result<Statement, &'static str>, UsageError> {
    Ok(statement(org, customers, spec, query, checked_windows(spec, query)?))
}

/// The question's windows, once its `group_by` keys are checked: the errors the reference
/// engine gives first, whichever path answers.
pub fn checked_windows(spec: &MetricSpec, query: &UsageQuery) -> Result<Vec<Window>, UsageError> {
    if let Some(key) = query.group_by.iter().find(|key| !spec.group_by.contains(key)) {
        return Err(UsageError::UnknownGroupKey { key: key.clone() });
    }
    windows(query.from, query.to, query.window, query.timezone)
}

fn statement(
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
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
    if cuts.len() > MAX_PUSHED_WINDOWS {
        return Err("too many windows to push down");
    }
    // The per-event value, whether the event is skipped, and whether it removes a value.
    let (value, skipped, removes) = if kind == AggregationType::Count {
        ("NULL".to_owned(), "0".to_owned(), "0".to_owned())
    } else {
        if aggregation.expression.is_some() {
            return Err("expression");
        }
        let field = Property::of(aggregation.field.as_deref().ok_or("no field")?)
            .ok_or("a dotted field")?;
        if kind == AggregationType::UniqueCount {
            let op = Property::of("operation_type").ok_or("operation_type")?;
            let t = op.text();
            let operation = format!(
                "multiIf(NOT {}, 0, ifNull({t} = 'add', 0), 0, ifNull({t} = 'remove', 0), 1, 2)",
                op.present()
            );
            let text = field.text();
            (
                text.clone(),
                format!("(isNull({text}) OR {operation} = 2)"),
                format!("({operation} = 1)"),
            )
        } else {
            let number = field.number();
            (number.clone(), format!("isNull({number})"), "0".to_owned())
        }
    };

    let (segment, segments) =
        segment_sql(spec.segmentation.as_ref()).ok_or("a dotted segmentation key")?;
    let window = if cuts.len() == 1 {
        "0".to_owned()
    } else {
        let branches: Vec<String> = cuts
            .iter()
            .enumerate()
            .take(cuts.len() - 1)
            .map(|(i, (_, to))| format!("ts < {}, {i}", to.timestamp_micros()))
            .collect();
        format!("multiIf({}, {})", branches.join(", "), cuts.len() - 1)
    };
    let mut groups = Vec::new();
    for (j, key) in query.group_by.iter().enumerate() {
        groups
            .push(format!("{} AS g{j}", Property::of(key).ok_or("a dotted group_by key")?.text()));
    }

    let asked = if let [customer] = customers {
        format!("customer = {}", literal(customer))
    } else {
        format!("customer IN ({})", literals(customers.iter().map(String::as_str)))
    };
    let mut conditions = vec![
        format!("org = {}", literal(org)),
        format!("code = {}", literal(&spec.event_code)),
        asked,
        format!("ts >= {}", query.from.timestamp_micros()),
        format!("ts < {}", query.to.timestamp_micros()),
    ];
    if let Some(as_of) = query.as_of {
        conditions.push(format!("ingested_at <= {}", as_of.timestamp_micros()));
    }
    for filter in &spec.filters {
        let property = Property::of(&filter.property).ok_or("a dotted filter key")?;
        let values: Vec<String> = filter.values.iter().filter_map(canonical_value).collect();
        let equals_a_value = if values.is_empty() {
            "0".to_owned()
        } else {
            let text = property.text();
            format!(
                "if(isNull({text}), 0, assumeNotNull({text}) IN ({}))",
                literals(values.iter().map(String::as_str))
            )
        };
        conditions.push(match filter.op {
            FilterOp::Eq | FilterOp::In => format!("({equals_a_value})"),
            FilterOp::Ne | FilterOp::NotIn => format!("NOT ({equals_a_value})"),
            FilterOp::Exists => property.present(),
            FilterOp::NotExists => format!("NOT {}", property.present()),
        });
    }

    let group_columns: String = (0..query.group_by.len()).map(|j| format!(", g{j}")).collect();
    let no_groups: String =
        (0..query.group_by.len()).map(|_| ", CAST(NULL AS Nullable(String))".to_owned()).collect();
    let inner_groups: String = groups.iter().map(|g| format!(", {g}")).collect();
    let counted = format!("(seg != {DROPPED} AND skipped = 0)");
    let aggregate = match kind {
        AggregationType::Count => "NULL".to_owned(),
        AggregationType::Sum | AggregationType::Mean => format!("sumIf(v, {counted})"),
        AggregationType::Min => format!("minIf(v, {counted})"),
        AggregationType::Max => format!("maxIf(v, {counted})"),
        _ => format!("uniqExactIf(v, {counted})"),
    };
    let measures = format!(
        "countIf({counted}), countIf(seg != {DROPPED} AND skipped = 1), \
         countIf(seg = {DROPPED}), countIf(wide = 1 OR removes = 1), {aggregate}"
    );
    let inner = format!(
        "SELECT customer, toInt32({window}) AS w, toInt32({segment}) AS seg{inner_groups}, \
         {value} AS v, toUInt8({skipped}) AS skipped, toUInt8({removes}) AS removes, wide \
         FROM events WHERE {}",
        conditions.join(" AND ")
    );
    let sql = format!(
        "SELECT customer, w, seg{group_columns}, toUInt8(0), {measures} FROM ({inner}) \
         GROUP BY customer, w, seg{group_columns} \
         UNION ALL \
         SELECT customer, w, toInt32(0){no_groups}, toUInt8(1), {measures} FROM ({inner}) \
         GROUP BY customer, w"
    );
    Ok(Statement { sql, kind, windows: cuts, segments, group_by: query.group_by.len() })
}

/// A window being assembled from rows.
#[derive(Debug, Default, Clone)]
struct WindowRows {
    total: Option<(u64, Option<String>)>,
    excluded: u64,
    groups: Vec<(GroupKey, u64, u64, Option<String>)>,
}

/// Why a pushed-down statement gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PushdownError {
    /// The question itself fails, as it does in the reference engine.
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("unexpected answer: {0}")]
    Shape(String),
}

fn shape(what: impl Into<String>) -> PushdownError {
    PushdownError::Shape(what.into())
}

fn parse<T: FromStr>(field: &Option<String>, what: &str) -> Result<T, PushdownError> {
    field
        .as_deref()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| shape(format!("{what} is {field:?}")))
}

/// Assembles the statement's rows into one result per customer, in the order given.
pub fn assemble(
    statement: &Statement,
    rows: Vec<Vec<Option<String>>>,
    spec: &MetricSpec,
    customers: &[String],
    group_limit: usize,
) -> Result<Outcome, PushdownError> {
    let n = statement.group_by;
    let mut by_customer: HashMap<String, Vec<WindowRows>> = HashMap::new();
    for row in rows {
        let customer = row[0].clone().ok_or_else(|| shape("a NULL customer"))?;
        let window: usize = parse(&row[1], "window")?;
        let segment: i32 = parse(&row[2], "segment")?;
        let total_row: u8 = parse(&row[3 + n], "total marker")?;
        let counted: u64 = parse(&row[4 + n], "counted")?;
        let skipped: u64 = parse(&row[5 + n], "skipped")?;
        let excluded: u64 = parse(&row[6 + n], "excluded")?;
        let unsafe_rows: u64 = parse(&row[7 + n], "unsafe")?;
        let value = row[8 + n].clone();
        if unsafe_rows > 0 {
            return Ok(Outcome::Fallback("a wide decimal or a unique_count removal"));
        }
        let windows = by_customer
            .entry(customer)
            .or_insert_with(|| vec![WindowRows::default(); statement.windows.len()]);
        let slot = windows.get_mut(window).ok_or_else(|| shape("a window out of range"))?;
        if total_row == 1 {
            slot.total = Some((counted, value));
            slot.excluded = excluded;
            continue;
        }
        let group_by: Vec<Option<String>> = row[3..3 + n].to_vec();
        let segment = match segment {
            DROPPED => continue,
            OTHER => Segment::Other,
            code => {
                let i = usize::try_from(code).map_err(|_| shape("a negative segment"))?;
                statement.segments.get(i).cloned().ok_or_else(|| shape("unknown segment"))?
            }
        };
        slot.groups.push((GroupKey { segment, group_by }, counted, skipped, value));
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
            let (counted, raw) = window.total.clone().unwrap_or((0, None));
            let Some(total) = value_of(statement.kind, counted, raw.as_deref())? else {
                return Ok(Outcome::Fallback("a sum a decimal cannot hold"));
            };
            let total = total.map(|v| finalize(spec, v)).transpose()?;
            let mut groups = Vec::with_capacity(window.groups.len());
            for (key, counted, skipped, raw) in &window.groups {
                let Some(value) = value_of(statement.kind, *counted, raw.as_deref())? else {
                    return Ok(Outcome::Fallback("a sum a decimal cannot hold"));
                };
                groups.push(GroupUsage {
                    key: key.clone(),
                    value: value.map(|v| finalize(spec, v)).transpose()?,
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

/// The aggregation's value from the counted events and the SQL aggregate's text; `None`
/// (outer) when the aggregate is not exact as a decimal.
#[allow(clippy::option_option)]
fn value_of(
    kind: AggregationType,
    counted: u64,
    raw: Option<&str>,
) -> Result<Option<Option<Decimal>>, PushdownError> {
    let exact = |text: &str| Decimal::from_str_exact(text).ok().map(|d| d.normalize());
    Ok(match kind {
        AggregationType::Count => Some(Some(Decimal::from(counted))),
        AggregationType::UniqueCount => {
            let distinct: u64 = raw
                .map_or(Ok(0), |t| t.parse().map_err(|_| shape(format!("a distinct count {t}"))))?;
            Some(Some(Decimal::from(distinct)))
        }
        AggregationType::Sum => match raw {
            None => Some(Some(Decimal::ZERO)),
            Some(text) => exact(text).map(Some),
        },
        AggregationType::Mean => match raw {
            Some(sum) if counted > 0 => match exact(sum) {
                Some(sum) => Some(Some(divide_rounded(sum, counted)?)),
                None => None,
            },
            _ => Some(None),
        },
        // min and max of no events are NULL whatever the server's aggregate of nothing says.
        _ if counted == 0 => Some(None),
        _ => match raw {
            None => Some(None),
            Some(text) => exact(text).map(Some),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_exact_or_refused() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        let sum = AggregationType::Sum;
        assert_eq!(value_of(sum, 2, Some("1.5000000000")).unwrap(), Some(Some(d("1.5"))));
        assert_eq!(value_of(sum, 0, None).unwrap(), Some(Some(Decimal::ZERO)));
        let wide = "99999999999999999999999999999.9000000000";
        assert_eq!(value_of(sum, 2, Some(wide)).unwrap(), None, "30 digits do not fit");
        let min = AggregationType::Min;
        assert_eq!(value_of(min, 0, Some("0.0000000000")).unwrap(), Some(None));
        assert_eq!(value_of(min, 1, Some("-2.0000000000")).unwrap(), Some(Some(d("-2"))));
        let mean = AggregationType::Mean;
        assert_eq!(
            value_of(mean, 3, Some("1.0000000000")).unwrap().unwrap().unwrap().round_dp(4),
            d("0.3333")
        );
        assert_eq!(value_of(mean, 0, None).unwrap(), Some(None));
        let unique = AggregationType::UniqueCount;
        assert_eq!(value_of(unique, 9, Some("4")).unwrap(), Some(Some(d("4"))));
    }

    #[test]
    fn properties_read_the_typed_arrays_and_refuse_dotted_paths() {
        let p = Property::of("re'gion").unwrap();
        assert_eq!(p.text(), r"prop_texts[indexOf(prop_keys, 're\'gion')]");
        assert!(Property::of("usage.bytes").is_none());
    }
}
