//! The PostgreSQL catalog against the catalog conformance suite (the macro every backend
//! expands), each test in a database of its own on the server of `ODOMETER_TEST_POSTGRES_URL`
//! (scripts/servers); then what only PostgreSQL shows: migrations applied once and refused
//! when newer, secrets never stored, and replicas racing on one database (`replicas.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "catalog_conformance/database.rs"]
mod database;
#[path = "catalog_conformance/replicas.rs"]
mod replicas;

use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

use odometer_core::{time, Customer, CustomerId};
use odometer_postgres::{PgCatalog, MIGRATIONS_TABLE, SCHEMA_VERSION};
use odometer_store::conformance::{count_metric, create_metric};
use odometer_store::keys::hash_secret;
use odometer_store::{tenants, Catalog, StoreError};

use database::TestDatabase;

/// A fresh catalog in a database of its own (dropped with the guard).
async fn pg_catalog() -> (PgCatalog, TestDatabase) {
    let database = TestDatabase::create().await;
    let catalog = PgCatalog::connect(&database.url()).await.expect("connect the catalog");
    (catalog, database)
}

mod postgres {
    odometer_store::catalog_conformance_tests!(super::pg_catalog);
}

fn new_customer(org: odometer_core::OrganizationId, external_id: &str) -> Customer {
    let spec = json!({"external_id": external_id, "name": "Acme"});
    Customer {
        id: CustomerId::new(),
        organization_id: org,
        spec: odometer_core::customer::parse_customer_spec(&spec).unwrap(),
        created_at: time::now(),
        updated_at: time::now(),
    }
}

/// The tables of the database's public schema, by name.
async fn tables(database: &TestDatabase) -> Vec<String> {
    let mut conn = database.connect().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    names
}

#[tokio::test]
async fn connecting_creates_the_schema_once_and_keeps_the_data() {
    let database = TestDatabase::create().await;
    let url = database.url();
    // Two replicas starting together: the migrations run once, under an advisory lock.
    let (first, second) = tokio::join!(PgCatalog::connect(&url), PgCatalog::connect(&url));
    let (catalog, second) = (first.unwrap(), second.unwrap());
    assert_eq!(catalog.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(
        tables(&database).await,
        [
            "api_keys",
            "customers",
            "dialect_records",
            "metric_attachments",
            "metric_revisions",
            "metrics",
            MIGRATIONS_TABLE,
            "organizations",
            "plan_charges",
            "plans",
            "subscriptions"
        ]
    );
    catalog.ping().await.unwrap();

    let bootstrap = tenants::create_organization(&catalog, "Acme").await.unwrap();
    let org = bootstrap.organization.id;
    let metric = create_metric(&catalog, org, count_metric("calls", "Calls")).await;
    catalog.set_metric_attachment(org, metric.id, "plan", true).await.unwrap();
    let customer = new_customer(org, "c1");
    catalog.create_customer(&customer).await.unwrap();
    assert_eq!(second.get_metric(org, metric.id).await.unwrap(), metric, "one database");
    drop((catalog, second));

    // Re-running migration 1 over existing tables would fail ("relation already exists"), so
    // a clean reconnect shows nothing was applied twice.
    let reopened = PgCatalog::connect(&database.url()).await.unwrap();
    assert_eq!(reopened.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(reopened.get_organization(org).await.unwrap(), bootstrap.organization);
    assert_eq!(reopened.get_metric(org, metric.id).await.unwrap(), metric);
    assert!(reopened.is_metric_attached(org, metric.id).await.unwrap());
    assert_eq!(reopened.get_customer(org, "c1").await.unwrap(), customer);
    let key = tenants::authenticate(&reopened, &bootstrap.secret).await.unwrap();
    assert_eq!(key.map(|k| k.id), Some(bootstrap.key.id));
}

#[tokio::test]
async fn a_catalog_from_a_newer_odometer_is_refused() {
    let database = TestDatabase::create().await;
    drop(PgCatalog::connect(&database.url()).await.unwrap());
    let mut conn = database.connect().await;
    conn.execute(AssertSqlSafe(format!(
        "INSERT INTO {MIGRATIONS_TABLE} (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', true, '\\x00', 0)"
    )))
    .await
    .unwrap();
    conn.close().await.unwrap();
    match PgCatalog::connect(&database.url()).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("99"), "the message names the unknown migration: {message}")
        }
        other => panic!("a newer schema must not be used: {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_a_clear_error_without_the_password() {
    // Port 9 (discard) on 127.0.0.1: nothing of ours listens there.
    let url = "postgres://odometer:hunter2@127.0.0.1:9/catalog";
    match PgCatalog::connect(url).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("127.0.0.1:9/catalog"), "names the server: {message}");
            assert!(!message.contains("hunter2"), "never the password: {message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    for url in ["mysql://odometer:hunter2@db/catalog", "postgres://odometer:hunter2@[::1/x"] {
        match PgCatalog::connect(url).await {
            Err(StoreError::Backend(message)) => {
                assert!(message.contains("invalid postgres catalog url"), "{url}: {message}");
                assert!(!message.contains("hunter2"), "never the password: {message}");
            }
            other => panic!("{url}: expected a backend error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_database_never_holds_an_api_key_secret() {
    let (catalog, database) = pg_catalog().await;
    let bootstrap = tenants::create_organization(&catalog, "Acme").await.unwrap();
    let (_, second) =
        tenants::create_api_key(&catalog, bootstrap.organization.id, "ci").await.unwrap();
    assert!(tenants::authenticate(&catalog, &bootstrap.secret).await.unwrap().is_some());
    assert!(tenants::authenticate(&catalog, &second).await.unwrap().is_some());

    // Every row of every table, as PostgreSQL prints it.
    let mut conn = database.connect().await;
    let mut rows = Vec::new();
    for table in tables(&database).await {
        let sql = format!("SELECT t::text AS row FROM \"{table}\" t");
        for row in conn.fetch_all(AssertSqlSafe(sql)).await.unwrap() {
            rows.push(row.get::<String, _>("row"));
        }
    }
    for secret in [&bootstrap.secret, &second] {
        assert!(!rows.iter().any(|row| row.contains(secret.as_str())), "a table holds a secret");
        assert!(rows.iter().any(|row| row.contains(&hash_secret(secret))), "the hash is stored");
    }
}
