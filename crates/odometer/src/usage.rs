//! `odometer usage`: asks a running server's `GET /v1/usage` how much a customer (or every
//! customer, following every page: the invoice run) used of a metric, and prints it as tables
//! or as the server's JSON.

use serde_json::Value;

use crate::cli::UsageArgs;
use crate::remote::Remote;

pub async fn run(args: UsageArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.remote)?;
    let revision = args.revision.map(|n| n.to_string());
    let mut query: Vec<(&str, &str)> =
        vec![("metric", &args.metric), ("from", &args.from), ("to", &args.to)];
    let optional = [
        ("customer", args.customer.as_deref()),
        ("window", args.window.as_deref()),
        ("timezone", args.timezone.as_deref()),
        ("group_by", args.group_by.as_deref()),
        ("as_of", args.as_of.as_deref()),
        ("revision", revision.as_deref()),
    ];
    query.extend(optional.into_iter().filter_map(|(name, value)| Some((name, value?))));

    // A quick first call that is not retried: a wrong URL or key fails at once, not after the
    // backoff meant for a server that is briefly away.
    remote.check().await?;
    let results: Vec<Value> = if args.customer.is_some() {
        vec![remote.get("v1/usage", &query).await?]
    } else {
        every_customer(&remote, &query).await?
    };

    if args.json {
        // One customer: the server's answer as it is; every customer: an array of them.
        let out = match (args.customer.is_some(), results.as_slice()) {
            (true, [one]) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&results)?,
        };
        println!("{out}");
        return Ok(());
    }
    if results.is_empty() {
        println!("no customers");
    }
    for (i, result) in results.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", render(result));
    }
    Ok(())
}

/// Every page of the invoice run, in the server's customer order.
async fn every_customer(remote: &Remote, query: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
    let mut results = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_query = query.to_vec();
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor));
        }
        let page = remote.get("v1/usage", &page_query).await?;
        let Some(data) = page.get("data").and_then(Value::as_array) else {
            anyhow::bail!("unexpected answer from GET /v1/usage: no data array");
        };
        results.extend(data.iter().cloned());
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) if Some(next) != cursor.as_deref() => cursor = Some(next.to_owned()),
            _ => return Ok(results),
        }
    }
}

/// One customer's result as a heading and an aligned table: a row per group and a TOTAL row
/// per window.
fn render(result: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let metric = &result["metric"];
    let mut out = format!(
        "customer {}, metric {} (revision {}), {} to {}, window {} ({})",
        text(&result["customer"]),
        text(&metric["code"]),
        metric["revision"],
        text(&result["from"]),
        text(&result["to"]),
        text(&result["window"]),
        text(&result["timezone"]),
    );
    if let Some(as_of) = result["as_of"].as_str() {
        out.push_str(&format!(", as of {as_of}"));
    }
    out.push('\n');

    let mut rows: Vec<[String; 7]> = vec![[
        "WINDOW FROM".into(),
        "WINDOW TO".into(),
        "SEGMENT".into(),
        "GROUP".into(),
        "VALUE".into(),
        "EVENTS".into(),
        "SKIPPED".into(),
    ]];
    let mut excluded = 0u64;
    for window in result["windows"].as_array().into_iter().flatten() {
        let from = text(&window["from"]);
        let to = text(&window["to"]);
        let (mut events, mut skipped) = (0u64, 0u64);
        for group in window["groups"].as_array().into_iter().flatten() {
            let count = group["events_count"].as_u64().unwrap_or(0);
            let skip = group["events_skipped"].as_u64().unwrap_or(0);
            events += count;
            skipped += skip;
            rows.push([
                from.clone(),
                to.clone(),
                pairs(&group["segment"]),
                pairs(&group["group_by"]),
                text(&group["value"]),
                count.to_string(),
                skip.to_string(),
            ]);
        }
        excluded += window["events_excluded"].as_u64().unwrap_or(0);
        rows.push([
            from,
            to,
            "TOTAL".into(),
            String::new(),
            text(&window["total"]),
            events.to_string(),
            skipped.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    if excluded > 0 {
        out.push_str(&format!(
            "{excluded} events outside the segmentation were dropped (unmatched: drop)\n"
        ));
    }
    out
}

/// `{"region": "eu", "tier": null}` as `region=eu,tier=(none)`; `"other"` as is; null or an
/// empty object as `-`.
fn pairs(value: &Value) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| match v {
                Value::Null => format!("{k}=(none)"),
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::String(s) => s.clone(),
        _ => "-".to_owned(),
    }
}

/// Columns padded to their widest cell; the numeric ones (the last three) aligned right.
fn table(rows: &[[String; 7]]) -> String {
    let mut widths = [0usize; 7];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(
                |(i, (cell, width))| {
                    if i >= 4 {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_result_reads_as_a_table_with_a_total_per_window() {
        let result = json!({
            "metric": {"id": "bm_1", "code": "storage", "revision": 2},
            "customer": "acme",
            "from": "2026-01-01T00:00:00.000000Z", "to": "2026-01-03T00:00:00.000000Z",
            "window": "day", "timezone": "UTC", "as_of": null, "group_by": ["project"],
            "windows": [
                {"from": "2026-01-01T00:00:00.000000Z", "to": "2026-01-02T00:00:00.000000Z",
                 "total": "15", "events_excluded": 0, "groups": [
                    {"segment": {"region": "eu"}, "group_by": {"project": "apollo"},
                     "value": "10", "events_count": 2, "events_skipped": 0},
                    {"segment": "other", "group_by": {"project": null},
                     "value": "5", "events_count": 1, "events_skipped": 1}]},
                {"from": "2026-01-02T00:00:00.000000Z", "to": "2026-01-03T00:00:00.000000Z",
                 "total": "0", "events_excluded": 3, "groups": []}
            ]
        });
        let expected = "\
customer acme, metric storage (revision 2), 2026-01-01T00:00:00.000000Z to 2026-01-03T00:00:00.000000Z, window day (UTC)
WINDOW FROM                  WINDOW TO                    SEGMENT    GROUP           VALUE  EVENTS  SKIPPED
2026-01-01T00:00:00.000000Z  2026-01-02T00:00:00.000000Z  region=eu  project=apollo     10       2        0
2026-01-01T00:00:00.000000Z  2026-01-02T00:00:00.000000Z  other      project=(none)      5       1        1
2026-01-01T00:00:00.000000Z  2026-01-02T00:00:00.000000Z  TOTAL                         15       3        1
2026-01-02T00:00:00.000000Z  2026-01-03T00:00:00.000000Z  TOTAL                          0       0        0
3 events outside the segmentation were dropped (unmatched: drop)
";
        assert_eq!(render(&result), expected);
    }

    #[test]
    fn missing_values_show_as_dashes() {
        assert_eq!(pairs(&Value::Null), "-");
        assert_eq!(pairs(&json!({})), "-");
        assert_eq!(pairs(&json!({"a": "x", "b": 1})), "a=x,b=1");
    }
}
