//! SQL metrics (semantics section 7): the validation of a `custom_sql` query, and the text a
//! backend runs.
//!
//! A query is checked once, when it is saved, and again by the backend before it runs it:
//! - Placeholders (`{{start_date}}`, `{{end_date}}`, `{{customer.external_id}}`) are replaced,
//!   before parsing, by numbered parameters (`$5`, ...) padded with spaces to the placeholder's
//!   length, so every line and column the parser reports is one of the text as written. Values
//!   are bound, never pasted.
//! - The whole text is parsed (DuckDB dialect) and must be exactly one statement: a comment
//!   cannot hide a second one, since the parser sees the comment as a comment and the rest as
//!   statements.
//! - The statement is a read-only query: no `INSERT`/`UPDATE`/`DELETE`/`MERGE` (also not inside a
//!   CTE), no `SELECT ... INTO`, no `WITH RECURSIVE` (unbounded recursion), no `CONNECT BY`, no
//!   `SETTINGS`/`FORMAT`/`FOR` clauses, no locks.
//! - Tables are unqualified names; [`SqlQuery::check_tables`] checks them against what the
//!   metric may see (`events` and the organization's usage tables), with the query's own CTE
//!   names allowed. No table functions (`read_csv`, `read_parquet`, `glob`, ...), `UNNEST`,
//!   `PIVOT` or other table factors.
//! - Every function is on [`ALLOWED_FUNCTIONS`] (aggregates, arithmetic, text and date basics,
//!   conditionals, window functions); `CAST`, `CASE`, `EXTRACT` and operators are syntax and
//!   always allowed. No other parameters than the placeholders.
//!
//! A backend runs [`SqlQuery::text`] inside CTEs that define `events` and the usage tables for
//! one organization, customer and period; it also defines every CTE name the query uses as an
//! empty relation at the outermost level ([`SqlQuery::cte_names`]), so a CTE name used out of
//! its scope can never resolve to a real table.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArguments, ObjectName, Query, SetExpr, Spanned, Statement, TableFactor, Value,
    ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The longest query accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// The first parameter number the placeholders use: `$1` to `$4` are the backend's own (the
/// organization, the customer and the period it scopes the tables to).
pub const FIRST_PLACEHOLDER_PARAMETER: usize = 5;

/// A value a query may refer to by a `{{...}}` placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placeholder {
    /// The start of the period (inclusive), a timestamp.
    StartDate,
    /// The end of the period (exclusive), a timestamp.
    EndDate,
    /// The customer's external id, a string.
    CustomerExternalId,
}

impl Placeholder {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "start_date" => Some(Self::StartDate),
            "end_date" => Some(Self::EndDate),
            "customer.external_id" | "customer_id" => Some(Self::CustomerExternalId),
            _ => None,
        }
    }
}

/// Why a query was refused, with where (1-based line and column of the text as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct SqlError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SqlError {
    fn at(line: u64, column: u64, message: impl Into<String>) -> Self {
        Self { line: line.max(1), column: column.max(1), message: message.into() }
    }
}

/// A table the query reads, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// Lowercase (DuckDB names are case-insensitive).
    pub name: String,
    pub line: u64,
    pub column: u64,
}

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlQuery {
    /// The query with placeholders replaced by `$n` (see [`FIRST_PLACEHOLDER_PARAMETER`]) and
    /// any trailing `;` removed, ready to be wrapped.
    pub text: String,
    /// The value of each parameter from [`FIRST_PLACEHOLDER_PARAMETER`] on, in order.
    pub placeholders: Vec<Placeholder>,
    /// Every table name read (besides the query's own CTEs), in order of appearance.
    pub tables: Vec<TableRef>,
    /// The names of the query's CTEs, lowercase.
    pub cte_names: BTreeSet<String>,
}

/// Functions a SQL metric may call (lowercase). Nothing here reads files, the network,
/// settings or the catalog, or depends on anything but its arguments.
#[rustfmt::skip]
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates
    "count", "sum", "min", "max", "avg", "mean", "any_value", "first", "last", "arg_max",
    "arg_min", "argmax", "argmin", "max_by", "min_by", "count_if", "countif", "bool_and",
    "bool_or", "string_agg", "median", "quantile_cont", "quantile_disc", "mode", "stddev",
    "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "product", "fsum",
    // arithmetic
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "greatest", "least", "sqrt", "power",
    "pow", "ln", "log", "log10", "log2", "exp", "sign", "mod", "div",
    // conditionals
    "coalesce", "nullif", "ifnull", "if", "isnan", "isinf", "isfinite",
    // text
    "lower", "upper", "lcase", "ucase", "length", "char_length", "concat", "concat_ws",
    "substr", "substring", "trim", "ltrim", "rtrim", "replace", "left", "right", "starts_with",
    "ends_with", "contains", "strpos", "instr", "lpad", "rpad", "split_part", "reverse",
    "prefix", "suffix", "like_escape",
    // dates and times
    "date", "date_trunc", "datetrunc", "date_part", "datepart", "date_diff", "datediff",
    "date_sub", "datesub", "date_add", "strftime", "strptime", "make_date", "make_timestamp",
    "make_time", "epoch", "epoch_ms", "epoch_us", "to_timestamp", "year", "month", "day",
    "hour", "minute", "second", "dayofweek", "dayofmonth", "dayofyear", "week", "weekofyear",
    "quarter", "last_day", "monthname", "dayname", "age", "to_days", "to_hours", "to_minutes",
    "to_seconds", "to_months", "to_years",
    // window functions
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
];

/// Validates a query (see the module documentation) without judging its table names.
pub fn parse_sql_query(source: &str) -> Result<SqlQuery, SqlError> {
    if source.len() > MAX_SQL_BYTES {
        return Err(SqlError::at(1, 1, format!("is longer than {MAX_SQL_BYTES} bytes")));
    }
    let (text, placeholders) = substitute_placeholders(source)?;
    let statements = Parser::parse_sql(&DuckDbDialect {}, &text).map_err(parse_error)?;
    let statement = match statements.as_slice() {
        [] => return Err(SqlError::at(1, 1, "is empty: expected one SELECT statement")),
        [one] => one,
        [_, _, ..] => {
            let (line, column) = statement_starts(&text).get(1).copied().unwrap_or((1, 1));
            return Err(SqlError::at(
                line,
                column,
                "a second statement: a SQL metric is exactly one SELECT",
            ));
        }
    };
    let Statement::Query(_) = statement else {
        let (line, column) = statement_starts(&text).first().copied().unwrap_or((1, 1));
        return Err(SqlError::at(
            line,
            column,
            "is not a read-only SELECT: only queries may define a metric",
        ));
    };
    let mut checker = Checker::default();
    if let ControlFlow::Break(err) = statement.visit(&mut checker) {
        return Err(err);
    }
    let tables =
        checker.tables.into_iter().filter(|t| !checker.cte_names.contains(&t.name)).collect();
    // One statement, so a trailing ';' (with whitespace or comments around it) is all that
    // may follow it; drop it so the text can be wrapped.
    let text = strip_trailing_semicolon(&text);
    Ok(SqlQuery { text, placeholders, tables, cte_names: checker.cte_names })
}

impl SqlQuery {
    /// Refuses a table the metric may not see: `allowed` says whether a lowercase name is one.
    pub fn check_tables(&self, allowed: impl Fn(&str) -> bool) -> Result<(), SqlError> {
        match self.tables.iter().find(|t| !allowed(&t.name)) {
            None => Ok(()),
            Some(t) => Err(SqlError::at(
                t.line,
                t.column,
                format!(
                    "table '{}' is not available: a SQL metric reads 'events' and the \
                     organization's usage tables only",
                    t.name
                ),
            )),
        }
    }
}

/// Where each statement starts: the first token that is not whitespace or a comment, and the
/// first such token after each top-level `;`.
fn statement_starts(text: &str) -> Vec<(u64, u64)> {
    let Ok(tokens) = Tokenizer::new(&DuckDbDialect {}, text).tokenize_with_location() else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let mut expecting = true;
    for token in tokens {
        match token.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => expecting = true,
            _ if expecting => {
                starts.push((token.span.start.line, token.span.start.column));
                expecting = false;
            }
            _ => {}
        }
    }
    starts
}

fn parse_error(err: sqlparser::parser::ParserError) -> SqlError {
    let message = err.to_string();
    let (line, column) = position_in(&message).unwrap_or((1, 1));
    let clean = message
        .split(" at Line: ")
        .next()
        .unwrap_or(&message)
        .trim_start_matches("sql parser error: ")
        .to_owned();
    SqlError::at(line, column, format!("syntax error: {clean}"))
}

/// The `Line: a, Column: b` of a parser message.
fn position_in(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("Line: ")? + 6..];
    let line_end = rest.find(',')?;
    let line = rest[..line_end].trim().parse().ok()?;
    let rest = &rest[rest.find("Column: ")? + 8..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line, digits.parse().ok()?))
}

/// Replaces each `{{ name }}` by `$n` padded to the same length (positions stay those of the
/// source), numbering distinct placeholders from [`FIRST_PLACEHOLDER_PARAMETER`].
fn substitute_placeholders(source: &str) -> Result<(String, Vec<Placeholder>), SqlError> {
    let mut out = String::with_capacity(source.len());
    let mut placeholders: Vec<Placeholder> = Vec::new();
    let mut rest = source;
    let (mut line, mut column) = (1u64, 1u64);
    let advance = |text: &str, line: &mut u64, column: &mut u64| {
        for ch in text.chars() {
            if ch == '\n' {
                *line += 1;
                *column = 1;
            } else {
                *column += 1;
            }
        }
    };
    while let Some(start) = rest.find("{{") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        advance(before, &mut line, &mut column);
        let Some(end) = after.find("}}") else {
            return Err(SqlError::at(line, column, "a '{{' placeholder is not closed by '}}'"));
        };
        let whole = &after[..end + 2];
        let name = whole[2..end].trim();
        let Some(placeholder) = Placeholder::parse(name) else {
            return Err(SqlError::at(
                line,
                column,
                format!(
                    "unknown placeholder '{{{{{name}}}}}': use {{{{start_date}}}}, \
                     {{{{end_date}}}} or {{{{customer.external_id}}}}"
                ),
            ));
        };
        let index = match placeholders.iter().position(|p| *p == placeholder) {
            Some(i) => i,
            None => {
                placeholders.push(placeholder);
                placeholders.len() - 1
            }
        };
        let parameter = format!("${}", FIRST_PLACEHOLDER_PARAMETER + index);
        out.push_str(&format!("{parameter:<width$}", width = whole.len()));
        advance(whole, &mut line, &mut column);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok((out, placeholders))
}

fn strip_trailing_semicolon(text: &str) -> String {
    let trimmed = text.trim_end();
    match trimmed.strip_suffix(';') {
        Some(body) => body.to_owned(),
        None => text.to_owned(),
    }
}

/// Walks the statement, refusing anything not read-only or not allowed.
#[derive(Default)]
struct Checker {
    tables: Vec<TableRef>,
    cte_names: BTreeSet<String>,
}

fn refuse(span: sqlparser::tokenizer::Span, message: impl Into<String>) -> ControlFlow<SqlError> {
    ControlFlow::Break(SqlError::at(span.start.line, span.start.column, message))
}

fn check_set_expr(body: &SetExpr) -> ControlFlow<SqlError> {
    match body {
        SetExpr::Select(select) => {
            if let Some(into) = &select.into {
                return refuse(into.span(), "SELECT ... INTO writes a table: not allowed");
            }
            if let Some(connect_by) = &select.connect_by {
                return refuse(connect_by.span(), "CONNECT BY (recursion) is not allowed");
            }
            ControlFlow::Continue(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Query(_) | SetExpr::Values(_) => ControlFlow::Continue(()),
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            refuse(s.span(), "writes data: a SQL metric is a read-only SELECT")
        }
        SetExpr::Table(_) => refuse(body.span(), "TABLE statements are not allowed: use SELECT"),
    }
}

impl Visitor for Checker {
    type Break = SqlError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<SqlError> {
        if let Some(with) = &query.with {
            if with.recursive {
                return refuse(with.span(), "WITH RECURSIVE is not allowed (unbounded recursion)");
            }
            for cte in &with.cte_tables {
                self.cte_names.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if let Some(settings) = &query.settings {
            let span = settings.first().map_or(query.span(), |s| s.key.span);
            return refuse(span, "SETTINGS are not allowed");
        }
        if query.format_clause.is_some() {
            return refuse(query.span(), "FORMAT is not allowed");
        }
        if query.for_clause.is_some() || !query.locks.is_empty() {
            return refuse(query.span(), "FOR clauses and locks are not allowed");
        }
        if !query.pipe_operators.is_empty() {
            return refuse(query.span(), "pipe operators are not allowed");
        }
        check_set_expr(&query.body)
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<SqlError> {
        match factor {
            TableFactor::Table { name, args, with_hints, .. } => {
                if args.is_some() {
                    return refuse(
                        name.span(),
                        format!(
                            "table function '{name}' is not allowed (no file, network or \
                                 generated tables)"
                        ),
                    );
                }
                if !with_hints.is_empty() {
                    return refuse(name.span(), "table hints are not allowed");
                }
                self.table(name)
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            TableFactor::TableFunction { .. } | TableFactor::Function { .. } => refuse(
                factor.span(),
                "table functions are not allowed (no file, network or generated tables)",
            ),
            other => refuse(other.span(), "only tables, subqueries and joins may appear in FROM"),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<SqlError> {
        if let Expr::Value(ValueWithSpan { value: Value::Placeholder(text), span }) = expr {
            let ours = text
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= FIRST_PLACEHOLDER_PARAMETER);
            if !ours {
                return refuse(
                    *span,
                    format!(
                        "parameter '{text}' is not allowed: use {{{{start_date}}}}, \
                         {{{{end_date}}}} or {{{{customer.external_id}}}}"
                    ),
                );
            }
        }
        if let Expr::Function(function) = expr {
            let name = match function.name.0.as_slice() {
                [part] => part.as_ident().map(|i| i.value.to_lowercase()),
                _ => None,
            };
            let Some(name) = name else {
                return refuse(
                    function.name.span(),
                    format!(
                        "function '{}': qualified function names are not allowed",
                        function.name
                    ),
                );
            };
            if !ALLOWED_FUNCTIONS.contains(&name.as_str()) {
                return refuse(
                    function.name.span(),
                    format!(
                        "function '{name}' is not allowed (see docs/sql-metrics.md for the \
                         functions a SQL metric may call)"
                    ),
                );
            }
            if let FunctionArguments::Subquery(query) = &function.args {
                return refuse(query.span(), "a subquery as function arguments is not allowed");
            }
        }
        ControlFlow::Continue(())
    }
}

impl Checker {
    fn table(&mut self, name: &ObjectName) -> ControlFlow<SqlError> {
        let span = name.span();
        let ident = match name.0.as_slice() {
            [part] => part.as_ident(),
            _ => None,
        };
        let Some(ident) = ident else {
            return refuse(
                span,
                format!(
                    "table '{name}': qualified names (schemas, catalogs, other databases) are \
                     not allowed"
                ),
            );
        };
        self.tables.push(TableRef {
            name: ident.value.to_lowercase(),
            line: span.start.line,
            column: span.start.column,
        });
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_padded_parameters() {
        let q = parse_sql_query(
            "SELECT count(*) AS value FROM events\nWHERE customer = {{customer.external_id}} \
             AND timestamp >= {{ start_date }} AND timestamp < {{end_date}} \
             AND {{start_date}} IS NOT NULL;",
        )
        .unwrap();
        assert_eq!(
            q.placeholders,
            vec![Placeholder::CustomerExternalId, Placeholder::StartDate, Placeholder::EndDate]
        );
        assert!(q.text.contains("customer = $5 "));
        assert!(q.text.contains("timestamp >= $6 "));
        assert!(!q.text.contains(';'));
        assert_eq!(q.tables.len(), 1);
    }

    #[test]
    fn errors_point_at_the_text_as_written() {
        // The placeholder before the error is longer than its parameter: columns still match.
        let err = parse_sql_query("SELECT {{start_date}}, nope(1) FROM events").unwrap_err();
        assert_eq!((err.line, err.column), (1, 24), "{err}");
        let err = parse_sql_query("SELECT 1\nFROM main.events").unwrap_err();
        assert_eq!((err.line, err.column), (2, 6), "{err}");
    }

    #[test]
    fn cte_names_are_not_tables() {
        let q = parse_sql_query(
            "WITH daily AS (SELECT customer FROM events) SELECT count(*) FROM daily",
        )
        .unwrap();
        assert_eq!(q.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["events"]);
        assert!(q.cte_names.contains("daily"));
    }
}
