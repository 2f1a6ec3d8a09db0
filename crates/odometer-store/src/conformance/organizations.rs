//! Conformance: organizations, API keys, unknown organizations and tenant isolation.

use chrono::TimeDelta;
use serde_json::json;

use odometer_core::customer::parse_customer_spec;
use odometer_core::metric::FieldChange;
use odometer_core::{
    time, ApiKeyId, Customer, CustomerId, MetricId, OrganizationId, OrganizationSettings,
};

use super::{assert_not_found, count_metric, create_metric, new_metric, new_organization, spec};
use crate::catalog::{
    ArchivedFilter, Catalog, CustomerListParams, MetricListParams, MetricRevisionInput,
};
use crate::error::Entity;
use crate::keys::{hash_secret, new_api_key};

pub async fn organizations_are_created_listed_and_updated(catalog: &dyn Catalog) {
    catalog.ping().await.expect("ping");
    assert_eq!(catalog.list_organizations().await.unwrap(), [], "a fresh catalog is empty");

    let a = new_organization(catalog, "Acme").await;
    let b = new_organization(catalog, "Beta").await;
    let c = new_organization(catalog, "Gamma").await;
    assert_eq!(catalog.get_organization(b.id).await.unwrap(), b, "get answers what was stored");
    assert_eq!(
        catalog.list_organizations().await.unwrap(),
        [a.clone(), b.clone(), c.clone()],
        "organizations are listed oldest first"
    );

    let settings = OrganizationSettings {
        accept_unknown_codes: true,
        create_customers_on_first_sight: true,
        future_timestamp_tolerance_seconds: 42,
    };
    let updated = catalog.update_organization_settings(b.id, &settings).await.unwrap();
    assert_eq!(updated.settings, settings, "update answers the new settings");
    assert_eq!((updated.id, &updated.name, updated.created_at), (b.id, &b.name, b.created_at));
    assert_eq!(catalog.get_organization(b.id).await.unwrap(), updated, "settings are kept");
    assert_eq!(catalog.get_organization(a.id).await.unwrap(), a, "other organizations unchanged");

    let unknown = OrganizationId::new();
    assert_not_found(catalog.get_organization(unknown).await, Entity::Organization, "get unknown");
    assert_not_found(
        catalog.update_organization_settings(unknown, &settings).await,
        Entity::Organization,
        "update unknown",
    );
}

pub async fn api_keys_are_found_by_hash_and_revoked(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let (first, first_secret) = new_api_key(org.id, "first");
    let (second, second_secret) = new_api_key(org.id, "second");
    catalog.create_api_key(&first).await.unwrap();
    catalog.create_api_key(&second).await.unwrap();
    assert_eq!(
        catalog.list_api_keys(org.id).await.unwrap(),
        [first.key.clone(), second.key.clone()],
        "keys are listed oldest first, as stored"
    );

    let found = catalog.find_api_key(&hash_secret(&first_secret)).await.unwrap();
    let found = found.expect("a live key is found by the hash of its secret");
    assert_eq!(found.id, first.key.id);
    assert_eq!(found.organization_id, org.id);
    assert_eq!((&found.name, &found.prefix), (&first.key.name, &first.key.prefix));
    let used = found.last_used_at.expect("find_api_key marks the key used");
    assert!(used >= first.key.created_at - TimeDelta::seconds(1), "last_used_at {used} is too old");
    let listed = catalog.list_api_keys(org.id).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(used), "the use is stored");
    assert_eq!(listed[1].last_used_at, None, "only the key that was used is marked");

    assert_eq!(catalog.find_api_key(&hash_secret("odo_unknown")).await.unwrap(), None);
    assert_eq!(
        catalog.find_api_key(&first_secret).await.unwrap(),
        None,
        "keys are looked up by the hash, never by the secret"
    );

    let revoked = catalog.revoke_api_key(org.id, first.key.id).await.unwrap();
    let revoked_at = revoked.revoked_at.expect("revoke sets revoked_at");
    assert_eq!(revoked.id, first.key.id);
    assert_eq!(catalog.find_api_key(&hash_secret(&first_secret)).await.unwrap(), None);
    let again = catalog.revoke_api_key(org.id, first.key.id).await.unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at), "revoking again keeps the first time");
    assert!(
        catalog.find_api_key(&hash_secret(&second_secret)).await.unwrap().is_some(),
        "revoking one key leaves the others"
    );
    let listed = catalog.list_api_keys(org.id).await.unwrap();
    assert_eq!(listed.len(), 2, "revoked keys are still listed");
    assert_eq!(listed[0].revoked_at, Some(revoked_at));

    assert_not_found(
        catalog.revoke_api_key(org.id, ApiKeyId::new()).await,
        Entity::ApiKey,
        "revoke unknown key",
    );
}

pub async fn api_keys_store_only_the_hash(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let (new_key, secret) = new_api_key(org.id, "ci");
    // All the trait ever receives is this record: it must not carry the secret.
    let given = format!("{new_key:?}");
    assert!(!given.contains(&secret), "the record handed to the catalog holds the secret");
    assert!(given.contains(&hash_secret(&secret)), "the record holds the hash");
    catalog.create_api_key(&new_key).await.unwrap();

    let found = catalog.find_api_key(&hash_secret(&secret)).await.unwrap().expect("found");
    let listed = catalog.list_api_keys(org.id).await.unwrap();
    let revoked = catalog.revoke_api_key(org.id, new_key.key.id).await.unwrap();
    for (what, text) in [
        ("find_api_key", format!("{found:?}")),
        ("list_api_keys", format!("{listed:?}")),
        ("revoke_api_key", format!("{revoked:?}")),
    ] {
        assert!(!text.contains(&secret), "{what} answers the secret");
    }
    assert!(secret.starts_with(&found.prefix), "the prefix is the start of the secret");
    assert!(found.prefix.len() < secret.len() / 2, "the prefix is short");
}

pub async fn writes_for_unknown_organizations_fail(catalog: &dyn Catalog) {
    let unknown = OrganizationId::new();
    let (key, _) = new_api_key(unknown, "orphan");
    assert_not_found(catalog.create_api_key(&key).await, Entity::Organization, "create_api_key");
    let metric = new_metric(unknown, spec(count_metric("calls", "Calls")));
    assert_not_found(catalog.create_metric(&metric).await, Entity::Organization, "create_metric");
    let customer = Customer {
        id: CustomerId::new(),
        organization_id: unknown,
        spec: parse_customer_spec(&json!({"external_id": "c1"})).unwrap(),
        created_at: time::now(),
        updated_at: time::now(),
    };
    assert_not_found(
        catalog.create_customer(&customer).await,
        Entity::Organization,
        "create_customer",
    );
    assert_eq!(catalog.list_organizations().await.unwrap(), [], "nothing was created");
}

/// Everything of organization A, addressed with organization B's id, is not found, and no
/// attempt changes it.
pub async fn other_organizations_see_nothing(catalog: &dyn Catalog) {
    let a = new_organization(catalog, "A").await;
    let b = new_organization(catalog, "B").await;
    let metric = create_metric(catalog, a.id, count_metric("calls", "Calls")).await;
    let customer = Customer {
        id: CustomerId::new(),
        organization_id: a.id,
        spec: parse_customer_spec(&json!({"external_id": "acme", "name": "Acme"})).unwrap(),
        created_at: time::now(),
        updated_at: time::now(),
    };
    catalog.create_customer(&customer).await.unwrap();
    let (key, secret) = new_api_key(a.id, "a's key");
    catalog.create_api_key(&key).await.unwrap();

    let id = metric.id;
    let m = Entity::Metric;
    assert_not_found(catalog.get_metric(b.id, id).await, m, "get_metric");
    assert_not_found(catalog.get_metric_by_code(b.id, "calls").await, m, "get_metric_by_code");
    let params =
        MetricListParams { search: None, archived: ArchivedFilter::All, limit: 100, cursor: None };
    assert_eq!(catalog.list_metrics(b.id, &params).await.unwrap().items, [], "list_metrics");
    assert_eq!(
        catalog.metrics_reading_event_code(b.id, "calls").await.unwrap(),
        [],
        "metrics_reading_event_code"
    );
    let revision = MetricRevisionInput {
        previous_revision: 1,
        spec: spec(count_metric("calls", "Hijacked")),
        changes: vec![FieldChange {
            path: "name".to_owned(),
            before: json!("Calls"),
            after: json!("Hijacked"),
        }],
        effective_at: time::now(),
    };
    assert_not_found(catalog.add_metric_revision(b.id, id, &revision).await, m, "add revision");
    let now = Some(time::now());
    assert_not_found(catalog.set_metric_archived(b.id, id, now).await, m, "archive");
    assert_not_found(catalog.set_metric_archived(b.id, id, None).await, m, "unarchive");
    assert_not_found(catalog.delete_metric(b.id, id, time::now()).await, m, "delete_metric");
    assert_not_found(catalog.list_metric_revisions(b.id, id).await, m, "list revisions");
    assert_not_found(catalog.get_metric_revision(b.id, id, 1).await, m, "get revision");
    assert_not_found(catalog.is_metric_attached(b.id, id).await, m, "is_metric_attached");
    assert_not_found(catalog.set_metric_attachment(b.id, id, "p", true).await, m, "attach");
    assert_not_found(catalog.set_metric_attachment(b.id, id, "p", false).await, m, "detach");
    assert_not_found(
        catalog.get_metric(a.id, MetricId::new()).await,
        m,
        "an unknown id in the right organization",
    );

    let c = Entity::Customer;
    assert_not_found(catalog.get_customer(b.id, "acme").await, c, "get_customer");
    let hijacked = parse_customer_spec(&json!({"external_id": "acme", "name": "Evil"})).unwrap();
    assert_not_found(
        catalog.update_customer(b.id, "acme", &hijacked, time::now()).await,
        c,
        "update_customer",
    );
    assert_not_found(catalog.delete_customer(b.id, "acme").await, c, "delete_customer");
    let params = CustomerListParams { search: None, limit: 100, cursor: None };
    assert_eq!(catalog.list_customers(b.id, &params).await.unwrap().items, [], "list_customers");

    assert_eq!(catalog.list_api_keys(b.id).await.unwrap(), [], "list_api_keys");
    assert_not_found(catalog.revoke_api_key(b.id, key.key.id).await, Entity::ApiKey, "revoke");

    // Nothing of A changed.
    assert_eq!(catalog.get_metric(a.id, id).await.unwrap(), metric, "metric unchanged");
    assert_eq!(catalog.list_metric_revisions(a.id, id).await.unwrap().len(), 1, "no revision");
    assert!(!catalog.is_metric_attached(a.id, id).await.unwrap(), "not attached");
    assert_eq!(catalog.get_customer(a.id, "acme").await.unwrap(), customer, "customer unchanged");
    let found = catalog.find_api_key(&hash_secret(&secret)).await.unwrap();
    assert!(found.is_some(), "a's key still works");
}
