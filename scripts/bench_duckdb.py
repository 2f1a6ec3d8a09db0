"""DuckDB on the standard workload (spec/performance.md), for the DuckDB column of the bench.

Loads the events (CSV from `odometer bench`) into a table with typed columns, in the order
they were generated (arrival order, like Odometer's), and times each query of the suite the
way the bench times Odometer's: repeats after two warm-ups, p50 and p99 in milliseconds. The
queries are the plain SQL a DuckDB user would write for each figure. Then the same on a copy
sorted by (code, customer, ts), the layout a DuckDB user tuning for per-customer questions
would choose (its zone maps then skip all but one customer's row groups); its figures are
prefixed `sorted_`. Prints one JSON object.
"""

import argparse
import datetime
import json
import math
import sys
import time

import duckdb


def micros(text):
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1_000_000)


def percentile(samples, p):
    ordered = sorted(samples)
    rank = min(max(math.ceil(p * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


def timed(con, sql, params, repeats):
    samples = []
    result = None
    for run in range(repeats + 2):
        started = time.perf_counter()
        result = con.execute(sql, params).fetchall()
        elapsed = (time.perf_counter() - started) * 1000.0
        if run >= 2:
            samples.append(elapsed)
    return percentile(samples, 0.5), percentile(samples, 0.99), result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--mid", required=True)
    parser.add_argument("--big", required=True)
    parser.add_argument("--from", dest="start", required=True)
    parser.add_argument("--to", dest="end", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    start, end = micros(args.start), micros(args.end)

    con = duckdb.connect(":memory:")
    started = time.perf_counter()
    con.execute(
        """CREATE TABLE events AS SELECT * FROM read_csv(?, header = true, columns = {
            'transaction_id': 'VARCHAR', 'customer': 'VARCHAR', 'code': 'VARCHAR',
            'ts': 'BIGINT', 'region': 'VARCHAR', 'tier': 'VARCHAR',
            'value': 'DECIMAL(18, 2)', 'user_id': 'VARCHAR'})""",
        [args.csv],
    )
    load_seconds = time.perf_counter() - started
    (count,) = con.execute("SELECT count(*) FROM events").fetchone()

    out = {
        "duckdb_version": duckdb.__version__,
        "events": count,
        "load_seconds": load_seconds,
        "load_events_per_second": count / load_seconds,
    }
    suite(con, "events", "", start, end, args, out)
    started = time.perf_counter()
    con.execute("CREATE TABLE events_sorted AS SELECT * FROM events ORDER BY code, customer, ts")
    out["sort_seconds"] = time.perf_counter() - started
    suite(con, "events_sorted", "sorted_", start, end, args, out)
    print(json.dumps(out))


def suite(con, table, prefix, start, end, args, out):
    """Times the query suite on `table`, writing `<prefix><figure>` into `out`."""
    period = "ts >= $start AND ts < $end"
    one = {"start": start, "end": end}
    queries = {
        "q1": (f"SELECT sum(value) FROM {table} WHERE customer = $c AND code = 'api_calls' AND {period}", args.mid),
        "q2": (f"SELECT count(DISTINCT user_id) FROM {table} WHERE customer = $c AND code = 'seats' AND {period}", args.mid),
        "q4": (f"SELECT region, sum(value) FROM {table} WHERE customer = $c AND code = 'api_calls' AND {period} GROUP BY region", args.mid),
        "q1-big": (f"SELECT sum(value) FROM {table} WHERE customer = $c AND code = 'api_calls' AND {period}", args.big),
        "q2-big": (f"SELECT count(DISTINCT user_id) FROM {table} WHERE customer = $c AND code = 'seats' AND {period}", args.big),
    }
    for name, (sql, customer) in queries.items():
        p50, p99, result = timed(con, sql, {**one, "c": customer}, args.repeats)
        out[f"{prefix}{name}_p50_ms"], out[f"{prefix}{name}_p99_ms"] = p50, p99
        if name in ("q1", "q1-big", "q2", "q2-big"):
            out[f"{prefix}{name}_answer"] = str(result[0][0])
    invoice = f"SELECT customer, sum(value) FROM {table} WHERE code = 'api_calls' AND {period} GROUP BY customer"
    p50, _, result = timed(con, invoice, one, 3)
    out[f"{prefix}q3_ms"] = p50
    out[f"{prefix}q3_customers"] = len(result)


if __name__ == "__main__":
    sys.exit(main())
