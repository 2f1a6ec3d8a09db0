//! The SQLite catalog against the conformance suite (in a file and in memory), its schema
//! migrations (up to plans and subscriptions), and a check that API key secrets never reach
//! the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::json;
use tempfile::TempDir;

use odometer_core::metric::FieldChange;
use odometer_core::{time, Customer, CustomerId, OrganizationSettings};
use odometer_embedded::{SqliteCatalog, SCHEMA_VERSION};
use odometer_store::conformance::{count_metric, create_metric, new_organization};
use odometer_store::keys::hash_secret;
use odometer_store::{plans, subscriptions, tenants, Catalog, MetricRevisionInput, StoreError};

const FILE_NAME: &str = "catalog.db";

/// A fresh catalog in its own temporary directory (deleted when the guard is dropped).
async fn file_catalog() -> (SqliteCatalog, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqliteCatalog::open(&dir.path().join(FILE_NAME)).await.unwrap();
    (catalog, dir)
}

async fn memory_catalog() -> (SqliteCatalog, ()) {
    (SqliteCatalog::open_in_memory().unwrap(), ())
}

mod sqlite_file {
    odometer_store::catalog_conformance_tests!(super::file_catalog);
}

mod sqlite_memory {
    odometer_store::catalog_conformance_tests!(super::memory_catalog);
}

fn tables(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt =
        conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
    let names = stmt.query_map([], |row| row.get(0)).unwrap();
    names.collect::<Result<_, _>>().unwrap()
}

fn new_customer(catalog_org: odometer_core::OrganizationId, external_id: &str) -> Customer {
    let spec = json!({"external_id": external_id, "name": "Acme"});
    Customer {
        id: CustomerId::new(),
        organization_id: catalog_org,
        spec: odometer_core::customer::parse_customer_spec(&spec).unwrap(),
        created_at: time::now(),
        updated_at: time::now(),
    }
}

#[tokio::test]
async fn opening_an_empty_directory_creates_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not").join("yet").join(FILE_NAME);
    let catalog = SqliteCatalog::open(&path).await.unwrap();
    assert!(path.is_file(), "the file and its directories are created");
    assert_eq!(catalog.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 4);
    assert_eq!(
        tables(&path),
        [
            "api_keys",
            "customers",
            "dialect_records",
            "metric_attachments",
            "metric_revisions",
            "metrics",
            "organizations",
            "plan_charges",
            "plans",
            "subscriptions"
        ]
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal", "the journal mode is persistent and write-ahead");
    catalog.ping().await.unwrap();
}

#[tokio::test]
async fn reopening_keeps_the_data_and_does_not_migrate_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let catalog = SqliteCatalog::open(&path).await.unwrap();
    let bootstrap = tenants::create_organization(&catalog, "Acme").await.unwrap();
    let org = bootstrap.organization.id;
    let metric = create_metric(&catalog, org, count_metric("calls", "Calls")).await;
    catalog.set_metric_attachment(org, metric.id, "plan", true).await.unwrap();
    let customer = new_customer(org, "c1");
    catalog.create_customer(&customer).await.unwrap();
    drop(catalog);

    // Re-running migration 1 over existing tables would fail ("table already exists"), so a
    // clean reopen at the same version shows nothing was applied twice.
    let reopened = SqliteCatalog::open(&path).await.unwrap();
    assert_eq!(reopened.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(reopened.get_organization(org).await.unwrap(), bootstrap.organization);
    assert_eq!(reopened.get_metric(org, metric.id).await.unwrap(), metric);
    assert_eq!(reopened.list_metric_revisions(org, metric.id).await.unwrap().len(), 1);
    assert!(reopened.is_metric_attached(org, metric.id).await.unwrap());
    assert_eq!(reopened.get_customer(org, "c1").await.unwrap(), customer);
    let key = tenants::authenticate(&reopened, &bootstrap.secret).await.unwrap();
    assert_eq!(key.map(|k| k.id), Some(bootstrap.key.id));
}

#[tokio::test]
async fn a_version_1_catalog_upgrades_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let old = SqliteCatalog::open_at_schema_version(&path, 1).await.unwrap();
    assert_eq!(old.schema_version().await.unwrap(), 1);
    assert!(!tables(&path).contains(&"metric_attachments".to_owned()), "version 1 has none");
    let org = new_organization(&old, "Acme").await;
    let settings = OrganizationSettings { accept_unknown_codes: true, ..Default::default() };
    let org = old.update_organization_settings(org.id, &settings).await.unwrap();
    let (key, secret) = tenants::create_api_key(&old, org.id, "ci").await.unwrap();
    let metric = create_metric(&old, org.id, count_metric("calls", "Calls")).await;
    // Not through `metrics::update_metric`: it asks about attachments, which version 1 lacks.
    let mut spec = metric.spec.clone();
    spec.name = "API calls".to_owned();
    let revision = MetricRevisionInput {
        previous_revision: 1,
        spec,
        changes: vec![FieldChange {
            path: "name".to_owned(),
            before: json!("Calls"),
            after: json!("API calls"),
        }],
        effective_at: time::now(),
    };
    let metric = old.add_metric_revision(org.id, metric.id, &revision).await.unwrap();
    let customer = new_customer(org.id, "c1");
    old.create_customer(&customer).await.unwrap();
    match old.is_metric_attached(org.id, metric.id).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("metric_attachments"), "{message}")
        }
        other => panic!("version 1 has no attachments: {other:?}"),
    }
    drop(old);

    let upgraded = SqliteCatalog::open(&path).await.unwrap();
    assert_eq!(upgraded.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(upgraded.get_organization(org.id).await.unwrap(), org);
    assert_eq!(upgraded.get_metric(org.id, metric.id).await.unwrap(), metric);
    let revisions = upgraded.list_metric_revisions(org.id, metric.id).await.unwrap();
    assert_eq!(revisions.len(), 2, "revisions survive the upgrade");
    assert_eq!(upgraded.get_customer(org.id, "c1").await.unwrap(), customer);
    let found = tenants::authenticate(&upgraded, &secret).await.unwrap();
    assert_eq!(found.map(|k| k.id), Some(key.id));
    assert!(!upgraded.is_metric_attached(org.id, metric.id).await.unwrap());
    upgraded.set_metric_attachment(org.id, metric.id, "plan", true).await.unwrap();
    assert!(upgraded.is_metric_attached(org.id, metric.id).await.unwrap(), "the new table works");
}

#[tokio::test]
async fn a_version_2_catalog_upgrades_to_plans_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let old = SqliteCatalog::open_at_schema_version(&path, 2).await.unwrap();
    let org = new_organization(&old, "Acme").await.id;
    let metric = create_metric(&old, org, count_metric("calls", "Calls")).await;
    old.set_metric_attachment(org, metric.id, "operator", true).await.unwrap();
    old.create_customer(&new_customer(org, "c1")).await.unwrap();
    assert!(!tables(&path).contains(&"plans".to_owned()), "version 2 has no plans");
    drop(old);

    let upgraded = SqliteCatalog::open(&path).await.unwrap();
    assert_eq!(upgraded.schema_version().await.unwrap(), SCHEMA_VERSION);
    let plan = plans::create_plan(
        &upgraded,
        org,
        &json!({"code": "pro", "name": "Pro", "interval": "monthly", "currency": "USD",
                "charges": [{"metric": "calls", "charge_model": "standard",
                             "properties": {"amount": "1"}}]}),
    )
    .await
    .unwrap();
    let definition = json!({"external_id": "s1", "customer": "c1", "plan": "pro"});
    let subscription =
        subscriptions::create_subscription(&upgraded, org, &definition).await.unwrap();
    assert_eq!(upgraded.get_subscription(org, "s1").await.unwrap(), subscription);
    subscriptions::terminate_subscription(&upgraded, org, "s1").await.unwrap();
    plans::delete_plan(&upgraded, org, "pro").await.unwrap();
    assert!(
        upgraded.is_metric_attached(org, metric.id).await.unwrap(),
        "an attachment made before plans existed is kept: deleting a plan removes only its own"
    );
    assert!(upgraded.plans_charging_metric(org, metric.id).await.unwrap().is_empty());
    assert!(upgraded.get_plan(org, plan.id).await.unwrap().deleted_at.is_some());
}

#[tokio::test]
async fn a_catalog_from_a_newer_odometer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    drop(SqliteCatalog::open(&path).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match SqliteCatalog::open(&path).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("schema version 99"), "{message}");
        }
        other => panic!("a newer schema must not be opened: {other:?}"),
    }
}

/// Every file of the data directory (the database, its write-ahead log and shared memory).
fn data_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            files.push((path, bytes));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

/// Checks no file holds the secret, while some file does hold its hash (so the search looks
/// where the data really is).
fn assert_files_hold_only_the_hash(dir: &Path, secret: &str) {
    let files = data_files(dir);
    for (path, bytes) in &files {
        assert!(!contains(bytes, secret), "{} contains an api key secret", path.display());
    }
    let hash = hash_secret(secret);
    assert!(files.iter().any(|(_, bytes)| contains(bytes, &hash)), "no file holds the key's hash");
}

#[tokio::test]
async fn the_database_never_holds_an_api_key_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let catalog = SqliteCatalog::open(&path).await.unwrap();
    let bootstrap = tenants::create_organization(&catalog, "Acme").await.unwrap();
    let (_, second) =
        tenants::create_api_key(&catalog, bootstrap.organization.id, "ci").await.unwrap();
    assert!(tenants::authenticate(&catalog, &bootstrap.secret).await.unwrap().is_some());
    assert!(tenants::authenticate(&catalog, &second).await.unwrap().is_some());

    for secret in [&bootstrap.secret, &second] {
        assert_files_hold_only_the_hash(dir.path(), secret);
    }

    // Every column of every table, read as text.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut cells = Vec::new();
    for table in tables(&path) {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let cell: rusqlite::types::Value = row.get(i).unwrap();
                cells.push(format!("{cell:?}"));
            }
        }
    }
    for secret in [&bootstrap.secret, &second] {
        assert!(!cells.iter().any(|cell| cell.contains(secret.as_str())), "a table holds a secret");
        assert!(cells.iter().any(|cell| cell.contains(&hash_secret(secret))), "the hash is stored");
    }
    drop(conn);

    // Once closed, the log is checkpointed into the database file: look again.
    drop(catalog);
    for secret in [&bootstrap.secret, &second] {
        assert_files_hold_only_the_hash(dir.path(), secret);
    }
}
