//! Semantics 7: the bad-SQL corpus, each refused when the metric is saved, with a position.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use odometer_core::metric_input::parse_metric_spec;
use odometer_core::sql_metric::parse_sql_query;
use serde_json::json;

/// `(query, words the message must contain, line, column)`.
const CORPUS: &[(&str, &str, u64, u64)] = &[
    ("DELETE FROM events", "read-only", 1, 1),
    ("INSERT INTO events VALUES (1)", "read-only", 1, 1),
    ("UPDATE events SET code = 'x'", "read-only", 1, 1),
    ("WITH x AS (DELETE FROM events RETURNING *) SELECT * FROM x", "writes data", 1, 24),
    ("DROP TABLE events", "read-only", 1, 1),
    ("CREATE TABLE t AS SELECT * FROM events", "read-only", 1, 1),
    ("SELECT * INTO copy FROM events", "INTO", 1, 15),
    ("SELECT count(*) FROM events; DROP TABLE events", "second statement", 1, 30),
    ("SELECT count(*) FROM events; SELECT 1", "second statement", 1, 30),
    ("SELECT count(*) FROM events -- fine\n; DELETE FROM events", "second statement", 2, 3),
    ("SELECT count(*) FROM events /* hidden */; ATTACH 'x.db'", "second statement", 1, 43),
    ("SELECT count(*) FROM main.events", "qualified", 1, 22),
    ("SELECT count(*) FROM events e JOIN memory.main.events f ON true", "qualified", 1, 36),
    ("SELECT * FROM property_slots", "not available", 1, 15),
    ("SELECT * FROM events, sqlite_master", "not available", 1, 23),
    ("SELECT * FROM information_schema.tables", "qualified", 1, 15),
    ("SELECT * FROM \"/etc/passwd\"", "not available", 1, 15),
    ("WITH x AS (SELECT * FROM main.events) SELECT count(*) FROM x", "qualified", 1, 26),
    (
        "SELECT count(*) FROM events WHERE customer IN (SELECT org FROM pg_tables)",
        "not available",
        1,
        64,
    ),
    ("SELECT * FROM read_csv('/etc/passwd')", "table function", 1, 15),
    ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", "table function", 1, 15),
    ("SELECT * FROM glob('/*')", "table function", 1, 15),
    ("SELECT * FROM read_json_auto('https://example.com/x.json')", "table function", 1, 15),
    ("SELECT * FROM range(1000000000)", "table function", 1, 15),
    ("SELECT read_text('/etc/passwd') AS value", "function 'read_text'", 1, 8),
    ("SELECT current_setting('memory_limit')", "function 'current_setting'", 1, 8),
    ("SELECT getenv('HOME')", "function 'getenv'", 1, 8),
    ("SET memory_limit = '100GB'", "read-only", 1, 1),
    ("PRAGMA database_list", "", 1, 1),
    ("ATTACH 'other.db' AS o", "", 1, 1),
    ("COPY events TO '/tmp/x.csv'", "", 1, 1),
    ("INSTALL httpfs", "", 1, 1),
    ("LOAD httpfs", "", 1, 1),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) FROM r",
        "unbounded recursion",
        1,
        1,
    ),
    ("SELECT count(*) FROM events WHERE customer = $1", "parameter '$1'", 1, 46),
    ("SELECT count(*) FROM events WHERE ts > {{yesterday}}", "unknown placeholder", 1, 40),
    ("SELECT count(* FROM events", "syntax error", 1, 16),
    ("", "", 1, 1),
];

#[test]
fn sem_7_the_bad_sql_corpus_is_refused_with_positions() {
    let mut wrong = Vec::new();
    for (query, words, line, column) in CORPUS {
        let err = match parse_sql_query(query) {
            Err(err) => err,
            Ok(parsed) => parsed
                .check_tables(|name| name == "events")
                .expect_err(&format!("{query} was accepted")),
        };
        if !err.message.contains(words) || (err.line, err.column) != (*line, *column) {
            wrong.push(format!("{query:?}: {err} (expected {words:?} at {line}:{column})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn sem_7_refused_when_the_metric_is_saved() {
    // Which unqualified tables exist is for the store to judge (the Zenskar routes and the
    // engine check them against the organization's usage tables); everything else fails here.
    let judged_here =
        CORPUS.iter().filter(|(q, words, ..)| !q.is_empty() && *words != "not available");
    for (query, _, _, _) in judged_here {
        let problems = parse_metric_spec(&json!({"code": "m", "name": "M",
            "aggregation": {"type": "custom_sql", "query": query}}));
        let problems = problems.expect_err(query);
        let text = format!("{problems:?}");
        assert!(text.contains("invalid_sql") && text.contains("line "), "{query}: {text}");
    }
}

#[test]
fn sem_7_good_queries_are_accepted() {
    for query in [
        "SELECT count(*) AS value FROM events",
        "select sum(cast(properties.tokens as decimal(18,4))) as value from events where code = 'llm';",
        "SELECT COALESCE(COUNT(data.Premises_used)) AS \"quantity\" FROM your_table\nWHERE \
         DATE(\"timestamp\") >= DATE({{start_date}}) AND DATE(\"timestamp\") <= \
         DATE({{end_date}})\n  AND \"customer_id\" = CAST({{customer.external_id}} AS String)",
        "WITH d AS (SELECT date_trunc('day', timestamp) AS day, count(*) AS c FROM events \
         GROUP BY 1) SELECT max(c) AS value FROM d",
        "SELECT properties.region, count(*) FROM events GROUP BY ALL ORDER BY 1 LIMIT 10",
        "SELECT count(*) FROM events WHERE customer IN (SELECT customer FROM events)",
    ] {
        parse_sql_query(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        parse_metric_spec(&json!({"code": "m", "name": "M",
            "aggregation": {"type": "custom_sql", "query": query}}))
        .unwrap_or_else(|e| panic!("{query}: {e:?}"));
    }
}
