//! SQL metrics on DuckDB (semantics section 7), usage tables and idempotency records.
//!
//! A `custom_sql` query is validated again ([`odometer_core::sql_metric`]), then run inside CTEs
//! that define everything it may read, for one organization, one customer and one window:
//! ```sql
//! WITH odometer_scope AS (SELECT ... FROM main.events WHERE org = $1 AND customer = $2
//!                         AND ts >= $3 AND ts < $4 AND ingested_at <= <as_of>),
//!      events AS (SELECT transaction_id, customer, code, "timestamp", ingested_at,
//!                        struct_pack(<key> := <slot text>, ...) AS properties ...),
//!      <slug> AS (SELECT customer AS customer_id, "timestamp", struct_pack(<field> :=
//!                        TRY_CAST(<slot text> AS <type>), ...) AS data ... WHERE code = '<slug>'),
//!      <each CTE name of the query> AS (SELECT NULL WHERE false)
//! SELECT * FROM (<the query>) AS odometer_result
//! ```
//! Validation guarantees the query names no other table (and no schema), so it cannot see
//! another organization, another customer, another period or any other table; the empty
//! CTEs make a query's own CTE name resolve to nothing, never to a real table, when it is used
//! out of its scope. Placeholders are parameters `$5...`. The statement runs in a sandbox: a
//! fresh in-memory DuckDB holding only the customer's rows of the period, with its own memory
//! limit (256 MB) and one thread, so each query's memory is bounded and the store's database is
//! never queried by user SQL. Each run has a time limit ([`set_sql_time_limit`]): a timer
//! thread interrupts the sandbox's connection.
//!
//! [`reference_usage`] answers the same question over a fresh in-memory DuckDB holding exactly
//! the customer's events (with its own memory limit): the oracle the scoped path is checked
//! against.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;
use odometer_core::engine::{finalize, windows};
use odometer_core::event::StoredEvent;
use odometer_core::sql_metric::{parse_sql_query, Placeholder, SqlQuery};
use odometer_core::usage::{
    GroupKey, GroupUsage, Segment, UsageError, UsageQuery, UsageResult, WindowUsage,
};
use odometer_core::MetricSpec;
use odometer_store::events::UsageQueryError;
use odometer_store::usage_tables::{FieldType, IdempotentResponse, UsageTable};
use odometer_store::StoreError;
use rust_decimal::Decimal;

use super::backend;
use super::slots::{OrgSlots, SlotOf};

/// Tables of this module in the events database.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS usage_tables (
    org        VARCHAR NOT NULL,
    slug       VARCHAR NOT NULL,
    doc        VARCHAR NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    org          VARCHAR NOT NULL,
    key          VARCHAR NOT NULL,
    request_hash VARCHAR NOT NULL,
    status       USMALLINT NOT NULL,
    body         VARCHAR NOT NULL,
    created_at   BIGINT NOT NULL
);
";

/// Default time limit of one SQL metric run.
const DEFAULT_TIME_LIMIT_MS: u64 = 10_000;

static TIME_LIMIT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIME_LIMIT_MS);

/// Memory limit of the DuckDB each SQL metric query runs in (per query, see [`sandbox`]), and
/// of the reference path's.
const SANDBOX_MEMORY_LIMIT: &str = "256MB";

/// Sets the time limit of every SQL metric run in this process (10 s by default).
pub fn set_sql_time_limit(limit: Duration) {
    TIME_LIMIT_MS
        .store(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
}

pub(super) fn create_tables(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(TABLES).map_err(backend)
}

pub(super) fn create_usage_table(
    conn: &Connection,
    org: &str,
    table: &UsageTable,
) -> Result<bool, StoreError> {
    let doc = serde_json::to_string(table).map_err(backend)?;
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let taken: i64 = tx
        .query_row(
            "SELECT count(*) FROM usage_tables WHERE org = ? AND slug = ?",
            [org, &table.api_slug],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if taken > 0 {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO usage_tables VALUES (?, ?, ?, ?)",
        duckdb::params![org, table.api_slug, doc, table.created_at.timestamp_micros()],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(true)
}

pub(super) fn usage_tables(conn: &Connection, org: &str) -> Result<Vec<UsageTable>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT doc FROM usage_tables WHERE org = ? ORDER BY created_at, slug")
        .map_err(backend)?;
    let rows = stmt.query_map([org], |row| row.get::<_, String>(0)).map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row.map_err(backend)?).map_err(backend)?);
    }
    Ok(out)
}

pub(super) fn idempotent_response(
    conn: &Connection,
    org: &str,
    key: &str,
) -> Result<Option<IdempotentResponse>, StoreError> {
    let found = conn.query_row(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE org = ? AND key = ?",
        [org, key],
        |row| {
            Ok(IdempotentResponse {
                request_hash: row.get(0)?,
                status: row.get(1)?,
                body: row.get(2)?,
            })
        },
    );
    match found {
        Ok(found) => Ok(Some(found)),
        Err(duckdb::Error::QueryReturnedNoRows) => Ok(None),
        Err(err) => Err(backend(err)),
    }
}

pub(super) fn keep_idempotent_response(
    conn: &Connection,
    org: &str,
    key: &str,
    response: IdempotentResponse,
) -> Result<IdempotentResponse, StoreError> {
    let tx = conn.unchecked_transaction().map_err(backend)?;
    if let Some(first) = idempotent_response(&tx, org, key)? {
        return Ok(first);
    }
    tx.execute(
        "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?, ?)",
        duckdb::params![
            org,
            key,
            response.request_hash,
            response.status,
            response.body,
            Utc::now().timestamp_micros()
        ],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(response)
}

/// Where a property's canonical text is, in the table the wrapper reads.
#[derive(Debug, Clone)]
struct Columns {
    /// Property key to the column holding its text; keys without one read as absent.
    keys: Vec<(String, String)>,
}

impl Columns {
    fn of_slots(slots: Option<&OrgSlots>) -> Self {
        let mut keys: Vec<(usize, String)> = slots
            .map(|s| {
                s.keys
                    .iter()
                    .filter_map(|(k, place)| match place {
                        SlotOf::Slot(i) => Some((*i, k.clone())),
                        SlotOf::Spilled => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        Self { keys: keys.into_iter().map(|(i, k)| (k, format!("s{i}"))).collect() }
    }

    fn column(&self, key: &str) -> Option<&str> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, c)| c.as_str())
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_type(t: FieldType) -> &'static str {
    match t {
        FieldType::String => "VARCHAR",
        FieldType::Int64 => "BIGINT",
        FieldType::Float64 => "DOUBLE",
        FieldType::Date32 => "DATE",
        FieldType::DateTime64 => "TIMESTAMP",
        FieldType::Uuid => "UUID",
        FieldType::Bool => "BOOLEAN",
    }
}

/// The wrapped statement (see the module documentation).
fn wrap(
    query: &SqlQuery,
    columns: &Columns,
    tables: &[UsageTable],
    as_of: Option<DateTime<Utc>>,
) -> String {
    let as_of = as_of.map_or(i64::MAX, |t| t.timestamp_micros());
    let mut ctes = vec![format!(
        "odometer_scope AS (SELECT * FROM main.events WHERE org = $1 AND customer = $2 \
         AND ts >= $3 AND ts < $4 AND ingested_at <= {as_of})"
    )];
    let properties = if columns.keys.is_empty() {
        "CAST(NULL AS VARCHAR)".to_owned()
    } else {
        // DuckDB's member names are case-insensitive: of keys differing only in case, the
        // first seen is the member.
        let mut seen = BTreeSet::new();
        let members: Vec<String> = columns
            .keys
            .iter()
            .filter(|(key, _)| seen.insert(key.to_lowercase()))
            .map(|(key, column)| format!("{} := {column}", quote_ident(key)))
            .collect();
        format!("struct_pack({})", members.join(", "))
    };
    ctes.push(format!(
        "events AS (SELECT transaction_id, customer, code, make_timestamp(ts) AS \"timestamp\", \
         make_timestamp(ingested_at) AS ingested_at, {properties} AS properties \
         FROM odometer_scope)"
    ));
    let mut defined: BTreeSet<String> =
        ["odometer_scope", "events"].into_iter().map(str::to_owned).collect();
    for table in tables {
        if !defined.insert(table.api_slug.clone()) {
            continue;
        }
        let data = if table.fields.is_empty() {
            "CAST(NULL AS VARCHAR)".to_owned()
        } else {
            let members: Vec<String> = table
                .fields
                .iter()
                .map(|(name, t)| {
                    let text = columns.column(name).unwrap_or("CAST(NULL AS VARCHAR)");
                    format!("{} := TRY_CAST({text} AS {})", quote_ident(name), sql_type(*t))
                })
                .collect();
            format!("struct_pack({})", members.join(", "))
        };
        // The slug is restricted to [a-z][a-z0-9_]* when the table is created.
        ctes.push(format!(
            "{} AS (SELECT customer AS customer_id, make_timestamp(ts) AS \"timestamp\", \
             {data} AS data, transaction_id FROM odometer_scope WHERE code = '{}')",
            quote_ident(&table.api_slug),
            table.api_slug
        ));
    }
    for name in &query.cte_names {
        if defined.insert(name.clone()) {
            ctes.push(format!(
                "{} AS (SELECT NULL AS odometer_nothing WHERE false)",
                quote_ident(name)
            ));
        }
    }
    format!("WITH {}\nSELECT * FROM (\n{}\n) AS odometer_result", ctes.join(",\n"), query.text)
}

/// `DATE(x)` as Zenskar's ClickHouse SQL writes it.
fn prepare_connection(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE OR REPLACE TEMP MACRO date(x) AS CAST(x AS DATE)").map_err(backend)
}

/// Validates the metric's query against the organization's tables.
fn validated(spec: &MetricSpec, tables: &[UsageTable]) -> Result<SqlQuery, UsageQueryError> {
    let sql = spec
        .aggregation
        .sql
        .as_ref()
        .ok_or_else(|| StoreError::Backend("a custom_sql metric without its query".into()))?;
    let failed = |message: String| UsageQueryError::from(UsageError::SqlFailed { message });
    let query = parse_sql_query(&sql.query).map_err(|e| failed(e.to_string()))?;
    query
        .check_tables(|name| name == "events" || tables.iter().any(|t| t.api_slug == name))
        .map_err(|e| failed(e.to_string()))?;
    Ok(query)
}

/// One run: the rows and column names the query answered for one window.
struct Answer {
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
}

fn run_once(
    conn: &Connection,
    statement: &str,
    query: &SqlQuery,
    org: &str,
    customer: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    max_rows: usize,
) -> Result<Answer, UsageQueryError> {
    let mut params = vec![
        Value::Text(org.to_owned()),
        Value::Text(customer.to_owned()),
        Value::BigInt(from.timestamp_micros()),
        Value::BigInt(to.timestamp_micros()),
    ];
    for placeholder in &query.placeholders {
        params.push(match placeholder {
            Placeholder::StartDate => {
                Value::Timestamp(TimeUnit::Microsecond, from.timestamp_micros())
            }
            Placeholder::EndDate => Value::Timestamp(TimeUnit::Microsecond, to.timestamp_micros()),
            Placeholder::CustomerExternalId => Value::Text(customer.to_owned()),
        });
    }
    let limit_ms = TIME_LIMIT_MS.load(Ordering::Relaxed);
    let interrupt = conn.interrupt_handle();
    let (done, finished) = mpsc::channel::<()>();
    let timer = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_millis(limit_ms))
            == Err(mpsc::RecvTimeoutError::Timeout)
        {
            interrupt.interrupt();
            return true;
        }
        false
    });
    let result = execute(conn, statement, &params, max_rows);
    let _ = done.send(());
    let timed_out = timer.join().unwrap_or(false);
    match result {
        Ok(answer) => Ok(answer),
        Err(_) if timed_out => Err(UsageError::SqlTimeout { millis: limit_ms }.into()),
        Err(RunError::TooManyRows) => Err(UsageError::TooManyGroups { limit: max_rows }.into()),
        Err(RunError::Sql(message)) => Err(UsageError::SqlFailed { message }.into()),
    }
}

enum RunError {
    Sql(String),
    TooManyRows,
}

fn execute(
    conn: &Connection,
    statement: &str,
    params: &[Value],
    max_rows: usize,
) -> Result<Answer, RunError> {
    let sql_error = |e: duckdb::Error| RunError::Sql(e.to_string());
    let mut stmt = conn.prepare(statement).map_err(sql_error)?;
    let mut rows = stmt.query(duckdb::params_from_iter(params.iter())).map_err(sql_error)?;
    let names = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        if out.len() == max_rows {
            return Err(RunError::TooManyRows);
        }
        let mut values = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            values.push(row.get::<_, Value>(i).map_err(sql_error)?);
        }
        out.push(values);
    }
    Ok(Answer { names, rows: out })
}

fn number(value: &Value) -> Option<Result<Decimal, String>> {
    let exact =
        |d: Option<Decimal>| d.ok_or_else(|| "a value does not fit in a decimal".to_owned());
    Some(match value {
        Value::TinyInt(v) => Ok(Decimal::from(*v)),
        Value::SmallInt(v) => Ok(Decimal::from(*v)),
        Value::Int(v) => Ok(Decimal::from(*v)),
        Value::BigInt(v) => Ok(Decimal::from(*v)),
        Value::UTinyInt(v) => Ok(Decimal::from(*v)),
        Value::USmallInt(v) => Ok(Decimal::from(*v)),
        Value::UInt(v) => Ok(Decimal::from(*v)),
        Value::UBigInt(v) => Ok(Decimal::from(*v)),
        Value::HugeInt(v) => exact(Decimal::try_from_i128_with_scale(*v, 0).ok()),
        Value::UHugeInt(v) => exact(
            i128::try_from(*v).ok().and_then(|v| Decimal::try_from_i128_with_scale(v, 0).ok()),
        ),
        Value::Decimal(d) => d.to_string().parse::<Decimal>().map_err(|e| e.to_string()),
        Value::Float(f) => float(f64::from(*f)),
        Value::Double(f) => float(*f),
        _ => return None,
    })
}

fn float(f: f64) -> Result<Decimal, String> {
    if !f.is_finite() {
        return Err(format!("the value {f} is not a finite number"));
    }
    // Rust prints the shortest text that reads back as the same double.
    format!("{f}")
        .parse::<Decimal>()
        .map_err(|_| format!("the value {f} does not fit in a decimal"))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Boolean(b) => Some(b.to_string()),
        Value::Text(s) | Value::Enum(s) => Some(s.clone()),
        Value::Date32(days) => Some(
            chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| {
                    epoch.checked_add_signed(chrono::TimeDelta::days(i64::from(*days)))
                })
                .map_or_else(|| days.to_string(), |d| d.to_string()),
        ),
        Value::Timestamp(unit, v) => {
            let micros = unit.to_micros(*v);
            Some(
                DateTime::<Utc>::from_timestamp_micros(micros)
                    .map_or_else(|| micros.to_string(), |t| odometer_core::time::format_micros(&t)),
            )
        }
        other => match number(other) {
            Some(Ok(d)) => Some(d.normalize().to_string()),
            _ => Some(format!("{other:?}")),
        },
    }
}

/// Reads one window's answer: the `value` (or `quantity`, or else first numeric) column is
/// the usage, the others are group keys.
fn window_usage(
    spec: &MetricSpec,
    answer: &Answer,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> Result<WindowUsage, UsageQueryError> {
    let failed = |message: String| UsageQueryError::from(UsageError::SqlFailed { message });
    let by_name = |wanted: &str| answer.names.iter().position(|n| n.eq_ignore_ascii_case(wanted));
    let value_column = by_name("value").or_else(|| by_name("quantity")).or_else(|| {
        (0..answer.names.len()).find(|&i| {
            answer.rows.iter().any(|row| number(&row[i]).is_some())
                && answer
                    .rows
                    .iter()
                    .all(|row| matches!(row[i], Value::Null) || number(&row[i]).is_some())
        })
    });
    let Some(value_column) = value_column else {
        if answer.rows.is_empty() {
            return Ok(WindowUsage {
                from,
                to,
                total: None,
                groups: Vec::new(),
                events_excluded: 0,
            });
        }
        return Err(failed(
            "the query has no 'value' or 'quantity' column and no numeric column".to_owned(),
        ));
    };
    let value_of = |row: &Vec<Value>| -> Result<Option<Decimal>, UsageQueryError> {
        match &row[value_column] {
            Value::Null => Ok(None),
            v => match number(v) {
                Some(Ok(d)) => Ok(Some(finalize(spec, d)?)),
                Some(Err(message)) => Err(failed(message)),
                None => Err(failed(format!(
                    "column '{}' is the usage but holds a non-numeric value",
                    answer.names[value_column]
                ))),
            },
        }
    };
    let key_columns: Vec<usize> = (0..answer.names.len()).filter(|&i| i != value_column).collect();
    if key_columns.is_empty() {
        let total = match answer.rows.as_slice() {
            [] => None,
            [row] => value_of(row)?,
            _ => {
                return Err(failed(
                    "the query answered several rows without a group column".to_owned(),
                ))
            }
        };
        return Ok(WindowUsage { from, to, total, groups: Vec::new(), events_excluded: 0 });
    }
    let mut groups = Vec::with_capacity(answer.rows.len());
    let mut total: Option<Decimal> = None;
    for row in &answer.rows {
        let value = value_of(row)?;
        if let Some(v) = value {
            total = Some(total.unwrap_or_default().checked_add(v).ok_or(UsageError::Overflow)?);
        }
        groups.push(GroupUsage {
            key: GroupKey {
                segment: Segment::None,
                group_by: key_columns.iter().map(|&i| text(&row[i])).collect(),
            },
            value,
            events_count: 0,
            events_skipped: 0,
        });
    }
    groups.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(WindowUsage { from, to, total: total.map(|d| d.normalize()), groups, events_excluded: 0 })
}

/// Usage of a SQL metric for each customer, on the store's own connection.
pub(super) fn usage(
    conn: &Connection,
    slot_columns: usize,
    slots: Option<&OrgSlots>,
    org: &str,
    customers: &[String],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<Vec<UsageResult>, UsageQueryError> {
    if customers.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(key) = query.group_by.first() {
        return Err(UsageError::UnknownGroupKey { key: key.clone() }.into());
    }
    let cuts = windows(query.from, query.to, query.window, query.timezone)?;
    let tables = usage_tables(conn, org)?;
    let sql = validated(spec, &tables)?;
    let statement = wrap(&sql, &Columns::of_slots(slots), &tables, query.as_of);
    let period = (cuts.first().map_or(query.from, |c| c.0), cuts.last().map_or(query.to, |c| c.1));
    let mut results = Vec::with_capacity(customers.len());
    for customer in customers {
        let sandbox = sandbox(conn, org, customer, period, slot_columns)?;
        let mut windows = Vec::with_capacity(cuts.len());
        for &cut in &cuts {
            let answer =
                run_once(&sandbox, &statement, &sql, org, customer, cut, query.group_limit)?;
            windows.push(window_usage(spec, &answer, cut)?);
        }
        results.push(UsageResult { windows });
    }
    Ok(results)
}

/// A fresh in-memory DuckDB holding one customer's rows of `main.events` for the period (the
/// columns the wrapped statement reads), with its own memory limit and one thread: the query
/// runs there, so its memory is bounded per query and it never touches the store's database.
/// The wrapped statement reads `main.events` exactly as on the store's database, so scoping
/// stays in force inside the sandbox too.
fn sandbox(
    conn: &Connection,
    org: &str,
    customer: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    slot_columns: usize,
) -> Result<Connection, UsageQueryError> {
    let slots: Vec<String> = (0..super::slots::SLOTS).map(|i| format!("s{i}")).collect();
    // Slots no organization has taken have no column yet: NULL in the copy.
    let selected: Vec<String> = (0..super::slots::SLOTS)
        .map(|i| if i < slot_columns { format!("s{i}") } else { format!("NULL::VARCHAR AS s{i}") })
        .collect();
    let columns =
        format!("org, customer, transaction_id, code, ts, ingested_at, {}", selected.join(", "));
    let sandbox = Connection::open_in_memory().map_err(backend)?;
    sandbox
        .execute_batch(&format!(
            "SET memory_limit = '{SANDBOX_MEMORY_LIMIT}'; SET threads = 1; SET temp_directory = ''; \
             CREATE TABLE events (org VARCHAR, customer VARCHAR, transaction_id VARCHAR, \
             code VARCHAR, ts BIGINT, ingested_at BIGINT, {});",
            slots.iter().map(|s| format!("{s} VARCHAR")).collect::<Vec<_>>().join(", ")
        ))
        .map_err(backend)?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {columns} FROM events WHERE org = ? AND customer = ? AND ts >= ? AND ts < ?"
        ))
        .map_err(backend)?;
    let batches = stmt
        .query_arrow(duckdb::params![org, customer, from.timestamp_micros(), to.timestamp_micros()])
        .map_err(backend)?;
    let mut appender = sandbox.appender("events").map_err(backend)?;
    for batch in batches {
        appender.append_record_batch(batch).map_err(backend)?;
    }
    appender.flush().map_err(backend)?;
    drop(appender);
    prepare_connection(&sandbox)?;
    Ok(sandbox)
}

/// The reference answer for one customer: the same query over a fresh in-memory DuckDB that
/// holds exactly `events` (the customer's), with `keys` (the organization's property keys) as
/// its property columns and `tables` as its usage tables.
pub fn reference_usage(
    org: &str,
    customer: &str,
    events: &[StoredEvent],
    keys: &[String],
    tables: &[UsageTable],
    spec: &MetricSpec,
    query: &UsageQuery,
) -> Result<UsageResult, UsageQueryError> {
    if let Some(key) = query.group_by.first() {
        return Err(UsageError::UnknownGroupKey { key: key.clone() }.into());
    }
    let cuts = windows(query.from, query.to, query.window, query.timezone)?;
    let sql = validated(spec, tables)?;
    let conn = Connection::open_in_memory().map_err(backend)?;
    conn.execute_batch(&format!(
        "SET memory_limit = '{SANDBOX_MEMORY_LIMIT}'; SET threads = 1; SET temp_directory = '';"
    ))
    .map_err(backend)?;
    let columns = Columns {
        keys: keys.iter().enumerate().map(|(i, k)| (k.clone(), format!("p{i}"))).collect(),
    };
    let mut definition = vec![
        "org VARCHAR".to_owned(),
        "customer VARCHAR".to_owned(),
        "transaction_id VARCHAR".to_owned(),
        "code VARCHAR".to_owned(),
        "ts BIGINT".to_owned(),
        "ingested_at BIGINT".to_owned(),
    ];
    definition.extend((0..keys.len()).map(|i| format!("p{i} VARCHAR")));
    conn.execute_batch(&format!("CREATE TABLE events ({})", definition.join(", ")))
        .map_err(backend)?;
    {
        let marks = vec!["?"; 6 + keys.len()].join(", ");
        let mut insert =
            conn.prepare(&format!("INSERT INTO events VALUES ({marks})")).map_err(backend)?;
        for stored in events {
            let e = &stored.event;
            let mut row: Vec<Value> = vec![
                Value::Text(org.to_owned()),
                Value::Text(e.customer.clone()),
                Value::Text(e.transaction_id.clone()),
                Value::Text(e.code.clone()),
                Value::BigInt(e.timestamp.timestamp_micros()),
                Value::BigInt(stored.ingested_at.timestamp_micros()),
            ];
            for key in keys {
                row.push(
                    e.properties
                        .get(key)
                        .and_then(odometer_core::engine::canonical_value)
                        .map_or(Value::Null, Value::Text),
                );
            }
            insert.execute(duckdb::params_from_iter(row.iter())).map_err(backend)?;
        }
    }
    let statement = wrap(&sql, &columns, tables, query.as_of);
    prepare_connection(&conn)?;
    let mut windows = Vec::with_capacity(cuts.len());
    for &cut in &cuts {
        let answer = run_once(&conn, &statement, &sql, org, customer, cut, query.group_limit)?;
        windows.push(window_usage(spec, &answer, cut)?);
    }
    Ok(UsageResult { windows })
}
