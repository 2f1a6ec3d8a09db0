//! Conformance: the operations of [`crate::metrics`], [`crate::customers`] and
//! [`crate::tenants`] run over the backend, so the rules hold end to end.

use serde_json::json;

use odometer_core::metric::FieldChange;
use odometer_core::OrganizationId;

use super::{assert_not_found, new_organization};
use crate::catalog::Catalog;
use crate::customers::{self, CustomerError};
use crate::error::{Entity, StoreError};
use crate::metrics::{self, MetricError};
use crate::tenants;

fn sum_metric() -> serde_json::Value {
    json!({
        "code": "storage",
        "name": "Storage",
        "aggregation": {"type": "sum", "field": "bytes"}
    })
}

pub async fn metric_operations_apply_patches_and_the_lock_rule(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let invalid = metrics::create_metric(catalog, org, &json!({"code": "x"})).await;
    assert!(matches!(invalid, Err(MetricError::Invalid(_))), "invalid definition: {invalid:?}");

    let metric = metrics::create_metric(catalog, org, &sum_metric()).await.unwrap();
    assert_eq!(metric.revision, 1);
    assert_eq!(catalog.get_metric(org, metric.id).await.unwrap(), metric, "create stores it");

    let updated = metrics::update_metric(catalog, org, "storage", &json!({"name": "Disk"})).await;
    let updated = updated.unwrap();
    assert_eq!(
        (updated.revision, updated.spec.name.as_str()),
        (2, "Disk"),
        "a patch is a revision"
    );
    let revisions = catalog.list_metric_revisions(org, metric.id).await.unwrap();
    assert_eq!(
        revisions[1].changes,
        [FieldChange { path: "name".to_owned(), before: json!("Storage"), after: json!("Disk") }],
        "the revision lists what changed"
    );

    let id = metric.id.to_string();
    let same = metrics::update_metric(catalog, org, &id, &json!({"name": "Disk"})).await.unwrap();
    assert_eq!(same, updated, "a patch that changes nothing is no revision (found by id)");

    let stale = json!({"revision": 1, "name": "X"});
    match metrics::update_metric(catalog, org, "storage", &stale).await {
        Err(MetricError::Store(StoreError::RevisionConflict { expected: 1, current: 2 })) => {}
        other => panic!("a patch pinned to an old revision: {other:?}"),
    }

    catalog.set_metric_attachment(org, metric.id, "plan/charge", true).await.unwrap();
    let locked = json!({"aggregation": {"field": "other_bytes"}});
    match metrics::update_metric(catalog, org, "storage", &locked).await {
        Err(MetricError::Locked(locked)) => {
            assert_eq!(locked.fields, ["aggregation.field"], "the lock names the field");
        }
        other => panic!("changing a locked field of an attached metric: {other:?}"),
    }
    assert_eq!(catalog.get_metric(org, metric.id).await.unwrap(), updated, "nothing changed");
    let renamed =
        metrics::update_metric(catalog, org, "storage", &json!({"name": "Renamed"})).await;
    assert_eq!(renamed.unwrap().revision, 3, "unlocked fields stay editable while attached");

    catalog.set_metric_attachment(org, metric.id, "plan/charge", false).await.unwrap();
    let unlocked = metrics::update_metric(catalog, org, "storage", &locked).await.unwrap();
    assert_eq!(
        (unlocked.revision, unlocked.spec.aggregation.field.as_deref()),
        (4, Some("other_bytes")),
        "once detached, locked fields can change"
    );
}

pub async fn metric_operations_archive_and_delete(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let metric = metrics::create_metric(catalog, org, &sum_metric()).await.unwrap();

    let archived = metrics::archive_metric(catalog, org, "storage").await.unwrap();
    let at = archived.archived_at.expect("archive sets archived_at");
    let again = metrics::archive_metric(catalog, org, "storage").await.unwrap();
    assert_eq!(again.archived_at, Some(at), "archiving again keeps the first time");
    let unarchived = metrics::unarchive_metric(catalog, org, "storage").await.unwrap();
    assert_eq!(unarchived.archived_at, None);
    let again = metrics::unarchive_metric(catalog, org, "storage").await.unwrap();
    assert_eq!(again.archived_at, None, "unarchiving again is harmless");

    catalog.set_metric_attachment(org, metric.id, "plan/charge", true).await.unwrap();
    let attached = metrics::delete_metric(catalog, org, "storage").await;
    assert!(matches!(attached, Err(MetricError::Attached)), "delete attached: {attached:?}");
    assert!(catalog.get_metric(org, metric.id).await.unwrap().deleted_at.is_none());

    catalog.set_metric_attachment(org, metric.id, "plan/charge", false).await.unwrap();
    let deleted = metrics::delete_metric(catalog, org, &metric.id.to_string()).await.unwrap();
    assert!(deleted.deleted_at.is_some(), "delete sets deleted_at");
    let id = metric.id.to_string();
    assert_not_found(metrics::find_metric(catalog, org, &id).await, Entity::Metric, "by id");
    assert_not_found(
        metrics::find_metric(catalog, org, "storage").await,
        Entity::Metric,
        "by code",
    );
    match metrics::update_metric(catalog, org, &id, &json!({"name": "Ghost"})).await {
        Err(e) => assert_eq!(e.code(), "metric_not_found", "update a deleted metric: {e}"),
        Ok(m) => panic!("a deleted metric was updated: {m:?}"),
    }
    let recreated = metrics::create_metric(catalog, org, &sum_metric()).await.unwrap();
    assert_ne!(recreated.id, metric.id, "a new metric takes the freed code with a new id");
}

pub async fn customer_operations_validate_and_patch(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await.id;
    let invalid = customers::create_customer(catalog, org, &json!({"email": "nope"})).await;
    assert!(matches!(invalid, Err(CustomerError::Invalid(_))), "invalid customer: {invalid:?}");

    let definition = json!({"external_id": "c1", "name": "Old", "email": "a@b.test"});
    let customer = customers::create_customer(catalog, org, &definition).await.unwrap();
    assert_eq!(catalog.get_customer(org, "c1").await.unwrap(), customer);
    let patch = json!({"name": "New", "email": null});
    let patched = customers::update_customer(catalog, org, "c1", &patch).await.unwrap();
    assert_eq!((patched.spec.name.as_deref(), patched.spec.email.as_deref()), (Some("New"), None));
    assert_eq!(catalog.get_customer(org, "c1").await.unwrap(), patched, "the patch is stored");
    let same = customers::update_customer(catalog, org, "c1", &patch).await.unwrap();
    assert_eq!(same, patched, "a patch that changes nothing changes nothing");

    customers::create_customer(catalog, org, &json!({"external_id": "c2"})).await.unwrap();
    match customers::update_customer(catalog, org, "c1", &json!({"external_id": "c2"})).await {
        Err(CustomerError::Store(StoreError::ExternalIdTaken { external_id })) => {
            assert_eq!(external_id, "c2");
        }
        other => panic!("taking another customer's external id: {other:?}"),
    }
    let bad =
        customers::update_customer(catalog, org, "c1", &json!({"timezone": "Mars/Base"})).await;
    assert!(matches!(bad, Err(CustomerError::Invalid(_))), "invalid patch: {bad:?}");
}

pub async fn tenants_authenticate_by_secret(catalog: &dyn Catalog) {
    let bootstrap = tenants::create_organization(catalog, "Acme").await.unwrap();
    let org = bootstrap.organization.id;
    assert_eq!(catalog.get_organization(org).await.unwrap(), bootstrap.organization);
    assert_eq!(catalog.list_api_keys(org).await.unwrap(), std::slice::from_ref(&bootstrap.key));

    let key = tenants::authenticate(catalog, &bootstrap.secret).await.unwrap();
    let key = key.expect("the bootstrap secret authenticates");
    assert_eq!((key.id, key.organization_id), (bootstrap.key.id, org));

    let mut wrong = bootstrap.secret.clone();
    let last = if wrong.ends_with('A') { 'B' } else { 'A' };
    wrong.pop();
    wrong.push(last);
    for secret in [wrong.as_str(), "odo_", "not a key", ""] {
        let found = tenants::authenticate(catalog, secret).await.unwrap();
        assert_eq!(found, None, "secret {secret:?} must not authenticate");
    }

    let (second, second_secret) = tenants::create_api_key(catalog, org, "ci").await.unwrap();
    catalog.revoke_api_key(org, bootstrap.key.id).await.unwrap();
    let revoked = tenants::authenticate(catalog, &bootstrap.secret).await.unwrap();
    assert_eq!(revoked, None, "a revoked key no longer authenticates");
    let found = tenants::authenticate(catalog, &second_secret).await.unwrap();
    assert_eq!(found.map(|k| k.id), Some(second.id), "the other key still authenticates");

    assert_not_found(
        tenants::create_api_key(catalog, OrganizationId::new(), "orphan").await,
        Entity::Organization,
        "a key for an unknown organization",
    );
}
