//! DuckDB's own numbers on the same events, measured in the same run: the workload's events
//! (without the re-sent duplicates) are written as CSV, and the script `scripts/bench-duckdb`
//! loads them into a DuckDB table with typed columns and times the query suite there with the
//! `duckdb` Python package. Its JSON answer is printed beside Odometer's figures.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::workload::Workload;

/// Writes the events as CSV: `transaction_id,customer,code,ts,region,tier,value,user_id` with
/// `ts` in microseconds since the epoch.
fn export(workload: &Workload, path: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "transaction_id,customer,code,ts,region,tier,value,user_id")?;
    for n in 0..workload.events {
        let event = workload.event(n);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let ts: DateTime<Utc> = text(&event["timestamp"]).parse().context("workload timestamp")?;
        let p = &event["properties"];
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            text(&event["transaction_id"]),
            text(&event["customer"]),
            text(&event["code"]),
            ts.timestamp_micros(),
            text(&p["region"]),
            text(&p["tier"]),
            text(&p["value"]),
            text(&p["user_id"]),
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the script on the workload; answers its JSON (figures named like the bench's rows:
/// `load_events_per_second`, `q1_p99_ms`, ..., `q3_ms`).
pub async fn compare(
    script: &Path,
    workload: &Workload,
    dir: &Path,
    mid: &str,
    big: &str,
    repeats: usize,
) -> anyhow::Result<Value> {
    let csv = dir.join("workload.csv");
    eprintln!("bench: writing the workload for DuckDB to {}", csv.display());
    let (workload, csv_path) = (workload.clone(), csv.clone());
    tokio::task::spawn_blocking(move || export(&workload, &csv_path)).await??;
    eprintln!("bench: measuring DuckDB with {}", script.display());
    let mut command = std::process::Command::new(script);
    command
        .arg("--csv")
        .arg(&csv)
        .args(["--mid", mid, "--big", big, "--repeats", &repeats.to_string()])
        .args(["--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z"])
        .stderr(Stdio::inherit());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("cannot run {}", script.display()))?;
    let _ = std::fs::remove_file(&csv);
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("{} answered no JSON: {text}", script.display()))
}
