//! Dialect records in the SQLite catalog (a Meteroid product family): stored once per
//! organization, kind and id, listed oldest first, never seen by another organization, and
//! kept across a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Duration;
use odometer_core::{time, OrganizationId};
use odometer_embedded::SqliteCatalog;
use odometer_store::dialect_records::DialectRecord;
use odometer_store::{tenants, Catalog};
use serde_json::json;

fn record(org: OrganizationId, kind: &str, id: &str, seconds: i64) -> DialectRecord {
    DialectRecord {
        organization_id: org,
        kind: kind.to_owned(),
        id: id.to_owned(),
        name: format!("name of {id}"),
        document: json!({"id": id, "nested": {"n": 1.5}}),
        created_at: time::truncate_to_micros(time::now()) + Duration::seconds(seconds),
    }
}

#[tokio::test]
async fn records_are_kept_per_organization_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite3");
    let catalog = SqliteCatalog::open(&path).await.unwrap();
    let acme = tenants::create_organization(&catalog, "Acme").await.unwrap().organization.id;
    let globex = tenants::create_organization(&catalog, "Globex").await.unwrap().organization.id;

    let second = record(acme, "meteroid.product_family", "pf_b", 2);
    let first = record(acme, "meteroid.product_family", "pf_a", 1);
    assert!(catalog.create_dialect_record(&second).await.unwrap());
    assert!(catalog.create_dialect_record(&first).await.unwrap());
    // The same id again changes nothing.
    let mut again = first.clone();
    again.name = "renamed".into();
    assert!(!catalog.create_dialect_record(&again).await.unwrap());
    // Another kind, and another organization, may use the same id.
    assert!(catalog
        .create_dialect_record(&record(acme, "meteroid.plan", "pf_a", 3))
        .await
        .unwrap());
    assert!(catalog
        .create_dialect_record(&record(globex, "meteroid.product_family", "pf_a", 4))
        .await
        .unwrap());

    let listed = catalog.list_dialect_records(acme, "meteroid.product_family").await.unwrap();
    assert_eq!(listed, vec![first.clone(), second.clone()]);
    assert_eq!(
        catalog.get_dialect_record(acme, "meteroid.product_family", "pf_a").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        catalog.get_dialect_record(acme, "meteroid.product_family", "pf_c").await.unwrap(),
        None
    );
    assert_eq!(
        catalog.list_dialect_records(globex, "meteroid.product_family").await.unwrap().len(),
        1
    );

    drop(catalog);
    let reopened = SqliteCatalog::open(&path).await.unwrap();
    assert_eq!(
        reopened.list_dialect_records(acme, "meteroid.product_family").await.unwrap(),
        vec![first, second]
    );
}
