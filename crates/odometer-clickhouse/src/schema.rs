//! The ClickHouse side of the store: one database, the `events` table, and the per-bucket
//! usage state a materialized view keeps from it ([`crate::state`]).
//!
//! Designed for the 18.16 server this project is tested with, which has no `DateTime64`, no
//! `Map`, no JSON type or `JSONExtract`, no insert deduplication on a plain MergeTree and no
//! query parameters:
//! - instants are `Int64` microseconds since the epoch (a newer server: `DateTime64(6, 'UTC')`,
//!   same precision, nicer to read by hand);
//! - properties are their JSON text as sent (reads give back every spelling) plus parallel
//!   typed arrays of the top-level keys (`rows.rs`; a newer server could use `Map(String,
//!   ...)` columns, or the `JSON` type, for the same purpose);
//! - the table is a `ReplacingMergeTree` ordered by `(org, code, customer, ts, sequence)`:
//!   a customer's events of one code are one contiguous range (usage reads exactly that), and
//!   since `(org, sequence)` is unique per event, a row written twice by accident would share
//!   its whole sorting key with its copy and be collapsed by the next merge. The exactly-once
//!   ledger is what keeps copies from being written (see `ledger.rs`); this is a safety net.
//!   A newer server with `insert_deduplication_token` (22.x) could also make each batch's
//!   insert idempotent by itself;
//! - no partition key: an insert of up to a million rows is then one part, all or nothing,
//!   which the recovery relies on to find a batch either whole or absent.
//!
//! The table grows past one node by sharding on the organization (a `Distributed` table over
//! `ReplicatedReplacingMergeTree` shards with `sipHash64(org)` as the sharding key): every
//! question names one organization, so every statement runs on one shard.

use odometer_store::StoreError;

use crate::http::ClickHouse;

/// The statements creating the database and the table, in order.
pub fn statements(database: &str) -> [String; 2] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.events (
                org String,
                code String,
                customer String,
                ts Int64,
                sequence UInt64,
                transaction_id String,
                ingested_at Int64,
                batch UInt64,
                properties String,
                prop_keys Array(String),
                prop_present Array(UInt8),
                prop_texts Array(Nullable(String)),
                prop_nums Array(Nullable(Decimal128(10))),
                wide UInt8
            ) ENGINE = ReplacingMergeTree
            ORDER BY (org, code, customer, ts, sequence)"
        ),
    ]
}

/// The major version of a `version()` answer (`18` of `18.16.1`).
pub fn major_version(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// Creates what is missing; refuses servers older than the one the store is written for.
/// Answers whether the usage state (its table or its view) was missing: events inserted
/// before then are not in it.
pub async fn create(ch: &ClickHouse, version: &str) -> Result<bool, StoreError> {
    match major_version(version) {
        Some(major) if major >= 18 => {}
        _ => {
            return Err(StoreError::Backend(format!(
                "clickhouse {version} is too old: the event store needs 18.16 or later"
            )))
        }
    }
    let database = ch.database();
    for statement in statements(database) {
        ch.execute(&statement).await?;
    }
    let mut complete = true;
    for table in ["usage_state", "usage_state_view"] {
        let exists = ch.query(&format!("EXISTS TABLE {database}.{table}"), 1).await?;
        complete &= exists.first().and_then(|row| row[0].as_deref()) == Some("1");
    }
    for statement in crate::state::statements(database) {
        ch.execute(&statement).await?;
    }
    Ok(!complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_version("18.16.1"), Some(18));
        assert_eq!(major_version("24.3.2.23"), Some(24));
        assert_eq!(major_version("x"), None);
    }
}
